"""Train every model x seed with the one train loop, resumably, then write the comparison report."""
from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from dfei.data.dataset import ParquetDataset
from dfei.errors import ConfigError
from dfei.eval.comparison import ablation_plot, per_seed, tsne_plot, write_tables
from dfei.models import MODELS
from dfei.train.checkpoint import load_checkpoint
from dfei.train.config import TrainConfig
from dfei.train.runner import init_ray, preflight, run_training


def _train_ctr(dataset: ParquetDataset) -> list[float]:
    ctrs = []
    for partition in dataset.partitions["train"]:
        labels = np.concatenate([pq.read_table(p.path, columns=[dataset.spec.label], filesystem=dataset.fs)
                                 .column(0).to_numpy() for p in partition.parts])
        ctrs.append(float(labels.mean()) if len(labels) else float("nan"))
    return ctrs


def compare(base: TrainConfig, models: list[str], seeds: int, out: str, log=print) -> dict[str, Any]:
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown}; registered: {sorted(MODELS)}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    dataset = ParquetDataset(base.data)
    preflight(base, dataset, log)  # the embedding table is every model's: one check before Ray starts
    os.makedirs(out, exist_ok=True)
    init_ray(log)
    results: dict[str, dict[int, dict]] = {m: {} for m in models}
    total, t0 = len(models) * seeds, time.time()
    for i, (model, seed) in enumerate((m, s) for m in models for s in range(seeds)):
        run_dir = os.path.join(out, "runs", model, f"seed{seed}")
        path = os.path.join(run_dir, "metrics.json")
        if os.path.exists(path):  # resumable: a finished run is never trained again
            log(f"[compare] {i + 1}/{total} {model} seed {seed}: done before, skipped")
        else:
            log(f"[compare] {i + 1}/{total} {model} seed {seed}: training ({time.time() - t0:.0f}s elapsed)")
            run_training(base.replace(model=model, seed=seed, out=run_dir), log=lambda *a: None,
                         run_name=f"{model}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}")
        with open(path) as f:
            results[model][seed] = json.load(f)
        m = results[model][seed]
        log(f"[compare] {model} seed {seed}: test avg AUC {m['avg_auc']['test']:.4f}")
    domains = dataset.spec.domain_names
    values = per_seed(results, domains)
    report = write_tables(values, domains, out)
    ablation_plot(values, domains, out)
    dfei_runs = results.get("dfei")
    if dfei_runs and len(domains) < 2:
        log("[compare] no t-SNE figure of the domain features: the dataset has 1 domain")
    elif dfei_runs:
        ckpt = load_checkpoint(dfei_runs[min(dfei_runs)]["checkpoint"], optimizer=False)
        tsne_plot(ckpt["best_model"]["dfe.v"].numpy(), domains, _train_ctr(dataset), out)
    with open(os.path.join(out, "table.md")) as f:
        log("\n" + f.read())
    log(f"[compare] {total} runs in {time.time() - t0:.0f}s; report in {out}")
    return report
