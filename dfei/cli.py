"""What the pipelines' entry points share: a user error (bad data, a bad flag value, a missing or an
existing path) ends the command with one line on stderr and exit status 2, not a traceback."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)  # DatasetError is a ValueError


def run_cli(body: Callable[[], Any]) -> int:
    """Run a pipeline's work; 0 when it finishes, 2 (with `error: ...` on stderr) on a user error."""
    try:
        body()
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def mlflow_experiment(name: str | None, uri: str | None, prefix: str, out: str) -> str | None:
    """The MLflow experiment of a tune/compare run: the given name, else PREFIX-<out dir's name>."""
    return name or (f"{prefix}-{os.path.basename(os.path.abspath(out))}" if uri else None)
