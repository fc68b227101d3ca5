"""Load test of the online scoring endpoint (pipelines/serve.py), next to its in-process ceiling.

`requests_for(model, rows, n)` makes n request bodies of `rows` rows each for an exported model:
raw rows (values drawn from the export's own encoders: known vocabulary values, numbers within
the bin edges, hashed text) when the model has encoders of plain kinds, else feature ids within
every cardinality; each request one domain, domains drawn uniformly. `run_load` sends them over
HTTP with `concurrency` clients (aiohttp) until `max_requests` or `max_seconds`, whichever first,
and reports latency percentiles (ms) and requests/s. `in_process_rows_per_s` is the ceiling: the
same requests parsed and scored in this process by the server's own code (dfei.serving.protocol,
dfei.serving.endpoint.forward_batch) in batches of `batch` requests, without HTTP or Ray Serve.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlparse

import numpy as np

from dfei.errors import ConfigError
from dfei.serving.endpoint import forward_batch
from dfei.serving.protocol import parse_json, parse_request

LOOPBACK = ("127.0.0.1", "localhost", "::1")
PLAIN = ("text", "integer", "float")  # raw kinds drawn here; a model with others is loaded with ids


def check_loopback(url: str) -> str:
    """`url` without a trailing slash; ConfigError unless it is http:// on this machine."""
    parsed = urlparse(url)
    if parsed.scheme != "http" or parsed.hostname not in LOOPBACK:
        raise ConfigError(f"--url {url!r}: the load test only targets this machine (http://127.0.0.1:PORT)")
    return url.rstrip("/")


def _raw_value(f, rng: np.random.Generator):
    enc = f.encoder
    if f.kind == "buckets":
        lo, hi = (float(enc.edges[0]), float(enc.edges[-1])) if len(enc.edges) else (0.0, 1.0)
        return float(rng.uniform(lo - 1, hi + 1))
    if f.kind == "vocabulary" and enc.size:
        text = enc.values[int(rng.integers(enc.size))].as_py()
    else:
        text = str(int(rng.integers(1 << 20)))
    return {"integer": int, "float": float}.get(f.source, str)(text)


def _raw_domain(transform, rng: np.random.Generator, known: dict[int, str]):
    values = [v for v, i in transform.domain.ids.items() if i in known]
    text = values[int(rng.integers(len(values)))]
    return {"integer": int, "float": float}.get(transform.domain.source, str)(text)


def requests_for(model, rows: int, n: int, seed: int = 0) -> list[bytes]:
    """n JSON request bodies of `rows` rows each for `model` (a ServingModel); see the module doc."""
    rng = np.random.default_rng(seed)
    t = model.transform
    raw = t is not None and all(f.source in PLAIN for f in t.features) and t.domain.source in ("text", "integer")
    out = []
    for _ in range(n):
        if raw:
            body = {"domain": _raw_domain(t, rng, model.domains),
                    "rows": [{f.name: _raw_value(f, rng) for f in t.features} for _ in range(rows)]}
        else:
            ids = np.stack([rng.integers(0, c, rows) for c in model.cardinalities], axis=1)
            body = {"domain_id": int(rng.choice(sorted(model.domains))), "ids": ids.tolist()}
        out.append(json.dumps(body).encode())
    return out


def in_process_rows_per_s(model, bodies: list[bytes], batch: int, max_rows: int = 1 << 20) -> float:
    """Rows/s of the server's own parsing and batched forward on `bodies`, in this process."""
    t0, rows = time.perf_counter(), 0
    for lo in range(0, len(bodies), batch):
        items = [(model, parse_request(model, parse_json(b), max_rows)) for b in bodies[lo:lo + batch]]
        forward_batch(items)
        rows += sum(len(s.domain_ids) for _, s in items)
    return rows / (time.perf_counter() - t0)


async def _client(session, url: str, bodies: list[bytes], state: dict[str, Any]) -> None:
    while state["next"] < state["limit"] and time.perf_counter() < state["deadline"]:
        body = bodies[state["next"] % len(bodies)]
        state["next"] += 1
        t0 = time.perf_counter()
        try:
            async with session.post(f"{url}/predict", data=body, headers={"content-type": "application/json"}) as r:
                payload = await r.json(content_type=None)
                ok = r.status == 200 and len(payload.get("ctr", ())) > 0
        except Exception as err:  # noqa: BLE001 (a refused or dropped connection counts as a failure)
            ok, payload = False, {"error": repr(err)}
        state["latencies" if ok else "failures"].append(time.perf_counter() - t0 if ok else payload)


async def _load(url: str, bodies: list[bytes], concurrency: int, max_requests: int, max_seconds: float) -> dict:
    import aiohttp

    state = {"next": 0, "limit": max_requests, "deadline": time.perf_counter() + max_seconds, "latencies": [],
             "failures": []}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(_client(session, url, bodies, state) for _ in range(concurrency)))
        state["wall_s"] = time.perf_counter() - t0
    return state


def run_load(url: str, bodies: list[bytes], concurrency: int, max_requests: int, max_seconds: float) -> dict:
    """{"concurrency", "requests", "failed", "first_failure", "requests_per_s", "p50_ms", "p95_ms",
    "p99_ms", "wall_s"} of one load run (latency: request sent -> response read, successful ones)."""
    state = asyncio.run(_load(check_loopback(url), bodies, concurrency, max_requests, max_seconds))
    lat = np.array(state["latencies"]) * 1000
    pct = {f"p{q}_ms": float(np.percentile(lat, q)) if len(lat) else None for q in (50, 95, 99)}
    return {"concurrency": concurrency, "requests": len(lat), "failed": len(state["failures"]),
            "first_failure": state["failures"][0] if state["failures"] else None,
            "requests_per_s": len(lat) / state["wall_s"], **pct, "wall_s": state["wall_s"]}


def run_study(url: str, model, rows_per_request: list[int], concurrencies: list[int], max_requests: int,
              max_seconds: float, batch: int, log=print) -> dict:
    """Every (rows per request, concurrency) load run after its in-process ceiling:
    {"url", "batch", "runs": [run_load's dict + rows_per_request, rows_per_s, in_process_rows_per_s,
    served_share (served rows/s / in-process rows/s)], "failed": requests that failed in all}."""
    url = check_loopback(url)
    results = []
    for rows in rows_per_request:
        bodies = requests_for(model, rows, max(256, min(max_requests, 4096)), seed=rows)
        in_process_rows_per_s(model, bodies[:batch], batch)  # warm-up: the first forward allocates
        ceiling = in_process_rows_per_s(model, bodies, batch)
        run_load(url, bodies[:8], 1, 8, 10.0)  # warm-up: connections, the replica's first batch
        for c in concurrencies:
            r = run_load(url, bodies, c, max_requests, max_seconds)
            r.update(rows_per_request=rows, rows_per_s=r["requests_per_s"] * rows, in_process_rows_per_s=ceiling,
                     served_share=r["requests_per_s"] * rows / ceiling)
            log(f"[loadtest] {rows:>3} row(s)/request, concurrency {c:>3}: {r['requests']:>6,} ok, {r['failed']} failed, "
                f"{r['requests_per_s']:8.1f} req/s, {r['rows_per_s']:9.0f} rows/s ({r['served_share']:.2f} of "
                f"in-process {ceiling:,.0f}), p50/p95/p99 {_ms(r['p50_ms'])}/{_ms(r['p95_ms'])}/{_ms(r['p99_ms'])} ms")
            results.append(r)
    return {"url": url, "batch": batch, "runs": results, "failed": sum(r["failed"] for r in results)}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def server_batch_size(url: str) -> int:
    """The max_batch_size the server at `url` reports in GET /healthz (ConfigError when it does not answer)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{check_loopback(url)}/healthz", timeout=10) as response:
            return int(json.load(response)["max_batch_size"])
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"--url {url}: no scoring server answers GET /healthz there ({err}); start "
                          "pipelines/serve.py first") from None
