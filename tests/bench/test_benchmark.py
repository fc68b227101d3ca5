"""pipelines/benchmark.py --quick runs end to end (a smoke check: figures are not asserted against
targets, only that every comparison was measured and is a sane number)."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest

from dfei.bench.suite import REQUIRED_KEYS, dotted

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_quick_benchmark_writes_every_figure(ray_cluster, tmp_path):
    env = {**os.environ, "RAY_ADDRESS": ray_cluster["address"]}
    out = tmp_path / "bench"
    # as the README has it: a relative --out (Ray Train's storage under it must be made absolute)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "pipelines", "benchmark.py"), "--quick", "--scale",
                           "0.001", "--repeats", "1", "--out", "bench"], env=env, capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.load(open(out / "benchmark.json"))
    for key in REQUIRED_KEYS:
        value = dotted(res, key)
        assert isinstance(value, (int, float)) and math.isfinite(value), (key, value)
    for key in ("train.plain_sps", "train.ray_1w_sps", "train.ray_2w_sps", "ingest.rows_per_s", "startup_s"):
        assert dotted(res, key) > 0, key
    assert 0 < res["train"]["peak_fraction"] < 1  # model FLOP/s below the measured matmul peak
    assert res["embeddings"]["variants"]["dense"]["ratio"] > res["embeddings"]["ratio"]  # what lazy updates buy
    assert set(res["ingest"]["backends"]) == {"arrow"}  # --quick: the default backend only
    assert "| train: Ray pipeline, 1 worker" in proc.stdout  # the printed table
    # the fast-path targets: each with its figure, from figures of this run
    fp = res["fast_path"]
    rounds = fp["fused_over_sequential_rounds"]  # fused / sequential per plain round (each in one process)
    assert len(rounds) == 2 and fp["fused_over_sequential"] == pytest.approx(sum(rounds) / 2)
    assert fp["best_bound_frac"] == pytest.approx(fp["best_sps"] / fp["bound"]["bound_sps"])
    names = [t["target"] for t in res["targets"]]
    assert "best mode / dense-tower bound" in names and "fused / sequential (plain loop, paired rounds)" in names
    assert "| target: best mode / dense-tower bound" in proc.stdout
    # every printed target says whether it was met
    targets = re.findall(r"\(target [<>]= [^:)]+(: [^)]*)?\)", proc.stdout)
    assert len(targets) >= 4 and all(v in (": met", ": MISSED") for v in targets), targets
    # the ratios are quotients of figures measured in this run: each Ray run against the plain epochs
    # measured just before and after it
    headline = res["train"]["modes"]["sequential"]  # --quick measures the headline mode only
    ray, plain = headline["ray_1w_runs"], headline["plain_runs"]
    assert len(ray) == 1 and len(plain) == 2
    assert dotted(res, "train.ratio_1w") == pytest.approx(ray[0] / ((plain[0] + plain[1]) / 2))
    assert dotted(res, "ingest.ratio_to_train") == res["ingest"]["rows_per_s"] / res["train"]["ray_1w_sps"]


def test_parity_figures_report_the_fused_vs_sequential_target(tmp_path):
    from dfei.bench.suite import parity_figures
    from dfei.errors import ConfigError

    path = tmp_path / "parity.json"
    path.write_text(json.dumps({"base": {"data": "/d/industrial-s0.01"}, "seeds": 5, "variants": [
        {"variant": "mode=sequential", "mean": 0.70, "mean_diff_vs_ref": 0.0, "p_vs_ref": float("nan")},
        {"variant": "mode=fused", "mean": 0.701, "mean_diff_vs_ref": 0.001, "p_vs_ref": 0.5}]}))
    p = parity_figures(str(path))
    assert (p["diff"], p["seeds"], p["p"], p["fused"]) == (0.001, 5, 0.5, 0.701)
    (tmp_path / "other.json").write_text(json.dumps({"base": {"data": "x"}, "seeds": 3, "variants": [
        {"variant": "embedding_update=dense"}, {"variant": "embedding_update=lazy"}]}))
    with pytest.raises(ConfigError, match="expected variants mode=sequential"):
        parity_figures(str(tmp_path / "other.json"))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "pipelines", "benchmark.py"), "--parity",
                           str(tmp_path / "missing.json"), "--out", str(tmp_path / "b")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "not a readable parity.json" in proc.stderr
    assert not (tmp_path / "b").exists()  # refused before anything was measured or written


def test_bad_arguments_fail_fast(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "pipelines", "benchmark.py"), "--modes", "sequential",
                           "--headline-mode", "fused", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "--modes must be among" in proc.stderr


def test_a_target_line_says_met_or_missed():
    from dfei.bench.suite import target

    assert target(1.40, "<=", 1.3, "1.3") == "(target <= 1.3: MISSED)"
    assert target(1.02, "<=", 1.3, "1.3") == "(target <= 1.3: met)"
    assert target(0.95, ">=", 0.9, "0.9") == "(target >= 0.9: met)"
    assert target(float("nan"), ">=", 0.9, "0.9") == "(target >= 0.9: not measured)"
