"""Checkpoints: the one way to write, read and rebuild a model from one (training, batch
inference, warm start, export). Imports no Ray: the serving side uses it too.

Files: tensors via torch.save (loaded with weights_only=True), the rest as JSON.

    model.pt       model state dict, including the DFE buffers v and initialized
    best_model.pt  only when the best epoch is not this one (so every checkpoint is self-contained)
    optimizer.pt   optimizer state dict
    state.json     epoch, early-stopping state, config, dataset spec (with its encoders' digests)
    encoders/      the dataset's vocabularies (dfei.data.encoders), when it has any: a checkpoint
                   scores raw logs and exports with the very transform it was trained on, wherever
                   the dataset has gone since

Every file is written to a temporary name and renamed, so a crash never leaves a half file.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from typing import Any

import torch
from torch import nn

from dfei.atomic import atomic_write
from dfei.data.encoders import FeatureTransform, load_transform
from dfei.data.encoders.transform import copy_encoders
from dfei.data.spec import DatasetSpec
from dfei.errors import CheckpointError
from dfei.models.build import model_from_config
from dfei.config import TrainConfig

MODEL_FILE = "model.pt"
BEST_MODEL_FILE = "best_model.pt"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
# keys of every training report: MID_EPOCH tells a step checkpoint from an epoch end (trackers and
# Tune take epoch ends only); Ray Train keeps the checkpoints of highest CHECKPOINT_SCORE (an epoch
# end's valid avg AUC, -1 for a step checkpoint) and, always, the latest
MID_EPOCH = "mid_epoch"
# state.json's format: 2 adds `format` and `mid_epoch` (a step checkpoint's record); 1 had neither
CHECKPOINT_FORMAT = 2
CHECKPOINT_SCORE = "checkpoint_score"


def is_epoch_report(metrics: dict[str, Any]) -> bool:
    """True for an epoch's report, False for a mid-epoch checkpoint's (which carries no metrics)."""
    return not metrics.get(MID_EPOCH, False)


@dataclasses.dataclass
class TrainState:
    """Where a run stands after an epoch: exactly what a checkpoint's state.json holds besides the
    config and dataset spec (to_json adds those). `epoch` and `best_epoch` count from 0; -1 before
    the first. Resuming continues from epoch + 1 with this early-stopping state."""

    epoch: int = -1
    global_step: int = 0  # optimizer updates so far, over all epochs
    best_auc: float = -math.inf  # best mean valid AUC over domains so far
    best_epoch: int = -1
    bad_epochs: int = 0  # epochs since the best one
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # one row per epoch

    def stopped(self, patience: int) -> bool:
        """Early stopping reached: no better mean valid AUC for `patience` epochs."""
        return self.bad_epochs >= patience

    def record(self, epoch: int, valid_avg_auc: float, row: dict[str, Any]) -> bool:
        """Account for a finished epoch; True when it is the best so far."""
        improved = valid_avg_auc > self.best_auc
        if improved:
            self.best_auc, self.best_epoch, self.bad_epochs = valid_avg_auc, epoch, 0
        else:
            self.bad_epochs += 1
        self.epoch = epoch
        self.history.append(row)
        return improved

    def to_json(self, cfg: TrainConfig, spec: DatasetSpec) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "format": CHECKPOINT_FORMAT, "config": cfg.to_dict(),
                "dataset": spec.to_json()}

    @classmethod
    def from_json(cls, state: dict[str, Any], where: str = STATE_FILE) -> "TrainState":
        """The state of a checkpoint's state.json; CheckpointError (naming `where`) when it was
        written by a newer dfei or lacks a field. Format 1 (no `format` key, before mid-epoch
        checkpoints) is read as it is: an epoch-end checkpoint."""
        check_format(state, where)
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in state]
        if missing:
            raise CheckpointError(f"{where}: not a dfei training state: field(s) {missing} missing")
        return cls(**{f.name: state[f.name] for f in dataclasses.fields(cls)})


def check_format(state: dict[str, Any], where: str = STATE_FILE) -> None:
    """CheckpointError (naming `where`) when state.json was written by a newer dfei than this one."""
    version = state.get("format", 1)
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT:
        raise CheckpointError(f"{where}: checkpoint format {version!r} is newer than this dfei reads "
                              f"({CHECKPOINT_FORMAT}); use the dfei version that wrote it")


def save_checkpoint(directory: str, model_state: dict, optimizer_state: dict | None, state: dict[str, Any],
                    best_model_state: dict | None = None, dataset_root: str | None = None) -> None:
    """Write a checkpoint into `directory`; with dataset_root (the dataset's path or URI), also the
    encoder files state["dataset"]'s encoders list (dfei.data.encoders.transform.copy_encoders), read
    back against their digests: a dataset converted again in place while training would otherwise
    put files into the checkpoint that its state.json does not describe (DatasetError then)."""
    os.makedirs(directory, exist_ok=True)
    if dataset_root is not None:
        section = state.get("dataset", {}).get("encoders")
        copy_encoders(section, dataset_root, directory)
        load_transform(directory, section, where=f"{dataset_root} (its encoders, copied into a checkpoint)")
    atomic_write(os.path.join(directory, MODEL_FILE), lambda p: torch.save(model_state, p))
    if best_model_state is not None:
        atomic_write(os.path.join(directory, BEST_MODEL_FILE), lambda p: torch.save(best_model_state, p))
    if optimizer_state is not None:
        atomic_write(os.path.join(directory, OPTIMIZER_FILE), lambda p: torch.save(optimizer_state, p))

    def write_json(p: str) -> None:
        with open(p, "w") as f:
            json.dump(state, f, indent=1, sort_keys=True)

    atomic_write(os.path.join(directory, STATE_FILE), write_json)


def _state(directory: str) -> dict[str, Any]:
    """state.json of a checkpoint directory; CheckpointError when it is not a dfei checkpoint."""
    if not os.path.exists(os.path.join(directory, MODEL_FILE)):
        raise CheckpointError(f"{directory}: no {MODEL_FILE}; not a dfei checkpoint")
    try:
        with open(os.path.join(directory, STATE_FILE)) as f:
            state = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: no {STATE_FILE}; not a complete dfei checkpoint") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{directory}/{STATE_FILE}: unreadable ({err})") from None
    check_format(state, f"{directory}/{STATE_FILE}")  # every reader: resume, --init-from, predict, export
    return state


def load_checkpoint_state(directory: str, encoders: bool = True) -> dict[str, Any]:
    """{"state", "has_optimizer", "transform"} of a checkpoint, reading no tensors (what a run was,
    not its weights); with encoders=False the vocabularies are not read ("transform" is None)."""
    state = _state(directory)
    return {"state": state, "has_optimizer": os.path.exists(os.path.join(directory, OPTIMIZER_FILE)),
            "transform": _transform(directory, state) if encoders else None}


def _transform(directory: str, state: dict[str, Any]) -> FeatureTransform | None:
    """The encoders the checkpoint's data was encoded with (None: native ids), digests checked."""
    return load_transform(directory, (state.get("dataset") or {}).get("encoders"), where=f"{directory} (its encoders)")


def load_checkpoint(directory: str, map_location: str | torch.device = "cpu",
                    optimizer: bool = True, encoders: bool = True) -> dict[str, Any]:
    """{"model", "best_model", "optimizer", "state", "transform"} (the encoders, None for native ids);
    best_model falls back to model. With
    optimizer=False the optimizer state is not read ("optimizer" is None): inference needs only
    the weights; with encoders=False neither the encoders ("transform" is None: for what only scores
    or resumes ids). Raises CheckpointError when `directory` is not a dfei checkpoint or a file of it
    cannot be read, DatasetError when its encoders do not match their recorded digests."""
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
            "optimizer": load(OPTIMIZER_FILE) if optimizer else None, "state": state,
            "transform": _transform(directory, state) if encoders else None}


def non_finite_tensors(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold nan or inf."""
    return [name for name, t in state_dict.items()
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


def load_any_checkpoint(checkpoint: str, state_only: bool = False, optimizer: bool = True,
                        encoders: bool = True) -> dict[str, Any]:
    """A checkpoint directory, local or at any fsspec/pyarrow URI (copied to a temporary local
    directory with pyarrow.fs, as Ray's Checkpoint.as_directory does, without needing Ray); with
    state_only, its load_checkpoint_state (no tensors); with optimizer=False, without the optimizer
    state; with encoders=False, without reading its vocabularies. Raises CheckpointError when it is
    missing or not a dfei checkpoint."""
    def load(directory: str) -> dict[str, Any]:
        return (load_checkpoint_state(directory, encoders) if state_only
                else load_checkpoint(directory, optimizer=optimizer, encoders=encoders))

    if "://" not in checkpoint:
        if not os.path.isdir(checkpoint):
            raise CheckpointError(f"{checkpoint}: no such checkpoint directory")
        return load(checkpoint)
    import pyarrow.fs as pafs

    from dfei.data import fs as dfs

    filesystem, path = dfs.resolve(checkpoint)
    if filesystem.get_file_info(path).type != pafs.FileType.Directory:
        raise CheckpointError(f"{checkpoint}: no such checkpoint directory")
    with tempfile.TemporaryDirectory(prefix="dfei-ckpt-") as local:
        pafs.copy_files(path, local, source_filesystem=filesystem, destination_filesystem=pafs.LocalFileSystem())
        return load(local)


def finite_weights(ckpt: dict[str, Any], checkpoint: str, best: bool = False) -> dict[str, torch.Tensor]:
    """The checkpoint's (best) weights; CheckpointError when any holds nan or inf (a diverged run's)."""
    weights = ckpt["best_model" if best else "model"]
    bad = non_finite_tensors(weights)
    if bad:
        raise CheckpointError(f"{checkpoint}: {len(bad)} tensor(s) hold nan or inf ({', '.join(bad[:5])}"
                              f"{', ...' if len(bad) > 5 else ''}): the weights of a diverged run; use an earlier "
                              "checkpoint")
    return weights


def load_model(checkpoint: str, best: bool = False) -> tuple[nn.Module, DatasetSpec, TrainConfig]:
    """The model of a checkpoint (its epoch's weights, or with best=True the run's best epoch so far),
    in eval mode on the CPU, with the dataset spec and config it was trained with. Reads no
    optimizer state. Raises CheckpointError when the weights hold nan or inf (a diverged run's)."""
    return load_trained(checkpoint, best, encoders=False)[:3]


def load_trained(checkpoint: str, best: bool = False, encoders: bool = True) -> tuple[
        nn.Module, DatasetSpec, TrainConfig, FeatureTransform | None]:
    """load_model's (model, spec, config) and the checkpoint's encoders (None for native ids, or
    when not asked for)."""
    ckpt = load_any_checkpoint(checkpoint, optimizer=False, encoders=encoders)
    cfg = TrainConfig.from_dict(ckpt["state"]["config"], where=f"{checkpoint}/{STATE_FILE}", legacy=True)
    spec = DatasetSpec.from_json(ckpt["state"]["dataset"])
    model = model_from_config(cfg, spec)
    model.load_state_dict(finite_weights(ckpt, checkpoint, best))
    return model.eval(), spec, cfg, ckpt["transform"]
