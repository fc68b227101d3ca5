"""Turn a table of raw logs into the data contract: encoders fitted on train only, atomic writes.

Shared by the converters (generic CSV/Parquet, KuaiRand). Raw values become integer ids:
- categorical: a vocabulary of the train split's values seen at least `min_count` times, ids 1..V
  in order of frequency; anything else (unseen, rare, missing) is 0 ("OOV/missing");
- numeric (bucketize): ~`bins` quantile bins fitted on train, ids 1..B; missing is 0.
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
    values: dict = field(default_factory=dict)  # raw value -> id (1..V)

    @classmethod
    def fit(cls, column: pd.Series, min_count: int = 1, weights: np.ndarray | None = None) -> "Vocabulary":
        """weights: how often each entry occurs in train (entity tables joined to logs); default 1."""
        if weights is None:
            counts = column.dropna().value_counts(sort=True)
        else:
            frame = pd.DataFrame({"v": column.to_numpy(), "w": weights})
            counts = frame.dropna().groupby("v")["w"].sum().sort_values(ascending=False, kind="stable")
            counts = counts[counts > 0]
        kept = counts[counts >= min_count].index
        return cls({v: i + 1 for i, v in enumerate(kept)})

    @property
    def cardinality(self) -> int:
        return len(self.values) + 1

    def encode(self, column: pd.Series) -> np.ndarray:
        return column.map(self.values).fillna(0).to_numpy(dtype=np.int32)


@dataclass
class Buckets:
    edges: np.ndarray

    @classmethod
    def fit(cls, column: pd.Series, bins: int = 10, weights: np.ndarray | None = None) -> "Buckets":
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
        w = np.ones(len(values)) if weights is None else np.asarray(weights, dtype=np.float64)
        keep = ~np.isnan(values) & (w > 0)
        values, w = values[keep], w[keep]
        if not len(values):
            return cls(np.array([]))
        order = np.argsort(values, kind="stable")
        cdf = np.cumsum(w[order]) / w.sum()  # weighted quantiles: the train rows' distribution
        idx = np.searchsorted(cdf, np.linspace(0, 1, bins + 1)[1:-1])
        return cls(np.unique(values[order][np.minimum(idx, len(values) - 1)]))

    @property
    def cardinality(self) -> int:
        return len(self.edges) + 2

    def encode(self, column: pd.Series) -> np.ndarray:
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
        ids = (np.searchsorted(self.edges, values, side="right") + 1).astype(np.int32)
        ids[np.isnan(values)] = 0
        return ids


def encode_features(splits: dict[str, pd.DataFrame], categorical: list[str], numeric: list[str],
                    min_count: int = 1, bins: int = 10) -> tuple[dict[str, dict[str, np.ndarray]], list[Feature]]:
    """Fit every encoder on splits["train"] only; return encoded columns per split and the feature specs."""
    encoders = {c: Vocabulary.fit(splits["train"][c], min_count) for c in categorical}
    encoders.update({c: Buckets.fit(splits["train"][c], bins) for c in numeric})
    columns = categorical + numeric
    out = {name: {c: encoders[c].encode(frame[c]) for c in columns} for name, frame in splits.items()}
    return out, [Feature(c, encoders[c].cardinality) for c in columns]


def write_dataset(out: str, name: str, frames: dict[str, dict[str, np.ndarray]], labels: dict[str, np.ndarray],
                  domains: dict[str, np.ndarray], domain_list: list[Domain], features: list[Feature],
                  user_column: str | None, meta: dict, overwrite: bool = False, log=print) -> DatasetSpec:
    """Write encoded feature columns + labels + per-row domain ids as the contract, atomically."""
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
        with open(os.path.join(tmp, "dataset.json"), "w") as f:
            json.dump(spec.to_json(), f, indent=1, sort_keys=True, default=str)
    for split in SPLITS:
        log(f"[convert] {split}: " + ", ".join(f"{n} {c:,}" for n, c in counts[split].items()))
    log(f"[convert] wrote {out}")
    return spec
