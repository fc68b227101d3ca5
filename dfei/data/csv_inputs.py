"""The raw inputs of the CSV/Parquet converter and of raw batch scoring: files, their columns, Ray Data reads.

CSV files are read with every column as text, exactly as written (an empty cell is missing, any
other text is a value, `NA` included): a categorical value is never a number parsed from its text
(`007` stays `007`), and a column whose values change type halfway through a file is still read.
Parquet columns keep their stored types. Every file's header is checked before Ray Data starts:
a column named twice, or a file lacking a column the conversion needs, is refused naming the file.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dfei.data.encoders.text import kind_of, same_keys
from dfei.errors import DatasetError

PATH_COLUMN = "path"  # Ray Data's include_paths column: names the file of a bad value


def expand(pattern: str) -> tuple[list[str], pafs.FileSystem | None]:
    """(sorted paths, filesystem: None for local) of a file, a glob or an fsspec URI."""
    if "://" in pattern and not pattern.startswith("file://"):
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        fs, path = fsspec.core.url_to_fs(pattern)
        paths = sorted(fs.glob(path)) if glob.has_magic(path) else ([path] if fs.exists(path) else [])
        filesystem = PyFileSystem(FSSpecHandler(fs))
    else:
        local = pattern[len("file://"):] if pattern.startswith("file://") else pattern
        paths = [os.path.abspath(p) for p in sorted(glob.glob(local))] or (
            [os.path.abspath(local)] if os.path.isfile(local) else [])
        filesystem = None
    if not paths:
        raise DatasetError(f"{pattern}: no such file")
    return paths, filesystem


def dataset_name(pattern: str) -> str:
    """The dataset's name: the file's name without extension (a glob's: its directory's name)."""
    path = pattern.rstrip("/")
    while glob.has_magic(os.path.basename(path)) and os.path.dirname(path) not in ("", path):
        path = os.path.dirname(path)
    return os.path.splitext(os.path.basename(path))[0] or "logs"


@dataclass(frozen=True)
class Inputs:
    """What the converter knows of its input before reading it: files, format, columns and kinds."""

    pattern: str
    paths: list[str]
    filesystem: pafs.FileSystem | None
    format: str  # csv | parquet
    columns: list[str]  # the first file's, in order
    kinds: dict[str, str]  # column -> dfei.data.encoders.text kind (every CSV column: text)
    inferred: dict[str, pa.DataType]  # the first file's types as pyarrow infers or stores them
    # a column of the first file -> the first other file that lacks it
    absent: dict[str, str] = field(default_factory=dict)
    # a column -> (the first other file where its kind differs from the first file's, that kind)
    mixed: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def what(self) -> str:
        return "Parquet" if self.format == "parquet" else "CSV"

    def read(self, columns: list[str] | None = None, include_paths: bool = False, read_blocks: int | None = None):
        """A Ray Dataset of the raw rows (CSV: every column text); with include_paths, a `path` column."""
        import ray.data

        if self.format == "parquet":
            ds = ray.data.read_parquet(self.paths, filesystem=self.filesystem, partitioning=None,
                                       override_num_blocks=read_blocks, include_paths=include_paths)
            return ds.select_columns(columns + ([PATH_COLUMN] if include_paths else [])) if columns else ds
        options = pacsv.ConvertOptions(column_types={c: pa.string() for c in self.columns}, strings_can_be_null=True,
                                       null_values=[""], quoted_strings_can_be_null=True, include_columns=columns)
        return ray.data.read_csv(self.paths, filesystem=self.filesystem, partitioning=None,
                                 override_num_blocks=read_blocks, include_paths=include_paths, file_extensions=None,
                                 convert_options=options)


def inspect(pattern: str, needed: list[str]) -> Inputs:
    """The input's files and columns; DatasetError when a file is unreadable, names a column twice
    or lacks one of `needed`, or the input mixes formats."""
    paths, filesystem = expand(pattern)
    absent: dict[str, str] = {}
    mixed: dict[str, tuple[str, str]] = {}
    kinds_found = {"parquet" if p.endswith(".parquet") else "csv" for p in paths}
    if len(kinds_found) > 1:
        raise DatasetError(f"{paths[0]} ...: the input mixes .parquet and CSV files; convert one format at a time")
    fmt = kinds_found.pop()
    first = None
    for path in paths:
        schema = _schema(path, filesystem, fmt)
        names = list(schema.names)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise DatasetError(f"{path}: the header names column(s) {twice} more than once; rename one of each")
        missing = [c for c in needed if c not in names]
        if missing:
            raise DatasetError(f"{path}: column(s) {missing} not found; the file has {names}")
        if first is None:
            first = schema
            continue
        for n in first.names:
            if n not in names:
                absent.setdefault(n, path)
            elif fmt == "parquet" and kind_of(schema.field(n).type) != kind_of(first.field(n).type):
                mixed.setdefault(n, (path, kind_of(schema.field(n).type)))
    inferred = {n: first.field(n).type for n in first.names}
    kinds = {n: ("text" if fmt == "csv" else kind_of(t)) for n, t in inferred.items()}
    return Inputs(pattern, paths, filesystem, fmt, list(first.names), kinds, inferred, absent, mixed)


NUMBER_KINDS = ("integer", "float", "decimal", "boolean")


def check_columns(inputs: Inputs, columns: list[str], keyed: list[str]) -> None:
    """DatasetError naming the file when one of `columns` (those a conversion reads) is missing from
    a file, or changes kind between files: a column keyed by its text (`keyed`: categorical features,
    the domain) must have one kind in every file (integer 7 keys '7', text '007' keys '007'); the
    others may mix kinds of numbers (int64 in one file, double in another), not numbers and text."""
    for c in columns:
        if c in inputs.absent:
            raise DatasetError(f"{inputs.absent[c]}: column {c!r} not found (the first file, {inputs.paths[0]}, has "
                               f"it); every file of the input needs every column the conversion reads")
        if c in inputs.mixed:
            path, kind = inputs.mixed[c]
            first = inputs.kinds[c]
            if (c in keyed and not same_keys(kind, first)) or not (kind in NUMBER_KINDS and first in NUMBER_KINDS):
                raise DatasetError(f"{path}: column {c!r} is {kind} here but {first} in {inputs.paths[0]}; values are "
                                   f"keyed by their text form (integer 7 -> '7', text '007' -> '007'), so one kind "
                                   f"per column across files: cast it to {first} in every file")


def _schema(path: str, filesystem, fmt: str) -> pa.Schema:
    fs = filesystem or pafs.LocalFileSystem()
    try:
        if fmt == "parquet":
            with fs.open_input_file(path) as f:
                return pq.ParquetFile(f).schema_arrow
        with fs.open_input_stream(path) as f:  # the header and pyarrow's types for the first block
            return pacsv.open_csv(f, read_options=pacsv.ReadOptions(block_size=1 << 20)).schema
    except Exception as err:  # pyarrow raises several types; the message is what matters
        what = "Parquet" if fmt == "parquet" else "CSV"
        raise DatasetError(f"{path}: cannot read as {what}: {str(err).splitlines()[0]}") from None


def first_value(inputs: Inputs, column: str):
    """The first non-null value of `column` in the first file, as pyarrow infers it (None if none)."""
    fs = inputs.filesystem or pafs.LocalFileSystem()
    path = inputs.paths[0]
    try:
        if inputs.format == "parquet":
            with fs.open_input_file(path) as f:
                pf = pq.ParquetFile(f)
                values = pf.read_row_group(0, columns=[column]).column(column) if pf.num_row_groups else pa.array([])
        else:
            with fs.open_input_stream(path) as f:
                values = pa.Table.from_batches([pacsv.open_csv(f).read_next_batch()]).column(column)
    except StopIteration:
        return None
    values = values.drop_null()
    return values[0].as_py() if len(values) else None


def read_error(err: BaseException) -> str | None:
    """The reader's own message when a Ray Data read failed on the input (a truncated file, a
    malformed line), found through Ray's wrappers; else None."""
    seen, todo, found = set(), [err], None
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        first = (str(e).strip().splitlines() or [""])[0]
        if isinstance(e, pa.ArrowException):
            found = first
        elif first.startswith("Failed to read CSV file:") and found is None:
            found = first.split(". Please")[0] + ": a malformed line"  # Ray Data drops pyarrow's message
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return found
