"""A run that cannot fit the machine is refused before Ray starts, naming what to change: embedding
tables larger than the memory (the features responsible, a hashing hint), or CPUs/GPUs that do
not exist (Ray Train would wait for them forever). On a cluster the same findings are warnings."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time

import pytest

from dfei.data.spec import DatasetSpec
from dfei.errors import ResourceError
from dfei.train.resources import check_local_fit, cluster_warnings, embedding_need

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GB = 10**9


def _spec(user_rows: int) -> DatasetSpec:
    return DatasetSpec.from_json({"name": "big", "label": "label", "domains": [{"id": 0, "name": "A"}],
                                  "features": [{"name": "age", "cardinality": 11},
                                               {"name": "user_id", "cardinality": user_rows},
                                               {"name": "item_id", "cardinality": 10**6}]})


def test_the_embedding_need_counts_rows_dim_floats_and_the_copies_training_holds():
    need = embedding_need(_spec(10**10), embed_dim=16)
    assert need.rows == 10**10 + 10**6 + 11
    assert need.table_bytes == need.rows * 16 * 4  # 640 GB for the user table alone
    assert need.worker_bytes == 4 * need.table_bytes  # weights, Adam's two moments, the best epoch's copy
    assert embedding_need(_spec(10), 16, "dense").worker_bytes == 5 * embedding_need(_spec(10), 16).table_bytes
    assert [name for name, _, _ in need.largest] == ["user_id", "item_id", "age"]


def test_tables_larger_than_the_machine_are_refused_naming_the_features_and_hashing():
    with pytest.raises(ResourceError) as info:
        check_local_fit(_spec(10**10), 16, "lazy", num_workers=1, use_gpu=False, cpus_per_worker=None,
                        memory_bytes=24 * GB)
    text = str(info.value)
    assert "10,001,000,011 rows x 16 floats = 640.1 GB" in text and "2.6 TB per worker" in text
    assert "Largest: user_id 10,000,000,000 rows (640.0 GB), item_id 1,000,000 rows (64.0 MB)" in text
    assert "it has 24.0 GB" in text and "hash the largest features" in text
    # what fits one worker may not fit two replicas on the same machine
    check_local_fit(_spec(10**8), 16, "lazy", 1, False, None, memory_bytes=40 * GB)
    with pytest.raises(ResourceError, match="2 worker"):
        check_local_fit(_spec(10**8), 16, "lazy", 2, False, None, memory_bytes=40 * GB)


def test_cpus_and_gpus_that_do_not_exist_are_refused():
    with pytest.raises(ResourceError, match=r"--cpus-per-worker 4 x --num-workers 2 needs 8 CPUs; this machine has 2"):
        check_local_fit(_spec(10), 16, "lazy", 2, False, 4.0, memory_bytes=24 * GB, cpu_count=2)
    with pytest.raises(ResourceError, match=r"--use-gpu gives each of the 1 worker\(s\) a GPU; this machine has 0"):
        check_local_fit(_spec(10), 16, "lazy", 1, True, None, memory_bytes=24 * GB, gpu_count=0)
    check_local_fit(_spec(10), 16, "lazy", 2, True, 1.0, memory_bytes=24 * GB, cpu_count=2, gpu_count=2)


def test_on_a_cluster_the_same_findings_are_warnings():
    nodes = [{"Alive": True, "Resources": {"CPU": 8.0, "memory": 50.0 * GB}},
             {"Alive": False, "Resources": {"CPU": 8.0, "memory": 5000.0 * GB}}]
    warnings = cluster_warnings(_spec(10**10), 16, "lazy", 2, True, nodes, cluster_gpus=0.0)
    assert len(warnings) == 2 and "the largest node alive offers 50.0 GB" in warnings[0]
    assert "the cluster has no GPU now" in warnings[1]
    assert cluster_warnings(_spec(10), 16, "lazy", 2, False, nodes, 0.0) == []


def test_train_cli_refuses_a_huge_cardinality_before_ray_starts(public_tiny, tmp_path, ray_must_not_start, capsys):
    data = tmp_path / "huge"
    shutil.copytree(public_tiny, data)
    spec = json.loads((data / "dataset.json").read_text())
    spec["features"][0]["cardinality"] = 10**10
    (data / "dataset.json").write_text(json.dumps(spec))
    # train.py in this process, as a new process without RAY_ADDRESS sees it: an embedded Ray would start here
    module_spec = importlib.util.spec_from_file_location("pipeline_train", os.path.join(ROOT, "pipelines", "train.py"))
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    t0 = time.time()
    assert module.main(["--data", str(data), "--out", str(tmp_path / "run")]) == 2
    out, err = capsys.readouterr()
    name = spec["features"][0]["name"]
    assert err.startswith("error: ") and f"Largest: {name} 10,000,000,000 rows (640.0 GB)" in err
    assert "[ray]" not in out and "Traceback" not in err  # refused before Ray started
    assert time.time() - t0 < 60 and not (tmp_path / "run").exists()


def test_a_domain_with_fewer_train_rows_than_workers_is_named(public_tiny):
    """public_tiny's B5 has 10 train rows: 16 workers give each rank floor(10 / 16) = 0 of them."""
    from dfei.data.dataset import ParquetDataset
    from dfei.config import TrainConfig
    from dfei.train.driver import check_shares

    dataset = ParquetDataset(public_tiny)
    logged: list[str] = []
    assert check_shares(TrainConfig(data=public_tiny, num_workers=10), dataset, logged.append) == []
    warnings = check_shares(TrainConfig(data=public_tiny, num_workers=16), dataset, logged.append)
    assert len(warnings) == 1 and logged == [f"[data] warning: {warnings[0]}"]
    assert warnings[0].startswith("domain 'B5' has 10 train row(s): with 16 workers each rank's equal share is "
                                  "floor(10 / 16) = 0 rows") and "does not train it" in warnings[0]
