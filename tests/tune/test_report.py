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


def test_a_trial_the_scheduler_ended_is_labelled_by_how_far_it_got():
    """ASHA's last rung is the last epoch: a trial it stopped there ran every epoch (completed);
    one it stopped earlier is `stopped by scheduler`. (Neither reached its own final report.)"""
    from types import SimpleNamespace

    import pandas as pd

    from dfei.train.config import TrainConfig
    from dfei.tune.report import METRIC, collect_rows

    def result(epochs_run: int):
        history = pd.DataFrame({METRIC: [0.6 + 0.01 * e for e in range(epochs_run)]})
        return SimpleNamespace(config={"alpha": 0.9, "k": 32, "seed": 0}, metrics={"trial_id": f"t{epochs_run}"},
                               metrics_dataframe=history, error=None, path=f"/x/t{epochs_run}")

    rows = collect_rows([result(3), result(1)], TrainConfig(data="/d", epochs=3), str, log=lambda *a: None)
    assert {r["trial_id"]: r["status"] for r in rows} == {"t3": "completed", "t1": "stopped by scheduler"}
