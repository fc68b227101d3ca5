"""Data and checkpoints on an S3-compatible endpoint (moto on 127.0.0.1), through fsspec/pyarrow."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from dfei.data.dataset import ParquetDataset
from dfei.eval.metrics import auc
from dfei.config import TrainConfig
from dfei.inference.dataset_scoring import predict
from dfei.train.driver import run_training


def test_train_and_predict_with_data_and_checkpoints_on_s3(ray_session, s3_endpoint, public_tiny, tmp_path):
    import s3fs

    s3 = s3fs.S3FileSystem()  # endpoint and dummy credentials come from the environment (conftest)
    s3.mkdir("dfei-test")
    s3.put(public_tiny, "dfei-test/ds", recursive=True)
    local, remote = ParquetDataset(public_tiny), ParquetDataset("s3://dfei-test/ds")
    assert remote.rows("train") == local.rows("train") and remote.spec == local.spec

    cfg = TrainConfig(data="s3://dfei-test/ds", out=str(tmp_path / "run"), storage_path="s3://dfei-test/runs",
                      epochs=1, seed=0, cpus_per_worker=1)
    metrics = run_training(cfg)
    ckpt = metrics["checkpoint"]
    assert ckpt.startswith("s3://dfei-test/runs/") and s3.exists(ckpt[len("s3://"):] + "/model.pt")

    predict(ckpt, "s3://dfei-test/ds", "test", str(tmp_path / "scores"))
    scores = pq.read_table(str(tmp_path / "scores")).to_pandas()
    assert len(scores) == sum(local.rows("test"))
    for d in local.spec.domains:
        part = scores[scores.domain == d.id]
        assert auc(part.label, part.score) == pytest.approx(metrics["splits"]["test"][d.name]["auc"], abs=1e-6)
