"""Rerun the paper's comparison: every model x seed with the same trainer, then table.md / table.csv
(Table 3/5 layout, paired t-tests), ablation.png (Fig. 2a) and domain_features_tsne.png (Fig. 4).

Example:
  python pipelines/compare.py --data data/public-s0.05 \\
      --models mlp,mmoe,ple,aitm,hmoe,star,pepnet,hinet,dfei --seeds 5 --ablation --out runs/compare

Resumable: runs whose metrics.json exists under OUT/runs/<model>/seed<k> are not trained again.
Connects to RAY_ADDRESS when set, else an embedded Ray.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfei.cli import mlflow_experiment, run_cli  # noqa: E402
from dfei.train.config import add_config_flags, config_from_args  # noqa: E402

ALL = "mlp,mmoe,ple,aitm,hmoe,star,pepnet,hinet,dfei"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=ALL, help=f"comma-separated registry names (default {ALL}; also "
                                                  "<backbone>+dfei, dfei_wo_dfi, dfei_wo_dfei)")
    p.add_argument("--ablation", action="store_true", help="also run dfei_wo_dfi and dfei_wo_dfei (ablation.png)")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per model (default 5, as the paper)")
    p.add_argument("--out", required=True, help="comparison directory: runs/<model>/seed<k>, tables, figures")
    p.add_argument("--config", help="YAML of TrainConfig keys applied to every run")
    add_config_flags(p, exclude=("model", "seed", "out"), help={
        "mlflow": "log every run as an MLflow run to this tracking store",
        "mlflow_experiment": "MLflow experiment name (default compare-<OUT's name>)"})
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.ablation:
        models += [m for m in ("dfei_wo_dfi", "dfei_wo_dfei") if m not in models]

    def run() -> None:
        base = config_from_args(vars(args), args.config, mlflow_experiment=mlflow_experiment(
            args.mlflow_experiment, args.mlflow, "compare", args.out))
        from dfei.train.compare import compare

        compare(base, models, args.seeds, args.out)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
