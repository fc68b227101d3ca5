"""Ctrl-C during train.py: exit 130 with one line saying what was and was not written."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_ctrl_c_during_training_exits_130_and_names_the_checkpoints(ray_cluster, public_small, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "pipelines", "train.py"), "--data", public_small,
                             "--epochs", "20", "--patience", "20", "--out", str(out), "--no-tensorboard"],
                            env={**os.environ, "RAY_ADDRESS": ray_cluster["address"]}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "[train] epoch 1/20" in line:
                os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends the process group
                break
        lines += proc.stdout.readlines()
        assert proc.wait(timeout=120) == 130, "".join(lines[-30:])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    last = [ln for ln in lines if ln.strip()][-1]
    assert last.startswith("interrupted: training was stopped before it finished (Ctrl-C): no metrics.json "
                           "was written. The checkpoints of its finished epochs are in " + str(out)), "".join(lines[-30:])
    assert not (out / "metrics.json").exists()
