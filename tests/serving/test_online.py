"""The Ray Serve application over HTTP, as pipelines/serve.py runs it on the test session's cluster:
scores equal ServingModel.predict_raw exactly, concurrent requests share forwards, bad requests get
4xx, a model update under load fails no request, SIGTERM stops it cleanly. One application for
the module, in file order: the update test comes after the tests that expect the first version."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from dfei.serving.loader import ServingModel
from dfei.serving.protocol import version_of


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVE = os.path.join(ROOT, "pipelines", "serve.py")


def _post(url: str, body, timeout: float = 30.0) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/predict", data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def _get(url: str, path: str) -> dict:
    with urllib.request.urlopen(f"{url}{path}", timeout=30) as r:
        return json.load(r)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(ray_cluster) -> dict:
    return {**os.environ, "RAY_ADDRESS": ray_cluster["address"], "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def server(ray_session, ray_cluster, encoded_artifacts, tmp_path_factory):
    """pipelines/serve.py --model v1 on the session's cluster (a 50 ms batch wait: bursts batch)."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, SERVE, "--model", encoded_artifacts["v1"], "--port", str(port),
                             "--max-batch-size", "16", "--batch-wait-ms", "50", "--max-rows", "64", "--num-cpus", "0.5"],
                            env=_env(ray_cluster), stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    try:
        while "answers with" not in open(log.name).read():
            assert proc.poll() is None and time.time() < deadline, open(log.name).read()[-3000:]
            time.sleep(0.5)
        yield {"url": url, "proc": proc, "log": log.name, "port": port}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_http_scores_equal_predict_raw_exactly(server, encoded_artifacts, raw_rows):
    model = ServingModel.load(encoded_artifacts["v1"])
    for domain, n, seed in (("home", 1, 0), ("search", 33, 1), ("home", 64, 2)):
        rows = raw_rows(n, seed)
        status, payload = _post(server["url"], {"domain": domain, "rows": rows})
        assert status == 200 and payload["version"] == version_of(model), payload
        assert np.array_equal(np.array(payload["ctr"], dtype=np.float32), model.predict_raw(rows, [domain] * n))
    card = _get(server["url"], "/model")
    assert card["version"] == version_of(model) and [f["name"] for f in card["features"]] == model.feature_names


def test_a_burst_of_concurrent_requests_is_served_in_fewer_forwards(server, encoded_artifacts, raw_rows):
    model = ServingModel.load(encoded_artifacts["v1"])
    before = _get(server["url"], "/healthz")
    bodies = [{"domain": ("home", "search")[i % 2], "rows": raw_rows(1 + i % 3, 100 + i)} for i in range(32)]
    answers: list = [None] * len(bodies)

    def send(i: int) -> None:
        answers[i] = _post(server["url"], bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for body, (status, payload) in zip(bodies, answers):  # each request got its own rows' scores back
        assert status == 200
        expected = model.predict_raw(body["rows"], [body["domain"]] * len(body["rows"]))
        assert np.array_equal(np.array(payload["ctr"], dtype=np.float32), expected)
    after = _get(server["url"], "/healthz")
    assert after["requests"] - before["requests"] == 32
    assert after["forwards"] - before["forwards"] < 32  # batching happened (a 50 ms wait gathers the burst)
    assert after["rows"] - before["rows"] == sum(len(b["rows"]) for b in bodies)


def test_bad_requests_get_4xx_json_naming_the_field_over_http(server, raw_rows):
    url = server["url"]
    cases = [(b"{oops", 400, "not valid JSON"), ({"domain": "shop", "rows": raw_rows(1)}, 400, "domain 'shop'"),
             ({"domain": "home", "rows": [{**raw_rows(1)[0], "cost": 1}]}, 400, "unknown ['cost']"),
             ({"domain": "home", "rows": raw_rows(65)}, 413, "at most 64"), ({"domain": "home", "rows": []}, 400, "'rows'")]
    for body, code, text in cases:
        status, payload = _post(url, body)
        assert status == code and text in payload["error"] and payload["request_id"], (body, payload)
        assert "ctr" not in payload


def test_a_second_server_on_the_same_cluster_is_refused(server, encoded_artifacts, ray_cluster):
    proc = subprocess.run([sys.executable, SERVE, "--model", encoded_artifacts["v2"], "--port", str(_free_port())],
                          env=_env(ray_cluster), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "an application 'dfei' already runs on this cluster" in proc.stderr, proc.stderr
    assert _get(server["url"], "/healthz")["status"] == "ok"  # the running one untouched


def test_the_loadtest_reports_latency_and_the_in_process_ceiling(server, encoded_artifacts, tmp_path):
    out = tmp_path / "load.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "pipelines", "loadtest.py"), "--model",
                           encoded_artifacts["v1"], "--url", server["url"], "--rows", "1,4", "--concurrency", "1,4",
                           "--requests", "40", "--seconds", "20", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.load(open(out))
    assert result["batch"] == 16  # the server's max_batch_size, read from its /healthz
    assert [(r["rows_per_request"], r["concurrency"]) for r in result["runs"]] == [(1, 1), (1, 4), (4, 1), (4, 4)]
    for r in result["runs"]:
        assert r["requests"] == 40 and r["failed"] == 0 and 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        assert r["served_share"] == pytest.approx(r["rows_per_s"] / r["in_process_rows_per_s"])
    assert "concurrency   4" in proc.stdout


def test_an_update_under_load_fails_no_request_and_each_response_names_its_version(server, encoded_artifacts,
                                                                                    ray_cluster, raw_rows):
    v1, v2 = (version_of(ServingModel.load(encoded_artifacts[k])) for k in ("v1", "v2"))
    models = {version_of(m): m for m in map(ServingModel.load, (encoded_artifacts["v1"], encoded_artifacts["v2"]))}
    seen, failures, stop = [], [], threading.Event()

    def client(seed: int) -> None:
        i = 0
        while not stop.is_set():
            rows, domain = raw_rows(2, seed * 1000 + i), ("home", "search")[i % 2]
            status, payload = _post(server["url"], {"domain": domain, "rows": rows})
            if status != 200:
                failures.append(payload)
            else:
                ok = np.array_equal(np.array(payload["ctr"], np.float32),
                                    models[payload["version"]].predict_raw(rows, [domain, domain]))
                seen.append((time.time(), payload["version"], ok))
            i += 1

    threads = [threading.Thread(target=client, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    update = subprocess.run([sys.executable, SERVE, "--model", encoded_artifacts["v2"], "--update"],
                            env=_env(ray_cluster), capture_output=True, text=True, timeout=300)
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join(60)
    assert update.returncode == 0, update.stdout[-3000:] + update.stderr[-3000:]
    assert f"now answers with {v2}" in update.stdout
    assert failures == [] and all(ok for _, _, ok in seen)
    versions = [v for _, v, _ in seen]
    assert versions[0] == v1 and versions[-1] == v2 and set(versions) == {v1, v2}
    health = _get(server["url"], "/healthz")
    assert health["version"] == v2 and health["reconfigure_error"] is None
    assert (health["max_rows"], health["max_batch_size"], health["batch_wait_ms"]) == (64, 16, 50)  # kept


def test_sigterm_stops_the_server_cleanly_and_deletes_the_application(server, ray_session):
    from ray import serve

    server["proc"].send_signal(signal.SIGTERM)
    assert server["proc"].wait(60) == 0, open(server["log"]).read()[-3000:]
    assert "[serve] stopped" in open(server["log"]).read()
    assert "dfei" not in serve.status().applications


def test_serve_refuses_bad_settings_before_ray_starts(tmp_path, encoded_artifacts, monkeypatch, capsys, ray_must_not_start):
    sys.path.insert(0, os.path.join(ROOT, "pipelines"))
    import serve as serve_cli  # pipelines/serve.py

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cases = [(["--model", str(tmp_path / "none.onnx")], "none.onnx does not exist"),
             (["--model", encoded_artifacts["v1"], "--max-batch-size", "0"], "--max-batch-size: Input should be greater"),
             (["--model", encoded_artifacts["v1"], "--update"], "--update deploys into a running cluster"),
             (["--model", encoded_artifacts["v1"], "--port", "70000"], "--port must be in 1..65535")]
    for argv, message in cases:
        assert serve_cli.main(argv) == 2
        assert message in capsys.readouterr().err


def test_a_replica_keeps_its_model_when_the_next_one_cannot_be_loaded(encoded_artifacts, tmp_path):
    import asyncio

    from dfei.serving.app import Scorer

    async def scenario():
        replica = Scorer.func_or_class({"replicas": 1, "num_cpus": 1.0})  # the class Serve runs, without Serve
        await replica.reconfigure({"model": encoded_artifacts["v1"], "max_rows": 8})
        v1 = replica.version()
        await replica.reconfigure({"model": str(tmp_path / "typo.onnx"), "max_rows": 8})
        assert replica.version() == v1 and "typo.onnx does not exist" in replica.endpoint.reconfigure_error
        assert replica.current_settings()["model"] == encoded_artifacts["v1"]
        await replica.reconfigure({"model": encoded_artifacts["v2"], "max_rows": 8})
        assert replica.version() != v1 and replica.endpoint.reconfigure_error is None
        fresh = Scorer.func_or_class({})
        with pytest.raises(FileNotFoundError, match="typo.onnx does not exist"):  # no model yet: the deploy fails
            await fresh.reconfigure({"model": str(tmp_path / "typo.onnx")})

    asyncio.run(scenario())
