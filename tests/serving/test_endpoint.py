"""The online scoring API without a server (dfei.serving.endpoint, dfei.serving.protocol): raw rows
score as predict_raw does, every malformed request is a 4xx naming the field and value, an internal
error is a 500 with a request id the log shows, a batch keeps each request's rows together."""
from __future__ import annotations

import asyncio
import json
import logging
import re

import numpy as np
import pyarrow as pa
import pytest

from dfei.serving.endpoint import Counters, Endpoint, forward_batch
from dfei.serving.loader import ServingModel
from dfei.serving.protocol import parse_json, parse_request, version_of



@pytest.fixture(scope="module")
def models(encoded_artifacts):
    return {k: ServingModel.load(v) for k, v in encoded_artifacts.items()}


async def _direct(model, scoring):
    return forward_batch([(model, scoring)])[0]


def _ask(endpoint: Endpoint, body, method: str = "POST", path: str = "/predict") -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return asyncio.run(endpoint.handle(method, path, raw, "req-1", _direct))


def _endpoint(model, max_rows: int = 64) -> Endpoint:
    endpoint = Endpoint(max_rows)
    endpoint.swap(model)
    return endpoint


@pytest.mark.parametrize("fmt", ["v1", "pt"])
def test_raw_rows_score_exactly_as_predict_raw_and_ids_as_predict(models, fmt, raw_rows):
    model = models[fmt]
    rows = raw_rows(40, seed=3)
    status, payload = _ask(_endpoint(model), {"domain": "search", "rows": rows})
    assert status == 200 and payload["version"] == version_of(model) and payload["request_id"] == "req-1"
    expected = model.predict_raw(rows, ["search"] * len(rows))
    assert np.array_equal(np.array(payload["ctr"], dtype=np.float32), expected)
    assert len(set(payload["ctr"])) > 10  # rows differ: nothing constant passes this
    x = model.transform.encode(pa.table({n: [r[n] for r in rows] for n in model.feature_names}))
    ids = np.stack([x[n] for n in model.feature_names], axis=1).tolist()
    status, by_ids = _ask(_endpoint(model), {"domain_id": 2, "ids": ids})
    assert status == 200 and by_ids["ctr"] == payload["ctr"]
    status, by_raw_domain = _ask(_endpoint(model), {"domain": "search", "ids": ids})
    assert status == 200 and by_raw_domain["ctr"] == payload["ctr"]


BAD = [
    (b"{not json", "the body is not valid JSON"),
    ([1, 2], "must be a JSON object"),
    ({"domain": "home", "rows": [{}], "user": 1}, r"unknown field\(s\) \['user'\]"),
    ({"rows": [{}]}, "exactly one of 'domain' and 'domain_id', got neither"),
    ({"domain": "home", "domain_id": 1, "rows": [{}]}, r"exactly one of 'domain' and 'domain_id', got \['domain', 'domain_id'\]"),
    ({"domain": "shop", "rows": "R1"}, "domain 'shop' at row 0 is not one the model was trained on"),
    ({"domain_id": 5, "ids": [[1, 1, 1, 1]]}, r"'domain_id' 5 is not a domain the model was trained on"),
    ({"domain_id": "1", "ids": [[1, 1, 1, 1]]}, r"'domain_id' must be an integer id, got '1' \(str\)"),
    ({"domain": "home", "rows": []}, "'rows' must be a non-empty list of rows, got \\[\\]"),
    ({"domain": "home", "rows": {"user_id": "u01"}}, "'rows' must be a non-empty list"),
    ({"domain": "home", "rows": ["R1"]}, "rows must be a list of {feature: value} objects"),
    ({"domain": "home", "rows": "R1-missing"}, r"row 0: missing feature\(s\) \['price'\]"),
    ({"domain": "home", "rows": "R1-extra"}, r"unknown \['cost'\]"),
    ({"domain": "home", "rows": "R1-user-int"}, r"feature 'user_id': 7 \(int\) at row 0: this feature was fitted on text"),
    ({"domain": "home", "rows": "R1-code-text"}, r"feature 'code': '7' \(str\) at row 0: this feature was fitted on integer"),
    ({"domain": "home", "rows": "R1-price-text"}, r"numeric feature 'price' has 1 value\(s\) that are not numbers, e.g. 'cheap'"),
    ({"domain_id": 1, "ids": [[1, 1, 1]]}, r"'ids' row 0: expected a list of 4 feature ids"),
    ({"domain_id": 1, "ids": [[1, 1.5, 1, 1]]}, r"'ids' row 0: feature ids must be integers, got 1.5 \(float\)"),
    ({"domain_id": 1, "ids": [[1, True, 1, 1]]}, r"feature ids must be integers, got True \(bool\)"),
    ({"domain_id": 1, "ids": [[1, 1, 99, 1]]}, r"feature 'price' \(column 2\): id 99 at row 0 is outside \[0, 5\)"),
    ({"domain_id": 1, "ids": [[1, 2**64, 1, 1]]}, r"'ids': 18446744073709551616 is outside int64"),
    (b"[" * 100_000, "nested too deeply"),
]


def _fill(body, good: dict):
    if not isinstance(body, dict) or not isinstance(body.get("rows"), str) or not body["rows"].startswith("R1"):
        return body
    row = dict(good)
    change = body["rows"][3:]
    if change == "missing":
        del row["price"]
    elif change == "extra":
        row["cost"] = 1.0
    elif change:
        field, value = {"user-int": ("user_id", 7), "code-text": ("code", "7"), "price-text": ("price", "cheap")}[change]
        row[field] = value
    return {**body, "rows": [row]}


@pytest.mark.parametrize("body,message", BAD, ids=[m[:40] for _, m in BAD])
def test_every_malformed_request_is_a_400_naming_the_field_and_value_and_scores_nothing(models, body, message, raw_rows):
    endpoint = _endpoint(models["v1"])
    status, payload = _ask(endpoint, _fill(body, raw_rows(1)[0]))
    assert status == 400, payload
    assert set(payload) == {"error", "request_id"} and payload["request_id"] == "req-1"
    assert re.search(message, payload["error"]), payload["error"]
    assert endpoint.counters.forwards == 0 and endpoint.counters.requests == 0


def test_more_rows_than_the_limit_is_a_413_and_routes_are_checked(models, raw_rows):
    endpoint = _endpoint(models["v1"], max_rows=8)
    status, payload = _ask(endpoint, {"domain": "home", "rows": raw_rows(9)})
    assert status == 413 and "'rows' has 9 rows; this server takes at most 8" in payload["error"]
    assert _ask(endpoint, b"", "GET", "/predictions")[0] == 404
    assert _ask(endpoint, b"", "GET", "/predict")[0] == 405
    assert _ask(endpoint, b"", "POST", "/model")[0] == 405
    assert asyncio.run(Endpoint().handle("GET", "/healthz", b"", "r", _direct))[0] == 503  # nothing loaded yet
    assert asyncio.run(Endpoint().handle("GET", "/nothing", b"", "r", _direct))[0] == 404  # routes come first
    status, payload = _ask(endpoint, b" " * (endpoint.max_body_bytes() + 1))
    assert status == 413 and "this server reads at most" in payload["error"]  # refused before parsing


def test_an_internal_error_is_a_500_with_a_request_id_the_log_shows(models, caplog, raw_rows):
    async def broken(model, scoring):
        raise RuntimeError("onnxruntime: out of memory")

    endpoint = _endpoint(models["v1"])
    with caplog.at_level(logging.ERROR, logger="dfei.serving"):
        status, payload = asyncio.run(endpoint.handle("POST", "/predict", json.dumps(
            {"domain": "home", "rows": raw_rows(2)}).encode(), "abc123", broken))
    assert status == 500 and payload["request_id"] == "abc123" and "abc123" in payload["error"]
    assert "ctr" not in payload
    assert any("abc123" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_batch_runs_one_forward_per_model_keeps_each_requests_rows_together_and_mixes_domains(models, raw_rows):
    a, b = models["v1"], models["v2"]
    bodies = [({"domain": "home", "rows": raw_rows(3, 1)}, a), ({"domain": "search", "rows": raw_rows(5, 2)}, b),
              ({"domain": "search", "rows": raw_rows(1, 3)}, a), ({"domain": "home", "rows": raw_rows(4, 4)}, b)]
    items = [(m, parse_request(m, body, 64)) for body, m in bodies]
    counters = Counters()
    out = forward_batch(items, counters)
    assert counters.forwards == 2 and counters.rows == 13  # one per model, all rows
    for (body, m), ctr in zip(bodies, out):
        assert np.array_equal(ctr, m.predict_raw(body["rows"], [body["domain"]] * len(body["rows"])))
    assert version_of(a) != version_of(b)


def test_the_model_card_names_features_kinds_domains_version_and_digests(models, encoded_artifacts):
    status, card = _ask(_endpoint(models["v1"]), b"", "GET", "/model")
    meta = json.load(open(encoded_artifacts["v1"] + ".json"))
    assert status == 200 and card["version"] == f"v1.onnx@{meta['sha256'][:12]}" and card["format"] == "onnx"
    assert [(f["name"], f["kind"]) for f in card["features"]] == [
        ("user_id", "vocabulary"), ("code", "vocabulary"), ("price", "buckets"), ("query", "hash")]
    assert card["domains"] == [{"id": 1, "name": "home"}, {"id": 2, "name": "search"}] and card["raw_rows"]
    assert card["digests"]["encoders"] == meta["encoders"]["digest"] and len(card["digests"]["dataset"]) == 64
    assert card["created_unix"] == meta["exported"]["unix"]


def test_the_load_generator_makes_requests_the_server_accepts(models):
    from dfei.bench.serving_load import in_process_rows_per_s, requests_for

    for model in (models["v1"],):
        bodies = requests_for(model, 4, 20, seed=0)
        parsed = [parse_request(model, parse_json(b), 64) for b in bodies]
        assert {len(p.domain_ids) for p in parsed} == {4} and len({int(p.domain_ids[0]) for p in parsed}) == 2
        assert "rows" in json.loads(bodies[0])  # raw rows: the model has encoders
        assert in_process_rows_per_s(model, bodies, batch=8) > 0
