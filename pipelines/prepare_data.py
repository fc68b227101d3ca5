"""Write a dataset in the dfei data contract (dataset.json + Parquet per split and domain).

Examples:
  python pipelines/prepare_data.py synthetic --profile public --scale 0.02 --seed 0 --out data/public-s0.02
  python pipelines/prepare_data.py synthetic --profile industrial --scale 0.01 --out data/industrial-s0.01

Profiles: `industrial` = paper Table 1 (21 domains A1..A21), `public` = Table 2 (6 domains
B1..B6); --scale 1.0 is the paper's row counts (industrial: 37.6M train rows).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfei.data.profiles import PROFILES  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synthetic", help="synthetic data shaped like the paper's tables",
                       description="Synthetic multi-domain CTR data with learnable latent structure.")
    s.add_argument("--profile", choices=sorted(PROFILES), required=True)
    s.add_argument("--scale", type=float, default=0.01, help="fraction of the paper's row counts (default 0.01)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="output directory (local)")
    s.add_argument("--workers", type=int, default=None, help="generator processes (default: all cores)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from dfei.data.synthetic import generate

    try:
        generate(args.profile, args.scale, args.seed, args.out, args.workers, args.overwrite)
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
