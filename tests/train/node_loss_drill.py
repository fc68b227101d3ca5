"""A node-loss drill, run by tests/train/test_node_loss.py in its own process (a driver talks to one
Ray cluster at a time; the test session's is another): a two-node cluster on this machine
(ray.cluster_utils.Cluster, as Ray tests itself), one training worker per node, the second node
removed once a step checkpoint is registered and added back; the run must resume from that
checkpoint and finish with v identical on both ranks.

    python tests/train/node_loss_drill.py DATA OUT RESULT.json
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

STEP_DELAY_S = 0.03  # per batch: the tiny epoch must outlast the node's removal
REGISTER_S = 1.5  # after the step checkpoint is on storage: the controller has polled it by then


def slow_worker(config: dict) -> dict:
    """train_loop_per_worker, slowed down per batch (defined here: pickled by value with the run)."""
    from dfei.train import worker as loop

    real_stream = loop.training_stream

    def stream(*args, **kwargs):
        for item in real_stream(*args, **kwargs):
            time.sleep(STEP_DELAY_S)
            yield item

    loop.training_stream = stream
    return loop.train_loop_per_worker(config)


def main(data: str, out: str, result_path: str) -> None:
    os.environ.pop("RAY_ADDRESS", None)
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.5"  # inherited by the nodes: reports register sooner
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # a temp dir of its own: the cluster's address file must not make other drivers on this machine join it
    # (short: Ray's socket paths under it must stay within 107 characters)
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="dfei-drill-")
    import ray
    from ray.cluster_utils import Cluster

    from dfei.config import TrainConfig
    from dfei.train.driver import run_training

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    second = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    cfg = TrainConfig(data=data, out=out, num_workers=2, cpus_per_worker=1, epochs=1, patience=1, seed=0,
                      batch_size=64, checkpoint_every_steps=3, max_failures=1)
    # the run in a thread: Cluster.add_node installs signal handlers, which only the main thread may
    run: dict = {}

    def train() -> None:
        try:
            run["metrics"] = run_training(cfg, train_loop_per_worker=slow_worker)
        except BaseException as err:  # noqa: BLE001 (reported below)
            run["error"] = repr(err)

    t0 = time.time()
    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    events: dict = {}
    try:
        while thread.is_alive() and not glob.glob(os.path.join(out, "ray_results", "*", "epoch_*_step_*", "state.json")):
            time.sleep(0.1)
        time.sleep(REGISTER_S)
        if thread.is_alive():
            events["removed_unix"] = time.time()
            cluster.remove_node(second)
            cluster.add_node(num_cpus=1)
            events["added_unix"] = time.time()
        thread.join(timeout=400)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
    if "metrics" not in run:
        raise SystemExit(f"the drill's run did not finish: {run.get('error', 'timed out')}")
    metrics = run["metrics"]
    with open(result_path, "w") as f:
        json.dump({"metrics": metrics, "events": events, "start_unix": t0, "end_unix": time.time()}, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
