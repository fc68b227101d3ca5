"""Yesterday's encoders for today's logs, end to end: convert day 0 and train; day 1 converted with
day 0's encoders (fixed or grown) continues the run; raw logs are scored with the checkpoint's encoders
exactly as converting them would; the export carries the encoders; data encoded otherwise is refused."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv  # noqa: F401 (pa.csv)
import pyarrow.parquet as pq
import pytest
import torch

from dfei.data.csv_converter import convert_csv
from dfei.data.dataset import ParquetDataset
from dfei.data.encoders import load_transform
from dfei.errors import ConfigError, DatasetError
from dfei.train import warm_start
from dfei.train.checkpoint import load_any_checkpoint, load_checkpoint
from dfei.models.build import model_from_config
from dfei.config import TrainConfig
from dfei.train.optim import build_optimizer
from dfei.inference.dataset_scoring import predict
from dfei.inference.raw_scoring import predict_raw
from dfei.train.driver import check_init_from, run_training

QUIET = {"log": lambda *a: None}
SMALL = {"tower_dims": [16, 8], "tower_dropouts": [0.0, 0.0], "k": 4, "seed": 0}


def _day(day: int, n: int = 3000) -> pd.DataFrame:
    """A raw log: string ids (day 1 adds users and items), a zero-padded code, a price, 3 domains."""
    rng = np.random.default_rng(day)
    users = rng.integers(0, 150 + 50 * day, n)
    items = rng.integers(0, 80 + 40 * day, n)
    domain = rng.choice(["home", "search", "video"], n, p=[0.5, 0.3, 0.2])
    code = rng.choice(["7", "07", "007", "8"], n)
    logit = (users % 7 - 3) * 0.4 + (items % 5 - 2) * 0.5 + np.where(code == "07", 1.0, 0.0)
    return pd.DataFrame({"request_id": [f"r{day}-{i}" for i in range(n)], "user_id": [f"u{u:04d}" for u in users],
                         "item_id": [f"i{i:04d}" for i in items], "code": code, "price": np.round(rng.lognormal(2, 1, n), 2),
                         "site": domain, "clicked": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)})


@pytest.fixture(scope="module")
def days(ray_session, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("days")
    for d in (0, 1):
        _day(d).to_csv(root / f"day{d}.csv", index=False)
    common = {"features": ["user_id", "item_id", "code", "price"], "numeric": ["price"], **QUIET}
    out = {"root": root, "raw1": str(root / "day1.csv")}
    convert_csv(str(root / "day0.csv"), str(root / "d0"), "site", "clicked", **common)
    convert_csv(out["raw1"], str(root / "d1own"), "site", "clicked", **common)  # its own fit: other ids
    convert_csv(out["raw1"], str(root / "d1"), encoders_from=str(root / "d0"), features=common["features"], **QUIET)
    convert_csv(out["raw1"], str(root / "d1g"), encoders_from=str(root / "d0"), features=common["features"],
                grow=True, **QUIET)
    out.update({k: str(root / k) for k in ("d0", "d1", "d1g", "d1own")})
    cfg = TrainConfig(data=out["d0"], out=str(root / "run0"), epochs=1, **SMALL)
    out["ckpt0"] = run_training(cfg, **QUIET)["checkpoint"]
    return out


def test_the_checkpoint_records_and_carries_its_datas_encoders(days):
    state = load_any_checkpoint(days["ckpt0"], state_only=True)
    data = json.load(open(os.path.join(days["d0"], "dataset.json")))["encoders"]
    assert state["state"]["dataset"]["encoders"]["digest"] == data["digest"]
    assert [f["digest"] for f in state["state"]["dataset"]["encoders"]["features"]] == [f["digest"] for f in data["features"]]
    assert os.path.exists(os.path.join(days["ckpt0"], "encoders", "vocabulary-0.parquet"))
    assert state["transform"].names == ["user_id", "item_id", "code", "price"]


def test_fixed_encoders_keep_cardinalities_and_grown_ones_keep_old_ids(days):
    d0, d1, d1g = (ParquetDataset(days[k]).spec for k in ("d0", "d1", "d1g"))
    assert d1.cardinalities == d0.cardinalities and d1.encoders["digest"] == d0.encoders["digest"]
    assert d1g.cardinalities[0] > d0.cardinalities[0] and d1g.cardinalities[1] > d0.cardinalities[1]
    assert d1g.cardinalities[2:] == d0.cardinalities[2:]  # nothing new in `code`; bins never grow
    t0, tg = load_transform(days["d0"], d0.encoders), load_transform(days["d1g"], d1g.encoders)
    old = t0.feature("user_id").encoder.values
    assert tg.feature("user_id").encoder.values.slice(0, len(old)).equals(old)


def test_warm_start_on_grown_encoders_keeps_old_rows_and_their_adam_state_bit_for_bit(days):
    ckpt = load_any_checkpoint(days["ckpt0"])
    spec = ParquetDataset(days["d1g"]).spec
    cfg = TrainConfig(data=days["d1g"], init_from=days["ckpt0"], **SMALL)
    p = warm_start.plan(cfg, spec, ckpt, "ckpt", load_transform(days["d1g"], spec.encoders))
    assert set(p["grown"]) == {"user_id", "item_id"}
    torch.manual_seed(0)
    model = model_from_config(cfg, spec)
    fresh = model.embedding.weight.detach().clone()
    model.load_state_dict(warm_start.model_state(model, ckpt["model"], p))
    optimizer = build_optimizer(model)
    optimizer.load_state_dict(warm_start.optimizer_state(model, optimizer, ckpt["optimizer"], p))
    old_rows, new_rows = warm_start.embedding_rows(*p["rows"])
    old_table = ckpt["model"]["embedding.weight"]
    table = model.embedding.weight.detach()
    assert torch.equal(table[new_rows], old_table[old_rows])  # every old id's row, bit for bit
    added = torch.ones(len(table), dtype=torch.bool)
    added[new_rows] = False
    assert added.sum() == sum(b - a for a, b in p["grown"].values())
    assert torch.equal(table[added], fresh[added])  # the new ids' rows are a fresh model's
    moments = optimizer.state[model.embedding.weight]
    old_moments = ckpt["optimizer"]["state"][0]
    assert torch.equal(moments["exp_avg"][new_rows], old_moments["exp_avg"][old_rows])
    assert torch.equal(moments["exp_avg_sq"][new_rows], old_moments["exp_avg_sq"][old_rows])
    assert not moments["exp_avg"][added].any() and not moments["exp_avg_sq"][added].any()


def test_init_from_refuses_data_encoded_otherwise_naming_the_feature_and_a_value(days):
    for data in (days["d1"], days["d1g"]):  # the same encoders and grown ones are accepted
        check_init_from(TrainConfig(data=data, init_from=days["ckpt0"], **SMALL), ParquetDataset(data).spec, QUIET["log"],
                        load_transform(data, ParquetDataset(data).spec.encoders))
    spec = ParquetDataset(days["d1own"]).spec
    with pytest.raises(DatasetError, match=r"user_id: 'u\d+' is id \d+ in the checkpoint's encoders, \d+ in the data's"):
        check_init_from(TrainConfig(data=days["d1own"], init_from=days["ckpt0"], **SMALL), spec, QUIET["log"],
                        load_transform(days["d1own"], spec.encoders))


def test_a_day_continues_on_grown_encoders(days, tmp_path):
    cfg = TrainConfig(data=days["d1g"], out=str(tmp_path / "run1"), epochs=1, init_from=days["ckpt0"], **SMALL)
    metrics = run_training(cfg, **QUIET)
    assert set(metrics["init_from"]["grown_features"]) == {"user_id", "item_id"}
    assert 0.5 < metrics["avg_auc"]["test"] <= 1


def _scores(path: str, domain: str) -> dict[int, np.ndarray]:
    table = pq.read_table(path).to_pandas()
    return {int(d): np.sort(g["score"].to_numpy()) for d, g in table.groupby(domain)}


def test_raw_scoring_equals_converting_with_the_encoders_then_predicting(days, tmp_path):
    predict_raw(days["ckpt0"], days["raw1"], str(tmp_path / "raw"), keep_columns=["request_id"], **QUIET)
    raw = pq.read_table(str(tmp_path / "raw")).to_pandas()
    assert len(raw) == 3000 and raw["request_id"].is_unique and list(raw.columns) == ["request_id", "domain_id", "score"]
    converted: dict[int, list] = {}
    for split in ("train", "valid", "test"):
        predict(days["ckpt0"], days["d1"], split, str(tmp_path / split), **QUIET)
        for d, s in _scores(str(tmp_path / split), "domain").items():
            converted.setdefault(d, []).append(s)
    got = _scores(str(tmp_path / "raw"), "domain_id")
    assert got.keys() == converted.keys()
    for d in got:  # the same scores: equal to float rounding (batches group rows differently)
        np.testing.assert_allclose(got[d], np.sort(np.concatenate(converted[d])), rtol=0, atol=1e-6)
    # the same ids: the raw rows, as Python values through the serving encoder (what predict_raw and
    # the online side run), == the rows the converter wrote
    from dfei.serving.raw import encode_request

    transform = load_any_checkpoint(days["ckpt0"], state_only=True)["transform"]
    frame = pd.read_csv(days["raw1"], dtype={"user_id": str, "item_id": str, "code": str, "site": str})
    rows = frame[transform.names].astype(object).where(frame[transform.names].notna(), None).to_dict("records")
    x, _ = encode_request(transform, transform.names, {i: n for n, i in transform.domain.ids.items()}, rows,
                          frame["site"].tolist())
    raw_rows = np.sort(np.ascontiguousarray(x.astype(np.int32)).view([("", np.int32)] * 4), axis=0)
    written = pd.concat([pq.read_table(os.path.join(days["d1"], s), columns=transform.names).to_pandas()
                         for s in ("train", "valid", "test")]).to_numpy(np.int32)
    assert np.array_equal(raw_rows, np.sort(np.ascontiguousarray(written).view([("", np.int32)] * 4), axis=0))
    # and each row's score is its own: batch raw scoring == the exported model's predict_raw, by request id
    from dfei.serving.export import export_checkpoint
    from dfei.serving.loader import ServingModel

    export_checkpoint(days["ckpt0"], "torchscript", str(tmp_path / "m.pt"), **QUIET)
    online = ServingModel.load(str(tmp_path / "m.pt")).predict_raw(rows, frame["site"].tolist())
    batch = raw.set_index("request_id")["score"].loc[frame["request_id"]].to_numpy()
    np.testing.assert_allclose(batch, online, rtol=0, atol=1e-6)


def test_data_converted_before_encoders_were_kept_is_refused_across_datasets(days, tmp_path):
    legacy = tmp_path / "legacy"
    shutil.copytree(days["d1"], legacy)
    spec = json.load(open(legacy / "dataset.json"))
    del spec["encoders"]  # as written before encoders were kept: a converted dataset without them
    json.dump(spec, open(legacy / "dataset.json", "w"))
    with pytest.raises(DatasetError, match="was converted before encoders were kept"):
        check_init_from(TrainConfig(data=str(legacy), init_from=days["ckpt0"], **SMALL),
                        ParquetDataset(str(legacy)).spec, QUIET["log"], None)
    with pytest.raises(DatasetError, match="was converted before encoders were kept"):
        predict(days["ckpt0"], str(legacy), "test", str(tmp_path / "out"), **QUIET)


def test_grown_data_is_scored_as_the_checkpoints_encoders_would(days, tmp_path):
    predict(days["ckpt0"], days["d1g"], "test", str(tmp_path / "grown"), **QUIET)
    predict(days["ckpt0"], days["d1"], "test", str(tmp_path / "fixed"), **QUIET)
    grown, fixed = _scores(str(tmp_path / "grown"), "domain"), _scores(str(tmp_path / "fixed"), "domain")
    for d in fixed:
        np.testing.assert_allclose(grown[d], fixed[d], rtol=0, atol=1e-6)
    with pytest.raises(DatasetError, match="user_id: 'u.*' is id .* in the checkpoint's encoders"):
        predict(days["ckpt0"], days["d1own"], "test", str(tmp_path / "own"), **QUIET)


def test_raw_scoring_refuses_what_it_cannot_encode(days, tmp_path):
    df = _day(1, 200)
    df.loc[5, "site"] = "shop"
    df.to_csv(tmp_path / "unknown.csv", index=False)
    with pytest.raises(DatasetError, match=r"unknown.csv: domain value\(s\) \['shop'\] \(column 'site'\) are not domains"):
        predict_raw(days["ckpt0"], str(tmp_path / "unknown.csv"), str(tmp_path / "a"), **QUIET)
    assert not (tmp_path / "a").exists()
    words = _day(1, 200).astype({"price": object})
    words.loc[7, "price"] = "cheap"
    words.to_csv(tmp_path / "words.csv", index=False)
    with pytest.raises(DatasetError, match=r"words.csv: numeric feature 'price' has a value that is not a number: 'cheap'"):
        predict_raw(days["ckpt0"], str(tmp_path / "words.csv"), str(tmp_path / "e"), **QUIET)
    typed = _day(1, 200)
    typed["code"] = typed["code"].astype(int)  # Parquet integers where the encoders were fitted on text
    typed.to_parquet(tmp_path / "typed.parquet")
    with pytest.raises(DatasetError, match=r"column 'code' is integer here .* but was text"):
        predict_raw(days["ckpt0"], str(tmp_path / "typed.parquet"), str(tmp_path / "b"), **QUIET)
    _day(1, 200).drop(columns=["item_id"]).to_csv(tmp_path / "lacking.csv", index=False)
    with pytest.raises(DatasetError, match=r"column\(s\) \['item_id'\] not found"):
        predict_raw(days["ckpt0"], str(tmp_path / "lacking.csv"), str(tmp_path / "c"), **QUIET)
    # a checkpoint of data with native ids (synthetic) has no encoders
    fake = tmp_path / "native-ckpt"
    shutil.copytree(days["ckpt0"], fake)
    state = json.load(open(fake / "state.json"))
    state["dataset"]["encoders"] = {"native": True}
    json.dump(state, open(fake / "state.json", "w"))
    with pytest.raises(ConfigError, match="native ids .* score a converted dataset with --data"):
        predict_raw(str(fake), days["raw1"], str(tmp_path / "d"), **QUIET)


def test_a_corrupt_encoder_file_in_a_checkpoint_is_refused_by_name(days, tmp_path):
    broken = tmp_path / "ckpt"
    shutil.copytree(days["ckpt0"], broken)
    vocab = broken / "encoders" / "vocabulary-1.parquet"
    table = pq.read_table(vocab)
    values = table.column("value").to_pylist()
    values[0], values[1] = values[1], values[0]  # two items swap ids
    pq.write_table(table.set_column(1, "value", pa.array(values, table.schema.field("value").type)), vocab)
    with pytest.raises(DatasetError, match=r"feature 'item_id'.* does not match the recorded digest"):
        predict_raw(str(broken), days["raw1"], str(tmp_path / "out"), **QUIET)
    os.remove(vocab)
    with pytest.raises(DatasetError, match=r"encoders/vocabulary-1.parquet of feature 'item_id' is missing"):
        load_checkpoint(str(broken))


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_the_export_carries_the_encoders_and_predict_raw_equals_the_id_path(days, tmp_path, fmt):
    from dfei.serving.export import export_checkpoint
    from dfei.serving.loader import ArtifactError, RequestError, ServingModel

    out = str(tmp_path / f"m.{fmt}")
    meta = export_checkpoint(days["ckpt0"], fmt, out, **QUIET)
    data = json.load(open(os.path.join(days["d0"], "dataset.json")))["encoders"]
    assert meta["encoders"]["digest"] == data["digest"] and os.path.isdir(out + ".encoders")
    model = ServingModel.load(out)
    raw = _day(1, 500)
    raw.loc[3, "price"] = None
    rows = raw[model.feature_names].astype(object).where(raw[model.feature_names].notna(), None).to_dict("records")
    table = pa.Table.from_pandas(raw[model.feature_names + ["site"]].astype({"code": str}), preserve_index=False)
    ids = model.transform.encode(table)
    x = np.stack([ids[n] for n in model.feature_names], axis=1)
    assert np.array_equal(model.predict_raw(rows, raw["site"].tolist()),
                          model.predict(x, model.transform.domain.encode(table.column("site"))))
    assert (x[:, 0] == 0).any() and (x[:, 0] > 0).any()  # day 1's new users are unknown (0), old ones known
    with pytest.raises(RequestError, match=r"feature 'code': 7 \(int\) at row 0: this feature was fitted on text"):
        model.predict_raw([{**rows[0], "code": 7}], ["home"])
    with pytest.raises(RequestError, match=r"domain 'shop' at row 0 is not one the model was trained on"):
        model.predict_raw(rows[:1], ["shop"])
    with pytest.raises(RequestError, match=r"missing \['price'\], unknown \['cost'\]"):
        model.predict_raw({**{k: [v] for k, v in rows[0].items() if k != "price"}, "cost": [1.0]}, ["home"])
    with pytest.raises(RequestError, match=r"numeric feature 'price' has 1 value\(s\) that are not numbers"):
        model.predict_raw([{**rows[0], "price": "cheap"}], ["home"])
    vocab = os.path.join(out + ".encoders", "encoders", "vocabulary-0.parquet")
    os.remove(vocab)
    with pytest.raises(ArtifactError, match=r"vocabulary-0.parquet of feature 'user_id' is missing"):
        ServingModel.load(out)
