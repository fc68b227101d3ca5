"""Raw daily click logs (dfei.data.raw_logs): one typed CSV/Parquet file a day, byte-identical for the
same arguments, domain CTRs on target, `item_code` variants that type inference would merge, days
that share one world and drift, refusals, and the `prepare_data.py rawlogs` CLI. No Ray."""
from __future__ import annotations

import importlib.util
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from dfei.data.raw_logs import CITIES, DOMAINS, SCHEMA, generate_raw_logs
from dfei.errors import ConfigError, PathExistsError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROWS = 20_000


def _quiet(*_):
    pass


def _read_text(path: str) -> dict[str, list]:
    """A CSV with every cell as written (an empty cell is None): what a careful reader sees."""
    options = pacsv.ConvertOptions(column_types={c: pa.string() for c in SCHEMA.names}, strings_can_be_null=True)
    return pacsv.read_csv(path, convert_options=options).to_pydict()


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    """Day 0 and day 1 of seed 0 as CSV, day 0 also as Parquet: {name: (path, summary)}."""
    root = tmp_path_factory.mktemp("rawlogs")
    out = {}
    for name, day in (("day0.csv", 0), ("day1.csv", 1), ("day0.parquet", 0)):
        path = str(root / name)
        out[name] = (path, generate_raw_logs(path, day=day, rows=ROWS, seed=0, log=_quiet))
    return out


def test_same_arguments_give_the_same_bytes(days, tmp_path):
    for name, (path, summary) in days.items():
        again = str(tmp_path / name)
        assert generate_raw_logs(again, day=summary["day"], rows=ROWS, seed=0, log=_quiet)["rows"] == ROWS
        assert open(again, "rb").read() == open(path, "rb").read(), name
    other = str(tmp_path / "seed1.csv")
    generate_raw_logs(other, day=0, rows=ROWS, seed=1, log=_quiet)
    assert open(other, "rb").read() != open(days["day0.csv"][0], "rb").read()


def test_csv_columns_and_values(days):
    path, summary = days["day0.csv"]
    with open(path) as f:
        assert f.readline().strip() == ",".join(SCHEMA.names)  # a plain, unquoted header
    t = _read_text(path)
    assert len(t["request_id"]) == ROWS == summary["rows"] and len(set(t["request_id"])) == ROWS
    assert t["request_id"][:2] == ["r0-000000000", "r0-000000001"]
    assert all(re.fullmatch(r"2026-11-01 \d\d:\d\d:\d\d", ts) for ts in t["ts"]) and t["ts"] == sorted(t["ts"])
    assert set(t["domain"]) == {d.name for d in DOMAINS}
    assert all(re.fullmatch(r"u\d{7,}", u) for u in t["user_id"]) and all(re.fullmatch(r"i\d{6,}", i)
                                                                           for i in t["item_id"])
    assert set(t["device"]) == {"ios", "android", "web"} and set(t["clicked"]) == {"0", "1"}
    cities = [c for c in t["city"] if c is not None]
    assert set(cities) <= set(CITIES) and len(set(cities)) > 20 and 0.01 < t["city"].count(None) / ROWS < 0.1
    prices = [float(p) for p in t["price"] if p is not None]
    assert min(prices) > 0 and 0.02 < t["price"].count(None) / ROWS < 0.12
    ages = [int(a) for a in t["user_age"] if a is not None]  # whole numbers
    assert 16 <= min(ages) and max(ages) <= 75 and 0.03 < t["user_age"].count(None) / ROWS < 0.2
    inferred = pacsv.read_csv(path).schema  # what type inference makes of it
    assert inferred.field("price").type == pa.float64() and pa.types.is_integer(inferred.field("user_age").type)
    assert pa.types.is_integer(inferred.field("item_code").type)  # the trap: "007", "07" and "7" all become 7


def test_parquet_has_the_schema_with_nulls_and_the_csv_rows(days):
    table = pq.read_table(days["day0.parquet"][0])
    assert table.schema.remove_metadata() == SCHEMA and table.num_rows == ROWS
    for column in ("city", "price", "user_age"):
        assert 0 < table[column].null_count < ROWS * 0.2, column
    assert table["item_code"].type == pa.string()
    text = _read_text(days["day0.csv"][0])
    for column in ("request_id", "ts", "user_id", "item_id", "item_code", "city"):
        assert table[column].to_pylist() == text[column], column
    assert table["clicked"].to_pylist() == [int(c) for c in text["clicked"]]
    assert days["day0.parquet"][1]["domains"] == days["day0.csv"][1]["domains"]


def test_item_code_variants_are_different_categories(days):
    t = _read_text(days["day0.csv"][0])
    codes, clicked = np.array(t["item_code"]), np.array(t["clicked"]).astype(int)
    assert {"7", "07", "007"} <= set(codes) and len(set(codes)) > len({int(c) for c in codes}) * 2
    width = np.char.str_len(codes)
    ctr = {w: clicked[width == w].mean() for w in (1, 2, 3)}
    assert min((width == w).sum() for w in (1, 2, 3)) > ROWS // 10
    assert ctr[3] > 1.3 * ctr[1] and ctr[1] < ctr[2] < ctr[3], ctr  # merging them loses signal


def test_domain_ctrs_are_near_their_targets_and_labels_are_learnable(days):
    for name in ("day0.csv", "day1.csv"):
        path, summary = days[name]
        t = _read_text(path)
        domains, clicked = np.array(t["domain"]), np.array(t["clicked"]).astype(int)
        rows = [summary["domains"][d.name]["rows"] for d in DOMAINS]
        assert rows[0] == max(rows) and rows[0] > 3 * min(rows)  # quite different sizes
        for d in DOMAINS:
            n, ctr = (domains == d.name).sum(), clicked[domains == d.name].mean()
            assert summary["domains"][d.name]["rows"] == n and summary["domains"][d.name]["ctr"] == round(ctr, 5)
            assert abs(ctr - d.ctr) < 4 * np.sqrt(d.ctr * (1 - d.ctr) / n) + 0.1 * d.ctr, (name, d.name, ctr)
            assert 0.7 < summary["domains"][d.name]["oracle_auc"] < 0.9, (name, d.name, summary)
        assert 0.72 < summary["oracle_auc"] < 0.88, summary


def test_day1_shares_the_world_and_drifts(days):
    (p0, s0), (p1, s1) = days["day0.csv"], days["day1.csv"]
    t0, t1 = _read_text(p0), _read_text(p1)
    assert s0["new_users"] == s0["new_items"] == 0 and all(ts.startswith("2026-11-02") for ts in t1["ts"])
    users0, items0 = set(t0["user_id"]), set(t0["item_id"])
    assert np.mean([u in users0 for u in t1["user_id"]]) > 0.8 and np.mean([i in items0 for i in t1["item_id"]]) > 0.8
    new_items = {i for i in t1["item_id"] if int(i[1:]) >= s0["day0_items"]}  # ids above day 0's population
    assert new_items and not new_items & items0 and s1["new_items"] == len(new_items)
    assert 0.04 < s1["new_item_row_share"] < 0.1 and 0.02 < s1["new_user_row_share"] < 0.08 and s1["new_users"] > 0
    assert 0 < s1["day0_items_retired"] < 0.1 * s1["day0_items"]
    code0 = dict(zip(t0["item_id"], t0["item_code"]))  # an id is the same item on both days
    assert all(code0.get(i, c) == c for i, c in zip(t1["item_id"], t1["item_code"]))
    # a day-0 signal predicts day 1: items' smoothed day-0 CTR ranks day-1 clicks
    y0, y1 = np.array(t0["clicked"]).astype(int), np.array(t1["clicked"]).astype(int)
    clicks, shows = {}, {}
    for i, y in zip(t0["item_id"], y0):
        clicks[i], shows[i] = clicks.get(i, 0) + y, shows.get(i, 0) + 1
    score = np.array([(clicks.get(i, 0) + 20 * y0.mean()) / (shows.get(i, 0) + 20) for i in t1["item_id"]])
    pos, neg = score[y1 == 1], score[y1 == 0]
    auc = (np.searchsorted(np.sort(neg), pos, "left") + np.searchsorted(np.sort(neg), pos, "right")).mean() / 2 / len(neg)
    assert auc > 0.55, auc


def test_refusals_write_nothing(tmp_path, days):
    path = days["day0.csv"][0]
    before = open(path, "rb").read()
    with pytest.raises(PathExistsError, match="--overwrite"):
        generate_raw_logs(path, day=0, rows=100, log=_quiet)
    assert open(path, "rb").read() == before
    for kwargs, match in (({"rows": 0}, "--rows"), ({"day": -1}, "--day"), ({"seed": -2}, "--seed")):
        with pytest.raises(ConfigError, match=match):
            generate_raw_logs(str(tmp_path / "x.csv"), **{"day": 0, "rows": 10, **kwargs}, log=_quiet)
    with pytest.raises(ConfigError, match=r"\.csv or \.parquet"):
        generate_raw_logs(str(tmp_path / "x.json"), day=0, rows=10, log=_quiet)
    assert os.listdir(tmp_path) == []
    small = str(tmp_path / "sub" / "small.csv")  # parent directories are made; --overwrite replaces
    generate_raw_logs(small, day=2, rows=10, log=_quiet)
    assert generate_raw_logs(small, day=2, rows=50, overwrite=True, log=_quiet)["rows"] == 50
    assert len(open(small).read().splitlines()) == 51 and sorted(os.listdir(tmp_path / "sub")) == ["small.csv"]


def test_cli_writes_and_refuses_in_process(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("cli_prepare_data", os.path.join(ROOT, "pipelines", "prepare_data.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = str(tmp_path / "logs" / "day3.parquet")
    assert module.main(["rawlogs", "--day", "3", "--rows", "3000", "--seed", "7", "--out", out]) == 0
    assert "[rawlogs] wrote" in capsys.readouterr().out and pq.read_metadata(out).num_rows == 3000
    assert module.main(["rawlogs", "--day", "3", "--rows", "3000", "--out", out]) == 2
    assert "exists" in capsys.readouterr().err
    assert module.main(["rawlogs", "--rows", "0", "--out", str(tmp_path / "d.csv")]) == 2
    assert "--rows" in capsys.readouterr().err
