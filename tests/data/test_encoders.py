"""The persisted encoders (dfei.data.encoders), without Ray: the documented hash against a plain
Python reference and pinned vectors, vocabularies (order, min count, unknowns, growth, lookup with
colliding hashes, digest, Parquet round trip), the text form of raw values, bins, the whole
transform written and read back with its digests checked, and how two transforms relate.

The hash is part of every dataset with a `--hash` feature and of every exported model's raw path:
the vectors below must never change.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from dfei.data.encoders import (Buckets, DomainMap, FeatureEncoder, FeatureTransform, HashBuckets, LabelRule,
                                Vocabulary, fnv1a64, hash64, load_transform)
from dfei.data.encoders.compat import relate
from dfei.data.encoders.hashing import splitmix64
from dfei.data.encoders.text import kind_of, parse_numbers, text_form
from dfei.data.encoders.transform import copy_encoders, is_native
from dfei.data.encoders.vocabulary import find
from dfei.errors import DatasetError

M64 = 1 << 64


# --- the hash: a plain-Python reference of the definition in dfei/data/encoders/hashing.py ---------

def ref_fnv1a64(s: str) -> int:
    h = 0xCBF29CE484222325
    for b in s.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) % M64
    return h


def ref_splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) % M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % M64
    return x ^ (x >> 31)


def ref_hash64(s: str, seed: int) -> int:
    return ref_splitmix64(ref_fnv1a64(s) ^ ref_splitmix64(seed))


def _h(values, seed=0, type=pa.large_string()) -> list[int]:
    return [int(v) for v in hash64(pa.array(values, type), seed)]


# pinned forever: (text, seed, hash64)
GOLDEN = [("abc", 0, 0xAAD0B8E637C66B43), ("", 0, 0x5B21F68FFA77F14C), ("a", 0, 0x565E25CBDB1B0D6E),
          ("abc", 1, 0x49F1EDA9A6CED115), ("i00006", 0, 0xF54182719F31711F), ("7", 0, 0xD9EF330B07208B54),
          ("007", 0, 0xD02A6B8AC97B2A55), ("héllo", 0, 0xC2D2FA49089F7BC0),
          ("abc", (1 << 63) + 5, 0x61106C2EDB79365B), ("a" * 100, 7, 0xD17CD6DBD84D0A23)]


@pytest.mark.parametrize("text,seed,expected", GOLDEN)
def test_hash64_golden_vectors(text, seed, expected):
    assert _h([text], seed) == [expected]
    assert ref_hash64(text, seed) == expected  # the documented definition, written out


def test_fnv1a64_is_the_standard_fnv1a():
    # the published FNV-1a 64 test vectors
    got = [int(v) for v in fnv1a64(pa.array(["", "a", "foobar"], pa.large_string()))]
    assert got == [0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8]


def test_splitmix64_matches_the_reference():
    xs = [0, 1, 2, 12345, (1 << 63), M64 - 1]
    assert [int(v) for v in splitmix64(np.array(xs, dtype=np.uint64))] == [ref_splitmix64(x) for x in xs]


def test_the_vectorised_hash_equals_the_reference_on_mixed_lengths_slices_and_types():
    rng = np.random.default_rng(0)
    alphabet = list("abcxyz0123456789_-é€𝄞")
    words = ["".join(rng.choice(alphabet, rng.integers(0, 40))) for _ in range(500)]
    for seed in (0, 1, 2**40 + 3):
        want = [ref_hash64(w, seed) for w in words]
        assert _h(words, seed) == want
        assert _h(words, seed, pa.string()) == want  # 32-bit offsets too
        sliced = pa.array(["zzz", *words], pa.string()).slice(1)  # an array with an offset
        assert [int(v) for v in hash64(sliced, seed)] == want
        chunked = pa.chunked_array([pa.array(words[:200], pa.large_string()), pa.array(words[200:], pa.large_string())])
        assert [int(v) for v in hash64(chunked, seed)] == want


def test_a_null_hashes_as_the_empty_string_and_a_non_string_is_refused():
    assert _h(["abc", None, "x"]) == [ref_hash64("abc", 0), ref_hash64("", 0), ref_hash64("x", 0)]
    assert len(hash64(pa.array([], pa.large_string()))) == 0
    with pytest.raises(TypeError, match="expected a string array"):
        hash64(pa.array([1, 2]))


def test_hash_buckets_are_int32_ids():
    with pytest.raises(ValueError, match="buckets must be in"):
        HashBuckets(3_000_000_000)
    assert HashBuckets(2**31 - 2).encode(pa.array(["a", "b"])).min() >= 1


def test_hash_buckets_ids_nulls_and_digest():
    values = [f"v{i}" for i in range(2000)] + [None, "v1"]
    hb = HashBuckets(buckets=97, seed=5)
    ids = hb.encode(pa.array(values, pa.large_string()))
    assert ids.dtype == np.int32 and hb.cardinality == 98
    want = [0 if v is None else 1 + ref_hash64(v, 5) % 97 for v in values]
    assert ids.tolist() == want
    assert ids[-2] == 0 and ids[-1] == ids[1] and set(ids[:-2]) == set(range(1, 98))  # every bucket used
    # chunked input; another seed moves the ids; the digest tells buckets and seeds apart
    assert hb.encode(pa.chunked_array([pa.array(values[:10]), pa.array(values[10:])])).tolist() == want
    assert HashBuckets(97, 6).encode(pa.array(values)).tolist() != want
    digests = {HashBuckets(97, 5).digest(), HashBuckets(97, 6).digest(), HashBuckets(98, 5).digest()}
    assert len(digests) == 3 and HashBuckets(97, 5).digest() == hb.digest()
    assert HashBuckets(1).encode(pa.array(["a", "b", None])).tolist() == [1, 1, 0]


# --- text form --------------------------------------------------------------------------------

def test_text_form_rules():
    assert text_form(pa.array([7, None, -3])).to_pylist() == ["7", None, "-3"]
    assert text_form(pa.array([7.0, float("nan"), 1.5, None])).to_pylist() == ["7", None, "1.5", None]
    assert text_form(pa.array([True, False])).to_pylist() == ["true", "false"]
    assert text_form(pa.array(["007", "07", "7", ""])).to_pylist() == ["007", "07", "7", ""]  # text as written
    assert text_form(pa.array(["b", "a", "b", None]).dictionary_encode()).to_pylist() == ["b", "a", "b", None]
    assert text_form(pa.chunked_array([pa.array([1]), pa.array([2])])).to_pylist() == ["1", "2"]
    assert text_form(pa.array(["x"])).type == pa.large_string()
    # int 7 and float 7.0 are the same key; text "007" is another
    assert text_form(pa.array([7])).equals(text_form(pa.array([7.0])))


def test_kind_of_and_parse_numbers():
    assert [kind_of(t) for t in (pa.string(), pa.large_string(), pa.int8(), pa.float32(), pa.decimal128(5, 2),
                                 pa.bool_(), pa.timestamp("s"), pa.dictionary(pa.int32(), pa.string()),
                                 pa.list_(pa.int8()))] == \
        ["text", "text", "integer", "float", "decimal", "boolean", "timestamp", "text", "other"]
    values, bad = parse_numbers(pa.array(["1.5", " 7 ", "2e3", None, "x"]))
    assert np.array_equal(values[:3], [1.5, 7, 2000]) and np.isnan(values[3:]).all()
    assert bad.tolist() == [False, False, False, False, True]  # missing is not bad; text that is no number is
    values, bad = parse_numbers(pa.array([1, None, 3]))
    assert np.isnan(values[1]) and values[2] == 3 and not bad.any()
    # the usual spellings of "missing" and infinities are missing, never a bin edge
    values, bad = parse_numbers(pa.array(["NA", "nan", "NULL", "n/a", "inf", "-1e400", "cheap"]))
    assert np.isnan(values).all() and bad.tolist() == [False] * 6 + [True]
    values, _ = parse_numbers(pa.array([float("inf"), 2.0]))
    assert np.isnan(values[0]) and values[1] == 2


def test_a_value_keys_alike_whatever_width_or_unit_a_file_stored_it_in():
    import datetime
    import decimal

    big = 12345678900  # floats of 1e10 and above would print as 1.23456789e+10
    assert text_form(pa.array([big, 7, 0])).equals(text_form(pa.array([float(big), 7.0, -0.0])))
    assert text_form(pa.array([decimal.Decimal("7.00"), decimal.Decimal("7.50")])).to_pylist() == ["7", "7.5"]
    assert text_form(pa.array([1e300])).to_pylist() == ["1e+300"]  # beyond int64: as Arrow writes it
    t = datetime.datetime(2026, 11, 1, 12)
    texts = {tuple(text_form(pa.array([t], pa.timestamp(u, tz))).to_pylist()) for u in ("s", "ms", "us", "ns")
             for tz in (None, "UTC")}
    assert len(texts) == 1
    vocab = Vocabulary.from_counts(["12345678900", "7"], [2, 1], numeric=True)  # fitted on int64 Parquet
    assert vocab.encode(pa.array([12345678900.0, 7.0, 7.5])).tolist() == [1, 2, 0]  # day 2's float64: same ids


# --- vocabulary -------------------------------------------------------------------------------

def test_from_counts_orders_by_count_then_value():
    v = Vocabulary.from_counts(["b", "a", "c", "d", "e"], [2, 2, 5, 1, 0])
    assert v.values.to_pylist() == ["c", "a", "b", "d"] and v.size == 4 and v.cardinality == 5  # count 0: left out
    # text order by code point ("10" < "9"); numeric order by number
    assert Vocabulary.from_counts(["10", "9", "100", "2"], [1, 1, 1, 3]).values.to_pylist() == ["2", "10", "100", "9"]
    assert Vocabulary.from_counts(["10", "9", "100", "2"], [1, 1, 1, 3], numeric=True).values.to_pylist() == \
        ["2", "9", "10", "100"]
    # min_count
    assert Vocabulary.from_counts(["a", "b", "c"], [3, 2, 1], min_count=2).values.to_pylist() == ["a", "b"]
    assert Vocabulary.from_counts([], [], min_count=1).size == 0


def test_fit_keys_by_text_form_and_never_holds_null():
    assert Vocabulary.fit(pd.Series([3, 1, 3, 2, 1, 10, None])).values.to_pylist() == ["1", "3", "2", "10"]
    assert Vocabulary.fit(pd.Series(["b", None, "a", "b"])).values.to_pylist() == ["b", "a"]
    w = Vocabulary.fit(pd.Series(["x", "y"]), weights=np.array([1.0, 5.0]))
    assert w.values.to_pylist() == ["y", "x"]


def test_encode_unknown_and_null_are_zero():
    v = Vocabulary(["c", "a", "b"])
    assert v.encode(pa.array(["a", "zz", None, "c", "b", ""])).tolist() == [2, 0, 0, 1, 3, 0]
    assert v.encode(["a", None]).tolist() == [2, 0]
    assert v.encode(pa.array(["a"]).dictionary_encode()).tolist() == [2]
    # an integer column keys as its text
    n = Vocabulary(["7", "8"])
    assert n.encode(pa.array([8, 7, 9, None])).tolist() == [2, 1, 0, 0]
    assert n.encode(pa.array([7.0, float("nan")])).tolist() == [1, 0]
    assert Vocabulary([]).encode(pa.array(["a", None])).tolist() == [0, 0]
    assert Vocabulary(["", "a"]).encode(pa.array(["", None, "a"])).tolist() == [1, 0, 2]  # "" is a value, null is not


def test_grow_keeps_ids_and_appends_new_values_in_count_order():
    v = Vocabulary(["c", "a", "b"])
    g, added = v.grow(["zz", "a", "yy", "xx", "rare"], [1, 9, 3, 3, 1], min_count=1)
    assert added == 4 and g.values.to_pylist() == ["c", "a", "b", "xx", "yy", "rare", "zz"]
    assert g.encode(pa.array(["c", "a", "b", "xx", "zz"])).tolist() == [1, 2, 3, 4, 7]
    g2, added2 = v.grow(["zz", "yy", "xx"], [1, 3, 2], min_count=2)
    assert added2 == 2 and g2.values.to_pylist() == ["c", "a", "b", "yy", "xx"]
    same, none = v.grow(["a", "b"], [5, 5])
    assert none == 0 and same.digest() == v.digest()


def test_digest_is_stable_and_sensitive():
    v = Vocabulary(["c", "a", "b"])
    assert v.digest() == Vocabulary(pa.array(["c", "a", "b"], pa.string())).digest()
    assert v.digest() == Vocabulary(["c", "a", "b"]).digest()
    pinned = Vocabulary(["c", "a", "b"]).digest()
    assert pinned.startswith("sha256:") and len(pinned) == 7 + 64
    others = [["a", "c", "b"], ["c", "a"], ["c", "a", "b", "d"], ["ca", "", "b"], ["c", "a", "b "], []]
    assert len({pinned, *(Vocabulary(o).digest() for o in others)}) == len(others) + 1


def _ref_digest(values: list[str], chunk: int) -> str:
    """The documented definition: b"vocabulary\\0", then per chunk of `chunk` values (id order) their
    UTF-8 byte lengths as little-endian int64 and their bytes."""
    import hashlib

    h = hashlib.sha256(b"vocabulary\0")
    for start in range(0, len(values), chunk):
        part = [v.encode() for v in values[start:start + chunk]]
        h.update(np.array([len(b) for b in part], dtype="<i8").tobytes())
        h.update(b"".join(part))
    return "sha256:" + h.hexdigest()


def test_digest_follows_its_definition_over_several_chunks(monkeypatch):
    from dfei.data.encoders import vocabulary

    values = [f"v{i}" for i in range(10)] + ["", "é€", ""]
    assert Vocabulary(values).digest() == _ref_digest(values, vocabulary.DIGEST_CHUNK)
    monkeypatch.setattr(vocabulary, "DIGEST_CHUNK", 3)  # 5 chunks (sliced arrays), the last one short
    assert Vocabulary(values).digest() == _ref_digest(values, 3)
    monkeypatch.setattr(vocabulary, "DIGEST_CHUNK", 1)
    assert Vocabulary(values).digest() == _ref_digest(values, 1)


def test_write_read_round_trip_and_malformed_files(tmp_path):
    fs = pafs.LocalFileSystem()
    v = Vocabulary(["c", "a", "", "é€", "b"])
    path = str(tmp_path / "v.parquet")
    v.write(path, fs)
    table = pq.read_table(path)
    assert table.column("id").to_pylist() == [1, 2, 3, 4, 5] and table.column("value").to_pylist() == v.values.to_pylist()
    back = Vocabulary.read(path, fs, "here")
    assert back.values.equals(v.values) and back.digest() == v.digest()
    bad = {"gap": pa.table({"id": pa.array([1, 3], pa.int32()), "value": ["a", "b"]}),
           "null": pa.table({"id": pa.array([1, 2], pa.int32()), "value": ["a", None]}),
           "nocolumn": pa.table({"id": pa.array([1, 2], pa.int32()), "v": ["a", "b"]}),
           "twice": pa.table({"id": pa.array([1, 2], pa.int32()), "value": ["a", "a"]})}
    for name, t in bad.items():
        pq.write_table(t, str(tmp_path / f"{name}.parquet"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    for name, message in [("gap", "not a vocabulary"), ("null", "not a vocabulary"), ("twice", "not a vocabulary"),
                          ("nocolumn", "cannot read the vocabulary"), ("junk", "cannot read the vocabulary"),
                          ("missing", "cannot read the vocabulary")]:
        with pytest.raises(DatasetError, match=f"^{name}-where: {message}"):
            Vocabulary.read(str(tmp_path / f"{name}.parquet"), fs, f"{name}-where")


def test_find_resolves_colliding_hashes_exactly():
    values = pa.array(["a", "b", "c", "d"], pa.large_string())
    hashes = np.array([5, 5, 7, 5], dtype=np.uint64)  # a, b and d collide
    order = np.argsort(hashes, kind="stable")
    queries = pa.array(["b", "d", "c", "x", "a", None, "y", "z"], pa.large_string())
    query_hashes = np.array([5, 5, 7, 7, 5, 5, 6, 100], dtype=np.uint64)
    got = find(hashes[order], order, values, query_hashes, queries)
    assert got.tolist() == [1, 3, 2, -1, 0, -1, -1, -1]  # "x" has c's hash but not its text
    # a collision pair at the end of the sorted hashes; a hash below every value's
    values2 = pa.array(["p", "q", "r"], pa.large_string())
    h2 = np.array([1, 9, 9], dtype=np.uint64)
    o2 = np.argsort(h2, kind="stable")
    got2 = find(h2[o2], o2, values2, np.array([9, 9, 1, 9, 0], dtype=np.uint64),
                pa.array(["q", "r", "p", "s", "p"], pa.large_string()))
    assert got2.tolist() == [1, 2, 0, -1, -1]
    empty = find(np.array([], np.uint64), np.array([], np.int64), pa.array([], pa.large_string()),
                 np.array([3], np.uint64), pa.array(["a"], pa.large_string()))
    assert empty.tolist() == [-1]


def test_lookup_of_a_large_vocabulary_is_exact():
    rng = np.random.default_rng(1)
    values = [f"k{i:06d}" for i in rng.permutation(50_000)]
    v = Vocabulary(values)
    queries = values[::7] + ["nope", "k", None]
    assert v.encode(queries).tolist() == [i * 7 + 1 for i in range(len(values[::7]))] + [0, 0, 0]


# --- bins, label, domain ----------------------------------------------------------------------

def test_buckets():
    b = Buckets.fit(pd.Series(np.arange(100)))
    assert b.edges.tolist() == [9, 19, 30, 39, 49, 60, 70, 79, 89] and b.cardinality == 11
    assert b.encode(np.array([-1.0, 0, 9, 10, 99, 1000, np.nan])).tolist() == [1, 1, 2, 2, 10, 10, 0]
    assert b.encode(pa.array(["5", "x", None, " 95 "])).tolist() == [1, 0, 0, 10]
    assert b.encode([50, None]).tolist() == [6, 0]
    assert Buckets.fit(pd.Series([1.0] * 10)).edges.tolist() == [1.0]  # one heavy value: fewer bins
    assert Buckets.fit(pd.Series([], dtype=float)).edges.tolist() == [] and Buckets(np.array([])).encode(
        np.array([3.0, np.nan])).tolist() == [1, 0]
    # from_counts and edge_ranks agree (the converter's exact order statistics give the same edges)
    values = np.round(np.random.default_rng(0).normal(size=997), 1)
    ranks = Buckets.edge_ranks(len(values))
    assert Buckets.from_values(np.sort(values)[ranks]).edges.tolist() == Buckets.fit(pd.Series(values)).edges.tolist()
    assert Buckets(np.array([1.0, 2.0])).digest() != Buckets(np.array([1.0, 2.5])).digest()
    assert Buckets(np.array([1.0, 2.0])).digest() == Buckets(np.array([1, 2])).digest()


def test_label_rule():
    assert LabelRule("l").apply(pa.array(["1", "0", "true", "FALSE", "2", None, " 1 "])).tolist() == [1, 0, 1, 0, -1, -1, 1]
    assert LabelRule("l").apply(pa.array([1, 0, 2, None])).tolist() == [1, 0, -1, -1]
    assert LabelRule("l", 4).apply(pa.array(["1", "4", "5.5", "x", None])).tolist() == [0, 1, 1, -1, -1]
    assert LabelRule("l", 4).apply(pa.array([3.9, 4.0, float("nan")])).tolist() == [0, 1, -1]


def test_domain_map_encode_and_grow():
    d = DomainMap("site", {"home": 0, "search": 1, "01": 2})
    assert d.encode(pa.array(["search", "x", None, "home", "01", "1"])).tolist() == [1, -1, -1, 0, 2, -1]
    grown, new = d.grow(["zz", "home", "aa", "zz"])
    assert new == ["aa", "zz"] and grown.ids == {"home": 0, "search": 1, "01": 2, "aa": 3, "zz": 4}
    assert grown.digest() != d.digest() and DomainMap("site", dict(d.ids)).digest() == d.digest()
    assert DomainMap("site", {}).grow(["b", "a"])[0].ids == {"a": 0, "b": 1}


# --- the transform on disk ----------------------------------------------------------------------

def _transform(items=("i00001", "i00002", "i00006"), domains=None) -> FeatureTransform:
    return FeatureTransform(
        [FeatureEncoder("user_id", Vocabulary(["u1", "u2"]), "integer"),
         FeatureEncoder("item_id", Vocabulary(list(items)), "text"),
         FeatureEncoder("price", Buckets(np.array([1.0, 5.0, 20.0])), "float"),
         FeatureEncoder("query", HashBuckets(1000, 3), "text")],
        DomainMap("site", domains or {"home": 0, "search": 1}), LabelRule("clicked", None))


def _written(tmp_path, transform=None) -> tuple[str, dict]:
    root = str(tmp_path / "ds")
    section = (transform or _transform()).write(root)
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps({"encoders": section}))
    return root, section


def test_write_and_load_round_trip(tmp_path):
    t = _transform()
    root, section = _written(tmp_path, t)
    assert sorted(os.listdir(os.path.join(root, "encoders"))) == ["vocabulary-0.parquet", "vocabulary-1.parquet"]
    assert section["format"] == 1 and section["hash"] == "fnv1a64-splitmix64"
    assert [(f["name"], f["kind"], f["source"]) for f in section["features"]] == [
        ("user_id", "vocabulary", "integer"), ("item_id", "vocabulary", "text"), ("price", "buckets", "float"),
        ("query", "hash", "text")]
    assert section["features"][1] == {"name": "item_id", "kind": "vocabulary", "source": "text", "size": 3,
                                      "file": "encoders/vocabulary-1.parquet", "digest": t.features[1].encoder.digest()}
    assert section["features"][3]["buckets"] == 1000 and section["features"][3]["seed"] == 3
    assert section["domain"]["values"] == {"home": 0, "search": 1}
    assert section["label"] == {"column": "clicked", "threshold": None}
    json.dumps(section)  # JSON as is
    back = load_transform(root, json.loads(json.dumps(section)))
    assert back.to_json() == section and back.cardinalities == [3, 4, 5, 1001] == t.cardinalities
    table = pa.table({"user_id": ["u2", "u9"], "item_id": ["i00006", None], "price": [3.0, None],
                      "query": ["q", "q"]})
    got = back.encode(table)
    assert got["user_id"].tolist() == [2, 0] and got["item_id"].tolist() == [3, 0]
    assert got["price"].tolist() == [2, 0] and got["query"][0] == got["query"][1] > 0
    # copied (a checkpoint or an export carries its vocabularies): loads from the copy
    copy_encoders(section, root, str(tmp_path / "copy"))
    assert load_transform(str(tmp_path / "copy"), section).to_json() == section


def test_native_and_missing_sections():
    assert is_native({"native": True}) and is_native(None) and is_native({})
    assert load_transform("/nowhere", {"native": True}) is None and load_transform("/nowhere", None) is None


def test_an_edited_vocabulary_file_is_refused_naming_the_feature(tmp_path):
    root, section = _written(tmp_path)
    Vocabulary(["i00001", "i00006", "i00002"]).write(os.path.join(root, "encoders", "vocabulary-1.parquet"),
                                                     pafs.LocalFileSystem())
    with pytest.raises(DatasetError, match=r"feature 'item_id': its encoder file encoders/vocabulary-1.parquet does "
                                           r"not match the recorded digest"):
        load_transform(root, section)


def test_a_missing_or_corrupt_vocabulary_file_is_refused_naming_the_feature(tmp_path):
    root, section = _written(tmp_path)
    path = os.path.join(root, "encoders", "vocabulary-0.parquet")
    with open(path, "r+b") as f:
        f.seek(4)
        f.write(b"\0" * 16)  # corrupt the data after the magic bytes
    with pytest.raises(DatasetError, match=r"feature 'user_id'"):
        load_transform(root, section)
    os.remove(path)
    with pytest.raises(DatasetError, match=r"encoder file encoders/vocabulary-0.parquet of feature 'user_id' is missing"):
        load_transform(root, section)


def test_an_edited_section_is_refused(tmp_path):
    root, section = _written(tmp_path)

    def edited(change) -> dict:
        s = json.loads(json.dumps(section))
        change(s)
        return s

    def edges(s):
        s["features"][2]["edges"][1] = 6.0

    def buckets(s):
        s["features"][3]["buckets"] = 999

    def domain(s):
        s["domain"]["values"]["search"] = 5

    def label(s):
        s["label"]["threshold"] = 4

    def source(s):
        s["features"][1]["source"] = "integer"

    def size(s):
        s["features"][1]["size"] = 7

    def fmt(s):
        s["format"] = 2

    def kind(s):
        s["features"][3]["kind"] = "sketch"

    def gone(s):
        del s["features"][0]["file"]

    for change, message in [(edges, r"feature 'price': its encoder entry does not match the recorded digest"),
                            (buckets, r"feature 'query': its encoder entry does not match"),
                            (domain, r"the domain map's digest is not the recorded one"),
                            (label, r"overall digest is not the recorded one"),
                            (source, r"overall digest is not the recorded one"),
                            (size, r"feature 'item_id': .*size 7.*3 value"),
                            (fmt, r"encoders format 2"),
                            (kind, r"feature 'query' has an unknown encoder kind 'sketch'"),
                            (gone, r"malformed encoders section \(KeyError")]:
        with pytest.raises(DatasetError, match=message):
            load_transform(root, edited(change), where="DS")


# --- relate: same, grown, different -------------------------------------------------------------

def test_relate_same_grown_and_native():
    a = _transform()
    assert relate(a, _transform(), "x").kind == "same"
    assert relate(None, None, "x").kind == "native"
    grown = _transform(items=("i00001", "i00002", "i00006", "i00099"), domains={"home": 0, "search": 1, "cart": 2})
    r = relate(a, grown, "x")
    assert r.kind == "grown" and r.grown == {"item_id": (4, 5)} and r.new_domains == {"cart": 2}
    only_domain = _transform(domains={"home": 0, "search": 1, "cart": 2})
    assert relate(a, only_domain, "x").kind == "grown" and relate(a, only_domain, "x").grown == {}


def test_relate_names_the_feature_and_a_value_with_both_ids():
    a = _transform()
    moved = _transform(items=("i00001", "i00002", "x1", "x2", "i00006"))
    with pytest.raises(DatasetError, match=r"^ckpt: item_id: 'i00006' is id 3 in the checkpoint's encoders, 5 in the "
                                           r"data's$"):
        relate(a, moved, "ckpt")
    dropped = _transform(items=("i00001", "i00002"))
    with pytest.raises(DatasetError, match=r"item_id: 'i00006' is id 3 in the checkpoint's encoders, 0 \(unknown\) in "
                                           r"the data's"):
        relate(a, dropped, "ckpt")
    swapped = _transform(items=("i00002", "i00001", "i00006"))
    with pytest.raises(DatasetError, match=r"item_id: 'i00001' is id 1 in the model's, 2 in the day's"):
        relate(a, swapped, "ckpt", model_name="the model's", data_name="the day's")


def test_relate_refuses_other_bins_hashes_kinds_labels_features_and_domains():
    a = _transform()

    def variant(i, encoder=None, source=None):
        t = _transform()
        f = t.features[i]
        t.features[i] = FeatureEncoder(f.name, encoder or f.encoder, source or f.source)
        return t

    with pytest.raises(DatasetError, match=r"price: 5.0 is id 3 in the checkpoint's encoders, 2 in the data's"):
        relate(a, variant(2, Buckets(np.array([1.0, 6.0, 20.0]))), "x")
    with pytest.raises(DatasetError, match=r"query: hashed into 1000 buckets \(seed 4\) in the data's, 1000 \(seed 3\)"):
        relate(a, variant(3, HashBuckets(1000, 4)), "x")
    with pytest.raises(DatasetError, match=r"user_id: a vocabulary fitted on text values in the data's, a vocabulary "
                                           r"fitted on integer values"):
        relate(a, variant(0, source="text"), "x")
    with pytest.raises(DatasetError, match=r"item_id: a hash fitted on text values in the data's, a vocabulary"):
        relate(a, variant(1, HashBuckets(10)), "x")
    other_label = _transform()
    other_label.label = LabelRule("clicked", 1.0)
    with pytest.raises(DatasetError, match=r"the label rule is"):
        relate(a, other_label, "x")
    fewer = _transform()
    fewer.features = fewer.features[:3]
    with pytest.raises(DatasetError, match=r"features \['user_id', 'item_id', 'price'\] \(the data's\) are not"):
        relate(a, fewer, "x")
    with pytest.raises(DatasetError, match=r"domain 'search' \(column 'site'\) is id 1 in the checkpoint's encoders, "
                                           r"id 2 in the data's"):
        relate(a, _transform(domains={"home": 0, "search": 2}), "x")
    with pytest.raises(DatasetError, match=r"domain 'search' \(column 'site'\) is id 1 in the checkpoint's encoders, "
                                           r"absent in the data's"):
        relate(a, _transform(domains={"home": 0}), "x")


def test_relate_native_against_encoders_is_refused():
    with pytest.raises(DatasetError, match=r"x: the data's come with encoders and the checkpoint's encoders have none"):
        relate(None, _transform(), "x")
    with pytest.raises(DatasetError, match=r"x: the checkpoint's encoders come with encoders and the data's have none"):
        relate(_transform(), None, "x")


def test_dataset_json_cardinalities_must_be_the_encoders(tmp_path):
    from dfei.data.spec import DatasetSpec

    _, section = _written(tmp_path)
    raw = {"name": "t", "label": "label", "domains": [{"id": 0, "name": "home"}, {"id": 1, "name": "search"}],
           "features": [{"name": n, "cardinality": c} for n, c in zip(["user_id", "item_id", "price", "query"],
                                                                      [3, 4, 5, 1001])],
           "encoders": section}
    assert DatasetSpec.from_json(raw).encoders == section
    raw["features"][1]["cardinality"] = 9
    with pytest.raises(DatasetError, match=r"feature 'item_id' has cardinality 9 but its encoder gives 4 ids"):
        DatasetSpec.from_json(raw)
    raw["features"][1]["cardinality"] = 4
    raw["features"] = raw["features"][::-1]
    with pytest.raises(DatasetError, match=r"the encoders' features \['user_id', 'item_id', 'price', 'query'\] are not"):
        DatasetSpec.from_json(raw)
