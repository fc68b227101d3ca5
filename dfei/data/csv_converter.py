"""Bring your own logs: CSV or Parquet files (one, a glob, or an fsspec URI) -> the data contract, on Ray Data.

Every step is a Ray Data operation, so it runs on every node of a cluster, and with memory bounded
by the block size (not the input size) on one machine; the driver holds only the fitted encoders:
1. stage: `read_csv`/`read_parquet` -> `map_batches(stage)` (features as text or float64, label and
   time parsed, a seeded split key per row) -> `write_parquet` into the output's temporary directory;
2. check: one `map_batches` pass of per-block counters (invalid labels, null domains, unparsable
   times, domain names): the errors name the column and the values, as before;
3. split: random rules need nothing more; the time split's cut points are exact order statistics
   of (time, row key) (dfei.data.select, a few histogram passes);
4. fit on train rows only: vocabularies from `map_batches` (per-block value counts) ->
   `groupby(["feature", "value"]).sum()`; numeric bins from exact quantiles (dfei.data.select);
5. encode: `map_batches` tasks (the encoders fetched once per worker process) -> `write_parquet` partitioned
   by split and domain, moved into `split/domain=<id>/part-*.parquet`, then dataset.json.
Everything is written under `<out>.tmp-<pid>` and renamed to `--out` at the end: a failed or
interrupted conversion leaves no dataset there (dfei.atomic). `--out` must be a local path (on a
multi-node cluster: a filesystem mounted at that path on every node).

Ray Data's preprocessors are not used for the encoders: `OrdinalEncoder` orders categories by value,
has no minimum count and no reserved id for unseen values, and Ray Data has no quantile
discretizer; the semantics below are the pandas converter's (see dfei.data.convert for the order
of ids, dfei.data.csv_blocks for the split rules).
"""
from __future__ import annotations

import glob
import os
import shutil
import uuid
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dfei.atomic import atomic_directory
from dfei.data import csv_blocks as cb
from dfei.data import select
from dfei.data.convert import Buckets, Vocabulary, log_written, write_spec
from dfei.data.spec import SPLITS, DatasetError, DatasetSpec, Domain, Feature, check_column_names
from dfei.errors import ConfigError, PathExistsError

BLOCK_BYTES = 16 << 20


def _expand(pattern: str) -> tuple[list[str], pafs.FileSystem | None]:
    """(sorted paths, filesystem: None for local) of a file, a glob or an fsspec URI."""
    if "://" in pattern and not pattern.startswith("file://"):
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        fs, path = fsspec.core.url_to_fs(pattern)
        paths = sorted(fs.glob(path)) if glob.has_magic(path) else ([path] if fs.exists(path) else [])
        filesystem = PyFileSystem(FSSpecHandler(fs))
    else:
        local = pattern[len("file://"):] if pattern.startswith("file://") else pattern
        paths = [os.path.abspath(p) for p in sorted(glob.glob(local))] or (
            [os.path.abspath(local)] if os.path.isfile(local) else [])
        filesystem = None
    if not paths:
        raise DatasetError(f"{pattern}: no such file")
    return paths, filesystem


def _name(pattern: str) -> str:
    """The dataset's name: the file's name without extension (a glob's: its directory's name)."""
    path = pattern.rstrip("/")
    while glob.has_magic(os.path.basename(path)) and os.path.dirname(path) not in ("", path):
        path = os.path.dirname(path)
    return os.path.splitext(os.path.basename(path))[0] or "logs"


def _format(paths: list[str]) -> str:
    kinds = {"parquet" if p.endswith(".parquet") else "csv" for p in paths}
    if len(kinds) > 1:
        raise DatasetError(f"{paths[0]} ...: the input mixes .parquet and CSV files; convert one format at a time")
    return kinds.pop()


def _peek(path: str, filesystem, fmt: str, time_col: str | None) -> tuple[pa.Schema, object]:
    """The first file's schema and its first non-null time value (None if none or no time column)."""
    fs = filesystem or pafs.LocalFileSystem()
    try:
        if fmt == "parquet":
            with fs.open_input_file(path) as f:
                pf = pq.ParquetFile(f)
                schema = pf.schema_arrow
                first = pf.read_row_group(0, columns=[time_col]) if (
                    time_col in schema.names and pf.num_row_groups) else None
        else:
            with fs.open_input_stream(path) as f:
                reader = pacsv.open_csv(f)
                schema = reader.schema
                first = pa.Table.from_batches([reader.read_next_batch()]) if time_col in schema.names else None
    except StopIteration:
        first = None
    except Exception as err:  # pyarrow raises several types; the message is what matters
        raise DatasetError(f"{path}: cannot read as {'Parquet' if fmt == 'parquet' else 'CSV'}: {err}") from None
    values = first.column(time_col).drop_null() if first is not None else []
    return schema, (values[0].as_py() if len(values) else None)


def _read_error(err: BaseException) -> str | None:
    """The reader's own message when a Ray Data read failed on the input (a value that does not fit
    the column's type in a later block, a truncated file), found through Ray's wrappers; else None."""
    seen, todo, found = set(), [err], None
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        first = (str(e).strip().splitlines() or [""])[0]
        if isinstance(e, pa.ArrowException):
            found = first
        elif first.startswith("Failed to read CSV file:") and found is None:
            # Ray Data's CSV reader drops pyarrow's message: a value that does not fit the column's
            # type (inferred from the file's first rows), or a malformed line
            found = (first.split(". Please")[0] + ": a value that does not fit its column's type as inferred from "
                     "the file's first rows, or a malformed line")
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return found


def _time_kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t):
        return "number"
    return "datetime" if pa.types.is_temporal(t) else "text"


def _count_le(n: int, bound: float) -> int:
    """#{r in 1..n : r / n <= bound}, float-exact as the pandas converter compared ranks."""
    r = min(n, max(0, int(np.floor(bound * n))))
    while r < n and (r + 1) / n <= bound:
        r += 1
    while r > 0 and r / n > bound:
        r -= 1
    return r


def convert_csv(input: str, out: str, domain_col: str, label_col: str, features: list[str] | None = None,
                label_threshold: float | None = None, user_col: str | None = None, time_col: str | None = None,
                split: str = "random", numeric: list[str] | None = None, min_count: int = 1,
                valid_frac: float = 0.1, test_frac: float = 0.1, seed: int = 0, overwrite: bool = False,
                log=print, read_blocks: int | None = None) -> DatasetSpec:
    """Convert logs to a dataset at `out` (see the module docstring); returns its spec.

    split: `random` (by row), `random-user` (cold start: each user's rows in one split; needs
    user_col) or `time` (needs time_col). read_blocks: Ray Data's read parallelism (default: Ray's
    choice; the output does not depend on it). Raises DatasetError (bad input, with the file or
    column and values), ConfigError (bad options) or PathExistsError (`out` not empty without
    overwrite); nothing is written at `out` then."""
    paths, filesystem = _expand(input)
    fmt = _format(paths)
    schema, first_time = _peek(paths[0], filesystem, fmt, time_col)
    columns = list(schema.names)
    named = [domain_col, label_col] + (features or []) + [c for c in (user_col, time_col) if c] + (numeric or [])
    missing = [c for c in named if c not in columns]
    if missing:
        raise DatasetError(f"{input}: column(s) {missing} not found; the file has {columns}")
    if split not in cb.SPLIT_KINDS:
        raise ConfigError(f"--split must be one of {list(cb.SPLIT_KINDS)}, got {split!r}")
    if split == "time" and not time_col:
        raise ConfigError("--split time needs --time-col")
    if split == "random-user" and not user_col:
        raise ConfigError("--split random-user needs --user-col (the users to keep apart)")
    if label_threshold is not None and not np.isfinite(label_threshold):
        raise ConfigError(f"--label-threshold must be a finite number, got {label_threshold}")
    if not (valid_frac >= 0 and test_frac >= 0 and valid_frac + test_frac < 1):
        raise ConfigError(f"--valid-frac and --test-frac must be >= 0 with a sum < 1, got {valid_frac}, {test_frac}")
    numeric = list(numeric or [])
    if features is None:
        features = [c for c in columns if c not in (domain_col, label_col, time_col)]
    if user_col and user_col not in features:
        features = [user_col] + features
    clash = [c for c in features if c in (domain_col, label_col, "label")]
    if clash:
        raise DatasetError(f"{input}: column(s) {clash} cannot be features: the domain and label columns are not "
                           f"inputs, and 'label' is the name of the written label column (rename it)")
    check_column_names(features, "label", input)  # refused here, not when predict.py reads the dataset back
    internal = [c for c in features if c.startswith("__dfei_")]
    if internal:
        raise DatasetError(f"{input}: column(s) {internal}: names starting with '__dfei_' are the converter's own")
    categorical = [c for c in features if c not in numeric]
    numeric = [c for c in features if c in numeric]
    if "://" in out and not out.startswith("file://"):
        raise ConfigError(f"--out {out}: write the dataset to a local path (on a cluster: one mounted at the same "
                          f"path on every node), then copy it to object storage")
    out = os.path.abspath(out[len("file://"):] if out.startswith("file://") else out)
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise PathExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    time_kind = _time_kind(schema.field(time_col).type) if time_col else None
    time_format = None
    if time_kind == "text" and first_time is not None:
        import pandas as pd

        time_format = pd.tseries.api.guess_datetime_format(str(first_time))
    cfg = cb.StageConfig(domain_col, label_col, label_threshold, tuple(categorical), tuple(numeric), time_col,
                         time_kind, time_format, split, user_col, seed)

    from dfei.train.runner import init_ray

    init_ray(log)
    import ray.data

    # blocks of at most BLOCK_BYTES: a task's memory is then bounded by that, not by the input (with
    # Ray's default 128 MiB, inputs up to a few million rows fit in fewer, growing blocks)
    ray.data.DataContext.get_current().target_max_block_size = BLOCK_BYTES
    read = ray.data.read_parquet if fmt == "parquet" else ray.data.read_csv
    raw = read(paths, filesystem=filesystem, partitioning=None, override_num_blocks=read_blocks,
               **({} if fmt == "parquet" else {"file_extensions": None}))
    with atomic_directory(out) as tmp:
        staging = os.path.join(tmp, "_staging")
        try:
            raw.map_batches(cb.stage, fn_kwargs={"cfg": cfg}, batch_format="pyarrow",
                            batch_size=1 << 16).write_parquet(staging)
        except Exception as err:
            reason = _read_error(err)
            if reason is None:
                raise
            what = "Parquet" if fmt == "parquet" else "CSV"
            raise DatasetError(f"{input}: cannot read as {what}: {reason}") from None
        if not glob.glob(os.path.join(staging, "*.parquet")):  # Ray Data writes no file for no rows
            raise DatasetError(f"{input}: no rows")
        staged = ray.data.read_parquet(staging, partitioning=None)
        rule = cb.SplitRule(split, valid_frac, test_frac, seed)
        numeric_keys = partial(cb.numeric_keys, rule=rule, numeric=tuple(numeric))
        # one pass checks the input and, where the rule is known, summarizes what selection needs
        keys_fns = {"time": cb.time_order_keys} if split == "time" else ({"numeric": numeric_keys} if numeric else {})
        counts, summaries = _check(staged, cfg, rule, input, keys_fns)
        if split == "time":
            rule, split_rows = _time_cuts(staged, rule, counts["rows"], summaries["time"])
        else:
            split_rows = counts["split_rows"]
        empty = [s for s, n in zip(SPLITS, split_rows) if n == 0]
        if empty:
            raise DatasetError(f"{input}: split(s) {empty} would be empty; change --valid-frac/--test-frac or --split")
        log(f"[convert] {counts['rows']:,} rows; split {rule.describe()}")
        encoders = _fit(staged, rule, cfg, schema, min_count, summaries.get("numeric"), counts["rows"])
        log(f"[convert] fitted on {split_rows[0]:,} train rows: "
            + ", ".join(f"{c} {e.cardinality:,}" for c, e in encoders.items()) + " ids (with 0)")
        names = sorted(counts["domains"])
        domain_list = [Domain(i, n) for i, n in enumerate(names)]
        row_counts = _encode(staged, rule, cfg, encoders, {n: i for i, n in enumerate(names)}, domain_list, tmp)
        written = [sum(row_counts[s].values()) for s in SPLITS]
        if written != list(split_rows) or sum(written) != counts["rows"]:
            # e.g. identical rows at a time cut (they share a key and are never separated)
            raise DatasetError(f"{input}: the splits came out with {dict(zip(SPLITS, written))} rows, not the planned "
                               f"{dict(zip(SPLITS, split_rows))} of {counts['rows']:,}; nothing was written")
        shutil.rmtree(staging)
        feature_specs = [Feature(c, encoders[c].cardinality) for c in categorical + numeric]
        spec = DatasetSpec(
            name=_name(input), label="label", domains=domain_list,
            features=feature_specs, user_column=user_col, row_counts=row_counts,
            meta={"converter": "csv", "input": input, "split": split, "split_rule": rule.describe(),
                  "label_threshold": label_threshold, "min_count": min_count, "seed": seed,
                  "positive_rate": counts["positives"] / counts["rows"]})
        write_spec(tmp, spec)
    log_written(spec, out, log)
    return spec


def _check(staged, cfg: cb.StageConfig, rule: cb.SplitRule, input: str, keys_fns: dict) -> tuple[dict, dict]:
    """Reduce the per-block counters and raise the input's first error, as the pandas converter did;
    also the dfei.data.select summaries of `keys_fns` ({name: keys function})."""
    cols = [cb.LABEL, cb.BAD_LABEL, cb.DOMAIN, cb.KEY] + ([cb.TIME] if cfg.time_col else [])
    if "numeric" in keys_fns:
        cols += list(cfg.numeric)
    total = {"rows": 0, "positives": 0, "bad_labels": 0, "bad_label_examples": [], "null_domains": 0,
             "domains": set(), "bad_times": 0, "split_rows": np.zeros(3, dtype=np.int64)}
    summaries: dict[str, list] = {k: [] for k in keys_fns}
    for block in select.block_partials(staged.select_columns(cols), cb.check_block,
                                       rule=None if rule.kind == "time" else rule, keys_fns=keys_fns):
        part = block["stats"]
        for k in ("rows", "positives", "bad_labels", "null_domains", "bad_times"):
            total[k] += part[k]
        total["domains"] |= part["domains"]
        total["bad_label_examples"] += part["bad_label_examples"]
        if "split_rows" in part:
            total["split_rows"] += part["split_rows"]
        for k, summary in block["summaries"].items():
            summaries[k].append(summary)
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
    if total["null_domains"]:
        raise DatasetError(f"{input}: domain column {cfg.domain_col!r} has {total['null_domains']} null value(s)")
    if total["bad_times"]:
        raise DatasetError(f"column {cfg.time_col!r}: {total['bad_times']} value(s) are not times")
    return total, {k: select.merge_summaries(v) for k, v in summaries.items()}


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


SMALL_INPUT_ROWS = 1 << 20


def _fit(staged, rule: cb.SplitRule, cfg: cb.StageConfig, schema: pa.Schema, min_count: int,
         summary: dict | None, rows: int) -> dict:
    """Encoders fitted on the train rows: {feature: Vocabulary | Buckets}. summary: the numeric
    features' dfei.data.select summary if the check pass made it (random splits)."""
    split_cols = [cb.KEY] + ([cb.TIME] if rule.kind == "time" else [])
    encoders: dict = {}
    if cfg.categorical:
        encoders.update(_fit_vocabularies(staged.select_columns(list(cfg.categorical) + split_cols), rule, cfg,
                                          schema, min_count, rows))
    if cfg.numeric:
        ds = staged.select_columns(list(cfg.numeric) + split_cols)
        keys = partial(cb.numeric_keys, rule=rule, numeric=cfg.numeric)
        summary = summary if summary is not None else select.summarize(ds, keys)
        ranks = {c: Buckets.edge_ranks(summary[c].rows) for c in cfg.numeric if c in summary and summary[c].rows}
        chosen = select.select(ds, keys, ranks, summary) if ranks else {}
        for c in cfg.numeric:
            encoders[c] = Buckets.from_values([select.float_of_key(k[0]) for k in chosen.get(c, [])])
    return encoders


def _fit_vocabularies(ds, rule: cb.SplitRule, cfg: cb.StageConfig, schema: pa.Schema, min_count: int,
                      rows: int) -> dict[str, Vocabulary]:
    """Per-block train value counts (map_batches) summed by Ray Data's groupby; the driver gets one
    row per distinct (feature, value), the vocabularies' size, and sorts them into ids."""
    import ray
    from ray.data.context import ShuffleStrategy

    partials = ds.map_batches(cb.train_value_counts, fn_kwargs={"rule": rule, "categorical": cfg.categorical},
                              batch_format="pyarrow", batch_size=None)
    # Large inputs: Ray Data's hash shuffle (aggregator actors that sum as blocks arrive: memory ~
    # distinct values, whatever the input size), one partition per CPU. Small ones: the task-based
    # sort shuffle, which holds every block's partial counts until the reduce but starts no actors
    # (~3 s less per conversion). Both give the same sums.
    if rows < SMALL_INPUT_ROWS:
        partials.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    parts = min(200, max(1, int(ray.cluster_resources().get("CPU", 1))))
    summed = partials.groupby(["feature", "value"], num_partitions=parts).sum("count")
    values: dict[int, list] = {i: [] for i in range(len(cfg.categorical))}
    counts: dict[int, list] = {i: [] for i in range(len(cfg.categorical))}
    for batch in summed.iter_batches(batch_size=None, batch_format="pyarrow"):
        feature = batch.column("feature").to_numpy()
        for i in np.unique(feature):
            mask = pa.array(feature == i)
            values[int(i)].append(batch.column("value").filter(mask).to_numpy(zero_copy_only=False))
            counts[int(i)].append(batch.column("sum(count)").filter(mask).to_numpy())
    out = {}
    for i, c in enumerate(cfg.categorical):
        t = schema.field(c).type
        out[c] = Vocabulary.from_counts(
            np.concatenate(values[i]) if values[i] else np.array([], dtype=object),
            np.concatenate(counts[i]) if counts[i] else np.array([], dtype=np.int64), min_count,
            numeric=pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))
    return out


def _encode(staged, rule: cb.SplitRule, cfg: cb.StageConfig, encoders: dict, domain_ids: dict[str, int],
            domain_list: list[Domain], tmp: str) -> dict[str, dict[str, int]]:
    """Write the encoded rows into tmp/<split>/domain=<id>/part-*.parquet; rows per split and domain."""
    import ray
    import ray.data

    order = list(cfg.categorical) + list(cfg.numeric)  # the feature order of dataset.json
    encoders_ref = ray.put(cb.Encoders(
        vocabularies={c: e for c, e in encoders.items() if isinstance(e, Vocabulary)},
        buckets={c: e for c, e in encoders.items() if isinstance(e, Buckets)},
        features=order, domain_ids=domain_ids, rule=rule))
    encoded = staged.map_batches(cb.encode, fn_kwargs={"token": uuid.uuid4().hex, "ref": [encoders_ref]},
                                 batch_format="pyarrow", batch_size=1 << 16)
    written = os.path.join(tmp, "_encoded")
    encoded.write_parquet(written, partition_cols=[cb.SPLIT, cb.DOMAIN], compression="zstd",
                          row_group_size=1 << 16)
    schema = pa.schema([(c, pa.int32()) for c in order] + [("label", pa.int8())])
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
