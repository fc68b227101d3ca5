"""dataset.json is checked when it is read: reserved column names and domain ids never reach a run.

A feature named `path` or `row_hash` would collide with the row identity batch inference adds;
a negative domain id used to wrap around in the id -> index map and score rows with another
domain's tower. Both are refused with a message naming the value; every id -> index map refuses
ids it does not know, and every model refuses a domain index outside [0, D).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from dfei.data.spec import MAX_DOMAIN_ID, RESERVED_COLUMNS, DatasetError, DatasetSpec, load_spec
from dfei.models import build_model


def _raw(**changes) -> dict:
    raw = {"name": "t", "label": "click", "domains": [{"id": 0, "name": "A"}, {"id": 5, "name": "B"}],
           "features": [{"name": "user", "cardinality": 10}, {"name": "site", "cardinality": 4}]}
    raw.update(changes)
    return raw


@pytest.mark.parametrize("reserved", RESERVED_COLUMNS)
def test_a_feature_with_a_reserved_name_is_refused_naming_it_and_the_reserved_names(reserved):
    raw = _raw(features=[{"name": "user", "cardinality": 10}, {"name": reserved, "cardinality": 4}])
    with pytest.raises(DatasetError, match=rf"feature '{reserved}' uses a reserved column name; \['path', 'row_hash'\]"):
        DatasetSpec.from_json(raw)


def test_a_label_with_a_reserved_name_is_refused():
    with pytest.raises(DatasetError, match="label 'row_hash' uses a reserved column name"):
        DatasetSpec.from_json(_raw(label="row_hash"))


@pytest.mark.parametrize("name", ["domain", "score", "label"])
def test_names_no_pipeline_reads_as_its_own_column_are_allowed(name):
    # the partition key `domain` is read from the directory, never as a column; `score` and `label`
    # are written by predict.py as new output columns, not read from the input
    spec = DatasetSpec.from_json(_raw(features=[{"name": name, "cardinality": 40}]))
    assert spec.feature_names == [name]


@pytest.mark.parametrize("bad", [-1, MAX_DOMAIN_ID + 1])
def test_domain_ids_outside_the_valid_range_are_refused(tmp_path, bad):
    (tmp_path / "dataset.json").write_text(json.dumps(_raw(domains=[{"id": 0, "name": "A"}, {"id": bad, "name": "B"}])))
    with pytest.raises(DatasetError, match=rf"dataset.json: domains\[1\] \('B'\): id must be in \[0, {MAX_DOMAIN_ID}\], "
                                           rf"got {bad}"):
        load_spec(str(tmp_path))


def test_duplicate_domain_ids_are_refused():
    with pytest.raises(DatasetError, match=r"duplicate domain id\(s\): \[5\]"):
        DatasetSpec.from_json(_raw(domains=[{"id": 5, "name": "A"}, {"id": 5, "name": "B"}]))


def test_the_id_to_index_map_refuses_unknown_ids_and_needs_no_table_sized_by_the_largest_id():
    spec = DatasetSpec.from_json(_raw(domains=[{"id": 7, "name": "A"}, {"id": MAX_DOMAIN_ID, "name": "B"},
                                               {"id": 0, "name": "C"}]))
    assert spec.domain_index_of([MAX_DOMAIN_ID, 0, 7, 7]).tolist() == [1, 2, 0, 0]  # spec order
    for unknown in (-1, 1, 8, MAX_DOMAIN_ID - 1):
        with pytest.raises(DatasetError, match=rf"domain id {unknown} is not a domain of 't' \(its ids: "):
            spec.domain_index_of([7, unknown])


@pytest.mark.parametrize("model", ["dfei", "star", "star+dfei"])
def test_models_refuse_a_domain_index_outside_their_domains(model):
    torch.manual_seed(0)
    net = build_model(model, [10, 4], 3).eval()
    x = torch.zeros(4, 2, dtype=torch.long)
    net(x, torch.tensor([0, 1, 2, 2]))  # in range: fine
    for bad in ([0, -1, 2, 2], [0, 1, 3, 3]):  # -1 would pick the last domain's tower (index from the end)
        with pytest.raises(IndexError, match=r"domain index (-1|3) outside \[0, 3\)"):
            net(x, torch.tensor(bad))


def test_the_csv_converter_refuses_a_reserved_column_before_writing_and_keeps_a_feature_named_domain(ray_session,
                                                                                                   tmp_path):
    from dfei.data.csv_converter import convert_csv
    from dfei.data.dataset import ParquetDataset

    rng = np.random.default_rng(0)
    n = 300
    logs = pd.DataFrame({"scenario": rng.choice(["feed", "search"], n), "click": rng.integers(0, 2, n),
                         "domain": [f"site{v}" for v in rng.integers(0, 40, n)], "user": rng.integers(0, 30, n)})
    logs.to_csv(tmp_path / "ok.csv", index=False)
    spec = convert_csv(str(tmp_path / "ok.csv"), str(tmp_path / "ok"), "scenario", "click", log=lambda *a: None)
    assert "domain" in spec.feature_names and ParquetDataset(str(tmp_path / "ok")).spec.feature_names == spec.feature_names

    logs.rename(columns={"user": "path"}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DatasetError, match="feature 'path' uses a reserved column name"):
        convert_csv(str(tmp_path / "bad.csv"), str(tmp_path / "bad"), "scenario", "click", log=lambda *a: None)
    assert not (tmp_path / "bad").exists()
