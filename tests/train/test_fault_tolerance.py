"""Failure drills: a worker killed mid-epoch (SIGKILL of its own process, found by its pid from
inside the run) is restarted by Ray Train from the latest step checkpoint and the run ends exactly
as an uninterrupted one: same weights, same v, same metrics.

The kill comes `WAIT_S` after the step checkpoint was reported: Ray Train's controller registers a
report when it next polls the worker (every 0.5 s in tests), and a process that dies before that
takes the registration with it (the restart is then from an earlier checkpoint: correct, but not
this test's scenario).
"""
from __future__ import annotations

import glob
import json
import os
import signal
import time

import numpy as np
import torch

from dfei.config import TrainConfig
from dfei.train.driver import run_training

WAIT_S = 2.0


def killing_worker(epoch: int, step: int, marker: str):
    """train_loop_per_worker, except that rank 0 SIGKILLs its own process when (epoch, step)'s first
    batch arrives, the first time."""
    def train_loop_per_worker(config: dict) -> dict:
        import ray.train

        from dfei.train import worker as loop

        real_stream = loop.training_stream

        def stream(readers, at_epoch, *args, **kwargs):
            for item in real_stream(readers, at_epoch, *args, **kwargs):
                if (at_epoch, item[0]) == (epoch, step) and ray.train.get_context().get_world_rank() == 0 \
                        and not os.path.exists(marker):
                    with open(marker, "w") as f:
                        f.write(str(os.getpid()))
                    time.sleep(WAIT_S)
                    os.kill(os.getpid(), signal.SIGKILL)
                yield item

        loop.training_stream = stream
        return loop.train_loop_per_worker(config)

    return train_loop_per_worker


def _epoch_dirs(out: str) -> dict[str, str]:
    return {os.path.basename(p): p for p in glob.glob(os.path.join(out, "ray_results", "*", "epoch_*"))}


def _weights(ckpt_dir: str) -> dict[str, torch.Tensor]:
    return torch.load(os.path.join(ckpt_dir, "model.pt"), weights_only=True)


def test_a_killed_worker_resumes_inside_the_epoch_and_ends_as_an_uninterrupted_run(ray_session, public_tiny,
                                                                                    tmp_path):
    base = dict(data=public_tiny, epochs=2, patience=2, seed=0, cpus_per_worker=1, batch_size=128)
    plain = run_training(TrainConfig(**base, out=str(tmp_path / "plain")))
    marker = tmp_path / "killed-once"
    cfg = TrainConfig(**base, out=str(tmp_path / "killed"), max_failures=1, checkpoint_every_steps=4)
    killed = run_training(cfg, train_loop_per_worker=killing_worker(1, 6, str(marker)))

    assert marker.exists() and int(marker.read_text()) != os.getpid()  # it happened, in the worker's process
    assert killed["resumed_from"]["epoch"] == 2 and killed["resumed_from"]["step"] == 4  # epoch 2, after step 4
    # not redone, not skipped: the same updates, losses, AUCs and weights as the run that was never killed
    assert killed["global_step"] == plain["global_step"]
    for key in ("train_loss", "valid_avg_auc", "samples", "steps"):
        assert [h[key] for h in killed["history"]] == [h[key] for h in plain["history"]], key
    written = [json.load(open(os.path.join(out, "metrics.json"))) for out in (str(tmp_path / "plain"), cfg.out)]
    assert written[0]["splits"] == written[1]["splits"] and killed["avg_auc"] == plain["avg_auc"]  # (nan as null)
    assert killed["domain_feature_norms"] == plain["domain_feature_norms"]
    a, b = _weights(_epoch_dirs(plain_out := str(tmp_path / "plain"))["epoch_0002"]), _weights(
        _epoch_dirs(cfg.out)["epoch_0002"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), plain_out
    assert torch.equal(a["dfe.v"], b["dfe.v"])

    # what the step checkpoint held: the epoch, step, every rank's sums and every reader's position
    dirs = _epoch_dirs(cfg.out)
    steps = sorted(d for d in dirs if "_step_" in d)
    assert f"epoch_{killed['best_epoch']:04d}" in dirs and "epoch_0002" in dirs  # the best and the latest kept
    assert len(steps) <= cfg.patience + 1 - cfg.epochs  # step checkpoints only fill what the epochs leave
    saved = glob.glob(os.path.join(cfg.out, "ray_results", "*", "epoch_0002_step_*", "state.json"))
    for path in saved:
        mid = json.load(open(path))["mid_epoch"]
        assert mid["epoch"] == 1 and mid["world"] == 1 and len(mid["positions"][0]) == 6
        assert all(p["done"] or p["batches"] == mid["step"] for p in mid["positions"][0])
    assert np.isfinite(killed["avg_auc"]["test"])
