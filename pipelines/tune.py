"""Search DFEI's alpha (DFE decay) and k (DFI attention size) with Ray Tune.

Every trial is one run of train.py's training (same loop, same checkpoints); the objective is the
mean valid AUC over domains, reported after every epoch. Examples:

  # the paper's alpha study (Fig. 3) at k = 32, 3 epochs per trial
  python pipelines/tune.py --data data/public-s0.05 --alpha 0,0.1,0.3,0.5,0.7,0.9,1 --k 32 --epochs 3 --out runs/tune
  # alpha x k grid, 2 seeds per point, weak trials stopped early by ASHA
  python pipelines/tune.py --data DIR --alpha 0.5,0.7,0.9 --k 16,32,64 --num-samples 2 --scheduler asha --out runs/t2
  # 20 random draws: alpha uniform in [0.5, 1], k from a list
  python pipelines/tune.py --data DIR --search random --alpha 0.5:1 --k 16,32,64 --num-samples 20 --out runs/t3
  # continue an interrupted sweep (finished trials are not run again; any flag given must be the sweep's)
  python pipelines/tune.py --out runs/tune --resume
  # on a cluster
  ray job submit --working-dir . -- python pipelines/tune.py --data /shared/ds --alpha ... --out /shared/runs/tune

Writes OUT/results.csv (one row per trial), results.md, alpha_curve.png and best.json; retrain the
best setting with `python pipelines/train.py --config OUT/best.json --out RUN_DIR`. A sweep stopped
before every trial ended (Ctrl-C) exits 130 and writes results.csv/.md of the finished trials but
no best.json: a partial search picks no setting; --resume finishes it.
Trials in parallel and CPUs per worker are derived from the cluster (--max-concurrent caps them).
Connects to RAY_ADDRESS when set, else starts an embedded Ray.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfei.cli import mlflow_experiment, run_cli  # noqa: E402
from dfei.config import add_config_flags, config_from_args, flags_given, requested_values  # noqa: E402
from dfei.experiments.tune.resume import SET_BY_SWEEP  # noqa: E402
from dfei.experiments.tune.space import SCHEDULERS, SEARCHES, SearchSpec, parse_values  # noqa: E402

PAPER_ALPHAS = "0,0.1,0.3,0.5,0.7,0.9,1"
# tune.py's own defaults, applied after parsing: flags left out are known as such (a resume compares
# only the flags given with the sweep's saved settings)
DEFAULTS = {"alpha": parse_values(PAPER_ALPHAS, "alpha", float), "k": parse_values("32", "k", int),
            "search": "grid", "scheduler": "none", "num_samples": 1, "workers_per_trial": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="sweep directory: results, plots, best.json, Tune state")
    p.add_argument("--alpha",
                   help=f"alpha values in [0, 1], comma-separated (default: the paper's {PAPER_ALPHAS}); "
                        "random search also takes a range lo:hi (uniform)")
    p.add_argument("--k", help="k values (positive integers), comma-separated (default 32); random "
                                             "search also takes a range lo:hi (integers)")
    p.add_argument("--search", choices=SEARCHES,
                   help="grid: every alpha x k (default); random: --num-samples draws")
    p.add_argument("--scheduler", choices=SCHEDULERS,
                   help="asha: stop trials in the bottom half at 1, 2, 4, ... epochs; none: run every trial to "
                        "its end (early stopping on valid AUC still applies)")
    p.add_argument("--num-samples", type=int,
                   help="grid: seeds per grid point (seed, seed+1, ...); random: number of trials (default 1)")
    p.add_argument("--workers-per-trial", type=int, help="Ray Train workers (DDP) per trial (default 1)")
    p.add_argument("--max-concurrent", type=int, help="cap on trials running at once (default: as many as fit)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted sweep in --out with its saved settings (Tuner.restore); a flag "
                        "given with it must equal the sweep's (a changed setting or dataset is refused by name). "
                        "A moved --out folder resumes with its new paths")
    p.add_argument("--config", help="YAML of TrainConfig keys applied to every trial (flags override it)")
    add_config_flags(p, exclude=("alpha", "k", "out", "num_workers"), help={
        "seed": "first seed (grid: seed, seed+1, ... per point)", "epochs": "maximum epochs per trial",
        "patience": "early-stopping patience per trial",
        "storage_path": "URI or path for Tune state and checkpoints (default OUT)",
        "mlflow": "log every trial as an MLflow run (params, per-epoch metrics, checkpoint) to this tracking store",
        "mlflow_experiment": "MLflow experiment name (default tune-<OUT's name>)"})
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def run() -> None:
        from dfei.experiments.tune.sweep import run_sweep

        search = {name: value for name, value in (
            ("alpha", None if args.alpha is None else parse_values(args.alpha, "alpha", float)),
            ("k", None if args.k is None else parse_values(args.k, "k", int)), ("search", args.search),
            ("scheduler", args.scheduler), ("num_samples", args.num_samples),
            ("workers_per_trial", args.workers_per_trial), ("max_concurrent", args.max_concurrent))
            if value is not None}
        experiment = mlflow_experiment(args.mlflow_experiment, args.mlflow, "tune", args.out)
        flags = {**flags_given(vars(args)), **({"mlflow_experiment": experiment} if experiment else {})}
        if args.resume:  # the saved settings; a flag given must match them
            run_sweep(None, None, args.out, resume=True, search=search, requested=requested_values(args.config, flags))
            return
        search = {**DEFAULTS, **search}
        spec = SearchSpec(search["alpha"], search["k"], search["search"], search["scheduler"], search["num_samples"])
        base = config_from_args(vars(args), args.config, reserved=SET_BY_SWEEP, who="a sweep",
                                mlflow_experiment=experiment)
        run_sweep(base, spec, args.out, search["workers_per_trial"], search.get("max_concurrent"))

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
