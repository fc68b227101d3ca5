"""Write a dataset in the dfei data contract (dataset.json + Parquet per split and domain).

Examples:
  python pipelines/prepare_data.py synthetic --profile public --scale 0.02 --seed 0 --out data/public-s0.02
  python pipelines/prepare_data.py synthetic --profile industrial --scale 0.01 --out data/industrial-s0.01
  python pipelines/prepare_data.py kuairand --raw KuaiRand-1K/data --out data/kuairand-1k
  python pipelines/prepare_data.py csv --input 'logs/*.parquet' --domain-col domain --label-col rating \
      --label-threshold 4 --user-col user_id --out data/douban
  python pipelines/prepare_data.py csv --input logs/day1.csv --encoders-from data/day0 --out data/day1

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

    _csv_parser(sub)
    _rawlogs_parser(sub)
    return p.parse_args(argv)


def _csv_parser(sub) -> None:
    c = sub.add_parser("csv", help="your own CSV/Parquet logs (on Ray Data)", description=(
        "Convert CSV or Parquet logs (one file, a glob, or an fsspec URI such as s3://bucket/logs/*.parquet) to "
        "the data contract with Ray Data: on every node of a cluster (RAY_ADDRESS) or an embedded local Ray, "
        "with memory bounded by Ray Data's block size, not the input size. Vocabularies and bins are fitted on "
        "the train split only; unseen or rare values map to 0. The fitted encoders are written into the dataset "
        "(encoders/, listed in dataset.json with digests): --encoders-from encodes the next day's logs with them. "
        "Categorical values are keyed by their text: CSV cells exactly as written (007, 07 and 7 are three "
        "values; an empty cell is missing), Parquet columns by the text of their stored value (integer 7 -> '7', "
        "float 7.0 -> '7'). --out must be a local path (on a cluster: one mounted at the same path on every "
        "node); it appears complete or not at all."), formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--input", required=True, help="a .csv or .parquet file, a glob of them, or an fsspec URI")
    c.add_argument("--domain-col", help="column whose values are the domains (required unless --encoders-from)")
    c.add_argument("--label-col", help="0/1 label column, or any number with --label-threshold (required unless "
                                       "--encoders-from)")
    c.add_argument("--label-threshold", type=float, help="label = 1 where label-col >= this value")
    c.add_argument("--features", help="comma-separated feature columns (default: every other column; with "
                                      "--encoders-from: the encoders' features, listed to ignore other columns)")
    c.add_argument("--numeric", default="", help="comma-separated numeric features to bucketize into ~10 "
                                                 "quantile bins (fitted on train)")
    c.add_argument("--hash", action="append", default=[], metavar="FEATURE=BUCKETS", help=(
        "hash FEATURE into BUCKETS ids instead of a vocabulary (repeatable, or comma-separated): for ids too many "
        "to enumerate; stable across days by construction (FNV-1a 64 of the value's text, seeded; "
        "dfei/data/encoders/hashing.py)"))
    c.add_argument("--hash-seed", type=int, help="seed of the --hash features' hash (default 0; with --encoders-from the "
                                                   "encoders' seed)")
    c.add_argument("--user-col", help="user column: the GAUC user (and the unit of --split random-user)")
    c.add_argument("--time-col", help="time column for --split time (numbers, dates or date strings)")
    c.add_argument("--split", choices=["random", "random-user", "time"], default="random", help=(
        "random (default): by row, a seeded hash of each row, so test users were seen in train (the usual CTR "
        "evaluation); random-user: cold start, each --user-col user's rows in one split, so every test user is "
        "unseen in train (user-id features all OOV, GAUC undefined); time: the latest rows by --time-col "
        "become valid/test (equal times at a cut ordered by the row hash)"))
    c.add_argument("--valid-frac", type=float, default=0.1)
    c.add_argument("--test-frac", type=float, default=0.1)
    c.add_argument("--min-count", type=int, help="values seen fewer times in train map to 0 (default 1; with --grow: "
                                                 "the encoders' dataset's)")
    c.add_argument("--encoders-from", metavar="DATASET", help=(
        "encode with DATASET's encoders and fit nothing: every known value keeps its id, values they do not know "
        "map to 0, cardinalities stay equal (train.py --init-from accepts the result). The domain/label columns, "
        "threshold, features and user column are the encoders'"))
    c.add_argument("--grow", action="store_true", help=(
        "with --encoders-from: append this input's train values the encoders do not know (seen >= --min-count "
        "times) at new ids V+1, V+2, ... (known ids unchanged) and new domain values as new domains; "
        "--init-from then extends the embedding tables. Default off: fixed encoders keep the model's tables"))
    c.add_argument("--seed", type=int, default=0, help="seed of the random splits and of the time split's tie order")
    c.add_argument("--out", required=True)
    c.add_argument("--overwrite", action="store_true")



def _rawlogs_parser(sub) -> None:
    r = sub.add_parser("rawlogs", help="realistic raw daily click logs (one CSV/Parquet file a day) to try `csv` on",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=(
        "Write one day of synthetic raw click logs, as a team's own logs look before conversion, to one\n"
        "file (CSV if --out ends with .csv, Parquet if .parquet). It feeds `prepare_data.py csv`: day 0 to\n"
        "fit encoders and train, later days with --encoders-from to continue training.\n\n"
        "Columns: request_id (unique string), ts (event time '2026-11-01 13:45:12'; day 0 is 2026-11-01,\n"
        "rows in time order), domain (home_feed, video, search, mall, live: different sizes and CTRs,\n"
        "2%..15%), user_id ('u0001234'), item_id ('i000567'), item_code (category text: '7', '07' and\n"
        "'007' are different categories with different click rates), city (30 values, some empty),\n"
        "device (ios/android/web), price (float, some empty), user_age (integer, some empty), clicked (0/1).\n\n"
        "All days of a --seed share one world: an id is the same user or item, with the same tastes, every\n"
        "day, so a model trained on day 0 helps on day 1. Days drift: each day >= 1 brings new users and\n"
        "items (ids never seen before: ~7% of its rows show that day's new items, ~4% come from its new\n"
        "users), some items stop appearing and item popularity shifts. --rows sizes the population (users\n"
        "~ rows/5, items ~ rows/10): use the same --rows for every day of a study. Clicks come from a latent\n"
        "model (user-item affinity through a per-domain transform, biases, small side-column effects); the\n"
        "summary logs each domain's CTR and the AUC of the true click probability (the ceiling no model\n"
        "beats). The same --seed, --day and --rows give byte-identical files.\n\n"
        "Example:\n"
        "  python pipelines/prepare_data.py rawlogs --day 0 --rows 1000000 --out logs/day0.csv\n"
        "  python pipelines/prepare_data.py rawlogs --day 1 --rows 1000000 --out logs/day1.csv"))
    r.add_argument("--day", type=int, default=0, help="day index >= 0 (default 0): day 0 is 2026-11-01")
    r.add_argument("--rows", type=int, required=True, help="impressions (rows) of the day, >= 1")
    r.add_argument("--seed", type=int, default=0, help="the world (users, items, domains; default 0)")
    r.add_argument("--out", required=True, help="output file: a local path ending with .csv or .parquet")
    r.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def _list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _hashes(items: list[str]) -> dict[str, int]:
    """--hash a=100 --hash b=10,c=5 -> {a: 100, b: 10, c: 5}; ConfigError for a malformed item."""
    from dfei.errors import ConfigError

    out = {}
    for item in (i for text in items for i in _list(text) or []):
        name, _, buckets = item.partition("=")
        if not name or not buckets.strip().isdigit():
            raise ConfigError(f"--hash {item!r}: expected FEATURE=BUCKETS with a whole number of buckets")
        out[name.strip()] = int(buckets)
    return out


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
        elif args.command == "rawlogs":
            from dfei.data.raw_logs import generate_raw_logs

            generate_raw_logs(args.out, args.day, args.rows, args.seed, args.overwrite)
        else:
            from dfei.data.csv_converter import convert_csv

            convert_csv(args.input, args.out, args.domain_col, args.label_col, _list(args.features),
                        args.label_threshold, args.user_col, args.time_col, args.split, _list(args.numeric) or [],
                        args.min_count, args.valid_frac, args.test_frac, args.seed, args.overwrite,
                        encoders_from=args.encoders_from, grow=args.grow, hash_buckets=_hashes(args.hash),
                        hash_seed=args.hash_seed)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
