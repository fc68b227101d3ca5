"""Tracking: TensorBoard event files for every epoch, and an MLflow run with params, per-epoch
metrics, final metrics and the checkpoint."""
from __future__ import annotations

import os

import pytest

from dfei.train.checkpoint import load_checkpoint


def _scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_has_every_epochs_figures(tracked_run):
    metrics = tracked_run["metrics"]
    logdir = metrics["tracking"]["tensorboard"]
    # one folder per run under RUN_DIR/tensorboard: a rerun into the same RUN_DIR is its own series
    assert os.path.dirname(logdir) == os.path.join(tracked_run["cfg"].out, "tensorboard") and os.listdir(logdir)
    scalars = _scalars(logdir)
    domains = ["B1", "B2", "B3", "B4", "B5"]
    expected = {"train/loss", "train/samples_per_s", "valid/avg_auc", "lr/shared", "lr/domain", "time/train_s"}
    expected |= {f"valid/auc/{d}" for d in domains} | {f"dfe/v_norm/{d}" for d in domains}
    expected |= {f"train/loss/{d}" for d in domains}
    assert expected <= set(scalars), sorted(expected - set(scalars))
    history = metrics["history"]
    assert [s for s, _ in scalars["valid/avg_auc"]] == [1, 2]
    assert [v for _, v in scalars["valid/avg_auc"]] == pytest.approx([h["valid_avg_auc"] for h in history], abs=1e-6)
    assert scalars["lr/shared"][0][1] == pytest.approx(1e-3 / 5) and scalars["lr/domain"][0][1] == pytest.approx(1e-3)
    # the norms logged at the best epoch are those of the buffer that epoch's checkpoint saved
    v = load_checkpoint(metrics["checkpoint"])["model"]["dfe.v"]
    best = metrics["best_epoch"]
    logged = [dict(scalars[f"dfe/v_norm/{d}"])[best] for d in domains]
    assert logged == pytest.approx(v.norm(dim=1).tolist(), rel=1e-5) and min(logged) > 0


def test_mlflow_run_holds_params_epochs_results_and_the_checkpoint(tracked_run):
    from mlflow.tracking import MlflowClient

    metrics = tracked_run["metrics"]
    info = metrics["tracking"]["mlflow"]
    client = MlflowClient(tracking_uri=tracked_run["mlflow"])
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["model"] == "dfei"
    assert run.data.params["alpha"] == "0.9" and run.data.params["dataset"].startswith("public-s0.002")
    epochs = client.get_metric_history(info["run_id"], "valid/avg_auc")
    assert sorted(m.step for m in epochs) == [1, 2]
    assert run.data.metrics["final/test/avg_auc"] == pytest.approx(metrics["avg_auc"]["test"])
    artifacts = {a.path for a in client.list_artifacts(info["run_id"])}
    assert {"checkpoint", "metrics.json"} <= artifacts
    files = {os.path.basename(a.path) for a in client.list_artifacts(info["run_id"], "checkpoint")}
    assert "model.pt" in files and "optimizer.pt" in files


def test_mlflow_needs_a_client_and_names_the_package(monkeypatch):
    import builtins

    from dfei.train.tracking import _mlflow_client

    real = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name.startswith("mlflow"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(ValueError, match="pip install 'dfei\\[mlflow\\]'"):
        _mlflow_client("sqlite:///x.db")


def test_two_runs_into_one_run_dir_get_their_own_tensorboard_series(tmp_path):
    from dfei.config import TrainConfig
    from dfei.train.driver import tensorboard_dir

    cfg = TrainConfig(data="/d", out=str(tmp_path / "demo"))
    first, again = tensorboard_dir(cfg, "dfei-20261130-070000-1"), tensorboard_dir(cfg, "dfei-20261130-071000-2")
    assert first != again and os.path.dirname(first) == os.path.dirname(again) == str(tmp_path / "demo" / "tensorboard")
