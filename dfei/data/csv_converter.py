"""Bring your own logs: CSV or Parquet files -> the data contract.

The input is read whole with pyarrow (fine for logs that fit in memory; convert larger ones in
partitions). Splits: `time` (by --time-col quantiles: the latest rows become valid and test) or
`random` (by user when --user-col is given, so a user's rows stay in one split; else by row),
seeded. Every vocabulary is fitted on the train split only (values seen fewer than --min-count
times, or only outside train, become 0).
"""
from __future__ import annotations

import glob
import os

import numpy as np
import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dfei.data.convert import encode_features, write_dataset
from dfei.data.spec import SPLITS, DatasetError, DatasetSpec, Domain, check_column_names
from dfei.errors import ConfigError


def read_table(pattern: str) -> pd.DataFrame:
    paths = sorted(glob.glob(pattern)) or ([pattern] if os.path.exists(pattern) else [])
    if not paths:
        raise DatasetError(f"{pattern}: no such file")
    frames = []
    for path in paths:
        try:
            table = pq.read_table(path) if path.endswith(".parquet") else pacsv.read_csv(path)
        except Exception as err:  # pyarrow raises several types; the message is what matters
            raise DatasetError(f"{path}: cannot read as {'Parquet' if path.endswith('.parquet') else 'CSV'}: {err}") from None
        frames.append(table.to_pandas())
    return pd.concat(frames, ignore_index=True)


def _split(df: pd.DataFrame, how: str, time_col: str | None, user_col: str | None, valid_frac: float,
           test_frac: float, seed: int) -> np.ndarray:
    """Split name per row."""
    if how == "time":
        if not time_col:
            raise ConfigError("--split time needs --time-col")
        t = df[time_col]
        if not (pd.api.types.is_numeric_dtype(t) or pd.api.types.is_datetime64_any_dtype(t)):
            t = pd.to_datetime(t, errors="coerce")  # date strings, whatever pandas' string dtype
        if pd.isna(t).any():
            raise DatasetError(f"column {time_col!r}: {int(pd.isna(t).sum())} value(s) are not times")
        rank = pd.Series(t).rank(method="first").to_numpy() / len(df)
    else:
        rng = np.random.default_rng(seed)
        if user_col:
            users = df[user_col].astype(str).to_numpy()
            uniq, inverse = np.unique(users, return_inverse=True)
            rank = rng.random(len(uniq))[inverse]
        else:
            rank = rng.random(len(df))
    cut_valid, cut_test = 1 - valid_frac - test_frac, 1 - test_frac
    return np.where(rank <= cut_valid, "train", np.where(rank <= cut_test, "valid", "test"))


def convert_csv(input: str, out: str, domain_col: str, label_col: str, features: list[str] | None = None,
                label_threshold: float | None = None, user_col: str | None = None, time_col: str | None = None,
                split: str = "random", numeric: list[str] | None = None, min_count: int = 1,
                valid_frac: float = 0.1, test_frac: float = 0.1, seed: int = 0, overwrite: bool = False,
                log=print) -> DatasetSpec:
    df = read_table(input)
    named = [domain_col, label_col] + (features or []) + [c for c in (user_col, time_col) if c] + (numeric or [])
    missing = [c for c in named if c not in df.columns]
    if missing:
        raise DatasetError(f"{input}: column(s) {missing} not found; the file has {list(df.columns)}")
    if split not in ("time", "random"):
        raise ConfigError(f"--split must be time or random, got {split!r}")
    numeric = list(numeric or [])
    if features is None:
        features = [c for c in df.columns if c not in (domain_col, label_col, time_col)]
    if user_col and user_col not in features:
        features = [user_col] + features
    clash = [c for c in features if c in (domain_col, label_col, "label")]
    if clash:
        raise DatasetError(f"{input}: column(s) {clash} cannot be features: the domain and label columns are not "
                           f"inputs, and 'label' is the name of the written label column (rename it)")
    check_column_names(features, "label", input)  # refused here, not when predict.py reads the dataset back
    categorical = [c for c in features if c not in numeric]
    numeric = [c for c in features if c in numeric]

    raw_label = df[label_col]
    if label_threshold is not None:
        numeric_label = pd.to_numeric(raw_label, errors="coerce")
        if numeric_label.isna().any():
            first = raw_label[numeric_label.isna()].iloc[0]
            raise DatasetError(f"{input}: label column {label_col!r} has {int(numeric_label.isna().sum())} missing or "
                               f"non-numeric value(s), e.g. {first!r}")
        label = (numeric_label >= label_threshold).to_numpy(dtype=np.int8)
    else:
        bad = sorted({v.item() if hasattr(v, "item") else v for v in raw_label.dropna().unique()} - {0, 1}, key=str)
        if bad or raw_label.isna().any():
            shown = bad[:5] if bad else ["null"]
            raise DatasetError(f"{input}: label column {label_col!r} has value(s) {shown}; expected 0/1 "
                               f"(or pass --label-threshold)")
        label = raw_label.to_numpy(dtype=np.int8)
    if df[domain_col].isna().any():
        raise DatasetError(f"{input}: domain column {domain_col!r} has {int(df[domain_col].isna().sum())} null value(s)")

    names = sorted(df[domain_col].astype(str).unique())
    domain_list = [Domain(i, n) for i, n in enumerate(names)]
    domain_ids = df[domain_col].astype(str).map({n: i for i, n in enumerate(names)}).to_numpy()
    which = _split(df, split, time_col, user_col, valid_frac, test_frac, seed)
    parts = {s: df.loc[which == s] for s in SPLITS}
    empty = [s for s in SPLITS if parts[s].empty]
    if empty:
        raise DatasetError(f"{input}: split(s) {empty} would be empty; change --valid-frac/--test-frac or --split")
    encoded, feature_specs = encode_features(parts, categorical, numeric, min_count)
    return write_dataset(
        out, os.path.splitext(os.path.basename(input))[0], encoded,
        {s: label[which == s] for s in SPLITS}, {s: domain_ids[which == s] for s in SPLITS},
        domain_list, feature_specs, user_col,
        meta={"converter": "csv", "input": input, "split": split, "label_threshold": label_threshold,
              "min_count": min_count, "seed": seed, "positive_rate": float(label.mean())},
        overwrite=overwrite, log=log)
