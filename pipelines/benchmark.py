"""Performance benchmark: the Ray pipeline against a plain PyTorch loop and the machine's limits.

  python pipelines/benchmark.py                 # full: industrial profile at scale 0.02 (750k train rows)
  python pipelines/benchmark.py --quick         # about 2 minutes on 2 cores (scale 0.004)
  python pipelines/benchmark.py --use-gpu       # on a GPU box: training on one GPU per worker

Every comparison is measured in the same run (ratios hold on a noisy machine): the plain
in-memory loop vs the Ray pipeline on 1 and 2 workers, each ingest backend alone vs the training
rate, the EMA all-reduce's share of a 2-worker step, 10^6- vs 10^4-row embedding tables, model
FLOP/s vs the measured matmul peak, start-up, and the fast path: each mode against a dense-tower
bound (the towers and heads alone on random inputs), fused over sequential, and --compile against
eager (speed, compile time, test AUC). Every target is printed with met / MISSED. Prints a table
and writes OUT/benchmark.json (keys such as train.ratio_1w, ingest.ratio_to_train,
sync.overhead_frac, embeddings.ratio, fast_path.best_bound_frac, targets).
Connects to RAY_ADDRESS when set, else starts an embedded Ray. The data is generated once under
OUT/data and reused.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfei.bench.suite import MODES, BenchConfig  # noqa: E402
from dfei.cli import run_cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/benchmark", help="output directory (default runs/benchmark)")
    p.add_argument("--quick", action="store_true", help="small data, 2 workers in the headline mode only (~2 min)")
    p.add_argument("--scale", type=float, help="industrial profile scale (default 0.02; --quick 0.004)")
    p.add_argument("--modes", default=",".join(MODES), help=f"Algorithm 1 modes to measure (default {','.join(MODES)})")
    p.add_argument("--headline-mode", choices=MODES, default="sequential",
                   help="the mode the headline keys (train.*, ingest.*, sync.*) report (default sequential, the "
                        "default mode: Algorithm 1 as written)")
    p.add_argument("--epochs", type=int, help="epochs of each 2-worker run (default 2; --quick 1)")
    p.add_argument("--repeats", type=int, help="rounds of (1-worker Ray run of one epoch, plain-loop epoch) after a first "
                                               "plain epoch; ratios pair each run with the plain epochs around it "
                                               "(default 3; --quick 1)")
    p.add_argument("--use-gpu", action="store_true", help="Ray runs train on one GPU per worker")
    p.add_argument("--no-two-workers", action="store_true", help="skip the 2-worker and sync measurements")
    p.add_argument("--no-compile", action="store_true",
                   help="skip the --compile variants of the first plain round (compiling takes ~1 min on CPU)")
    p.add_argument("--profile", metavar="DATA",
                   help="only profile training steps (torch.profiler, no Ray) on this dataset: per mode the top "
                        "operators of steps with every domain present and of the dataset's own steps; writes "
                        "OUT/profile.json")
    p.add_argument("--parity", action="append", default=[], metavar="PARITY_JSON",
                   help="a parity.json of `parity.py --variants mode=sequential,mode=fused` to report the fused vs "
                        "sequential AUC target from (repeatable: one per profile)")
    args = p.parse_args(argv)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())

    def run() -> None:
        if args.profile:
            from dfei.atomic import write_json_atomic
            from dfei.bench.profile import profile_report

            os.makedirs(args.out, exist_ok=True)
            res = profile_report(args.profile, modes)
            write_json_atomic(os.path.join(args.out, "profile.json"), res)
            return
        bench = BenchConfig(out=args.out, scale=args.scale or (0.004 if args.quick else 0.02), modes=modes,
                            headline_mode=args.headline_mode, epochs=args.epochs or (1 if args.quick else 2),
                            repeats=args.repeats or (1 if args.quick else 3), use_gpu=args.use_gpu,
                            two_workers=not args.no_two_workers, quick=args.quick, compile=not args.no_compile,
                            parity=tuple(args.parity))
        from dfei.bench.suite import run as run_benchmark

        run_benchmark(bench)

    return run_cli(run)

if __name__ == "__main__":
    sys.exit(main())
