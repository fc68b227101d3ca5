"""KuaiRand-1K converter on a fixture with the official file names, columns and dtypes."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq

from dfei.data.dataset import ParquetDataset
from dfei.data.kuairand import USER_CATEGORICAL, USER_NUMERIC, VIDEO_CATEGORICAL, VIDEO_NUMERIC, VIDEO_STATISTIC
from kuairand_fixture import write_fixture

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_kuairand_fixture_end_to_end(tmp_path):
    raw = tmp_path / "raw"
    write_fixture(str(raw))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "pipelines", "prepare_data.py"), "kuairand",
                           "--raw", str(raw), "--out", str(tmp_path / "kr")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ds = ParquetDataset(str(tmp_path / "kr"))
    spec = ds.spec
    assert [(d.id, d.name) for d in spec.domains] == [(0, "B1"), (1, "B2"), (2, "B3"), (4, "B4"), (5, "B5"), (6, "B6")]
    names = spec.feature_names
    assert len(names) == 1 + 30 + 11 + 51 and names[0] == "user_id" and spec.user_column == "user_id"
    stat = [f"stat_{c}" for c in VIDEO_STATISTIC]
    assert set(USER_CATEGORICAL + USER_NUMERIC + VIDEO_CATEGORICAL + VIDEO_NUMERIC + stat) == set(names[1:])
    cards = {f.name: f.cardinality for f in spec.features}
    assert all(cards[c] <= 11 for c in stat + USER_NUMERIC)  # ~10 quantile bins + missing
    # splits by date: 11 / 3 / 17 days of logs, tabs 3 and 7 dropped
    logs = pd.concat(pd.read_csv(raw / f) for f in ("log_standard_4_08_to_4_21_1k.csv", "log_standard_4_22_to_5_08_1k.csv"))
    logs = logs[logs.tab.isin([0, 1, 2, 4, 5, 6])]
    expect = {"train": logs.date.between(20220408, 20220418), "valid": logs.date.between(20220419, 20220421),
              "test": logs.date.between(20220422, 20220508)}
    for split, mask in expect.items():
        assert sum(ds.rows(split)) == int(mask.sum())
        part = logs[mask]
        assert ds.rows(split) == [int((part.tab == t).sum()) for t in (0, 1, 2, 4, 5, 6)]
    # videos without side features get the OOV id 0 in their statistic columns
    test = pq.read_table(str(tmp_path / "kr" / "test")).to_pandas()
    assert (test["stat_show_cnt"] == 0).any() and (test["stat_show_cnt"] > 0).mean() > 0.9
    meta = json.load(open(tmp_path / "kr" / "dataset.json"))["meta"]
    assert meta["converter"] == "kuairand"


def test_missing_release_file_is_named(tmp_path, capsys):
    # in this process (the real prepare_data.py process: the test above)
    raw = tmp_path / "raw"
    write_fixture(str(raw))
    os.remove(raw / "user_features_1k.csv")
    spec = importlib.util.spec_from_file_location("pipeline_prepare_data",
                                                  os.path.join(ROOT, "pipelines", "prepare_data.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["kuairand", "--raw", str(raw), "--out", str(tmp_path / "kr")]) == 2
    assert "user_features_1k.csv: missing" in capsys.readouterr().err
    assert not (tmp_path / "kr").exists()
