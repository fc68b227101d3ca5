"""Exported models with encoders, made without Ray or training: the online scoring tests' artifacts."""
from __future__ import annotations

import numpy as np
import pytest

FEATURES = ("user_id", "code", "price", "query")


def write_encoded_checkpoint(root: str, seed: int) -> str:
    """A checkpoint of an untrained small DFEI whose data had encoders: a text vocabulary (user_id),
    an integer one (code), bins (price) and hashed text (query); domains "home" (1) and "search" (2)."""
    import torch

    from dfei.config import TrainConfig
    from dfei.data.encoders import Buckets, DomainMap, FeatureEncoder, FeatureTransform, HashBuckets, LabelRule, Vocabulary
    from dfei.data.spec import DatasetSpec, Domain, Feature
    from dfei.models.build import model_from_config
    from dfei.train.checkpoint import TrainState, save_checkpoint

    transform = FeatureTransform(
        features=[FeatureEncoder("user_id", Vocabulary([f"u{i:02d}" for i in range(30)]), "text"),
                  FeatureEncoder("code", Vocabulary(["7", "8", "9"]), "integer"),
                  FeatureEncoder("price", Buckets(np.array([1.0, 10.0, 100.0])), "float"),
                  FeatureEncoder("query", HashBuckets(64, seed=1), "text")],
        domain=DomainMap("site", {"home": 1, "search": 2}), label=LabelRule("clicked"))
    data = f"{root}/data"
    section = transform.write(data)
    spec = DatasetSpec(name="encoded", label="label", domains=[Domain(1, "home"), Domain(2, "search")],
                       features=[Feature(f.name, f.cardinality) for f in transform.features], encoders=section)
    cfg = TrainConfig(data=data, tower_dims=[16, 8], tower_dropouts=[0.0, 0.0], k=4)
    torch.manual_seed(seed)
    model = model_from_config(cfg, spec)
    with torch.no_grad():  # untrained heads score ~0.5 everywhere: spread them so rows differ
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    ckpt = f"{root}/ckpt"
    save_checkpoint(ckpt, model.state_dict(), None, TrainState().to_json(cfg, spec), dataset_root=data)
    return ckpt


@pytest.fixture(scope="session")
def encoded_artifacts(tmp_path_factory) -> dict[str, str]:
    """{"v1", "v2"}: ONNX exports of two such models (other weights, same encoders); "pt": v1 as TorchScript."""
    from dfei.serving.export import export_checkpoint

    root = tmp_path_factory.mktemp("encoded")
    out = {}
    for name, seed in (("v1", 0), ("v2", 1)):
        ckpt = write_encoded_checkpoint(str(root / f"src-{name}"), seed)
        out[name] = str(root / "models" / f"{name}.onnx")
        export_checkpoint(ckpt, "onnx", out[name], log=lambda *a: None)
        if name == "v1":
            out["pt"] = str(root / "models" / "v1.pt")
            export_checkpoint(ckpt, "torchscript", out["pt"], log=lambda *a: None)
    return out


@pytest.fixture(scope="session")
def raw_rows():
    """raw_rows(n, seed): n raw rows of the encoded model (known and unknown users, codes as ints,
    missing prices)."""
    return _raw_rows


def _raw_rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"user_id": f"u{int(rng.integers(40)):02d}", "code": int(rng.choice([7, 8, 9, 10])),
             "price": None if rng.random() < 0.1 else float(np.round(rng.lognormal(2, 1.5), 2)),
             "query": str(rng.choice(["shoes", "red dress", "phone", ""]))} for _ in range(n)]
