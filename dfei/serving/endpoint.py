"""The online scoring API without the server: routes, status codes, model swaps and batched forwards.

`Endpoint.handle(method, path, body, request_id, score)` answers one HTTP request with (status,
JSON payload); `score(model, scoring)` is the batched forward the server provides (in the Serve
application, a `@serve.batch` method that calls `forward_batch`). Kept apart from Ray so that its
behaviour (every 4xx, the 500 with a request id, the version a response names) is testable without
a server and the Serve application stays a thin wrapper.

    GET  /healthz  -> 200 {"status": "ok", "version", "max_rows", "max_batch_size", "batch_wait_ms",
                           "reconfigure_error", "requests", "forwards", "rows"} (this replica's)
    GET  /model    -> 200 the model card (dfei.serving.protocol.model_card)
    POST /predict  -> 200 {"ctr": [float per row], "version", "request_id"}
                      400 bad request / 413 too many rows or bytes: {"error": message naming field and value,
                      "request_id"}; 404/405 other routes; 503 before the first model
                      500 {"error": "internal error ...", "request_id"} (the log has the traceback and the id)

A model swap (`swap`) is atomic: a request is parsed, scored and answered by the one model it
started with, and its response names that model's version.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import numpy as np

from dfei.errors import RequestError
from dfei.serving.protocol import Scoring, TooManyRows, model_card, parse_json, parse_request, version_of

logger = logging.getLogger("dfei.serving")
ROUTES = {"/predict": ("POST", "/predict"), "/model": ("GET", "/model"), "/healthz": ("GET", "/healthz")}
ROUTE_LIST = ", ".join(f"{m} {p}" for m, p in ROUTES.values())
MAX_BYTES_PER_ROW = 16 << 10  # a raw row's JSON, generously: the body limit is this times the row limit


@dataclass
class Counters:
    """What this replica has done since it started: requests answered 200, forwards run, rows scored."""

    requests: int = 0
    forwards: int = 0
    rows: int = 0


def forward_batch(items: list[tuple[Any, Scoring]], counters: Counters | None = None) -> list[np.ndarray]:
    """CTR float32 [rows_i] for each (model, scoring) of a batch of requests: one forward per model
    over all their rows (domains mixed; a swap can put two models in one batch), split back per
    request in order, so a request's rows stay together."""
    out: list[np.ndarray | None] = [None] * len(items)
    for model in {id(m): m for m, _ in items}.values():
        members = [i for i, (m, _) in enumerate(items) if m is model]
        x = np.concatenate([items[i][1].features for i in members])
        d = np.concatenate([items[i][1].domain_ids for i in members])
        ctr = model.predict(x, d)
        if counters is not None:
            counters.forwards += 1
            counters.rows += len(d)
        bounds = np.cumsum([0] + [len(items[i][1].domain_ids) for i in members])
        for i, lo, hi in zip(members, bounds[:-1], bounds[1:]):
            out[i] = ctr[lo:hi]
    return out  # type: ignore[return-value]


class Endpoint:
    """The API's state: the model now serving, the row limit and this replica's counters."""

    def __init__(self, max_rows: int = 1024, log: logging.Logger = logger):
        self.model = None  # dfei.serving.loader.ServingModel; None until the first swap
        self.max_rows = max_rows
        self.batching: dict[str, Any] = {}  # the server's batch settings, as /healthz reports them
        self.counters = Counters()
        self.log = log  # where an internal error's traceback goes, with the request id
        self.reconfigure_error: str | None = None  # the last model that could not replace the one serving

    def swap(self, model, max_rows: int | None = None, batching: dict[str, Any] | None = None) -> None:
        """Serve `model` (a loaded ServingModel) from the next request on; requests already parsed
        finish with the model they started with."""
        self.model = model
        self.reconfigure_error = None
        if max_rows is not None:
            self.max_rows = max_rows
        if batching is not None:
            self.batching = batching

    def max_body_bytes(self) -> int:
        """The largest body read as a request: MAX_BYTES_PER_ROW per row of the row limit (HTTP 413 beyond)."""
        return MAX_BYTES_PER_ROW * (self.max_rows + 1)

    async def handle(self, method: str, path: str, body: bytes, request_id: str,
                     score: Callable[[Any, Scoring], Awaitable[np.ndarray]]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON payload) of one request; never raises."""
        model, route = self.model, (method.upper(), path.rstrip("/") or "/")
        try:
            if route[1] not in ROUTES:
                return 404, {"error": f"no route {path!r}: {ROUTE_LIST}", "request_id": request_id}
            if route not in ROUTES.values():
                return 405, {"error": f"{method} {path} is not allowed: {ROUTE_LIST}", "request_id": request_id}
            if model is None:
                return 503, {"error": "no model loaded yet", "request_id": request_id}
            if route == ROUTES["/healthz"]:
                return 200, {"status": "ok", "version": version_of(model), "max_rows": self.max_rows, **self.batching,
                             "reconfigure_error": self.reconfigure_error, **vars(self.counters)}
            if route == ROUTES["/model"]:
                return 200, model_card(model)
            if len(body) > self.max_body_bytes():
                raise TooManyRows(f"the body has {len(body):,} bytes; this server reads at most {self.max_body_bytes():,} "
                                  f"({MAX_BYTES_PER_ROW:,} a row for its {self.max_rows} rows; split the request)")
            scoring = parse_request(model, parse_json(body), self.max_rows)
            ctr = await score(model, scoring)
            self.counters.requests += 1
            return 200, {"ctr": [float(p) for p in ctr], "version": version_of(model), "request_id": request_id}
        except RequestError as err:
            return (413 if isinstance(err, TooManyRows) else 400), {"error": str(err), "request_id": request_id}
        except Exception:  # a bug or a broken artifact: the client gets the id, the log the traceback
            self.log.exception("request %s (%s %s) failed", request_id, method, path)
            return 500, {"error": f"internal error; the server log has its traceback under request id {request_id}",
                         "request_id": request_id}
