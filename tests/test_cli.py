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
from dfei.errors import CheckpointError, ConfigError, PathExistsError, RunFailedError, UserError, find_user_error

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


def test_missing_or_unreadable_config_and_checkpoint_files_are_user_errors(tmp_path):
    from dfei.errors import PathNotFoundError
    from dfei.train.checkpoint import load_checkpoint
    from dfei.config import load_config

    with pytest.raises(PathNotFoundError, match="--config .*missing.yaml: no such file"):
        load_config(str(tmp_path / "missing.yaml"), {})
    (tmp_path / "bad.yaml").write_text("alpha: [0.1\n")
    with pytest.raises(ConfigError, match="bad.yaml: not a readable YAML/JSON file"):
        load_config(str(tmp_path / "bad.yaml"), {})
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "model.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no state.json; not a complete dfei checkpoint"):
        load_checkpoint(str(tmp_path / "ckpt"))
    (tmp_path / "ckpt" / "state.json").write_text("{}")
    with pytest.raises(CheckpointError, match="model.pt: not a readable checkpoint file"):
        load_checkpoint(str(tmp_path / "ckpt"))


def test_an_error_raised_while_handling_a_user_error_is_a_bug_with_its_traceback():
    def body():
        try:
            raise DatasetError("x.parquet: bad")
        except DatasetError:
            raise KeyError("a bug in the handler")  # not `from`: its context is not its cause

    with pytest.raises(KeyError):
        run_cli(body)


def test_unknown_models_and_predict_settings_are_refused_before_ray():
    from dfei.config import TrainConfig
    from dfei.inference.dataset_scoring import check_settings

    with pytest.raises(ConfigError, match=r"model must be one of .* got 'foo\+dfei'"):
        TrainConfig(data="d", model="foo+dfei")
    with pytest.raises(ConfigError, match="--batch-size must be >= 1"):
        check_settings(0, 1, False)
    if "RAY_ADDRESS" not in os.environ:
        import torch

        if torch.cuda.device_count() == 0:
            with pytest.raises(UserError, match="--use-gpu gives each of the 1 scoring actor"):
                check_settings(8192, 1, True)


def test_the_guard_of_the_in_process_cli_tests_fails_a_test_that_starts_ray(ray_must_not_start):
    """tests/conftest.py's `ray_must_not_start` (what the CLI tests run in this process use to check
    that an input is refused before Ray starts) really fails a test whose command starts Ray."""
    import ray

    from dfei.ray_runtime import init_ray

    assert not ray.is_initialized() and "RAY_ADDRESS" not in os.environ  # as a new process sees it
    with pytest.raises(pytest.fail.Exception, match="Ray was started"):
        init_ray(lambda *a: None)
