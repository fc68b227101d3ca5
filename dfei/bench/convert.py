"""Benchmarks of `prepare_data.py csv` (pipelines/benchmark_convert.py): a synthetic raw log, the fit
study (rows/s and peak memory per process kind at two input sizes) and the encoders study (at the
larger size: encoding with a dataset's encoders against fitting them, and scoring the raw log with a
checkpoint's encoders against scoring the converted data).

Every command runs as the CLI a user would run, in its own embedded Ray (dfei.bench.process_memory).
Rates are rows per second after the command's "[ray] started" line (the Ray start is left out; the
rest, reading the checkpoint and writing the output included, is counted). Memory in MB (2^20 bytes).
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dfei.bench.process_memory import ECHO, KINDS, measure, pipeline
from dfei.bench.suite import target

CHUNK = 1_000_000  # rows per generated Parquet file (and per generator draw)
USER_DRAWS = ("pareto", "uniform")
MEMORY_BOUND = 1.3  # peak RSS at the larger size / at the smaller size
TINY_MODEL = ["--epochs", "1", "--max-steps-per-epoch", "20", "--tower-dims", "16,8", "--tower-dropouts", "0,0",
              "--k", "4", "--no-tensorboard"]


def _ids(prefix: str, n: int, width: int) -> pa.Array:
    """prefix + i zero-padded to `width` digits, for i in [0, n) (more digits where i needs them)."""
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(pc.cast(pa.array(np.arange(n)), pa.string()), width, "0"),
                                       "")


def distinct_expected(rows: int, users: int, user_draw: str) -> float:
    """Expected distinct users among `rows` rows drawn uniformly from `users`: U (1 - exp(-rows / U));
    nan for the pareto draw (far fewer: its activity is heavy-tailed)."""
    return users * -np.expm1(-rows / users) if user_draw == "uniform" else float("nan")


def generate(out: str, rows: int, users: int, items: int, seed: int = 0, user_draw: str = "pareto") -> None:
    """`rows` rows of raw log as Parquet files of CHUNK rows under `out` (one chunk in memory at a time):
    string user_id (of `users`) and item_id (of `items`, heavy-tailed popularity), domain (6 names),
    ts (30 days, seconds), price (float), position (int), click (0/1, ~7 %). user_draw: pareto
    (heavy-tailed activity: few distinct users) or uniform (every user equally likely: ~10^7 distinct
    users in 16M rows of 16M users, see distinct_expected)."""
    if user_draw not in USER_DRAWS:
        raise ValueError(f"user_draw must be one of {USER_DRAWS}, got {user_draw!r}")
    os.makedirs(out, exist_ok=True)
    user_ids, item_ids = _ids("u", users, 7), _ids("item-", items, 6)
    domains = pa.array(["feed", "search", "mall", "live", "video", "ads"])
    start = np.datetime64("2024-01-01T00:00:00", "s").astype(np.int64)
    for c, lo in enumerate(range(0, rows, CHUNK)):
        n = min(CHUNK, rows - lo)
        rng = np.random.default_rng([seed, c])
        if user_draw == "pareto":
            u = (rng.pareto(1.2, n) * users / 50).astype(np.int64) % users  # heavy-tailed activity
        else:
            u = rng.integers(0, users, n)
        i = (rng.pareto(1.1, n) * items / 100).astype(np.int64) % items  # and popularity
        d = rng.choice(6, n, p=[0.35, 0.25, 0.15, 0.1, 0.1, 0.05])
        ts = start + np.sort(rng.integers(0, 30 * 86400, n))  # 30 days, seconds; many equal times
        price = np.round(rng.lognormal(3, 1, n), 2)
        position = rng.integers(1, 50, n)
        label = (rng.random(n) < 0.05 + 0.1 * (i % 7 == 0) + 0.02 * d / 5).astype(np.int8)
        table = pa.table({
            "user_id": user_ids.take(pa.array(u)), "item_id": item_ids.take(pa.array(i)),
            "domain": domains.take(pa.array(d)), "ts": pa.array(ts, pa.timestamp("s")),
            "price": price, "position": position, "click": label})
        pq.write_table(table, os.path.join(out, f"part-{c:05d}.parquet"), row_group_size=1 << 17)


def convert(raw: str, out: str, split: str, rows: int, encoders_from: str | None = None) -> dict[str, Any]:
    """Convert the `rows`-row raw log under `raw` to the dataset `out`, fitting its encoders (or with
    `encoders_from`'s), measured and printed: process_memory.measure's figures (the time after Ray
    start as convert_seconds), rows_per_s (after Ray start), rows_per_s_end_to_end, cardinalities
    (and with encoders_from: dataset.json's meta.id0_share, each split's share of id 0 per feature)."""
    cmd = pipeline("prepare_data") + ["csv", "--input", os.path.join(raw, "*.parquet"), "--time-col", "ts",
                                      "--split", split, "--out", out, "--overwrite"]
    if encoders_from:
        cmd += ["--encoders-from", encoders_from]
    else:
        cmd += ["--domain-col", "domain", "--label-col", "click", "--user-col", "user_id", "--numeric",
                "price,position"]
    r = measure(cmd)
    del r["lines"]
    r["convert_seconds"] = r.pop("after_ray_seconds")
    r.update(rows=rows, rows_per_s=rows / r["convert_seconds"], rows_per_s_end_to_end=rows / r["seconds"],
             cardinalities=_cardinalities(out))
    what, extra = f"{rows:,} rows", f"; vocabularies {r['cardinalities']}"
    if encoders_from:
        r["id0_share"] = _spec(out)["meta"].get("id0_share")
        what, extra = f"encode {rows:,} rows (--encoders-from)", ""
    print(f"[bench] {what}: {r['rows_per_s']:,.0f} rows/s ({r['convert_seconds']:.0f}s after Ray start, "
          f"{r['seconds']:.0f}s end to end); {memory_text(r)}{extra}", flush=True)
    return r


def memory_text(r: dict[str, Any]) -> str:
    """One line of a measurement's peak RSS per process kind and all together."""
    kinds = ", ".join(f"{k} {v['peak_rss_mb']:,.0f} MB (anon {v['peak_rss_anon_mb']:,.0f})"
                      + (f" (x{v['processes']}, largest: {v['largest']!r})" if v["processes"] > 1 else "")
                      for k, v in r["by_kind"].items() if v["processes"])
    return f"peak RSS {kinds}; all processes together {r['peak_total_mb']:,.0f} MB"


def peak_ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """Peak RSS of measurement a / of measurement b: per kind (its largest process), the largest
    process, all processes together; each also as RssAnon (', anon'). Kinds b lacks are left out."""
    ratios = {k: a["by_kind"][k]["peak_rss_mb"] / b["by_kind"][k]["peak_rss_mb"]
              for k in KINDS if b["by_kind"][k]["peak_rss_mb"]}
    ratios["largest process"] = a["peak_process_mb"] / b["peak_process_mb"]
    ratios["all processes together"] = a["peak_total_mb"] / b["peak_total_mb"]
    ratios.update({f"{k}, anon": a["by_kind"][k]["peak_rss_anon_mb"] / b["by_kind"][k]["peak_rss_anon_mb"]
                   for k in KINDS if b["by_kind"][k]["peak_rss_anon_mb"]})
    ratios["all processes together, anon"] = a["peak_total_anon_mb"] / b["peak_total_anon_mb"]
    return ratios


def _spec(dataset: str) -> dict[str, Any]:
    with open(os.path.join(dataset, "dataset.json")) as f:
        return json.load(f)


def _cardinalities(dataset: str) -> dict[str, int]:
    return {f["name"]: f["cardinality"] for f in _spec(dataset)["features"]}


def _split_rows(dataset: str, split: str) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows
               for f in glob.glob(os.path.join(dataset, split, "domain=*", "*.parquet")))


def fit_size(out: str, rows: int, users: int, items: int, split: str, user_draw: str) -> dict[str, Any]:
    """Generate OUT/raw-ROWS and convert it to OUT/ds-ROWS (both left there); its figures, printed."""
    raw, ds = os.path.join(out, f"raw-{rows}"), os.path.join(out, f"ds-{rows}")
    t0 = time.time()
    generate(raw, rows, users, items, user_draw=user_draw)
    gen = time.time() - t0
    print(f"[bench] {rows:,} rows generated in {gen:.0f}s; converting", flush=True)
    r = convert(raw, ds, split, rows)
    r["generate_seconds"] = gen
    return r


def fit_study(out: str, sizes: list[int], users: int, items: int, split: str, user_draw: str = "pareto",
              keep: bool = False, keep_largest: bool = False) -> dict[str, Any]:
    """The fit study: each size generated and converted (fit_size), then the peak RSS ratios largest
    size / smallest size, each printed against MEMORY_BOUND. The raw logs and datasets are removed
    unless `keep` (`keep_largest`: the largest size's are kept, for the encoders study)."""
    results: dict[str, Any] = {"split": split, "users": users, "items": items, "user_draw": user_draw, "sizes": {}}
    for rows in sizes:
        results["sizes"][str(rows)] = fit_size(out, rows, users, items, split, user_draw)
        if not keep and not (keep_largest and rows == max(sizes)):
            remove(out, rows)
    lo, hi = results["sizes"][str(sizes[0])], results["sizes"][str(sizes[-1])]
    results["peak_rss_ratio"] = ratios = peak_ratios(hi, lo)
    for k, v in ratios.items():
        print(f"[bench] peak RSS {k}, {sizes[-1]:,} / {sizes[0]:,} rows: {v:.2f} "
              f"{target(v, '<=', MEMORY_BOUND, str(MEMORY_BOUND))}")
    return results


def remove(out: str, rows: int) -> None:
    """Remove OUT/raw-ROWS and OUT/ds-ROWS."""
    for name in (f"raw-{rows}", f"ds-{rows}"):
        shutil.rmtree(os.path.join(out, name), ignore_errors=True)


def compare(what: str, a: dict[str, Any], b: dict[str, Any], names: tuple[str, str]) -> dict[str, Any]:
    """rows/s of measurement a / of b and their peak_ratios, printed one figure a line (no fixed target)."""
    ratio = a["rows_per_s"] / b["rows_per_s"]
    print(f"[bench] {what}: rows/s {names[0]} / {names[1]}: {ratio:.2f} ({a['rows_per_s']:,.0f} / "
          f"{b['rows_per_s']:,.0f}; no fixed target)", flush=True)
    ratios = peak_ratios(a, b)
    for k, v in ratios.items():
        print(f"[bench] {what}: peak RSS {k}, {names[0]} / {names[1]}: {v:.2f}")
    return {"rows_per_s_ratio": ratio, "peak_rss_ratio": ratios}


def train_tiny(data: str, out: str) -> dict[str, Any]:
    """A tiny checkpoint trained on `data` (TINY_MODEL: 20 steps; the valid and test splits are still
    evaluated whole) under `out`: its path and the run's seconds (not part of any rate)."""
    r = measure(pipeline("train") + ["--data", data, "--out", out, *TINY_MODEL], echo=ECHO + ("[done]",))
    with open(os.path.join(out, "metrics.json")) as f:
        checkpoint = json.load(f)["checkpoint"]
    print(f"[bench] tiny checkpoint trained in {r['seconds']:.0f}s (not timed in the study): {checkpoint}",
          flush=True)
    return {"checkpoint": checkpoint, "seconds": r["seconds"], "peak_total_mb": r["peak_total_mb"]}


_SCORED = re.compile(r"\[predict\] wrote ([\d,]+) scores")


def score(what: str, checkpoint: str, source: list[str], out: str) -> dict[str, Any]:
    """`predict.py --checkpoint CHECKPOINT SOURCE... --out OUT` measured (OUT removed after): measure's
    figures, rows (scores written, from its log) and rows_per_s (after Ray start); printed."""
    r = measure(pipeline("predict") + ["--checkpoint", checkpoint, *source, "--out", out, "--overwrite"])
    rows = [int(m.group(1).replace(",", "")) for m in map(_SCORED.match, r.pop("lines")) if m]
    if not rows:
        raise RuntimeError(f"predict.py {' '.join(source)}: no '[predict] wrote N scores' line")
    shutil.rmtree(out, ignore_errors=True)
    r.update(rows=rows[-1], rows_per_s=rows[-1] / r["after_ray_seconds"],
             rows_per_s_end_to_end=rows[-1] / r["seconds"])
    print(f"[bench] score {what}: {r['rows']:,} rows, {r['rows_per_s']:,.0f} rows/s ({r['after_ray_seconds']:.0f}s "
          f"after Ray start, {r['seconds']:.0f}s end to end); {memory_text(r)}", flush=True)
    return r


def encoders_study(out: str, rows: int, split: str, fit: dict[str, Any], users: int, user_draw: str,
                   keep: bool = False) -> dict[str, Any]:
    """At one size whose raw log OUT/raw-ROWS and fitted dataset OUT/ds-ROWS (`fit`: its fit_size
    figures, the baseline) exist: the encoding conversion of the same log with the fitted encoders
    against the fit, a tiny checkpoint trained on the fitted dataset (not timed), then scoring the
    raw log with the checkpoint's encoders (predict.py --input) against scoring the fitted dataset's
    train split (predict.py --data). Removes what it wrote, and the log and dataset, unless `keep`."""
    raw, fitted = os.path.join(out, f"raw-{rows}"), os.path.join(out, f"ds-{rows}")
    encoded, run = os.path.join(out, f"ds-{rows}-encoded"), os.path.join(out, f"tiny-run-{rows}")
    vocab, train = fit["cardinalities"].get("user_id", 0) - 1, _split_rows(fitted, "train")  # id 0 is no value
    print(f"[bench] encoders study at {rows:,} rows: user vocabulary {vocab:,} values ({users:,} users, {user_draw} "
          f"draw; {distinct_expected(train, users, user_draw):,.0f} distinct expected in {train:,} train rows), "
          f"fit baseline {fit['rows_per_s']:,.0f} rows/s", flush=True)
    enc = convert(raw, encoded, split, rows, encoders_from=fitted)
    result = {"rows": rows, "train_rows": train, "user_vocabulary": vocab, "fit": fit, "encode": enc,
              "same_cardinalities": enc["cardinalities"] == fit["cardinalities"],
              "encode_vs_fit": compare("encode vs fit", enc, fit, ("encode", "fit"))}
    tiny = train_tiny(fitted, run)
    raw_scores = score("raw log (--input)", tiny["checkpoint"], ["--input", os.path.join(raw, "*.parquet")],
                       os.path.join(out, "scores-raw"))
    data_scores = score("converted train split (--data)", tiny["checkpoint"], ["--data", fitted, "--split", "train"],
                        os.path.join(out, "scores-converted"))
    result.update(train=tiny, score_raw=raw_scores, score_converted=data_scores,
                  raw_vs_converted=compare("scoring raw vs converted", raw_scores, data_scores, ("raw", "converted")))
    if not keep:
        remove(out, rows)
        for path in (encoded, run):
            shutil.rmtree(path, ignore_errors=True)
    return result
