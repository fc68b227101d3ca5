"""A finished sweep's outputs: results.csv, results.md, alpha_curve.png (paper Fig. 3) and best.json.

One row per trial: its alpha, k and seed, the other training settings, the best mean valid AUC and
its epoch, and the mean test AUC of that best epoch's weights. A trial that the scheduler (ASHA)
stopped never reached its own final evaluation: its test AUC is computed here from its latest
checkpoint, which carries the trial's best weights so far (best_model.pt).
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from dfei.atomic import atomic_write, write_json_atomic, write_text_atomic
from dfei.errors import RunFailedError, RunInterruptedError, UserError, find_user_error
from dfei.eval.plots import pyplot, save_figure
from dfei.config import TrainConfig

METRIC = "valid_avg_auc"
FIELDS = ["trial_id", "alpha", "k", "seed", "status", "best_valid_avg_auc", "best_epoch", "epochs_run",
          "test_avg_auc", "seconds", "model", "epochs", "patience", "lr", "shared_lr_scale", "batch_size",
          "embed_dim", "workers", "checkpoint", "error"]
FAILED = ("error", "no result")  # statuses of trials that are not candidates for best.json
INTERRUPTED = "interrupted"  # a trial a Ctrl-C stopped: unfinished, resumable, not a candidate either
NOT_STARTED = "not started"  # a trial Tune had created but not started when the sweep stopped
UNFINISHED = ("RUNNING", "PENDING", "PAUSED")  # Tune's statuses of a trial an interruption left behind
# settings a trial inherits but that do not define the model it trains
NOT_TRAINING_SETTINGS = ("out", "storage_path", "log_every_s", "max_failures")


def _history(result) -> list[dict]:
    df = result.metrics_dataframe
    if df is None or df.empty or METRIC not in df:
        return []
    if "final" in df:
        df = df[df["final"] != True]  # noqa: E712 (a column of True/NaN)
    return df.to_dict("records")


def collect_rows(grid, base: TrainConfig, to_uri: Callable[[str], str], log=print,
                 statuses: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One dict per trial of a Tune ResultGrid, sorted by best valid avg AUC (best first).
    `statuses` (trial_id -> Tune status) marks the trials an interruption left unfinished:
    status "interrupted", not scored."""
    rows = []
    for result in grid:
        cfg, last = result.config or {}, result.metrics or {}
        history = _history(result)
        trial_id = last.get("trial_id") or _trial_id(result.path)
        row = {"trial_id": trial_id, "alpha": cfg.get("alpha"),
               "k": cfg.get("k"), "seed": cfg.get("seed"), "model": base.model, "epochs": base.epochs,
               "patience": base.patience, "lr": base.lr, "shared_lr_scale": base.shared_lr_scale,
               "batch_size": base.batch_size, "embed_dim": base.embed_dim, "workers": base.num_workers,
               "seconds": last.get("time_total_s"), "best_valid_avg_auc": math.nan, "best_epoch": None,
               "epochs_run": len(history), "test_avg_auc": math.nan, "checkpoint": None}
        if last.get("final"):
            row.update(status="early-stopped" if last.get("stopped_early") else "completed",
                       best_valid_avg_auc=last[METRIC], best_epoch=last["best_epoch"],
                       epochs_run=last["epochs_run"], test_avg_auc=last["test_avg_auc"],
                       checkpoint=to_uri(last["checkpoint"]) if last["checkpoint"] else None)
        elif (statuses or {}).get(trial_id) in UNFINISHED and not result.error:  # resumable, not a result
            row["status"] = NOT_STARTED if statuses[trial_id] == "PENDING" and not history else INTERRUPTED
        elif history:
            _stopped_row(row, history, result, base, to_uri, log)
        else:
            row["status"] = "error" if result.error else "no result"
        if result.error:
            row.update(status="error", error=error_line(result.error))  # the trial's own error first
            log(f"[tune] trial {row['trial_id']} failed: {row['error']}")
        rows.append(row)
    return sorted(rows, key=lambda r: -_num(r["best_valid_avg_auc"]))


def _trial_id(path: str) -> str:
    """The trial id in a Tune trial folder's name (`run_trial_<id>_<index>_<params>_<date>`)."""
    name = os.path.basename(path.rstrip("/"))
    parts = name.split("_")
    return "_".join(parts[2:4]) if name.startswith("run_trial_") and len(parts) > 3 else name


def _stopped_row(row: dict, history: list[dict], result, base: TrainConfig, to_uri, log) -> None:
    """A trial that ended without its final report (the scheduler stopped it, or it failed): its
    best epoch so far, and the test AUC of that epoch's weights from its latest checkpoint."""
    from dfei.inference.dataset_scoring import evaluate_checkpoint

    best = max(range(len(history)), key=lambda i: history[i][METRIC])
    latest = history[-1].get("checkpoint_path")
    # ASHA's last rung is the last epoch: a trial it stops there has run every epoch
    stopped = "completed" if len(history) >= base.epochs else "stopped by scheduler"
    row.update(status="error" if result.error else stopped, best_valid_avg_auc=history[best][METRIC],
               best_epoch=best + 1)
    if latest and isinstance(latest, str):
        row["checkpoint"] = to_uri(latest)
        log(f"[tune] scoring the test split for trial {row['trial_id']} (it ended before its own final "
            "evaluation) from its latest checkpoint's best weights")
        try:
            row["test_avg_auc"] = evaluate_checkpoint(row["checkpoint"], base.data, ("test",))["test"]["avg_auc"]
        except UserError as err:  # e.g. a diverged trial's checkpoint: recorded, the report goes on
            row["error"] = str(err)[:400]
            log(f"[tune] trial {row['trial_id']}: its checkpoint cannot be scored: {row['error']}")


def error_line(err: BaseException) -> str:
    """One line for a trial's error: the user error inside Ray's wrappers if there is one (e.g.
    "training diverged at ..."), else the last line of the error's text."""
    user = find_user_error(err)
    text = str(user) if user is not None else (str(err).strip().splitlines() or [type(err).__name__])[-1]
    return text[:400]


def _num(value) -> float:
    return -math.inf if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def write_reports(rows: list[dict[str, Any]], base: TrainConfig, out: str, log=print, expected: int | None = None,
                  resume_command: str = "tune.py --out OUT --resume") -> dict[str, Any]:
    """results.csv and results.md always (they record failed and unfinished trials too);
    alpha_curve.png and best.json when every one of the `expected` trials (default: the rows)
    ended and at least one has a result.

    Raises, after writing the tables: RunInterruptedError when trials are unfinished or were never
    started (an interrupted sweep; best.json is not written, and a stale one is removed: a partial
    search must not pick a setting); RunFailedError when no trial has a result."""
    _write_csv(rows, os.path.join(out, "results.csv"))
    table = _markdown(rows)
    write_text_atomic(os.path.join(out, "results.md"), table)
    log("\n" + table)
    _refuse_unfinished(rows, len(rows) if expected is None else expected, out, resume_command, log)
    curve = alpha_curve(rows, out)
    best, group = best_trial(rows)
    failed = [r for r in rows if r["status"] in FAILED]
    if best is None:
        errors = "\n".join(f"  trial {r['trial_id']} (alpha={r['alpha']:g} k={r['k']} seed={r['seed']}): "
                           f"{r.get('error') or r['status']}" for r in rows)
        raise RunFailedError(f"all {len(rows)} trial(s) of the sweep failed; no best.json was written "
                             f"(results.csv in {out} lists them):\n{errors}")
    train_config = {k: v for k, v in base.to_dict().items() if k not in NOT_TRAINING_SETTINGS}
    train_config.update(alpha=float(best["alpha"]), k=int(best["k"]), seed=int(best["seed"]))
    write_json_atomic(os.path.join(out, "best.json"), {
        "trial_id": best["trial_id"], "alpha": best["alpha"], "k": best["k"], "seed": best["seed"],
        "best_valid_avg_auc": best["best_valid_avg_auc"], "best_epoch": best["best_epoch"],
        "test_avg_auc": best["test_avg_auc"], "checkpoint": best["checkpoint"],
        # the setting is chosen on its mean over seeds; the trial is its best seed
        "mean_valid_avg_auc": _mean_valid(group),
        "mean_test_avg_auc": _mean_or_nan([r["test_avg_auc"] for r in group]),
        "seeds": [r["seed"] for r in group],
        "failed_trials": len(failed),
        # what `train.py --config best.json` reads: the full training settings of the best trial
        "train_config": train_config})
    if failed:
        log(f"[tune] warning: {len(failed)} of {len(rows)} trial(s) failed and are left out of the pick: "
            + "; ".join(f"{r['trial_id']}: {r.get('error') or r['status']}" for r in failed))
    log(f"[tune] best: alpha={best['alpha']:g} k={best['k']}, mean valid avg AUC "
        f"{_mean_valid(group):.4f} over {len(group)} seed(s); its best trial "
        f"{best['trial_id']}: valid {best['best_valid_avg_auc']:.4f}, test {_fmt(best['test_avg_auc'])}; "
        f"retrain with: python pipelines/train.py --config {os.path.join(out, 'best.json')} --out RUN_DIR")
    written = ["results.csv", "results.md"] + ([os.path.basename(curve)] if curve else []) + ["best.json"]
    log(f"[tune] {len(rows) - len(failed)} of {len(rows)} trial(s) succeeded; wrote {out}/: {', '.join(written)}")
    return {"rows": rows, "best": best, "plot": curve, "failed": len(failed)}


def _refuse_unfinished(rows: list[dict[str, Any]], expected: int, out: str, resume_command: str, log) -> None:
    interrupted = [r for r in rows if r["status"] == INTERRUPTED]
    missing = expected - len(rows) + sum(r["status"] == NOT_STARTED for r in rows)
    if not interrupted and missing <= 0:
        return
    stale = os.path.join(out, "best.json")
    if os.path.exists(stale):
        os.remove(stale)
        log(f"[tune] removed {stale}: it does not come from a complete search")
    finished = expected - len(interrupted) - missing
    parts = ([f"{len(interrupted)} interrupted ({', '.join(r['trial_id'] for r in interrupted)})"] if interrupted
             else []) + ([f"{missing} not started"] if missing > 0 else [])
    raise RunInterruptedError(
        f"the sweep was stopped before it finished: {finished} of {expected} trial(s) finished, "
        f"{' and '.join(parts)}. results.csv and results.md in {out} list the finished ones; no best.json "
        f"was written (a partial search picks no setting). Continue with: {resume_command}")


def best_trial(rows: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The best (alpha, k) by mean best valid AUC over its seeds, and its best trial: with several
    seeds per point a single lucky seed does not pick the setting."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:  # a failed trial is left out even when it reported epochs before failing
        if r["status"] not in FAILED and _num(r["best_valid_avg_auc"]) > -math.inf:
            groups.setdefault((float(r["alpha"]), int(r["k"])), []).append(r)
    if not groups:
        return None, []
    group = max(groups.values(), key=_mean_valid)
    return max(group, key=lambda r: r["best_valid_avg_auc"]), group


def _mean_valid(group: list[dict[str, Any]]) -> float:
    return float(np.mean([r["best_valid_avg_auc"] for r in group]))


def _mean_or_nan(values) -> float:
    values = [v for v in values if _num(v) > -math.inf]
    return float(np.mean(values)) if values else math.nan


def _write_csv(rows: list[dict[str, Any]], path: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            for row in rows:
                w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in FIELDS})

    atomic_write(path, write)


def _by_alpha(rows: list[dict[str, Any]]) -> dict[Any, dict[float, dict[str, list[float]]]]:
    """k -> alpha -> {"valid": [...], "test": [...]} over the trials (seeds) at that point."""
    out: dict[Any, dict[float, dict[str, list[float]]]] = {}
    for r in rows:
        if _num(r["best_valid_avg_auc"]) == -math.inf:
            continue
        cell = out.setdefault(r["k"], {}).setdefault(float(r["alpha"]), {"valid": [], "test": []})
        cell["valid"].append(float(r["best_valid_avg_auc"]))
        if _num(r["test_avg_auc"]) > -math.inf:
            cell["test"].append(float(r["test_avg_auc"]))
    return out


def _markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["Trials sorted by best mean valid AUC (the objective); test AUC is that best epoch's.", "",
             "| rank | alpha | k | seed | best valid avg AUC | best epoch | epochs run | test avg AUC | status | trial |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {r['alpha']:g} | {r['k']} | {r['seed']} | {_fmt(r['best_valid_avg_auc'])} | "
                     f"{_fmt(r['best_epoch'])} | {r['epochs_run']} | {_fmt(r['test_avg_auc'])} | {r['status']} | "
                     f"{r['trial_id']} |")
    curves = _by_alpha(rows)
    if curves:
        lines += ["", "Mean over seeds per alpha (paper Fig. 3), valid / test avg AUC:", "",
                  "| alpha | " + " | ".join(f"k={k}" for k in sorted(curves)) + " |",
                  "|---|" + "---|" * len(curves)]
        for alpha in sorted({a for c in curves.values() for a in c}):
            cells = []
            for k in sorted(curves):
                cell = curves[k].get(alpha)
                cells.append("-" if cell is None else
                             f"{np.mean(cell['valid']):.4f} / {_fmt(float(np.mean(cell['test'])) if cell['test'] else None)}")
            lines.append(f"| {alpha:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def alpha_curve(rows: list[dict[str, Any]], out: str) -> str | None:
    """Mean valid (solid) and test (dashed) avg AUC against alpha, one colour per k (paper Fig. 3)."""
    curves = _by_alpha(rows)
    if not curves:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, k in enumerate(sorted(curves)):
        alphas = sorted(curves[k])
        color = f"C{i}"
        ax.plot(alphas, [np.mean(curves[k][a]["valid"]) for a in alphas], "o-", color=color, label=f"valid, k={k}")
        tested = [a for a in alphas if curves[k][a]["test"]]
        if tested:
            ax.plot(tested, [np.mean(curves[k][a]["test"]) for a in tested], "s--", color=color, label=f"test, k={k}")
    ax.set_xlabel("alpha (DFE decay)")
    ax.set_ylabel("avg AUC over domains")
    ax.set_title("Mean avg AUC vs alpha (paper Fig. 3)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, os.path.join(out, "alpha_curve.png"))
