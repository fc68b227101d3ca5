"""Per-block work of the CSV/Parquet converter: what runs inside Ray Data tasks and actors.

Pure pyarrow/numpy/pandas on one block at a time (memory: a block), shipped to workers by
dfei.data.csv_converter, which holds the driver side. Internal columns start with `__dfei_`.

Split rule (`SplitRule`): every row gets a 64-bit key, a seeded hash of the row's content (every
column as read; pandas' `hash_pandas_object`, mixed with the seed by splitmix64). It depends on
nothing but the row and the seed: not on file or block boundaries, parallelism or row order.
- `random` (default, the usual CTR evaluation): by row; u = key / 2^64 in [0, 1): train where
  u <= 1 - valid - test, valid where u <= 1 - test, else test. A user's rows spread over all splits.
- `random-user` (cold start): the same with the key of the row's user (a seeded hash of the user
  id's text), so each user's rows stay in one split and valid/test users are unseen in train.
- `time`: rows in (time, key) order; with N rows, the row at 1-based rank r is train if
  r / N <= 1 - valid - test, valid if r / N <= 1 - test, else test (as the pandas converter did).
  Rows with equal times at a cut point are ordered by their key (the pandas converter used input
  order, which is not defined once the input is read in parallel blocks). Identical rows have the
  same key and are never separated, so a cut can move by the number of duplicates of its row.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dfei.data.csv_inputs import PATH_COLUMN
from dfei.data.encoders.hashing import seeded
from dfei.data.encoders.text import parse_numbers, text_form
from dfei.data.encoders.transform import FeatureTransform, LabelRule
from dfei.data.select import float_key, int_key, summary_block
from dfei.data.spec import SPLITS

KEY, TIME, LABEL, BAD_LABEL, DOMAIN = "__dfei_key", "__dfei_time", "__dfei_label", "__dfei_bad_label", "__dfei_domain"
BAD_NUMBER = "__dfei_bad_number"  # per row: JSON [feature, value, file] of a numeric feature's value that is no number
SPLIT = "__dfei_split"  # partition columns of the encoded output (renamed to the contract's layout)
SPLIT_KINDS = ("random", "random-user", "time")


def row_hashes(table: pa.Table) -> np.ndarray:
    """uint64 [n]: a hash of each row's values (all columns, in order, in their text form); rows
    equal in every column hash equal, whatever type a file or block inferred for a column (an int
    column read as float64 where a block holds a null hashes the same). Deterministic across
    processes and machines (pandas' fixed-key SipHash)."""
    frame = pd.DataFrame({str(i): text_form(table.column(i)).to_pandas() for i in range(table.num_columns)})
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)


@dataclass(frozen=True)
class SplitRule:
    kind: str  # random | random-user | time
    valid_frac: float
    test_frac: float
    seed: int
    # time: order keys (time key, row key) of the last train row and of the last valid row
    cuts: tuple[tuple[int, int], tuple[int, int]] | None = None

    @property
    def bounds(self) -> tuple[float, float]:
        return 1 - self.valid_frac - self.test_frac, 1 - self.test_frac

    def describe(self) -> str:
        frac = f"{1 - self.valid_frac - self.test_frac:.0%}/{self.valid_frac:.0%}/{self.test_frac:.0%}"
        return {"random": f"random by row ({frac} train/valid/test, seed {self.seed})",
                "random-user": f"random by user, cold start: valid/test users are unseen in train ({frac}, "
                               f"seed {self.seed})",
                "time": f"by time ({frac} train/valid/test; equal times at a cut ordered by a seeded row hash, "
                        f"seed {self.seed})"}[self.kind]

    def assign(self, batch: pa.Table) -> np.ndarray:
        """Split index (0 train, 1 valid, 2 test) per row of a staged block, int8 [n]."""
        key = batch.column(KEY).to_numpy()
        if self.kind == "time":
            t = time_keys(batch.column(TIME))
            (t1, k1), (t2, k2) = self.cuts
            after1 = (t > np.uint64(t1)) | ((t == np.uint64(t1)) & (key > np.uint64(k1)))
            after2 = (t > np.uint64(t2)) | ((t == np.uint64(t2)) & (key > np.uint64(k2)))
            return after1.astype(np.int8) + after2.astype(np.int8)
        u = (key >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
        lo, hi = self.bounds
        return np.where(u <= lo, 0, np.where(u <= hi, 1, 2)).astype(np.int8)


def time_keys(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Staged times (float64 numbers or int64 nanoseconds, no nulls) -> uint64 order keys [n]."""
    values = column.to_numpy()
    return float_key(values) if values.dtype.kind == "f" else int_key(values)


@dataclass(frozen=True)
class StageConfig:
    domain_col: str
    label_col: str
    label_threshold: float | None
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    time_col: str | None
    time_kind: str | None  # number | datetime | text
    time_format: str | None  # strptime format for text times (guessed from the first value)
    split: str
    user_col: str | None
    seed: int
    path_added: bool = False  # the read added Ray Data's `path` column (to name a bad value's file)


def _label(column: pa.ChunkedArray, rule: LabelRule) -> tuple[np.ndarray, list[str | None]]:
    """Labels int8 [n] (-1 where invalid) and, per row, the invalid value as JSON (None if valid)."""
    label = rule.apply(column)
    raw = column.to_pandas()
    examples = [None] * len(raw)
    for i in np.flatnonzero(label < 0):
        v = raw.iloc[i]
        v = None if v is None or (isinstance(v, float) and np.isnan(v) and rule.threshold is None) else v
        examples[i] = json.dumps(v.item() if hasattr(v, "item") else v, default=str)
    return label, examples


def _times(column: pa.ChunkedArray, kind: str, fmt: str | None) -> pa.Array:
    """Times as float64 (number columns) or int64 UTC nanoseconds (dates and text); null where
    a value is not a time."""
    raw = column.to_pandas()
    if kind == "number":
        return pa.array(pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64), from_pandas=True)
    if kind == "text":
        parsed = pd.to_datetime(raw, errors="coerce", utc=True, format=fmt or "mixed")
    else:
        parsed = pd.to_datetime(raw, errors="coerce", utc=True)
    return pa.array(parsed.dt.as_unit("ns").dt.tz_localize(None), from_pandas=True).cast(pa.int64())


def _numbers(batch: pa.Table, numeric: tuple[str, ...], path_added: bool) -> tuple[dict[str, pa.Array], pa.Array]:
    """Numeric features as float64 (NaN missing) and, per row, JSON [feature, value, file] of the
    first value that is not a number (null where every value is)."""
    out, bad_rows = {}, [None] * batch.num_rows
    paths = batch.column(PATH_COLUMN) if path_added else None  # not a column of the user's named `path`
    for c in numeric:
        values, bad = parse_numbers(batch.column(c))
        out[c] = pa.array(values, from_pandas=True)
        texts = text_form(batch.column(c)) if bad.any() else None
        for i in np.flatnonzero(bad):
            if bad_rows[i] is None:
                bad_rows[i] = json.dumps([c, texts[int(i)].as_py(),
                                          paths[int(i)].as_py() if paths is not None else None])
    return out, pa.array(bad_rows, pa.string())


def stage(batch: pa.Table, cfg: StageConfig) -> pa.Table:
    """A raw block -> the staged block: features (categorical as text, numeric as float64), the
    parsed label and time, the domain as text, the split key; bad values kept for the errors. The
    row key hashes the row's own columns only (not the file it came from)."""
    out = {c: text_form(batch.column(c)) for c in cfg.categorical}
    numbers, out[BAD_NUMBER] = _numbers(batch, cfg.numeric, cfg.path_added)
    out.update(numbers)
    if PATH_COLUMN in batch.column_names and cfg.path_added:
        batch = batch.drop_columns([PATH_COLUMN])
    label, bad = _label(batch.column(cfg.label_col), LabelRule(cfg.label_col, cfg.label_threshold))
    out[LABEL] = pa.array(label, pa.int8())
    out[BAD_LABEL] = pa.array(bad, pa.string())
    out[DOMAIN] = text_form(batch.column(cfg.domain_col))
    if cfg.time_col:
        out[TIME] = _times(batch.column(cfg.time_col), cfg.time_kind, cfg.time_format)
    if cfg.split == "random-user":
        users = text_form(batch.column(cfg.user_col)).to_numpy(zero_copy_only=False)
        hashes = pd.util.hash_array(users.astype(object))
    else:
        hashes = row_hashes(batch)
    out[KEY] = pa.array(seeded(hashes, cfg.seed), pa.uint64())
    return pa.table(out)


def stats(batch: pa.Table, rule: SplitRule | None) -> dict:
    """What the driver checks before fitting: rows, positives, invalid labels (count and the five
    smallest by text), null domains, domain names, unparsable times, rows per split (random rules)."""
    label = batch.column(LABEL).to_numpy()
    bad = [json.loads(b) for b in pc.unique(batch.column(BAD_LABEL).drop_null()).to_pylist()]
    examples = sorted((v for v in bad if v is not None), key=str)[:5] + ([None] if None in bad else [])
    domain = batch.column(DOMAIN)
    out = {"rows": batch.num_rows, "positives": int((label == 1).sum()), "bad_labels": int((label < 0).sum()),
           "bad_label_examples": examples, "null_domains": domain.null_count,
           "domains": set(pc.unique(domain.drop_null()).to_pylist()),
           "bad_times": batch.column(TIME).null_count if TIME in batch.column_names else 0,
           "bad_numbers": 0, "bad_number_examples": []}
    if BAD_NUMBER in batch.column_names:
        bad_numbers = batch.column(BAD_NUMBER).drop_null()
        out["bad_numbers"] = len(bad_numbers)
        out["bad_number_examples"] = [json.loads(v) for v in pc.unique(bad_numbers).to_pylist()[:5]]
    if rule is not None:
        out["split_rows"] = np.bincount(rule.assign(batch), minlength=3)
    return out


def check_block(batch: pa.Table, rule: SplitRule | None, keys_fns: dict) -> dict:
    """The check pass's per-block work: `stats`, plus a dfei.data.select summary per keys function."""
    return {"stats": stats(batch, rule), "summaries": {k: summary_block(batch, f) for k, f in keys_fns.items()}}


def train_value_counts(batch: pa.Table, rule: SplitRule, categorical: tuple[str, ...]) -> pa.Table:
    """Partial vocabulary counts of the block's train rows, long format (feature index, value
    text, count), for Ray Data's groupby to sum."""
    train = pa.array(rule.assign(batch) == 0)
    parts = []
    for i, c in enumerate(categorical):
        counts = pc.value_counts(batch.column(c).filter(train).drop_null())
        parts.append(pa.table({"feature": pa.array(np.full(len(counts), i, dtype=np.int32)),
                               "value": counts.field("values"), "count": counts.field("counts").cast(pa.int64())}))
    if not parts:
        return pa.table({"feature": pa.array([], pa.int32()), "value": pa.array([], pa.string()),
                         "count": pa.array([], pa.int64())})
    return pa.concat_tables(parts)


def numeric_keys(batch: pa.Table, rule: SplitRule, numeric: tuple[str, ...]) -> dict[str, tuple[np.ndarray]]:
    """dfei.data.select keys: each numeric feature's non-missing train values, in order."""
    train = rule.assign(batch) == 0
    out = {}
    for c in numeric:
        values = batch.column(c).to_numpy(zero_copy_only=False)
        keep = train & ~np.isnan(values)
        out[c] = (float_key(values[keep]),)
    return out


def time_order_keys(batch: pa.Table) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """dfei.data.select keys for the time split: (time, row key) of every row."""
    return {"time": (time_keys(batch.column(TIME)), batch.column(KEY).to_numpy())}


_CACHE: dict[str, tuple[FeatureTransform, SplitRule]] = {}


def cached(token: str, ref: list):
    """The object behind `ref[0]` (an ObjectRef in a list, so Ray does not resolve it as an
    argument), fetched once per worker process and kept under `token`: the encoders' lookup
    tables cost O(V) to build, so each worker builds them once per conversion, not once per block."""
    if token not in _CACHE:
        import ray

        _CACHE.clear()  # one conversion at a time per worker
        _CACHE[token] = ray.get(ref[0])
    return _CACHE[token]


def encode(batch: pa.Table, token: str, ref: list) -> pa.Table:
    """Staged block -> encoded block (features int32, label int8) with its split and domain id as
    partition columns. A Ray Data task; ref holds (FeatureTransform, SplitRule)."""
    transform, rule = cached(token, ref)
    out = {name: pa.array(ids) for name, ids in transform.encode(batch).items()}
    out["label"] = pa.array(batch.column(LABEL).to_numpy().astype(np.int8))
    out[SPLIT] = pa.array(np.asarray(SPLITS, dtype=object)[rule.assign(batch)])
    out[DOMAIN] = pa.array(transform.domain.encode(batch.column(DOMAIN)))
    return pa.table(out)
