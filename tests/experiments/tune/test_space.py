"""Search values, the Tune search space and the resource plan: checked before any Ray work."""
from __future__ import annotations

import importlib.util
import os

import pytest

from dfei.experiments.tune.space import TRIAL_DRIVER_CPU, SearchSpec, Values, parse_values, plan_resources

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_lists_and_ranges_parse():
    assert parse_values("0, 0.1,0.9", "alpha", float).choices == (0.0, 0.1, 0.9)
    assert parse_values("16,32", "k", int).choices == (16, 32)
    r = parse_values("0.5:1", "alpha", float)
    assert r.is_range and (r.low, r.high) == (0.5, 1.0)


@pytest.mark.parametrize("text,name,kind,message", [
    ("0.5,1.5", "alpha", float, "--alpha: 1.5 is outside the valid range (alpha in [0, 1])"),
    ("-0.1", "alpha", float, "--alpha: -0.1 is outside the valid range"),
    ("32,0", "k", int, "--k: 0 is outside the valid range (k a positive integer)"),
    ("-4", "k", int, "--k: -4 is outside the valid range"),
    ("16.5", "k", int, "--k: '16.5' is not an integer"),
    ("0.1,x", "alpha", float, "--alpha: 'x' is not a number"),
    ("0.9,0.9", "alpha", float, "repeated value"),
    ("1:0.5", "alpha", float, "needs lo < hi"),
])
def test_invalid_values_are_named(text, name, kind, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        parse_values(text, name, kind)


def test_grid_needs_lists_and_counts_trials():
    alpha, k = parse_values("0,0.5,1", "alpha", float), parse_values("16,32", "k", int)
    assert SearchSpec(alpha, k, "grid", num_samples=2).num_trials == 12
    assert SearchSpec(alpha, k, "random", num_samples=5).num_trials == 5
    with pytest.raises(ValueError, match="ranges lo:hi need --search random"):
        SearchSpec(Values("alpha", low=0.5, high=1.0), k, "grid")


@pytest.mark.parametrize("cpus,gpus,trials,workers,use_gpu,cap,expected", [
    (2, 0, 2, 1, False, None, (2, 0.95)),  # 2 cores: two single-CPU trials at once
    (2, 0, 14, 1, False, 1, (1, 1.0)),  # capped at one trial: it gets whole CPUs
    (2, 0, 2, 2, False, None, (1, 0.97)),  # 2 workers on 2 cores: fractional CPUs, one trial
    (16, 0, 2, 1, False, None, (2, 7.0)),  # a big node and few trials: whole CPUs fill it
    (64, 0, 14, 2, False, None, (14, 2.0)),
    (16, 4, 14, 2, True, None, (2, 3.0)),  # GPUs bound the concurrency
])
def test_resource_plan_fits_every_running_trial(cpus, gpus, trials, workers, use_gpu, cap, expected):
    plan = plan_resources(cpus, gpus, trials, workers, use_gpu, cap)
    assert (plan.concurrency, plan.cpus_per_worker) == expected
    assert plan.concurrency * plan.cpus_per_trial <= cpus + 1e-9  # never more than the cluster: no deadlock
    assert plan.cpus_per_trial == pytest.approx(TRIAL_DRIVER_CPU + workers * plan.cpus_per_worker)


def test_resource_plan_refuses_what_cannot_fit():
    with pytest.raises(ValueError, match="--use-gpu: a trial needs 2 GPU"):
        plan_resources(8, 1, 4, 2, use_gpu=True)
    with pytest.raises(ValueError, match="--cpus-per-worker 4 x 1 worker"):
        plan_resources(2, 0, 4, 1, cpus_per_worker=4)


@pytest.mark.parametrize("flags,message", [
    (["--alpha", "0.5,1.2"], "--alpha: 1.2 is outside the valid range"),
    (["--k", "0"], "--k: 0 is outside the valid range"),
    (["--model", "star"], "--model 'star' has no alpha/k to tune"),
])
def test_cli_fails_fast_on_bad_search_values(tmp_path, public_tiny, flags, message, ray_must_not_start, capsys):
    # in this process (a real tune.py process: tests/experiments/tune/test_sweep.py)
    spec = importlib.util.spec_from_file_location("pipeline_tune", os.path.join(ROOT, "pipelines", "tune.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--data", public_tiny, "--out", str(tmp_path / "sweep"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "sweep" / "sweep.json").exists()
