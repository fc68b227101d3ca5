"""A Ray Tune sweep over alpha and k whose trials run train.py's own training (run_training).

Under Ray Train V2 a Tuner cannot wrap a TorchTrainer directly: each trial is a function trainable
that fits a TorchTrainer (the same one train.py builds) with Tune's TuneReportCallback, so every
epoch's report (valid avg AUC, checkpoint path) reaches Tune, where ASHA can stop a weak trial.
After the fit the trial reports once more (`final`: test AUC of its best epoch, checkpoint path).

Layout of OUT:
    sweep.json          the sweep's settings (what --resume continues)
    tune/               Tune's experiment state (Tuner.restore reads it)
    trials/<trial_id>/  each trial's metrics.json and, unless --storage-path, its Ray Train checkpoints
    results.csv/.md, alpha_curve.png, best.json   written by dfei.experiments.tune.report at the end
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any

from ray.tune import Callback

from dfei.atomic import write_json_atomic
from dfei.data import fs as dfs
from dfei.data.dataset import ParquetDataset
from dfei.errors import ConfigError, PathExistsError, PathNotFoundError
from dfei.signals import StopSignals
from dfei.config import TrainConfig
from dfei.train.resources import check_local_memory
from dfei.ray_runtime import init_ray
from dfei.train.driver import checkpoint_uri, default_torch_threads, preflight
from dfei.experiments.tune.resume import check_data, check_resume, data_fingerprint, rebase
from dfei.experiments.tune.space import TRIAL_DRIVER_CPU, ResourcePlan, SearchSpec, Values, plan_resources

METRIC = "valid_avg_auc"  # the objective: mean valid AUC over domains, reported every epoch
EXPERIMENT = "tune"


def _trial_storage(storage: str | None, trial_id: str) -> str | None:
    return dfs.join(storage, "trials", trial_id) if storage else None


def run_trial(config: dict[str, Any], base: dict[str, Any], out: str, cpus_per_worker: float) -> None:
    """Tune function trainable: one training run of train.py's loop with this trial's alpha, k, seed."""
    from ray import tune

    from dfei.train.driver import run_training

    trial_id = tune.get_context().get_trial_id()
    cfg = TrainConfig.from_dict({
        **base, "alpha": float(config["alpha"]), "k": int(config["k"]), "seed": int(config["seed"]),
        "cpus_per_worker": cpus_per_worker, "out": os.path.join(out, "trials", trial_id),
        "storage_path": _trial_storage(base.get("storage_path"), trial_id)})
    done = os.path.join(cfg.out, "metrics.json")
    if os.path.exists(done):  # finished before an interruption that Tune's saved state missed: no retraining
        with open(done) as f:
            metrics = json.load(f)
    else:
        # the run name is the trial id: a trial restarted by --resume continues its own Ray Train run
        # from its latest checkpoint (an epoch end or a step checkpoint)
        metrics = run_training(cfg, log=lambda *a: None, run_name=f"trial-{trial_id}",
                               callbacks=[epoch_report_callback()])
    tune.report({
        "final": True, METRIC: metrics["avg_auc"]["valid"], "test_avg_auc": metrics["avg_auc"]["test"],
        "best_epoch": metrics["best_epoch"], "epochs_run": metrics["epochs_run"],
        "stopped_early": metrics["stopped_early"], "checkpoint": metrics["checkpoint"],
        "train_samples_per_s": metrics["timings"]["train_samples_per_s"]})


def epoch_report_callback():
    """Tune's TuneReportCallback for epoch ends only: a mid-epoch checkpoint's report carries no
    metrics and must not count as a training iteration (ASHA's time unit is the epoch)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from dfei.train.checkpoint import is_epoch_report

    class EpochReportCallback(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if is_epoch_report(metrics[0]):
                super().after_report(run_context, metrics, checkpoint)

    return EpochReportCallback()


class ProgressLines(Callback):
    """A line per finished trial (params and score), printed on the driver as Tune reports it."""

    def __init__(self, total: int, log=print):
        self.total, self.log, self.t0 = total, log, time.time()

    def __getstate__(self):  # Tune pickles its run config with the sweep state; the printer stays here
        return {"total": self.total, "t0": self.t0}

    def __setstate__(self, state):
        self.__dict__.update(state, log=print)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._line(trials, trial, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trials, trial, failed=True)

    def _line(self, trials, trial, failed: bool) -> None:
        ended = ("TERMINATED", "ERROR")
        done = sum(t.status in ended for t in trials) + (trial.status not in ended)  # this one may not be marked yet
        last = trial.last_result or {}
        params = f"alpha={trial.config['alpha']:g} k={trial.config['k']} seed={trial.config['seed']}"
        if failed:
            text = f"FAILED (error log: {trial.error_file or 'see the Tune logs'})"
        elif last.get("final"):
            text = (f"best valid avg AUC {last[METRIC]:.4f} (epoch {last['best_epoch']} of {last['epochs_run']}), "
                    f"test avg AUC {last['test_avg_auc']:.4f}")
        else:
            text = (f"stopped by the scheduler after {last.get('training_iteration', 0)} epoch(s), last valid avg "
                    f"AUC {last.get(METRIC, math.nan):.4f}, best {last.get('best_valid_avg_auc', math.nan):.4f}")
        self.log(f"[tune] trial {done}/{self.total} {trial.trial_id} {params}: {text} "
                 f"({last.get('time_total_s', 0):.0f}s; sweep {time.time() - self.t0:.0f}s)")


def _settings_path(out: str) -> str:
    return os.path.join(out, "sweep.json")


def _load_settings(out: str) -> tuple[TrainConfig, SearchSpec, ResourcePlan, dict[str, Any]]:
    path = _settings_path(out)
    if not os.path.exists(path):
        raise PathNotFoundError(f"--resume: {path} does not exist; no sweep to continue in {out}")
    with open(path) as f:
        saved = json.load(f)
    base = TrainConfig.from_dict(saved["base_config"], where=path, legacy=True)

    def values(name: str, kind: type) -> Values:
        v = saved["search"][name]
        return Values(name, low=v["range"][0], high=v["range"][1]) if isinstance(v, dict) else \
            Values(name, choices=tuple(kind(x) for x in v))

    s = saved["search"]
    spec = SearchSpec(values("alpha", float), values("k", int), s["search"], s["scheduler"], s["num_samples"])
    plan = ResourcePlan(**saved["resources"])
    if base.cpus_per_worker is None:  # a sweep saved by an older version: its trials ran with the plan's CPUs
        base = base.replace(cpus_per_worker=plan.cpus_per_worker)
    if base.torch_threads is None:  # ... and with a thread per whole CPU, the default then
        base = base.replace(torch_threads=max(1, int(plan.cpus_per_worker)))
    return base, spec, plan, saved


def _save_settings(out: str, base: TrainConfig, spec: SearchSpec, plan: ResourcePlan, dataset,
                   folders: list[str], max_concurrent: int | None) -> None:
    """sweep.json: the settings (--max-concurrent as given), the data's fingerprint, and every
    folder the sweep has lived in (the checkpoint paths Tune recorded in each are rebased on a resume)."""
    write_json_atomic(_settings_path(out), {
        "base_config": base.to_dict(), "search": spec.to_json(), "resources": dataclasses.asdict(plan),
        "max_concurrent": max_concurrent, "folders": list(dict.fromkeys([*folders, out])),
        "data": data_fingerprint(dataset.spec)})


def _scheduler(spec: SearchSpec, epochs: int):
    if spec.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # rungs at 1, 2, 4, ... epochs; a trial below the top half of its rung stops there. ASHA stops
    # every trial at max_t: the trial's last report is its final one (epochs + 1), not its last epoch
    return ASHAScheduler(time_attr="training_iteration", max_t=epochs + 1, grace_period=1, reduction_factor=2)


def _check_model(base: TrainConfig, spec: SearchSpec) -> None:
    """The model has alpha/k to tune, and reads every searched value (dfei_wo_dfi has no k)."""
    from dfei.models.registry import MODELS

    if "alpha" not in MODELS[base.model].reads:
        tunable = [name for name, entry in MODELS.items() if "alpha" in entry.reads]
        raise ConfigError(f"--model {base.model!r} has no alpha/k to tune; use one of {', '.join(tunable)} "
                          "(dfei_wo_dfi: alpha only)")
    ends = {name: (v.low, v.high) if v.is_range else v.choices for name, v in (("alpha", spec.alpha), ("k", spec.k))}
    for alpha in ends["alpha"]:
        for k in ends["k"]:
            base.replace(alpha=float(alpha), k=int(k))  # ConfigError: "model 'dfei_wo_dfi' does not read k=64"


def replace_restored_callbacks(tuner, callbacks: list) -> None:
    """A restored Tuner's run config holds the first session's callbacks (their clock and printer):
    use this session's. Tuner.restore takes no callbacks and Tuner has no public run-config setter.

    Private API, checked against Ray 2.60.0: Tuner._local_tuner (a TunerInternal) and its
    get_run_config(); tests/train/test_private_apis.py fails loudly when a Ray upgrade removes them."""
    tuner._local_tuner.get_run_config().callbacks = callbacks


def run_sweep(base: TrainConfig | None, spec: SearchSpec | None, out: str, workers_per_trial: int = 1,
              max_concurrent: int | None = None, resume: bool = False, log=print,
              requested: dict[str, Any] | None = None, search: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run a sweep, or with resume=True continue the one in `out` with its saved settings: `base`
    and `spec` are then ignored, and `requested` (TrainConfig keys the command set) and `search`
    (its own flags given) must match the saved ones (dfei.experiments.tune.resume.check_resume), as must the
    data. Writes results.csv/.md, alpha_curve.png and best.json.

    Raises RunInterruptedError when the sweep is stopped (Ctrl-C) before every trial ended: no
    best.json then. RunFailedError when every trial failed; ConfigError for a refused resume."""
    out = dfs.absolute(out)
    folders = [out]  # where the sweep's trials have written (a moved sweep: its earlier folders too)
    if resume:
        base, spec, plan, saved = _load_settings(out)
        max_concurrent = saved.get("max_concurrent")
        base = check_resume(base, spec, plan, requested or {}, search or {}, max_concurrent)
        folders = _resume_folders(saved, out, spec, log)
    elif os.path.exists(_settings_path(out)) or os.path.exists(os.path.join(out, EXPERIMENT)):
        raise PathExistsError(f"{out} already holds a sweep; pass --resume to continue it, or choose another --out")
    _check_model(base, spec)
    dataset = ParquetDataset(base.data)  # fail fast, before Ray starts
    if resume:
        check_data(saved.get("data"), dataset.spec, base.data, log)
    # one trial's workers must fit this machine (embedded Ray); a valid split to select epochs on
    preflight(base.replace(num_workers=plan.workers_per_trial if resume else workers_per_trial),
              dataset, log)
    os.makedirs(out, exist_ok=True)
    ray_mode = init_ray(log)
    import ray

    if not resume:
        resources = ray.cluster_resources()
        plan = plan_resources(resources.get("CPU", 0.0), resources.get("GPU", 0.0), spec.num_trials,
                              workers_per_trial, base.use_gpu, max_concurrent, base.cpus_per_worker,
                              reserve_cpus=1.0 if base.ingest == "ray-data" else 0.0)
        # every trial's CPUs and torch threads are part of its result: sweep.json and best.json record them
        base = base.replace(num_workers=workers_per_trial, cpus_per_worker=plan.cpus_per_worker,
                            torch_threads=base.torch_threads or default_torch_threads(base, plan.cpus_per_worker))
        if ray_mode == "embedded":  # every concurrent trial's workers hold a replica of the tables here
            check_local_memory(dataset.spec, base.embed_dim, base.embedding_update,
                               plan.concurrency * plan.workers_per_trial, f"{plan.concurrency} concurrent trial(s) x ")
    if not resume or folders[-1] != out or base.to_dict() != saved["base_config"]:
        _save_settings(out, base, spec, plan, dataset, folders, max_concurrent)  # a resume: its folder, paths
    log(f"[tune] {spec.num_trials} trial(s) ({spec.search} search, scheduler {spec.scheduler}) of up to "
        f"{base.epochs} epoch(s) on {dataset.spec.name}; {plan.concurrency} at a time, {plan.workers_per_trial} "
        f"worker(s) per trial with {plan.cpus_per_worker:g} CPU{' + 1 GPU' if plan.use_gpu else ''} each")

    return _fit_and_report(base, spec, plan, out, folders, resume, log)


def _resume_folders(saved: dict[str, Any], out: str, spec: SearchSpec, log) -> list[str]:
    folders = saved.get("folders", [out])
    moved = [f for f in folders if f != out]
    log(f"[tune] resuming the sweep in {out} (its saved settings: {spec.to_json()})"
        + (f"; it was written in {', '.join(moved)}: checkpoint paths are rebased" if moved else ""))
    return folders


def _fit_and_report(base: TrainConfig, spec: SearchSpec, plan: ResourcePlan, out: str, folders: list[str],
                    resume: bool, log) -> dict[str, Any]:
    """Tuner.fit(), then the reports (dfei.experiments.tune.report); what run_sweep returns and raises."""
    from dfei.experiments.tune.report import collect_rows, write_reports

    storage_uri = base.storage_path or out
    t0 = time.time()
    try:
        with StopSignals() as stops:  # Tune's SIGINT handler would outlive fit() and swallow a Ctrl-C after it
            grid = build_tuner(base, spec, plan, out, storage_uri, resume, log).fit()
    except SystemExit:  # SIGTERM (Tune answers Ctrl-C itself: fit() returns with unfinished trials)
        raise stops.error(f"the sweep was stopped ({stops.name}) before it finished; no best.json was written. "
                          f"Continue with: {_resume_command(out)}") from None
    statuses = trial_statuses(storage_uri)
    rows = collect_rows(grid, base, lambda path: checkpoint_uri(rebase(path, folders, out), storage_uri), log,
                        statuses)
    summary = write_reports(rows, base, out, log, expected=spec.num_trials, resume_command=_resume_command(out))
    summary["seconds"] = time.time() - t0
    return summary


def trial_statuses(storage_uri: str) -> dict[str, str]:
    """trial_id -> Tune's status (TERMINATED, ERROR, or RUNNING/PENDING/PAUSED for a trial that an
    interruption left unfinished), read from the sweep state Tune saved when fit() returned."""
    from ray.tune import ExperimentAnalysis

    path, filesystem = dfs.ray_storage(dfs.join(storage_uri, EXPERIMENT))
    return {t.trial_id: t.status for t in ExperimentAnalysis(path, storage_filesystem=filesystem).trials}


def _resume_command(out: str) -> str:
    return f"python pipelines/tune.py --out {out} --resume"


def build_tuner(base: TrainConfig, spec: SearchSpec, plan: ResourcePlan, out: str, storage_uri: str, resume: bool,
                log=print):
    """The Tuner of a sweep (every trial: run_trial with these resources), or with resume=True the
    interrupted one in storage_uri, restored with this session's progress printer."""
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=base.to_dict(), out=out, cpus_per_worker=plan.cpus_per_worker),
        {"CPU": TRIAL_DRIVER_CPU})
    storage, filesystem = dfs.ray_storage(storage_uri)
    # Tune saves the sweep state at most this often: an interrupted sweep loses at most ~1 s of it
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    progress = ProgressLines(spec.num_trials, log)
    if resume:
        tuner = tune.Tuner.restore(dfs.join(storage_uri, EXPERIMENT), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True, storage_filesystem=filesystem)
        replace_restored_callbacks(tuner, [progress])
        return tuner
    return tune.Tuner(
        trainable, param_space=spec.param_space(base.seed),
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", num_samples=1 if spec.search == "grid" else
                                    spec.num_samples, max_concurrent_trials=plan.concurrency,
                                    scheduler=_scheduler(spec, base.epochs)),
        run_config=tune.RunConfig(name=EXPERIMENT, storage_path=storage, storage_filesystem=filesystem,
                                  callbacks=[progress], verbose=0))
