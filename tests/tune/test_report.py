"""The sweep report: the best setting is chosen on its mean over seeds; the table and plot."""
from __future__ import annotations

import math

from dfei.tune.report import _markdown, alpha_curve, best_trial


def _row(alpha, seed, valid, test=0.6):
    return {"trial_id": f"t{alpha}-{seed}", "alpha": alpha, "k": 32, "seed": seed, "status": "completed",
            "best_valid_avg_auc": valid, "best_epoch": 1, "epochs_run": 1, "test_avg_auc": test}


def test_a_lucky_seed_does_not_pick_the_setting():
    rows = [_row(0.5, 0, 0.70), _row(0.5, 1, 0.60), _row(0.9, 0, 0.68), _row(0.9, 1, 0.67),
            _row(0.1, 0, math.nan)]  # a failed trial
    best, group = best_trial(rows)
    assert (best["alpha"], best["seed"]) == (0.9, 0) and [r["seed"] for r in group] == [0, 1]
    assert best_trial([_row(0.3, 0, math.nan)]) == (None, [])


def test_the_alpha_table_and_curve_average_over_seeds(tmp_path):
    rows = [_row(0.5, 0, 0.70, 0.61), _row(0.5, 1, 0.60, 0.63), _row(0.9, 0, 0.68, 0.62)]
    table = _markdown(rows)
    assert "| 0.5 | 0.6500 / 0.6200 |" in table and "| 0.9 | 0.6800 / 0.6200 |" in table
    path = alpha_curve(rows, str(tmp_path))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
