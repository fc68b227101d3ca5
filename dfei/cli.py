"""What the pipelines' entry points share: a user error (bad data, a bad flag value, a missing or an
existing path, a diverged run) ends the command with one line on stderr and exit status 2, not a
traceback. Only `dfei.errors.UserError` (and a UserError that a Ray worker raised, found inside
Ray's wrapper) is reported that way; any other exception is a bug and keeps its traceback."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

from dfei.errors import RunFailedError, RunInterruptedError, UserError, find_user_error

USER_ERROR_EXIT = 2
RUN_FAILED_EXIT = 1
INTERRUPTED_EXIT = 130  # 128 + SIGINT, what a shell reports for a command ended by Ctrl-C


def run_cli(body: Callable[[], Any]) -> int:
    """Run a pipeline's work: 0 when it finishes; 2 with `error: ...` on stderr on a UserError; 1
    with the summary on stderr on a RunFailedError; a RunInterruptedError's exit_code (130 for
    Ctrl-C, 143 for SIGTERM), and 130 for a KeyboardInterrupt that reaches here. Anything else propagates (traceback, exit 1)."""
    try:
        body()
    except RunInterruptedError as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C): the command did not finish; its outputs are incomplete", file=sys.stderr)
        return INTERRUPTED_EXIT
    except UserError as err:
        cause = getattr(err, "cause", None)  # Ray's RayTaskError poses as its cause's class: print the cause
        print(f"error: {cause if isinstance(cause, UserError) else err}", file=sys.stderr)
        return USER_ERROR_EXIT
    except RunFailedError as err:
        print(f"error: {err}", file=sys.stderr)
        return RUN_FAILED_EXIT
    except Exception as err:
        user = find_user_error(err)
        if user is None:
            raise
        print(f"error: {user}", file=sys.stderr)
        return USER_ERROR_EXIT
    return 0


def mlflow_experiment(name: str | None, uri: str | None, prefix: str, out: str) -> str | None:
    """The MLflow experiment of a tune/compare run: the given name, else PREFIX-<out dir's name>."""
    return name or (f"{prefix}-{os.path.basename(os.path.abspath(out))}" if uri else None)
