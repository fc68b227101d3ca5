"""The Ray Train worker function: the one train loop reused by train, tune and compare.

`train_loop_per_worker` reads as its phases: set up the worker, build the model, restore a run
(Ray Train's checkpoint after a failure, or --init-from's), distribute it, then per epoch train,
evaluate, record and checkpoint, and at the end evaluate the best weights. The run's progress is
one `TrainState` (what a checkpoint's state.json holds).
"""
from __future__ import annotations

import copy
import hashlib
import logging
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

from dfei.data.dataset import ParquetDataset
from dfei.data.encoders import load_transform
from dfei.data.ingest import DomainReader, reader_positions, reader_start, steps_per_epoch, training_stream
from dfei.data.ray_ingest import RayDataDomainReader
from dfei.errors import CheckpointError, TrainingDivergedError
from dfei.train import warm_start
from dfei.train.checkpoint import (
    CHECKPOINT_SCORE,
    MID_EPOCH,
    TrainState,
    load_any_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from dfei.config import TrainConfig
from dfei.models.build import model_from_config
from dfei.train.contention import CpuContention
from dfei.train.distributed import DistributedHooks, broadcast_state, check_replicas, ddp_kwargs, prepare_distributed
from dfei.train.epoch import EpochOptions, StepCheckpoints, merge_parts, predict_split, score_split, train_epoch
from dfei.train.optim import build_optimizer, shared_groups
from dfei.train.step import unwrap


@dataclass
class Worker:
    """What every phase of one worker's run needs: its settings, data, place in the group and log."""

    cfg: TrainConfig
    dataset: ParquetDataset
    rank: int
    world: int
    device: torch.device
    log: Callable[[str], None]
    ray_data_rows: list[list[int]] | None  # per domain, per rank: set by the driver for --ingest ray-data


@dataclass
class Restored:
    """What a run starts from besides fresh weights (all None for a first run)."""

    state: TrainState
    best_weights: dict | None = None  # the best epoch's model state dict, when it is not the current one
    optimizer_state: dict | None = None
    resumed_from: dict | None = None  # after a failure: where Ray Train's checkpoint left off
    init_from: dict | None = None  # incremental training: what came from --init-from's checkpoint
    mid_epoch: dict | None = None  # a step checkpoint's record: the epoch to continue, and from where


def divergence_message(diverged: dict[str, Any], lr: float) -> str:
    """The one line a diverged run ends with (TrainingDivergedError on the driver)."""
    return (f"training diverged at epoch {diverged['epoch'] + 1} step {diverged['step'] + 1} (domain "
            f"{diverged['domain_name']}): loss is {diverged['loss']}; try a lower --lr (this run: {lr:g})")


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    t_start = time.time()
    w = setup_worker(config)
    model, optimizer, hooks = build(w)
    restored = restore(w, model, optimizer)
    model = distribute(w, model, optimizer, restored.optimizer_state)
    t_ready = time.time()  # model built, checkpoint loaded, DDP set up
    state, first_update = restored.state, None
    # a run restarted after it had already early-stopped (e.g. a failure during the final
    # evaluation) must not train again
    last_epoch = state.epoch if state.stopped(w.cfg.patience) else w.cfg.epochs - 1
    contention, warned = CpuContention(torch.get_num_threads()), False
    for epoch in range(state.epoch + 1, last_epoch + 1):
        contention.start()
        stats = train_one_epoch(w, model, optimizer, hooks, epoch, state, restored)
        first_update = first_update or stats["first_update_unix"]
        state.global_step += stats["updates"]
        if stats["diverged"] is not None:  # every rank stops here: nothing is evaluated or checkpointed
            return diverged_result(w, state, stats, epoch)
        restored.best_weights = end_epoch(w, model, optimizer, state, stats, epoch, restored.best_weights)
        warning = None if warned else contention.check(f"epoch {epoch + 1}")
        if warning:  # once a run: the CPUs are shared, the figures are slow, the results are right
            w.log(f"[train] warning: {warning}")
            warned = True
        if state.stopped(w.cfg.patience):
            w.log(f"[train] early stop: no improvement for {state.bad_epochs} epoch(s); "
                  f"best epoch {state.best_epoch + 1}")
            break
    return final_result(w, model, restored, {"worker_start_unix": t_start, "worker_ready_unix": t_ready,
                                             "first_update_unix": first_update})


# ---- phases ------------------------------------------------------------------------------------

def setup_worker(config: dict[str, Any]) -> Worker:
    config = dict(config)
    ray_data_rows = config.pop("ray_data_rows", None)
    cfg = TrainConfig.from_dict(config)
    quiet_ray_train_report_logs()
    if cfg.torch_threads is not None:  # explicit, not whatever OMP_NUM_THREADS the worker inherited
        torch.set_num_threads(cfg.torch_threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    return Worker(cfg, ParquetDataset(cfg.data), rank, world, ray.train.torch.get_device(),
                  _say if rank == 0 else (lambda message: None), ray_data_rows)


def build(w: Worker) -> tuple[nn.Module, torch.optim.Optimizer, DistributedHooks]:
    """The model (identical initial weights on every rank), its optimizer and the DDP hooks."""
    torch.manual_seed(w.cfg.seed)
    model = model_from_config(w.cfg, w.dataset.spec)
    optimizer = build_optimizer(model, w.cfg.lr, w.cfg.l2, w.cfg.shared_lr_scale,
                                lazy_embeddings=w.cfg.embedding_update == "lazy")
    return model, optimizer, prepare_distributed(model, w.world)


def restore(w: Worker, model: nn.Module, optimizer: torch.optim.Optimizer) -> Restored:
    """Load Ray Train's checkpoint when this is a restart after a failure; else --init-from's
    (incremental training: weights, v with its EMA continuing, Adam state); else nothing."""
    cfg, checkpoint = w.cfg, ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            ckpt = load_checkpoint(ckpt_dir, encoders=False)  # resuming: ids as they were
        model.load_state_dict(ckpt["model"])
        state = TrainState.from_json(ckpt["state"])
        mid = mid_epoch_record(ckpt["state"], w.world)
        v = unwrap(model).domain_features()
        resumed = {"epoch": state.epoch + 1, "global_step": state.global_step, "unix": time.time(),
                   "v": v.tolist() if v is not None else None}
        if mid is None:
            w.log(f"[train] resumed after epoch {state.epoch + 1} at update {state.global_step} "
                  f"(best valid avg AUC {state.best_auc:.4f} at epoch {state.best_epoch + 1})")
        else:
            updates = mid["progress"][w.rank]["updates"]
            # counted as the log counts: {"epoch": 2, "step": 4} is inside epoch 2, after its 4th step
            resumed.update(epoch=mid["epoch"] + 1, step=mid["step"], global_step=state.global_step + updates)
            w.log(f"[train] resumed inside epoch {mid['epoch'] + 1} after step {mid['step']} "
                  f"(update {state.global_step + updates})")
        best = ckpt["best_model"] if state.best_epoch >= 0 else None
        return Restored(state, best, ckpt["optimizer"], resumed_from=resumed, mid_epoch=mid)
    if not cfg.init_from:
        return Restored(TrainState())
    ckpt = load_any_checkpoint(cfg.init_from)
    data_transform = load_transform(w.dataset.uri, w.dataset.spec.encoders)
    matching = warm_start.plan(cfg, w.dataset.spec, ckpt, cfg.init_from, data_transform)
    model.load_state_dict(warm_start.model_state(model, ckpt["model"], matching))
    source = warm_start.optimizer_source(cfg, ckpt["optimizer"] is not None)
    optimizer_state = (warm_start.optimizer_state(model, optimizer, ckpt["optimizer"], matching)
                       if source == "restored" else None)
    w.log("[train] initialised " + warm_start.summary(matching, cfg.init_from, source))
    return Restored(TrainState(), optimizer_state=optimizer_state,
                    init_from=warm_start.init_record(matching, cfg.init_from, source))


def distribute(w: Worker, model: nn.Module, optimizer: torch.optim.Optimizer,
               optimizer_state: dict | None) -> nn.Module:
    """Move to the device, restore Adam's moments there, start every rank from rank 0's state (the
    embedding outside DDP and the buffers included), wrap in DDP."""
    model.to(w.device)
    if optimizer_state is not None:  # after the move: Adam's moments follow their parameters' device
        optimizer.load_state_dict(optimizer_state)
    if w.world > 1:
        broadcast_state(model)
    return ray.train.torch.prepare_model(model, parallel_strategy_kwargs=ddp_kwargs())


def train_one_epoch(w: Worker, model: nn.Module, optimizer: torch.optim.Optimizer, hooks: DistributedHooks,
                    epoch: int, state: TrainState, restored: Restored) -> dict[str, Any]:
    """Algorithm 1 over this rank's share of every domain's training rows (dfei.train.epoch.train_epoch),
    from the step a mid-epoch checkpoint left off at when `restored` holds one for this epoch."""
    cfg = w.cfg
    readers = train_readers(cfg, w.dataset, w.rank, w.world, w.ray_data_rows, epoch)
    n_steps = steps_per_epoch(readers) if cfg.max_steps_per_epoch is None else min(
        steps_per_epoch(readers), cfg.max_steps_per_epoch)
    mid, restored.mid_epoch = restored.mid_epoch, None
    start, resume = (mid["step"], mid["progress"][w.rank]) if mid and mid["epoch"] == epoch else (0, None)
    total = sum(min(r.num_batches, n_steps) if cfg.exhaustion == "exhaust" else n_steps * (r.num_batches > 0)
                for r in readers)

    def progress(p: dict) -> None:
        active = sum(reader_start(r.num_batches, p["step"], cfg.exhaustion) is not None for r in readers)
        w.log(progress_line(epoch, n_steps, total, active, len(readers), p))

    def checkpoint(step: int, progress: dict) -> None:
        save_step_checkpoint(w, model, optimizer, state, restored.best_weights, epoch, step, progress,
                             reader_positions(readers, epoch, step, cfg.exhaustion))

    def seed_step(step: int) -> None:  # dropout: a function of (seed, rank, epoch, step), so a resumed step redraws it
        seed = step_seed(cfg.seed, w.rank, epoch, step)
        torch.default_generator.manual_seed(seed)  # ~1 us; torch.manual_seed (every device) took ~80 us
        if w.device.type == "cuda":
            torch.cuda.manual_seed(seed)  # this worker's device, where its dropout masks are drawn

    if start:
        if reader_positions(readers, epoch, start, cfg.exhaustion) != mid["positions"][w.rank]:
            raise CheckpointError(f"the step checkpoint of epoch {epoch + 1} (after step {start}) recorded other reader "
                                  f"positions than {cfg.data} gives now: the dataset changed since; resuming would "
                                  "repeat or skip rows")
        w.log(f"[train] epoch {epoch + 1}: continuing at step {start + 1}/{n_steps}")
    stream = training_stream(readers, epoch, cfg.exhaustion, cfg.mode, start)
    try:
        options = EpochOptions(max_steps=cfg.max_steps_per_epoch, compile=cfg.compile, seed_step=seed_step,
                               on_progress=progress, progress_every_s=cfg.log_every_s)
        return train_epoch(model, optimizer, stream, w.device, w.dataset.spec.num_domains, options=options, hooks=hooks,
                           checkpoints=StepCheckpoints(cfg.checkpoint_every_steps, checkpoint, resume))
    finally:
        stream.close()


def step_seed(seed: int, rank: int, epoch: int, step: int) -> int:
    """The torch seed of a training step (dropout masks): distinct per (seed, rank, epoch, step), from a
    few integer operations (numpy's SeedSequence took ~90 us a step)."""
    value = 0
    for part in (seed, rank, epoch, step):
        value = (value * 1_000_003 + part) % (1 << 63)
    return value


def progress_line(epoch: int, n_steps: int, total_batches: int, active: int, domains: int, p: dict) -> str:
    """The periodic line inside an epoch (one line, plain text: readable in `ray job submit` logs).
    The ETA is by batches, not steps: late steps hold fewer domains (at the industrial scale most of
    an epoch is one domain alone). p: train_epoch's progress (step, batches, samples, seconds, loss)."""
    done = p["batches"]
    eta = p["seconds"] / max(done, 1) * max(total_batches - done, 0)
    return (f"[train] epoch {epoch + 1} step {p['step'] + 1}/{n_steps} ({done / max(total_batches, 1):.0%} of "
            f"batches, ETA {_duration(eta)}), {active}/{domains} domains active, "
            f"{p['samples'] / max(p['seconds'], 1e-9):,.0f} samples/s/worker, loss {p['loss']:.4f}")


def save_step_checkpoint(w: Worker, model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState,
                         best_weights: dict | None, epoch: int, step: int, progress: dict,
                         positions: list[dict]) -> None:
    """Report a checkpoint after `step` steps of `epoch` (every rank calls this at the same step).

    Besides the weights (v and its flags included), Adam's state and the run's state, state.json's
    `mid_epoch` holds what continuing needs: every rank's running sums of the epoch and every
    domain reader's position (its rows, the shuffle seed of its pass, the batches served). The
    readers' shuffles and dropout are seeded functions of (seed, rank, epoch, step), so the
    position and the step are all the RNG state there is. Scored lowest for retention: Ray Train
    keeps it while it is the latest or while fewer than patience+1 epoch ends exist."""
    check_replicas(unwrap(model), w.world, f"at the checkpoint after step {step} of epoch {epoch + 1}", w.log)
    records = _gather_to_rank0({"progress": progress, "positions": positions}, w)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = None
        if w.rank == 0:
            mid = {"epoch": epoch, "step": step, "world": w.world,
                   "progress": [r["progress"] for r in records], "positions": [r["positions"] for r in records]}
            save_checkpoint(tmp, unwrap(model).state_dict(), optimizer.state_dict(),
                            {**state.to_json(w.cfg, w.dataset.spec), "mid_epoch": mid}, best_weights,
                            dataset_root=w.dataset.uri)
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({"epoch": epoch, "step": step, MID_EPOCH: True, CHECKPOINT_SCORE: -1.0}, checkpoint=ckpt,
                         checkpoint_dir_name=f"epoch_{epoch + 1:04d}_step_{step:08d}")
    w.log(f"[train] checkpoint inside epoch {epoch + 1} after step {step}")


def mid_epoch_record(state: dict[str, Any], world: int) -> dict | None:
    """A checkpoint's `mid_epoch` record (None for an epoch-end checkpoint); CheckpointError when
    it was written by another number of workers (its positions are per rank)."""
    mid = state.get("mid_epoch")
    if mid is None:
        return None
    if mid.get("world") != world or len(mid.get("progress", [])) != world:
        raise CheckpointError(f"this checkpoint was written inside epoch {mid.get('epoch', -1) + 1} by "
                              f"{mid.get('world')} worker(s); resuming it exactly needs the same number, not {world}")
    return mid


def train_readers(cfg: TrainConfig, dataset: ParquetDataset, rank: int, world: int,
                  ray_data_rows: list[list[int]] | None, epoch: int = 0) -> list:
    """One training reader per domain over this rank's rows of `epoch` (also used by the benchmarks)."""
    n = dataset.spec.num_domains
    if cfg.ingest == "ray-data":
        return [RayDataDomainReader(dataset, "train", d, rank, ray_data_rows[d][rank], cfg.batch_size, shuffle=True,
                                    seed=cfg.seed, shuffle_buffer_rows=cfg.shuffle_buffer_rows) for d in range(n)]
    return [DomainReader(dataset, "train", d, rank, world, cfg.batch_size, shuffle=True, seed=cfg.seed,
                         shuffle_buffer_rows=cfg.shuffle_buffer_rows, epoch=epoch) for d in range(n)]


def end_epoch(w: Worker, model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState,
              stats: dict[str, Any], epoch: int, best_weights: dict | None) -> dict | None:
    """Evaluate on valid, record the epoch in `state`, report it to Ray Train with a checkpoint;
    returns the best weights so far."""
    check_replicas(unwrap(model), w.world, f"after epoch {epoch + 1}", w.log)
    t_eval = time.time()
    valid = evaluate(w, model, "valid")
    world = w.world
    row = {"epoch": epoch, "train_loss": stats["loss"], "valid_avg_auc": valid["avg_auc"],
           "samples": stats["samples"] * world, "train_seconds": stats["seconds"], "eval_seconds": time.time() - t_eval,
           "samples_per_s": stats["samples_per_s"] * world,
           "steady_samples_per_s": stats["steady_samples_per_s"] * world, "steps": stats["steps"]}
    if "compiled" in stats:  # --compile: whether it held (False: fell back to eager), its time (not in train_seconds)
        row.update(compiled=stats["compiled"], compile_s=stats["compile_s"], compile_error=stats["compile_error"])
    improved = state.record(epoch, valid["avg_auc"], row)
    if improved:
        best_weights = copy.deepcopy(unwrap(model).state_dict())
    w.log(f"[train] epoch {epoch + 1}/{w.cfg.epochs}: loss {stats['loss']:.4f}, valid avg AUC {valid['avg_auc']:.4f}"
          f"{' (best)' if improved else ''}, {row['samples']:,} samples in {stats['seconds']:.1f}s "
          f"({row['samples_per_s']:,.0f}/s), eval {row['eval_seconds']:.1f}s")
    score = valid["avg_auc"] if np.isfinite(valid["avg_auc"]) else 0.0  # above every step checkpoint's -1
    metrics = {**row, MID_EPOCH: False, CHECKPOINT_SCORE: score, "best_valid_avg_auc": state.best_auc,
               "best_epoch": state.best_epoch, **_flat("valid", valid),
               **_tracked(unwrap(model), optimizer, w.dataset.spec.domain_names, stats)}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = None
        if w.rank == 0:
            save_checkpoint(tmp, unwrap(model).state_dict(), optimizer.state_dict(),
                            state.to_json(w.cfg, w.dataset.spec), None if improved else best_weights,
                            dataset_root=w.dataset.uri)
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        # named as users count epochs (from 1): "best epoch 5" is the folder epoch_0005
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=f"epoch_{epoch + 1:04d}")
    return best_weights


def diverged_result(w: Worker, state: TrainState, stats: dict[str, Any], epoch: int) -> dict[str, Any]:
    diverged = {**stats["diverged"], "epoch": epoch,
                "domain_name": w.dataset.spec.domain_names[stats["diverged"]["domain"]]}
    w.log(f"[train] {divergence_message(diverged, w.cfg.lr)}")
    return {"diverged": diverged, "history": state.history, "global_step": state.global_step}


def final_result(w: Worker, model: nn.Module, restored: Restored, timings: dict[str, Any]) -> dict[str, Any]:
    """Valid and test metrics of the best weights (the best checkpoint's model.pt / best_model.pt)."""
    state = restored.state
    if restored.best_weights is not None:
        unwrap(model).load_state_dict(restored.best_weights)
    check_replicas(unwrap(model), w.world, "before the final evaluation", w.log)
    peak_so_far = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, _peak_rss_mb() or 0.0)
    reset, t_eval = _reset_peak_rss(), time.time()  # (the reset also resets getrusage's ru_maxrss)
    valid, test = evaluate(w, model, "valid"), evaluate(w, model, "test")
    eval_seconds, eval_peak = time.time() - t_eval, _peak_rss_mb() if reset else None
    peaks = _gather_to_rank0(max(peak_so_far, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), w)
    v = unwrap(model).domain_features()
    v = v.detach().cpu().numpy() if v is not None else None
    # every rank's v, as a digest: equal digests are the proof that the ranks end with the same buffer
    digests = _gather_to_rank0(hashlib.blake2b(v.tobytes(), digest_size=8).hexdigest(), w) if v is not None else None
    return {
        "valid": valid, "test": test, "best_epoch": state.best_epoch, "epochs_run": state.epoch + 1,
        "global_step": state.global_step, "resumed_from": restored.resumed_from, "init_from": restored.init_from,
        "stopped_early": state.stopped(w.cfg.patience), "history": state.history, "diverged": None,
        "domain_feature_norms": np.linalg.norm(v, axis=1).tolist() if v is not None else None,
        "domain_feature_digests": digests,
        "timings": {**timings, "worker_peak_rss_mb": peaks[0] if peaks else None, "worker_peak_rss_mb_by_rank": peaks,
                    "eval_peak_rss_mb": eval_peak, "final_eval_s": eval_seconds,
                    "final_eval_rows": sum(w.dataset.rows("valid")) + sum(w.dataset.rows("test"))},
    }


# ---- helpers -----------------------------------------------------------------------------------

def evaluate(w: Worker, model: nn.Module, split: str) -> dict:
    """Per-domain metrics of `split`: every rank scores its share (labels, scores, users: numpy
    float32/int64, 8-16 bytes a row), rank 0 alone gathers them (exact AUC needs every score of a
    domain in one place), scores and broadcasts the metrics (a few KB). Raises
    TrainingDivergedError on every rank when a score is not finite."""
    parts = predict_split(model, w.dataset, split, w.device, w.rank, w.world, w.cfg.eval_batch_size)
    if w.world == 1:
        return score_split(w.dataset, parts)
    gathered = _gather_to_rank0(parts, w)
    outcome: list = [None]
    if w.rank == 0:
        try:
            outcome[0] = ("ok", score_split(w.dataset, merge_parts(gathered)))
        except TrainingDivergedError as err:
            outcome[0] = ("diverged", str(err))
        del gathered
    dist.broadcast_object_list(outcome, src=0)
    kind, value = outcome[0]
    if kind == "diverged":
        raise TrainingDivergedError(value)
    return value


def _gather_to_rank0(obj: Any, w: Worker) -> list | None:
    """Every rank's `obj` on rank 0 (rank order); None on the other ranks."""
    if w.world == 1:
        return [obj]
    gathered: list | None = [None] * w.world if w.rank == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux: /proc/self/clear_refs "5"), so the next _peak_rss_mb()
    is the peak since now; False where that is not possible (the peak is then left unmeasured)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    """Peak RSS (MB) since the last _reset_peak_rss() (VmHWM of /proc/self/status)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return None


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _flat(prefix: str, split: dict) -> dict[str, float]:
    out = {f"{prefix}_avg_auc": split["avg_auc"]}
    out.update({f"{prefix}_auc/{name}": m["auc"] for name, m in split["domains"].items()})
    return out


def _tracked(model, optimizer, names: list[str], stats: dict) -> dict[str, float]:
    """What tracking shows besides AUC: learning rates, per-domain train loss, the norm of each v_d."""
    shared = {id(g) for g in shared_groups(optimizer)}
    out = {"lr/shared": next(g["lr"] for g in optimizer.param_groups if id(g) in shared),
           "lr/domain": next(g["lr"] for g in optimizer.param_groups if id(g) not in shared)}
    out.update({f"train_loss/{n}": loss for n, loss, b in zip(names, stats["domain_loss"], stats["batches"]) if b})
    v = unwrap(model).domain_features()
    if v is not None:
        norms = v.detach().norm(dim=1).cpu().tolist()
        out.update({f"v_norm/{n}": float(x) for n, x in zip(names, norms)})
    return out


def _say(message: str) -> None:
    # sys.stdout directly: Ray Train's patched print() would emit every line twice
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _not_a_report_line(record: logging.LogRecord) -> bool:
    # Ray Train logs every report (its full metrics dict) and checkpoint at INFO; our own epoch
    # line says it better, and metrics.json names the best checkpoint
    return not str(record.msg).startswith(("Reporting training result", "Checkpoint successfully created"))


def quiet_ray_train_report_logs() -> bool:
    """Filter Ray Train's per-report INFO lines out of the worker's log; True when attached.

    Private API, checked against Ray 2.60.0: the lines come from the module loggers of
    ray.train.v2._internal.execution.context (a logger named by its file path, so no public
    logger name reaches it) and .storage. Cosmetic, so never fatal here;
    tests/train/test_private_apis.py fails loudly when a Ray upgrade removes them."""
    try:
        from ray.train.v2._internal.execution import context as _train_context
        from ray.train.v2._internal.execution import storage as _train_storage

        for module in (_train_context, _train_storage):
            if _not_a_report_line not in module.logger.filters:
                module.logger.addFilter(_not_a_report_line)
        return True
    except (ImportError, AttributeError):
        return False
