"""Batch inference with Ray Data: score a split with a trained checkpoint, write Parquet.

Each output row carries the input row's identity as Ray Data defines it (`path` of the source file
and a `row_hash` derived from the path and the row's position), its `domain` id, its `label` and
the model's `score` (CTR in (0, 1)). The model runs in a class held by each Ray Data actor (one per
worker/GPU), in eval mode: the domain features are the checkpoint's trained `v` buffer, frozen.
"""
from __future__ import annotations

import os
import posixpath
import time
from typing import Any

import numpy as np
import torch

from dfei.atomic import atomic_directory
from dfei.data import fs as dfs
from dfei.data.dataset import ParquetDataset
from dfei.data.encoders import load_transform
from dfei.data.encoders.compat import Relation, check_recorded, relate
from dfei.data.spec import DatasetError, DatasetSpec
from dfei.errors import CheckpointError, ConfigError, PathExistsError
from dfei.train.checkpoint import finite_weights, load_any_checkpoint, load_model, load_trained
from dfei.train.resources import check_local_gpus


def evaluate_checkpoint(checkpoint: str, data: str, splits: tuple[str, ...] = ("valid", "test"),
                        best: bool = True) -> dict[str, dict]:
    """Per-domain metrics of a checkpoint's (best) weights on whole splits, in this process. The data
    must be encoded with the checkpoint's encoders (or both have native ids)."""
    from dfei.train.epoch import predict_split, score_split

    model, trained, _, transform = load_trained(checkpoint, best=best)
    dataset = ParquetDataset(data, splits=splits)
    relation = check_compatible(trained, dataset.spec, dfs.join(data, "dataset.json"), transform,
                                load_transform(data, dataset.spec.encoders, where=data))
    if relation.grown:
        raise DatasetError(f"{data}: its encoders extend the checkpoint's ({sorted(relation.grown)}); evaluate "
                           "data encoded with the checkpoint's own encoders (prepare_data.py csv --encoders-from)")
    if dataset.spec.domains != trained.domains:  # predict_split addresses domains by position
        raise DatasetError(f"{data}: domains {dataset.spec.domain_names} differ from the checkpoint's "
                           f"{trained.domain_names}")
    return {split: score_split(dataset, predict_split(model, dataset, split, torch.device("cpu"))) for split in splits}


def domain_id_of_file(path: str) -> int:
    """The domain id of a data file: the `domain=<id>` directory it lies in (the data contract, dfei.data.spec), never a
    column of the file (a feature may be named `domain`)."""
    parent = posixpath.basename(posixpath.dirname(path))
    if not parent.startswith("domain="):
        raise DatasetError(f"{path}: not inside a domain=<id> directory")
    try:
        return int(parent[len("domain="):])
    except ValueError:
        raise DatasetError(f"{path}: directory {parent!r} does not name an integer domain id") from None


class DomainScorer:
    """Ray Data actor: holds one model; scores mixed-domain batches (the domain of each row is its
    file's partition directory). cardinalities: the model's, when the data's encoders extend its
    own: an id beyond them is scored as 0 (unknown), as the model's encoders would have encoded it."""

    def __init__(self, checkpoint: str, use_gpu: bool = False, cardinalities: list[int] | None = None):
        self.model, self.spec, _ = load_model(checkpoint)
        # data whose encoders extend the checkpoint's: an id the model's tables do not have is a value
        # its encoders did not know, i.e. id 0 (what encoding with the checkpoint's encoders gives)
        self.cardinalities = np.asarray(cardinalities, dtype=np.int64) if cardinalities is not None else None
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model.to(self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.stack([batch[f] for f in self.spec.feature_names], axis=1).astype(np.int64)
        if self.cardinalities is not None:
            x = np.where(x >= self.cardinalities, 0, x)
        files, inverse = np.unique(batch["path"], return_inverse=True)
        domain_ids = np.array([domain_id_of_file(str(f)) for f in files], dtype=np.int64)[inverse]
        index = self.spec.domain_index_of(domain_ids)  # refuses an id the model has no tower for
        with torch.no_grad():
            score = self.model.predict_proba(torch.from_numpy(x).to(self.device),
                                             torch.from_numpy(index).to(self.device)).float().cpu().numpy()
        if not np.isfinite(score).all():
            raise CheckpointError(f"{int((~np.isfinite(score)).sum())} non-finite score(s) on {files[0]}: the model "
                                  "gives nan or inf for these rows")
        out = {"path": batch["path"], "row_hash": batch["row_hash"], "domain": domain_ids, "score": score}
        if self.spec.label in batch:
            out["label"] = batch[self.spec.label]
        return out


def check_compatible(trained: DatasetSpec, data: DatasetSpec, where: str, trained_transform=None,
                     data_transform=None) -> Relation:
    """The data must have the model's features, encoded with its encoders (or encoders grown from them:
    see dfei.data.encoders.compat), and only domains the model was trained on. With native ids on
    both sides, the same features and cardinalities. Returns how the encoders relate."""
    check_recorded(trained, data, where)
    relation = relate(trained_transform, data_transform, where, data_name="the data's")
    if relation.kind == "native" and trained.features != data.features:
        raise DatasetError(f"{where}: features {[(f.name, f.cardinality) for f in data.features]} differ from the "
                           f"checkpoint's {[(f.name, f.cardinality) for f in trained.features]}")
    if trained.feature_names != data.feature_names:
        raise DatasetError(f"{where}: features {data.feature_names} differ from the checkpoint's {trained.feature_names}")
    unknown = sorted({d.id for d in data.domains} - {d.id for d in trained.domains})
    if unknown:
        raise DatasetError(f"{where}: domain id(s) {unknown} were not in the training data "
                           f"(trained on {[d.id for d in trained.domains]})")
    return relation


def check_settings(batch_size: int, num_workers: int, use_gpu: bool) -> None:
    """Before Ray starts: positive sizes, and with an embedded Ray the GPUs --use-gpu asks for (one
    per model-holding actor) must exist, or Ray Data would wait for them forever. Raises
    ConfigError / ResourceError."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if num_workers < 1:
        raise ConfigError(f"--num-workers must be >= 1, got {num_workers}")
    if use_gpu and not os.environ.get("RAY_ADDRESS"):
        check_local_gpus(num_workers, "scoring actor(s)")


def predict(checkpoint: str, data: str, split: str, out: str, batch_size: int = 8192, num_workers: int = 1,
            use_gpu: bool = False, overwrite: bool = False, log=print) -> dict[str, Any]:
    """Score `split` of `data` with `checkpoint`; write Parquet files under the local directory `out`."""
    import ray

    t0 = time.time()
    # the scoring actors and Ray Data's writers do not share this process's working directory
    checkpoint, data, out = dfs.absolute(checkpoint), dfs.absolute(data), dfs.absolute(out)
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise PathExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    dataset = ParquetDataset(data, splits=(split,))  # validates the split before any work
    # the spec the model was trained on, and weights the actors can use: refused here, not in every
    # actor after Ray's retries (the optimizer state is not read)
    ckpt = load_any_checkpoint(checkpoint, optimizer=False)
    finite_weights(ckpt, checkpoint)
    trained = DatasetSpec.from_json(ckpt["state"]["dataset"])
    relation = check_compatible(trained, dataset.spec, dfs.join(data, "dataset.json"), ckpt["transform"],
                                load_transform(data, dataset.spec.encoders, where=data))
    del ckpt
    if relation.grown:
        log(f"[predict] the data's encoders extend the checkpoint's ("
            + ", ".join(f"{n} {a:,} -> {b:,}" for n, (a, b) in relation.grown.items())
            + "): ids beyond the checkpoint's are values it did not know, scored as id 0")
    rows = sum(dataset.rows(split))
    log(f"[predict] {rows:,} rows of {data}/{split} with {checkpoint}")
    # the files' own columns only: no hive partition column (a feature may be named `domain`; the
    # scorer takes each row's domain from its file's directory), only the features and the label
    ds = ray.data.read_parquet(
        [part.path for partition in dataset.partitions[split] for part in partition.parts], filesystem=dataset.fs,
        partitioning=None, include_paths=True, include_row_hash=True).select_columns(
        dataset.columns + ["path", "row_hash"])
    cardinalities = trained.cardinalities if relation.grown else None
    scored = ds.map_batches(DomainScorer, fn_constructor_kwargs={"checkpoint": checkpoint, "use_gpu": use_gpu,
                                                                 "cardinalities": cardinalities},
                            batch_size=batch_size, batch_format="numpy", concurrency=num_workers,
                            num_gpus=1 if use_gpu else 0)
    with atomic_directory(out) as tmp:
        scored.write_parquet(tmp)
        written = ray.data.read_parquet(tmp).count()
        if written != rows:
            raise RuntimeError(f"wrote {written:,} scores for {rows:,} input rows")
    log(f"[predict] wrote {rows:,} scores to {out} in {time.time() - t0:.1f}s")
    return {"rows": rows, "out": out}
