"""Do two training settings reach the same quality? Test avg AUC per seed, paired t-test.

Used to decide whether a faster setting may be recommended (fused vs sequential Algorithm 1, lazy
vs dense embedding updates): every variant is trained with the same data and seeds by train.py's
own run_training; a variant "matches" the reference when the mean difference is small and the
paired t-test over seeds finds no significant difference.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import yaml
from scipy.stats import ttest_rel

from dfei.atomic import write_json_atomic, write_text_atomic
from dfei.errors import ConfigError
from dfei.config import TrainConfig


def parse_variant(text: str) -> dict[str, Any]:
    """`mode=fused` or `mode=fused+embedding_update=dense` -> TrainConfig overrides (checked)."""
    overrides: dict[str, Any] = {}
    for part in text.split("+"):
        if "=" not in part:
            raise ConfigError(f"variant {text!r}: expected key=value[+key=value], got {part!r}")
        key, value = part.split("=", 1)
        key = key.strip().replace("-", "_")
        if key in overrides:
            raise ConfigError(f"variant {text!r}: {key} is set twice; keep one")
        overrides[key] = yaml.safe_load(value.strip())  # typed as in a --config file: 0.5, true, [64, 32]
    TrainConfig.from_dict({"data": "x", **overrides}, where=f"variant {text!r}")  # unknown keys / bad values fail here
    return overrides


def run_parity(base: TrainConfig, variants: list[str], seeds: int, out: str, log=print) -> dict[str, Any]:
    from dfei.data.dataset import ParquetDataset
    from dfei.ray_runtime import init_ray
    from dfei.train.driver import preflight, run_training

    if len(variants) < 2:
        raise ConfigError(f"--variants needs at least two settings, got {variants}")
    if seeds < 2:
        raise ConfigError(f"--seeds must be >= 2 for a paired t-test, got {seeds}")
    parsed = {v: parse_variant(v) for v in variants}
    configs = {}
    for v, overrides in parsed.items():  # each variant on this base (e.g. mode=fused on a dense base): before any run
        try:
            configs[v] = TrainConfig.from_dict({**base.to_dict(), **overrides}, where=f"variant {v!r}")
        except ValueError as err:
            raise ConfigError(f"variant {v!r} on the base config: {err}") from None
    os.makedirs(out, exist_ok=True)
    ray_started = False
    auc: dict[str, list[float]] = {v: [] for v in variants}
    speed: dict[str, list[float]] = {v: [] for v in variants}
    for seed in range(seeds):
        for v, overrides in parsed.items():
            run_dir = os.path.join(out, "runs", v.replace("=", "-").replace("+", "_"), f"seed{seed}")
            path = os.path.join(run_dir, "metrics.json")
            if not os.path.exists(path):  # resumable
                if not ray_started:  # every variant fits this machine (embedded Ray), a valid split to select on
                    dataset = ParquetDataset(base.data)
                    for variant in configs.values():
                        preflight(variant, dataset, log)
                    init_ray(log)
                    ray_started = True
                cfg = TrainConfig.from_dict({**base.to_dict(), **overrides, "seed": seed, "out": run_dir})
                run_training(cfg, log=lambda *a: None)
            with open(path) as f:
                m = json.load(f)
            auc[v].append(m["avg_auc"]["test"])
            speed[v].append(m["timings"]["train_samples_per_s"])
            log(f"[parity] seed {seed} {v}: test avg AUC {auc[v][-1]:.4f}, {speed[v][-1]:,.0f} samples/s, "
                f"best epoch {m['best_epoch']} of {m['epochs_run']}")
    ref = variants[0]
    rows = []
    for v in variants:
        diff = np.asarray(auc[v]) - np.asarray(auc[ref])
        p = float(ttest_rel(auc[v], auc[ref]).pvalue) if v != ref and np.any(diff) else math.nan
        rows.append({"variant": v, "test_avg_auc": auc[v], "mean": float(np.mean(auc[v])),
                     "sd": float(np.std(auc[v], ddof=1)),
                     "mean_diff_vs_ref": float(diff.mean()), "p_vs_ref": p,
                     "samples_per_s": float(np.mean(speed[v]))})
    lines = [f"Test avg AUC over {seeds} seed(s); difference and paired t-test against {ref}.", "",
             "| variant | mean | sd | diff vs ref | p | samples/s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['mean']:.4f} | {r['sd']:.4f} | {r['mean_diff_vs_ref']:+.4f} | "
              f"{r['p_vs_ref']:.3f} | {r['samples_per_s']:,.0f} |" for r in rows]
    table = "\n".join(lines)
    write_json_atomic(os.path.join(out, "parity.json"), {
        # the settings every variant shares; each run's own out and storage are under runs/ here
        "base": {k: v for k, v in base.to_dict().items() if k not in ("out", "storage_path")},
        "seeds": seeds, "variants": rows})
    write_text_atomic(os.path.join(out, "parity.md"), table + "\n")
    log("\n" + table)
    return {"rows": rows, "table": table}
