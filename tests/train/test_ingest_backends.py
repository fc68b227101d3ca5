"""Both ingest backends give every rank floor(n_d / N) rows of every domain, in lock-step."""
from __future__ import annotations

import pytest

from dfei.data.dataset import ParquetDataset
from dfei.train.config import TrainConfig
from dfei.train.runner import run_training


@pytest.mark.parametrize("ingest", ["arrow", "ray-data"])
def test_two_workers_train_on_equal_shares(ray_session, public_tiny, tmp_path, ingest):
    cfg = TrainConfig(data=public_tiny, out=str(tmp_path / ingest), epochs=1, num_workers=2, cpus_per_worker=0.5,
                      ingest=ingest, seed=0)
    metrics = run_training(cfg)
    rows = ParquetDataset(public_tiny).rows("train")
    assert metrics["history"][0]["samples"] == sum(2 * (n // 2) for n in rows)
    # one optimizer update per domain batch per rank: sum of ceil(floor(n/2) / 512) over domains
    assert metrics["global_step"] == sum(-(-(n // 2) // 512) for n in rows)
    assert metrics["config"]["ingest"] == ingest and 0.0 < metrics["avg_auc"]["test"] < 1.0
