"""Exact order statistics of a Ray Dataset in bounded memory: the row at rank k, not an estimate.

The CSV/Parquet converter needs exact cut points (the time split's last train and last valid row)
and exact quantile edges (numeric bins, the same values the in-memory fit gives). Ray Data's
`Quantile` aggregation gathers the whole column into one accumulator (memory grows with the data)
and `ApproximateQuantile` is a sketch (approximate, and needs the datasketches package), so this
module selects by histogram refinement instead, with Ray Data `map_batches` passes whose per-block
partials are small and are reduced on the driver:

- every row of a series has an order key: a tuple of uint64 components compared lexicographically,
  e.g. (time, row hash) for the time split (`float_key` / `int_key` map numbers to uint64 in order);
- `summarize` (one pass): rows per series and the min/max of the first component; a series of at
  most 2^18 rows comes back whole and needs no further pass;
- `select` (a few passes): each wanted rank keeps a range [lo, hi] of the current component; a
  4096-bin histogram of that range narrows it ~4096x per pass; a range down to one value moves on
  to the next component; a range holding <= 2^18 rows is collected and sorted exactly.
  On 10^7 spread-out rows that is two passes. Memory per task: one block plus 4096 counters (or
  2^18 keys) per open range; on the driver the same.
"""
from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

SIGN = np.uint64(1 << 63)
U64_MAX = (1 << 64) - 1
BINS = 4096
COLLECT_MAX = 1 << 18

# batch -> {series: (component 0 [n], component 1 [n], ...)} of the rows that count, uint64 each
KeysFn = Callable[[pa.Table], dict[str, tuple[np.ndarray, ...]]]


def float_key(values: np.ndarray) -> np.ndarray:
    """float64 [n] (no NaN) -> uint64 [n] in the same order (-0.0 and 0.0 get the same key)."""
    bits = (np.asarray(values, dtype=np.float64) + 0.0).view(np.uint64)
    return np.where(bits >> np.uint64(63), ~bits, bits | SIGN)


def float_of_key(key: int) -> float:
    bits = np.uint64(key)
    bits = bits & ~SIGN if bits & SIGN else ~bits
    return float(np.array([bits], dtype=np.uint64).view(np.float64)[0])


def int_key(values: np.ndarray) -> np.ndarray:
    """int64 [n] -> uint64 [n] in the same order."""
    return np.asarray(values, dtype=np.int64).view(np.uint64) ^ SIGN


def _as_partial(batch: pa.Table, fn, kwargs: dict) -> pa.Table:
    return pa.table({"partial": pa.array([pickle.dumps(fn(batch, **kwargs))], pa.binary())})


def block_partials(ds, fn, **kwargs) -> list:
    """One Ray Data pass: fn(block, **kwargs) -> a small picklable partial per block (a few
    counters, a histogram), streamed back to the driver in a list for it to reduce."""
    mapped = ds.map_batches(_as_partial, fn_kwargs={"fn": fn, "kwargs": kwargs}, batch_format="pyarrow",
                            batch_size=None, zero_copy_batch=True)
    partials = []
    for batch in mapped.iter_batches(batch_size=None, batch_format="pyarrow"):
        partials.extend(pickle.loads(b) for b in batch.column("partial").to_pylist())
    return partials


SMALL_BLOCK = 1 << 14  # a block with at most this many rows of a series ships them with its summary


@dataclass
class Summary:
    rows: int
    lo: int | None  # min and max of component 0 (None without rows)
    hi: int | None
    arity: int  # components per key
    keys: tuple[np.ndarray, ...] | None  # every row's key, while the series has <= COLLECT_MAX rows


def summary_block(batch: pa.Table, keys_fn: KeysFn) -> dict[str, tuple]:
    """One block's part of `summarize` (to combine with other per-block work in one pass)."""
    out = {}
    for name, comps in keys_fn(batch).items():
        first = comps[0]
        n = len(first)
        out[name] = (n, int(first.min()) if n else None, int(first.max()) if n else None, len(comps),
                     comps if n <= SMALL_BLOCK else None)
    return out


def merge_summaries(parts) -> dict[str, Summary]:
    """Reduce `summary_block` results on the driver (memory: <= COLLECT_MAX keys per series)."""
    total: dict[str, Summary] = {}
    for part in parts:
        for name, (n, lo, hi, arity, keys) in part.items():
            acc = total.setdefault(name, Summary(0, None, None, arity, ()))
            if n:
                acc.lo = lo if acc.lo is None else min(acc.lo, lo)
                acc.hi = hi if acc.hi is None else max(acc.hi, hi)
            acc.rows += n
            if acc.keys is not None and keys is not None and acc.rows <= COLLECT_MAX:
                acc.keys = tuple(np.concatenate([a, b]) for a, b in zip(acc.keys, keys)) if acc.keys else keys
            else:
                acc.keys = None
    return total


def summarize(ds, keys_fn: KeysFn) -> dict[str, Summary]:
    """{series: Summary} in one pass; a series no block produced is absent."""
    return merge_summaries(block_partials(ds, summary_block, keys_fn=keys_fn))


def _refine_block(batch: pa.Table, keys_fn: KeysFn, queries: list[tuple]) -> list:
    keys = keys_fn(batch)
    out = []
    for series, comp, prefix, lo, hi, step in queries:
        comps = keys[series]
        mask = np.ones(len(comps[0]), dtype=bool)
        for j, value in enumerate(prefix):
            mask &= comps[j] == np.uint64(value)
        column = comps[comp]
        mask &= (column >= np.uint64(lo)) & (column <= np.uint64(hi))
        if step is None:  # collect the range's rows (their remaining components)
            out.append(tuple(c[mask] for c in comps[comp:]))
        else:
            bins = (column[mask] - np.uint64(lo)) // np.uint64(step)
            out.append(np.bincount(bins.astype(np.int64), minlength=BINS))
    return out


def _initial_state(ranks: dict[str, list[int]], summary: dict[str, Summary]) -> list[dict]:
    """One open range per wanted rank; a series whose keys the summary holds is answered at once."""
    state = []
    sorted_keys: dict[str, tuple[np.ndarray, ...]] = {}
    for name, wanted in ranks.items():
        s = summary.get(name, Summary(0, None, None, 1, ()))
        for rank in wanted:
            if not 0 <= rank < s.rows:
                raise ValueError(f"rank {rank} outside [0, {s.rows}) for {name!r}")
            state.append({"series": name, "rank": rank, "comp": 0, "prefix": (), "lo": s.lo, "hi": s.hi, "below": 0,
                          "count": s.rows, "arity": s.arity, "result": None})
            if s.keys is not None:  # all keys at hand
                if name not in sorted_keys:
                    order = np.lexsort(tuple(reversed(s.keys)))
                    sorted_keys[name] = tuple(c[order] for c in s.keys)
                state[-1]["result"] = tuple(int(c[rank]) for c in sorted_keys[name])
    return state


def _pass(ds, keys_fn: KeysFn, queries: list[tuple]) -> list:
    """One pass over ds answering every query: the keys of a small range (collected), else a histogram."""
    reduced: list = [None] * len(queries)
    for part in block_partials(ds, _refine_block, keys_fn=keys_fn, queries=queries):
        for i, value in enumerate(part):
            if queries[i][5] is None:
                reduced[i] = value if reduced[i] is None else tuple(
                    np.concatenate([a, b]) for a, b in zip(reduced[i], value))
            else:
                reduced[i] = value if reduced[i] is None else reduced[i] + value
    return reduced


def _narrow(s: dict, step: int | None, got) -> None:
    """Range `s` after a pass: answered from the collected keys, or narrowed to the histogram bin that
    holds its rank (ValueError when the pass saw another row count than the range held)."""
    local = s["rank"] - s["below"]
    if step is None:
        rows = len(got[0]) if got is not None else 0
        if rows != s["count"]:
            raise ValueError(f"{s['series']!r}: a pass saw {rows} rows in a range that held {s['count']}")
        order = np.lexsort(tuple(reversed(got)))
        s["result"] = s["prefix"] + tuple(int(c[order[local]]) for c in got)
        return
    if got is None or int(got.sum()) != s["count"]:
        raise ValueError(f"{s['series']!r}: a pass saw {0 if got is None else int(got.sum())} rows in a "
                         f"range that held {s['count']}")
    cum = np.cumsum(got)
    b = int(np.searchsorted(cum, local, side="right"))
    s["below"] += int(cum[b - 1]) if b else 0
    s["count"] = int(got[b])
    s["lo"] = s["lo"] + b * step
    s["hi"] = min(s["hi"], s["lo"] + step - 1)
    if s["lo"] == s["hi"]:  # one value left in this component
        s["prefix"] += (s["lo"],)
        if len(s["prefix"]) == s["arity"]:
            s["result"] = s["prefix"]
        else:
            s["comp"] += 1
            s["lo"], s["hi"] = 0, U64_MAX


def select(ds, keys_fn: KeysFn, ranks: dict[str, list[int]],
           summary: dict[str, Summary]) -> dict[str, list[tuple[int, ...]]]:
    """The order keys at the wanted 0-based ranks of each series: {series: [key tuple per rank]}.
    `summary` is `summarize(ds, keys_fn)` (or merged summary blocks); a series it holds every key
    of needs no pass. ds must give the same rows on every pass (a ValueError says so if a pass
    disagrees with the previous one)."""
    state = _initial_state(ranks, summary)
    while any(s["result"] is None for s in state):
        open_ = [s for s in state if s["result"] is None]
        queries = sorted({(s["series"], s["comp"], s["prefix"], s["lo"], s["hi"],
                           None if s["count"] <= COLLECT_MAX else -(-(s["hi"] - s["lo"] + 1) // BINS))
                          for s in open_}, key=repr)
        index = {q[:5]: i for i, q in enumerate(queries)}
        reduced = _pass(ds, keys_fn, queries)
        for s in open_:
            i = index[(s["series"], s["comp"], s["prefix"], s["lo"], s["hi"])]
            _narrow(s, queries[i][5], reduced[i])
    out: dict[str, list[tuple[int, ...]]] = {name: [] for name in ranks}
    for s in state:
        out[s["series"]].append(s["result"])
    return out
