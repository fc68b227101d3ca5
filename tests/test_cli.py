"""`run_cli` reports a user error as one line and exit 2, and nothing else: a ValueError from deep in
torch, scikit-learn or Ray is a bug and keeps its traceback. A user error raised inside a Ray
worker is found through Ray's wrappers."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dfei.cli import run_cli
from dfei.data.spec import DatasetError
from dfei.errors import (CheckpointError, ConfigError, PathExistsError, RunFailedError, UserError,
                         find_user_error)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _raise(err: BaseException):
    def body():
        raise err
    return body


@pytest.mark.parametrize("err", [DatasetError("data.json: bad"), ConfigError("--alpha: bad"),
                                 PathExistsError("out exists"), CheckpointError("ckpt: nan")])
def test_a_user_error_is_one_line_and_exit_2(err, capsys):
    assert isinstance(err, UserError)
    assert run_cli(_raise(err)) == 2
    assert capsys.readouterr().err == f"error: {err}\n"


@pytest.mark.parametrize("err", [ValueError("Input contains NaN."), FileNotFoundError("libfoo.so"),
                                 RuntimeError("CUDA error"), KeyError("x")])
def test_any_other_exception_propagates_with_its_traceback(err):
    with pytest.raises(type(err)):
        run_cli(_raise(err))


def test_a_run_without_any_result_exits_1_with_its_summary(capsys):
    assert run_cli(_raise(RunFailedError("all 2 trial(s) failed:\n  trial a: x"))) == 1
    assert capsys.readouterr().err.startswith("error: all 2 trial(s) failed")


def test_a_user_error_inside_wrappers_is_found():
    inner = DatasetError("file.parquet: column 'x' has value 9")
    try:
        try:
            raise inner
        except DatasetError as e:
            raise RuntimeError("Training failed due to worker errors") from e
    except RuntimeError as wrapped:
        assert find_user_error(wrapped) is inner

    class WorkerGroupError(Exception):  # the shape of Ray Train's: {rank: exception}
        def __init__(self, failures):
            super().__init__("worker errors")
            self.worker_failures = failures

    assert find_user_error(WorkerGroupError({0: ValueError("x"), 1: inner})) is inner
    assert find_user_error(Exception("actor died", RuntimeError("init failed", inner))) is inner  # ActorDiedError's args
    assert find_user_error(ValueError("plain")) is None


def test_a_user_error_raised_in_a_ray_task_reaches_the_cli_as_one_line(ray_session, capsys):
    @ray_session.remote
    def bad():
        raise ConfigError("--k: 0 is outside the valid range")

    def body():
        ray_session.get(bad.remote())

    assert run_cli(body) == 2
    assert capsys.readouterr().err == "error: --k: 0 is outside the valid range\n"


def test_a_bug_exits_1_with_its_traceback_in_a_real_process():
    # e.g. scikit-learn's "Input contains NaN" used to be printed as `error: ...` with exit 2
    code = ("import sys; from dfei.cli import run_cli\n"
            "def body():\n    raise ValueError('Input contains NaN.')\n"
            "sys.exit(run_cli(body))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "ValueError: Input contains NaN." in proc.stderr
    assert not proc.stderr.startswith("error:")
