"""Run the Serve application (dfei.serving.app) on a Ray cluster: start it, update its model, stop it.

`serve_until_stopped` is pipelines/serve.py: it checks the artifact here first (a missing file, a
sidecar from another export, an ONNX model without onnxruntime fail before Ray starts), deploys on
the cluster named by RAY_ADDRESS (refused when the application already runs there) or an embedded
local Ray, waits until the replicas answer with the artifact's version, prints the URL and blocks
until Ctrl-C or SIGTERM, then deletes the application (an embedded Ray: stops that Ray). `update`
deploys another artifact into the running application of a cluster without downtime (see
dfei.serving.app), keeping the settings it runs with unless given, and returns once the new
version answers. On a cluster whose Serve already runs, its HTTP host and port stay what they are.
"""
from __future__ import annotations

import os
import signal
import threading
import time

from dfei.errors import ConfigError
from dfei.serving.app import APP_NAME, ServeSettings, build_app
from dfei.serving.loader import ServingModel
from dfei.serving.protocol import version_of


def checked_settings(**given) -> tuple[ServeSettings, str]:
    """ServeSettings of the settings given (None: not given) with an absolute model path, and the
    version that artifact will answer with; ConfigError names a bad setting, loader errors a bad artifact."""
    from pydantic import ValidationError

    try:
        settings = ServeSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigError(f"--{'-'.join(map(str, first['loc'])).replace('_', '-')}: {first['msg']} "
                          f"(got {first.get('input')!r})") from None
    settings = settings.model_copy(update={"model": os.path.abspath(settings.model)})
    return settings, version_of(ServingModel.load(settings.model))


def wait_for_version(version: str, timeout_s: float = 120.0, stop: threading.Event | None = None) -> bool:
    """Until the application's replicas answer `version` (asked through a Serve handle, not HTTP,
    so any cluster works); False when `stop` is set first, RuntimeError after timeout_s."""
    from ray import serve

    deadline, last = time.time() + timeout_s, None
    while time.time() < deadline:
        if stop is not None and stop.is_set():
            return False
        try:
            if serve.get_app_handle(APP_NAME).version.remote().result(timeout_s=10) == version:
                return True
        except Exception as err:  # noqa: BLE001 (polling: not deployed yet, a replica starting)
            last = err
        time.sleep(0.2)
    raise RuntimeError(f"application {APP_NAME!r} did not answer with {version} within {timeout_s:.0f} s "
                       f"(last error: {last})")


def _url(host: str, port: int) -> str:
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"


def update(given: dict, log=print) -> None:
    """Deploy another model into the cluster's running application: the settings it runs with, those
    in `given` (None: not given) replacing them. ConfigError when no application runs."""
    from ray import serve

    if APP_NAME not in serve.status().applications:
        raise ConfigError(f"no application {APP_NAME!r} runs on this cluster: start one with pipelines/serve.py "
                          "(without --update) first")
    running = serve.get_app_handle(APP_NAME).current_settings.remote().result(timeout_s=60)
    settings, version = checked_settings(**{**running, **{k: v for k, v in given.items() if v is not None}})
    t0 = time.time()
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
    wait_for_version(version)
    log(f"[serve] {APP_NAME!r} now answers with {version} ({time.time() - t0:.1f}s; the old replicas drained)")


def serve_until_stopped(settings: ServeSettings, version: str, host: str, port: int, mode: str, log=print) -> None:
    """Deploy on host:port, print the URL, block until Ctrl-C/SIGTERM, then stop what this command
    started. ConfigError when the cluster already runs the application (`--update` replaces its model)."""
    from ray import serve

    if mode != "embedded" and APP_NAME in serve.status().applications:
        raise ConfigError(f"an application {APP_NAME!r} already runs on this cluster: pass --update to deploy "
                          "another model into it, or stop the pipelines/serve.py that started it")
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})  # a cluster's running Serve keeps its own
        serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
        if wait_for_version(version, stop=stop):
            url = _url(host, port)
            log(f"[serve] {url} answers with {version}: POST /predict, GET /model, GET /healthz "
                f"({settings.replicas} replica(s), batches of <= {settings.max_batch_size} requests, "
                f"{settings.batch_wait_ms:g} ms wait); Ctrl-C stops it")
            if mode == "embedded":
                import ray

                # Ray starts a local cluster with token auth (the token in ~/.ray/auth_token); a client
                # given an explicit address sends it only when told to
                auth = "RAY_AUTH_MODE=token " if os.environ.get("RAY_AUTH_MODE") == "token" else ""
                log(f"[serve] to deploy another artifact without downtime: {auth}"
                    f"RAY_ADDRESS={ray.get_runtime_context().gcs_address} python pipelines/serve.py --model NEW --update")
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(mode, log)
    log("[serve] stopped")


def _stop(mode: str, log) -> None:
    from ray import serve

    if mode == "embedded":  # Serve and the Ray of this command go with it: stopping Ray ends them all
        import ray  # (serve.shutdown() first waited 30 s for Serve's controller here, for nothing kept)

        log("[serve] stopping the embedded Ray (its Serve application with it)")
        ray.shutdown()
    else:
        log("[serve] stopping: deleting the application (the cluster keeps running)")
        serve.delete(APP_NAME)


def run_server(given: dict, host: str, port: int, update_running: bool, log=print) -> None:
    """pipelines/serve.py: check `given` (the settings given, None: not given), the artifact, --host/
    --port and --update's RAY_ADDRESS before Ray starts (ConfigError naming the flag), then serve
    until stopped, or deploy into the running application (`update_running`)."""
    from dfei.ray_runtime import init_ray

    settings, version = checked_settings(**given)  # the artifact and every value checked before Ray starts
    if update_running and not os.environ.get("RAY_ADDRESS"):
        raise ConfigError("--update deploys into a running cluster: set RAY_ADDRESS to it (pipelines/serve.py "
                          "prints it when it starts an embedded Ray)")
    if update_running and (host != "127.0.0.1" or port != 8000):
        raise ConfigError("--host/--port are the server's: --update keeps the running application's")
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    # Ray Serve's own switch for its request path (user code on the replica's event loop, buffered
    # access logs, gRPC between proxy and replicas): 1.1-1.9x the requests/s on this machine
    # (BENCHMARKS.md "Serving"); read by Serve's processes at start, so only an embedded Ray or a
    # cluster started with it set gets it
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    mode = init_ray(log=log)
    if update_running:
        update(given, log=log)
    else:
        serve_until_stopped(settings, version, host, port, mode, log=log)
