"""Losing a node mid-epoch: Ray Train restarts the worker group on the node added back and the run
resumes from the latest step checkpoint, with v identical on both ranks (tests/train/node_loss_drill.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def test_a_lost_node_resumes_from_the_step_checkpoint_with_v_identical_on_both_ranks(public_tiny, tmp_path):
    result = tmp_path / "result.json"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, os.path.join(HERE, "node_loss_drill.py"), public_tiny,
                           str(tmp_path / "run"), str(result)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(result.read_text())
    metrics, events = out["metrics"], out["events"]
    assert "removed_unix" in events  # the node really went away during the run
    resumed = metrics["resumed_from"]
    assert resumed is not None and resumed["epoch"] == 1 and resumed["step"] > 0  # inside the first epoch
    digests = metrics["domain_feature_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert metrics["epochs_run"] == 1 and metrics["avg_auc"]["test"] > 0.4
    print(f"node-loss drill: node removed {events['removed_unix'] - out['start_unix']:.1f}s into the run, "
          f"resumed at step {resumed['step']} {resumed['unix'] - events['removed_unix']:.1f}s after the loss; "
          f"run {out['end_unix'] - out['start_unix']:.1f}s")
