"""Rerun the paper's comparison: every model x seed with the same trainer, then table.md / table.csv
(Table 3/5 layout, paired t-tests), ablation.png (Fig. 2a) and domain_features_tsne.png (Fig. 4).

Every run trains to convergence by default: up to 20 epochs, stopping after 3 without a better mean
valid AUC (--epochs, --patience).

Example:
  python pipelines/compare.py --data data/public-s0.05 \\
      --models mlp,mmoe,ple,aitm,hmoe,star,pepnet,hinet,dfei --seeds 5 --ablation --out runs/compare

Resumable: runs whose metrics.json exists under OUT/runs/<model>/seed<k> are not trained again (an
error if that run was trained with other settings).
Connects to RAY_ADDRESS when set, else an embedded Ray.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfei.cli import mlflow_experiment, run_cli  # noqa: E402
from dfei.config import add_config_flags, config_from_args  # noqa: E402
from dfei.models.registry import ABLATIONS, BASELINES  # noqa: E402

ALL = ",".join((*BASELINES, "dfei"))  # every baseline and DFEI
DEFAULTS = {"epochs": 20, "patience": 3}  # compare.py's own: every model to convergence (train.py: 10 / 1)
# what compare.py sets for each run: a --config file that sets them is refused (its value would be replaced)
RESERVED = {"model": "--models", "seed": "--seeds", "out": "--out"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=ALL, help=f"comma-separated registry names (default {ALL}; also "
                                                  "<backbone>+dfei, dfei_wo_dfi, dfei_wo_dfei)")
    p.add_argument("--ablation", action="store_true", help="also run dfei_wo_dfi, dfei_wo_dfei and dfei with shared "
                                                             "lr = lr (dfei_no_lr_scale) (ablation.png)")
    p.add_argument("--variants", metavar="YAML", help="also run named variants: a mapping of name -> config keys "
                                                      "that differ (model defaults to dfei), e.g. "
                                                      "'dfei_domain_norm: {domain_norm: true}'")
    p.add_argument("--report-only", action="store_true", help="train nothing: write the report from the finished "
                                                               "runs under --out (each model's seeds 0..k-1)")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per model (default 5, as the paper)")
    p.add_argument("--out", required=True, help="comparison directory: runs/<model>/seed<k>, tables, figures")
    p.add_argument("--config", help="YAML of TrainConfig keys applied to every run")
    add_config_flags(p, exclude=("model", "seed", "out"), help={
        "epochs": f"maximum epochs per run (default {DEFAULTS['epochs']}: to convergence)",
        "patience": f"epochs without a better mean valid AUC before a run stops (default {DEFAULTS['patience']})",
        "mlflow": "log every run as an MLflow run to this tracking store",
        "mlflow_experiment": "MLflow experiment name (default compare-<OUT's name>)"})
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.ablation:
        models += [m for m in ABLATIONS if m not in models]

    def run() -> None:
        base = config_from_args(vars(args), args.config, DEFAULTS, reserved=RESERVED, who="compare.py",
                                mlflow_experiment=mlflow_experiment(args.mlflow_experiment, args.mlflow, "compare",
                                                                    args.out))
        from dfei.experiments.compare import compare, load_variants

        variants = load_variants(args.variants, base) if args.variants else {}
        if args.ablation and "dfei_no_lr_scale" not in variants:  # paper §4.4's third ablation
            # (a report of runs made before it existed reports without it)
            if not args.report_only or os.path.exists(os.path.join(args.out, "runs", "dfei_no_lr_scale", "seed0")):
                variants["dfei_no_lr_scale"] = base.replace(model="dfei", shared_lr_scale=1.0)
        compare(base, models, args.seeds, args.out, variants=variants, report_only=args.report_only)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
