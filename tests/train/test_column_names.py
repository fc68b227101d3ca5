"""A feature may be named like the partition key (`domain`) or like an output column (`score`):
every pipeline reads the file's column and takes the row's domain from its directory.

Before, Ray Data's default hive partitioning replaced a `domain` feature with the folder's value
(one distinct value per shard) in `--ingest ray-data` training, and predict.py failed with Ray
Data's "duplicate column names". Batch inference also reads no optimizer state, and refuses a
checkpoint with non-finite weights instead of writing nan scores.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dfei.data.dataset import ParquetDataset
from dfei.errors import CheckpointError
from dfei.train.checkpoint import save_checkpoint
from dfei.models.build import model_from_config
from dfei.config import TrainConfig
from dfei.train.epoch import predict_split

DOMAIN_IDS = (3, 7)  # not 0..D-1: the id -> index map is exercised
FEATURES = [("domain", 40), ("score", 5), ("user", 20)]


def _write(root, rows: int = 300) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "valid", "test"):
        for d in DOMAIN_IDS:
            cols = {name: rng.integers(0, card, rows).astype(np.int32) for name, card in FEATURES}
            cols["label"] = (rng.random(rows) < 0.3).astype(np.int8)
            cols["path"] = np.full(rows, "not-a-feature")  # an extra column named like the row identity
            os.makedirs(root / split / f"domain={d}")
            pq.write_table(pa.table(cols), root / split / f"domain={d}" / "part-00000.parquet")
    (root / "dataset.json").write_text(json.dumps({
        "name": "named", "label": "label", "domains": [{"id": d, "name": f"D{d}"} for d in DOMAIN_IDS],
        "features": [{"name": n, "cardinality": c} for n, c in FEATURES]}))


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    root = tmp_path_factory.mktemp("named")
    _write(root)
    ds = ParquetDataset(str(root))
    cfg = TrainConfig(data=str(root))
    torch.manual_seed(0)
    model = model_from_config(cfg, ds.spec).eval()
    with torch.no_grad():
        model.dfe.v.normal_()  # a trained-looking buffer: scores depend on it
    ckpt = str(root / "ckpt")
    save_checkpoint(ckpt, model.state_dict(), None, {"config": cfg.to_dict(), "dataset": ds.spec.to_json()})
    with open(os.path.join(ckpt, "optimizer.pt"), "wb") as f:
        f.write(b"not a torch file: inference must not read the optimizer state")
    return root, ds, model, ckpt


def test_ray_data_ingest_reads_the_files_domain_column_not_the_partition_value(ray_session, named):
    from dfei.data.ray_ingest import build_shards

    root, ds, _, _ = named
    shards, rows = build_shards(ds, "train", 1)
    for i, d in enumerate(DOMAIN_IDS):
        got = shards[f"train_d{i}_r0"].to_pandas()
        file = pq.read_table(root / "train" / f"domain={d}" / "part-00000.parquet").to_pandas()
        assert sorted(got.columns) == sorted(ds.columns)
        assert got["domain"].nunique() > 30  # the feature's values, not the one folder value
        assert sorted(got["domain"]) == sorted(file["domain"]) and rows[i] == [len(file)]


def test_predict_scores_a_feature_named_domain_as_evaluation_does(ray_session, named, tmp_path):
    from dfei.inference.dataset_scoring import predict

    root, ds, model, ckpt = named
    out = tmp_path / "scores"
    predict(ckpt, str(root), "test", str(out), log=lambda *a: None)
    table = pq.read_table(str(out)).to_pandas()
    assert sorted(table.columns) == ["domain", "label", "path", "row_hash", "score"]
    assert sorted(table["domain"].unique()) == list(DOMAIN_IDS)  # the partition ids, not the feature
    assert table["path"].str.contains("/domain=").all()
    reference = predict_split(model, ds, "test", torch.device("cpu"))  # arrow: the file's columns
    for i, d in enumerate(DOMAIN_IDS):
        np.testing.assert_allclose(np.sort(table.score[table.domain == d].to_numpy()),
                                   np.sort(reference[i]["score"]), rtol=1e-5, atol=1e-7)


def test_predict_refuses_a_checkpoint_with_non_finite_weights(ray_session, named, tmp_path):
    from dfei.train.checkpoint import load_model
    from dfei.inference.dataset_scoring import predict

    root, ds, model, _ = named
    state = model.state_dict()
    state["heads.0.1.weight"] = torch.full_like(state["heads.0.1.weight"], float("nan"))
    ckpt = str(tmp_path / "nan-ckpt")
    save_checkpoint(ckpt, state, None, {"config": TrainConfig(data=str(root)).to_dict(), "dataset": ds.spec.to_json()})
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) hold nan or inf \(heads.0.1.weight\)"):
        load_model(ckpt)
    with pytest.raises(CheckpointError, match="use an earlier checkpoint"):  # on the driver, before any actor
        predict(ckpt, str(root), "test", str(tmp_path / "scores"), log=lambda *a: None)
    assert not (tmp_path / "scores").exists() and not any(p.name.startswith("scores.tmp") for p in tmp_path.iterdir())
