"""`make install` reinstalls torch when TORCH_SPEC or TORCH_INDEX changes (e.g. the CUDA build on a
venv that `make demo` set up with the CPU one); otherwise it has nothing to do."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def plan(venv: str, *args: str) -> str:
    return subprocess.run(["make", "-n", "-C", ROOT, f"VENV={venv}", *args, "install"], capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_a_new_torch_spec_or_index_reinstalls_torch(tmp_path):
    venv = str(tmp_path / "venv")
    os.makedirs(os.path.join(venv, "bin"))
    open(os.path.join(venv, "bin", "python"), "w").close()
    first = plan(venv)
    assert '"torch==' in first and "pip install --quiet -e" in first
    (stamp,) = re.findall(r"touch (\S+/\.torch-\w+)", first)
    open(stamp, "w").close()  # as if that install had run
    later = time.time() + 5
    open(os.path.join(venv, ".installed"), "w").close()
    os.utime(os.path.join(venv, ".installed"), (later, later))
    assert "pip" not in plan(venv)  # installed with this spec: nothing to do
    gpu = plan(venv, "TORCH_SPEC=torch==9.9.9", "TORCH_INDEX=--index-url https://download.example/cu128")
    # installed with another spec (a stamp is there): torch itself reinstalled, then its dependencies
    assert ('pip install --quiet --force-reinstall --no-deps --index-url https://download.example/cu128 '
            '"torch==9.9.9"') in gpu
    assert 'pip install --quiet --index-url https://download.example/cu128 "torch==9.9.9"' in gpu
    assert "pip install --quiet -e" in gpu  # the project again, against the new torch
