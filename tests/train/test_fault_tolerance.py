"""A worker that fails mid-epoch: Ray Train restarts it from the last checkpoint, v included.

The failure is injected from the test side: a wrapper of the production worker function raises
once, at a chosen step. (Not os._exit: a process that dies within Ray Train's poll interval of its
last report can take that report's checkpoint with it, and the restart then begins from an
earlier one: correct, but not this test's deterministic scenario.)
"""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import torch

from dfei.train.config import TrainConfig
from dfei.train.runner import run_training


def failing_worker(epoch: int, step: int, marker: str):
    """train_loop_per_worker, except that rank 0 raises at (epoch, step) the first time."""
    def train_loop_per_worker(config: dict) -> dict:
        import ray.train

        from dfei.train import loop

        real_stream = loop.training_stream

        def stream(readers, at_epoch, *args, **kwargs):
            inner = real_stream(readers, at_epoch, *args, **kwargs)
            for item in inner:
                if (at_epoch, item[0]) == (epoch, step) and ray.train.get_context().get_world_rank() == 0 \
                        and not os.path.exists(marker):
                    with open(marker, "w") as f:
                        f.write(str(os.getpid()))
                    raise RuntimeError(f"injected failure at epoch {epoch + 1}, step {step}")
                yield item

        loop.training_stream = stream
        return loop.train_loop_per_worker(config)

    return train_loop_per_worker


def test_a_worker_failure_resumes_from_the_checkpoint_with_v_and_step_counter(ray_session, public_tiny, tmp_path):
    marker = tmp_path / "failed-once"
    cfg = TrainConfig(data=public_tiny, out=str(tmp_path / "run"), epochs=2, patience=2, seed=0, cpus_per_worker=1,
                      max_failures=1)
    metrics = run_training(cfg, train_loop_per_worker=failing_worker(1, 3, str(marker)))
    assert marker.exists()  # the failure really happened, in the second epoch
    assert int(marker.read_text()) != os.getpid()  # in the worker's process, not this one
    resumed = metrics["resumed_from"]
    assert resumed is not None and resumed["epoch"] == 1  # resumed after the first epoch
    (ckpt_dir,) = glob.glob(os.path.join(cfg.out, "ray_results", "*", "epoch_0001"))
    saved_state = json.load(open(os.path.join(ckpt_dir, "state.json")))
    saved_v = torch.load(os.path.join(ckpt_dir, "model.pt"), weights_only=True)["dfe.v"].numpy()
    # the restarted worker continued from the saved buffer and counter, not from scratch
    assert np.array_equal(np.asarray(resumed["v"], dtype=np.float32), saved_v)
    assert resumed["global_step"] == saved_state["global_step"] > 0
    assert metrics["global_step"] == 2 * saved_state["global_step"]  # epoch 2 ran once, in full
    assert metrics["epochs_run"] == 2 and [h["epoch"] for h in metrics["history"]] == [1, 2]  # counted from 1
    assert metrics["checkpoint"].endswith(f"epoch_{metrics['best_epoch']:04d}")  # "best epoch N" is epoch_000N
    assert metrics["avg_auc"]["test"] > 0.5 and set(metrics["splits"]["test"]) == {f"B{i}" for i in range(1, 7)}
