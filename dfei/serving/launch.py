"""Run the Serve application (dfei.serving.app) on a Ray cluster: start it, update its model, stop it.

`serve_until_stopped` is pipelines/serve.py: it checks the artifact here first (a missing file, a
sidecar from another export, an ONNX model without onnxruntime fail before Ray starts), deploys on
the cluster named by RAY_ADDRESS or an embedded local Ray, waits for /healthz, prints the URL and
blocks until Ctrl-C or SIGTERM, then deletes the application (and, for an embedded Ray, stops Serve
and Ray). `update` deploys another artifact into the running application of a cluster without
downtime (see dfei.serving.app) and returns once the new version answers.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request

from dfei.errors import ConfigError
from dfei.serving.app import APP_NAME, ServeSettings, build_app
from dfei.serving.loader import ServingModel
from dfei.serving.protocol import version_of


def checked_settings(**kwargs) -> tuple[ServeSettings, str]:
    """ServeSettings with an absolute model path, and the version that artifact will answer with;
    ConfigError names a bad setting, loader errors a bad artifact."""
    from pydantic import ValidationError

    try:
        settings = ServeSettings(**kwargs)
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigError(f"--{'-'.join(map(str, first['loc'])).replace('_', '-')}: {first['msg']} "
                          f"(got {first.get('input')!r})") from None
    settings = settings.model_copy(update={"model": os.path.abspath(settings.model)})
    return settings, version_of(ServingModel.load(settings.model))


def _get(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def wait_for_version(url: str, version: str, timeout_s: float = 120.0) -> None:
    """Until GET url/healthz answers `version` (RuntimeError after timeout_s)."""
    deadline, last = time.time() + timeout_s, None
    while time.time() < deadline:
        try:
            if _get(f"{url}/healthz").get("version") == version:
                return
        except OSError as err:  # not listening yet, or a 503 while the replica loads
            last = err
        time.sleep(0.2)
    raise RuntimeError(f"{url}/healthz did not answer version {version} within {timeout_s:.0f} s (last error: {last})")


def deploy(settings: ServeSettings, host: str, port: int) -> str:
    """Start Serve's HTTP proxy on host:port (if Serve is not running yet) and run the application
    at route "/"; returns the URL. Blocks until the deployment is running."""
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"


def update(settings: ServeSettings, version: str, url: str, log=print) -> None:
    """Deploy `settings` into the cluster's running application (ConfigError when there is none)."""
    from ray import serve

    if APP_NAME not in serve.status().applications:
        raise ConfigError(f"no application {APP_NAME!r} runs on this cluster: start one with pipelines/serve.py "
                          "(without --update) first")
    t0 = time.time()
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
    wait_for_version(url, version)
    log(f"[serve] {url} now answers with {version} ({time.time() - t0:.1f}s; the old replicas drained)")


def serve_until_stopped(settings: ServeSettings, version: str, host: str, port: int, mode: str, log=print) -> None:
    """Deploy, print the URL, block until Ctrl-C/SIGTERM, then stop what this command started."""
    from ray import serve

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        url = deploy(settings, host, port)
        wait_for_version(url, version)
        log(f"[serve] {url} answers with {version}: POST /predict, GET /model, GET /healthz "
            f"({settings.replicas} replica(s), batches of <= {settings.max_batch_size} requests, "
            f"{settings.batch_wait_ms:g} ms wait); Ctrl-C stops it")
        if mode == "embedded":
            import ray

            log(f"[serve] to deploy another artifact without downtime: RAY_ADDRESS={ray.get_runtime_context().gcs_address} "
                "python pipelines/serve.py --model NEW --update")
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if mode == "embedded":  # Serve and the Ray of this command go with it: stopping Ray ends them all
            import ray  # (serve.shutdown() first waited 30 s for Serve's controller here, for nothing kept)

            log("[serve] stopping the embedded Ray (its Serve application with it)")
            ray.shutdown()
        else:
            log("[serve] stopping: deleting the application (the cluster keeps running)")
            serve.delete(APP_NAME)
    log("[serve] stopped")
