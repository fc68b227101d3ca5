"""Atomic outputs: a file or directory appears complete under its name, or not at all.

Everything the pipelines write for a user (checkpoint files, metrics.json, best.json, tables,
figures, exported models, datasets, batch-inference output) is written to a temporary sibling and
renamed into place (os.replace: atomic on one POSIX filesystem). On any failure, Ctrl-C included,
the temporary is removed and an existing output is left as it was. Pure Python: usable from every
layer.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def _temporary(path: str) -> str:
    # same directory (so the rename stays on one filesystem), same extension (matplotlib and
    # torch.onnx pick the format from it), unique per process
    root, ext = os.path.splitext(path)
    return f"{root}.tmp-{os.getpid()}{ext}"


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call `write(tmp)` to write a file at a temporary path, then rename it to `path`."""
    tmp = _temporary(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: str, text: str) -> None:
    """A text file (a Markdown table, a CSV built in memory), written atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            f.write(text)

    atomic_write(path, write)


@contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """Yield a fresh temporary directory to fill; on success it replaces `path` (an existing
    directory there is removed first), on failure it is removed and `path` is untouched."""
    tmp = f"{path.rstrip('/')}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def json_safe(value: Any) -> Any:
    """NaN (e.g. an undefined AUC) becomes null, recursively: strict JSON has no NaN."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def write_json_atomic(path: str, payload: Any, **dump_kwargs: Any) -> None:
    """`payload` as strict JSON (NaN -> null, numpy scalars -> float), written atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(json_safe(payload), f, **{"indent": 1, "default": float, "allow_nan": False, **dump_kwargs})

    atomic_write(path, write)
