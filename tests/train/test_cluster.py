"""`ray job submit` of a training run to a `ray start --head` cluster, token authentication on."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RAY_BIN = os.path.join(os.path.dirname(sys.executable), "ray")


def test_ray_job_submit_trains_and_writes_metrics(ray_cluster, public_tiny, tmp_path):
    out = tmp_path / "job-run"
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    cmd = [RAY_BIN, "job", "submit", "--address", ray_cluster["dashboard"], "--working-dir", ROOT, "--",
           sys.executable, "pipelines/train.py", "--data", public_tiny, "--epochs", "1", "--cpus-per-worker", "1",
           "--out", str(out), "--log-every-s", "0.05", "--batch-size", "128"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout + proc.stderr
    # the progress line inside an epoch reads as one line in the job's log, with its ETA and active domains
    assert re.search(r"\[train\] epoch 1 step \d+/\d+ \(\d+% of batches, ETA \d+m\d\ds\), [1-6]/6 domains active, "
                     r"[\d,]+ samples/s/worker, loss \d\.\d{4}\n", proc.stdout), proc.stdout[-3000:]
    metrics = json.load(open(out / "metrics.json"))
    assert metrics["timings"]["ray"] == "cluster"  # the job connected to the cluster, no embedded Ray
    assert set(metrics["splits"]["test"]) == {f"B{i}" for i in range(1, 7)}
