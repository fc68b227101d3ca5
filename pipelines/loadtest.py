"""Load test of a running scoring endpoint (pipelines/serve.py) on this machine, with its ceiling.

  python pipelines/serve.py --model runs/serving/logs.onnx &        # the server
  python pipelines/loadtest.py --model runs/serving/logs.onnx --out runs/serving/loadtest.json

For each rows-per-request (default 1 and 32: a single score and a ranking call of 32 candidates)
and each concurrency (default 1, 8 and 64 clients), sends requests until --requests or --seconds,
whichever comes first, and reports p50/p95/p99 latency (ms), requests/s and rows/s, next to the
ceiling: the same requests parsed and scored in this process by the server's own code in batches
of the server's max_batch_size (no HTTP, no Ray Serve). Requests are raw rows drawn from the artifact's
encoders (ids for a model without encoders). Loopback only; it stops by itself. The client runs at
the niceness of Ray's worker processes (15), so that on one machine it takes no CPU precedence over
the server it measures. Exit status 1 when any request failed (the figures are still printed and
written).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfei.cli import run_cli  # noqa: E402

SERVER_NICENESS = 15  # what Ray runs its worker processes (Serve's proxy and replicas) at: RAY_worker_niceness


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the artifact the server runs (its encoders make the rows)")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the server (this machine only; default %(default)s)")
    p.add_argument("--rows", type=_ints, default=[1, 32], help="rows per request, comma-separated (default 1,32)")
    p.add_argument("--concurrency", type=_ints, default=[1, 8, 64], help="concurrent clients (default 1,8,64)")
    p.add_argument("--requests", type=int, default=3000, help="requests per run at most (default 3000)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds per run at most (default 20)")
    p.add_argument("--batch", type=int, default=None,
                   help="requests per forward of the in-process ceiling (default: the server's max_batch_size, "
                        "from its /healthz)")
    p.add_argument("--out", help="write the figures to this JSON file")
    args = p.parse_args(argv)

    def run() -> None:
        from dfei.atomic import write_json_atomic
        from dfei.bench.serving_load import run_study, server_batch_size
        from dfei.errors import ConfigError, RunFailedError
        from dfei.serving.loader import ServingModel

        if args.requests < 1 or not args.seconds > 0 or (args.batch is not None and args.batch < 1):
            raise ConfigError("--requests and --batch must be >= 1 and --seconds > 0")
        os.nice(max(0, SERVER_NICENESS - os.nice(0)))  # the client takes no precedence over the server it measures
        model = ServingModel.load(args.model)
        batch = args.batch or server_batch_size(args.url)
        result = run_study(args.url, model, args.rows, args.concurrency, args.requests, args.seconds, batch)
        if args.out:
            write_json_atomic(args.out, result)
            print(f"[loadtest] wrote {args.out}")
        if result["failed"]:
            first = next(r["first_failure"] for r in result["runs"] if r["failed"])
            raise RunFailedError(f"{result['failed']} request(s) failed, e.g. {first}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
