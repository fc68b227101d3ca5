"""Categorical features: a vocabulary of raw values (their text form) -> ids 1..V, 0 for the rest.

Fitted on the train split: the values seen at least `min_count` times get ids 1..V by count
descending, equal counts in ascending value order (by number when the column was numeric, else by
code point); unseen, rare and missing values are 0. `grow` appends the values of a new day at
V+1, V+2, ... and never moves a known id.

Lookup is a sorted array of the values' 64-bit FNV-1a hashes (dfei.data.encoders.hashing): a batch
is hashed, found by binary search and confirmed by comparing the text, so a 10^7-value vocabulary
costs ~12 bytes a value beside its text (no Python objects, no per-call hash table) and a lookup
is exact even when two values share a hash (`find`). Stored as Parquet (`id` int32, `value` string,
in id order); `digest` is a content hash of the values in id order.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dfei.data.encoders.hashing import fnv1a64, utf8_buffers
from dfei.data.encoders.text import text_form
from dfei.errors import DatasetError

DIGEST_CHUNK = 1 << 20  # values per digest chunk (part of the digest's definition)


def find(sorted_hashes: np.ndarray, order: np.ndarray, values: pa.Array, hashes: np.ndarray,
         queries: pa.Array) -> np.ndarray:
    """Positions in `values` of `queries` (-1 where absent or null), int64 [n].

    sorted_hashes [V] uint64: the values' hashes sorted; order [V]: the value position of each;
    hashes [n]: the queries' hashes. A query matches where a value of equal hash has equal text;
    several values with the query's hash (a 64-bit collision) are compared one by one."""
    n_values = len(sorted_hashes)
    sort = np.argsort(hashes, kind="stable")  # sorted keys: numpy's binary search reuses its last bound (~10x faster)
    lo = np.empty(len(hashes), dtype=np.int64)
    lo[sort] = np.searchsorted(sorted_hashes, hashes[sort], side="left")
    at = np.minimum(lo, max(n_values - 1, 0))
    hit = (lo < n_values) & (sorted_hashes[at] == hashes) if n_values else np.zeros(len(hashes), dtype=bool)
    nxt = np.minimum(lo + 1, max(n_values - 1, 0))
    more = hit & (lo + 1 < n_values) & (sorted_hashes[nxt] == hashes) if n_values else hit
    hi = lo + hit + more * 2  # 1: one candidate; 2 or more: a collision group, resolved below
    if more.any():
        hi[more] = np.searchsorted(sorted_hashes, hashes[more], side="right")
    found = np.full(len(hashes), -1, dtype=np.int64)
    one = np.flatnonzero(hi - lo == 1)
    if len(one):
        candidates = order[lo[one]].astype(np.int64)
        same = pc.equal(queries.take(pa.array(one)), values.take(pa.array(candidates)))
        same = same.fill_null(False).to_numpy(zero_copy_only=False)
        found[one[same]] = candidates[same]
    for i in np.flatnonzero(hi - lo > 1):  # collisions: vanishingly rare, exact all the same
        query = queries[int(i)].as_py()
        for c in order[lo[i]:hi[i]]:
            if query is not None and values[int(c)].as_py() == query:
                found[i] = int(c)
    return found


@dataclass
class Vocabulary:
    values: pa.Array  # large_string [V], distinct, no nulls: values[i] has id i + 1
    _index: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.values, (pa.Array, pa.ChunkedArray)):
            self.values = pa.array(list(self.values), pa.large_string())
        self.values = text_form(self.values)

    @classmethod
    def from_counts(cls, values, counts, min_count: int = 1, numeric: bool = False) -> "Vocabulary":
        """values [n] (distinct text, no nulls) with counts [n] (ints or weights) -> ids 1..V by count
        descending, then value ascending (by number where `numeric`); values with count < min_count
        (or <= 0) are left out (they encode to 0)."""
        values = text_form(values if isinstance(values, (pa.Array, pa.ChunkedArray))
                           else pa.array(np.asarray(values, dtype=object), pa.large_string()))
        counts = pa.array(np.asarray(counts, dtype=np.float64))
        table = pa.table({"v": values, "c": counts}).filter(
            pc.and_(pc.greater(counts, 0), pc.greater_equal(counts, float(min_count))))
        key = pc.cast(table.column("v"), pa.float64()) if numeric else table.column("v")
        table = table.append_column("k", key).sort_by([("c", "descending"), ("k", "ascending"), ("v", "ascending")])
        return cls(table.column("v"))

    @classmethod
    def fit(cls, column: pd.Series, min_count: int = 1, weights: np.ndarray | None = None) -> "Vocabulary":
        """In memory: column [n] of raw values (keyed by their text form); weights [n]: how often
        each entry occurs in train (entity tables joined to logs), default 1 each. Nulls are never
        in the vocabulary."""
        w = np.ones(len(column)) if weights is None else np.asarray(weights, dtype=np.float64)
        keys = text_form(pa.array(column, from_pandas=True)).to_pandas()
        frame = pd.DataFrame({"v": keys.to_numpy(dtype=object), "w": w}).dropna()
        counts = frame.groupby("v", sort=False)["w"].sum()
        return cls.from_counts(counts.index.to_numpy(dtype=object), counts.to_numpy(), min_count,
                               numeric=pd.api.types.is_numeric_dtype(column))

    @property
    def size(self) -> int:
        return len(self.values)

    @property
    def cardinality(self) -> int:
        return len(self.values) + 1

    def _lookup(self) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:  # built once per vocabulary: O(V log V)
            hashes = fnv1a64(self.values)
            order = np.argsort(hashes, kind="stable").astype(np.int64)
            self._index = (hashes[order], order)
        return self._index

    def positions(self, strings) -> np.ndarray:
        """Text [n] -> positions in `values` (-1: not in the vocabulary), int64 [n]."""
        strings = text_form(strings if isinstance(strings, (pa.Array, pa.ChunkedArray))
                            else pa.array(strings, from_pandas=True))
        sorted_hashes, order = self._lookup()
        return find(sorted_hashes, order, self.values, fnv1a64(strings), strings)

    def encode(self, strings) -> np.ndarray:
        """Raw values [n] (Arrow text, or anything `text_form` takes) -> ids int32 [n]; unknown and null -> 0."""
        return (self.positions(strings) + 1).astype(np.int32)

    def grow(self, values, counts, min_count: int = 1, numeric: bool = False) -> tuple["Vocabulary", int]:
        """(this vocabulary with the unknown `values` seen at least `min_count` times appended at
        ids V+1, ... in from_counts order, the number appended). Known ids never move."""
        fresh = Vocabulary.from_counts(values, counts, min_count, numeric)
        new = fresh.values.filter(pa.array(self.positions(fresh.values) < 0))
        return Vocabulary(pa.concat_arrays([self.values, new])), len(new)

    def digest(self) -> str:
        """sha256 of b"vocabulary\\0" then, per chunk of DIGEST_CHUNK values in id order, the
        chunk's UTF-8 byte lengths (little-endian int64) and its bytes."""
        h = hashlib.sha256(b"vocabulary\0")
        for start in range(0, len(self.values), DIGEST_CHUNK):
            data, starts, lengths = utf8_buffers(self.values.slice(start, DIGEST_CHUNK))
            h.update(lengths.astype("<i8").tobytes())
            if len(starts):
                h.update(data[starts[0]:starts[-1] + lengths[-1]].tobytes())
        return "sha256:" + h.hexdigest()

    def write(self, path: str, filesystem) -> None:
        """Parquet at `path` (in id order: columns id int32, value string), zstd."""
        ids = pa.array(np.arange(1, len(self.values) + 1, dtype=np.int32))
        with filesystem.open_output_stream(path) as f:
            pq.write_table(pa.table({"id": ids, "value": self.values}), f, compression="zstd",
                           row_group_size=1 << 20)

    @classmethod
    def read(cls, path: str, filesystem, where: str) -> "Vocabulary":
        """The vocabulary stored at `path` (DatasetError naming `where` when missing or malformed)."""
        try:
            with filesystem.open_input_file(path) as f:
                table = pq.read_table(f, columns=["id", "value"])
        except (OSError, pa.ArrowInvalid, KeyError) as err:
            raise DatasetError(f"{where}: cannot read the vocabulary ({str(err).splitlines()[0]})") from None
        ids = table.column("id").to_numpy()
        values = table.column("value")
        if not np.array_equal(ids, np.arange(1, len(ids) + 1)) or values.null_count:
            raise DatasetError(f"{where}: not a vocabulary: ids must be 1..{len(ids)} in order, values non-null")
        if pc.count_distinct(values).as_py() != len(values):  # a value at two ids: which one would it encode to?
            counts = pc.value_counts(values)
            twice = counts.field("values").filter(pc.greater(counts.field("counts"), 1))[0].as_py()
            raise DatasetError(f"{where}: not a vocabulary: value {twice!r} is listed more than once")
        return cls(values)
