"""`FeatureTransform`: every fitted encoder of a dataset, persisted beside it and read back exactly.

On disk (dataset root, checkpoint directory or an export's `FILE.encoders/`):

    encoders/vocabulary-<i>.parquet     one per vocabulary feature (i: its position in the features)

and, in dataset.json (a checkpoint's state.json and an export's sidecar repeat it), `encoders`:

    {"format": 1, "hash": "fnv1a64-splitmix64", "digest": "sha256:...",
     "label":  {"column": "clicked", "threshold": null},
     "domain": {"column": "site", "source": "text", "values": {"home": 0, "search": 1}, "digest": ...},
     "features": [{"name": "user_id", "kind": "vocabulary", "source": "text", "size": 125,
                   "file": "encoders/vocabulary-0.parquet", "digest": "sha256:..."},
                  {"name": "price", "kind": "buckets", "source": "float", "edges": [...], "digest": ...},
                  {"name": "item_id", "kind": "hash", "source": "text", "buckets": 1000000, "seed": 0,
                   "digest": ...}]}

`source` is the kind of the column the encoder was fitted on (dfei.data.encoders.text). Datasets
whose ids are native (the synthetic generator's) say `{"native": true}`. Reading verifies every
digest, so a changed or corrupt file is refused by name, never used.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from dfei.data.encoders.buckets import Buckets
from dfei.data.encoders.hashing import HASH_NAME, HashBuckets
from dfei.data.encoders.text import kind_of, parse_numbers, text_form
from dfei.data.encoders.vocabulary import Vocabulary
from dfei.errors import DatasetError

FORMAT = 1
ENCODERS_DIR = "encoders"
NATIVE = {"native": True}


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class LabelRule:
    """How a raw label became 0/1: 1 where the column's number >= threshold; with no threshold the
    column must hold 0/1 (text `true`/`false` too)."""

    column: str
    threshold: float | None = None

    def apply(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """int8 [n] labels, -1 where a value is missing or not a valid label."""
        values, _ = parse_numbers(column)
        if self.threshold is None and kind_of(column.type) == "text":
            lower = text_form(column).to_pandas().str.strip().str.lower()
            values = np.where(lower == "true", 1.0, np.where(lower == "false", 0.0, values))
        if self.threshold is not None:
            return np.where(np.isnan(values), -1, values >= self.threshold).astype(np.int8)
        return np.where((values == 0) | (values == 1), values, -1).astype(np.int8)


@dataclass
class DomainMap:
    """The domain column's raw value (text form) -> domain id."""

    column: str
    ids: dict[str, int]
    source: str = "text"

    def encode(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Raw values [n] -> domain ids int64 [n]; -1 for a value the map does not know (or null)."""
        names = list(self.ids)
        positions = Vocabulary(pa.array(names, pa.large_string())).positions(text_form(column))
        table = np.array([self.ids[n] for n in names] + [-1], dtype=np.int64)
        return table[positions]  # position -1 picks the trailing -1

    def grow(self, names: list[str]) -> tuple["DomainMap", list[str]]:
        """(the map with the unknown `names` added at ids max+1, ... in sorted order, those names)."""
        new = sorted(n for n in set(names) if n not in self.ids)
        start = max(self.ids.values(), default=-1) + 1
        return DomainMap(self.column, {**self.ids, **{n: start + i for i, n in enumerate(new)}}, self.source), new

    def digest(self) -> str:
        """sha256 of the column, the kind it was fitted on and the sorted (value, id) pairs, as JSON."""
        return _sha(json.dumps([self.column, self.source, sorted(self.ids.items())], ensure_ascii=False))


@dataclass
class FeatureEncoder:
    name: str
    encoder: Vocabulary | Buckets | HashBuckets
    source: str  # the kind of column it was fitted on (text, integer, float, ...)

    @property
    def kind(self) -> str:
        return {Vocabulary: "vocabulary", Buckets: "buckets", HashBuckets: "hash"}[type(self.encoder)]

    @property
    def cardinality(self) -> int:
        return self.encoder.cardinality

    def encode(self, column: pa.Array | pa.ChunkedArray, where: str = "") -> np.ndarray:
        """A raw column [n] -> ids int32 [n]. A numeric feature's value that is not a number raises
        DatasetError naming the feature, the value and `where`."""
        if self.kind != "buckets":
            return self.encoder.encode(text_form(column))
        values, bad = parse_numbers(column)
        if bad.any():
            example = text_form(column)[int(np.argmax(bad))].as_py()
            raise DatasetError(f"{where}{': ' if where else ''}numeric feature {self.name!r} has {int(bad.sum())} "
                               f"value(s) that are not numbers, e.g. {example!r}")
        return self.encoder.encode(values)

    def to_json(self, file: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "source": self.source}
        if self.kind == "vocabulary":
            out.update(size=self.encoder.size, file=file)
        elif self.kind == "buckets":
            out["edges"] = [float(e) for e in self.encoder.edges]
        else:
            out.update(buckets=self.encoder.buckets, seed=self.encoder.seed)
        return {**out, "digest": self.encoder.digest()}


@dataclass
class FeatureTransform:
    """The raw -> id transform of a dataset: features in the dataset's order, domain map, label rule."""

    features: list[FeatureEncoder]
    domain: DomainMap
    label: LabelRule

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def cardinalities(self) -> list[int]:
        return [f.cardinality for f in self.features]

    def feature(self, name: str) -> FeatureEncoder:
        return self.features[self.names.index(name)]

    def encode(self, table: pa.Table, where: str = "") -> dict[str, np.ndarray]:
        """{feature: ids int32 [n]} of a table of raw columns (every feature present)."""
        return {f.name: f.encode(table.column(f.name), where) for f in self.features}

    def to_json(self) -> dict[str, Any]:
        features = [f.to_json(_file(i) if f.kind == "vocabulary" else None) for i, f in enumerate(self.features)]
        domain = {"column": self.domain.column, "source": self.domain.source, "values": dict(self.domain.ids),
                  "digest": self.domain.digest()}
        label = {"column": self.label.column, "threshold": self.label.threshold}
        return {"format": FORMAT, "hash": HASH_NAME, "label": label, "domain": domain, "features": features,
                "digest": _overall(label, domain, features)}

    def write(self, root: str, filesystem: pafs.FileSystem | None = None) -> dict[str, Any]:
        """Write the vocabularies under `root`/encoders/ (a local directory unless `filesystem`);
        returns the JSON section for dataset.json."""
        filesystem = filesystem or pafs.LocalFileSystem()
        filesystem.create_dir(posixpath.join(root, ENCODERS_DIR), recursive=True)
        for i, f in enumerate(self.features):
            if f.kind == "vocabulary":
                f.encoder.write(posixpath.join(root, _file(i)), filesystem)
        return self.to_json()


def _file(i: int) -> str:
    return f"{ENCODERS_DIR}/vocabulary-{i}.parquet"


def _overall(label: dict, domain: dict, features: list[dict]) -> str:
    lines = [json.dumps(label, sort_keys=True), domain["digest"]] + [
        f"{f['name']}\t{f['kind']}\t{f['source']}\t{f['digest']}" for f in features]
    return _sha("\n".join(lines))


def is_native(section: dict | None) -> bool:
    """True when a dataset's ids are its own (synthetic data, or a dataset older than encoders)."""
    return not section or bool(section.get("native"))


def load_transform(root: str, section: dict | None, where: str | None = None) -> FeatureTransform | None:
    """The transform a dataset.json/state.json `encoders` section describes, its vocabularies read
    from `root` (local path or fsspec URI: a dataset, a checkpoint directory) and every digest
    checked; None for native ids. Raises DatasetError naming the file or feature that does not match."""
    if is_native(section):
        return None
    from dfei.data import fs as dfs

    where = where or str(root)
    if section.get("format") != FORMAT or section.get("hash") != HASH_NAME:
        raise DatasetError(f"{where}: encoders format {section.get('format')!r} / hash {section.get('hash')!r}; this "
                           f"dfei reads format {FORMAT} with hash {HASH_NAME!r}")
    filesystem, path = dfs.resolve(root)
    try:
        features = [_read_feature(f, filesystem, path, where) for f in section["features"]]
        d = section["domain"]
        domain = DomainMap(d["column"], {str(k): int(v) for k, v in d["values"].items()}, d.get("source", "text"))
        label = LabelRule(section["label"]["column"], section["label"]["threshold"])
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, DatasetError):
            raise
        raise DatasetError(f"{where}: malformed encoders section ({type(err).__name__}: {err})") from None
    if domain.digest() != d.get("digest"):
        raise DatasetError(f"{where}: the domain map's digest is not the recorded one: the encoders were edited")
    transform = FeatureTransform(features, domain, label)
    if transform.to_json()["digest"] != section.get("digest"):
        raise DatasetError(f"{where}: the encoders' overall digest is not the recorded one: the section was edited")
    return transform


def _read_feature(entry: dict, filesystem, root_path: str, where: str) -> FeatureEncoder:
    kind, name = entry["kind"], entry["name"]
    if kind == "vocabulary":
        file = posixpath.join(root_path, entry["file"])
        if filesystem.get_file_info(file).type != pafs.FileType.File:
            raise DatasetError(f"{where}: encoder file {entry['file']} of feature {name!r} is missing")
        encoder = Vocabulary.read(file, filesystem, f"{where}/{entry['file']} (feature {name!r})")
        if "size" in entry and entry["size"] != encoder.size:  # the dataset's cardinality is size + 1
            raise DatasetError(f"{where}: feature {name!r}: the encoders list size {entry['size']!r}, its file "
                               f"{entry['file']} holds {encoder.size} value(s): changed or corrupt")
    elif kind == "buckets":
        encoder = Buckets(np.asarray(entry["edges"], dtype=np.float64))
    elif kind == "hash":
        encoder = HashBuckets(int(entry["buckets"]), int(entry["seed"]))
    else:
        raise DatasetError(f"{where}: feature {name!r} has an unknown encoder kind {kind!r}")
    if encoder.digest() != entry.get("digest"):
        what = f"file {entry['file']}" if kind == "vocabulary" else "entry"
        raise DatasetError(f"{where}: feature {name!r}: its encoder {what} does not match the recorded digest "
                           f"({entry.get('digest')}): changed or corrupt; re-convert, or restore the file")
    return FeatureEncoder(name, encoder, entry.get("source", "text"))


def copy_encoders(section: dict | None, source_root: str, destination: str) -> None:
    """Copy the vocabulary files a section lists from `source_root` (path or URI) to the local
    directory `destination` (same relative paths): what makes a checkpoint or an export self-contained."""
    if is_native(section):
        return
    import os

    from dfei.data import fs as dfs

    filesystem, path = dfs.resolve(source_root)
    for entry in section["features"]:
        if entry["kind"] == "vocabulary":
            target = os.path.join(destination, entry["file"])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            pafs.copy_files(posixpath.join(path, entry["file"]), target, source_filesystem=filesystem,
                            destination_filesystem=pafs.LocalFileSystem())
