"""An embedded Ray beside another Ray on the machine (here: the test session's cluster) addresses
its own cluster only: a green run prints no traceback."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_an_embedded_run_beside_another_ray_prints_no_traceback(ray_cluster, public_tiny, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # an embedded Ray starts; the session's runs
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "pipelines", "train.py"), "--data", public_tiny,
                           "--epochs", "1", "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True,
                          timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "[ray] started an embedded local Ray" in output
    assert "Found multiple active Ray instances" not in output and "Traceback" not in output, output[-3000:]
