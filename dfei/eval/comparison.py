"""The paper's comparison report from finished runs (Tables 3/5, Fig. 2a, Fig. 4).

Input: metrics.json of every (model or variant, seed) run; optionally the test split's reference
(label counts and the oracle's AUC, dfei.eval.oracle). Output in `out`:
- runs.csv     per-seed test AUC per domain and avg (the numbers every test below uses)
- table.md/csv mean over seeds; rows = models, columns = domains + avg; best baseline per column
               underlined, best overall bold; DFEI's cells marked * / ** when a paired t-test over
               seeds against that column's best baseline gives p < 0.05 / 0.01 and DFEI is higher;
               an `oracle` row (the true click probability's AUC: the ceiling) when the data has one.
               Then per model: seeds, test avg AUC (mean +- sd), gap to the oracle, valid avg AUC
               at the selected epoch and the valid - test gap (early stopping on a noisy valid
               average shows as a large gap), best epoch, epochs run, train loss at the best epoch
               (vs the oracle's: below it means memorising), wall time per run, paired t-tests of
               the avg against the best baseline and against dfei (on the seeds both have).
               Then each domain's test AUC with its 95 % interval (Hanley-McNeil).
- curves.png   valid avg AUC and train loss per epoch, one colour per model, one line per seed
- ablation.png grouped bars per domain: DFEI, w/o DFI, w/o DFEI, w/o lr/D (when those runs exist)
- domain_features_tsne.png  t-SNE of the final v_d of a DFEI run, coloured by domain CTR vs median
"""
from __future__ import annotations

import csv
import io
import math
import os
from typing import Any

import numpy as np
from scipy.stats import ttest_rel

from dfei.atomic import atomic_write, write_text_atomic
from dfei.eval.oracle import auc_interval

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
    return p, _mean(x) > _mean(y)


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


def _mean(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else float("nan")


def write_tables(values: dict[str, dict[str, list[float]]], domains: list[str], out: str,
                 facts: dict[str, dict[str, list]] | None = None, reference: dict[str, dict] | None = None) -> dict:
    """table.md, table.csv and runs.csv (module docstring) -> {"means", "significance", "oracle"}.
    `facts`: run_facts' per-run facts (the per-model summary); `reference`: {"test": , "train":
    , "valid": } dfei.eval.oracle.split_reference (the oracle row, the intervals)."""
    columns = domains + ["avg"]
    sig = significance(values, columns)
    means = {m: {c: _mean(values[m][c]) for c in columns} for m in values}
    baselines = [m for m in values if m in BASELINE_NAMES]
    best_base = {c: best_model(baselines, {m: means[m][c] for m in baselines}) for c in columns} if baselines else {}
    best_all = {c: best_model(list(values), {m: means[m][c] for m in values}) for c in columns}
    seeds = {m: len(values[m]["avg"]) for m in values}
    test_ref = (reference or {}).get("test") or {}
    oracle = {d: test_ref[d]["auc"] for d in domains if "auc" in test_ref.get(d, {})} if test_ref else {}
    if len(oracle) == len(domains):
        defined = [a for a in oracle.values() if not math.isnan(a)]
        oracle["avg"] = float(np.mean(defined)) if defined else float("nan")
    else:
        oracle = {}
    seed_text = f"{min(seeds.values())}" + (f"-{max(seeds.values())}" if len(set(seeds.values())) > 1 else "")
    lines = [f"Test AUC, mean over {seed_text} seed(s). Underlined: best baseline per column; bold: best overall; "
             "* / **: DFEI better than that column's best baseline with paired t-test p < 0.05 / 0.01."
             + (" oracle: the AUC of the true click probability (the ceiling)." if oracle else ""), "",
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
    if oracle:
        lines.append("| *oracle* | " + " | ".join(f"*{oracle[c]:.4f}*" for c in columns) + " |")
    if sig:
        lines += ["", "| paired t-test (dfei vs best baseline) | " + " | ".join(columns) + " |",
                  "|---|" + "---|" * len(columns),
                  "| best baseline | " + " | ".join(sig[c]["baseline"] for c in columns) + " |",
                  "| p-value | " + " | ".join(f"{sig[c]['p']:.4f}" for c in columns) + " |"]
    if facts:
        lines += ["", *_summary_lines(values, facts, best_base.get("avg"), oracle, reference or {})]
    if test_ref:
        lines += ["", *_interval_lines(values, domains, test_ref)]
    write_text_atomic(os.path.join(out, "table.md"), "\n".join(lines) + "\n")
    table = [["model"] + columns] + [[m] + [f"{means[m][c]:.6f}" for c in columns] for m in values]
    if oracle:
        table.append(["oracle"] + [f"{oracle[c]:.6f}" for c in columns])
    if sig:
        table.append(["p_dfei_vs_best_baseline"] + [f"{sig[c]['p']:.6g}" for c in columns])
    write_text_atomic(os.path.join(out, "table.csv"), _csv(table))
    # the t-test inputs, unrounded enough to recompute it
    write_text_atomic(os.path.join(out, "runs.csv"), _csv([["model", "seed"] + columns] + [
        [m, i] + [f"{values[m][c][i]:.10f}" for c in columns] for m in values for i in range(seeds[m])]))
    return {"means": means, "significance": sig, "oracle": oracle}


def _pm(xs: list[float], digits: int = 4) -> str:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return "-"
    return f"{np.mean(xs):.{digits}f}" + (f" +- {np.std(xs, ddof=1):.{digits}f}" if len(xs) > 1 else "")


def _summary_lines(values, facts, best_base: str | None, oracle: dict, reference: dict) -> list[str]:
    train_ref, valid_ref = reference.get("train") or {}, reference.get("valid") or {}

    def weighted_logloss(ref: dict) -> float:
        rows = sum(d["n"] for d in ref.values())
        return sum(d["logloss"] * d["n"] for d in ref.values()) / rows if rows else float("nan")

    lines = ["Per model (mean +- sd over seeds). gap: oracle avg - test avg. valid-test: the selected epoch's "
             "valid avg AUC minus the test avg AUC. train loss: at the best epoch (with dropout). p: paired t-test "
             "of the test avg AUC on the seeds both have.", "",
             "| model | seeds | test avg AUC | gap to oracle | valid avg AUC | valid-test | best epoch | epochs run "
             "| train loss | valid logloss | wall s/run | p vs best baseline | p vs dfei |",
             "|---|" + "---|" * 12]
    for m in values:
        f = facts.get(m)
        if f is None:
            continue
        test = values[m]["avg"]
        n = min(len(test), len(f["valid_avg_auc"]))
        gap_vt = [v - t for v, t in zip(f["valid_avg_auc"][:n], test[:n])]
        p_base = paired_test(test, values[best_base]["avg"])[0] if best_base and m != best_base else float("nan")
        p_dfei = paired_test(test, values["dfei"]["avg"])[0] if "dfei" in values and m != "dfei" else float("nan")
        cells = [m, str(len(test)), _pm(test), f"{oracle['avg'] - _mean(test):.4f}" if oracle else "-",
                 _pm(f["valid_avg_auc"]), _pm(gap_vt), _pm(f["best_epoch"], 1), _pm(f["epochs_run"], 1),
                 _pm(f["train_loss"]), _pm(f["valid_logloss"]), _pm(f["wall_s"], 0),
                 "-" if math.isnan(p_base) else f"{p_base:.4f} ({best_base})",
                 "-" if math.isnan(p_dfei) else f"{p_dfei:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if oracle and train_ref and valid_ref:
        lines.append(f"| *oracle* | | {oracle['avg']:.4f} | 0 | | | | | {weighted_logloss(train_ref):.4f} | "
                     f"{weighted_logloss(valid_ref):.4f} | | | |")
        lines += ["", "A model whose train loss falls below the oracle's memorises its training rows: the oracle's "
                  "loss is the lowest expected loss of any model that has not seen the labels' noise."]
    return lines + ["", _valid_selection(values, facts)]


ABLATIONS = ("dfei_wo_dfi", "dfei_wo_dfei")  # DFEI without its modules: not candidates for "a DFEI"
# (a run with other training settings, such as dfei_no_lr_scale, is DFEI the model: a candidate)


def _valid_selection(values, facts) -> str:
    """The comparison a reader can trust: the DFEI configuration (any run whose model is DFEI or a
    <backbone>+dfei, whatever its settings; not the ablations without DFE/DFI) and the baseline
    (a run of a baseline model) each chosen by mean valid avg AUC (never test), then their test
    avg AUCs and a paired t-test."""
    def pick(names):
        names = [m for m in names if m in facts and facts[m]["valid_avg_auc"]]
        return max(names, key=lambda m: _mean(facts[m]["valid_avg_auc"])) if names else None

    def model_of(m: str) -> str:
        return facts.get(m, {}).get("model", m)

    dfei = pick([m for m in values if model_of(m) not in BASELINE_NAMES + ABLATIONS])
    base = pick([m for m in values if model_of(m) in BASELINE_NAMES])
    if dfei is None or base is None:
        return "Selection on valid: needs a baseline and a DFEI configuration."
    p, better = paired_test(values[dfei]["avg"], values[base]["avg"])
    diff = _mean(values[dfei]["avg"]) - _mean(values[base]["avg"])
    verdict = ("wins" if better and p < 0.05 else "loses" if not better and p < 0.05 else "is not told apart")
    return (f"Selection on valid (test never used to choose): the DFEI configuration with the best mean valid avg "
            f"AUC is **{dfei}**, the best baseline **{base}**; on test {dfei} {verdict} ({diff:+.4f} avg AUC, "
            f"paired t-test p = {p:.4f}).")


def _interval_lines(values, domains: list[str], test_ref: dict) -> list[str]:
    has_oracle = all("auc" in test_ref.get(d, {}) for d in domains)
    head = ["domain", "test rows", "positives"] + (["oracle"] if has_oracle else []) + list(values)
    lines = ["Test AUC per domain, mean over seeds, with the 95 % interval of one run's AUC from the size of this "
             "test set (Hanley & McNeil 1982): how far a domain's AUC can move by test-set noise alone. Models "
             "scored on the same rows are correlated, so overlapping intervals do not by themselves mean two "
             "models are not different (the paired t-tests above compare them).", "",
             "| " + " | ".join(head) + " |", "|---|" + "---|" * (len(head) - 1)]
    for d in domains:
        ref = test_ref.get(d, {})
        pos, neg = ref.get("positives", 0), ref.get("n", 0) - ref.get("positives", 0)
        cells = [d, f"{ref.get('n', 0):,}", f"{pos:,}"] + ([f"{ref['auc']:.4f}"] if has_oracle else [])
        for m in values:
            a = _mean(values[m][d])
            lo, hi = auc_interval(a, pos, neg)
            cells.append("-" if math.isnan(a) else f"{a:.3f} [{lo:.3f}, {hi:.3f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


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
    variants = [("dfei", "DFEI"), ("dfei_wo_dfi", "w/o DFI"), ("dfei_wo_dfei", "w/o DFEI"),
                ("dfei_no_lr_scale", "w/o lr/D")]
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


def curves_plot(facts: dict[str, dict[str, list]], out: str) -> str | None:
    """curves.png: valid avg AUC and train loss per epoch; one colour per model, one line per seed."""
    if not facts:
        return None
    plt = _pyplot()
    fig, (ax_auc, ax_loss) = plt.subplots(1, 2, figsize=(13, 5))
    colours = plt.get_cmap("tab20")
    for i, (m, f) in enumerate(facts.items()):
        colour = colours(i % 20)
        for j, (auc_curve, loss_curve) in enumerate(zip(f["curve_valid_auc"], f["curve_train_loss"])):
            epochs = np.arange(1, len(auc_curve) + 1)
            label = m if j == 0 else None
            ax_auc.plot(epochs, auc_curve, color=colour, lw=1, alpha=0.8, label=label)
            ax_loss.plot(epochs, loss_curve, color=colour, lw=1, alpha=0.8, label=label)
    ax_auc.set_xlabel("epoch")
    ax_auc.set_ylabel("valid avg AUC")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("train loss (with dropout)")
    ax_auc.set_title("Learning curves: valid avg AUC")
    ax_loss.set_title("Train loss")
    ax_loss.legend(fontsize=7, ncol=2)
    return save_figure(fig, os.path.join(out, "curves.png"))


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
