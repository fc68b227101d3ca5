"""Experiment tracking: TensorBoard event files for every run, and MLflow when asked (--mlflow URI).

Both are written with the libraries' own writers (tensorboardX's SummaryWriter, MLflow's client)
from a Ray Train callback, which runs in the Train controller on the driver's node: every epoch's
report reaches them as soon as it is made, and the files land in the run directory even when the
workers are on other machines. Tags (TensorBoard) / metric keys (MLflow), step = epoch (1-based):

    train/loss, train/loss/<domain>, train/samples_per_s, valid/avg_auc, valid/auc/<domain>,
    lr/shared, lr/domain, dfe/v_norm/<domain>, time/train_s, time/eval_s

The driver opens the MLflow run (parameters), the callback logs each epoch to it, and the driver
closes it with the final valid/test metrics and the best checkpoint as an artifact.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any

from ray.train.v2.api.callback import UserCallback

from dfei.data.fs import absolute_tracking_uri
from dfei.errors import ConfigError
from dfei.train.checkpoint import is_epoch_report

TENSORBOARD_DIR = "tensorboard"


def epoch_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """A train-loop report -> {tag: value} (the loop's keys, renamed for dashboards)."""
    renames = {"train_loss": "train/loss", "samples_per_s": "train/samples_per_s", "valid_avg_auc": "valid/avg_auc",
               "train_seconds": "time/train_s", "eval_seconds": "time/eval_s"}
    out = {tag: metrics[key] for key, tag in renames.items() if key in metrics}
    prefixes = {"valid_auc/": "valid/auc/", "train_loss/": "train/loss/", "lr/": "lr/", "v_norm/": "dfe/v_norm/"}
    for key, value in metrics.items():
        for prefix, tag in prefixes.items():
            if key.startswith(prefix):
                out[tag + key[len(prefix):]] = value
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and not math.isnan(float(v))}


class TensorBoardCallback(UserCallback):
    """Every epoch's report as TensorBoard scalars under `logdir` (tensorboardX event files).

    A writer is opened and closed per report: tensorboardX's flush() does not drain its queue, and
    the controller process ends with the run, so only close() makes the last epoch's events safe.
    TensorBoard reads the run's files (one per epoch) as one series.
    """

    def __init__(self, logdir: str):
        self.logdir = logdir

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        from tensorboardX import SummaryWriter

        report = metrics[0]  # rank 0's: every rank reports the same epoch figures
        if not is_epoch_report(report):
            return
        step = int(report.get("epoch", 0)) + 1
        writer = SummaryWriter(self.logdir, filename_suffix=f".epoch{step:04d}")
        try:
            for tag, value in epoch_scalars(report).items():
                writer.add_scalar(tag, value, global_step=step)
        finally:
            writer.close()


def _mlflow_client(uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError("--mlflow needs the MLflow client: pip install 'dfei[mlflow]' (mlflow-skinny, plus "
                         "sqlalchemy and alembic for sqlite:// stores)") from None
    return MlflowClient(tracking_uri=uri)


class MLflowCallback(UserCallback):
    """Every epoch's report as MLflow metrics of an open run (run_id), from the Train controller."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.tracking_uri, self.run_id = tracking_uri, run_id

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        from mlflow.entities import Metric

        report = metrics[0]
        if not is_epoch_report(report):
            return
        step = int(report.get("epoch", 0)) + 1
        now = int(time.time() * 1000)
        batch = [Metric(_mlflow_key(k), v, now, step) for k, v in epoch_scalars(report).items()]
        _mlflow_client(self.tracking_uri).log_batch(self.run_id, metrics=batch)


def _mlflow_key(tag: str) -> str:
    # MLflow allows letters, digits, _ - . space / only; domain names may hold anything else
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in tag)


class MLflowRun:
    """Driver side of one MLflow run: open with parameters, close with results and the checkpoint."""

    def __init__(self, tracking_uri: str, experiment: str, run_name: str, params: dict[str, Any],
                 tags: dict[str, str] | None = None):
        self.uri = absolute_tracking_uri(tracking_uri)
        self.client = _mlflow_client(self.uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            experiment_id = self.client.create_experiment(experiment, artifact_location=self._artifact_root(experiment))
        run = self.client.create_run(experiment_id, run_name=run_name, tags=tags or {})
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in sorted(params.items())])

    def _artifact_root(self, experiment: str) -> str | None:
        """Artifacts next to a sqlite store (MLflow's default, ./mlruns, would follow the cwd)."""
        if self.uri.startswith("sqlite:///"):
            root = os.path.join(os.path.dirname(self.uri[len("sqlite:///"):]), "mlartifacts", experiment)
            return "file://" + root
        return None

    def callback(self) -> MLflowCallback:
        return MLflowCallback(self.uri, self.run_id)

    def finish(self, metrics: dict[str, float], checkpoint_dir: str | None, failed: bool = False,
               extra_files: list[str] = ()) -> None:
        """Final metrics, the checkpoint (a local directory; a remote one is recorded as a tag) and files."""
        from mlflow.entities import Metric

        if metrics:
            now = int(time.time() * 1000)
            batch = [Metric(_mlflow_key(k), float(v), now, 0) for k, v in metrics.items()
                     if v is not None and not math.isnan(float(v))]
            self.client.log_batch(self.run_id, metrics=batch)
        if checkpoint_dir:
            self.client.set_tag(self.run_id, "checkpoint", checkpoint_dir)
            if "://" not in checkpoint_dir and os.path.isdir(checkpoint_dir):
                self.client.log_artifacts(self.run_id, checkpoint_dir, artifact_path="checkpoint")
        for path in extra_files:
            self.client.log_artifact(self.run_id, path)
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json -> the run's summary for MLflow: avg and per-domain valid/test AUC, best epoch."""
    out = {f"final/{split}/avg_auc": metrics["avg_auc"][split] for split in ("valid", "test")}
    for split in ("valid", "test"):
        for name, m in metrics["splits"][split].items():
            out[f"final/{split}/auc/{name}"] = m["auc"]
    out["final/best_epoch"] = metrics["best_epoch"]
    out["final/train_samples_per_s"] = metrics["timings"]["train_samples_per_s"]
    return {k: v for k, v in out.items() if v is not None}
