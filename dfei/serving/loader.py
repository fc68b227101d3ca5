"""The thin loader of an exported model: checks every request, then runs the artifact.

    model = ServingModel.load("dfei.onnx")          # reads dfei.onnx.json beside it
    ctr = model.predict(features, domain_ids)       # features int [batch, F], domain ids int [batch]

    ctr = model.predict_raw([{"user_id": "u01", "item_id": "i7", "price": 12.5}], domains=["home"])

`predict_raw` takes raw values and encodes them with the encoders the export carries (the ones the
training data was converted with: same text form, same bin edges, unknown values -> 0, same hash;
dfei.data.encoders), then scores them: it equals `predict` on the ids the converter would write.
It needs pyarrow and pandas besides; artifacts of data with native ids (synthetic) have no encoders.

The artifact itself cannot tell a bad id from a good one: an out-of-range feature id would read
another feature's embedding rows (the tables are one matrix) or fail deep in the runtime, and an
unknown domain would get NaN. So ids are checked here, against the sidecar's cardinalities and
domain list, and a request with any bad value is refused with an error naming the feature (or the
domain), the value and the row. Nothing is clamped. `load` also refuses an artifact whose sha256
is not its sidecar's (a sidecar from another export would check requests against the wrong ids).
Needs numpy and torch (TorchScript) or onnxruntime (ONNX) only (and dfei.errors, plain Python);
artifacts with encoders also pyarrow and pandas (dfei.data.encoders).
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
        self.transform = None  # dfei.data.encoders.FeatureTransform: the raw -> id encoders, if any
        self.remembered_domains: dict = {}  # (type, raw domain value) -> domain id, filled by online requests
        if meta.get("encoders") and not meta["encoders"].get("native"):
            from dfei.data.encoders import load_transform

            root = os.path.join(os.path.dirname(os.path.abspath(path)), meta.get("encoders_root", ""))
            try:
                self.transform = load_transform(root, meta["encoders"], where=f"{path} (encoders in {root})")
            except UserError as err:
                raise ArtifactError(str(err)) from None
            described = [(f["name"], int(f["cardinality"])) for f in meta["features"]]
            if list(zip(self.transform.names, self.transform.cardinalities)) != described:
                raise ArtifactError(f"{path}.json: the encoders' features {self.transform.names} (cardinalities "
                                    f"{self.transform.cardinalities}) are not the model's {described}")
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

    def predict_raw(self, rows, domains) -> np.ndarray:
        """CTR per row, float32 [batch], from raw values: `rows` a list of {feature: value} (one per row)
        or {feature: [values]}, `domains` the raw domain values [batch] (e.g. "home"). Values are
        encoded as the converter encoded the training data (dfei.data.encoders); a feature fitted on
        text takes strings, one fitted on integers takes ints, a numeric one numbers (or their text);
        None is missing (id 0). RequestError names a missing, extra or wrongly typed feature, or an
        unknown domain, with the row."""
        if self.transform is None:
            raise RequestError(f"{self.path}: this model has no encoders (its training data had native ids); "
                               "send feature ids to predict()")
        from dfei.serving.raw import encode_request

        x, d = encode_request(self.transform, self.feature_names, self.domains, rows, domains)
        return self.predict(x, d)
