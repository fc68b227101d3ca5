"""The generator's oracle (each row's true click probability) and eval floor, the oracle's
reference metrics, and the Hanley-McNeil AUC interval."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from dfei.data.dataset import ParquetDataset
from dfei.data.profiles import PUBLIC
from dfei.data.synthetic import FEATURES, ORACLE_COLUMN, generate
from dfei.errors import ConfigError, DatasetError
from dfei.eval.oracle import auc_interval, split_reference

QUIET = {"workers": 1, "log": lambda *a: None}


@pytest.fixture(scope="module")
def floored(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("oracle")
    plain, floor = str(root / "plain"), str(root / "floor")
    generate("public", 0.002, seed=1, out=plain, **QUIET)
    generate("public", 0.002, seed=1, out=floor, min_eval_rows=1500, **QUIET)
    return plain, floor


def _table(ds: ParquetDataset, split: str, d: int) -> pa.Table:
    return pa.concat_tables(pq.read_table(p.path) for p in ds.partitions[split][d].parts)


def test_every_row_carries_its_true_click_probability_and_it_is_not_a_feature(floored):
    ds = ParquetDataset(floored[0])
    assert ds.spec.meta["oracle_column"] == ORACLE_COLUMN and ORACLE_COLUMN not in ds.spec.feature_names
    assert ds.spec.feature_names == FEATURES
    for d in range(len(ds.spec.domains)):
        t = _table(ds, "train", d)
        y, p = t["label"].to_numpy(), t[ORACLE_COLUMN].to_numpy()
        assert p.dtype == np.float32 and p.min() >= 0 and p.max() <= 1
    # the oracle ranks better than chance, and better than any single observed feature
    t = _table(ds, "train", 1)  # B2, the largest domain
    y = t["label"].to_numpy()
    oracle = roc_auc_score(y, t[ORACLE_COLUMN].to_numpy())
    best_feature = max(max(roc_auc_score(y, t[f].to_numpy()), 1 - roc_auc_score(y, t[f].to_numpy()))
                       for f in FEATURES)
    assert oracle > best_feature + 0.05 and oracle > 0.7


def test_the_oracle_is_calibrated(floored):
    # pooled over every split and domain (~32k rows): in each fifth of the probabilities, the click
    # rate equals the mean probability within 4 standard errors (a Logistic instead of the Laplace
    # CDF is off by 0.02-0.04 in the outer fifths, and fails)
    ds = ParquetDataset(floored[1])
    tables = [_table(ds, split, d) for split in ("train", "valid", "test") for d in range(len(ds.spec.domains))]
    y = np.concatenate([t["label"].to_numpy() for t in tables]).astype(float)
    p = np.concatenate([t[ORACLE_COLUMN].to_numpy() for t in tables]).astype(float)
    edges = np.quantile(p, [0.2, 0.4, 0.6, 0.8])
    for b in range(5):
        rows = np.digitize(p, edges) == b
        rate, mean = y[rows].mean(), p[rows].mean()
        assert abs(rate - mean) < 4 * np.sqrt(max(mean * (1 - mean), 1e-4) / rows.sum()), (b, rate, mean)


def test_min_eval_rows_floors_valid_and_test_and_leaves_train_byte_identical(floored):
    plain, floor = (ParquetDataset(p) for p in floored)
    assert floor.spec.meta["min_eval_rows"] == 1500 and plain.spec.meta["min_eval_rows"] == 0
    assert floor.rows("train") == plain.rows("train")
    for split in ("valid", "test"):
        assert floor.rows(split) == [max(n, 1500) for n in plain.rows(split)]
        for prof in PUBLIC:  # each domain's CTR kept (the table's, exactly up to rounding)
            assert floor.spec.meta["ctr"][split][prof.name] == pytest.approx(prof.ctr_pct / 100, abs=1e-3)
    for a, b in zip(plain.partitions["train"], floor.partitions["train"]):
        assert [open(p.path, "rb").read() for p in a.parts] == [open(p.path, "rb").read() for p in b.parts]
    recorded = json.load(open(os.path.join(floored[1], "dataset.json")))
    assert recorded["row_counts"]["test"]["B5"] == 1500


def test_a_negative_floor_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="min-eval-rows must be >= 0, got -1"):
        generate("public", 0.002, seed=1, out=str(tmp_path / "x"), min_eval_rows=-1, **QUIET)
    assert not os.path.exists(tmp_path / "x")


def test_split_reference_gives_counts_and_the_oracles_metrics(floored):
    ds = ParquetDataset(floored[1])
    ref = split_reference(ds, "test")
    t = _table(ds, "test", 0)
    y, p = t["label"].to_numpy(), t[ORACLE_COLUMN].to_numpy()
    assert ref["B1"]["n"] == len(y) and ref["B1"]["positives"] == int(y.sum())
    assert ref["B1"]["auc"] == pytest.approx(roc_auc_score(y, p))
    from sklearn.metrics import log_loss

    assert ref["B1"]["logloss"] == pytest.approx(log_loss(y, p.astype(float)), rel=1e-6)
    train = split_reference(ds, "train", auc=False)
    assert "auc" not in train["B2"] and train["B2"]["logloss"] > 0


def test_split_reference_refuses_an_oracle_outside_0_1(floored, tmp_path):
    import shutil

    root = str(tmp_path / "bad")
    shutil.copytree(floored[0], root)
    ds = ParquetDataset(root)
    path = ds.partitions["test"][2].parts[0].path
    t = pq.read_table(path)
    broken = t.set_column(t.schema.get_field_index(ORACLE_COLUMN), ORACLE_COLUMN,
                          pa.array(np.full(len(t), 1.5, np.float32)))
    pq.write_table(broken, path)
    with pytest.raises(DatasetError, match=r"domain=2/part-00000.parquet: oracle column 'click_prob' has values "
                                           r"outside \[0, 1\].*\(B3, test\)"):
        split_reference(ParquetDataset(root), "test")


def test_split_reference_without_an_oracle_gives_counts_only(floored, tmp_path):
    import shutil

    root = str(tmp_path / "no-oracle")
    shutil.copytree(floored[0], root)
    spec = json.load(open(os.path.join(root, "dataset.json")))
    del spec["meta"]["oracle_column"]
    json.dump(spec, open(os.path.join(root, "dataset.json"), "w"))
    ref = split_reference(ParquetDataset(root), "valid")
    assert set(ref["B1"]) == {"n", "positives"}


def test_hanley_mcneil_interval_covers_the_spread_of_auc_over_test_sets():
    # binormal scores with true AUC ~0.75: the interval's half-width matches the AUC's spread
    # over 400 independent test sets of 300 positives and 700 negatives (within 15 %)
    rng = np.random.default_rng(0)
    aucs = []
    for _ in range(400):
        pos, neg = rng.normal(0.95, 1, 300), rng.normal(0, 1, 700)
        aucs.append(roc_auc_score(np.r_[np.ones(300), np.zeros(700)], np.r_[pos, neg]))
    lo, hi = auc_interval(float(np.mean(aucs)), 300, 700)
    assert (hi - lo) / 2 == pytest.approx(1.96 * np.std(aucs), rel=0.15)
    inside = np.mean([(a >= lo) & (a <= hi) for a in aucs])
    assert 0.9 <= inside <= 0.99
    assert np.isnan(auc_interval(float("nan"), 10, 10)[0]) and np.isnan(auc_interval(0.7, 0, 10)[0])
    narrow, wide = auc_interval(0.7, 1000, 1000), auc_interval(0.7, 10, 10)
    assert narrow[1] - narrow[0] < wide[1] - wide[0] and wide[1] <= 1.0
