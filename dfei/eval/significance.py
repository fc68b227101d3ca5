"""Per-seed test AUCs of finished runs and the paired t-tests the comparison report marks (scipy's
ttest_rel over seeds).

Input: metrics.json of every (model or variant, seed) run, as {model: {seed: metrics}}.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import ttest_rel

from dfei.models.registry import BASELINES


def per_seed(results: dict[str, dict[int, dict]], domains: list[str]) -> dict[str, dict[str, list[float]]]:
    """model -> column (domain names + "avg") -> test AUC per seed (seed order)."""
    out = {}
    for model, by_seed in results.items():
        seeds = sorted(by_seed)
        cols = {d: [by_seed[s]["splits"]["test"][d]["auc"] for s in seeds] for d in domains}
        cols["avg"] = [by_seed[s]["avg_auc"]["test"] for s in seeds]
        out[model] = cols
    return out


def significance(values: dict[str, dict[str, list[float]]], columns: list[str], model: str = "dfei") -> dict:
    """column -> {"baseline", "p", "mark"} for `model` against the column's best baseline."""
    baselines = [m for m in values if m in BASELINES]
    out = {}
    if model not in values or not baselines:
        return out
    for col in columns:
        best = best_model(baselines, {m: finite_mean(values[m][col]) for m in baselines})
        if best is None:  # no baseline has an AUC in this column: nothing to test against
            out[col] = {"baseline": "-", "p": float("nan"), "mark": ""}
            continue
        p, better = paired_test(values[model][col], values[best][col])
        mark = "**" if better and p < 0.01 else "*" if better and p < 0.05 else ""
        out[col] = {"baseline": best, "p": p, "mark": mark}
    return out


def paired_test(a: list[float], b: list[float]) -> tuple[float, bool]:
    """(two-sided paired t-test p over the seeds both have, mean(a) > mean(b) on those seeds).
    Seeds are 0..n-1 in every run set, so the common seeds are the shorter list's. p is NaN with
    fewer than 2 pairs or the same difference on every seed (scipy.stats.ttest_rel)."""
    n = min(len(a), len(b))
    x, y = np.asarray(a[:n], float), np.asarray(b[:n], float)
    defined = n >= 2 and np.std(x - y) > 0  # equal differences on every seed: t is undefined, not infinite
    p = float(ttest_rel(x, y).pvalue) if defined else float("nan")
    return p, finite_mean(x) > finite_mean(y)


def run_facts(results: dict[str, dict[int, dict]]) -> dict[str, dict[str, list[float]]]:
    """model -> fact -> per seed (seed order): valid_avg_auc (at the selected epoch), best_epoch,
    epochs_run, train_loss (at the best epoch), valid_logloss (row-weighted over domains), wall_s
    (the run's total), and the learning curve (curve_valid_auc, curve_train_loss: lists per seed);
    "model": the registry model the runs trained (a variant's name maps to it)."""
    out = {}
    for model, by_seed in results.items():
        facts: dict[str, Any] = {k: [] for k in ("valid_avg_auc", "best_epoch", "epochs_run", "train_loss",
                                                  "valid_logloss", "wall_s", "curve_valid_auc", "curve_train_loss")}
        facts["model"] = next((m["config"]["model"] for m in by_seed.values() if "config" in m), model)
        for s in sorted(by_seed):
            m = by_seed[s]
            history = m.get("history", [])
            best = next((h for h in history if h["epoch"] == m["best_epoch"]), {})
            valid = m["splits"]["valid"]
            rows = sum(d["n"] for d in valid.values())
            facts["valid_avg_auc"].append(m["avg_auc"]["valid"])
            facts["best_epoch"].append(m["best_epoch"])
            facts["epochs_run"].append(m["epochs_run"])
            facts["train_loss"].append(best.get("train_loss", float("nan")))
            facts["valid_logloss"].append(sum(d["logloss"] * d["n"] for d in valid.values()) / max(rows, 1))
            facts["wall_s"].append(m.get("timings", {}).get("total_s", float("nan")))
            facts["curve_valid_auc"].append([h["valid_avg_auc"] for h in history])
            facts["curve_train_loss"].append([h["train_loss"] for h in history])
        out[model] = facts
    return out


def best_model(models: list[str], means: dict[str, float]) -> str | None:
    """The model with the highest mean; a NaN mean (AUC undefined on every seed) never wins, ties go
    to the first listed, and a column where every mean is NaN has no best (None). The table's marks
    and the t-test both use this pick."""
    defined = [m for m in models if not math.isnan(means[m])]
    return max(defined, key=lambda m: means[m]) if defined else None


def finite_mean(values) -> float:
    """Mean of the values that are numbers (None and NaN left out); NaN when none is."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else float("nan")
