"""Open a dataset directory: spec + the Parquet layout of every split/domain, checked cheaply.

Only Parquet footers are read (schema, row groups, column statistics), so opening stays cheap at
any scale. Every error names the file, the column and the offending value.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dfei.data import fs as dfs
from dfei.data.spec import SPLITS, DatasetError, DatasetSpec, Domain, domain_dir, load_spec


@dataclass(frozen=True)
class ParquetPart:
    path: str
    row_group_rows: tuple[int, ...]
    labels: frozenset[int] = frozenset()  # the label values present (from the footer's min/max: 0/1 labels)

    @property
    def num_rows(self) -> int:
        return sum(self.row_group_rows)


@dataclass(frozen=True)
class Partition:
    split: str
    domain: Domain
    parts: tuple[ParquetPart, ...]

    @property
    def num_rows(self) -> int:
        return sum(p.num_rows for p in self.parts)

    @property
    def labels(self) -> frozenset[int]:
        """The label values of this partition's rows: {0, 1} when its AUC is defined."""
        return frozenset().union(*(p.labels for p in self.parts))


def _min_max(column: pa.ChunkedArray) -> tuple[int | None, int | None]:
    mm = pc.min_max(column)
    return mm["min"].as_py(), mm["max"].as_py()


class ParquetDataset:
    """A validated dataset: `partitions[split][i]` is domain i (spec order) of that split."""

    def __init__(self, uri: str, splits: tuple[str, ...] = SPLITS):
        self.uri = str(uri)
        self.spec: DatasetSpec = load_spec(self.uri)
        self.fs, self.path = dfs.resolve(self.uri)
        self._first_columns: tuple[str, list[str]] | None = None  # (file, columns) every file must match
        self.partitions: dict[str, list[Partition]] = {s: self._scan_split(s) for s in splits}

    @property
    def columns(self) -> list[str]:
        return self.spec.feature_names + [self.spec.label]

    def rows(self, split: str) -> list[int]:
        return [p.num_rows for p in self.partitions[split]]

    def single_class_domains(self, split: str) -> list[str]:
        """Names of the domains whose `split` lacks a label class (or rows): their AUC is undefined."""
        return [p.domain.name for p in self.partitions[split] if len(p.labels) < 2]

    def _scan_split(self, split: str) -> list[Partition]:
        split_dir = dfs.join(self.path, split)
        where = dfs.join(self.uri, split)
        present = dfs.list_dirs(self.fs, split_dir)
        if not present:
            raise DatasetError(f"{where}: split directory missing or empty (expected domain=<id> subdirectories)")
        known = {f"domain={d.id}" for d in self.spec.domains}
        unknown = sorted(set(present) - known)
        if unknown:
            raise DatasetError(
                f"{where}/{unknown[0]}: domain partition not listed in dataset.json "
                f"(listed ids: {[d.id for d in self.spec.domains]})")
        return [self._scan_partition(split, d) for d in self.spec.domains]

    def _scan_partition(self, split: str, domain: Domain) -> Partition:
        directory = domain_dir(self.path, split, domain.id)
        files = dfs.list_files(self.fs, directory, ".parquet")
        if not files:
            raise DatasetError(
                f"{dfs.join(self.uri, split, f'domain={domain.id}')}: no .parquet files "
                f"for domain {domain.name!r} (id {domain.id})")
        parts = []
        for path in files:
            parts.append(self._check_file(path))
        return Partition(split, domain, tuple(parts))

    def _check_file(self, path: str) -> ParquetPart:
        try:
            with self.fs.open_input_file(path) as f:
                meta = pq.ParquetFile(f).metadata
        except (pa.ArrowInvalid, OSError) as err:
            raise DatasetError(f"{path}: not a readable Parquet file ({err})") from None
        schema = meta.schema.to_arrow_schema()
        if self._first_columns is None:
            self._first_columns = (path, sorted(schema.names))
        elif sorted(schema.names) != self._first_columns[1]:
            first, cols = self._first_columns
            extra = sorted(set(schema.names) - set(cols))
            lacking = sorted(set(cols) - set(schema.names))
            raise DatasetError(f"{path}: column set differs from {first}'s (extra {extra}, lacking {lacking}); "
                               f"every file must have the same columns")
        expected = self.columns
        missing = [c for c in expected if c not in schema.names]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {missing}; the spec expects {expected}")
        label = self.spec.label
        for name in expected:
            t = schema.field(name).type
            if not pa.types.is_integer(t):
                kind = "label" if name == label else "feature"
                raise DatasetError(f"{path}: {kind} column {name!r} has type {t}, expected an integer type")
        bounds = {f.name: (0, f.cardinality - 1) for f in self.spec.features}
        bounds[label] = (0, 1)
        index = {meta.schema.column(i).name: i for i in range(meta.num_columns)}
        labels: set[int] = set()
        for rg in range(meta.num_row_groups):
            group = meta.row_group(rg)
            for name, (lo, hi) in bounds.items():
                stats = group.column(index[name]).statistics
                if stats is not None and stats.has_min_max and stats.has_null_count:
                    nulls, found = stats.null_count, (stats.min, stats.max)
                else:  # no statistics in the footer: stream this column chunk once
                    nulls, found = self._scan_column(path, rg, name)
                if nulls:
                    raise DatasetError(f"{path}: column {name!r} has {nulls} null value(s) (row group {rg})")
                for value in found:
                    if value is not None and not lo <= value <= hi:
                        what = "label values must be 0 or 1" if name == label else f"ids must be in [0, {hi}]"
                        raise DatasetError(f"{path}: column {name!r} has value {value}; {what}")
                if name == label and group.num_rows:
                    labels.update(int(v) for v in found if v is not None)  # 0/1: min and max are the values
        return ParquetPart(path, tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups)),
                           frozenset(labels))

    def _scan_column(self, path: str, row_group: int, name: str) -> tuple[int, tuple[int | None, int | None]]:
        with self.fs.open_input_file(path) as f:
            column = pq.ParquetFile(f).read_row_group(row_group, columns=[name]).column(name)
        return column.null_count, _min_max(column)
