"""The Ray Train worker function: the one train loop reused by train, tune and compare."""
from __future__ import annotations

import copy
import logging
import math
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from dfei.data.dataset import ParquetDataset
from dfei.data.ingest import DomainReader, steps_per_epoch, training_stream
from dfei.data.ray_ingest import RayDataDomainReader
from dfei.models import build_model
from dfei.train import warm_start
from dfei.train.checkpoint import load_checkpoint, save_checkpoint
from dfei.train.config import TrainConfig
from dfei.train.distributed import broadcast_state, check_replicas, ddp_kwargs, prepare_distributed
from dfei.train.engine import merge_parts, predict_split, score_split, train_epoch, unwrap
from dfei.train.optim import build_optimizer, shared_groups
from dfei.train.predict import load_any_checkpoint


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    return {"alpha": cfg.alpha, "k": cfg.k, "embed_dim": cfg.embed_dim,
            "tower_dims": list(cfg.tower_dims), "tower_dropouts": list(cfg.tower_dropouts)}


def divergence_message(diverged: dict[str, Any], lr: float) -> str:
    """The one line a diverged run ends with (TrainingDivergedError on the driver)."""
    return (f"training diverged at epoch {diverged['epoch'] + 1} step {diverged['step'] + 1} (domain "
            f"{diverged['domain_name']}): loss is {diverged['loss']}; try a lower --lr (this run: {lr:g})")


def _evaluate(model, dataset, split, device, rank, world, batch_size) -> dict:
    parts = predict_split(model, dataset, split, device, rank, world, batch_size)
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, parts)
        parts = merge_parts(gathered)
    return score_split(dataset, parts)


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
    dfe = getattr(model, "dfe", None)
    if dfe is not None:
        norms = dfe.v.detach().norm(dim=1).cpu().tolist()
        out.update({f"v_norm/{n}": float(x) for n, x in zip(names, norms)})
    return out


def _fail_once(batches: Iterator[tuple], epoch: int, spec: dict[str, Any] | None, rank: int) -> Iterator[tuple]:
    """Raise once at (epoch, step) on rank 0: the fault-tolerance drill of `fail_once_at`."""
    for item in batches:
        if spec and rank == 0 and epoch == spec["epoch"] and item[0] == spec["step"] and not os.path.exists(spec["marker"]):
            with open(spec["marker"], "w") as f:
                f.write(str(time.time()))
            raise RuntimeError(f"injected failure (fail_once_at) at epoch {epoch + 1}, step {item[0]}")
        yield item


def _say(message: str) -> None:
    # sys.stdout directly: Ray Train's patched print() would emit every line twice
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _quiet_report_lines(record: logging.LogRecord) -> bool:
    # Ray Train logs every report (its full metrics dict) and checkpoint at INFO; our own epoch
    # line says it better, and metrics.json names the best checkpoint
    return not str(record.msg).startswith(("Reporting training result", "Checkpoint successfully created"))


def train_readers(cfg: TrainConfig, dataset: ParquetDataset, rank: int, world: int,
                   ray_data_rows: list[list[int]] | None) -> list:
    n = dataset.spec.num_domains
    if cfg.ingest == "ray-data":
        return [RayDataDomainReader(dataset, "train", d, rank, ray_data_rows[d][rank], cfg.batch_size, shuffle=True,
                                    seed=cfg.seed, shuffle_rows=cfg.shuffle_rows) for d in range(n)]
    return [DomainReader(dataset, "train", d, rank, world, cfg.batch_size, shuffle=True, seed=cfg.seed,
                         shuffle_rows=cfg.shuffle_rows) for d in range(n)]


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    config = dict(config)
    ray_data_rows = config.pop("ray_data_rows", None)  # set by the driver for the ray-data backend
    cfg = TrainConfig.from_dict(config)
    t_start = time.time()
    try:  # internal loggers (some named by file path); cosmetic, so never fatal
        from ray.train.v2._internal.execution import context as _train_context
        from ray.train.v2._internal.execution import storage as _train_storage

        for module in (_train_context, _train_storage):
            module.logger.addFilter(_quiet_report_lines)
    except (ImportError, AttributeError):
        pass
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    log = _say if rank == 0 else (lambda message: None)

    dataset = ParquetDataset(cfg.data)
    spec = dataset.spec
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_model(cfg.model, spec.cardinalities, spec.num_domains, **model_kwargs(cfg))
    optimizer = build_optimizer(model, cfg.lr, cfg.l2, cfg.shared_lr_scale,
                                lazy_embeddings=cfg.embedding_update == "lazy")
    hooks = prepare_distributed(model, world)
    device = ray.train.torch.get_device()

    start_epoch, best_auc, best_epoch, bad_epochs, history, global_step = 0, -math.inf, -1, 0, [], 0
    best_state, resumed_from, optimizer_state, warm = None, None, None, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            ckpt = load_checkpoint(ckpt_dir)
        model.load_state_dict(ckpt["model"])
        optimizer_state = ckpt["optimizer"]
        st = ckpt["state"]
        start_epoch, best_auc, best_epoch = st["epoch"] + 1, st["best_auc"], st["best_epoch"]
        bad_epochs, history, global_step = st["bad_epochs"], st["history"], st["global_step"]
        best_state = ckpt["best_model"]
        dfe = getattr(model, "dfe", None)
        resumed_from = {"epoch": st["epoch"], "global_step": global_step, "unix": time.time(),
                        "v": dfe.v.tolist() if dfe is not None else None}
        log(f"[train] resumed after epoch {st['epoch'] + 1} at update {global_step} "
            f"(best valid avg AUC {best_auc:.4f} at epoch {best_epoch + 1})")
    elif cfg.init_from:  # incremental training: a previous run's weights, v (EMA continues) and Adam state
        ckpt = load_any_checkpoint(cfg.init_from)
        matching = warm_start.plan(cfg, spec, ckpt, cfg.init_from)
        model.load_state_dict(warm_start.model_state(model, ckpt["model"], matching))
        restore = warm_start.optimizer_source(cfg, ckpt["optimizer"] is not None)
        if restore == "restored":
            optimizer_state = warm_start.optimizer_state(model, optimizer, ckpt["optimizer"], matching)
        warm = warm_start.describe(matching, cfg.init_from, restore)
        log("[train] initialised " + warm_start.summary(matching, cfg.init_from, restore))
    model.to(device)
    if optimizer_state is not None:  # after the move: Adam's moments follow their parameters' device
        optimizer.load_state_dict(optimizer_state)
    if world > 1:  # every rank starts from rank 0's state, the embedding outside DDP and the buffers included
        broadcast_state(model)
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs=ddp_kwargs())
    t_ready = time.time()  # model built, checkpoint loaded, DDP set up
    torch.manual_seed(cfg.seed * 1009 + rank + 1)  # dropout streams differ per rank

    first_update = None
    # a run restarted after it had already early-stopped (e.g. a failure during the final
    # evaluation) must not train again
    stopped_early = bad_epochs >= cfg.patience
    epoch = start_epoch - 1
    for epoch in range(start_epoch, cfg.epochs if not stopped_early else start_epoch):
        readers = train_readers(cfg, dataset, rank, world, ray_data_rows)
        n_steps = steps_per_epoch(readers) if cfg.max_steps_per_epoch is None else min(
            steps_per_epoch(readers), cfg.max_steps_per_epoch)

        def progress(p: dict, epoch=epoch, n_steps=n_steps) -> None:
            log(f"[train] epoch {epoch + 1} step {p['step'] + 1}/{n_steps} "
                f"({(p['step'] + 1) / max(n_steps, 1):.0%}), {p['samples'] / p['seconds']:,.0f} samples/s/worker, "
                f"loss {p['loss']:.4f}")

        stream = training_stream(readers, epoch, cfg.exhaustion, cfg.mode)
        try:
            stats = train_epoch(model, optimizer, _fail_once(stream, epoch, cfg.fail_once_at, rank), device,
                                spec.num_domains, cfg.max_steps_per_epoch, progress, cfg.log_every_s,
                                hooks.after_backward, hooks.gather, hooks.min_over_ranks)
        finally:
            stream.close()
        first_update = first_update or stats["first_update_unix"]
        global_step += stats["updates"]
        if stats["diverged"] is not None:  # every rank stops here: nothing is evaluated or checkpointed
            diverged = {**stats["diverged"], "epoch": epoch, "domain_name": spec.domain_names[stats["diverged"]["domain"]]}
            log(f"[train] {divergence_message(diverged, cfg.lr)}")
            return {"diverged": diverged, "history": history, "global_step": global_step}
        check_replicas(unwrap(model), world, f"after epoch {epoch + 1}", log)
        t_eval = time.time()
        valid = _evaluate(model, dataset, "valid", device, rank, world, cfg.eval_batch_size)
        eval_s = time.time() - t_eval
        improved = valid["avg_auc"] > best_auc
        if improved:
            best_auc, best_epoch, bad_epochs = valid["avg_auc"], epoch, 0
            best_state = copy.deepcopy(unwrap(model).state_dict())
        else:
            bad_epochs += 1
        row = {"epoch": epoch, "train_loss": stats["loss"], "valid_avg_auc": valid["avg_auc"],
               "samples": stats["samples"] * world,
               "train_seconds": stats["seconds"], "eval_seconds": eval_s,
               "samples_per_s": stats["samples_per_s"] * world,
               "steady_samples_per_s": stats["steady_samples_per_s"] * world, "steps": stats["steps"]}
        history.append(row)
        log(f"[train] epoch {epoch + 1}/{cfg.epochs}: loss {stats['loss']:.4f}, valid avg AUC {valid['avg_auc']:.4f}"
            f"{' (best)' if improved else ''}, {stats['samples'] * world:,} samples in {stats['seconds']:.1f}s "
            f"({row['samples_per_s']:,.0f}/s), eval {eval_s:.1f}s")
        stop = bad_epochs >= cfg.patience
        state = {"epoch": epoch, "global_step": global_step, "best_auc": best_auc, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                 "history": history, "config": cfg.to_dict(), "dataset": spec.to_json()}
        metrics = {**row, "best_valid_avg_auc": best_auc, "best_epoch": best_epoch, **_flat("valid", valid),
                   **_tracked(unwrap(model), optimizer, spec.domain_names, stats)}
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                save_checkpoint(tmp, unwrap(model).state_dict(), optimizer.state_dict(), state,
                                None if improved else best_state)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=f"epoch_{epoch:04d}")
        if stop:
            stopped_early = True
            log(f"[train] early stop: no improvement for {bad_epochs} epoch(s); best epoch {best_epoch + 1}")
            break

    # final evaluation from the best weights (the best checkpoint's model.pt / best_model.pt)
    if best_state is not None:
        unwrap(model).load_state_dict(best_state)
    check_replicas(unwrap(model), world, "before the final evaluation", log)
    valid = _evaluate(model, dataset, "valid", device, rank, world, cfg.eval_batch_size)
    test = _evaluate(model, dataset, "test", device, rank, world, cfg.eval_batch_size)
    v = unwrap(model).dfe.v.detach().cpu().numpy() if getattr(unwrap(model), "dfe", None) is not None else None
    return {
        "valid": valid, "test": test, "best_epoch": best_epoch, "epochs_run": epoch + 1,
        "global_step": global_step, "resumed_from": resumed_from, "init_from": warm,
        "stopped_early": stopped_early, "history": history, "diverged": None,
        "domain_feature_norms": np.linalg.norm(v, axis=1).tolist() if v is not None else None,
        "timings": {"worker_start_unix": t_start, "worker_ready_unix": t_ready, "first_update_unix": first_update,
                    "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
    }
