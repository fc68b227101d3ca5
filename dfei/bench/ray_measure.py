"""Measurements on Ray Train: the full pipeline (train.py's run_training), each ingest backend alone
(the training readers with no model), and the EMA all-reduce's share of a 2-worker step."""
from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import numpy as np

from dfei.data import fs as dfs
from dfei.config import TrainConfig


def pipeline_rate(cfg: TrainConfig) -> dict[str, Any]:
    """One full training run (Parquet streaming, DDP, per-epoch eval and checkpoints): the median
    of its epochs' steady training rates (first update excluded) and its start-up times."""
    from dfei.train.driver import run_training

    metrics = run_training(cfg, log=lambda *a: None)
    history = metrics["history"]
    t = metrics["timings"]
    return {"samples_per_s": float(np.median([h["steady_samples_per_s"] for h in history])),
            "epochs_steady_samples_per_s": [h["steady_samples_per_s"] for h in history],
            "epochs_samples_per_s": [h["samples_per_s"] for h in history],
            **{k: t[k] for k in ("time_to_first_step_s", "fit_to_first_step_s", "fit_to_worker_start_s",
                                 "worker_setup_s", "ready_to_first_step_s", "eval_s")},
            "test_avg_auc": metrics["avg_auc"]["test"], "samples_per_epoch": history[-1]["samples"]}


def ingest_loop(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train worker: each backend's training readers in Algorithm 1 order with prefetch, no model."""
    import ray.train

    from dfei.data.dataset import ParquetDataset
    from dfei.data.ingest import training_stream
    from dfei.train.worker import train_readers

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = TrainConfig.from_dict(config["train"])
    dataset = ParquetDataset(cfg.data)
    out = {}
    for backend in config["backends"]:
        run = cfg.replace(ingest=backend)
        rates = []
        for epoch in range(config["passes"]):
            readers = train_readers(run, dataset, rank, world, config.get("ray_data_rows"), epoch)
            t0, rows = time.perf_counter(), 0
            for item in training_stream(readers, epoch, run.exhaustion, run.mode):
                rows += len(item[3])
            rates.append(rows / (time.perf_counter() - t0))
        out[backend] = {"rows_per_s": max(rates), "first_pass_rows_per_s": rates[0], "rows": rows}
    return out


def ingest_rates(cfg: TrainConfig, backends=("arrow", "ray-data"), passes: int = 2) -> dict[str, Any]:
    """rows/s of each backend on 1 worker (the best of `passes` epochs; the first pass is also kept)."""
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from dfei.data.dataset import ParquetDataset
    from dfei.data.ray_ingest import build_shards

    datasets, rows = (build_shards(ParquetDataset(cfg.data), "train", 1) if "ray-data" in backends else (None, None))
    trainer = TorchTrainer(
        ingest_loop, train_loop_config={"train": cfg.to_dict(), "backends": list(backends), "passes": passes,
                                        "ray_data_rows": rows},
        datasets=datasets, dataset_config=DataConfig(datasets_to_split=[]),
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=f"bench-ingest-{os.getpid()}",
                             storage_path=dfs.absolute(os.path.join(cfg.out, "ray_results"))))
    return trainer.fit().return_value


def _paired_step_times(mode: str, config: dict[str, Any], items: list[tuple], world: int, device) -> dict[str, Any]:
    """One mode's step times with and without the statistics all-reduce, alternated step by step (both
    see the same machine load); the first pair warms up. Returns sync_loop's per-mode figures and
    the reducer (for the collective alone)."""
    import ray.train.torch
    import torch

    from dfei.data.ingest import fused_steps
    from dfei.models import build_model
    from dfei.train.distributed import ddp_kwargs, prepare_distributed
    from dfei.train.epoch import train_epoch
    from dfei.train.optim import build_optimizer
    from dfei.train.step import unwrap

    cards, domains, steps = config["cardinalities"], config["num_domains"], len(items) // config["num_domains"]
    torch.manual_seed(0)
    model = build_model("dfei", cards, domains)
    optimizer = build_optimizer(model)
    hooks = prepare_distributed(model, world)
    timed_hooks = dataclasses.replace(hooks, min_over_ranks=None)  # no divergence all-reduce in the timed steps
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs=ddp_kwargs())
    dfe = unwrap(model).dfe  # DFE's statistics reducer (dfei.train.distributed), switched off and on
    reducer = dfe.reducer
    times: dict[str, list[float]] = {"with": [], "without": []}
    for i in range(2 + 2 * config["steps"]):
        name = "with" if i % 2 else "without"
        dfe.reducer = reducer if name == "with" else None
        step = iter(items[(i % steps) * domains:(i % steps + 1) * domains])
        stats = train_epoch(model, optimizer, fused_steps(step) if mode == "fused" else step, device, domains,
                            hooks=timed_hooks)
        if i >= 2:
            times[name].append(stats["seconds"])
    dfe.reducer = reducer
    with_s, without_s = float(np.median(times["with"])), float(np.median(times["without"]))
    # neighbouring steps paired: slow drifts of the machine's load cancel in the differences
    diffs = np.asarray(times["with"]) - np.asarray(times["without"])
    half_ci = 1.96 * float(diffs.std(ddof=1)) / np.sqrt(len(diffs)) / with_s if len(diffs) > 1 else math.nan
    return {"step_s_with_sync": with_s, "step_s_without_sync": without_s,
            "overhead_frac": float(np.mean(diffs)) / with_s, "overhead_frac_ci95": half_ci,
            "steps_each": len(diffs), "collectives_per_step": 1 if mode == "fused" else domains,
            "reducer": reducer}


def _collective_s(reducer, domains: int, batch: int, device) -> float:
    """The statistics all-reduce alone (forward and backward), ranks already in step: what the
    collective itself costs, without the time a rank waits for a slower one (median of 5 x 20)."""
    import torch
    import torch.distributed as dist

    sums = torch.randn(domains, 32, device=device, requires_grad=True)
    counts = torch.full((domains,), float(batch), device=device)
    times_c = []
    for _ in range(5):
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(20):
            s, _c = reducer(sums, counts)
            s.sum().backward()  # the backward all-reduce too
        times_c.append((time.perf_counter() - t0) / 20)
    return float(np.median(times_c))


def sync_loop(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train worker: step time with and without the EMA statistics all-reduce, per mode.

    Batches are synthetic and in memory (ingest is measured elsewhere); every step feeds all D
    domains. Steps with and without the all-reduce alternate; the median step time of each counts.
    """
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    cards, domains, batch = config["cardinalities"], config["num_domains"], config["batch_size"]
    rng = np.random.default_rng(rank)
    steps = 4  # distinct synthetic steps, reused
    items = [(s, d, np.stack([rng.integers(0, c, batch) for c in cards], axis=1).astype(np.int32),
              rng.integers(0, 2, batch).astype(np.float32)) for s in range(steps) for d in range(domains)]
    out = {mode: _paired_step_times(mode, config, items, world, device) for mode in config["modes"]}
    collective = _collective_s(out[config["modes"][-1]]["reducer"], domains, batch, device)
    for v in out.values():
        v.pop("reducer")
        v["collective_s"] = collective
        v["intrinsic_frac"] = collective * v["collectives_per_step"] / v["step_s_with_sync"]
    return out


def sync_overhead(cardinalities: list[int], num_domains: int, out: str, modes=("sequential", "fused"),
                  batch_size: int = 512, steps: int = 12, use_gpu: bool = False) -> dict[str, Any]:
    """Per mode: the EMA all-reduce's share of a 2-worker step (on its own process group, as
    training runs it)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        sync_loop, train_loop_config={"cardinalities": cardinalities, "num_domains": num_domains, "modes": list(modes),
                                      "batch_size": batch_size, "steps": steps},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=use_gpu, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=f"bench-sync-{os.getpid()}",
                             storage_path=dfs.absolute(os.path.join(out, "ray_results"))))
    return trainer.fit().return_value
