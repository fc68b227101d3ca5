"""Score a dataset split with a trained checkpoint (Ray Data batch inference) and write Parquet.

Example:
  python pipelines/predict.py --checkpoint runs/demo/ray_results/<run>/epoch_0004 \
      --data data/public-s0.05 --split test --out runs/demo/scores

Output columns: path and row_hash (the input row's identity), domain, label, score. The model uses
the checkpoint's trained domain features. Connects to RAY_ADDRESS when set, else an embedded Ray.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfei.cli import run_cli  # noqa: E402
from dfei.data.spec import SPLITS  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (metrics.json 'checkpoint'), local or URI")
    p.add_argument("--data", required=True, help="dataset directory or URI")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--out", required=True, help="output directory for the Parquet files")
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--num-workers", type=int, default=1, help="model-holding actors (one GPU each with --use-gpu)")
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from dfei.train.predict import check_settings, predict
    from dfei.train.runner import init_ray

    def run() -> None:
        check_settings(args.batch_size, args.num_workers, args.use_gpu)  # before Ray starts
        init_ray()
        predict(args.checkpoint, args.data, args.split, args.out, args.batch_size, args.num_workers, args.use_gpu,
                args.overwrite)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
