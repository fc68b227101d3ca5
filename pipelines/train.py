"""Train a multi-domain CTR model (DFEI by default) on Ray Train and report per-domain AUC.

Examples:
  python pipelines/train.py --data data/public-s0.02 --epochs 3 --out runs/demo
  ray job submit --working-dir . -- python pipelines/train.py --data /shared/ds --num-workers 4 --out /shared/runs/x
  python pipelines/train.py --config examples/dfei.yaml --alpha 0.7   # YAML values, flags override

Connects to the cluster named by RAY_ADDRESS when set (as under `ray job submit`), otherwise
starts an embedded local Ray. Writes RUN_DIR/metrics.json and prints a per-domain table.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfei.cli import run_cli  # noqa: E402
from dfei.config import add_config_flags, config_from_args  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file of TrainConfig keys (flags given here override it)")
    add_config_flags(p)  # one flag per TrainConfig field (dfei/config/settings.py)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = vars(parse_args(argv))

    def run() -> None:
        cfg = config_from_args(args, args.pop("config"))
        from dfei.train.driver import run_training

        run_training(cfg)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
