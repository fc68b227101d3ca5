"""pipelines/benchmark.py --quick runs end to end (a smoke check: figures are not asserted against
targets, only that every comparison was measured and is a sane number); the 2-worker measurements
(the EMA sync's share of a step) on their own; the table and the targets on a canned benchmark.json."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys

import pytest

from dfei.bench.suite import REQUIRED_KEYS, dotted

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWO_WORKER_KEYS = ("train.ray_2w_sps", "sync.overhead_frac")  # what --no-two-workers leaves unmeasured


def benchmark_main():
    spec = importlib.util.spec_from_file_location("pipeline_benchmark", os.path.join(ROOT, "pipelines", "benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_quick_benchmark_writes_every_figure(ray_cluster, tmp_path):
    # its own process, as a user runs it (one that used torch.optim.Adam before LazyAdam profiles each
    # LazyAdam step twice: tests/bench/test_profile.py counts them). As the README has it: a relative
    # --out (Ray Train's storage under it must be made absolute). The 2-worker runs are left out here
    # (test_the_ema_sync_share_of_a_2_worker_step_is_measured below)
    env = {**os.environ, "RAY_ADDRESS": ray_cluster["address"]}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "pipelines", "benchmark.py"), "--quick",
                           "--no-two-workers", "--scale", "0.001", "--repeats", "1", "--out", "bench"], env=env,
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    printed = proc.stdout
    res = json.load(open(tmp_path / "bench" / "benchmark.json"))
    assert res["config"]["out"] == str(tmp_path / "bench") and res["config"]["two_workers"] is False
    for key in REQUIRED_KEYS:
        value = dotted(res, key)
        if key in TWO_WORKER_KEYS:
            assert value is None, (key, value)
            continue
        assert isinstance(value, (int, float)) and math.isfinite(value), (key, value)
    for key in ("train.plain_sps", "train.ray_1w_sps", "ingest.rows_per_s", "startup_s"):
        assert dotted(res, key) > 0, key
    assert res["sync"]["modes"] == {} and res["train"]["ratio_2w_to_1w"] is None
    assert 0 < res["train"]["peak_fraction"] < 1  # model FLOP/s below the measured matmul peak
    assert res["embeddings"]["variants"]["dense"]["ratio"] > res["embeddings"]["ratio"]  # what lazy updates buy
    assert set(res["ingest"]["backends"]) == {"arrow"}  # --quick: the default backend only
    assert "| train: Ray pipeline, 1 worker" in printed  # the printed table
    # the fast-path targets: each with its figure, from figures of this run
    fp = res["fast_path"]
    rounds = fp["fused_over_sequential_rounds"]  # fused / sequential per plain round (each in one process)
    assert len(rounds) == 2 and fp["fused_over_sequential"] == pytest.approx(sum(rounds) / 2)
    assert fp["best_bound_frac"] == pytest.approx(fp["best_sps"] / fp["bound"]["bound_sps"])
    names = [t["target"] for t in res["targets"]]
    assert "best mode / dense-tower bound" in names and "fused / sequential (plain loop, paired rounds)" in names
    assert "| target: best mode / dense-tower bound" in printed
    # every printed target says whether it was met
    found = re.findall(r"\(target [<>]= [^:)]+(: [^)]*)?\)", printed)
    assert len(found) >= 4 and all(v in (": met", ": MISSED") for v in found), found
    # the ratios are quotients of figures measured in this run: each Ray run against the plain epochs
    # measured just before and after it
    headline = res["train"]["modes"]["sequential"]  # --quick measures the headline mode only
    ray, plain = headline["ray_1w_runs"], headline["plain_runs"]
    assert len(ray) == 1 and len(plain) == 2
    assert dotted(res, "train.ratio_1w") == pytest.approx(ray[0] / ((plain[0] + plain[1]) / 2))
    assert dotted(res, "ingest.ratio_to_train") == res["ingest"]["rows_per_s"] / res["train"]["ray_1w_sps"]


def test_the_ema_sync_share_of_a_2_worker_step_is_measured(ray_session, tmp_path):
    """benchmark.py's sync figures (sync.*: 2 Ray Train workers, steps with and without the
    all-reduce), measured as run() measures them, with few steps."""
    from dfei.bench.ray_measure import sync_overhead

    cards, domains = [50, 20, 7], 3
    sync = sync_overhead(cards, domains, str(tmp_path), modes=("sequential", "fused"), batch_size=64, steps=3)
    assert set(sync) == {"sequential", "fused"}
    for mode, v in sync.items():
        assert v["step_s_with_sync"] > 0 and v["step_s_without_sync"] > 0 and v["steps_each"] == 3, mode
        assert math.isfinite(v["overhead_frac"]) and math.isfinite(v["overhead_frac_ci95"]), (mode, v)
        assert v["collective_s"] > 0 and v["intrinsic_frac"] == pytest.approx(
            v["collective_s"] * v["collectives_per_step"] / v["step_s_with_sync"])
    assert sync["fused"]["collectives_per_step"] == 1 and sync["sequential"]["collectives_per_step"] == domains


def _canned(sync_fused: float, ratio_1w: float) -> dict:
    """benchmark.json as run() writes it (every comparison measured, 2 workers and ray-data included)."""
    mode = {"plain_sps": 40000.0, "ray_1w_sps": 40000.0 * ratio_1w, "ratio_1w": ratio_1w,
            "ratio_1w_paired": [ratio_1w - 0.01, ratio_1w + 0.01], "ray_1w_runs": [40000.0 * ratio_1w] * 2,
            "plain_runs": [39000.0, 40000.0, 41000.0], "stream_sps": 30000.0, "ray_2w_sps": 60000.0}
    sync = {m: {"step_s_with_sync": 0.0102, "step_s_without_sync": 0.0100, "overhead_frac": frac,
                "overhead_frac_ci95": 0.004, "steps_each": 30, "collectives_per_step": n, "collective_s": 1e-4,
                "intrinsic_frac": 1e-4 * n / 0.0102} for m, frac, n in (("sequential", 0.03, 21), ("fused", sync_fused, 1))}
    fast = {m: {"plain_sps": sps, "bound_frac": sps / 80000.0, "peak_fraction": 0.05} for m, sps in
            (("sequential", 40000.0), ("fused", 60000.0))}
    return {
        "train": {"mode": "sequential", "plain_sps": 40000.0, "ray_1w_sps": mode["ray_1w_sps"], "ray_2w_sps": 60000.0,
                  "ratio_1w": ratio_1w, "ratio_2w_to_1w": 60000.0 / mode["ray_1w_sps"], "stream_sps": 30000.0,
                  "flops_per_sample": 2.0e5, "peak_flops": 1.0e11, "peak_fraction": 0.08,
                  "modes": {"sequential": mode, "fused": {**mode, "plain_sps": 60000.0}}},
        "ingest": {"backend": "arrow", "rows_per_s": 200000.0, "ratio_to_train": 5.0,
                   "backends": {"arrow": {"rows_per_s": 200000.0, "ratio_to_train": 5.0},
                                "ray-data": {"rows_per_s": 50000.0, "ratio_to_train": 1.25}}},
        "sync": {"mode": "sequential", "overhead_frac": 0.03, "modes": sync},
        "embeddings": {"ratio": 1.1, "update": "lazy", "variants": {
            "lazy": {"step_s_1e4": 0.010, "step_s_1e6": 0.011, "ratio": 1.1},
            "dense": {"step_s_1e4": 0.010, "step_s_1e6": 0.030, "ratio": 3.0}}},
        "fast_path": {"bound": {"loop_sps": 70000.0, "stacked_sps": 80000.0, "bound_sps": 80000.0}, "modes": fast,
                      "best_mode": "fused", "best_sps": 60000.0, "all_domain_steps": {"sequential": 900.0, "fused": 1800.0},
                      "fused_over_sequential_all_domain_steps": 2.0, "best_bound_frac": 0.75,
                      "fused_over_sequential": 1.5, "fused_over_sequential_rounds": [1.4, 1.6]},
        "startup_s": 9.0, "startup": {"ray": "cluster", "ray_init_s": 2.0, "fit_to_first_step_s": 7.0,
                                      "fit_to_worker_start_s": 4.0, "worker_setup_s": 1.0, "ready_to_first_step_s": 2.0},
    }


@pytest.mark.parametrize("sync_fused,ratio_1w,met", [(0.01, 0.95, True), (0.05, 0.80, False)])
def test_table_and_targets_of_a_canned_benchmark_json(tmp_path, sync_fused, ratio_1w, met):
    from dfei.bench.suite import BenchConfig, table, targets

    path = tmp_path / "benchmark.json"
    path.write_text(json.dumps(_canned(sync_fused, ratio_1w)))
    res = json.loads(path.read_text())
    res["targets"] = targets(BenchConfig(out=str(tmp_path)), res)
    by_name = {t["target"]: t for t in res["targets"]}
    status = "met" if met else "MISSED"
    assert by_name["EMA sync share of a 2-worker fused step"]["status"] == f"(target <= 2%: {status})"
    assert by_name["Ray 1 worker / plain loop, sequential"]["status"] == f"(target >= 0.9x: {status})"
    assert by_name["Ray 1 worker / plain loop, fused"]["value"] == ratio_1w
    assert by_name["best mode / dense-tower bound"]["status"] == "(target >= 0.70: met)"  # 0.75
    assert by_name["fused / sequential (plain loop, paired rounds)"]["detail"] == "1.40, 1.60"
    assert by_name["|fused - sequential| test avg AUC"]["status"] == "(target < 0.003: not measured)"
    text = table(res)
    lines = text.splitlines()
    assert len({len(line.split(" | ")[0]) for line in lines if not line.startswith("|-")}) == 1  # one column width
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("| ").split(" | ")] for line in lines[2:])}
    assert rows["train: Ray pipeline, 2 workers"] == ["60,000 samples/s", f"{60000.0 / (40000.0 * ratio_1w):.2f}x 1 worker"]
    assert rows["ingest: ray-data alone"] == ["50,000 rows/s", "1.2x training"]
    assert rows["sync: EMA all-reduce, 2 workers, fused"] == [
        f"{sync_fused:.1%} +- 0.4% of a step",
        f"10.2 vs 10.0 ms (target <= 2%: {status}); the collective alone 0.10 ms x 1 = 1.0%"]
    assert rows["embeddings: 10^6 / 10^4 rows, lazy"] == ["1.10x step time", "11.0 vs 10.0 ms (target <= 1.2: met)"]
    assert rows["train: fused mode"][1].endswith("; 2w 60,000/s")
    assert rows["fast path: steps with every domain present"][0] == "2.00x"
    assert rows["target: EMA sync share of a 2-worker fused step"] == [
        f"{sync_fused:.3f}", f"(target <= 2%: {status}) +- 0.4% (95% CI)"]
    assert rows["target: |fused - sequential| test avg AUC"][0] == "-"


def test_parity_figures_report_the_fused_vs_sequential_target(tmp_path, ray_must_not_start, capsys):
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
    assert benchmark_main()(["--parity", str(tmp_path / "missing.json"), "--out", str(tmp_path / "b")]) == 2
    assert "not a readable parity.json" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()  # refused before anything was measured or written


def test_bad_arguments_fail_fast(tmp_path, ray_must_not_start, capsys):
    assert benchmark_main()(["--modes", "sequential", "--headline-mode", "fused", "--out", str(tmp_path / "b")]) == 2
    assert "--modes must be among" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_a_target_line_says_met_or_missed():
    from dfei.bench.suite import target

    assert target(1.40, "<=", 1.3, "1.3") == "(target <= 1.3: MISSED)"
    assert target(1.02, "<=", 1.3, "1.3") == "(target <= 1.3: met)"
    assert target(0.95, ">=", 0.9, "0.9") == "(target >= 0.9: met)"
    assert target(float("nan"), ">=", 0.9, "0.9") == "(target >= 0.9: not measured)"
