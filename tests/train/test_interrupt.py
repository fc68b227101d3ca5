"""Ctrl-C or SIGTERM during train.py: exit 130 or 143 with one line saying what was and was not
written (Ray turns both into a SystemExit in the driver)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("signum, code, name", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_stopped_training_run_exits_128_plus_the_signal_and_names_the_checkpoints(ray_cluster, public_small,
                                                                                      tmp_path, signum, code, name):
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
                if signum == signal.SIGINT:  # Ctrl-C in a terminal signals the whole process group
                    os.killpg(proc.pid, signum)
                else:  # a scheduler's stop: the driver only
                    proc.send_signal(signum)
                break
        lines += proc.stdout.readlines()
        assert proc.wait(timeout=120) == code, "".join(lines[-30:])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # the driver's own last line: a worker's line that Ray forwards to the driver's output
    # ("(RayTrainWorker pid=...) ...") can arrive after it
    last = [ln for ln in lines if ln.strip() and not re.match(r"^(\x1b\[\d+m)?\(\w+ pid=", ln)][-1]
    assert last.startswith(f"interrupted: training was stopped before it finished ({name}): no metrics.json "
                           "was written. The checkpoints of the epochs it finished, if any, are in " + str(out)), \
        "".join(lines[-30:])
    assert not (out / "metrics.json").exists()
