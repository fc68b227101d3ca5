"""The thin loader of an exported model: checks every request, then runs the artifact.

    model = ServingModel.load("dfei.onnx")          # reads dfei.onnx.json beside it
    ctr = model.predict(features, domain_ids)       # features int [batch, F], domain ids int [batch]

The artifact itself cannot tell a bad id from a good one: an out-of-range feature id would read
another feature's embedding rows (the tables are one matrix) or fail deep in the runtime, and an
unknown domain would get NaN. So ids are checked here, against the sidecar's cardinalities and
domain list, and a request with any bad value is refused with an error naming the feature (or the
domain), the value and the row. Nothing is clamped. `load` also refuses an artifact whose sha256
is not its sidecar's (a sidecar from another export would check requests against the wrong ids).
Needs numpy and torch (TorchScript) or onnxruntime (ONNX) only (and dfei.errors, plain Python).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from dfei.errors import ConfigError, PathNotFoundError, RequestError, UserError

__all__ = ["ServingModel", "RequestError", "ArtifactError"]


class ArtifactError(UserError, ValueError):
    """An exported artifact that cannot be loaded as it is (unknown format, sha256 not its sidecar's)."""


class ServingModel:
    def __init__(self, path: str, meta: dict[str, Any]):
        self.path, self.meta = path, meta
        self.feature_names = [f["name"] for f in meta["features"]]
        self.cardinalities = np.array([f["cardinality"] for f in meta["features"]], dtype=np.int64)
        self.domains = {int(d["id"]): d["name"] for d in meta["domains"]}
        self._known = np.array(sorted(self.domains), dtype=np.int64)
        self.format = meta["format"]
        if self.format == "torchscript":
            import torch

            self._module = torch.jit.load(path, map_location="cpu").eval()
        elif self.format == "onnx":
            try:
                import onnxruntime as ort
            except ImportError as err:
                raise ConfigError(f"{path}: an ONNX artifact needs onnxruntime (pip install onnxruntime): {err}") from None

            self._session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        else:
            raise ArtifactError(f"{path}.json: unknown format {self.format!r} (expected torchscript or onnx)")

    @classmethod
    def load(cls, path: str) -> "ServingModel":
        sidecar = f"{path}.json"
        for p in (path, sidecar):
            if not os.path.exists(p):
                raise PathNotFoundError(f"{p} does not exist (an export writes the artifact and its .json sidecar)")
        with open(sidecar) as f:
            meta = json.load(f)
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != meta.get("sha256"):
            raise ArtifactError(f"{path}: sha256 {digest} is not the one its sidecar {sidecar} lists "
                             f"({meta.get('sha256')}); the two come from different exports")
        return cls(path, meta)

    def check(self, features, domain_ids) -> tuple[np.ndarray, np.ndarray]:
        """The request as int64 arrays, or RequestError naming the first problem."""
        x = np.asarray(features)
        d = np.asarray(domain_ids)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise RequestError(f"features must be [batch, {len(self.feature_names)}] (columns {self.feature_names}), "
                               f"got shape {list(x.shape)}")
        if d.ndim != 1 or len(d) != len(x):
            raise RequestError(f"domain_ids must be [batch] = [{len(x)}], got shape {list(d.shape)}")
        for name, a in (("features", x), ("domain_ids", d)):
            if a.size and not np.issubdtype(a.dtype, np.integer):
                raise RequestError(f"{name} must be integer ids, got dtype {a.dtype}")
        x, d = x.astype(np.int64, copy=False), d.astype(np.int64, copy=False)
        if x.size:
            bad = (x < 0) | (x >= self.cardinalities)
            if bad.any():
                row, col = (int(i) for i in np.argwhere(bad)[0])
                raise RequestError(f"feature {self.feature_names[col]!r} (column {col}): id {x[row, col]} at row {row} "
                                   f"is outside [0, {self.cardinalities[col]}); map unseen values to 0 as in training")
        unknown = ~np.isin(d, self._known)
        if unknown.any():
            row = int(np.argmax(unknown))
            raise RequestError(f"domain id {d[row]} at row {row} is not one the model was trained on (known: "
                               + ", ".join(f"{i} ({n})" for i, n in self.domains.items()) + ")")
        return np.ascontiguousarray(x), np.ascontiguousarray(d)

    def predict(self, features, domain_ids) -> np.ndarray:
        """CTR in (0, 1) per row, float32 [batch]."""
        x, d = self.check(features, domain_ids)
        if len(x) == 0:
            return np.zeros(0, dtype=np.float32)
        if self.format == "torchscript":
            import torch

            with torch.no_grad():
                return self._module(torch.from_numpy(x), torch.from_numpy(d)).numpy()
        return self._session.run(["ctr"], {"features": x, "domain_ids": d})[0]

    def predict_columns(self, columns: dict[str, Any], domain_ids) -> np.ndarray:
        """As predict, from {feature name: ids}; every feature of the model must be given."""
        missing = [n for n in self.feature_names if n not in columns]
        if missing:
            raise RequestError(f"missing feature column(s) {missing}")
        return self.predict(np.stack([np.asarray(columns[n]) for n in self.feature_names], axis=1), domain_ids)
