"""Bring-your-own-data converter: train-only vocabularies, splits, clear errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dfei.data.csv_converter import convert_csv
from dfei.data.dataset import ParquetDataset
from dfei.data.spec import DatasetError


def _logs(n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "user": rng.integers(0, 50, n), "item": [f"i{v}" for v in rng.integers(0, 40, n)],
        "scenario": rng.choice(["feed", "search"], n), "rating": rng.integers(1, 6, n),
        "price": rng.random(n) * 100, "ts": np.arange(n)})


def test_time_split_with_train_only_vocabularies(tmp_path):
    df = _logs()
    df.loc[df.index[-1], "item"] = "only-in-test"  # the latest row lands in test
    df.to_csv(tmp_path / "logs.csv", index=False)
    spec = convert_csv(str(tmp_path / "logs.csv"), str(tmp_path / "ds"), "scenario", "rating", label_threshold=4,
                       user_col="user", time_col="ts", split="time", numeric=["price"], log=lambda *a: None)
    ds = ParquetDataset(str(tmp_path / "ds"))
    assert [d.name for d in spec.domains] == ["feed", "search"] and spec.user_column == "user"
    assert sum(ds.rows("train")) == 480 and sum(ds.rows("test")) == 60  # 80/10/10 by time
    cards = {f.name: f.cardinality for f in spec.features}
    assert cards["price"] <= 11 and cards["item"] == 41  # 40 train items + OOV
    last = df.iloc[-1]
    domain_id = 0 if last.scenario == "feed" else 1
    test = pq.read_table(str(tmp_path / "ds" / "test" / f"domain={domain_id}")).to_pandas()
    assert (test["item"] == 0).sum() >= 1  # the test-only item is OOV
    train = pd.concat(pq.read_table(str(tmp_path / "ds" / "train" / f"domain={d}")).to_pandas() for d in (0, 1))
    assert (train["item"] > 0).all()
    assert abs(train["label"].mean() - (df.rating[:480] >= 4).mean()) < 1e-9


def test_random_split_keeps_each_user_in_one_split(tmp_path):
    _logs().to_csv(tmp_path / "logs.csv", index=False)
    convert_csv(str(tmp_path / "logs.csv"), str(tmp_path / "ds"), "scenario", "rating", label_threshold=3,
                user_col="user", features=["item"], split="random", min_count=2, log=lambda *a: None)
    users = {}
    for split in ("train", "valid", "test"):
        frame = pq.read_table(str(tmp_path / "ds" / split)).to_pandas()
        users[split] = set(frame["user"])
    # unseen users are all OOV (0) outside train; no train user id appears in valid/test except 0
    assert users["valid"] <= {0} and users["test"] <= {0}


def test_clear_errors(tmp_path):
    _logs().to_csv(tmp_path / "logs.csv", index=False)
    with pytest.raises(DatasetError, match=r"column\(s\) \['nope'\] not found"):
        convert_csv(str(tmp_path / "logs.csv"), str(tmp_path / "a"), "nope", "rating", log=lambda *a: None)
    with pytest.raises(DatasetError, match=r"label column 'rating' has value\(s\) \[2, 3, 4, 5\]"):
        convert_csv(str(tmp_path / "logs.csv"), str(tmp_path / "b"), "scenario", "rating", log=lambda *a: None)
    with pytest.raises(DatasetError, match="no such file"):
        convert_csv(str(tmp_path / "missing.csv"), str(tmp_path / "c"), "scenario", "rating", log=lambda *a: None)
    assert not (tmp_path / "b").exists()


def test_time_split_parses_date_strings_in_time_order(tmp_path):
    df = _logs(300)
    days = pd.date_range("2022-04-01", periods=300, freq="h")
    df["when"] = [f"{d.month}/{d.day}/{d.year} {d.hour}:00" for d in days]  # not ISO: text order != time order
    df.to_csv(tmp_path / "logs.csv", index=False)
    convert_csv(str(tmp_path / "logs.csv"), str(tmp_path / "ds"), "scenario", "rating", label_threshold=4,
                features=["item"], time_col="when", split="time", log=lambda *a: None)
    ds = ParquetDataset(str(tmp_path / "ds"))
    assert sum(ds.rows("train")) == 240 and sum(ds.rows("test")) == 30
    # the first 240 hours are train: their label rate matches the source rows, in time order
    train = pd.concat(pq.read_table(str(tmp_path / "ds" / "train" / f"domain={d}")).to_pandas() for d in (0, 1))
    assert abs(train["label"].mean() - (df.rating[:240] >= 4).mean()) < 1e-9


def test_label_and_domain_cannot_be_features_and_threshold_needs_numbers(tmp_path):
    df = _logs()
    df.to_csv(tmp_path / "logs.csv", index=False)
    with pytest.raises(DatasetError, match=r"column\(s\) \['rating'\] cannot be features"):
        convert_csv(str(tmp_path / "logs.csv"), str(tmp_path / "a"), "scenario", "rating", features=["item", "rating"],
                    label_threshold=4, log=lambda *a: None)
    df.loc[3, "rating"] = None
    df.to_csv(tmp_path / "gaps.csv", index=False)
    with pytest.raises(DatasetError, match=r"label column 'rating' has 1 missing or non-numeric value"):
        convert_csv(str(tmp_path / "gaps.csv"), str(tmp_path / "b"), "scenario", "rating", label_threshold=4,
                    log=lambda *a: None)
