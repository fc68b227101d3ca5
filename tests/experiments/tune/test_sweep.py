"""A real sweep on the session cluster: results, plot, best.json; an interrupted sweep resumed."""
from __future__ import annotations

import csv
import glob
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dfei.train.checkpoint import load_checkpoint
from dfei.config import TrainConfig, load_config
from dfei.experiments.tune.space import SearchSpec, parse_values
from dfei.experiments.tune.sweep import run_sweep

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PNG = b"\x89PNG\r\n\x1a\n"


def _rows(path: str) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sweep(ray_session, public_tiny, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sweep"))
    base = TrainConfig(data=public_tiny, epochs=2, patience=2)
    spec = SearchSpec(parse_values("0.3,0.9", "alpha", float), parse_values("16", "k", int))
    logs: list[str] = []
    summary = run_sweep(base, spec, out, log=logs.append)
    return out, summary, logs


def test_a_2x1_grid_runs_every_trial_and_writes_the_results(sweep):
    out, summary, logs = sweep
    rows = _rows(os.path.join(out, "results.csv"))
    assert sorted(float(r["alpha"]) for r in rows) == [0.3, 0.9] and {r["k"] for r in rows} == {"16"}
    assert all(r["status"] == "completed" and r["epochs_run"] == "2" for r in rows)
    valid = [float(r["best_valid_avg_auc"]) for r in rows]
    assert valid == sorted(valid, reverse=True)  # best first
    for r in rows:  # each trial's numbers are its own train.py-style run's metrics.json
        metrics = json.load(open(os.path.join(out, "trials", r["trial_id"], "metrics.json")))
        assert metrics["config"]["alpha"] == float(r["alpha"]) and metrics["config"]["k"] == 16
        assert float(r["best_valid_avg_auc"]) == pytest.approx(metrics["avg_auc"]["valid"])
        assert float(r["test_avg_auc"]) == pytest.approx(metrics["avg_auc"]["test"])
        assert len(metrics["history"]) == 2
    with open(os.path.join(out, "alpha_curve.png"), "rb") as f:
        assert f.read(8) == PNG
    table = open(os.path.join(out, "results.md")).read()
    assert "| rank | alpha | k |" in table and "| 0.3 |" in table and "| 0.9 |" in table
    finished = [line for line in logs if line.startswith("[tune] trial ")]
    assert len(finished) == 2 and all("alpha=" in line and "test avg AUC" in line for line in finished)


def test_best_json_points_to_the_best_trials_checkpoint_and_feeds_train_py(sweep):
    out, _, _ = sweep
    best = json.load(open(os.path.join(out, "best.json")))
    top = _rows(os.path.join(out, "results.csv"))[0]
    assert best["trial_id"] == top["trial_id"] and best["alpha"] == float(top["alpha"])
    ckpt = load_checkpoint(best["checkpoint"])  # exists, and is that trial's
    assert ckpt["state"]["config"]["alpha"] == best["alpha"] and ckpt["state"]["config"]["k"] == best["k"]
    assert ckpt["state"]["best_epoch"] + 1 == best["best_epoch"]
    cfg = load_config(os.path.join(out, "best.json"), {"out": "runs/retrain"})  # train.py --config best.json
    assert (cfg.alpha, cfg.k, cfg.epochs, cfg.patience) == (best["alpha"], best["k"], 2, 2)
    # a retraining from it runs with the trial's settings, its torch threads included: the sweep picks the
    # trials' CPUs (and so their threads) itself, and other threads give other numbers (the same settings
    # give the same numbers: tests/train/test_fault_tolerance.py)
    trial = json.load(open(os.path.join(out, "trials", best["trial_id"], "metrics.json")))["config"]
    retrain = cfg.to_dict()
    differ = {k: (retrain[k], trial.get(k)) for k in retrain
              if k not in ("out", "storage_path", "log_every_s", "max_failures") and retrain[k] != trial.get(k)}
    assert differ == {} and retrain["torch_threads"] >= 1


def test_a_second_sweep_into_the_same_directory_is_refused(sweep, public_tiny):
    out, _, _ = sweep
    spec = SearchSpec(parse_values("0.5", "alpha", float), parse_values("32", "k", int))
    with pytest.raises(FileExistsError, match="pass --resume"):
        run_sweep(TrainConfig(data=public_tiny), spec, out)


def _terminated(tune_dir: str) -> int:
    """Trials that Tune's saved sweep state records as finished."""
    states = glob.glob(os.path.join(tune_dir, "experiment_state-*.json"))
    if not states:
        return 0
    try:
        data = json.load(open(states[0]))
    except ValueError:  # caught mid-write
        return 0
    return sum('"status": "TERMINATED"' in "".join(map(str, entry)) for entry in data["trial_data"])


def tune_main():
    spec = importlib.util.spec_from_file_location("pipeline_tune", os.path.join(ROOT, "pipelines", "tune.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(ray_session, ray_cluster, public_tiny,
                                                                        tmp_path, capsys):
    """The sweep's process is killed (SIGKILL) once a trial is finished and saved; tune.py --resume
    (run in this process: the killed one is the real tune.py process) runs only the other trial."""
    out = str(tmp_path / "sweep")
    env = {**os.environ, "RAY_ADDRESS": ray_cluster["address"]}
    cli = [sys.executable, os.path.join(ROOT, "pipelines", "tune.py"), "--out", out]
    first = subprocess.Popen(cli + ["--data", public_tiny, "--alpha", "0.5,0.9", "--k", "16", "--epochs", "1",
                                    "--max-concurrent", "1"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        for line in first.stdout:
            lines.append(line)
            if line.startswith("[tune] trial 1/2"):
                break
        deadline = time.time() + 30  # wait until the saved sweep state records it (saved about every second)
        while _terminated(os.path.join(out, "tune")) < 1 and time.time() < deadline:
            time.sleep(0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # an abrupt end: no chance to save anything more
        first.wait(timeout=30)
    finished = [ln.split()[3] for ln in lines if ln.startswith("[tune] trial ")]
    assert len(finished) == 1, "".join(lines[-30:])
    done_metrics = os.path.join(out, "trials", finished[0], "metrics.json")
    stamp = os.path.getmtime(done_metrics)
    assert not os.path.exists(os.path.join(out, "results.csv"))

    capsys.readouterr()
    assert tune_main()(["--out", out, "--resume"]) == 0  # the resume in this process, on the same cluster
    resumed = [ln.split()[3] for ln in capsys.readouterr().out.splitlines() if ln.startswith("[tune] trial ")]
    assert len(resumed) == 1 and resumed[0] != finished[0]  # only the unfinished trial ran
    assert os.path.getmtime(done_metrics) == stamp  # the finished one was not trained again
    rows = _rows(os.path.join(out, "results.csv"))
    assert sorted(r["trial_id"] for r in rows) == sorted(finished + resumed)
    assert all(r["status"] == "completed" for r in rows)


def test_ctrl_c_ends_a_sweep_with_130_and_no_best_json_and_a_moved_sweep_resumes(
        ray_session, ray_cluster, public_tiny, tmp_path, monkeypatch, capsys, ray_start_guard):
    """Ctrl-C after the first of two trials: exit 130, the finished trial in results.csv, no
    best.json. The folder is then moved: a resume that changes a setting is refused by name; a
    plain resume finishes the sweep and every checkpoint path points into the new folder. Every
    path is given relative to the working directory, as a user types it (Tune's storage needs
    absolute ones)."""
    out, moved = str(tmp_path / "sweep"), str(tmp_path / "moved")
    env = {**os.environ, "RAY_ADDRESS": ray_cluster["address"]}
    tune_py = [sys.executable, os.path.join(ROOT, "pipelines", "tune.py")]
    first = subprocess.Popen(tune_py + ["--out", "sweep", "--data", os.path.relpath(public_tiny, tmp_path), "--alpha",
                                        "0.5,0.9", "--k", "16", "--epochs", "1", "--max-concurrent", "1"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True, cwd=tmp_path)
    lines: list[str] = []
    try:
        for line in first.stdout:
            lines.append(line)
            if line.startswith("[tune] trial 1/2"):
                os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends the process group
                break
        lines += first.stdout.readlines()
        assert first.wait(timeout=120) == 130, "".join(lines[-30:])
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    text = "".join(lines)
    assert "1 of 2 trial(s) finished" in text and "no best.json" in text, text[-3000:]
    assert not os.path.exists(os.path.join(out, "best.json"))
    assert [r["status"] for r in _rows(os.path.join(out, "results.csv"))][0] == "completed"

    os.rename(out, moved)
    # the resumes in this process (from the same working directory)
    monkeypatch.chdir(tmp_path)
    with ray_start_guard():
        assert tune_main()(["--out", "moved", "--resume", "--epochs", "2", "--alpha", "0.5"]) == 2
    refused = capsys.readouterr().err
    assert "--epochs (the sweep: 1, this command: 2)" in refused, refused
    assert "--alpha (the sweep: 0.5,0.9, this command: 0.5)" in refused

    assert tune_main()(["--out", "moved", "--resume"]) == 0
    best = json.load(open(os.path.join(moved, "best.json")))
    rows = _rows(os.path.join(moved, "results.csv"))
    assert len(rows) == 2 and all(r["checkpoint"].startswith(moved + "/") for r in rows)
    assert best["checkpoint"].startswith(moved + "/")
    assert best["train_config"]["data"] == public_tiny  # absolute, for a train.py run from anywhere
    load_checkpoint(best["checkpoint"])  # what export.py and predict.py read
