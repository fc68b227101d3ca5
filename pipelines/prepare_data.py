"""Write a dataset in the dfei data contract (dataset.json + Parquet per split and domain).

Examples:
  python pipelines/prepare_data.py synthetic --profile public --scale 0.02 --seed 0 --out data/public-s0.02
  python pipelines/prepare_data.py synthetic --profile industrial --scale 0.01 --out data/industrial-s0.01
  python pipelines/prepare_data.py kuairand --raw KuaiRand-1K/data --out data/kuairand-1k
  python pipelines/prepare_data.py csv --input 'logs/*.parquet' --domain-col domain --label-col rating \
      --label-threshold 4 --user-col user_id --out data/douban

Profiles: `industrial` = paper Table 1 (21 domains A1..A21), `public` = Table 2 (6 domains
B1..B6); --scale 1.0 is the paper's row counts (industrial: 37.6M train rows).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfei.cli import run_cli  # noqa: E402
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
    s.add_argument("--day", type=int, default=0, help="another day's logs of the same world (default 0): new rows, "
                                                      "same users, items and domains; for incremental training")
    s.add_argument("--domains", help="comma-separated domain names to keep (default all), e.g. B1,B2,B3")
    s.add_argument("--min-eval-rows", type=int, default=0, metavar="N", help=(
        "at least N valid and N test rows per domain, each domain's CTR kept (default 0: the table's counts at "
        "--scale); train rows unchanged. Small domains' AUCs are noise below ~1000 rows"))

    k = sub.add_parser("kuairand", help="KuaiRand-1K from the official release files", description=(
        "KuaiRand-1K (paper Table 2): domains tab 0,1,2,4,5,6 -> B1..B6, label is_click, split by date "
        "(train 04-08..04-18, valid 04-19..04-21, test 04-22..05-08), 92 user/video side features."))
    k.add_argument("--raw", required=True, help="directory holding the official *_1k.csv files")
    k.add_argument("--out", required=True)
    k.add_argument("--min-count", type=int, default=1, help="categorical values seen fewer times in train map to 0")
    k.add_argument("--overwrite", action="store_true")

    c = sub.add_parser("csv", help="your own CSV/Parquet logs (on Ray Data)", description=(
        "Convert CSV or Parquet logs (one file, a glob, or an fsspec URI such as s3://bucket/logs/*.parquet) to "
        "the data contract with Ray Data: on every node of a cluster (RAY_ADDRESS) or an embedded local Ray, "
        "with memory bounded by Ray Data's block size, not the input size. Vocabularies and bins are fitted on "
        "the train split only; unseen or rare values map to 0. --out must be a local path (on a cluster: one "
        "mounted at the same path on every node); it appears complete or not at all."))
    c.add_argument("--input", required=True, help="a .csv or .parquet file, a glob of them, or an fsspec URI")
    c.add_argument("--domain-col", required=True, help="column whose values are the domains")
    c.add_argument("--label-col", required=True, help="0/1 label column (or any number with --label-threshold)")
    c.add_argument("--label-threshold", type=float, help="label = 1 where label-col >= this value")
    c.add_argument("--features", help="comma-separated feature columns (default: every other column)")
    c.add_argument("--numeric", default="", help="comma-separated numeric features to bucketize into ~10 "
                                                 "quantile bins (fitted on train)")
    c.add_argument("--user-col", help="user column: the GAUC user (and the unit of --split random-user)")
    c.add_argument("--time-col", help="time column for --split time (numbers, dates or date strings)")
    c.add_argument("--split", choices=["random", "random-user", "time"], default="random", help=(
        "random (default): by row, a seeded hash of each row, so test users were seen in train (the usual CTR "
        "evaluation); random-user: cold start, each --user-col user's rows in one split, so every test user is "
        "unseen in train (user-id features all OOV, GAUC undefined); time: the latest rows by --time-col "
        "become valid/test (equal times at a cut ordered by the row hash)"))
    c.add_argument("--valid-frac", type=float, default=0.1)
    c.add_argument("--test-frac", type=float, default=0.1)
    c.add_argument("--min-count", type=int, default=1, help="values seen fewer times in train map to 0")
    c.add_argument("--seed", type=int, default=0, help="seed of the random splits and of the time split's tie order")
    c.add_argument("--out", required=True)
    c.add_argument("--overwrite", action="store_true")
    return p.parse_args(argv)


def _list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def run() -> None:
        if args.command == "synthetic":
            from dfei.data.synthetic import generate

            generate(args.profile, args.scale, args.seed, args.out, args.workers, args.overwrite, day=args.day,
                     domains=_list(args.domains), min_eval_rows=args.min_eval_rows)
        elif args.command == "kuairand":
            from dfei.data.kuairand import convert_kuairand

            convert_kuairand(args.raw, args.out, args.min_count, args.overwrite)
        else:
            from dfei.data.csv_converter import convert_csv

            convert_csv(args.input, args.out, args.domain_col, args.label_col, _list(args.features),
                        args.label_threshold, args.user_col, args.time_col, args.split, _list(args.numeric) or [],
                        args.min_count, args.valid_frac, args.test_frac, args.seed, args.overwrite)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
