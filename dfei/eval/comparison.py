"""The paper's comparison report from finished runs (Tables 3/5, Fig. 2a, Fig. 4).

Input: metrics.json of every (model, seed) run. Output in `out`:
- runs.csv     per-seed test AUC per domain and avg (the numbers every test below uses)
- table.md/csv mean over seeds; rows = models, columns = domains + avg; best baseline per column
               underlined, best overall bold; DFEI's cells marked * / ** when a paired t-test over
               seeds against that column's best baseline gives p < 0.05 / 0.01 and DFEI is higher
- ablation.png grouped bars per domain: DFEI, w/o DFI, w/o DFEI (when those runs exist)
- domain_features_tsne.png  t-SNE of the final v_d of a DFEI run, coloured by domain CTR vs median
"""
from __future__ import annotations

import csv
import io
import math
import os

import numpy as np
from scipy.stats import ttest_rel

from dfei.atomic import atomic_write, write_text_atomic

BASELINE_NAMES = ("mlp", "mmoe", "ple", "aitm", "hmoe", "star", "pepnet", "hinet")


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
    baselines = [m for m in values if m in BASELINE_NAMES]
    out = {}
    if model not in values or not baselines:
        return out
    for col in columns:
        best = best_model(baselines, {m: _mean(values[m][col]) for m in baselines})
        if best is None:  # no baseline has an AUC in this column: nothing to test against
            out[col] = {"baseline": "-", "p": float("nan"), "mark": ""}
            continue
        a, b = np.asarray(values[model][col], float), np.asarray(values[best][col], float)
        p = float(ttest_rel(a, b).pvalue) if len(a) >= 2 and len(a) == len(b) and np.any(a != b) else float("nan")
        better = _mean(a) > _mean(b)
        mark = "**" if better and p < 0.01 else "*" if better and p < 0.05 else ""
        out[col] = {"baseline": best, "p": p, "mark": mark}
    return out


def best_model(models: list[str], means: dict[str, float]) -> str | None:
    """The model with the highest mean; a NaN mean (AUC undefined on every seed) never wins, ties go
    to the first listed, and a column where every mean is NaN has no best (None). The table's marks
    and the t-test both use this pick."""
    defined = [m for m in models if not math.isnan(means[m])]
    return max(defined, key=lambda m: means[m]) if defined else None


def _mean(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else float("nan")


def write_tables(values: dict[str, dict[str, list[float]]], domains: list[str], out: str) -> dict:
    columns = domains + ["avg"]
    sig = significance(values, columns)
    means = {m: {c: _mean(values[m][c]) for c in columns} for m in values}
    baselines = [m for m in values if m in BASELINE_NAMES]
    best_base = {c: best_model(baselines, {m: means[m][c] for m in baselines}) for c in columns} if baselines else {}
    best_all = {c: best_model(list(values), {m: means[m][c] for m in values}) for c in columns}
    seeds = len(next(iter(values.values()))["avg"])
    lines = [f"Test AUC, mean over {seeds} seed(s). Underlined: best baseline per column; bold: best overall; "
             "* / **: DFEI better than that column's best baseline with paired t-test p < 0.05 / 0.01.", "",
             "| Model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for m in values:
        cells = []
        for c in columns:
            text = f"{means[m][c]:.4f}"
            if m == "dfei" and c in sig:
                text += sig[c]["mark"]
            if best_base.get(c) == m:
                text = f"<u>{text}</u>"
            if best_all[c] == m:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if sig:
        lines += ["", "| paired t-test (dfei vs best baseline) | " + " | ".join(columns) + " |",
                  "|---|" + "---|" * len(columns),
                  "| best baseline | " + " | ".join(sig[c]["baseline"] for c in columns) + " |",
                  "| p-value | " + " | ".join(f"{sig[c]['p']:.4f}" for c in columns) + " |"]
    write_text_atomic(os.path.join(out, "table.md"), "\n".join(lines) + "\n")
    table = [["model"] + columns] + [[m] + [f"{means[m][c]:.6f}" for c in columns] for m in values]
    if sig:
        table.append(["p_dfei_vs_best_baseline"] + [f"{sig[c]['p']:.6g}" for c in columns])
    write_text_atomic(os.path.join(out, "table.csv"), _csv(table))
    # the t-test inputs, unrounded enough to recompute it
    write_text_atomic(os.path.join(out, "runs.csv"), _csv([["model", "seed"] + columns] + [
        [m, i] + [f"{values[m][c][i]:.10f}" for c in columns] for m in values for i in range(seeds)]))
    return {"means": means, "significance": sig}


def _csv(rows: list[list]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str) -> str:
    """Lay out, write atomically as PNG (120 dpi), close; returns `path`."""
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))
    _pyplot().close(fig)
    return path


def ablation_plot(values: dict[str, dict[str, list[float]]], domains: list[str], out: str) -> str | None:
    variants = [("dfei", "DFEI"), ("dfei_wo_dfi", "w/o DFI"), ("dfei_wo_dfei", "w/o DFEI")]
    present = [(m, label) for m, label in variants if m in values]
    if len(present) < 2:
        return None
    plt = _pyplot()
    cols = domains + ["avg"]
    x = np.arange(len(cols))
    width = 0.8 / len(present)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(cols)), 4))
    for i, (m, label) in enumerate(present):
        ax.bar(x + i * width, [_mean(values[m][c]) for c in cols], width, label=label)
    ax.set_xticks(x + width * (len(present) - 1) / 2, cols)
    lo = min(_mean(values[m][c]) for m, _ in present for c in cols)
    ax.set_ylim(max(0.0, lo - 0.05), None)
    ax.set_ylabel("test AUC")
    ax.set_title("Ablation of the DFEI modules (paper Fig. 2a)")
    ax.legend()
    return save_figure(fig, os.path.join(out, "ablation.png"))


def tsne_plot(v: np.ndarray, names: list[str], ctr: list[float], out: str, seed: int = 0) -> str | None:
    """Fig. 4: the final domain features, labelled, coloured by CTR below/above the median.
    None (no figure) for fewer than 2 domains: t-SNE needs more points than its perplexity (>= 1)."""
    if len(v) < 2:
        return None
    from sklearn.manifold import TSNE

    plt = _pyplot()

    perplexity = float(max(1, min(5, len(v) - 1)))
    xy = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="random").fit_transform(v)
    high = np.asarray(ctr) > np.median(ctr)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(xy[~high, 0], xy[~high, 1], c="tab:blue", label="CTR <= median")
    ax.scatter(xy[high, 0], xy[high, 1], c="tab:red", label="CTR > median")
    for (px, py), name in zip(xy, names):
        ax.annotate(name, (px, py), textcoords="offset points", xytext=(4, 4))
    ax.set_title("t-SNE of the final domain features v_d (paper Fig. 4)")
    ax.legend()
    return save_figure(fig, os.path.join(out, "domain_features_tsne.png"))
