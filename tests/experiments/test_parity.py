"""parity.py's variants and its paired t-test over seeds."""
from __future__ import annotations

import json
import os

import pytest
from scipy.stats import ttest_rel

from dfei.experiments.parity import parse_variant, run_parity
from dfei.config import TrainConfig


def test_variants_parse_and_bad_ones_are_named():
    assert parse_variant("mode=sequential+embedding_update=dense") == {"mode": "sequential", "embedding_update": "dense"}
    with pytest.raises(ValueError, match="mode fused needs embedding_update lazy"):
        parse_variant("mode=fused+embedding_update=dense")
    with pytest.raises(ValueError, match="expected key=value"):
        parse_variant("fused")
    with pytest.raises(ValueError, match="unknown key"):
        parse_variant("mood=fused")
    with pytest.raises(ValueError, match="mode = 'parallel': Input should be 'sequential' or 'fused'"):
        parse_variant("mode=parallel")
    with pytest.raises(ValueError, match="batch_size is set twice"):  # not a silent last-one-wins
        parse_variant("batch_size=256+batch-size=512")


def test_the_report_pairs_seeds_and_tests_against_the_reference(tmp_path):
    # finished runs are read, not retrained: write their metrics.json as training would
    aucs = {"mode=sequential": [0.70, 0.72, 0.71], "mode=fused": [0.705, 0.718, 0.716]}
    for variant, values in aucs.items():
        for seed, value in enumerate(values):
            run = tmp_path / "runs" / variant.replace("=", "-") / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "metrics.json").write_text(json.dumps({
                "avg_auc": {"test": value}, "timings": {"train_samples_per_s": 1000.0 * (seed + 1)},
                "best_epoch": 1, "epochs_run": 1}))
    logs: list[str] = []
    report = run_parity(TrainConfig(data="unused"), list(aucs), 3, str(tmp_path), log=logs.append)
    fused = next(r for r in report["rows"] if r["variant"] == "mode=fused")
    assert fused["mean_diff_vs_ref"] == pytest.approx(sum(aucs["mode=fused"]) / 3 - sum(aucs["mode=sequential"]) / 3)
    assert fused["p_vs_ref"] == pytest.approx(ttest_rel(aucs["mode=fused"], aucs["mode=sequential"]).pvalue)
    assert "| mode=fused | 0.7130 |" in open(os.path.join(tmp_path, "parity.md")).read()
    saved = json.load(open(os.path.join(tmp_path, "parity.json")))
    assert saved["seeds"] == 3 and "out" not in saved["base"] and saved["base"]["data"].endswith("unused")
    assert not any("ray" in line.lower() for line in logs)  # every run was finished: Ray is not started


def test_variants_are_checked_on_the_base_config_before_any_run(tmp_path):
    base = TrainConfig(data="unused", embedding_update="dense")
    with pytest.raises(ValueError, match="variant 'mode=fused'.*mode fused needs embedding_update lazy"):
        run_parity(base, ["mode=sequential", "mode=fused"], 2, str(tmp_path / "p"))
    with pytest.raises(ValueError, match="--seeds must be >= 2"):
        run_parity(TrainConfig(data="unused"), ["mode=sequential", "mode=fused"], 1, str(tmp_path / "p"))
    assert not (tmp_path / "p").exists()
