"""Bring-your-own-data converter on Ray Data: the same dataset as a pandas reference, splits, errors.

`_reference` below is the test oracle: the pandas converter's semantics written out in plain
pandas/numpy on the whole table (fit on train rows only, ids by count then value, quantile bins by
the row-level cumulative distribution, OOV 0), with the documented split rules (a seeded row hash
for `random`, the user's hash for `random-user`, (time, row hash) order for `time`). A CSV is read
as text, exactly as written (`_read_csv_as_text`): its categorical values and row keys are the text
of each cell; Parquet columns keep their types (an integer column's ties ordered by number). The Ray
Data path must give the same dataset.json, the same encoded rows in every split and domain, and the
same vocabularies in the dataset's encoders/.
"""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from dfei.data.csv_converter import convert_csv
from dfei.data.dataset import ParquetDataset
from dfei.data.spec import DatasetError
from dfei.errors import ConfigError

QUIET = {"log": lambda *a: None}


def _logs(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "user": rng.integers(0, 50, n), "item": [f"i{v}" for v in rng.integers(0, 40, n)],
        "scenario": rng.choice(["feed", "search"], n), "rating": rng.integers(1, 6, n),
        "price": rng.random(n) * 100, "ts": np.arange(n)})


def _mix(x: np.ndarray) -> np.ndarray:  # splitmix64, as documented in dfei.data.csv_blocks
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _read_csv_as_text(path) -> pa.Table:
    """A CSV file as the converter reads it: every column text as written, an empty cell null."""
    names = pacsv.open_csv(str(path)).schema.names
    return pacsv.read_csv(str(path), convert_options=pacsv.ConvertOptions(
        column_types={c: pa.string() for c in names}, strings_can_be_null=True, null_values=[""]))


def _reference(table: pa.Table, split: str, numeric: list[str], min_count: int, seed: int = 0,
               threshold: float = 4, valid: float = 0.1, test: float = 0.1):
    """(dataset.json minus name/input/encoders, {(split, domain id): encoded rows sorted},
    {categorical feature: its vocabulary, values in id order}) of `table` (a CSV: `_read_csv_as_text`),
    converted with domain scenario, label rating >= threshold, user column user, time column ts."""
    df = table.to_pandas()
    for c in [*numeric, "rating", "ts"]:  # parsed as numbers from text; Parquet's are numbers already
        df[c] = pd.to_numeric(df[c])
    features = ["user"] + [c for c in df.columns if c not in ("scenario", "rating", "ts", "user")]
    categorical = [c for c in features if c not in numeric]
    if split == "random-user":
        hashes = pd.util.hash_array(df["user"].astype(str).to_numpy(dtype=object))
    else:
        # every column in its text form (pyarrow's cast: 1.0 -> "1"), so the key does not depend on inferred types
        as_text = {c: pc.cast(table.column(c), pa.string()).to_pandas() for c in table.column_names}
        hashes = pd.util.hash_pandas_object(pd.DataFrame(as_text), index=False).to_numpy()
    key = _mix(hashes.astype(np.uint64) ^ _mix(np.array([seed], dtype=np.uint64))[0])
    n = len(df)
    if split == "time":
        rank = np.empty(n)
        rank[np.lexsort((key, df["ts"].to_numpy()))] = np.arange(1, n + 1)
        u = rank / n
    else:
        u = (key >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    which = np.where(u <= 1 - valid - test, 0, np.where(u <= 1 - test, 1, 2))
    train = df[which == 0]
    codes = {}
    cards = {}
    vocabularies = {}
    for c in categorical:
        counts = train[c].astype(str).value_counts()
        counts = counts[counts >= min_count]
        order = pd.DataFrame({"v": counts.index, "c": counts.to_numpy()})
        order["k"] = pd.to_numeric(order["v"]) if df[c].dtype.kind in "if" else order["v"]
        order = order.sort_values(["c", "k"], ascending=[False, True])
        ids = {v: i + 1 for i, v in enumerate(order["v"])}
        codes[c] = df[c].astype(str).map(ids).fillna(0).to_numpy(dtype=np.int32)
        cards[c] = len(ids) + 1
        vocabularies[c] = list(order["v"])
    for c in numeric:  # the pandas converter's Buckets.fit, row by row
        values = np.sort(train[c].dropna().to_numpy(dtype=np.float64))
        cdf = np.cumsum(np.ones(len(values))) / len(values)
        idx = np.searchsorted(cdf, np.linspace(0, 1, 11)[1:-1])
        edges = np.unique(values[np.minimum(idx, len(values) - 1)])
        codes[c] = (np.searchsorted(edges, df[c].to_numpy(), side="right") + 1).astype(np.int32)
        codes[c][df[c].isna().to_numpy()] = 0
        cards[c] = len(edges) + 2
    label = (df["rating"] >= threshold).to_numpy(dtype=np.int8)
    names = sorted(df["scenario"].astype(str).unique())
    domain = df["scenario"].astype(str).map({v: i for i, v in enumerate(names)}).to_numpy()
    order = categorical + numeric
    rows, counts = {}, {s: {} for s in ("train", "valid", "test")}
    for s_id, s in enumerate(("train", "valid", "test")):
        for d, name in enumerate(names):
            mask = (which == s_id) & (domain == d)
            block = np.stack([codes[c][mask] for c in order] + [label[mask]], axis=1)
            rows[(s, d)] = block[np.lexsort(block.T[::-1])] if len(block) else block
            counts[s][name] = int(mask.sum())
    id0 = {s: {c: round(float((codes[c][which == s_id] == 0).mean()), 6) for c in order}
           for s_id, s in enumerate(("train", "valid", "test"))}
    spec = {"label": "label", "user_column": "user", "domains": [{"id": i, "name": v} for i, v in enumerate(names)],
            "features": [{"name": c, "cardinality": cards[c]} for c in order], "row_counts": counts,
            "meta": {"converter": "csv", "split": split, "label_threshold": threshold, "min_count": min_count,
                     "seed": seed, "positive_rate": float(label.mean()), "id0_share": id0, "encoders_from": None}}
    return spec, rows, vocabularies


def _written(path: str) -> tuple[dict, dict]:
    spec = json.load(open(os.path.join(path, "dataset.json")))
    rows = {}
    for s in ("train", "valid", "test"):
        for d in spec["domains"]:
            table = pq.read_table(os.path.join(path, s, f"domain={d['id']}"))
            names = [f["name"] for f in spec["features"]] + ["label"]
            block = np.stack([table.column(c).to_numpy() for c in names], axis=1).astype(np.int64)
            rows[(s, d["id"])] = block[np.lexsort(block.T[::-1])] if len(block) else block
    return spec, rows


def _assert_same(path: str, expected: tuple[dict, dict, dict]) -> dict:
    spec, rows = _written(path)
    want_spec, want_rows, want_vocabularies = expected
    meta = {k: v for k, v in spec["meta"].items() if k not in ("input", "split_rule")}
    assert {**{k: v for k, v in spec.items() if k not in ("name", "meta", "encoders")}, "meta": meta} == want_spec
    assert rows.keys() == want_rows.keys()
    for key in rows:
        assert np.array_equal(rows[key], want_rows[key]), key
    # the encoders: one per feature, in the dataset's order; each vocabulary file is the reference's
    encoders = spec["encoders"]
    assert [f["name"] for f in encoders["features"]] == [f["name"] for f in spec["features"]]
    assert encoders["domain"]["values"] == {d["name"]: d["id"] for d in spec["domains"]}
    assert encoders["label"] == {"column": "rating", "threshold": want_spec["meta"]["label_threshold"]}
    for entry, feature in zip(encoders["features"], spec["features"]):
        assert entry["digest"].startswith("sha256:")
        if entry["name"] in want_vocabularies:
            assert entry["kind"] == "vocabulary" and entry["size"] == feature["cardinality"] - 1
            values = pq.read_table(os.path.join(path, entry["file"])).column("value").to_pylist()
            assert values == want_vocabularies[entry["name"]], entry["name"]
        else:
            assert entry["kind"] == "buckets" and len(entry["edges"]) == feature["cardinality"] - 2
    return spec


@pytest.mark.parametrize("split", ["time", "random", "random-user"])
def test_ray_data_conversion_equals_the_reference(ray_session, tmp_path, split):
    df = _logs()
    df.loc[df.index[-1], "item"] = "only-in-test"  # the latest row: test under the time split
    df.loc[df.index[::7], "price"] = np.nan  # missing numbers -> 0
    df.to_csv(tmp_path / "logs.csv", index=False)
    spec = convert_csv(str(tmp_path / "logs.csv"), str(tmp_path / "ds"), "scenario", "rating", label_threshold=4,
                       user_col="user", time_col="ts", split=split, numeric=["price"], min_count=2, **QUIET)
    expected = _reference(_read_csv_as_text(tmp_path / "logs.csv"), split, ["price"], min_count=2)
    written = _assert_same(str(tmp_path / "ds"), expected)
    assert written["name"] == "logs" and written["meta"]["split"] == split and spec.meta["split_rule"]
    ds = ParquetDataset(str(tmp_path / "ds"))  # the contract's reader accepts it
    test_users = pq.read_table(str(tmp_path / "ds" / "test")).column("user").to_numpy()
    if split == "time":
        assert sum(ds.rows("train")) == 480 and sum(ds.rows("test")) == 60  # exact 80/10/10 by time
        last = 0 if df.iloc[-1].scenario == "feed" else 1
        assert (pq.read_table(str(tmp_path / "ds" / "test" / f"domain={last}")).column("item").to_numpy() == 0).any()
    elif split == "random":  # by row: test users were seen in train (the usual CTR evaluation, GAUC defined)
        assert (test_users > 0).mean() > 0.9
    else:  # cold start: every test user is unseen in train, so all OOV
        assert (test_users == 0).all()


def test_the_output_depends_on_neither_files_nor_blocks(ray_session, tmp_path):
    # the same rows as three Parquet files read in 5 blocks: the same dataset as one table
    df = _logs(900, seed=1)
    table = pa.Table.from_pandas(df, preserve_index=False)
    os.makedirs(tmp_path / "logs")
    for i, (lo, hi) in enumerate([(0, 100), (100, 550), (550, 900)]):
        pq.write_table(table.slice(lo, hi - lo), tmp_path / "logs" / f"part-{i}.parquet")
    spec = convert_csv(str(tmp_path / "logs" / "*.parquet"), str(tmp_path / "ds"), "scenario", "rating",
                       label_threshold=4, user_col="user", time_col="ts", split="random", numeric=["price"],
                       read_blocks=5, seed=3, **QUIET)
    _assert_same(str(tmp_path / "ds"), _reference(table, "random", ["price"], min_count=1, seed=3))
    assert spec.name == "logs" and len(glob.glob(str(tmp_path / "ds.tmp-*"))) == 0


def test_exact_order_statistics_over_several_passes(ray_session, monkeypatch):
    import ray.data

    from dfei.data import select

    monkeypatch.setattr(select, "COLLECT_MAX", 40)  # force histogram passes and the tie-break component
    monkeypatch.setattr(select, "SMALL_BLOCK", 8)
    rng = np.random.default_rng(0)
    n = 5000
    t = rng.integers(0, 4, n)  # heavy ties in the first component
    k = rng.integers(0, 2**62, n).astype(np.uint64) * np.uint64(3)
    v = np.round(rng.normal(size=n), 2)
    ds = ray.data.from_arrow(pa.table({"t": t, "k": k, "v": v})).repartition(4)

    def keys(batch):
        return {"tk": (select.int_key(batch.column("t").to_numpy()), batch.column("k").to_numpy()),
                "v": (select.float_key(batch.column("v").to_numpy()),)}

    summary = select.summarize(ds, keys)
    assert summary["v"].keys is None and summary["tk"].rows == n
    ranks = {"tk": [0, 1777, n - 1], "v": [0, 2500, n - 1]}
    got = select.select(ds, keys, ranks, summary)
    order = np.lexsort((k, t))
    assert got["tk"] == [(int(select.int_key(t[order[r]:order[r] + 1])[0]), int(k[order[r]])) for r in ranks["tk"]]
    assert [select.float_of_key(g[0]) for g in got["v"]] == [np.sort(v)[r] for r in ranks["v"]]


def _no_output(path) -> bool:
    return not os.path.exists(path) and not glob.glob(f"{path}.tmp-*")


def test_clear_errors_and_no_half_written_output(ray_session, tmp_path):
    df = _logs(200)
    df.to_csv(tmp_path / "logs.csv", index=False)
    src, out = str(tmp_path / "logs.csv"), tmp_path / "out"
    with pytest.raises(DatasetError, match=r"column\(s\) \['nope'\] not found"):
        convert_csv(src, str(out), "nope", "rating", **QUIET)
    with pytest.raises(DatasetError, match="no such file"):
        convert_csv(str(tmp_path / "missing.csv"), str(out), "scenario", "rating", **QUIET)
    with pytest.raises(ConfigError, match="--split random-user needs --user-col"):
        convert_csv(src, str(out), "scenario", "rating", split="random-user", **QUIET)
    with pytest.raises(ConfigError, match="--label-threshold must be a finite number, got nan"):
        convert_csv(src, str(out), "scenario", "rating", label_threshold=float("nan"), **QUIET)
    # found by the check pass over the staged data, after Ray Data wrote into the temporary directory
    with pytest.raises(DatasetError, match=r"label column 'rating' has value\(s\) \['2', '3', '4', '5'\]"):
        convert_csv(src, str(out), "scenario", "rating", **QUIET)
    assert _no_output(out)
    df["when"] = ["2022-04-01 10:00"] * 199 + ["not a time"]
    df.to_csv(tmp_path / "times.csv", index=False)
    with pytest.raises(DatasetError, match=r"column 'when': 1 value\(s\) are not times"):
        convert_csv(str(tmp_path / "times.csv"), str(out), "scenario", "rating", label_threshold=4, time_col="when",
                    split="time", **QUIET)
    assert _no_output(out)
    df.head(0).to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(DatasetError, match="empty.csv: no rows"):
        convert_csv(str(tmp_path / "empty.csv"), str(out), "scenario", "rating", label_threshold=4, **QUIET)
    assert _no_output(out)


def test_an_interrupted_conversion_leaves_the_previous_dataset(ray_session, tmp_path, monkeypatch):
    from dfei.data import csv_converter

    _logs(200).to_csv(tmp_path / "logs.csv", index=False)
    out = tmp_path / "out"
    os.makedirs(out)
    (out / "dataset.json").write_text("{}")  # an earlier dataset, replaced only by a finished conversion

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(csv_converter, "_encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_csv(str(tmp_path / "logs.csv"), str(out), "scenario", "rating", label_threshold=4, overwrite=True,
                    **QUIET)
    assert os.listdir(out) == ["dataset.json"] and not glob.glob(f"{out}.tmp-*")


def test_time_split_parses_date_strings_in_time_order(ray_session, tmp_path):
    df = _logs(300)
    days = pd.date_range("2022-04-01", periods=300, freq="h")
    df["when"] = [f"{d.month}/{d.day}/{d.year} {d.hour}:00" for d in days]  # not ISO: text order != time order
    df.to_csv(tmp_path / "logs.csv", index=False)
    convert_csv(str(tmp_path / "logs.csv"), str(tmp_path / "ds"), "scenario", "rating", label_threshold=4,
                features=["item"], time_col="when", split="time", **QUIET)
    ds = ParquetDataset(str(tmp_path / "ds"))
    assert sum(ds.rows("train")) == 240 and sum(ds.rows("test")) == 30
    # the first 240 hours are train: their label rate matches the source rows, in time order
    train = pd.concat(pq.read_table(str(tmp_path / "ds" / "train" / f"domain={d}")).to_pandas() for d in (0, 1))
    assert abs(train["label"].mean() - (df.rating[:240] >= 4).mean()) < 1e-9


def test_label_and_domain_cannot_be_features_and_threshold_needs_numbers(ray_session, tmp_path):
    df = _logs()
    df.to_csv(tmp_path / "logs.csv", index=False)
    with pytest.raises(DatasetError, match=r"column\(s\) \['rating'\] cannot be features"):
        convert_csv(str(tmp_path / "logs.csv"), str(tmp_path / "a"), "scenario", "rating", features=["item", "rating"],
                    label_threshold=4, **QUIET)
    df.loc[3, "rating"] = None
    df.to_csv(tmp_path / "gaps.csv", index=False)
    with pytest.raises(DatasetError, match=r"label column 'rating' has 1 missing or non-numeric value"):
        convert_csv(str(tmp_path / "gaps.csv"), str(tmp_path / "b"), "scenario", "rating", label_threshold=4, **QUIET)
    assert _no_output(tmp_path / "b")


def test_nan_is_missing_and_a_rows_key_does_not_depend_on_inferred_types():
    from dfei.data.csv_blocks import row_hashes
    from dfei.data.encoders.text import text_form

    assert text_form(pa.array([float("nan"), 1.0, None])).to_pylist() == [None, "1", None]  # not a value "nan"
    # the same row in a block where the column is int64 and in one where a null made it float64
    ints = pa.table({"x": pa.array([5, 6], pa.int64()), "s": ["a", "b"]})
    floats = pa.table({"x": pa.array([5.0, None]), "s": ["a", "c"]})
    assert row_hashes(ints)[0] == row_hashes(floats)[0] and row_hashes(ints)[1] != row_hashes(floats)[1]


def test_identical_rows_at_a_time_cut_are_refused_not_written_into_the_wrong_split(ray_session, tmp_path):
    df = pd.DataFrame({"user": [1] * 50, "scenario": ["feed"] * 50, "rating": [5] * 50, "ts": [7] * 50})
    df.to_csv(tmp_path / "same.csv", index=False)
    with pytest.raises(DatasetError, match="nothing was written"):
        convert_csv(str(tmp_path / "same.csv"), str(tmp_path / "out"), "scenario", "rating", label_threshold=4,
                    time_col="ts", split="time", **QUIET)
    assert not (tmp_path / "out").exists()
