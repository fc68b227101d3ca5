"""The one string hash of the project: hashed features (`--hash FEATURE=BUCKETS`) and vocabulary lookups.

Definition (stable forever: a hashed feature's ids depend on it, in training, batch scoring and the
exported model's raw path alike):

    fnv1a64(s)      = FNV-1a, 64 bit, over the UTF-8 bytes of the value's text form s:
                      h = 0xCBF29CE484222325; for each byte b: h = (h XOR b) * 0x100000001B3 mod 2^64
    splitmix64(x)   = x += 0x9E3779B97F4A7C15; x = (x ^ x >> 30) * 0xBF58476D1CE4E5B9;
                      x = (x ^ x >> 27) * 0x94D049BB133111EB; x ^ x >> 31      (all mod 2^64)
    hash64(s, seed) = splitmix64(fnv1a64(s) XOR splitmix64(seed))
    hashed id       = 1 + hash64(s, seed) mod buckets;  a missing value (null) is id 0

e.g. hash64("abc", 0) = 0xAAD0B8E637C66B43 (tests/data/test_encoders.py holds more vectors).
FNV-1a is written out here rather than taken from a library because the standard library has none
and pandas' `hash_array` (SipHash) is an implementation detail of pandas that may change; this one
is vectorised over Arrow's string buffers (one numpy pass per byte position, over the strings that
are that long), so a 65k-row block of short ids hashes in about a millisecond.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
HASH_NAME = "fnv1a64-splitmix64"
MAX_BUCKETS = 2**31 - 2  # ids 1..buckets are int32


def splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mix (uint64 [n] -> uint64 [n]): spreads hash bits evenly."""
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def seeded(hashes: np.ndarray, seed: int) -> np.ndarray:
    """uint64 [n] hashes mixed with a seed: splitmix64(h XOR splitmix64(seed))."""
    return splitmix64(np.asarray(hashes, dtype=np.uint64) ^ splitmix64(np.array([seed], dtype=np.uint64))[0])


def utf8_buffers(strings: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bytes uint8 [total], starts int64 [n], lengths int64 [n]) of a string array; a null has length 0."""
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks() if strings.num_chunks != 1 else strings.chunk(0)
    if pa.types.is_string(strings.type):
        offset_type = np.int32
    elif pa.types.is_large_string(strings.type):
        offset_type = np.int64
    else:
        raise TypeError(f"expected a string array, got {strings.type}")
    n = len(strings)
    buffers = strings.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offset_type)[strings.offset:strings.offset + n + 1].astype(np.int64) \
        if n else np.zeros(1, dtype=np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, dtype=np.uint8)
    lengths = np.diff(offsets)
    if strings.null_count:
        lengths = np.where(np.asarray(strings.is_null()), 0, lengths)
    return data, offsets[:-1], lengths


def fnv1a64(strings: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """uint64 [n]: FNV-1a 64 of each value's UTF-8 bytes (a null hashes as the empty string)."""
    data, starts, lengths = utf8_buffers(strings)
    out = np.full(len(lengths), FNV_OFFSET, dtype=np.uint64)
    if not len(lengths) or not lengths.max():
        return out
    order = np.argsort(-lengths, kind="stable")  # longest first: the strings still going are a prefix
    s_starts, s_lengths = starts[order], lengths[order]
    h = out[order]
    active = np.searchsorted(-s_lengths, -np.arange(int(s_lengths[0])), side="left")  # rows longer than j
    with np.errstate(over="ignore"):
        for j, k in enumerate(active):
            h[:k] ^= data[s_starts[:k] + j]
            h[:k] *= FNV_PRIME
    out[order] = h
    return out


def hash64(strings: pa.Array | pa.ChunkedArray, seed: int = 0) -> np.ndarray:
    """uint64 [n]: the seeded hash of the module docstring."""
    return seeded(fnv1a64(strings), seed)


@dataclass(frozen=True)
class HashBuckets:
    """A hashed feature: id = 1 + hash64(text, seed) mod buckets; missing (null) -> 0. No vocabulary,
    stable across days by construction; distinct values may share an id (a collision)."""

    buckets: int
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.buckets <= MAX_BUCKETS or not 0 <= self.seed < 1 << 64:
            raise ValueError(f"HashBuckets: buckets must be in [1, {MAX_BUCKETS}] (ids are int32) and the seed in "
                             f"[0, 2^64), got {self.buckets}, {self.seed}")

    @property
    def cardinality(self) -> int:
        return self.buckets + 1

    def encode(self, strings: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Text [n] -> ids int32 [n]."""
        if isinstance(strings, pa.ChunkedArray):
            strings = strings.combine_chunks()
        ids = (hash64(strings, self.seed) % np.uint64(self.buckets) + np.uint64(1)).astype(np.int32)
        if strings.null_count:
            ids[np.asarray(strings.is_null())] = 0
        return ids

    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(f"hash {HASH_NAME} seed={self.seed} buckets={self.buckets}".encode()).hexdigest()
