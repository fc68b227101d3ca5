"""A worker that raises mid-epoch: Ray Train restarts it from the last checkpoint, v included."""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import torch

from dfei.train.config import TrainConfig
from dfei.train.runner import run_training


def test_a_worker_failure_resumes_from_the_checkpoint_with_v_and_step_counter(ray_session, public_tiny, tmp_path):
    marker = tmp_path / "failed-once"
    cfg = TrainConfig(data=public_tiny, out=str(tmp_path / "run"), epochs=2, patience=2, seed=0, cpus_per_worker=1,
                      max_failures=1, fail_once_at={"epoch": 1, "step": 3, "marker": str(marker)})
    metrics = run_training(cfg)
    assert marker.exists()  # the failure really happened, in the second epoch
    resumed = metrics["resumed_from"]
    assert resumed is not None and resumed["epoch"] == 0
    (ckpt_dir,) = glob.glob(os.path.join(cfg.out, "ray_results", "*", "epoch_0000"))
    saved_state = json.load(open(os.path.join(ckpt_dir, "state.json")))
    saved_v = torch.load(os.path.join(ckpt_dir, "model.pt"), weights_only=True)["dfe.v"].numpy()
    # the restarted worker continued from the saved buffer and counter, not from scratch
    assert np.array_equal(np.asarray(resumed["v"], dtype=np.float32), saved_v)
    assert resumed["global_step"] == saved_state["global_step"] > 0
    assert metrics["global_step"] == 2 * saved_state["global_step"]  # epoch 2 ran once, in full
    assert metrics["epochs_run"] == 2 and len(metrics["history"]) == 2
    assert metrics["avg_auc"]["test"] > 0.5 and set(metrics["splits"]["test"]) == {f"B{i}" for i in range(1, 7)}
