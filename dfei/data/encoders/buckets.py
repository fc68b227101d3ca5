"""Numeric features: ~10 quantile bins fitted on the train split (ids 1..B, missing 0)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from dfei.data.encoders.text import parse_numbers


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
        """Numbers [n] (float64 with NaN for missing, or any column dfei.data.encoders.text.parse_numbers
        reads; what is not a number counts as missing) -> ids int32 [n]; missing -> 0."""
        if isinstance(column, np.ndarray) and column.dtype.kind == "f":
            values = column
        elif isinstance(column, (pa.Array, pa.ChunkedArray)):
            values = parse_numbers(column)[0]
        else:
            values = pd.to_numeric(pd.Series(np.asarray(column)), errors="coerce").to_numpy(dtype=np.float64)
        ids = (np.searchsorted(self.edges, values, side="right") + 1).astype(np.int32)
        ids[np.isnan(values)] = 0
        return ids

    def digest(self) -> str:
        """sha256 of b"buckets\\0" + the edges as little-endian float64."""
        return "sha256:" + hashlib.sha256(b"buckets\0" + np.asarray(self.edges, dtype="<f8").tobytes()).hexdigest()
