"""The online scoring API's messages: a JSON request -> the ids the artifact takes, and the model card.

    POST /predict   {"domain": "home", "rows": [{"user_id": "u01", "price": 12.5, ...}, ...]}
                    {"domain_id": 2, "ids": [[3, 17, 0, ...], ...]}   (feature ids, GET /model's order)
                 -> {"ctr": [0.031, ...], "version": "logs.onnx@3f2a9c01b7de", "request_id": "..."}

One domain per request (its raw value, e.g. "home", or its dataset id); one or many rows, each a
{feature: raw value} object (every feature of the model, None for a missing value) or a list of
feature ids. Raw rows are encoded with the encoders the export carries, exactly as
`ServingModel.predict_raw` does (the contract: the same scores). A model whose data had native ids
(synthetic) takes "domain" as the domain's name and only "ids" rows.

Every problem with a request is a `RequestError` naming the field and the value (the HTTP layer
answers 400, or 413 for a row list over the limit); nothing of a malformed request is scored.
Needs numpy and pyarrow only (no Ray): the Serve application (dfei.serving.app) calls it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from dfei.errors import RequestError

KEYS = {"domain", "domain_id", "rows", "ids"}
MAX_REMEMBERED_DOMAINS = 1024  # spellings of known domains remembered per model


class TooManyRows(RequestError):
    """A request with more rows than the server's limit (HTTP 413)."""


@dataclass
class Scoring:
    """A checked request: feature ids int64 [rows, F] and domain ids int64 [rows] (one domain)."""

    features: np.ndarray
    domain_ids: np.ndarray


def version_of(model) -> str:
    """The version a response names: the artifact's file name and the first 12 hex digits of its
    sha256 (two exports of the same weights with the same name share it; another export does not)."""
    return f"{os.path.basename(model.path)}@{model.meta['sha256'][:12]}"


def parse_json(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object; RequestError for malformed JSON or another JSON value."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise RequestError(f"the body is not valid JSON: {err}") from None
    except RecursionError:
        raise RequestError("the body is not valid JSON for this API: nested too deeply") from None
    if not isinstance(request, dict):
        raise RequestError(f"the body must be a JSON object with 'domain' or 'domain_id' and 'rows' or 'ids', "
                           f"got a JSON {type(request).__name__}")
    unknown = sorted(set(request) - KEYS)
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}; a request has 'domain' or 'domain_id', and 'rows' or 'ids'")
    return request


def _one_of(request: dict, a: str, b: str) -> str:
    given = [k for k in (a, b) if k in request]
    if len(given) != 1:
        raise RequestError(f"give exactly one of {a!r} and {b!r}, got {given or 'neither'}")
    return given[0]


def _domain_id(model, request: dict, field: str) -> int:
    value = request[field]
    if field == "domain_id":
        if isinstance(value, bool) or not isinstance(value, int):
            raise RequestError(f"'domain_id' must be an integer id, got {value!r} ({type(value).__name__})")
        if value not in model.domains:
            raise RequestError(f"'domain_id' {value} is not a domain the model was trained on (known: "
                               + ", ".join(f"{i} ({n})" for i, n in model.domains.items()) + ")")
        return value
    if model.transform is not None:  # the raw value, encoded as the training logs' domain column was
        from dfei.serving.raw import encode_domains

        # a request names one of a few domains: its id is remembered per (type, value), as 7 and "7"
        # may encode differently; only values that encoded (a bad one raises every time)
        known = model.remembered_domains
        spelling = (type(value).__name__, value) if isinstance(value, (str, int, float, bool)) else None
        if spelling not in known:
            domain = int(encode_domains(model.transform, model.domains, [value])[0])
            if spelling is None or len(known) >= MAX_REMEMBERED_DOMAINS:
                return domain
            known[spelling] = domain
        return known[spelling]
    by_name = {name: i for i, name in model.domains.items()}
    if not isinstance(value, str) or value not in by_name:
        raise RequestError(f"'domain' {value!r} is not a domain the model was trained on (known: {sorted(by_name)})")
    return by_name[value]


def _ids(model, values: Any) -> np.ndarray:
    """'ids' as int64 [rows, F]; RequestError names the row and what is wrong with it."""
    width = len(model.feature_names)
    for i, row in enumerate(values):
        if not isinstance(row, list) or len(row) != width:
            raise RequestError(f"'ids' row {i}: expected a list of {width} feature ids ({model.feature_names}), "
                               f"got {json.dumps(row)[:200]}")
        bad = [v for v in row if isinstance(v, bool) or not isinstance(v, int)]
        if bad:
            raise RequestError(f"'ids' row {i}: feature ids must be integers, got {bad[0]!r} ({type(bad[0]).__name__})")
    try:
        return np.asarray(values, dtype=np.int64).reshape(len(values), width)
    except OverflowError:
        big = next(v for row in values for v in row if not -2**63 <= v < 2**63)
        raise RequestError(f"'ids': {big} is outside int64; feature ids are within their cardinality") from None


def parse_request(model, request: dict[str, Any], max_rows: int) -> Scoring:
    """A parsed request (parse_json) -> the checked ids of its rows, for `model` (a ServingModel).

    Raises RequestError naming the field and value: neither or both of domain/domain_id or rows/ids,
    an unknown domain, an empty row list, a row that is not an object (rows) or not F integers (ids),
    a missing, extra or wrongly typed feature, an id outside its feature's range; TooManyRows when
    there are more than `max_rows` rows."""
    domain_key, rows_key = _one_of(request, "domain", "domain_id"), _one_of(request, "rows", "ids")
    values = request[rows_key]
    if not isinstance(values, list) or not values:
        raise RequestError(f"{rows_key!r} must be a non-empty list of rows, got {json.dumps(values)[:200]}")
    if len(values) > max_rows:
        raise TooManyRows(f"{rows_key!r} has {len(values)} rows; this server takes at most {max_rows} per request "
                          "(split the request)")
    domain = _domain_id(model, request, domain_key)
    if rows_key == "rows":
        if model.transform is None:
            raise RequestError("this model has no encoders (its training data had native ids): send 'ids', "
                               f"lists of feature ids in the order {model.feature_names}")
        from dfei.serving.raw import encode_rows

        x = encode_rows(model.transform, model.feature_names, values, len(values))
        return Scoring(*model.check(x, np.full(len(x), domain, dtype=np.int64)))
    x = _ids(model, values)
    return Scoring(*model.check(x, np.full(len(x), domain, dtype=np.int64)))


def model_card(model) -> dict[str, Any]:
    """GET /model: what a client needs to build a request and to know what scored it."""
    meta = model.meta
    encoders = meta.get("encoders") or {}
    kinds = {f["name"]: f["kind"] for f in encoders.get("features", [])}
    return {
        "version": version_of(model),
        "model": meta.get("model"),
        "format": model.format,
        "features": [{"name": f["name"], "kind": kinds.get(f["name"], "id"), "cardinality": f["cardinality"]}
                     for f in meta["features"]],
        "domains": [{"id": d["id"], "name": d["name"]} for d in meta["domains"]],
        "raw_rows": model.transform is not None,
        "digests": {"artifact_sha256": meta["sha256"], "dataset": meta.get("trained", {}).get("dataset_digest"),
                    "encoders": encoders.get("digest")},
        "trained": meta.get("trained"),
        "created_unix": meta.get("exported", {}).get("unix"),
    }
