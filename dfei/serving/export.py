"""Export a trained checkpoint as a self-contained inference artifact (TorchScript or ONNX).

Inputs: `features` int64 [batch, F] (the dataset's feature ids, in its feature order) and
`domain_ids` int64 [batch] (the dataset's domain ids, mixed in any order); output `ctr` float32
[batch]. The trained domain features v (the DFE buffer) are constants of the graph. Rows are
routed to their domain's tower and head inside the graph (one pass over each domain's rows, as
training does), so a mixed batch costs what single-domain batches would. A row whose domain id the
model does not know gets NaN, never another domain's score (dfei.serving.loader rejects such
requests before they reach the graph).

Beside FILE a sidecar FILE.json lists the features with their cardinalities, the domains (ids and
names), the model and its config, where it was trained and the artifact's sha256;
dfei.serving.loader reads it to check requests. When the checkpoint's data was converted with
encoders (dfei.data.encoders), the export carries them: FILE.encoders/ holds the vocabularies and
the sidecar's `encoders` lists every encoder with its digest (checked at load), so
`ServingModel.predict_raw` encodes raw values exactly as training did. Every export is checked on rows it has not seen
(a batch size and domain mix other than the example's): the artifact must agree with the eager
model to 1e-5, or nothing is written.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from dfei.atomic import atomic_write, json_safe, write_json_atomic
from dfei.errors import ConfigError, PathExistsError
from dfei.models.build import read_options
from dfei.models.layers import route_by_domain

FORMATS = ("torchscript", "onnx")
TOLERANCE = 1e-5
CHECK_ROWS = 4096  # unseen rows of the parity check, per pass
ENCODERS_SUFFIX = ".encoders"  # FILE.encoders/: the vocabularies of an export whose data had encoders


class ServingModule(nn.Module):
    """A trained model in eval mode behind the serving signature (features, domain_ids) -> ctr.

    `domain_ids` [D] are the dataset's ids of the model's domains (model index order). A request's
    id is matched against them in the graph (a [batch, D] comparison, no table sized by the largest
    id), so an id no domain has gets NaN, never another domain's score.
    """

    def __init__(self, model: nn.Module, domain_ids: list[int]):
        super().__init__()
        self.model = model.eval()
        self.num_domains = len(domain_ids)
        self.register_buffer("known_ids", torch.tensor(domain_ids, dtype=torch.int64))  # [D]
        self.register_buffer("positions", torch.arange(1, len(domain_ids) + 1, dtype=torch.int64))  # [D] index + 1

    def forward(self, features: torch.Tensor, domain_ids: torch.Tensor) -> torch.Tensor:
        # features: [batch, F] int64, domain_ids: [batch] int64 -> ctr [batch]
        match = (domain_ids.unsqueeze(1) == self.known_ids.unsqueeze(0)).to(torch.int64)  # [batch, D], ids unique
        index = (match * self.positions).sum(1) - 1  # [batch] model index; -1 for an unknown id
        logits = torch.full((features.shape[0],), float("nan"), dtype=torch.float32, device=features.device)
        # every domain, present or not: the traced graph must serve any mix; unknown ids keep NaN
        logits = route_by_domain(self.model, features, index, range(self.num_domains), out=logits)
        return torch.sigmoid(logits)


def _rows(cardinalities: list[int], domain_ids: list[int], n: int, seed: int,
          skip_domain: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n random valid requests (ids within every cardinality), domains mixed; optionally one absent."""
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.randint(0, c, (n,), generator=g) for c in cardinalities], dim=1)
    ids = [i for i in domain_ids if i != skip_domain] or domain_ids
    d = torch.tensor(ids)[torch.randint(0, len(ids), (n,), generator=g)]
    return x, d


@contextmanager
def _quiet_exporter_notes() -> Iterator[None]:
    """Silence the exporters' WARNING notes during an export ("torchvision is not installed. Skipping
    torchvision::nms", "Attribute type is ambiguous because it is an empty sequence"): they are
    about the exporter's op registry and empty attributes, not this model, whose export is checked
    against the eager model right after. Errors still show. Uses the packages' public logger names."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnx_ir", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_checkpoint(checkpoint: str, fmt: str, out: str, best: bool = True, overwrite: bool = False,
                      log=print) -> dict[str, Any]:
    """Write `out` and `out`.json; returns the sidecar (with the parity error measured)."""
    from dfei.serving.loader import ServingModel
    from dfei.train.checkpoint import load_trained

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "onnx":
        try:
            import onnxruntime  # noqa: F401  (the parity check runs the artifact with it)
            import onnxscript  # noqa: F401  (torch's dynamo exporter)
        except ImportError as err:
            raise ConfigError(f"--format onnx needs the onnx extra (pip install -e '.[onnx]'): {err}") from None
    out = os.path.abspath(out)
    if not overwrite and (os.path.exists(out) or os.path.exists(out + ".json")):
        raise PathExistsError(f"{out} exists; pass --overwrite to replace it")
    t0 = time.time()
    model, spec, cfg, transform = load_trained(checkpoint, best=best)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    meta: dict[str, Any] = {}
    staging = f"{out}{ENCODERS_SUFFIX}.tmp-{os.getpid()}"  # the encoders, renamed beside the artifact last

    def write(tmp: str) -> None:  # everything is made and checked before the artifact is renamed into place
        meta.update(_export_checked(model, spec, cfg, fmt, tmp, os.path.basename(out), checkpoint))
        if transform is not None:
            shutil.rmtree(staging, ignore_errors=True)
            meta.update(encoders=transform.write(staging), encoders_root=os.path.basename(staging))
            ServingModel(tmp, meta)  # the loader reads them back, digests checked
            meta["encoders_root"] = os.path.basename(out) + ENCODERS_SUFFIX
        json.dumps(json_safe(meta), allow_nan=False, default=float)  # the sidecar can be written

    try:
        atomic_write(out, write)
        shutil.rmtree(out + ENCODERS_SUFFIX, ignore_errors=True)  # an earlier export's (overwrite)
        if transform is not None:
            os.replace(staging, out + ENCODERS_SUFFIX)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json_atomic(out + ".json", meta)  # the loader refuses a model without its sidecar
    size_mb = os.path.getsize(out) / 2**20
    log(f"[export] {fmt}: {out} ({size_mb:.1f} MB) + {os.path.basename(out)}.json"
        + (f" + {os.path.basename(out)}{ENCODERS_SUFFIX}/" if transform is not None else "")
        + f"; {spec.num_domains} domains, {len(spec.features)} features; max |exported - eager| "
        f"{meta['parity']['max_abs_error_vs_eager']:.2e} on {meta['parity']['rows']:,} rows ({time.time() - t0:.1f}s)")
    return meta


def _export_checked(model, spec, cfg, fmt: str, tmp: str, artifact: str, checkpoint: str) -> dict[str, Any]:
    """Export to `tmp`, then check it against the eager model on unseen rows (another batch size,
    all domains mixed, then one domain absent); the sidecar with the parity measured. RuntimeError
    when they differ by more than TOLERANCE."""
    from dfei.serving.loader import ServingModel

    ids = [d.id for d in spec.domains]
    serving = ServingModule(model, ids).eval()
    example = _rows(spec.cardinalities, ids, 512, seed=0)
    with torch.no_grad(), warnings.catch_warnings(), _quiet_exporter_notes():
        warnings.simplefilter("ignore")  # tracer notes on the per-domain loop: checked below on other rows
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(serving, example), tmp)
        else:
            batch = torch.export.Dim("batch")
            torch.onnx.export(serving, example, tmp, input_names=["features", "domain_ids"],
                              output_names=["ctr"], dynamo=True, external_data=False, verbose=False,
                              dynamic_shapes={"features": {0: batch}, "domain_ids": {0: batch}})
    meta = _sidecar(fmt, artifact, tmp, checkpoint, spec, cfg, model)
    loaded = ServingModel(tmp, meta)
    errors, rows = [], 0
    for seed, skip in ((1, None), (2, ids[0])):
        x, d = _rows(spec.cardinalities, ids, CHECK_ROWS + seed, seed=seed, skip_domain=skip)
        with torch.no_grad():  # the reference: the model's own mixed-batch forward, not ServingModule's routing
            eager = model.predict_proba(x, torch.from_numpy(spec.domain_index_of(d.numpy()))).numpy()
        errors.append(float(np.abs(loaded.predict(x.numpy(), d.numpy()) - eager).max()))
        rows += len(d)
    meta["parity"] = {"rows": rows, "max_abs_error_vs_eager": max(errors), "tolerance": TOLERANCE}
    if not max(errors) <= TOLERANCE:
        raise RuntimeError(f"the exported {fmt} model differs from the eager one by {max(errors):.3g} "
                           f"(> {TOLERANCE}); nothing written")
    return meta


def _sidecar(fmt: str, artifact: str, path: str, checkpoint: str, spec, cfg, model) -> dict[str, Any]:
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    v = model.domain_features()
    return {
        "format": fmt, "artifact": artifact, "sha256": digest,
        "inputs": {"features": {"dtype": "int64", "shape": ["batch", len(spec.features)],
                                "columns": spec.feature_names},
                   "domain_ids": {"dtype": "int64", "shape": ["batch"], "values": [d.id for d in spec.domains]}},
        "output": {"name": "ctr", "dtype": "float32", "shape": ["batch"]},
        "features": [{"name": f.name, "cardinality": f.cardinality} for f in spec.features],
        "domains": [{"id": d.id, "name": d.name} for d in spec.domains],
        "model": cfg.model,
        "model_config": read_options(cfg),  # the options this model reads (dfei.models.registry)
        "domain_features": {"baked_in": v is not None, "norms": v.norm(dim=1).tolist() if v is not None else None},
        "trained": {"checkpoint": checkpoint, "dataset": spec.name, "dataset_digest": spec.digest()},
        "exported": {"torch": torch.__version__, "unix": time.time()},
    }
