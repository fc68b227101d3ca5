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
    """Trials that Tune's saved sweep state records as finished (the most any of its state files,
    a resumed sweep's included, records)."""
    counts = [0]
    for path in glob.glob(os.path.join(tune_dir, "experiment_state-*.json")):
        try:
            data = json.load(open(path))
        except ValueError:  # caught mid-write
            continue
        counts.append(sum('"status": "TERMINATED"' in "".join(map(str, entry)) for entry in data["trial_data"]))
    return max(counts)


def tune_main():
    spec = importlib.util.spec_from_file_location("pipeline_tune", os.path.join(ROOT, "pipelines", "tune.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _tune_process(args: list[str], cwd, ray_address: str) -> subprocess.Popen:
    """tune.py in its own process group (a terminal's Ctrl-C signals the group), output line by line."""
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "pipelines", "tune.py"), *args],
                            env={**os.environ, "RAY_ADDRESS": ray_address}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, cwd=cwd)


def _read_until(proc: subprocess.Popen, prefix: str, lines: list[str]) -> None:
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return


def _ctrl_c_after_the_first_trial(proc: subprocess.Popen) -> list[str]:
    """What a 3-trial sweep printed, stopped with Ctrl-C once its first trial finished; it must exit 130."""
    lines: list[str] = []
    try:
        _read_until(proc, "[tune] trial 1/3", lines)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends the process group
        lines += proc.stdout.readlines()
        assert proc.wait(timeout=120) == 130, "".join(lines[-30:])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return lines


def _finished(lines: list[str]) -> list[str]:
    return [line.split()[3] for line in lines if line.startswith("[tune] trial ")]


def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(
        ray_session, ray_cluster, public_tiny, tmp_path, monkeypatch, capsys, ray_start_guard):
    """Three trials one at a time, every path given relative to the working directory as a user types
    it (Tune's storage needs absolute ones):
    1. Ctrl-C after trial 1: exit 130, trial 1 in results.csv, no best.json;
    2. the folder is moved; a resume that changes a setting is refused by name, before Ray starts;
    3. a resume (its own process) is killed abruptly (SIGKILL) once trial 2 is finished and saved;
    4. a resume runs trial 3 only: trials 1 and 2 are not trained again, and every checkpoint path
       points into the new folder.
    tune.py runs as its own process where it is stopped; the rest in this process, on the same cluster."""
    out, moved = str(tmp_path / "sweep"), str(tmp_path / "moved")
    lines = _ctrl_c_after_the_first_trial(_tune_process(
        ["--out", "sweep", "--data", os.path.relpath(public_tiny, tmp_path), "--alpha", "0.3,0.5,0.9", "--k", "16",
         "--epochs", "1", "--max-concurrent", "1"], tmp_path, ray_cluster["address"]))
    text = "".join(lines)
    assert "1 of 3 trial(s) finished" in text and "no best.json" in text, text[-3000:]
    assert not os.path.exists(os.path.join(out, "best.json"))
    assert [r["status"] for r in _rows(os.path.join(out, "results.csv"))] == ["completed"]
    done = _finished(lines)
    assert len(done) == 1, text[-3000:]

    os.rename(out, moved)
    monkeypatch.chdir(tmp_path)
    with ray_start_guard():
        assert tune_main()(["--out", "moved", "--resume", "--epochs", "2", "--alpha", "0.5"]) == 2
    refused = capsys.readouterr().err
    assert "--epochs (the sweep: 1, this command: 2)" in refused, refused
    assert "--alpha (the sweep: 0.3,0.5,0.9, this command: 0.5)" in refused

    second = _tune_process(["--out", "moved", "--resume"], tmp_path, ray_cluster["address"])
    lines = []
    try:
        _read_until(second, "[tune] trial 2/3", lines)
        deadline = time.time() + 30  # wait until the saved sweep state records it (saved about every second)
        while _terminated(os.path.join(moved, "tune")) < 2 and time.time() < deadline:
            time.sleep(0.2)
    finally:
        os.killpg(second.pid, signal.SIGKILL)  # an abrupt end: no chance to save anything more
        second.wait(timeout=30)
    done += _finished(lines)
    assert len(set(done)) == 2, "".join(lines[-30:])
    stamps = {t: os.path.getmtime(os.path.join(moved, "trials", t, "metrics.json")) for t in done}

    capsys.readouterr()
    assert tune_main()(["--out", "moved", "--resume"]) == 0
    resumed = _finished(capsys.readouterr().out.splitlines())
    assert len(resumed) == 1 and resumed[0] not in done  # only the unfinished trial ran
    assert {t: os.path.getmtime(os.path.join(moved, "trials", t, "metrics.json")) for t in done} == stamps
    rows = _rows(os.path.join(moved, "results.csv"))
    assert sorted(r["trial_id"] for r in rows) == sorted(done + resumed)
    assert all(r["status"] == "completed" and r["checkpoint"].startswith(moved + "/") for r in rows)
    best = json.load(open(os.path.join(moved, "best.json")))
    assert best["checkpoint"].startswith(moved + "/")
    assert best["train_config"]["data"] == public_tiny  # absolute, for a train.py run from anywhere
    load_checkpoint(best["checkpoint"])  # what export.py and predict.py read
