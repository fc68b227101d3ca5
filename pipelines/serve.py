"""Score requests online: an exported artifact behind HTTP on Ray Serve, with dynamic batching.

  python pipelines/serve.py --model runs/serving/logs.onnx               # blocks; Ctrl-C stops it
  curl -s localhost:8000/predict -d '{"domain": "home", "rows": [{"user_id": "u01", ...}]}'
  RAY_ADDRESS=HOST:PORT python pipelines/serve.py --model runs/serving/logs-day2.onnx --update

Deploys on the cluster named by RAY_ADDRESS or on an embedded local Ray. The API:
  POST /predict  {"domain": RAW VALUE, "rows": [{feature: raw value, ...}, ...]}   raw logs' values
                 {"domain_id": ID, "ids": [[feature id, ...], ...]}               ids, GET /model's order
                 -> {"ctr": [...], "version": "logs.onnx@<sha256[:12]>", "request_id": ...}
  GET  /model    features (names, kinds, cardinalities), domains, version, digests, creation time
  GET  /healthz  {"status": "ok", "version", and this replica's request/forward/row counts}
A bad request gets HTTP 400 (413: more rows than --max-rows) with a JSON error naming the field and
value; an internal error a 500 with a request id that the server log shows too.

--update deploys another artifact into the application already running on the cluster: new
replicas start before the old ones stop, so requests keep being answered throughout, each naming
the version that scored it. The same application deploys with `serve deploy` from a config file
(cluster/serve_config.yaml; cluster/rayservice.yaml on KubeRay).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfei.cli import run_cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from dfei.serving.app import ServeSettings  # the defaults and ranges, declared once

    field = ServeSettings.model_fields
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="the exported artifact (pipelines/export.py: ONNX, the default format, or TorchScript); "
                        "its FILE.json sidecar (and FILE.encoders/) beside it")
    for name, kind in (("replicas", int), ("max_batch_size", int), ("batch_wait_ms", float), ("max_rows", int),
                       ("num_cpus", float)):
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                       help=f"{field[name].description} (default {field[name].default}; with --update: what the "
                            "running application has)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address the HTTP proxy listens on (default 127.0.0.1; 0.0.0.0 to accept other machines)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000, Ray Serve's)")
    p.add_argument("--update", action="store_true",
                   help="deploy --model into the application already running on the cluster of RAY_ADDRESS "
                        "(no downtime; the other settings stay as they run unless given), then exit")
    args = p.parse_args(argv)

    def run() -> None:
        from dfei.serving.launch import run_server

        run_server({k: getattr(args, k) for k in ("model", "replicas", "max_batch_size", "batch_wait_ms", "max_rows",
                                                  "num_cpus")}, args.host, args.port, args.update)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
