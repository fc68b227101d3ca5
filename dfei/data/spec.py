"""The data contract: dataset.json + hive-partitioned Parquet per split and domain.

    <dataset>/dataset.json
    <dataset>/{train,valid,test}/domain=<id>/part-*.parquet
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from dfei.data import fs as dfs
from dfei.errors import DatasetError

__all__ = ["SPLITS", "SPEC_FILE", "RESERVED_COLUMNS", "MAX_DOMAIN_ID", "DatasetError", "Domain", "Feature",
           "DatasetSpec", "check_column_names", "load_spec", "domain_dir"]

SPLITS = ("train", "valid", "test")
SPEC_FILE = "dataset.json"
# Names a feature or the label cannot have: batch inference (predict.py) reads every file with Ray
# Data's row identity, the columns `path` (the source file) and `row_hash`, and writes them beside
# the scores. (The partition key `domain` is not reserved: no pipeline reads it as a column; the
# domain of a row always comes from its file's `domain=<id>` directory.)
RESERVED_COLUMNS = ("path", "row_hash")
# Domain ids are partition directory names and int64 model inputs; ids up to 2^31 - 1 keep every
# consumer (Ray Data's int partition parse, int32 domain columns, serving requests) exact.
MAX_DOMAIN_ID = 2**31 - 1


def check_column_names(features: list[str], label: str, where: str) -> None:
    """Raise DatasetError when a feature or the label has a reserved name (RESERVED_COLUMNS)."""
    clash = [(what, name) for what, name in [("feature", f) for f in features] + [("label", label)]
             if name in RESERVED_COLUMNS]
    if clash:
        what, name = clash[0]
        raise DatasetError(f"{where}: {what} {name!r} uses a reserved column name; {list(RESERVED_COLUMNS)} are the "
                           "row identity batch inference (predict.py) adds to every row it scores. Rename the column "
                           "(in the files and in dataset.json, or in your logs before converting them)")


@dataclass(frozen=True)
class Domain:
    id: int
    name: str


@dataclass(frozen=True)
class Feature:
    name: str
    cardinality: int


@dataclass
class DatasetSpec:
    name: str
    label: str
    domains: list[Domain]
    features: list[Feature]
    user_column: str | None = None
    # split -> domain name -> rows; informative (Parquet metadata is the truth)
    row_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # free-form provenance (generator, converter)
    # the raw -> id transform (dfei.data.encoders.transform): {"native": true} for generated ids,
    # None for a dataset written before encoders were kept
    encoders: dict[str, Any] | None = None

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def domain_ids(self) -> list[int]:
        return [d.id for d in self.domains]

    def domain_index_of(self, ids) -> np.ndarray:
        """Dataset domain ids (any int array-like, [n]) -> the model's domain indices (spec order),
        int64 [n]. Raises DatasetError naming the first id that is not one of the spec's domains:
        an unknown id never maps to another domain's index."""
        ids = np.asarray(ids, dtype=np.int64)
        known = np.asarray(self.domain_ids, dtype=np.int64)
        order = np.argsort(known)
        pos = np.clip(np.searchsorted(known[order], ids), 0, len(known) - 1)
        found = known[order][pos] == ids
        if not found.all():
            bad = int(ids[np.argmin(found)])
            raise DatasetError(f"domain id {bad} is not a domain of {self.name!r} (its ids: {self.domain_ids})")
        return order[pos].astype(np.int64)

    @property
    def cardinalities(self) -> list[int]:
        return [f.cardinality for f in self.features]

    @property
    def domain_names(self) -> list[str]:
        return [d.name for d in self.domains]

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: v for k, v in out.items() if v or k not in ("row_counts", "meta", "encoders")}

    def digest(self) -> str:
        """sha256 (hex) of this spec's canonical JSON: it changes when the dataset is regenerated or
        reconverted (row counts, cardinalities, encoders' digests, generator or converter settings),
        whatever path it is read from. What a resumed sweep or comparison checks its data by."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def from_json(cls, raw: Any, where: str = SPEC_FILE) -> "DatasetSpec":
        def fail(msg: str) -> DatasetError:
            return DatasetError(f"{where}: {msg}")

        if not isinstance(raw, dict):
            raise fail(f"expected a JSON object, got {type(raw).__name__}")
        for key in ("name", "label", "domains", "features"):
            if key not in raw:
                raise fail(f"missing required key {key!r}")
        if not isinstance(raw["label"], str) or not raw["label"]:
            raise fail(f"'label' must be a column name, got {raw['label']!r}")
        domains = _parse_list(raw["domains"], "domains", ("id", "name"), fail)
        features = _parse_list(raw["features"], "features", ("name", "cardinality"), fail)
        doms = [Domain(_int(d["id"], f"domains[{i}].id", fail), str(d["name"])) for i, d in enumerate(domains)]
        for i, d in enumerate(doms):
            if not 0 <= d.id <= MAX_DOMAIN_ID:
                raise fail(f"domains[{i}] ({d.name!r}): id must be in [0, {MAX_DOMAIN_ID}], got {d.id}")
        feats = []
        for i, f in enumerate(features):
            card = _int(f["cardinality"], f"features[{i}].cardinality", fail)
            if card < 1:
                raise fail(f"features[{i}] ({f['name']!r}): cardinality must be >= 1, got {card}")
            feats.append(Feature(str(f["name"]), card))
        for what, values in (("domain id", [d.id for d in doms]), ("domain name", [d.name for d in doms]),
                             ("feature name", [f.name for f in feats])):
            dup = sorted({v for v in values if values.count(v) > 1}, key=str)
            if dup:
                raise fail(f"duplicate {what}(s): {dup}")
        user = raw.get("user_column")
        if user is not None and user not in {f.name for f in feats}:
            raise fail(f"user_column {user!r} is not one of the features")
        if raw["label"] in {f.name for f in feats}:
            raise fail(f"label {raw['label']!r} is also listed as a feature")
        check_column_names([f.name for f in feats], raw["label"], where)
        encoders = raw.get("encoders")
        if encoders is not None and not isinstance(encoders, dict):
            raise fail(f"'encoders' must be an object, got {encoders!r}")
        if encoders and not encoders.get("native"):
            names = [f.get("name") for f in encoders.get("features", []) if isinstance(f, dict)]
            if names != [f.name for f in feats]:
                raise fail(f"the encoders' features {names} are not the dataset's {[f.name for f in feats]}")
            for entry, feat in zip(encoders["features"], feats):
                ids = _encoder_ids(entry)
                if ids is not None and ids != feat.cardinality:
                    raise fail(f"feature {feat.name!r} has cardinality {feat.cardinality} but its encoder gives "
                               f"{ids} ids (with 0): the file was edited")
        return cls(str(raw["name"]), raw["label"], doms, feats, user,
                   dict(raw.get("row_counts") or {}), dict(raw.get("meta") or {}), encoders)


def _encoder_ids(entry: dict) -> int | None:
    """The cardinality an `encoders` feature entry gives (None where the entry is malformed: reading
    the encoders reports that, naming the feature)."""
    try:
        if entry["kind"] == "vocabulary":
            return int(entry["size"]) + 1
        if entry["kind"] == "buckets":
            return len(entry["edges"]) + 2
        if entry["kind"] == "hash":
            return int(entry["buckets"]) + 1
    except (KeyError, TypeError, ValueError):
        pass
    return None


def _parse_list(value: Any, key: str, required: tuple[str, ...], fail) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise fail(f"{key!r} must be a non-empty list")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise fail(f"{key}[{i}] must be an object, got {item!r}")
        for r in required:
            if r not in item:
                raise fail(f"{key}[{i}] is missing {r!r}")
    return value


def _int(value: Any, what: str, fail) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(f"{what} must be an integer, got {value!r}")
    return value


def load_spec(root: str) -> DatasetSpec:
    """Read and check `<root>/dataset.json` (local path or fsspec URI)."""
    filesystem, path = dfs.resolve(root)
    spec_path = dfs.join(path, SPEC_FILE)
    where = dfs.join(str(root), SPEC_FILE)
    if filesystem.get_file_info(spec_path).type != pafs.FileType.File:
        raise DatasetError(f"{where}: not found (is {root!r} a dataset directory?)")
    with filesystem.open_input_stream(spec_path) as f:
        text = f.read().decode("utf-8")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{where}: malformed JSON: {err}") from None
    return DatasetSpec.from_json(raw, where)


def domain_dir(root_path: str, split: str, domain_id: int) -> str:
    return dfs.join(root_path, split, f"domain={domain_id}")
