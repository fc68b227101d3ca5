"""Bring your own logs: CSV or Parquet files (one, a glob, or an fsspec URI) -> the data contract, on Ray Data.

Every step is a Ray Data operation, so it runs on every node of a cluster, and with memory bounded
by the block size (not the input size) on one machine; the driver holds only the fitted encoders:
1. stage: `read_csv` (every column as text: dfei.data.csv_inputs)/`read_parquet` -> `map_batches(stage)`
   (features as text or float64, label and time parsed, a seeded split key per row) ->
   `write_parquet` into the output's temporary directory;
2. check: one `map_batches` pass of per-block counters (invalid labels, null or unknown domains,
   unparsable times, numeric features' values that are no numbers): the errors name the column
   and the values (and the file);
3. split: random rules need nothing more; the time split's cut points are exact order statistics
   of (time, row key) (dfei.data.select, a few histogram passes);
4. encoders (dfei.data.csv_fit): fitted on train rows only, or taken from another dataset
   (`encoders_from`: nothing fitted, unknown values -> 0), or those grown by this day's train values;
5. encode: `map_batches` tasks (the encoders fetched once per worker process) -> `write_parquet` partitioned
   by split and domain, moved into `split/domain=<id>/part-*.parquet`; the encoders are written to
   `encoders/` and listed in dataset.json with their digests (dfei.data.encoders).
Everything is written under `<out>.tmp-<pid>` and renamed to `--out` at the end: a failed or
interrupted conversion leaves no dataset there (dfei.atomic). `--out` must be a local path (on a
multi-node cluster: a filesystem mounted at that path on every node).
"""
from __future__ import annotations

import glob
import os
import shutil
import uuid
from dataclasses import replace
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dfei.atomic import atomic_directory
from dfei.data import csv_blocks as cb
from dfei.data import csv_fit, csv_inputs, select
from dfei.data.convert import log_written, write_spec
from dfei.data.csv_options import ConvertOptions, output_path, resolve_features, with_encoders
from dfei.data.encoders import FeatureTransform, load_transform
from dfei.data.encoders.transform import is_native
from dfei import ray_runtime
from dfei.data.spec import SPLITS, DatasetError, DatasetSpec, Domain, Feature, load_spec
from dfei.errors import ConfigError


def convert_csv(input: str, out: str, domain_col: str | None = None, label_col: str | None = None,
                features: list[str] | None = None, label_threshold: float | None = None,
                user_col: str | None = None, time_col: str | None = None, split: str = "random",
                numeric: list[str] | None = None, min_count: int | None = None, valid_frac: float = 0.1,
                test_frac: float = 0.1, seed: int = 0, overwrite: bool = False, log=print,
                read_blocks: int | None = None, encoders_from: str | None = None, grow: bool = False,
                hash_buckets: dict[str, int] | None = None, hash_seed: int | None = None) -> DatasetSpec:
    """Convert logs to a dataset at `out` (see the module docstring); returns its spec.

    split: `random` (by row), `random-user` (cold start: each user's rows in one split; needs
    user_col) or `time` (needs time_col). encoders_from: a dataset whose encoders encode these logs
    (none fitted; grow: append this day's new train values and domains). hash_buckets: {feature:
    buckets} hashed instead of a vocabulary (dfei.data.encoders.hashing, seeded by hash_seed).
    read_blocks: Ray Data's read parallelism (the output does not depend on it). Raises
    DatasetError (bad input, with the file or column and values), ConfigError (bad options) or
    PathExistsError (`out` not empty without overwrite); nothing is written at `out` then."""
    opts = ConvertOptions(domain_col, label_col, features, label_threshold, user_col, time_col, split,
                          list(numeric or []), min_count, valid_frac, test_frac, seed, dict(hash_buckets or {}),
                          hash_seed, encoders_from, grow)
    opts.check()
    base, base_spec = _base_encoders(opts)
    opts = with_encoders(opts, base, base_spec) if base is not None else replace(opts, min_count=opts.min_count or 1)
    needed = [c for c in (opts.domain_col, opts.label_col, opts.user_col, opts.time_col) if c]
    inputs = csv_inputs.inspect(input, needed + (base.names if base is not None else list(opts.features or [])))
    categorical, numeric_features = resolve_features(opts, inputs, base)
    out = output_path(out, overwrite)
    cfg = _stage_config(opts, inputs, categorical, numeric_features)

    ray_runtime.init_ray(log)
    import ray.data

    # blocks of at most BLOCK_BYTES: a task's memory is then bounded by that, not by the input
    ray.data.DataContext.get_current().target_max_block_size = BLOCK_BYTES
    with atomic_directory(out) as tmp:
        staged = _stage(inputs, cfg, tmp, read_blocks)
        rule, counts, split_rows, summaries = _check_and_split(staged, cfg, opts, input, base)
        log(f"[convert] {counts['rows']:,} rows; split {rule.describe()}")
        transform, notes = _encoders(staged, rule, cfg, opts, inputs, base, counts, summaries, split_rows, log)
        present = sorted(transform.domain.ids[n] for n in counts["domains"])
        domain_list = [Domain(i, n) for n, i in sorted(transform.domain.ids.items(), key=lambda t: t[1])
                       if i in present]
        row_counts = _encode(staged, rule, transform, domain_list, tmp)
        written = [sum(row_counts[s].values()) for s in SPLITS]
        if written != list(split_rows) or sum(written) != counts["rows"]:
            # e.g. identical rows at a time cut (they share a key and are never separated)
            raise DatasetError(f"{input}: the splits came out with {dict(zip(SPLITS, written))} rows, not the planned "
                               f"{dict(zip(SPLITS, split_rows))} of {counts['rows']:,}; nothing was written")
        shutil.rmtree(os.path.join(tmp, "_staging"))
        id0 = _id0_shares(tmp, transform.names, domain_list, log)
        spec = DatasetSpec(
            name=csv_inputs.dataset_name(input), label="label", domains=domain_list,
            features=[Feature(f.name, f.cardinality) for f in transform.features], user_column=opts.user_col,
            row_counts=row_counts, encoders=transform.write(tmp),
            meta={"converter": "csv", "input": input, "split": opts.split, "split_rule": rule.describe(),
                  "label_threshold": opts.label_threshold, "min_count": opts.min_count, "seed": opts.seed,
                  "positive_rate": counts["positives"] / counts["rows"], "id0_share": id0, **notes})
        write_spec(tmp, spec)
    log_written(spec, out, log)
    return spec


BLOCK_BYTES = 16 << 20


def _base_encoders(opts: ConvertOptions) -> tuple[FeatureTransform | None, DatasetSpec | None]:
    """The encoders and spec of --encoders-from's dataset (None, None without it)."""
    if not opts.encoders_from:
        return None, None
    spec = load_spec(opts.encoders_from)
    if is_native(spec.encoders):
        raise ConfigError(f"--encoders-from {opts.encoders_from}: that dataset has no encoders (its ids are native: "
                          f"synthetic data, or converted before encoders were kept); convert its logs again to make some")
    return load_transform(opts.encoders_from, spec.encoders), spec


def _stage_config(opts: ConvertOptions, inputs: csv_inputs.Inputs, categorical: list[str],
                  numeric: list[str]) -> cb.StageConfig:
    time_kind, time_format = None, None
    if opts.time_col:
        time_kind = _time_kind(inputs.inferred[opts.time_col])
        first = csv_inputs.first_value(inputs, opts.time_col) if time_kind == "text" else None
        if first is not None:
            import pandas as pd

            time_format = pd.tseries.api.guess_datetime_format(str(first))
    return cb.StageConfig(opts.domain_col, opts.label_col, opts.label_threshold, tuple(categorical), tuple(numeric),
                          opts.time_col, time_kind, time_format, opts.split, opts.user_col, opts.seed,
                          path_added=bool(numeric) and csv_inputs.PATH_COLUMN not in inputs.columns)


def _time_kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t):
        return "number"
    return "datetime" if pa.types.is_temporal(t) else "text"


def _stage(inputs: csv_inputs.Inputs, cfg: cb.StageConfig, tmp: str, read_blocks: int | None):
    """Stage the raw rows into tmp/_staging (Parquet); the staged Ray Dataset."""
    import ray.data

    staging = os.path.join(tmp, "_staging")
    raw = inputs.read(include_paths=cfg.path_added, read_blocks=read_blocks)
    try:
        raw.map_batches(cb.stage, fn_kwargs={"cfg": cfg}, batch_format="pyarrow", batch_size=1 << 16
                        ).write_parquet(staging)
    except Exception as err:
        reason = csv_inputs.read_error(err)
        if reason is None:
            raise
        raise DatasetError(f"{inputs.pattern}: cannot read as {inputs.what}: {reason}") from None
    if not glob.glob(os.path.join(staging, "*.parquet")):  # Ray Data writes no file for no rows
        raise DatasetError(f"{inputs.pattern}: no rows")
    return ray.data.read_parquet(staging, partitioning=None)


def _check_and_split(staged, cfg: cb.StageConfig, opts: ConvertOptions, input: str,
                     base: FeatureTransform | None) -> tuple[cb.SplitRule, dict, list[int], dict]:
    """The checked input's counters, the split rule (time: with its exact cuts) and rows per split."""
    rule = cb.SplitRule(opts.split, opts.valid_frac, opts.test_frac, opts.seed)
    numeric_keys = partial(cb.numeric_keys, rule=rule, numeric=cfg.numeric)
    # one pass checks the input and, where the rule is known, summarizes what selection needs
    fit_numeric = cfg.numeric and base is None
    keys_fns = {"time": cb.time_order_keys} if opts.split == "time" else ({"numeric": numeric_keys} if fit_numeric else {})
    counts, summaries = _check(staged, cfg, rule, input, keys_fns)
    if base is not None and not opts.grow:
        unknown = sorted(counts["domains"] - set(base.domain.ids))
        if unknown:
            raise DatasetError(f"{input}: domain column {cfg.domain_col!r} has value(s) {unknown[:10]} that the encoders "
                               f"of {opts.encoders_from} do not know (known: {sorted(base.domain.ids)[:10]}); pass "
                               f"--grow to add them as new domains")
    if opts.split == "time":
        rule, split_rows = _time_cuts(staged, rule, counts["rows"], summaries["time"])
    else:
        split_rows = list(counts["split_rows"])
    empty = [s for s, n in zip(SPLITS, split_rows) if n == 0]
    if empty:
        raise DatasetError(f"{input}: split(s) {empty} would be empty; change --valid-frac/--test-frac or --split")
    return rule, counts, split_rows, summaries


def _encoders(staged, rule: cb.SplitRule, cfg: cb.StageConfig, opts: ConvertOptions, inputs: csv_inputs.Inputs,
              base: FeatureTransform | None, counts: dict, summaries: dict, split_rows: list[int],
              log) -> tuple[FeatureTransform, dict]:
    """The transform that encodes this input, and what to record of how it was made."""
    domains = sorted(counts["domains"])
    if base is None:
        transform = csv_fit.fit_transform(staged, rule, cfg, inputs.kinds, opts.hash_buckets, opts.hash_seed or 0,
                                          opts.min_count or 1, summaries.get("numeric"), counts["rows"], domains)
        log(f"[convert] fitted on {split_rows[0]:,} train rows: "
            + ", ".join(f"{f.name} {f.cardinality:,}" for f in transform.features) + " ids (with 0)")
        return transform, {"encoders_from": None}
    if not opts.grow:
        log(f"[convert] encoders from {opts.encoders_from} (nothing fitted; values they do not know are id 0)")
        return base, {"encoders_from": opts.encoders_from}
    transform, added, new_domains = csv_fit.grow_transform(staged, rule, base, opts.min_count, counts["rows"], domains)
    log(f"[convert] grew the encoders of {opts.encoders_from} by this input's train values seen >= {opts.min_count} "
        f"time(s): " + ", ".join(f"{n} +{a:,} (ids {base.feature(n).cardinality:,}..{transform.feature(n).cardinality - 1:,})"
                                 if a else f"{n} +0" for n, a in added.items())
        + (f"; new domain(s) {new_domains}" if new_domains else "; no new domain"))
    return transform, {"encoders_from": opts.encoders_from, "grown": added, "new_domains": new_domains}


def _check(staged, cfg: cb.StageConfig, rule: cb.SplitRule, input: str, keys_fns: dict) -> tuple[dict, dict]:
    """Reduce the per-block counters and raise the input's first error; also the dfei.data.select
    summaries of `keys_fns` ({name: keys function})."""
    cols = [cb.LABEL, cb.BAD_LABEL, cb.DOMAIN, cb.KEY, cb.BAD_NUMBER] + ([cb.TIME] if cfg.time_col else [])
    if "numeric" in keys_fns:
        cols += list(cfg.numeric)
    total = {"rows": 0, "positives": 0, "bad_labels": 0, "bad_label_examples": [], "null_domains": 0,
             "domains": set(), "bad_times": 0, "bad_numbers": 0, "bad_number_examples": [],
             "split_rows": np.zeros(3, dtype=np.int64)}
    summaries: dict[str, list] = {k: [] for k in keys_fns}
    for block in select.block_partials(staged.select_columns(cols), cb.check_block,
                                       rule=None if rule.kind == "time" else rule, keys_fns=keys_fns):
        part = block["stats"]
        for k in ("rows", "positives", "bad_labels", "null_domains", "bad_times", "bad_numbers"):
            total[k] += part[k]
        total["domains"] |= part["domains"]
        total["bad_label_examples"] += part["bad_label_examples"]
        total["bad_number_examples"] += part["bad_number_examples"]
        if "split_rows" in part:
            total["split_rows"] += part["split_rows"]
        for k, summary in block["summaries"].items():
            summaries[k].append(summary)
    _raise_first_error(total, cfg, input)
    return total, {k: select.merge_summaries(v) for k, v in summaries.items()}


def _raise_first_error(total: dict, cfg: cb.StageConfig, input: str) -> None:
    if not total["rows"]:
        raise DatasetError(f"{input}: no rows")
    if total["bad_labels"]:
        examples = total["bad_label_examples"]
        if cfg.label_threshold is not None:
            example = sorted(examples, key=str)[0] if examples else None
            raise DatasetError(f"{input}: label column {cfg.label_col!r} has {total['bad_labels']} missing or "
                               f"non-numeric value(s), e.g. {example!r}")
        values = [v for v in examples if v is not None]
        shown = sorted(set(values), key=str)[:5] if values else ["null"]
        raise DatasetError(f"{input}: label column {cfg.label_col!r} has value(s) {shown}; expected 0/1 "
                           f"(or pass --label-threshold)")
    if total["bad_numbers"]:
        column, value, path = sorted(total["bad_number_examples"], key=str)[0]
        raise DatasetError(f"{path or input}: numeric feature {column!r} has {total['bad_numbers']} row(s) with a value "
                           f"that is not a number, e.g. {value!r} (leave it out of --numeric to treat it as a category)")
    if total["null_domains"]:
        raise DatasetError(f"{input}: domain column {cfg.domain_col!r} has {total['null_domains']} null value(s)")
    if total["bad_times"]:
        raise DatasetError(f"column {cfg.time_col!r}: {total['bad_times']} value(s) are not times")


def _time_cuts(staged, rule: cb.SplitRule, n: int, summary: dict) -> tuple[cb.SplitRule, list[int]]:
    """The exact (time, row key) of the last train and the last valid row, and rows per split."""
    lo, hi = rule.bounds
    n_train, n_seen = _count_le(n, lo), _count_le(n, hi)
    rows = [n_train, n_seen - n_train, n - n_seen]
    if not n_train or n_seen == n_train:
        return rule, rows  # an empty split: the caller says which
    ds = staged.select_columns([cb.TIME, cb.KEY])
    cuts = select.select(ds, cb.time_order_keys, {"time": [n_train - 1, n_seen - 1]}, summary)["time"]
    return cb.SplitRule(rule.kind, rule.valid_frac, rule.test_frac, rule.seed, (cuts[0], cuts[1])), rows


def _count_le(n: int, bound: float) -> int:
    """#{r in 1..n : r / n <= bound}, float-exact as the pandas converter compared ranks."""
    r = min(n, max(0, int(np.floor(bound * n))))
    while r < n and (r + 1) / n <= bound:
        r += 1
    while r > 0 and r / n > bound:
        r -= 1
    return r


def _encode(staged, rule: cb.SplitRule, transform: FeatureTransform, domain_list: list[Domain],
            tmp: str) -> dict[str, dict[str, int]]:
    """Write the encoded rows into tmp/<split>/domain=<id>/part-*.parquet; rows per split and domain."""
    import ray

    ref = ray.put((transform, rule))
    encoded = staged.map_batches(cb.encode, fn_kwargs={"token": uuid.uuid4().hex, "ref": [ref]},
                                 batch_format="pyarrow", batch_size=1 << 16)
    written = os.path.join(tmp, "_encoded")
    encoded.write_parquet(written, partition_cols=[cb.SPLIT, cb.DOMAIN], compression="zstd",
                          row_group_size=1 << 16)
    schema = pa.schema([(c, pa.int32()) for c in transform.names] + [("label", pa.int8())])
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for s in SPLITS:
        for dom in domain_list:
            src = os.path.join(written, f"{cb.SPLIT}={s}", f"{cb.DOMAIN}={dom.id}")
            dst = os.path.join(tmp, s, f"domain={dom.id}")
            os.makedirs(dst)
            files = sorted(glob.glob(os.path.join(src, "*.parquet")))
            for i, path in enumerate(files):
                os.replace(path, os.path.join(dst, f"part-{i:05d}.parquet"))
            if not files:  # every split/domain directory exists, as the contract's readers expect
                pq.write_table(schema.empty_table(), os.path.join(dst, "part-00000.parquet"))
            counts[s][dom.name] = sum(pq.read_metadata(os.path.join(dst, f)).num_rows for f in os.listdir(dst))
    shutil.rmtree(written)
    return counts


def _id0_shares(tmp: str, features: list[str], domain_list: list[Domain], log) -> dict[str, dict[str, float]]:
    """Per split, each feature's share of rows with id 0 (unknown to the encoders, rare or missing),
    logged where it is high. Read by pyarrow on the driver, 64k rows of int32 ids at a time (bounded
    memory; a few seconds at 20M rows), not by a Ray Data pass: a pass per split costs a Ray Data
    start-up each, and one pass telling splits apart needs every row's file path (GBs at 20M rows)."""
    import pyarrow.dataset as pads

    shares = {}
    for s in SPLITS:
        zeros, rows = np.zeros(len(features), dtype=np.int64), 0
        files = [f for d in domain_list for f in sorted(glob.glob(os.path.join(tmp, s, f"domain={d.id}", "*.parquet")))]
        for batch in pads.dataset(files, format="parquet").to_batches(columns=features, batch_size=1 << 16):
            rows += batch.num_rows
            zeros += [int((batch.column(c).to_numpy() == 0).sum()) for c in features]
        shares[s] = {c: round(int(z) / max(rows, 1), 6) for c, z in zip(features, zeros)}
    high = {c: shares["test"][c] for c in features if shares["test"][c] >= 0.2}
    if high:
        log("[convert] id 0 (unknown or missing) in test rows: " + ", ".join(f"{c} {v:.0%}" for c, v in high.items()))
    return shares
