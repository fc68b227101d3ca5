"""Do two training settings reach the same test AUC? Trains each variant with the same seeds.

  python pipelines/parity.py --data data/industrial-s0.01 --variants mode=sequential,mode=fused --seeds 3 \\
      --epochs 5 --out runs/parity-fused
  python pipelines/parity.py --data data/public-s0.05 \\
      --variants embedding_update=dense,embedding_update=lazy --seeds 3 --out runs/parity-lazy

A variant is key=value (TrainConfig keys, as in train.py's --config), several joined with '+'.
The first variant is the reference: the table gives each variant's mean test avg AUC, its mean
difference to the reference and the paired t-test p-value over seeds (scipy.stats.ttest_rel),
and its training speed. Writes OUT/parity.md and OUT/parity.json; finished runs are not redone.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfei.cli import run_cli  # noqa: E402
from dfei.config import add_config_flags, config_from_args  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", required=True, help="comma-separated key=value[+key=value] (first = reference)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    p.add_argument("--out", required=True, help="parity directory: runs/<variant>/seed<k>, parity.md, parity.json")
    p.add_argument("--config", help="YAML of TrainConfig keys shared by every run")
    add_config_flags(p, exclude=("seed", "out"))  # settings shared by every variant
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]

    def run() -> None:
        base = config_from_args(vars(args), args.config, reserved={"seed": "--seeds", "out": "--out"},
                                who="parity.py")
        from dfei.experiments.parity import run_parity

        run_parity(base, variants, args.seeds, args.out)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
