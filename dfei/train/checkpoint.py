"""Checkpoint files: tensors via torch.save (loaded with weights_only=True), the rest as JSON.

    model.pt       model state dict, including the DFE buffers v and initialized
    best_model.pt  only when the best epoch is not this one (so every checkpoint is self-contained)
    optimizer.pt   optimizer state dict
    state.json     epoch, early-stopping state, config, dataset spec

Every file is written to a temporary name and renamed, so a crash never leaves a half file.
"""
from __future__ import annotations

import json
import os
from typing import Any

import torch

from dfei.errors import CheckpointError

MODEL_FILE = "model.pt"
BEST_MODEL_FILE = "best_model.pt"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"


def _atomic(path: str, write) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(directory: str, model_state: dict, optimizer_state: dict | None, state: dict[str, Any],
                    best_model_state: dict | None = None) -> None:
    os.makedirs(directory, exist_ok=True)
    _atomic(os.path.join(directory, MODEL_FILE), lambda p: torch.save(model_state, p))
    if best_model_state is not None:
        _atomic(os.path.join(directory, BEST_MODEL_FILE), lambda p: torch.save(best_model_state, p))
    if optimizer_state is not None:
        _atomic(os.path.join(directory, OPTIMIZER_FILE), lambda p: torch.save(optimizer_state, p))

    def write_json(p: str) -> None:
        with open(p, "w") as f:
            json.dump(state, f, indent=1, sort_keys=True)

    _atomic(os.path.join(directory, STATE_FILE), write_json)


def _state(directory: str) -> dict[str, Any]:
    """state.json of a checkpoint directory; CheckpointError when it is not a dfei checkpoint."""
    if not os.path.exists(os.path.join(directory, MODEL_FILE)):
        raise CheckpointError(f"{directory}: no {MODEL_FILE}; not a dfei checkpoint")
    try:
        with open(os.path.join(directory, STATE_FILE)) as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: no {STATE_FILE}; not a complete dfei checkpoint") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{directory}/{STATE_FILE}: unreadable ({err})") from None


def load_checkpoint_state(directory: str) -> dict[str, Any]:
    """{"state", "has_optimizer"} of a checkpoint, reading no tensors (what a run was, not its weights)."""
    state = _state(directory)
    return {"state": state, "has_optimizer": os.path.exists(os.path.join(directory, OPTIMIZER_FILE))}


def load_checkpoint(directory: str, map_location: str | torch.device = "cpu",
                    optimizer: bool = True) -> dict[str, Any]:
    """{"model", "best_model", "optimizer", "state"}; best_model falls back to model. With
    optimizer=False the optimizer state is not read ("optimizer" is None): inference needs only
    the weights. Raises CheckpointError when `directory` is not a dfei checkpoint or a file of it
    cannot be read."""
    def load(name: str):
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            return None
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # torch raises several types for a truncated or foreign file
            raise CheckpointError(f"{path}: not a readable checkpoint file ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0][:200]})") from None

    state = _state(directory)
    model = load(MODEL_FILE)
    return {"model": model, "best_model": load(BEST_MODEL_FILE) or model,
            "optimizer": load(OPTIMIZER_FILE) if optimizer else None, "state": state}


def non_finite_tensors(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold nan or inf."""
    return [name for name, t in state_dict.items()
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
