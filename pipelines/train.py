"""Train a multi-domain CTR model (DFEI by default) on Ray Train and report per-domain AUC.

Examples:
  python pipelines/train.py --data data/public-s0.02 --epochs 3 --out runs/demo
  ray job submit --working-dir . -- python pipelines/train.py --data /shared/ds --num-workers 4 --out /shared/runs/x
  python pipelines/train.py --config run.yaml --alpha 0.7      # YAML values, flags override

Connects to the cluster named by RAY_ADDRESS when set (as under `ray job submit`), otherwise
starts an embedded local Ray. Writes RUN_DIR/metrics.json and prints a per-domain table.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfei.cli import run_cli  # noqa: E402
from dfei.errors import ConfigError  # noqa: E402
from dfei.models import MODELS  # noqa: E402
from dfei.train.config import load_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=None)
    p.add_argument("--config", help="YAML file of TrainConfig keys (flags given here override it)")
    p.add_argument("--data", help="dataset directory or URI (dataset.json + split/domain=<id>/*.parquet)")
    p.add_argument("--out", help="run directory for metrics.json and Ray results (default runs/dfei)")
    p.add_argument("--model", choices=sorted(MODELS), help="model name (default dfei)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default 10; early stopping may end sooner)")
    p.add_argument("--patience", type=int, help="epochs without valid avg AUC improvement before stopping (default 1)")
    p.add_argument("--num-workers", type=int, help="Ray Train workers (default 1)")
    p.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per worker")
    p.add_argument("--cpus-per-worker", type=float, help="CPUs per worker (default: an equal share of the cluster)")
    p.add_argument("--alpha", type=float, help="DFE decay coefficient in [0, 1] (default 0.9)")
    p.add_argument("--k", type=int, help="DFI attention dimension (default 32)")
    p.add_argument("--lr", type=float, help="learning rate of domain parameters (default 1e-3)")
    p.add_argument("--shared-lr-scale", type=float, help="shared lr = lr * scale (default 1/D; 1.0 turns it off)")
    p.add_argument("--batch-size", type=int, help="mini-batch per domain (default 512)")
    p.add_argument("--mode", choices=["sequential", "fused"],
                   help="sequential (default): Algorithm 1 as written, one update per domain batch; fused: one "
                        "update per step over all domains' batches (one forward/backward, one collective per step)")
    p.add_argument("--embedding-update", choices=["lazy", "dense"],
                   help="lazy (default): only the embedding rows in the batch are updated (step cost independent "
                        "of the table size); dense: every row every step, as the authors' TF Adam")
    p.add_argument("--exhaustion", choices=["exhaust", "cycle"],
                   help="exhaust: a domain that runs out is skipped for the rest of the epoch (default, as the "
                        "authors); cycle: small domains repeat until the largest is done")
    p.add_argument("--ingest", choices=["arrow", "ray-data"],
                   help="training ingest: arrow (default; pyarrow readers per rank, bounded memory at any scale) "
                        "or ray-data (per-domain Ray Datasets split equally on the driver, held in the object store)")
    p.add_argument("--max-steps-per-epoch", type=int, help="cap Algorithm-1 steps per epoch (smoke runs)")
    p.add_argument("--max-failures", type=int, help="worker failures to recover from (default 0)")
    p.add_argument("--storage-path", help="Ray Train storage for checkpoints (default RUN_DIR/ray_results)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--init-from", metavar="CKPT",
                   help="incremental training: start from this checkpoint's weights, domain features (their EMA "
                        "continues) and optimizer state; new domains get fresh towers")
    p.add_argument("--reset-optimizer", action="store_true", default=None,
                   help="with --init-from: start Adam from scratch (weights and v still carried over)")
    p.add_argument("--drop-missing-domains", action="store_true", default=None,
                   help="with --init-from: allow data without some of the checkpoint's domains (their towers are "
                        "not carried over)")
    p.add_argument("--new-domain-from", metavar="DOMAIN",
                   help="with --init-from: a new domain's tower and head start as a copy of this checkpoint "
                        "domain's (default: fresh, randomly initialised); its v_d still starts from its first batch")
    p.add_argument("--mlflow", metavar="URI", help="also log params, per-epoch metrics and the best checkpoint to this "
                                                   "MLflow tracking store (sqlite:///path/mlflow.db, http://host:5000)")
    p.add_argument("--mlflow-experiment", help="MLflow experiment name (default dfei)")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=None,
                   help="do not write TensorBoard event files (default: RUN_DIR/tensorboard)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = vars(parse_args(argv))
    config_file = args.pop("config")

    def run() -> None:
        cfg = load_config(config_file, args)
        if not cfg.data:
            raise ConfigError("--data is required (or `data:` in --config)")
        from dfei.train.runner import run_training

        run_training(cfg)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
