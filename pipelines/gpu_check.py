"""The plain training engine on one device (a GPU when there is one), without Ray.

  python pipelines/gpu_check.py --out runs/gpu-check            # cuda if torch sees one, else cpu
  python pipelines/gpu_check.py --device cpu --scale 0.001 --variants sequential,fused

Needs only torch, numpy, pyarrow, pandas and scikit-learn (no Ray, pydantic, fsspec or tqdm), so it
runs on a bare GPU machine. Generates the industrial profile (21 domains) under OUT/data once and
reuses it, loads the train split in memory and, per variant, trains a fresh DFEI for --epochs
epochs and scores the test split:
  sequential     one update per domain batch (Algorithm 1, the default training mode)
  fused          all domains' batches of a step in one update
  fused+compile  fused, with train_epoch's torch.compile option
Prints a Markdown table (steady samples/s, epoch and compile seconds, test avg AUC, model FLOP/s as a
share of the measured fp32 matmul peak), the ratios fused/sequential (target >= 5x on a GPU: met or
MISSED) and (fused+compile)/fused, and writes OUT/gpu_check.json. At the default scale (376k train
rows) each epoch takes seconds to a minute on a GPU. Exit status 2 on a bad flag value.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfei.cli import run_cli  # noqa: E402  (imports dfei.errors only: no Ray, no pydantic)


def main(argv: list[str] | None = None) -> int:
    from dfei.bench.gpu_check import VARIANTS, GpuCheckConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/gpu-check", help="output directory: data/, gpu_check.json (default runs/gpu-check)")
    p.add_argument("--scale", type=float, default=0.01, help="industrial profile scale (default 0.01: 376k train rows)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default cuda when torch sees a GPU, else cpu)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list (default {','.join(VARIANTS)})")
    p.add_argument("--epochs", type=int, default=1, help="epochs per variant; figures are the last epoch's (default 1)")
    p.add_argument("--batch-size", type=int, default=512, help="rows per domain batch (default 512)")
    p.add_argument("--seed", type=int, default=0, help="data, initialisation and batch-order seed (default 0)")
    p.add_argument("--workers", type=int, help="data generation processes (default all cores)")
    p.add_argument("--all-domain-steps", type=int, default=20,
                   help="timed steps with every domain present (random ids) per mode: where fused saves D - 1 of "
                        "D updates (default 20)")
    args = p.parse_args(argv)

    def run() -> None:
        from dfei.bench.gpu_check import run as run_check

        cfg = GpuCheckConfig(out=args.out, scale=args.scale, device=args.device, epochs=args.epochs,
                             variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()),
                             batch_size=args.batch_size, seed=args.seed, workers=args.workers,
                             all_domain_steps=args.all_domain_steps)
        run_check(cfg)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
