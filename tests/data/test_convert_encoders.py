"""The CSV/Parquet converter's persisted encoders, on Ray Data: fitted and written into the dataset,
reused for the next day's logs (`--encoders-from`: fixed ids, unknown values 0), grown (`--grow`:
new values at V+1.. in count order, new domains), hashed (`--hash`), and every bad input refused
naming the feature/value/file with nothing written. Also the raw-text rules of CSV input: zero-padded
codes and domain values stay text, a column changing type after the first block converts, a numeric
feature meeting text and a duplicated header are refused by name.

Every row is followed from its raw value to its written id: each test table has an `event_id` column
hashed into 10^9 buckets (no collision among these rows, checked), so a written row is joined back
to the raw row it came from. Conversions are few and small (they dominate the run time): three
module-scoped datasets (day 0 fitted through the CLI, day 1 encoded through the CLI, day 1 grown)
plus three single-purpose runs; every error found before Ray Data starts is checked with Ray's
start patched to fail.
"""
from __future__ import annotations

import glob
import importlib.util
import json
import os
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from dfei.data import csv_blocks as cb
from dfei.data.csv_converter import convert_csv
from dfei.data.dataset import ParquetDataset
from dfei.data.encoders import Buckets, HashBuckets, Vocabulary, hash64, load_transform
from dfei.data.encoders.compat import relate
from dfei.data.spec import DatasetError, load_spec
from dfei.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUIET = {"log": lambda *a: None}
SEED = 3  # --hash-seed
EVENT_BUCKETS = 10**9
QUERY_BUCKETS = 50
FEATURES = ["event_id", "user", "item", "query", "price"]  # the dataset's order: categorical (as in the input), then numeric


def _cli(script: str):
    spec = importlib.util.spec_from_file_location(f"cli_{script}", os.path.join(ROOT, "pipelines", f"{script}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _no_output(path) -> bool:
    return not os.path.exists(path) and not glob.glob(f"{path}.tmp-*")


# --- test data ------------------------------------------------------------------------------------

def _table(event_ids, user, item, query, price, site, clicked) -> pa.Table:
    """A log table as stored in Parquet: user int64, the rest text, price float64, clicked int64."""
    return pa.table({"event_id": pa.array(event_ids, pa.string()), "user": pa.array(user, pa.int64()),
                     "item": pa.array(item, pa.string()), "query": pa.array(query, pa.string()),
                     "price": pa.array(price, pa.float64()), "site": pa.array(site, pa.string()),
                     "clicked": pa.array(clicked, pa.int64())})


def _random_logs(n: int, seed: int, day: str, users: int, items: int, sites=("home", "search")) -> pa.Table:
    rng = np.random.default_rng(seed)
    price = rng.random(n) * 100
    price[::9] = np.nan
    return _table([f"e{day}-{i:05d}" for i in range(n)], rng.integers(0, users, n),
                  [f"i{int(v):05d}" for v in rng.random(n) ** 2 * items],  # skewed: counts differ
                  [f"q{v}" for v in rng.integers(0, 200, n)], price, rng.choice(list(sites), n), rng.integers(0, 2, n))


def _splits(table: pa.Table) -> np.ndarray:
    """The split (0 train, 1 valid, 2 test) each row of a Parquet input gets under the default rule
    (random by row, 10%/10%, seed 0): the converter's row key, used to build rows that land in train."""
    keys = cb.seeded(cb.row_hashes(table), 0)
    return cb.SplitRule("random", 0.1, 0.1, 0).assign(pa.table({cb.KEY: pa.array(keys, pa.uint64())}))


def _grow_logs(base: pa.Table) -> pa.Table:
    """Day 1 plus rows that make --grow's order visible: new users 99, 100, 1000 with 3 train rows
    each (a tie: by number, 99 < 100 < 1000, not by text), 7777 with 1 (under --min-count 2); new
    items n-c (5 train rows), n-a and n-b (4 each: a tie, by text), n-rare (1), n-eval (valid/test
    only); a new domain `cart`."""
    quota = [("user", 99, 3, 1), ("user", 100, 3, 1), ("user", 1000, 3, 1), ("user", 7777, 1, 2),
             ("item", "n-c", 5, 1), ("item", "n-a", 4, 1), ("item", "n-b", 4, 1), ("item", "n-rare", 1, 1),
             ("item", "n-eval", 0, 2)]
    rng = np.random.default_rng(7)
    rows = []
    for q, (column, value, n_train, n_other) in enumerate(quota):
        m = 60  # candidates; each lands in train with probability 0.8
        cand = _table([f"e2-{q}-{i:03d}" for i in range(m)],
                      [value] * m if column == "user" else rng.integers(0, 30, m),
                      [value] * m if column == "item" else [f"i{v:05d}" for v in rng.integers(0, 10, m)],
                      [f"q{v}" for v in rng.integers(0, 200, m)], rng.random(m) * 100, ["home"] * m,
                      rng.integers(0, 2, m))
        where = _splits(cand)
        pick = list(np.flatnonzero(where == 0)[:n_train]) + list(np.flatnonzero(where != 0)[:n_other])
        rows.append(cand.take(pick))
    cart = _table([f"e2-cart-{i}" for i in range(6)], [1, 2, 3, 4, 5, 6], ["i00001"] * 6, ["q1"] * 6,
                  [10.0] * 6, ["cart"] * 6, [1, 0, 1, 0, 1, 0])
    return pa.concat_tables([base, *rows, cart])


# --- reading a written dataset back ---------------------------------------------------------------

def _vocab(ds: str, feature: str) -> dict[str, int]:
    """{raw text: id} of a dataset's vocabulary file for `feature`."""
    entry = next(f for f in load_spec(ds).encoders["features"] if f["name"] == feature)
    values = pq.read_table(os.path.join(ds, entry["file"])).column("value").to_pylist()
    return {v: i + 1 for i, v in enumerate(values)}


def _rows(ds: str, raw: pa.Table) -> pd.DataFrame:
    """Every written row joined to its raw row (by the hashed event id): the raw columns, `split`,
    `domain` and each feature's written id as `<feature>_id`."""
    spec = load_spec(ds)
    parts = []
    for s in ("train", "valid", "test"):
        for d in spec.domains:
            t = pq.read_table(os.path.join(ds, s, f"domain={d.id}")).to_pandas()
            parts.append(t.assign(split=s, domain=d.id))
    written = pd.concat(parts, ignore_index=True).rename(columns={f: f"{f}_id" for f in FEATURES})
    frame = raw.to_pandas()
    frame["event_id_id"] = HashBuckets(EVENT_BUCKETS, SEED).encode(raw.column("event_id"))
    assert frame["event_id_id"].is_unique  # no collision: the join is exact
    joined = frame.merge(written, on="event_id_id", how="inner", validate="one_to_one")
    assert len(joined) == len(frame) == len(written)
    return joined


# --- the datasets: day 0 fitted, day 1 encoded, day 1 grown ---------------------------------------

@pytest.fixture(scope="module")
def days(ray_session, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("days")
    day0 = _random_logs(400, 0, "0", users=30, items=40)
    day1 = _random_logs(300, 1, "1", users=40, items=60)  # users 30.. and items 40.. are new
    grow = _grow_logs(day1)
    paths = {name: str(root / f"{name}.parquet") for name in ("day0", "day1", "grow")}
    for name, table in (("day0", day0), ("day1", day1), ("grow", grow)):
        pq.write_table(table, paths[name])
    main = _cli("prepare_data")
    out0, out1, out_grow = str(root / "ds0"), str(root / "ds1"), str(root / "ds-grow")
    assert main(["csv", "--input", paths["day0"], "--domain-col", "site", "--label-col", "clicked", "--user-col",
                 "user", "--numeric", "price", "--hash", f"query={QUERY_BUCKETS}",
                 "--hash", f"event_id={EVENT_BUCKETS}", "--hash-seed", str(SEED), "--out", out0]) == 0
    assert main(["csv", "--input", paths["day1"], "--encoders-from", out0, "--out", out1]) == 0
    convert_csv(paths["grow"], out_grow, encoders_from=out0, grow=True, min_count=2, **QUIET)
    return {"root": root, "raw": {"day0": day0, "day1": day1, "grow": grow}, "input": paths,
            "ds0": out0, "ds1": out1, "grow": out_grow}


def test_the_fitted_encoders_are_written_and_listed_with_digests(days):
    ds = days["ds0"]
    spec = load_spec(ds)
    section = spec.encoders
    assert [f.name for f in spec.features] == FEATURES and spec.user_column == "user"
    assert [(f["name"], f["kind"], f["source"]) for f in section["features"]] == [
        ("event_id", "hash", "text"), ("user", "vocabulary", "integer"), ("item", "vocabulary", "text"),
        ("query", "hash", "text"), ("price", "buckets", "float")]
    assert section["format"] == 1 and section["hash"] == "fnv1a64-splitmix64" and section["digest"].startswith("sha256:")
    assert section["domain"]["column"] == "site" and section["domain"]["values"] == {"home": 0, "search": 1}
    assert section["label"] == {"column": "clicked", "threshold": None}
    by_name = {f["name"]: f for f in section["features"]}
    assert by_name["query"]["buckets"] == QUERY_BUCKETS and by_name["query"]["seed"] == SEED
    assert by_name["event_id"]["buckets"] == EVENT_BUCKETS and "file" not in by_name["query"]
    assert sorted(os.listdir(os.path.join(ds, "encoders"))) == sorted(
        os.path.basename(f["file"]) for f in section["features"] if f["kind"] == "vocabulary")
    for f, feature in zip(section["features"], spec.features):
        assert f["digest"].startswith("sha256:")
        if f["kind"] == "vocabulary":  # each file's content is what its digest says, its size the cardinality's
            vocab = Vocabulary.read(os.path.join(ds, f["file"]), pafs.LocalFileSystem(), "t")
            assert vocab.digest() == f["digest"] and vocab.size == f["size"] == feature.cardinality - 1
        elif f["kind"] == "buckets":
            assert Buckets(np.array(f["edges"])).digest() == f["digest"] and len(f["edges"]) == feature.cardinality - 2
        else:
            assert HashBuckets(f["buckets"], f["seed"]).digest() == f["digest"] and f["buckets"] == feature.cardinality - 1
    transform = load_transform(ds, section)
    assert transform.cardinalities == [f.cardinality for f in spec.features]
    assert spec.meta["encoders_from"] is None and spec.meta["min_count"] == 1
    assert set(spec.meta["id0_share"]) == {"train", "valid", "test"} and spec.meta["id0_share"]["train"]["item"] == 0
    ParquetDataset(ds)  # the contract's reader accepts it


def test_day0_vocabularies_are_the_train_values_by_count_then_value_and_hashes_follow_the_definition(days):
    rows = _rows(days["ds0"], days["raw"]["day0"])
    train = rows[rows.split == "train"]
    for feature, numeric in (("user", True), ("item", False)):
        counts = train[feature].astype(str).value_counts()
        order = sorted(counts.index, key=lambda v: (-counts[v], float(v) if numeric else 0, v))
        assert list(_vocab(days["ds0"], feature)) == order, feature  # users tie by number: 2 < 10
        ids = _vocab(days["ds0"], feature)
        assert (rows[f"{feature}_id"] == rows[feature].astype(str).map(ids).fillna(0)).all()
    want = [1 + int(h) % QUERY_BUCKETS for h in hash64(pa.array(rows["query"].tolist(), pa.large_string()), SEED)]
    assert rows["query_id"].tolist() == want
    assert (rows["label"] == rows["clicked"]).all()
    assert (rows["domain"] == rows["site"].map({"home": 0, "search": 1})).all()


def test_day1_with_the_encoders_of_day0_keeps_every_id_and_maps_unknown_values_to_0(days):
    ds0, ds1 = days["ds0"], days["ds1"]
    spec0, spec1 = load_spec(ds0), load_spec(ds1)
    assert spec1.encoders == spec0.encoders  # nothing fitted: the same encoders, the same digests
    assert [f.cardinality for f in spec1.features] == [f.cardinality for f in spec0.features]
    assert spec1.meta["encoders_from"] == ds0 and "grown" not in spec1.meta
    for feature in ("user", "item"):
        assert _vocab(ds1, feature) == _vocab(ds0, feature)
    t0, t1 = load_transform(ds0, spec0.encoders), load_transform(ds1, spec1.encoders)
    assert relate(t0, t1, "t").kind == "same"
    rows = _rows(ds1, days["raw"]["day1"])
    for feature in ("user", "item"):
        ids = _vocab(ds0, feature)
        want = rows[feature].astype(str).map(ids).fillna(0).astype(int)
        assert (rows[f"{feature}_id"] == want).all(), feature
        unknown = ~rows[feature].astype(str).isin(list(ids))
        assert unknown.any() and (rows.loc[unknown, f"{feature}_id"] == 0).all()  # in train too: nothing fitted
        assert (rows.loc[unknown & (rows.split == "train"), f"{feature}_id"] == 0).all()
        assert unknown[rows.split == "train"].any()
    edges = np.array(next(f for f in spec0.encoders["features"] if f["name"] == "price")["edges"])
    assert (rows["price_id"] == Buckets(edges).encode(rows["price"].to_numpy())).all()  # day 0's bins
    assert (rows["domain"] == rows["site"].map({"home": 0, "search": 1})).all()
    assert spec1.meta["id0_share"]["train"]["user"] > 0  # new users: id 0 even in train


def test_grow_keeps_old_ids_and_appends_new_values_in_count_order(days):
    ds0, dsg = days["ds0"], days["grow"]
    spec0, specg = load_spec(ds0), load_spec(dsg)
    rows = _rows(dsg, days["raw"]["grow"])
    assert (rows["split"].map({"train": 0, "valid": 1, "test": 2}).to_numpy() == _splits(days["raw"]["grow"])).all()
    train = rows[rows.split == "train"]
    for feature, numeric in (("user", True), ("item", False)):
        old, new = _vocab(ds0, feature), _vocab(dsg, feature)
        assert list(new)[:len(old)] == list(old)  # known ids never move
        counts = train[feature].astype(str).value_counts()
        fresh = [v for v in counts.index if v not in old and counts[v] >= 2]
        appended = sorted(fresh, key=lambda v: (-counts[v], float(v) if numeric else 0, v))
        assert list(new)[len(old):] == appended, feature
        assert {v: new[v] for v in appended} == {v: len(old) + 1 + i for i, v in enumerate(appended)}
        assert specg.meta["grown"][feature] == len(appended)
        want = rows[feature].astype(str).map(new).fillna(0).astype(int)
        assert (rows[f"{feature}_id"] == want).all(), feature
    users, items = _vocab(dsg, "user"), _vocab(dsg, "item")
    assert users["99"] + 1 == users["100"] == users["1000"] - 1  # tied counts: by number
    assert items["n-c"] < items["n-a"] < items["n-b"] and items["n-a"] + 1 == items["n-b"]  # by count, then text
    for rare in ("7777",):
        assert rare not in users  # seen once in train: under --min-count 2
    assert "n-rare" not in items and "n-eval" not in items  # once in train; only in valid/test
    assert (rows.loc[rows.item.isin(["n-rare", "n-eval"]), "item_id"] == 0).all()
    # the new domain: a new id; the old ones keep theirs
    assert specg.encoders["domain"]["values"] == {"home": 0, "search": 1, "cart": 2}
    assert {d.name: d.id for d in specg.domains} == {"home": 0, "search": 1, "cart": 2}
    assert (rows["domain"] == rows["site"].map({"home": 0, "search": 1, "cart": 2})).all()
    assert specg.meta["new_domains"] == ["cart"] and specg.meta["encoders_from"] == ds0
    # cardinalities: grown vocabularies only; bins and hashes as they were
    cards0 = {f.name: f.cardinality for f in spec0.features}
    cardsg = {f.name: f.cardinality for f in specg.features}
    assert cardsg == {**cards0, "user": len(users) + 1, "item": len(items) + 1}
    relation = relate(load_transform(ds0, spec0.encoders), load_transform(dsg, specg.encoders), "t")
    assert relation.kind == "grown" and relation.new_domains == {"cart": 2}
    assert relation.grown == {"user": (cards0["user"], cardsg["user"]), "item": (cards0["item"], cardsg["item"])}


# --- bad inputs: refused by name, nothing written --------------------------------------------------

@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if the conversion gets as far as starting Ray: these errors come first."""
    from dfei import ray_runtime

    def started(*args, **kwargs):
        raise AssertionError("the conversion started Ray before refusing its input")

    monkeypatch.setattr(ray_runtime, "init_ray", started)


def _copy(days, name: str) -> str:
    target = str(days["root"] / name)
    shutil.copytree(days["ds0"], target)
    return target


def _day1_file(days, name: str, table: pa.Table) -> str:
    path = str(days["root"] / name)
    if name.endswith(".csv"):
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path


def _refused(days, tmp_path, error, match: str, input: str | None = None, **kwargs):
    out = tmp_path / "out"
    with pytest.raises(error, match=match):
        convert_csv(input or days["input"]["day1"], str(out), **kwargs, **QUIET)
    assert _no_output(out)


def test_missing_corrupt_or_edited_encoders_are_refused_naming_the_feature(days, tmp_path, no_ray):
    item_file = next(f["file"] for f in load_spec(days["ds0"]).encoders["features"] if f["name"] == "item")
    missing = _copy(days, "missing")
    os.remove(os.path.join(missing, item_file))
    _refused(days, tmp_path, DatasetError, rf"missing: encoder file {item_file} of feature 'item' is missing",
             encoders_from=missing)
    corrupt = _copy(days, "corrupt")
    with open(os.path.join(corrupt, item_file), "wb") as f:
        f.write(b"PAR1 this is no parquet PAR1")
    _refused(days, tmp_path, DatasetError, rf"corrupt/{item_file} \(feature 'item'\): cannot read the vocabulary",
             encoders_from=corrupt)
    edited = _copy(days, "edited")  # two ids swapped: a valid file, another digest
    values = list(_vocab(days["ds0"], "item"))
    values[0], values[1] = values[1], values[0]
    Vocabulary(values).write(os.path.join(edited, item_file), pafs.LocalFileSystem())
    _refused(days, tmp_path, DatasetError, rf"feature 'item': its encoder file {item_file} does not match the recorded "
             rf"digest", encoders_from=edited)
    section_edited = _copy(days, "section")
    raw = json.load(open(os.path.join(section_edited, "dataset.json")))
    raw["encoders"]["features"][4]["edges"][0] += 0.5  # price's first bin edge
    json.dump(raw, open(os.path.join(section_edited, "dataset.json"), "w"))
    _refused(days, tmp_path, DatasetError, r"feature 'price': its encoder entry does not match the recorded digest",
             encoders_from=section_edited)


def test_encoders_from_a_dataset_without_encoders_is_refused(days, tmp_path, no_ray):
    spec = json.load(open(os.path.join(days["ds0"], "dataset.json")))
    for name, encoders in (("native", {"native": True}), ("old", None)):
        target = tmp_path / name
        os.makedirs(target)
        raw = {k: v for k, v in spec.items() if k != "encoders"}
        if encoders is not None:
            raw["encoders"] = encoders
        (target / "dataset.json").write_text(json.dumps(raw))
        _refused(days, tmp_path, ConfigError, rf"--encoders-from {target}: that dataset has no encoders",
                 encoders_from=str(target))
    _refused(days, tmp_path, DatasetError, r"nowhere/dataset.json: not found", encoders_from=str(tmp_path / "nowhere"))


def test_new_logs_must_have_the_encoders_features_and_no_others(days, tmp_path, no_ray):
    day1 = days["raw"]["day1"]
    lacking = _day1_file(days, "lacking.parquet", day1.drop_columns(["item"]))
    _refused(days, tmp_path, DatasetError, r"lacking.parquet: column\(s\) \['item'\] not found; the file has",
             input=lacking, encoders_from=days["ds0"])
    extra = _day1_file(days, "extra.parquet", day1.append_column("color", pa.array(["red"] * len(day1))))
    _refused(days, tmp_path, DatasetError, r"extra.parquet: column\(s\) \['color'\] are not in the encoders of .*ds0 "
             r"\(features \['event_id', 'user', 'item', 'query', 'price'\]\)", input=extra, encoders_from=days["ds0"])


def test_a_column_whose_kind_changed_since_the_encoders_were_fitted_is_refused(days, tmp_path, no_ray):
    day1 = days["raw"]["day1"]
    # user was fitted on integer Parquet: as CSV it is text ('7' and '07' would be two values)
    as_csv = _day1_file(days, "day1.csv", day1)
    _refused(days, tmp_path, DatasetError, r"day1.csv: column 'user' is text here \(CSV columns are read as text, as "
             r"written\) but was integer when the encoders .* were fitted", input=as_csv, encoders_from=days["ds0"])
    as_text = _day1_file(days, "user-text.parquet", day1.set_column(1, "user", pc.cast(day1.column("user"), pa.string())))
    _refused(days, tmp_path, DatasetError, r"user-text.parquet: column 'user' is text here \(Parquet: string\) but was "
             r"integer", input=as_text, encoders_from=days["ds0"])
    numbers = pa.array(np.arange(len(day1)), pa.int64())
    item_ints = _day1_file(days, "item-int.parquet", day1.set_column(2, "item", numbers))
    _refused(days, tmp_path, DatasetError, r"item-int.parquet: column 'item' is integer here \(Parquet: int64\) but was "
             r"text", input=item_ints, encoders_from=days["ds0"])
    site_ints = _day1_file(days, "site-int.parquet", day1.set_column(5, "site", numbers))
    _refused(days, tmp_path, DatasetError, r"column 'site' is integer here", input=site_ints, encoders_from=days["ds0"])


def test_every_file_of_a_glob_needs_the_columns_read_and_one_kind_per_keyed_column(days, tmp_path, no_ray):
    day1 = days["raw"]["day1"]
    # a later file lacking a feature column (the features being the first file's other columns): not 0s
    os.makedirs(tmp_path / "csv")
    pacsv.write_csv(day1.slice(0, 100), str(tmp_path / "csv" / "a.csv"))
    pacsv.write_csv(day1.slice(100).drop_columns(["item"]), str(tmp_path / "csv" / "b.csv"))
    _refused(days, tmp_path, DatasetError, rf"^{tmp_path / 'csv' / 'b.csv'}: column 'item' not found \(the first file, "
             rf".*a.csv, has it\)", input=str(tmp_path / "csv" / "*.csv"), domain_col="site", label_col="clicked")
    # integer user ids in one Parquet file, text in the next: refused with the encoders and without
    os.makedirs(tmp_path / "pq")
    pq.write_table(day1.slice(0, 100), str(tmp_path / "pq" / "1.parquet"))
    later = day1.slice(100)
    pq.write_table(later.set_column(1, "user", pc.cast(later.column("user"), pa.string())),
                   str(tmp_path / "pq" / "2.parquet"))
    glob_ = str(tmp_path / "pq" / "*.parquet")
    message = rf"^{tmp_path / 'pq' / '2.parquet'}: column 'user' is text here but integer in .*1.parquet"
    _refused(days, tmp_path, DatasetError, message, input=glob_, encoders_from=days["ds0"])
    _refused(days, tmp_path, DatasetError, message, input=glob_, domain_col="site", label_col="clicked")


def test_settings_the_encoders_fix_cannot_be_changed(days, tmp_path, no_ray):
    e = days["ds0"]
    _refused(days, tmp_path, ConfigError, r"--domain-col 'item': the encoders of .* were fitted with 'site'",
             encoders_from=e, domain_col="item")
    _refused(days, tmp_path, ConfigError, r"--label-threshold 1.0: .* fitted with None", encoders_from=e,
             label_threshold=1.0)
    _refused(days, tmp_path, ConfigError, r"--hash \{'query': 51, 'event_id': 1000000000\}: .* fitted with", encoders_from=e,
             hash_buckets={"query": 51, "event_id": EVENT_BUCKETS})
    _refused(days, tmp_path, ConfigError, r"--numeric \['item', 'price'\]", encoders_from=e, numeric=["item", "price"])
    _refused(days, tmp_path, ConfigError, r"--hash-seed 4: .* fitted with 3", encoders_from=e, hash_seed=4)
    _refused(days, tmp_path, ConfigError, r"--min-count is not read with --encoders-from", encoders_from=e, min_count=2)
    _refused(days, tmp_path, ConfigError, r"--grow extends existing encoders: it needs --encoders-from", grow=True,
             domain_col="site", label_col="clicked")
    _refused(days, tmp_path, ConfigError, r"--hash-seed must be in \[0, 2\^64\), got -1", domain_col="site",
             label_col="clicked", hash_buckets={"query": 10}, hash_seed=-1)
    for buckets in (0, 2**31):  # ids are int32: 1..2^31 - 2
        _refused(days, tmp_path, ConfigError, rf"--hash: bucket counts must be integers in \[1, 2147483646\] \(ids are "
                 rf"int32\), got \{{'query': {buckets}\}}", domain_col="site", label_col="clicked",
                 hash_buckets={"query": buckets})


def test_an_unknown_domain_needs_grow(days, tmp_path):
    # the new logs hold an extra column, ignored by listing exactly the encoders' features
    raw = days["raw"]["grow"]
    path = _day1_file(days, "cart.parquet", raw.append_column("color", pa.array(["red"] * len(raw))))
    _refused(days, tmp_path, DatasetError, r"cart.parquet: domain column 'site' has value\(s\) \['cart'\] that the "
             r"encoders of .*ds0 do not know \(known: \['home', 'search'\]\); pass --grow", input=path,
             encoders_from=days["ds0"], features=FEATURES)


def test_the_cli_reports_a_bad_input_in_one_line_with_exit_2(days, tmp_path, capsys, no_ray):
    as_csv = _day1_file(days, "cli-day1.csv", days["raw"]["day1"])
    out = tmp_path / "cli-out"
    main = _cli("prepare_data")
    capsys.readouterr()
    assert main(["csv", "--input", as_csv, "--encoders-from", days["ds0"], "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {as_csv}: column 'user' is text here") and _no_output(out)
    assert main(["csv", "--input", as_csv, "--domain-col", "site", "--label-col", "clicked", "--hash", "query",
                 "--out", str(out)]) == 2
    assert capsys.readouterr().err == "error: --hash 'query': expected FEATURE=BUCKETS with a whole number of buckets\n"
    assert main(["csv", "--input", as_csv, "--encoders-from", str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope/dataset.json: not found" in err and _no_output(out)


# --- raw text (issue 26) ------------------------------------------------------------------------------

def test_csv_codes_and_domains_stay_text_and_a_type_change_after_the_first_block_converts(ray_session, tmp_path):
    n = 120_000
    rng = np.random.default_rng(0)
    item = rng.integers(0, 500, n).astype(str).astype(object)
    item[-50:] = [f"A{12 + i % 5}" for i in range(50)]  # integers for > 1 MB, then text
    frame = pd.DataFrame({"item_id": item, "code": rng.choice(["7", "07", "007"], n),
                          "site": rng.choice(["01", "02", "03"], n), "clicked": rng.integers(0, 2, n)})
    path = tmp_path / "logs.csv"
    frame.to_csv(path, index=False)
    assert os.path.getsize(path) > 1 << 20  # past pyarrow's first 1 MB block
    with pytest.raises(pa.ArrowInvalid, match="A12"):  # the streaming reader Ray Data uses, inferring types
        pacsv.open_csv(path).read_all()
    spec = convert_csv(str(path), str(tmp_path / "ds"), "site", "clicked", **QUIET)
    assert sum(sum(c.values()) for c in spec.row_counts.values()) == n
    assert [(d.id, d.name) for d in spec.domains] == [(0, "01"), (1, "02"), (2, "03")]
    assert spec.encoders["domain"]["values"] == {"01": 0, "02": 1, "03": 2}
    assert spec.encoders["domain"]["source"] == "text"
    codes = _vocab(str(tmp_path / "ds"), "code")
    assert sorted(codes) == ["007", "07", "7"]  # three values, as written
    items = _vocab(str(tmp_path / "ds"), "item_id")
    assert {f"A{i}" for i in range(12, 17)} <= set(items) and "499" in items
    # every row of a domain came from that domain's text; the code ids are the three values'
    test = pq.read_table(str(tmp_path / "ds" / "test")).to_pandas()
    assert set(test["code"]) == set(codes.values())
    assert spec.row_counts["train"]["01"] + spec.row_counts["valid"]["01"] + spec.row_counts["test"]["01"] == \
        int((frame.site == "01").sum())


def test_a_numeric_feature_meeting_text_is_refused_naming_column_value_and_file(ray_session, tmp_path):
    os.makedirs(tmp_path / "logs")
    for name, price in (("a.csv", ["1.5", "2", ""]), ("b.csv", ["3", "abc", "4"])):
        pd.DataFrame({"user": ["u1", "u2", "u3"], "price": price, "site": ["x", "y", "x"],
                      "clicked": [0, 1, 0]}).to_csv(tmp_path / "logs" / name, index=False)
    out = tmp_path / "out"
    with pytest.raises(DatasetError) as err:
        convert_csv(str(tmp_path / "logs" / "*.csv"), str(out), "site", "clicked", numeric=["price"], **QUIET)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'logs' / 'b.csv'}: numeric feature 'price' has 1 row(s) with a value that "
                              f"is not a number, e.g. 'abc'") and "\n" not in message and "a.csv" not in message
    assert _no_output(out)


def test_a_column_named_twice_is_refused_before_ray_data_starts(tmp_path, no_ray):
    os.makedirs(tmp_path / "logs")
    (tmp_path / "logs" / "a.csv").write_text("user,item,site,clicked\n1,i1,x,0\n")
    (tmp_path / "logs" / "b.csv").write_text("user,item,user,site,clicked\n1,i1,2,x,0\n")
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=rf"^{tmp_path / 'logs' / 'b.csv'}: the header names column\(s\) \['user'\] "
                                           rf"more than once"):
        convert_csv(str(tmp_path / "logs" / "*.csv"), str(out), "site", "clicked", **QUIET)
    assert _no_output(out)
