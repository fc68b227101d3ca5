"""The data contract is enforced when a dataset is opened: each error names file, column, value."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dfei.data.dataset import ParquetDataset
from dfei.data.ingest import DomainReader, row_range
from dfei.data.spec import DatasetError


@pytest.fixture()
def copy(public_tiny, tmp_path):
    dst = tmp_path / "ds"
    shutil.copytree(public_tiny, dst)
    return dst


def _first_part(root, split="train", domain=0):
    d = root / split / f"domain={domain}"
    return d / sorted(os.listdir(d))[0]


def _rewrite(path, change):
    table = pq.read_table(path)
    pq.write_table(change(table), path)


def test_missing_and_malformed_spec(copy):
    (copy / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="dataset.json: malformed JSON"):
        ParquetDataset(str(copy))
    (copy / "dataset.json").unlink()
    with pytest.raises(DatasetError, match="dataset.json: not found"):
        ParquetDataset(str(copy))


def test_spec_without_features(copy):
    spec = json.loads((copy / "dataset.json").read_text())
    del spec["features"]
    (copy / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(DatasetError, match="missing required key 'features'"):
        ParquetDataset(str(copy))


def test_unknown_domain_partition_and_missing_domain(copy):
    shutil.copytree(copy / "train" / "domain=0", copy / "train" / "domain=9")
    with pytest.raises(DatasetError, match=r"domain=9: domain partition not listed"):
        ParquetDataset(str(copy))
    shutil.rmtree(copy / "train" / "domain=9")
    shutil.rmtree(copy / "valid" / "domain=3")
    with pytest.raises(DatasetError, match=r"valid/domain=3: no .parquet files for domain 'B4'"):
        ParquetDataset(str(copy))


def test_bad_columns_and_values(copy):
    part = _first_part(copy)
    original = pq.read_table(part)
    _rewrite(part, lambda t: t.drop_columns(["hour"]))
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['hour'\]"):
        ParquetDataset(str(copy))
    pq.write_table(original.set_column(original.schema.get_field_index("label"), "label",
                                       pa.array(np.full(original.num_rows, 2, dtype=np.int8))), part)
    with pytest.raises(DatasetError, match="column 'label' has value 2; label values must be 0 or 1"):
        ParquetDataset(str(copy))
    i = original.schema.get_field_index("u_age")
    pq.write_table(original.set_column(i, "u_age", pa.array(np.full(original.num_rows, 11, dtype=np.int32))), part)
    with pytest.raises(DatasetError, match=r"column 'u_age' has value 11; ids must be in \[0, 10\]"):
        ParquetDataset(str(copy))
    pq.write_table(original.set_column(i, "u_age", pa.array(np.full(original.num_rows, 1.5))), part)
    with pytest.raises(DatasetError, match="feature column 'u_age' has type double"):
        ParquetDataset(str(copy))
    j = original.schema.get_field_index("label")
    pq.write_table(original.set_column(j, "label", pa.array(np.zeros(original.num_rows))), part)
    with pytest.raises(DatasetError, match="label column 'label' has type double, expected an integer type"):
        ParquetDataset(str(copy))
    part.write_bytes(b"PAR1 truncated")
    with pytest.raises(DatasetError, match="not a readable Parquet file"):
        ParquetDataset(str(copy))


def test_rank_shares_are_equal_for_training_and_complete_for_evaluation(public_tiny):
    ds = ParquetDataset(public_tiny)
    n = ds.rows("train")[1]
    for world in (1, 2, 3):
        train = [row_range(n, r, world, equal=True) for r in range(world)]
        assert len({hi - lo for lo, hi in train}) == 1 and train[0][1] - train[0][0] == n // world
        evals = [row_range(n, r, world, equal=False) for r in range(world)]
        assert evals[0][0] == 0 and evals[-1][1] == n and all(a[1] == b[0] for a, b in zip(evals, evals[1:]))


def test_shuffled_reader_yields_every_row_once_deterministically(public_tiny):
    ds = ParquetDataset(public_tiny)
    plain = DomainReader(ds, "train", 1, batch_size=100)
    rows = np.concatenate([x for x, _ in plain.batches()])
    shuffled = DomainReader(ds, "train", 1, batch_size=100, shuffle=True, seed=1, shuffle_buffer_rows=1000)
    a = np.concatenate([x for x, _ in shuffled.batches(epoch=0)])
    b = np.concatenate([x for x, _ in shuffled.batches(epoch=0)])
    c = np.concatenate([x for x, _ in shuffled.batches(epoch=1)])
    assert len(list(plain.batches())) == plain.num_batches == -(-len(rows) // 100)
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, rows)
    key = lambda m: sorted(map(tuple, m.tolist()))  # noqa: E731
    assert key(a) == key(rows)


def test_nulls_negative_ids_and_missing_split(copy):
    part = _first_part(copy)
    original = pq.read_table(part)
    i = original.schema.get_field_index("hour")
    values = original.column("hour").to_pylist()
    pq.write_table(original.set_column(i, "hour", pa.array([None] + values[1:], type=pa.int32())), part)
    with pytest.raises(DatasetError, match=r"column 'hour' has 1 null value\(s\)"):
        ParquetDataset(str(copy))
    pq.write_table(original.set_column(i, "hour", pa.array([-3] + values[1:], type=pa.int32())), part)
    with pytest.raises(DatasetError, match=r"column 'hour' has value -3; ids must be in \[0, 24\]"):
        ParquetDataset(str(copy))
    pq.write_table(original, part)
    shutil.rmtree(copy / "test")
    with pytest.raises(DatasetError, match=r"test: split directory missing or empty"):
        ParquetDataset(str(copy))


def test_files_without_statistics_are_scanned(copy):
    part = _first_part(copy)
    original = pq.read_table(part)
    i = original.schema.get_field_index("device")
    bad = original.set_column(i, "device", pa.array([7] + original.column("device").to_pylist()[1:], type=pa.int32()))
    pq.write_table(bad, part, write_statistics=False)
    with pytest.raises(DatasetError, match=r"column 'device' has value 7; ids must be in \[0, 4\]"):
        ParquetDataset(str(copy))
    pq.write_table(original, part, write_statistics=False)
    ParquetDataset(str(copy))  # a clean file without statistics passes


def test_column_sets_must_match_across_files(copy):
    part = _first_part(copy, "valid", 2)
    table = pq.read_table(part)
    pq.write_table(table.append_column("extra", pa.array([0] * table.num_rows)), part)
    with pytest.raises(DatasetError, match=r"column set differs from .*extra \['extra'\]"):
        ParquetDataset(str(copy))


def test_a_valid_split_without_both_classes_is_refused_and_a_single_class_domain_warned(copy):
    from dfei.train.driver import check_evaluable

    def only_zeros(table):
        i = table.schema.get_field_index("label")
        return table.set_column(i, "label", pa.array(np.zeros(table.num_rows, dtype=np.int8)))

    for f in sorted((copy / "valid" / "domain=1").iterdir()):
        _rewrite(f, only_zeros)
    lines: list[str] = []
    ds = ParquetDataset(str(copy))
    assert ds.single_class_domains("valid") == ["B2"]
    check_evaluable(ds, lines.append)
    assert lines == ["[data] warning: valid: domain(s) ['B2'] have a single label class (or no rows): their AUC is "
                     "undefined and left out of avg_auc"]
    for d in range(6):
        for f in sorted((copy / "valid" / f"domain={d}").iterdir()):
            _rewrite(f, only_zeros)
    with pytest.raises(DatasetError, match="valid: no domain has both label classes"):
        check_evaluable(ParquetDataset(str(copy)), lines.append)
