"""The encoders every converter shares (generic CSV/Parquet, KuaiRand), and the in-memory writer.

Raw values become integer ids, fitted on the train split only:
- categorical (`Vocabulary`): the train values seen at least `min_count` times get ids 1..V in order
  of frequency, equal counts in ascending value order (numbers by number when the column is numeric,
  text by code point otherwise); anything else (unseen, rare, missing) is 0 ("OOV/missing");
- numeric (`Buckets`): ~`bins` quantile bins fitted on train, ids 1..B; missing is 0.

Both are fitted from (value, count) pairs, so one implementation serves every source: Ray Data's
distributed `groupby(...).sum()` over the train rows (dfei.data.csv_converter), weighted counts of
an entity table (KuaiRand's users and videos weighted by their train impressions), or the exact
order statistics of dfei.data.select (quantile edges are values at given ranks, `Buckets.edge_ranks`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dfei.atomic import atomic_directory
from dfei.data.spec import SPLITS, DatasetSpec, Domain, Feature
from dfei.errors import PathExistsError


@dataclass
class Vocabulary:
    values: np.ndarray  # the kept raw values, [V]; id of values[i] is i + 1
    _index: pd.Index | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_counts(cls, values, counts, min_count: int = 1, numeric: bool | None = None) -> "Vocabulary":
        """values [n] (distinct, no nulls) with counts [n] (ints or weights) -> ids 1..V by count
        descending, then value ascending (numerically where `numeric`, default: the values' dtype is
        a number); values with count < min_count (or <= 0) are left out (they encode to 0)."""
        frame = pd.DataFrame({"v": pd.Series(np.asarray(values)), "c": np.asarray(counts, dtype=np.float64)})
        frame = frame[(frame["c"] > 0) & (frame["c"] >= min_count)]
        if numeric is None:
            numeric = pd.api.types.is_numeric_dtype(frame["v"])
        frame["k"] = pd.to_numeric(frame["v"], errors="coerce") if numeric else frame["v"].astype(str)
        frame = frame.sort_values(["c", "k"], ascending=[False, True], kind="stable")
        return cls(frame["v"].to_numpy())

    @classmethod
    def fit(cls, column: pd.Series, min_count: int = 1, weights: np.ndarray | None = None) -> "Vocabulary":
        """In memory: column [n] of raw values; weights [n]: how often each entry occurs in train
        (entity tables joined to logs), default 1 each. Nulls are never in the vocabulary."""
        w = np.ones(len(column)) if weights is None else np.asarray(weights, dtype=np.float64)
        frame = pd.DataFrame({"v": column.to_numpy(), "w": w}).dropna()
        counts = frame.groupby("v", sort=False)["w"].sum()
        return cls.from_counts(counts.index.to_numpy(), counts.to_numpy(), min_count,
                               numeric=pd.api.types.is_numeric_dtype(column))

    @property
    def cardinality(self) -> int:
        return len(self.values) + 1

    def encode(self, column) -> np.ndarray:
        """Raw values [n] (array-like) -> ids int32 [n]; unknown and null -> 0."""
        if self._index is None:  # built once per encoder (the hash table costs O(V))
            self._index = pd.Index(self.values, dtype=object)
        return (self._index.get_indexer(pd.Index(np.asarray(column, dtype=object))) + 1).astype(np.int32)


@dataclass
class Buckets:
    edges: np.ndarray  # sorted distinct bin edges, float64 [E]; ids: x < edges[0] -> 1, ..., >= edges[-1] -> E + 1

    @staticmethod
    def quantiles(bins: int) -> np.ndarray:
        return np.linspace(0, 1, bins + 1)[1:-1]

    @classmethod
    def from_counts(cls, values, counts, bins: int = 10) -> "Buckets":
        """values [n] (numbers, no NaN) with counts [n] (ints or weights): the edges are the values
        where the train rows' cumulative distribution first reaches each of the `bins - 1` inner
        quantiles (duplicates merged, so heavy values give fewer bins)."""
        values, counts = np.asarray(values, dtype=np.float64), np.asarray(counts, dtype=np.float64)
        keep = counts > 0
        values, counts = values[keep], counts[keep]
        if not len(values):
            return cls(np.array([]))
        order = np.argsort(values, kind="stable")
        cdf = np.cumsum(counts[order]) / counts.sum()
        idx = np.searchsorted(cdf, cls.quantiles(bins))
        return cls(np.unique(values[order][np.minimum(idx, len(values) - 1)]))

    @classmethod
    def edge_ranks(cls, n: int, bins: int = 10) -> list[int]:
        """The 0-based ranks (in ascending order of n unit-weight rows) of the rows whose values are
        the edges: the same rule as `from_counts` (first rank r with (r + 1) / n >= q), so selecting
        those order statistics (dfei.data.select) and passing them to `from_values` gives the edges
        `from_counts` would give from the rows' value counts."""
        ranks = []
        for q in cls.quantiles(bins):
            r = max(0, int(np.ceil(q * n)) - 1)
            while r > 0 and r / n >= q:  # float-exact, as np.cumsum(ones) / n compares
                r -= 1
            while (r + 1) / n < q:
                r += 1
            ranks.append(min(r, n - 1))
        return ranks

    @classmethod
    def from_values(cls, selected) -> "Buckets":
        """The edges from the values at `edge_ranks` (any order; duplicates merged)."""
        return cls(np.unique(np.asarray(selected, dtype=np.float64)))

    @classmethod
    def fit(cls, column: pd.Series, bins: int = 10, weights: np.ndarray | None = None) -> "Buckets":
        """In memory: column [n] (non-numbers count as missing), weights [n] default 1 each."""
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
        w = np.ones(len(values)) if weights is None else np.asarray(weights, dtype=np.float64)
        keep = ~np.isnan(values)
        counts = pd.Series(w[keep]).groupby(values[keep] + 0.0, sort=False).sum()  # + 0.0: -0.0 is 0.0
        return cls.from_counts(counts.index.to_numpy(), counts.to_numpy(), bins)

    @property
    def cardinality(self) -> int:
        return len(self.edges) + 2

    def encode(self, column) -> np.ndarray:
        """Numbers [n] (anything else counts as missing) -> ids int32 [n]; missing -> 0."""
        values = pd.to_numeric(pd.Series(np.asarray(column)), errors="coerce").to_numpy(dtype=np.float64)
        ids = (np.searchsorted(self.edges, values, side="right") + 1).astype(np.int32)
        ids[np.isnan(values)] = 0
        return ids


def write_dataset(out: str, name: str, frames: dict[str, dict[str, np.ndarray]], labels: dict[str, np.ndarray],
                  domains: dict[str, np.ndarray], domain_list: list[Domain], features: list[Feature],
                  user_column: str | None, meta: dict, overwrite: bool = False, log=print) -> DatasetSpec:
    """Write encoded feature columns + labels + per-row domain ids (in memory) as the contract,
    atomically. For sources that fit in memory (KuaiRand-1K); users' logs go through Ray Data."""
    out = os.path.abspath(out)
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise PathExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    schema = pa.schema([(f.name, pa.int32()) for f in features] + [("label", pa.int8())])
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    with atomic_directory(out) as tmp:
        for split in SPLITS:
            for dom in domain_list:
                mask = domains[split] == dom.id
                table = pa.table({**{f.name: frames[split][f.name][mask].astype(np.int32) for f in features},
                                  "label": labels[split][mask].astype(np.int8)}, schema=schema)
                directory = os.path.join(tmp, split, f"domain={dom.id}")
                os.makedirs(directory)
                pq.write_table(table, os.path.join(directory, "part-00000.parquet"), compression="zstd",
                               row_group_size=1 << 16)
                counts[split][dom.name] = table.num_rows
        spec = DatasetSpec(name=name, label="label", domains=domain_list, features=features,
                           user_column=user_column, row_counts=counts, meta=meta)
        write_spec(tmp, spec)
    log_written(spec, out, log)
    return spec


def write_spec(directory: str, spec: DatasetSpec) -> None:
    """dataset.json of a dataset being written (inside its atomic_directory)."""
    with open(os.path.join(directory, "dataset.json"), "w") as f:
        json.dump(spec.to_json(), f, indent=1, sort_keys=True, default=str)


def log_written(spec: DatasetSpec, out: str, log=print) -> None:
    """The converters' closing lines: rows per split and domain, and where the dataset is."""
    for split in SPLITS:
        log(f"[convert] {split}: " + ", ".join(f"{n} {c:,}" for n, c in spec.row_counts[split].items()))
    log(f"[convert] wrote {out}")
