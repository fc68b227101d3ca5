"""Score a dataset split, or raw logs, with a trained checkpoint (Ray Data batch inference); write Parquet.

Examples:
  python pipelines/predict.py --checkpoint runs/demo/ray_results/<run>/epoch_0004 \
      --data data/public-s0.05 --split test --out runs/demo/scores
  python pipelines/predict.py --checkpoint CKPT --input 'logs/day2/*.csv' --keep-columns request_id --out scores

--data: a converted dataset (encoded with the checkpoint's encoders, or encoders grown from them);
output columns path and row_hash (the input row's identity), domain, label, score.
--input: raw CSV/Parquet logs (a file, a glob or an fsspec URI), encoded in Ray Data with the
encoders the checkpoint carries (as `prepare_data.py csv --encoders-from` would); output columns
the --keep-columns, domain_id, score. The model uses the checkpoint's trained domain features.
Connects to RAY_ADDRESS when set, else an embedded Ray.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfei.cli import run_cli  # noqa: E402
from dfei.data.spec import SPLITS  # noqa: E402
from dfei.errors import ConfigError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (metrics.json 'checkpoint'), local or URI")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="a converted dataset directory or URI")
    source.add_argument("--input", help="raw logs: a .csv/.parquet file, a glob or an fsspec URI")
    p.add_argument("--split", choices=SPLITS, help="with --data: the split to score (default test)")
    p.add_argument("--keep-columns", help="with --input: comma-separated input columns copied to the output "
                                          "(e.g. a request id)")
    p.add_argument("--out", required=True, help="output directory for the Parquet files")
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--num-workers", type=int, default=1, help="model-holding actors (one GPU each with --use-gpu)")
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from dfei.inference.dataset_scoring import check_settings, predict
    from dfei.ray_runtime import init_ray

    def run() -> None:
        check_settings(args.batch_size, args.num_workers, args.use_gpu)  # before Ray starts
        if args.input and args.split:
            raise ConfigError("--split applies to --data (a dataset's split), not to --input (raw logs)")
        if args.data and args.keep_columns:
            raise ConfigError("--keep-columns applies to --input (raw logs); --data output keeps path and row_hash")
        init_ray()
        if args.input:
            from dfei.inference.raw_scoring import predict_raw

            predict_raw(args.checkpoint, args.input, args.out, [c.strip() for c in args.keep_columns.split(",")
                                                                if c.strip()] if args.keep_columns else None,
                        args.batch_size, args.num_workers, args.use_gpu, args.overwrite)
        else:
            predict(args.checkpoint, args.data, args.split or "test", args.out, args.batch_size, args.num_workers,
                    args.use_gpu, args.overwrite)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
