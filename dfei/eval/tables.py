"""The paper's comparison tables from finished runs (Tables 3/5); the figures are in plots.py.

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

import numpy as np

from dfei.atomic import write_text_atomic
from dfei.eval.oracle import auc_interval
from dfei.eval.significance import best_model, finite_mean, paired_test, significance
from dfei.models.registry import ABLATIONS, BASELINES


def write_tables(values: dict[str, dict[str, list[float]]], domains: list[str], out: str,
                 facts: dict[str, dict[str, list]] | None = None, reference: dict[str, dict] | None = None) -> dict:
    """table.md, table.csv and runs.csv (module docstring) -> {"means", "significance", "oracle"}.
    `facts`: run_facts' per-run facts (the per-model summary); `reference`: {"test": , "train":
    , "valid": } dfei.eval.oracle.split_reference (the oracle row, the intervals)."""
    columns = domains + ["avg"]
    sig = significance(values, columns)
    means = {m: {c: finite_mean(values[m][c]) for c in columns} for m in values}
    baselines = [m for m in values if m in BASELINES]
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
        cells = [m, str(len(test)), _pm(test), f"{oracle['avg'] - finite_mean(test):.4f}" if oracle else "-",
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


# (a run with other training settings, such as dfei_no_lr_scale, is DFEI the model: a candidate)


def _valid_selection(values, facts) -> str:
    """The comparison a reader can trust: the DFEI configuration (any run whose model is DFEI or a
    <backbone>+dfei, whatever its settings; not the ablations without DFE/DFI) and the baseline
    (a run of a baseline model) each chosen by mean valid avg AUC (never test), then their test
    avg AUCs and a paired t-test."""
    def pick(names):
        names = [m for m in names if m in facts and facts[m]["valid_avg_auc"]]
        return max(names, key=lambda m: finite_mean(facts[m]["valid_avg_auc"])) if names else None

    def model_of(m: str) -> str:
        return facts.get(m, {}).get("model", m)

    dfei = pick([m for m in values if model_of(m) not in BASELINES + ABLATIONS])
    base = pick([m for m in values if model_of(m) in BASELINES])
    if dfei is None or base is None:
        return "Selection on valid: needs a baseline and a DFEI configuration."
    p, better = paired_test(values[dfei]["avg"], values[base]["avg"])
    diff = finite_mean(values[dfei]["avg"]) - finite_mean(values[base]["avg"])
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
            a = finite_mean(values[m][d])
            lo, hi = auc_interval(a, pos, neg)
            cells.append("-" if math.isnan(a) else f"{a:.3f} [{lo:.3f}, {hi:.3f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _csv(rows: list[list]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()
