"""The errors a user can fix: what the pipelines report as one line and exit status 2.

Everything a user controls (a dataset, a flag or config value, a path, a checkpoint, a serving
request, a learning rate that makes training diverge) fails with a subclass of `UserError` whose
message names the file/column/value/setting and what was expected. `dfei.cli.run_cli` catches only
these; any other exception is a bug (ours or a library's) and keeps its traceback.

Each class also derives from the built-in exception of its kind (ValueError, FileExistsError,
RuntimeError, ...), so library callers that catch those keep working. Pure Python: importable from every layer,
including `dfei.models` and the serving loader.
"""
from __future__ import annotations


class UserError(Exception):
    """Base of every error the user can fix; the message says what and where."""


class ConfigError(UserError, ValueError):
    """A setting (CLI flag, config key, function argument from a pipeline) has an invalid value."""


class DatasetError(UserError, ValueError):
    """The dataset does not follow the contract; the message names the file, column and value."""


class CheckpointError(UserError, ValueError):
    """A checkpoint cannot be used for what was asked (missing, not a dfei checkpoint, non-finite
    weights, trained on other features or domains)."""


class RequestError(UserError, ValueError):
    """A serving request the model cannot score: wrong shape or type, out-of-range id, unknown domain."""


class PathExistsError(UserError, FileExistsError):
    """An output path exists and the command was not told to replace it."""


class PathNotFoundError(UserError, FileNotFoundError):
    """An input path the user named does not exist."""


class ResourceError(UserError, RuntimeError):
    """The run cannot fit the machine or cluster it is about to start on (memory, CPUs, GPUs)."""


class TrainingDivergedError(UserError, ArithmeticError):
    """The training loss became non-finite (nan or inf); the message names the epoch, step and
    domain, and the last good checkpoint when there is one."""


class RunFailedError(Exception):
    """A run of several parts ended without any usable result (e.g. a sweep whose every trial
    failed); the message summarises the parts' errors. Reported as one block, exit status 1."""


class RunInterruptedError(Exception):
    """A run was stopped (Ctrl-C, SIGTERM) before it finished, so it has no complete result: the
    message says what finished, what was not written and how to continue. `exit_code` follows the
    shell's convention, 128 + the signal: 130 for SIGINT (the default), 143 for SIGTERM."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def find_user_error(err: BaseException, _seen: set[int] | None = None) -> UserError | None:
    """The UserError behind `err`, if any: itself, or one it wraps. Ray wraps a worker's exception
    (Ray Train's WorkerGroupError.worker_failures, RayTaskError.cause, an ActorDiedError's args,
    Ray Data's re-raises with `from`), so a user error raised in a Ray worker still reaches the
    user as one clear line."""
    seen = _seen if _seen is not None else set()
    if err is None or id(err) in seen:
        return None
    seen.add(id(err))
    # explicit wrapping only: not __context__ (an exception raised while another was handled, e.g. a
    # bug in an `except DatasetError` block, must keep its own traceback)
    inner: list = [getattr(err, "cause", None), err.__cause__, *err.args]
    failures = getattr(err, "worker_failures", None)
    if isinstance(failures, dict):
        inner += list(failures.values())
    for candidate in inner:
        if isinstance(candidate, BaseException):
            found = find_user_error(candidate, seen)
            if found is not None:  # the innermost: Ray's wrappers may also pose as the cause's class
                return found
    return err if isinstance(err, UserError) else None
