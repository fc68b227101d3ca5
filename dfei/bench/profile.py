"""Where the time of a training step goes: torch.profiler over steps of the plain loop (no Ray).

`profile_steps` runs `warmup` then `steps` Algorithm-1 steps of DFEI on in-memory batches (the
same model, optimizer and engine as training) under torch.profiler, and returns the operators'
self CPU time grouped by name, in ms per step, with their share of the step. The profiler's own
overhead (~5-10 us per op) inflates op-heavy code: compare shares, not absolute times, between
variants profiled the same way. Source: torch.profiler.profile / key_averages (PyTorch docs).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from dfei.bench.measure import in_memory_order, random_steps
from dfei.data.ingest import fused_steps
from dfei.models import build_model
from dfei.train.epoch import EpochOptions, train_epoch
from dfei.train.optim import build_optimizer


def dataset_steps(data: list[tuple[np.ndarray, np.ndarray]], start: int, steps: int, batch_size: int = 512,
                  seed: int = 0) -> list[tuple]:
    """Steps [start, start + steps) of an epoch of in-memory data in Algorithm 1's order."""
    return [it for it in in_memory_order(data, batch_size, seed) if start <= it[0] < start + steps]


def profile_steps(items: list[tuple], cardinalities: list[int], num_domains: int, mode: str,
                  warmup: int = 5, compile: bool = False, seed: int = 0,
                  device: torch.device = torch.device("cpu"), top: int = 15) -> dict[str, Any]:
    """Profile Algorithm 1 over `items` ((step, d, x, y) in step order: random_steps or dataset_steps).

    The first `warmup` steps warm up (Adam state, allocator, compilation), the rest are timed once
    without and once with the profiler. Returns {"mode", "compile", "steps", "step_ms" (wall, no
    profiler), "profiled_step_ms", "ops": [{"name", "ms_per_step", "share", "calls_per_step"}] (top
    `top` by self CPU time), "ops_per_step", "other_share"}.
    """
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(seed)
    model = build_model("dfei", cardinalities, num_domains).to(device)
    optimizer = build_optimizer(model)
    first = items[0][0]
    warm = [it for it in items if it[0] < first + warmup]
    timed = [it for it in items if it[0] >= first + warmup]
    steps = len({it[0] for it in timed})
    if mode == "fused":
        warm, timed = list(fused_steps(iter(warm))), list(fused_steps(iter(timed)))
    options = EpochOptions(compile=compile)

    def run(part):
        return train_epoch(model, optimizer, iter(part), device, num_domains, options=options)

    run(warm)
    t0 = time.perf_counter()
    run(timed)
    step_ms = (time.perf_counter() - t0) * 1e3 / steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        run(timed)
        profiled_ms = (time.perf_counter() - t0) * 1e3 / steps
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total_us = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    ops = [{"name": e.key, "ms_per_step": e.self_cpu_time_total / 1e3 / steps,
            "share": e.self_cpu_time_total / total_us, "calls_per_step": e.count / steps} for e in events[:top]]
    return {"mode": mode, "compile": compile, "steps": steps, "step_ms": step_ms, "profiled_step_ms": profiled_ms,
            "ops": ops, "ops_per_step": sum(e.count for e in events) / steps,
            "other_share": 1.0 - sum(o["share"] for o in ops)}


def profile_table(result: dict[str, Any]) -> str:
    """A Markdown table of profile_steps' result."""
    head = (f"{result['mode']}{' + compile' if result['compile'] else ''}: {result['step_ms']:.1f} ms/step "
            f"({result['profiled_step_ms']:.1f} under the profiler), {result['ops_per_step']:,.0f} ops/step")
    lines = [head, "", "| op | ms/step | share | calls/step |", "|---|---|---|---|"]
    for o in result["ops"]:
        lines.append(f"| {o['name']} | {o['ms_per_step']:.2f} | {o['share']:.1%} | {o['calls_per_step']:.0f} |")
    lines.append(f"| (the rest) | | {result['other_share']:.1%} | |")
    return "\n".join(lines)


def profile_report(data: str, modes: tuple[str, ...] = ("sequential", "fused"), compile: bool = False,
                   device: torch.device = torch.device("cpu"), log=print) -> dict[str, Any]:
    """The step profiles of BENCHMARKS.md: per mode, (a) 10 steps with every domain present (random
    ids, the dataset's cardinalities) and (b) 60 steps of the dataset from step 100 on (at the
    industrial profile's sizes: its largest domain alone, most of an epoch). Logs each table."""
    from dfei.bench.measure import load_split
    from dfei.data.dataset import ParquetDataset

    dataset = ParquetDataset(data)
    cards, domains = dataset.spec.cardinalities, dataset.spec.num_domains
    in_memory = load_split(dataset)
    regimes = {"all domains": (random_steps(cards, domains, 13), 3),
               "dataset steps 100-165": (dataset_steps(in_memory, 100, 65), 5)}
    out: dict[str, Any] = {}
    for regime, (items, warmup) in regimes.items():
        for mode in modes:
            r = profile_steps(items, cards, domains, mode, warmup=warmup, compile=compile, device=device)
            out[f"{regime}/{mode}"] = r
            log(f"### {regime}, {profile_table(r)}\n")
    return out
