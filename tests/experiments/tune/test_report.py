"""The sweep report: the best setting is chosen on its mean over seeds; the table and plot."""
from __future__ import annotations

import math

from dfei.experiments.tune.report import _markdown, alpha_curve, best_trial


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

    from dfei.config import TrainConfig
    from dfei.experiments.tune.report import METRIC, collect_rows

    def result(epochs_run: int):
        history = pd.DataFrame({METRIC: [0.6 + 0.01 * e for e in range(epochs_run)]})
        return SimpleNamespace(config={"alpha": 0.9, "k": 32, "seed": 0}, metrics={"trial_id": f"t{epochs_run}"},
                               metrics_dataframe=history, error=None, path=f"/x/t{epochs_run}")

    rows = collect_rows([result(3), result(1)], TrainConfig(data="/d", epochs=3), str, log=lambda *a: None)
    assert {r["trial_id"]: r["status"] for r in rows} == {"t3": "completed", "t1": "stopped by scheduler"}


def test_an_interrupted_sweep_writes_its_finished_trials_but_no_best_json(tmp_path):
    """Ctrl-C: a trial Tune left RUNNING is `interrupted`, not ranked; trials never started are
    counted; best.json is not written and a stale one is removed; RunInterruptedError (exit 130)."""
    from types import SimpleNamespace

    import pandas as pd
    import pytest

    from dfei.errors import RunInterruptedError
    from dfei.config import TrainConfig
    from dfei.experiments.tune.report import METRIC, collect_rows, write_reports

    def result(trial_id: str, final: bool):
        metrics = {"trial_id": trial_id, METRIC: 0.7, "final": True, "best_epoch": 1, "epochs_run": 1,
                   "stopped_early": False, "test_avg_auc": 0.6, "checkpoint": f"/s/{trial_id}/epoch_0001"} \
            if final else {"trial_id": trial_id}
        history = pd.DataFrame({METRIC: [0.65]})
        return SimpleNamespace(config={"alpha": 0.9, "k": 32, "seed": 0}, metrics=metrics,
                               metrics_dataframe=history, error=None, path=f"/s/{trial_id}")

    rows = collect_rows([result("done", True), result("cut", False)], TrainConfig(data="/d", epochs=3), str,
                        log=lambda *a: None, statuses={"done": "TERMINATED", "cut": "RUNNING"})
    assert {r["trial_id"]: r["status"] for r in rows} == {"done": "completed", "cut": "interrupted"}
    (tmp_path / "best.json").write_text("{}")  # from an earlier, complete version of this folder
    with pytest.raises(RunInterruptedError) as err:
        write_reports(rows, TrainConfig(data="/d"), str(tmp_path), log=lambda *a: None, expected=3,
                      resume_command="tune.py --out S --resume")
    assert "1 of 3 trial(s) finished, 1 interrupted (cut) and 1 not started" in str(err.value)
    assert "tune.py --out S --resume" in str(err.value)
    assert not (tmp_path / "best.json").exists() and (tmp_path / "results.csv").exists()
    assert "| interrupted | cut |" in (tmp_path / "results.md").read_text()
