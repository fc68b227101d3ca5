"""A diverging run stops with the epoch, step and domain of its first non-finite loss and a hint,
exits non-zero and writes no metrics.json (it used to end in scikit-learn's "Input contains NaN"
traceback from evaluation). A tune sweep whose every trial fails exits non-zero and writes no
best.json; a partly failed one says how many failed."""
from __future__ import annotations

import importlib.util
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dfei.data.ingest import fused_steps
from dfei.errors import RunFailedError, TrainingDivergedError
from dfei.models import build_model
from dfei.config import TrainConfig
from dfei.train.epoch import EpochOptions, train_epoch
from dfei.train.optim import build_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CARDS, D, STEPS = [20, 7], 3, 6


def _batches(bad_step: int, bad_domain: int):
    """Algorithm 1's (step, d, x, y); the label of one batch is nan, so its loss is nan."""
    rng = np.random.default_rng(0)
    for step in range(STEPS):
        for d in range(D):
            x = np.stack([rng.integers(0, c, 32) for c in CARDS], axis=1)
            y = (rng.random(32) < 0.3).astype(np.float32)
            if (step, d) == (bad_step, bad_domain):
                y[5] = np.nan
            yield step, d, x, y


@pytest.mark.parametrize("mode", ["sequential", "fused"])
def test_the_first_non_finite_loss_is_named_and_the_epoch_stops_at_the_next_check(mode):
    torch.manual_seed(0)
    model = build_model("dfei", CARDS, D)
    optimizer = build_optimizer(model)
    stream = _batches(2, 1) if mode == "sequential" else fused_steps(_batches(2, 1))
    stats = train_epoch(model, optimizer, stream, torch.device("cpu"), D, options=EpochOptions(check_every=4))
    assert stats["diverged"] == {"step": 2, "domain": 1, "loss": "nan"}
    per_update = 1 if mode == "fused" else D
    first_bad = 2 * per_update + (1 if mode == "sequential" else 0) + 1  # updates up to the bad one
    assert stats["updates"] == -(-first_bad // 4) * 4  # stopped at the first check after it, not at the end


def test_a_clean_epoch_reports_no_divergence():
    torch.manual_seed(0)
    model = build_model("dfei", CARDS, D)
    stats = train_epoch(model, build_optimizer(model), _batches(-1, -1), torch.device("cpu"), D,
                        options=EpochOptions(check_every=4))
    assert stats["diverged"] is None and stats["updates"] == STEPS * D


def test_non_finite_scores_in_an_evaluation_are_refused_naming_the_domain(public_tiny):
    from dfei.data.dataset import ParquetDataset
    from dfei.train.epoch import score_split

    ds = ParquetDataset(public_tiny)
    parts = [{"label": np.array([0.0, 1.0]), "score": np.array([0.2, 0.7])} for _ in ds.spec.domains]
    parts[2]["score"] = np.array([np.nan, 0.7])
    with pytest.raises(TrainingDivergedError, match="1 of 2 scores of domain B3 are nan or inf"):
        score_split(ds, parts)


def test_the_report_names_the_last_good_checkpoint_when_there_is_one(tmp_path):
    from dfei.train.driver import _divergence_report

    cfg = TrainConfig(data="d", out=str(tmp_path), lr=0.5)
    diverged = {"epoch": 2, "step": 40, "domain": 1, "domain_name": "B2", "loss": "inf"}
    good = SimpleNamespace(checkpoint=SimpleNamespace(path=str(tmp_path / "epoch_0001")))
    text = _divergence_report(diverged, cfg, good)
    assert text.startswith("training diverged at epoch 3 step 41 (domain B2): loss is inf; try a lower --lr "
                           "(this run: 0.5)")
    assert text.endswith(f"the last good checkpoint is {tmp_path / 'epoch_0001'}")
    assert "no checkpoint was written" in _divergence_report(diverged, cfg, SimpleNamespace(checkpoint=None))


def _pipeline(script: str):
    spec = importlib.util.spec_from_file_location(f"pipeline_{script}", os.path.join(ROOT, "pipelines", f"{script}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_train_cli_stops_a_diverging_run_with_a_clear_error(ray_session, public_tiny, tmp_path, capsys):
    # train.py in this process, on the session's cluster (real train.py processes: test_embedded_ray.py,
    # test_interrupt.py, test_cluster.py)
    out = tmp_path / "run"
    rc = _pipeline("train")(["--data", public_tiny, "--out", str(out), "--lr", "1e30", "--epochs", "2",
                             "--no-tensorboard"])
    printed = capsys.readouterr()
    assert rc == 2, printed.out[-2000:] + printed.err[-3000:]
    errors = [line for line in printed.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: training diverged at epoch 1 step "), printed.err[-3000:]
    assert "loss is nan; try a lower --lr (this run: 1e+30). No metrics.json was written; no checkpoint" in errors[0]
    assert "Input contains NaN" not in printed.err and "Traceback" not in printed.err
    assert not (out / "metrics.json").exists()


def test_a_sweep_whose_every_trial_fails_exits_non_zero_without_best_json(ray_session, public_tiny, tmp_path,
                                                                           capsys):
    # tune.py in this process, on the session's cluster (real tune.py processes: tune/test_sweep.py)
    (tmp_path / "diverge.yaml").write_text("lr: 1.0e+30\ntensorboard: false\n")
    out = tmp_path / "sweep"
    rc = _pipeline("tune")(["--data", public_tiny, "--out", str(out), "--alpha", "0.9", "--k", "16", "--epochs", "1",
                            "--config", str(tmp_path / "diverge.yaml")])
    printed = capsys.readouterr()
    assert rc == 1, printed.out[-2000:] + printed.err[-3000:]
    assert "error: all 1 trial(s) of the sweep failed; no best.json was written" in printed.err
    assert "training diverged at epoch 1" in printed.err  # each trial's own error, one line each
    assert not (out / "best.json").exists() and (out / "results.csv").exists()
    tune_lines = [line for line in printed.out.splitlines() if line.startswith("[tune]")]
    assert tune_lines and "best.json" not in tune_lines[-1]


def _row(trial: str, status: str, valid: float, error: str | None = None) -> dict:
    return {"trial_id": trial, "alpha": 0.9, "k": 16, "seed": 0, "status": status, "best_valid_avg_auc": valid,
            "best_epoch": 1, "epochs_run": 1, "test_avg_auc": valid, "seconds": 1.0, "checkpoint": "c",
            "error": error}


def test_a_partly_failed_sweep_says_how_many_failed(tmp_path):
    import json

    from dfei.experiments.tune.report import write_reports

    lines: list[str] = []
    # b failed after reporting a better epoch than a's: a failed trial is never the pick
    rows = [_row("a", "completed", 0.7), _row("b", "error", 0.9, "training diverged at epoch 3 ...")]
    summary = write_reports(rows, TrainConfig(data="d"), str(tmp_path), lines.append)
    best = json.load(open(tmp_path / "best.json"))
    assert summary["failed"] == 1 and best["failed_trials"] == 1 and best["trial_id"] == "a"
    assert any("1 of 2 trial(s) failed" in line and "b: training diverged" in line for line in lines)
    assert lines[-1].endswith("best.json") and "1 of 2 trial(s) succeeded" in lines[-1]
    (tmp_path / "x").mkdir()
    with pytest.raises(RunFailedError, match=r"all 2 trial\(s\) of the sweep failed(.|\n)*trial b \(alpha=0.9"):
        write_reports([_row("a", "error", 0.8, "boom"), rows[1]], TrainConfig(data="d"),
                      str(tmp_path / "x"), lines.append)
