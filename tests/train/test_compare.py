"""compare.py: tables in the paper's layout with a correct paired t-test, resumable, seeded."""
from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest
from scipy.stats import ttest_rel

from dfei.train.compare import compare
from dfei.train.config import TrainConfig
from dfei.train.runner import run_training

COLUMNS = ["B1", "B2", "B3", "B4", "B5", "B6", "avg"]


@pytest.fixture(scope="module")
def report(ray_session, public_tiny, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("compare"))
    base = TrainConfig(data=public_tiny, epochs=1, cpus_per_worker=1)
    compare(base, ["mlp", "dfei"], seeds=2, out=out, log=lambda *a: None)
    return base, out


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tables_have_the_paper_layout_and_a_correct_t_test(report):
    _, out = report
    table = open(os.path.join(out, "table.md")).read()
    assert "| Model | " + " | ".join(COLUMNS) + " |" in table
    assert table.count("\n| mlp |") == 1 and table.count("\n| dfei |") == 1
    runs = _rows(os.path.join(out, "runs.csv"))
    assert [(r["model"], r["seed"]) for r in runs] == [("mlp", "0"), ("mlp", "1"), ("dfei", "0"), ("dfei", "1")]
    means = {r["model"]: r for r in _rows(os.path.join(out, "table.csv")) if r["model"] in ("mlp", "dfei")}
    p_row = next(r for r in _rows(os.path.join(out, "table.csv")) if r["model"] == "p_dfei_vs_best_baseline")
    for col in COLUMNS:
        dfei = [float(r[col]) for r in runs if r["model"] == "dfei"]
        mlp = [float(r[col]) for r in runs if r["model"] == "mlp"]
        assert float(means["dfei"][col]) == pytest.approx(np.mean(dfei), abs=1e-6)
        expected = ttest_rel(dfei, mlp).pvalue  # mlp is the only (hence best) baseline
        if math.isnan(expected):
            assert p_row[col] == "nan"
        else:
            assert float(p_row[col]) == pytest.approx(expected, rel=1e-4)
    assert "<u>" in table  # the best baseline is underlined in every column
    with open(os.path.join(out, "domain_features_tsne.png"), "rb") as f:  # ablation.png needs the ablation runs
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_finished_runs_are_not_trained_again(report):
    base, out = report
    logs: list[str] = []
    compare(base, ["mlp", "dfei"], seeds=2, out=out, log=logs.append)
    assert sum("skipped" in line for line in logs) == 4 and not any("training" in line for line in logs)


def test_the_same_seed_gives_identical_metrics_and_another_seed_does_not(report, tmp_path):
    base, out = report
    again = run_training(TrainConfig(**{**base.to_dict(), "model": "dfei", "seed": 0, "out": str(tmp_path / "again")}),
                         log=lambda *a: None)
    first = json.load(open(os.path.join(out, "runs", "dfei", "seed0", "metrics.json")))
    other = json.load(open(os.path.join(out, "runs", "dfei", "seed1", "metrics.json")))
    assert again["splits"]["test"] == first["splits"]["test"] and again["avg_auc"] == first["avg_auc"]
    assert other["avg_auc"]["test"] != first["avg_auc"]["test"]
