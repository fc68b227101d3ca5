"""Every CLI takes local paths relative to the working directory it is started in, as a user types
them, and hands Ray only absolute ones (Ray's workers, actors and storage layer have another working
directory; pyarrow refuses a relative storage path). Run from a directory that is neither the
repository nor the data's."""
from __future__ import annotations

import importlib.util
import json
import os
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(script: str):
    spec = importlib.util.spec_from_file_location(f"cli_{script}", os.path.join(ROOT, "pipelines", f"{script}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_cli_resolves_relative_paths(ray_session, elsewhere, capsys):
    """prepare_data, train (with a storage path), predict and export here."""
    t0 = time.time()
    assert cli("prepare_data")(["synthetic", "--profile", "public", "--scale", "0.002", "--workers", "1",
                                "--out", "data/tiny"]) == 0
    run = ["--data", "data/tiny", "--epochs", "1", "--max-steps-per-epoch", "3", "--no-tensorboard",
           "--cpus-per-worker", "1"]
    assert cli("train")([*run, "--out", "runs/train", "--storage-path", "ckpts"]) == 0
    metrics = json.load(open("runs/train/metrics.json"))
    assert metrics["config"]["data"] == str(elsewhere / "data" / "tiny")
    assert metrics["checkpoint"].startswith(str(elsewhere / "ckpts"))
    checkpoint = os.path.relpath(metrics["checkpoint"])
    assert cli("predict")(["--checkpoint", checkpoint, "--data", "data/tiny", "--out", "scores"]) == 0
    assert any(f.endswith(".parquet") for f in os.listdir("scores"))
    assert cli("export")(["--checkpoint", checkpoint, "--format", "torchscript", "--out", "serving/m.pt"]) == 0
    assert os.path.exists("serving/m.pt") and os.path.exists("serving/m.pt.json")
    # tune.py: tests/experiments/tune/test_sweep.py runs its interrupted, moved and resumed sweep from a
    # relative --out and --data; compare: test_compare.py (a relative out); parity.py's runs are
    # run_training's with TrainConfig's paths (resolved as above: test_config.py)
    assert not os.path.exists(os.path.join(ROOT, "runs", "train"))  # nothing landed in the repository
    print(f"[relative paths] {time.time() - t0:.0f}s")
