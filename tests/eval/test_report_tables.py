"""The comparison report's picks: a NaN mean (an AUC undefined on every seed) never wins a column,
and the table's best baseline is the one the t-test compares against; Fig. 4 on one domain is
skipped instead of failing at the end of a comparison."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dfei.eval.plots import tsne_plot
from dfei.eval.significance import significance
from dfei.eval.tables import write_tables


def _values() -> dict:
    # B2: mlp's AUC is undefined on every seed (NaN mean); star is the real best baseline there
    nan = float("nan")
    return {"mlp": {"B1": [0.60, 0.61], "B2": [nan, nan], "avg": [0.60, 0.61]},
            "star": {"B1": [0.70, 0.71], "B2": [0.65, 0.66], "avg": [0.68, 0.69]},
            "dfei": {"B1": [0.72, 0.73], "B2": [0.60, 0.62], "avg": [0.66, 0.67]}}


def test_a_nan_mean_never_wins_and_the_table_marks_the_t_tests_baseline(tmp_path):
    values = _values()
    sig = significance(values, ["B1", "B2", "avg"])
    assert sig["B2"]["baseline"] == "star" and not math.isnan(sig["B2"]["p"])
    write_tables(values, ["B1", "B2"], str(tmp_path))
    rows = {line.split("|")[1].strip(): line for line in (tmp_path / "table.md").read_text().splitlines()
            if line.startswith("| mlp") or line.startswith("| star") or line.startswith("| dfei")}
    b2 = {m: rows[m].split("|")[3] for m in rows}  # the B2 cell of each model
    assert "<u>" in b2["star"] and "<u>" not in b2["mlp"]  # best baseline: the t-test's, not the NaN row
    assert "**" in b2["star"] and "**" not in b2["mlp"]  # best overall
    assert "| best baseline | star | star | star |" in (tmp_path / "table.md").read_text()


def test_the_domain_feature_figure_needs_two_domains(tmp_path):
    assert tsne_plot(np.ones((1, 32), dtype=np.float32), ["A1"], [0.1], str(tmp_path)) is None
    path = tsne_plot(np.random.default_rng(0).random((2, 32)), ["A1", "A2"], [0.1, 0.2], str(tmp_path))
    assert path and open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_column_where_every_mean_is_nan_has_no_best(tmp_path):
    nan = float("nan")
    values = {"mlp": {"B1": [nan, nan], "avg": [0.6, 0.61]}, "dfei": {"B1": [nan, nan], "avg": [0.66, 0.67]}}
    write_tables(values, ["B1"], str(tmp_path))
    table = (tmp_path / "table.md").read_text()
    mlp = next(line for line in table.splitlines() if line.startswith("| mlp"))
    assert mlp.split("|")[2].strip() == "nan"  # not underlined nor bold as a "best"
    assert "| best baseline | - | mlp |" in table


def _facts(valid: dict[str, list[float]]) -> dict:
    keys = ("best_epoch", "epochs_run", "train_loss", "valid_logloss", "wall_s")
    return {m: {"valid_avg_auc": v, **{k: [1.0] * len(v) for k in keys},
                "curve_valid_auc": [[0.5, x] for x in v], "curve_train_loss": [[0.6, 0.4]] * len(v)}
            for m, v in valid.items()}


def test_the_selection_uses_valid_only_and_pairs_tests_on_the_common_seeds(tmp_path):
    from scipy.stats import ttest_rel

    from dfei.eval.plots import curves_plot
    from dfei.eval.significance import paired_test

    values = {"mlp": {"B1": [0.6, 0.61, 0.62], "avg": [0.60, 0.61, 0.62]},
              "star": {"B1": [0.7, 0.71, 0.69], "avg": [0.70, 0.71, 0.69]},
              "dfei": {"B1": [0.72, 0.74], "avg": [0.72, 0.74]},  # best on test, not on valid
              "dfei_x": {"B1": [0.705, 0.715, 0.70], "avg": [0.705, 0.715, 0.70]},
              "dfei_wo_dfi": {"B1": [0.9, 0.9, 0.9], "avg": [0.9, 0.91, 0.9]}}  # an ablation: never a candidate
    facts = _facts({"mlp": [0.65] * 3, "star": [0.69] * 3, "dfei": [0.70] * 2, "dfei_x": [0.71] * 3,
                    "dfei_wo_dfi": [0.99] * 3})
    write_tables(values, ["B1"], str(tmp_path), facts=facts)
    table = (tmp_path / "table.md").read_text()
    p = ttest_rel([0.705, 0.715, 0.70], [0.70, 0.71, 0.69]).pvalue
    assert (f"the best mean valid avg AUC is **dfei_x**, the best baseline **star**; on test dfei_x is not told apart "
            f"(+0.0067 avg AUC, paired t-test p = {p:.4f})") in table
    assert paired_test([0.72, 0.74], [0.70, 0.71, 0.69]) == (pytest.approx(ttest_rel([0.72, 0.74], [0.70, 0.71]).pvalue),
                                                             True)
    dfei_line = next(line for line in table.splitlines() if line.startswith("| dfei | 2 |"))
    assert f"{ttest_rel([0.72, 0.74], [0.70, 0.71]).pvalue:.4f} (star)" in dfei_line
    assert curves_plot(facts, str(tmp_path)).endswith("curves.png")
