"""Mid-epoch checkpoints without Ray: the checkpoint format's versions, the world-size check, the
retention score, and the periodic progress line (its ETA counts batches, not steps)."""
from __future__ import annotations

import pytest

from dfei.errors import CheckpointError
from dfei.train.checkpoint import CHECKPOINT_FORMAT, TrainState, is_epoch_report
from dfei.train.worker import mid_epoch_record, progress_line

OLD_STATE = {"epoch": 2, "global_step": 300, "best_auc": 0.71, "best_epoch": 1, "bad_epochs": 1, "history": [],
             "config": {}, "dataset": {}}  # state.json as dfei wrote it before mid-epoch checkpoints (format 1)


def test_a_previous_versions_checkpoint_resumes_at_its_epoch_end_and_a_newer_one_is_refused():
    state = TrainState.from_json(OLD_STATE)
    assert (state.epoch, state.global_step) == (2, 300) and mid_epoch_record(OLD_STATE, 4) is None
    with pytest.raises(CheckpointError, match=r"checkpoint format 3 is newer than this dfei reads \(2\)"):
        TrainState.from_json({**OLD_STATE, "format": CHECKPOINT_FORMAT + 1})
    with pytest.raises(CheckpointError, match=r"state.json: not a dfei training state: field\(s\) \['best_auc'\]"):
        TrainState.from_json({k: v for k, v in OLD_STATE.items() if k != "best_auc"})


def test_a_step_checkpoint_resumes_only_on_the_number_of_workers_that_wrote_it():
    mid = {"epoch": 0, "step": 40, "world": 2, "progress": [{}, {}], "positions": [[], []]}
    assert mid_epoch_record({**OLD_STATE, "mid_epoch": mid}, 2) is mid
    with pytest.raises(CheckpointError, match="written inside epoch 1 by 2 worker.*needs the same number, not 1"):
        mid_epoch_record({**OLD_STATE, "mid_epoch": mid}, 1)
    assert not is_epoch_report({"epoch": 0, "mid_epoch": True}) and is_epoch_report({"epoch": 0})


def test_the_eta_is_by_batches_and_the_line_names_the_active_domains():
    # 100 of 1,000 batches in 20 s: 900 batches to go at 5 batches/s
    p = {"step": 9, "batches": 100, "samples": 51_200, "seconds": 20.0, "loss": 0.41234}
    line = progress_line(0, 500, 1_000, 3, 21, p)
    assert line == ("[train] epoch 1 step 10/500 (10% of batches, ETA 3m00s), 3/21 domains active, "
                    "2,560 samples/s/worker, loss 0.4123")
    assert "ETA 2h46m" in progress_line(0, 500, 1_000_000, 1, 21, {**p, "batches": 2_000})  # 9,980 s
    assert "\n" not in line
