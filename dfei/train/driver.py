"""Driver side of a training run: Ray start-up, the TorchTrainer, metrics.json and the report."""
from __future__ import annotations

import os
import re
import resource
import time
from collections.abc import Callable
from typing import Any

from dfei.atomic import write_json_atomic
from dfei.data import fs as dfs
from dfei.data.dataset import ParquetDataset
from dfei.data.encoders import load_transform
from dfei.ray_runtime import init_ray
from dfei.errors import CheckpointError, DatasetError, TrainingDivergedError
from dfei.signals import StopSignals
from dfei.eval.report import domain_table
from dfei.train.checkpoint import CHECKPOINT_SCORE, MID_EPOCH
from dfei.config import TrainConfig
from dfei.train.optim import resolve_shared_lr_scale
from dfei.train.resources import check_local_fit, cluster_warnings
from dfei.train.tracking import TENSORBOARD_DIR, MLflowRun, TensorBoardCallback, final_metrics


def _cpus_per_worker(cfg: TrainConfig) -> float:
    if cfg.cpus_per_worker is not None:
        return cfg.cpus_per_worker
    import ray

    free = ray.available_resources().get("CPU", 1.0)
    biggest_node = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]), default=free)
    share = min(free / cfg.num_workers, biggest_node)
    # whole CPUs where there are enough (fused and GPU workers run a torch thread per CPU), else a fraction so the
    # workers still fit (measured: 2 workers x 1 CPU on 2 cores starves everything else)
    return float(int(share)) if share >= 1 else max(0.25, share)


def resolve_worker_cpus(cfg: TrainConfig) -> TrainConfig:
    """cfg with cpus_per_worker and torch_threads as this run uses them (from the cluster when
    unset), so that metrics.json's config records them: the thread count changes a run's numbers
    (float summation order), and a rerun from that config must reproduce them."""
    cpus = _cpus_per_worker(cfg)
    return cfg.replace(cpus_per_worker=cpus, torch_threads=cfg.torch_threads or default_torch_threads(cfg, cpus))


def default_torch_threads(cfg: TrainConfig, cpus: float) -> int:
    """1 for Algorithm 1's sequential updates on CPU, else the worker's whole CPUs (at least 1).

    A sequential update's operators are too small to gain from torch's intra-op threads (the
    public profile, 2 cores: ~55k samples/s with 2 threads, ~59k with 1), and 2 threads collapse when
    another process takes a core: each operator waits for the preempted thread (1.1k samples/s with a
    busy process beside, 41x slower, against 42-45k with 1 thread). Fused steps are large enough to
    use the threads; a GPU worker's host threads feed the device."""
    return max(1, int(cpus)) if cfg.mode == "fused" or cfg.use_gpu else 1


def build_trainer(cfg: TrainConfig, run_name: str, dataset: ParquetDataset | None = None,
                  callbacks: list | None = None, train_loop_per_worker: Callable[[dict], Any] | None = None):
    """The TorchTrainer of one run: `train_loop_per_worker` (default dfei.train.worker's; fault drills
    pass a wrapper of it) on cfg.num_workers workers, checkpoints under the storage path."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if train_loop_per_worker is None:
        from dfei.train.worker import train_loop_per_worker

    loop_config, datasets = cfg.to_dict(), None
    if cfg.ingest == "ray-data":
        from dfei.data.ray_ingest import build_shards

        datasets, rows = build_shards(dataset or ParquetDataset(cfg.data), "train", cfg.num_workers)
        loop_config["ray_data_rows"] = rows

    storage, filesystem = dfs.ray_storage(cfg.storage_path or os.path.join(cfg.out, "ray_results"))
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        datasets=datasets,
        # every (domain, rank) shard is already its rank's: no split coordinators
        dataset_config=DataConfig(datasets_to_split=[]),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": _cpus_per_worker(cfg)}),
        run_config=RunConfig(
            name=run_name, storage_path=storage, storage_filesystem=filesystem,
            # the patience+1 epoch ends of the highest valid avg AUC (the best epoch among them) and,
            # always, the latest checkpoint (to resume from: an epoch end or a step checkpoint);
            # step checkpoints score -1: the first dropped once patience+1 epoch ends exist
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.patience + 1,
                                               checkpoint_score_attribute=CHECKPOINT_SCORE, checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            callbacks=callbacks,  # e.g. Tune's TuneReportCallback: every epoch's report reaches the sweep
        ),
    )


def check_evaluable(dataset: ParquetDataset, log=print) -> None:
    """Early stopping picks the epoch with the best mean valid AUC over domains. A domain whose valid
    or test rows hold one label class has no AUC (it is left out of avg_auc, with a warning); when
    no domain's valid split has both classes there is nothing to select on: DatasetError."""
    for split in ("valid", "test"):
        single = dataset.single_class_domains(split)
        if split == "valid" and len(single) == dataset.spec.num_domains:
            raise DatasetError(f"{dataset.uri}/valid: no domain has both label classes in its rows, so the mean valid "
                               "AUC that selects the best epoch is undefined; give the valid split clicks and non-clicks")
        if single:
            log(f"[data] warning: {split}: domain(s) {single} have a single label class (or no rows): their AUC is "
                "undefined and left out of avg_auc")


def preflight(cfg: TrainConfig, dataset: ParquetDataset, log=print) -> None:
    """What every pipeline checks before it starts Ray for training runs of `cfg` on `dataset`
    (train.py here; tune.py, compare.py and parity.py before their first run)."""
    check_evaluable(dataset, log)
    check_shares(cfg, dataset, log)
    check_fit(cfg, dataset.spec, log)


def check_shares(cfg: TrainConfig, dataset: ParquetDataset, log=print) -> list[str]:
    """Every rank trains on an equal share of each domain's train rows, floor(rows / workers)
    (dfei.data.ingest.row_range): a domain with fewer rows than workers trains on nothing, its
    tower and DFE state keep their initial values. Logs a warning naming each such domain, its
    rows and its share, and returns the warnings."""
    warnings = []
    for domain, rows in zip(dataset.spec.domain_names, dataset.rows("train")):
        if rows // cfg.num_workers == 0:
            why = ("has no train rows" if rows == 0 else
                   f"has {rows} train row(s): with {cfg.num_workers} workers each rank's equal share is "
                   f"floor({rows} / {cfg.num_workers}) = 0 rows ({rows} or fewer workers would train it)")
            warnings.append(f"domain {domain!r} {why}, so this run does not train it: its tower and DFE state "
                            "keep their initial values and its AUC is that of an untrained domain")
    for warning in warnings:
        log(f"[data] warning: {warning}")
    return warnings


def check_fit(cfg: TrainConfig, spec, log=print) -> None:
    """Before Ray starts: an embedded Ray's workers must fit this machine (resources.check_local_fit)."""
    import ray

    if os.environ.get("RAY_ADDRESS") or ray.is_initialized():
        return  # a cluster: warn_cluster_fit, once connected
    check_local_fit(spec, cfg.embed_dim, cfg.embedding_update, cfg.num_workers, cfg.use_gpu, cfg.cpus_per_worker)


def warn_cluster_fit(cfg: TrainConfig, spec, log=print) -> None:
    import ray

    for warning in cluster_warnings(spec, cfg.embed_dim, cfg.embedding_update, cfg.num_workers, cfg.use_gpu,
                                    ray.nodes(), ray.cluster_resources().get("GPU", 0.0)):
        log(f"[ray] warning: {warning}")


def _divergence_report(diverged: dict[str, Any], cfg: TrainConfig, result) -> str:
    from dfei.train.worker import divergence_message

    good = result.checkpoint  # the latest: an epoch end, or a step checkpoint (its folder names the step)
    where = (f"the last good checkpoint is {checkpoint_uri(good.path, cfg.storage_path or cfg.out)}"
             if good is not None else "no checkpoint was written (it diverged before its first one)")
    return f"{divergence_message(diverged, cfg.lr)}. No metrics.json was written; {where}"


def tensorboard_dir(cfg: TrainConfig, run_name: str) -> str:
    """RUN_DIR/tensorboard/<run name>: a rerun into the same RUN_DIR is its own series, not appended
    to the previous run's (a resumed run keeps its name, so it continues its own)."""
    return os.path.join(cfg.out, TENSORBOARD_DIR, run_name)


def _tracking(cfg: TrainConfig, spec, run_name: str, callbacks: list):
    """TensorBoard (on unless cfg.tensorboard is False) and MLflow (when cfg.mlflow is a URI)."""
    if cfg.tensorboard:
        callbacks.append(TensorBoardCallback(tensorboard_dir(cfg, run_name)))
    if not cfg.mlflow:
        return callbacks, None
    params = {k: v for k, v in cfg.to_dict().items() if k != "mlflow"}
    params.update(dataset=spec.name, num_domains=spec.num_domains, num_features=len(spec.features))
    tracker = MLflowRun(cfg.mlflow, cfg.mlflow_experiment, run_name, params,
                        tags={"model": cfg.model, "dataset": spec.name, "mode": cfg.mode, "seed": str(cfg.seed),
                              "run_dir": cfg.out})
    return callbacks + [tracker.callback()], tracker


def checkpoint_uri(path: str, storage_uri: str) -> str:
    """A checkpoint's path inside the storage filesystem -> a URI the user can pass to predict.py."""
    scheme = storage_uri.split("://", 1)[0] if "://" in storage_uri else None
    return f"{scheme}://{path}" if scheme and "://" not in path else path


def _best_checkpoint_path(result, best_epoch: int, storage_uri: str) -> str | None:
    found = [c for c, m in result.best_checkpoints or [] if m.get("epoch") == best_epoch and not m.get(MID_EPOCH)]
    ckpt = found[0] if found else result.checkpoint
    return None if ckpt is None else checkpoint_uri(ckpt.path, storage_uri)


def run_training(cfg: TrainConfig, log=print, run_name: str | None = None,
                 callbacks: list | None = None, train_loop_per_worker: Callable[[dict], Any] | None = None
                 ) -> dict[str, Any]:
    """Validate the data, train on Ray, write <out>/metrics.json, print the per-domain table.

    `run_name` names the Ray Train run under the storage path (default: model, time and pid);
    `callbacks` are Ray Train callbacks (Tune passes its report callback here);
    `train_loop_per_worker` replaces the worker function (tests wrap it to inject failures).
    """
    t0 = time.time()
    dataset = ParquetDataset(cfg.data)  # fail fast, before any Ray start-up
    spec = dataset.spec
    log(f"[data] {spec.name}: {spec.num_domains} domains, {len(spec.features)} features, "
        f"train {sum(dataset.rows('train')):,} / valid {sum(dataset.rows('valid')):,} / "
        f"test {sum(dataset.rows('test')):,} rows")
    # the dataset's encoders, digests checked (a corrupt vocabulary is refused here, not copied into checkpoints)
    data_transform = load_transform(cfg.data, spec.encoders, where=cfg.data)
    if cfg.init_from:
        check_init_from(cfg, spec, log, data_transform)
    preflight(cfg, dataset, log)
    os.makedirs(cfg.out, exist_ok=True)
    ray_mode = init_ray(log)
    t_ray = time.time()
    if ray_mode != "embedded":
        warn_cluster_fit(cfg, spec, log)
    cfg = resolve_worker_cpus(cfg)
    run_name = run_name or f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    callbacks, tracker = _tracking(cfg, spec, run_name, list(callbacks or []))
    result, out = _fit(cfg, run_name, dataset, callbacks, train_loop_per_worker, tracker)
    metrics = _metrics(cfg, spec, result, out, ray_mode, {"start": t0, "ray": t_ray, "end": time.time()})
    _write_metrics(cfg, metrics, tracker, run_name)
    _report(cfg, out, metrics, log)
    return metrics


def check_init_from(cfg: TrainConfig, spec, log=print, data_transform=None) -> None:
    """Refuse an unusable --init-from checkpoint before Ray starts: another architecture, other
    features or domains (warm_start.plan), or a diverged run's weights."""
    from dfei.train import warm_start
    from dfei.train.checkpoint import finite_weights, load_any_checkpoint

    ckpt = load_any_checkpoint(cfg.init_from, state_only=True)
    matching = warm_start.plan(cfg, spec, ckpt, cfg.init_from, data_transform)
    finite_weights(load_any_checkpoint(cfg.init_from, optimizer=False, encoders=False), cfg.init_from)  # not a diverged run's
    log("[init] " + warm_start.summary(matching, cfg.init_from,
                                       warm_start.optimizer_source(cfg, ckpt["has_optimizer"])))


def _fit(cfg: TrainConfig, run_name: str, dataset: ParquetDataset, callbacks: list,
         train_loop_per_worker: Callable[[dict], Any] | None, tracker) -> tuple[Any, dict[str, Any]]:
    """Run the TorchTrainer; (Ray's Result, rank 0's return value). A failed or diverged run raises
    (and marks the MLflow run failed)."""
    try:
        try:
            with StopSignals() as stops:
                result = build_trainer(cfg, run_name, dataset, callbacks, train_loop_per_worker).fit()
        except SystemExit:  # Ray's answer to Ctrl-C (it aborts the run first) and to SIGTERM
            folder = dfs.join(cfg.storage_path or os.path.join(cfg.out, "ray_results"), run_name)
            raise stops.error(
                f"training was stopped before it finished ({stops.name}): no metrics.json was written. The "
                f"checkpoints of the epochs it finished, if any, are in {folder} (each loads with predict.py and "
                "export.py; continue training from one with --init-from)") from None
        except Exception as err:  # Ray's TrainingFailedError: a worker's CheckpointError is the user's error
            raise _checkpoint_error(err) or err
        out = result.return_value
        if out is None:
            raise RuntimeError(f"training failed: {result.error}")
        if out.get("diverged"):  # nothing of this run is written but the checkpoints of its good epochs
            raise TrainingDivergedError(_divergence_report(out["diverged"], cfg, result))
    except BaseException:
        if tracker is not None:
            tracker.finish({}, None, failed=True)
        raise
    return result, out


def _checkpoint_error(err: BaseException) -> CheckpointError | None:
    """The CheckpointError a worker raised (resuming from a checkpoint this run cannot use: another
    number of workers, a changed dataset, a newer format), out of Ray's worker-group error."""
    found = re.search(r"(?:dfei\.errors\.)?CheckpointError: ([^\n]+)", str(err))
    return CheckpointError(found.group(1)) if found else None


def _metrics(cfg: TrainConfig, spec, result, out: dict[str, Any], ray_mode: str,
             clock: dict[str, float]) -> dict[str, Any]:
    """metrics.json's content (without `tracking`): per-domain AUC, history, settings, timings.
    `clock`: the driver's unix times at start, Ray ready and fit end."""
    t0, t_ray, t_end = clock["start"], clock["ray"], clock["end"]
    timings = out["timings"]
    first = timings.get("first_update_unix")
    history = out["history"]
    return {
        "avg_auc": {"valid": out["valid"]["avg_auc"], "test": out["test"]["avg_auc"]},
        "splits": {"valid": out["valid"]["domains"], "test": out["test"]["domains"]},
        "model": cfg.model,
        "mode": cfg.mode,
        "exhaustion": cfg.exhaustion,  # exhaust: a finished domain sits out the rest of the epoch
        "ingest": cfg.ingest,
        "num_workers": cfg.num_workers,
        "dataset": {"name": spec.name, "uri": cfg.data, "domains": spec.domain_names, "digest": spec.digest()},
        "best_epoch": out["best_epoch"] + 1,
        "epochs_run": out["epochs_run"],
        "global_step": out["global_step"],
        "resumed_from": out["resumed_from"],
        "init_from": out["init_from"],  # incremental training: the checkpoint, continued / new domains
        "stopped_early": out["stopped_early"],
        "history": [{**h, "epoch": h["epoch"] + 1} for h in history],  # epochs counted from 1, as best_epoch
        "domain_feature_norms": out["domain_feature_norms"],
        "domain_feature_digests": out["domain_feature_digests"],  # v's digest on every rank: all equal
        "checkpoint": _best_checkpoint_path(result, out["best_epoch"], cfg.storage_path or cfg.out),
        "config": {**cfg.to_dict(), "shared_lr_scale_resolved": resolve_shared_lr_scale(
            cfg.shared_lr_scale, spec.num_domains)},
        "timings": {
            "total_s": t_end - t0,
            "ray_init_s": t_ray - t0,
            "time_to_first_step_s": (first - t0) if first else None,
            "fit_to_first_step_s": (first - t_ray) if first else None,
            # where the start-up goes: Ray Train starting the worker, our set-up in it, the first batch + update
            "fit_to_worker_start_s": timings["worker_start_unix"] - t_ray,
            "worker_setup_s": timings["worker_ready_unix"] - timings["worker_start_unix"],
            "ready_to_first_step_s": (first - timings["worker_ready_unix"]) if first else None,
            "train_s": sum(h["train_seconds"] for h in history),
            "eval_s": sum(h["eval_seconds"] for h in history),
            "train_samples_per_s": (sum(h["samples_per_s"] * h["train_seconds"] for h in history)
                                    / max(sum(h["train_seconds"] for h in history), 1e-9)),
            "ray": ray_mode,
            "worker_peak_rss_mb": timings.get("worker_peak_rss_mb"),  # rank 0's training process
            "worker_peak_rss_mb_by_rank": timings.get("worker_peak_rss_mb_by_rank"),
            "eval_peak_rss_mb": timings.get("eval_peak_rss_mb"),  # rank 0's, during the final valid + test evaluation
            "final_eval_s": timings.get("final_eval_s"), "final_eval_rows": timings.get("final_eval_rows"),
            "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # this process
        },
    }


def _write_metrics(cfg: TrainConfig, metrics: dict[str, Any], tracker, run_name: str) -> None:
    """RUN_DIR/metrics.json (atomically), then the MLflow run's final metrics and artifacts."""
    metrics["tracking"] = {"tensorboard": tensorboard_dir(cfg, run_name) if cfg.tensorboard else None,
                           "mlflow": {"uri": tracker.uri, "experiment": cfg.mlflow_experiment,
                                      "run_id": tracker.run_id} if tracker else None}
    write_json_atomic(os.path.join(cfg.out, "metrics.json"), metrics)
    if tracker is not None:
        tracker.finish(final_metrics(metrics), metrics["checkpoint"],
                       extra_files=[os.path.join(cfg.out, "metrics.json")])


def _report(cfg: TrainConfig, out: dict[str, Any], metrics: dict[str, Any], log=print) -> None:
    """The per-domain table and the run's last lines."""
    log("\n" + domain_table({"valid": out["valid"], "test": out["test"]}))
    log(f"\n[done] test avg AUC {metrics['avg_auc']['test']:.4f} (valid {metrics['avg_auc']['valid']:.4f}, "
        f"best epoch {metrics['best_epoch']}); {metrics['timings']['total_s']:.0f}s total, first step after "
        f"{metrics['timings']['time_to_first_step_s'] or float('nan'):.1f}s\n"
        f"[done] metrics: {os.path.join(cfg.out, 'metrics.json')}; best checkpoint: {metrics['checkpoint']}")
