"""Batch inference on raw logs: CSV/Parquet as your systems write them -> the checkpoint's encoders -> scores.

The checkpoint carries the encoders its training data was converted with (dfei.data.encoders):
each Ray Data actor holds the model and those encoders, reads raw rows (CSV as text, exactly as the
converter reads them; Parquet with its stored types), encodes them as the converter did (same text
form, same bin edges, unknown values -> 0, same hash) and scores them. So scoring raw logs gives
what converting them with `prepare_data.py csv --encoders-from` and then `predict.py --data` would,
without writing a dataset. Output rows: the columns the user keeps (e.g. a request id, as read),
`domain_id` and `score` (CTR in (0, 1)).

A domain value the encoders do not know, or one the model has no tower for, is refused by name
(never scored with another domain's tower); a numeric feature's value that is not a number too.
Both are found by a first Ray Data pass over those columns alone (`check_block`), so the error names
the value and its file, and no scoring task fails halfway through a wall of Ray tracebacks.
"""
from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from dfei.atomic import atomic_directory
from dfei.data import csv_inputs
from dfei.data import fs as dfs
from dfei.data.csv_options import check_kinds
from dfei.data.encoders import DomainMap
from dfei.data.encoders.text import parse_numbers, text_form
from dfei.data.spec import DatasetSpec
from dfei.errors import ConfigError, DatasetError, PathExistsError, find_user_error
from dfei.train.checkpoint import finite_weights, load_any_checkpoint, load_trained

OUTPUT_COLUMNS = ("domain_id", "score")


class RawScorer:
    """Ray Data actor: the model and its encoders; raw pyarrow batches -> kept columns, domain_id, score."""

    def __init__(self, checkpoint: str, keep: list[str], use_gpu: bool = False):
        self.model, self.spec, _, self.transform = load_trained(checkpoint)
        self.keep = keep
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model.to(self.device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = self.transform.encode(batch, where="raw input")
        x = np.stack([ids[name] for name in self.spec.feature_names], axis=1).astype(np.int64)
        domain_ids = self.transform.domain.encode(batch.column(self.transform.domain.column))
        index = self.spec.domain_index_of(domain_ids)  # every value known: checked by the first pass
        with torch.no_grad():
            score = self.model.predict_proba(torch.from_numpy(x).to(self.device),
                                             torch.from_numpy(index).to(self.device)).float().cpu().numpy()
        out = {c: batch.column(c) for c in self.keep}
        return pa.table({**out, "domain_id": pa.array(domain_ids), "score": pa.array(score)})


def check_block(batch: pa.Table, domain: DomainMap, trained: list[int], numeric: list[str]) -> pa.Table:
    """One row per problem found in a raw block: kind (domain | number), column, value, file."""
    problems = []
    paths = batch.column(csv_inputs.PATH_COLUMN) if csv_inputs.PATH_COLUMN in batch.column_names else pa.nulls(
        batch.num_rows, pa.string())
    ids = domain.encode(batch.column(domain.column))
    bad = ~np.isin(ids, trained)
    if bad.any():
        values = text_form(batch.column(domain.column)).filter(pa.array(bad))
        files = paths.filter(pa.array(bad))
        for value, file in {(v, f) for v, f in zip(values.to_pylist(), files.to_pylist())}:
            problems.append(("domain", domain.column, value, file))
    for c in numeric:
        _, wrong = parse_numbers(batch.column(c))
        if wrong.any():
            i = int(np.argmax(wrong))
            problems.append(("number", c, text_form(batch.column(c))[i].as_py(), paths[i].as_py()))
    kind, column, value, file = (list(x) for x in zip(*problems)) if problems else ([], [], [], [])
    return pa.table({"kind": pa.array(kind, pa.string()), "column": pa.array(column, pa.string()),
                     "value": pa.array(value, pa.large_string()), "file": pa.array(file, pa.string())})


def _check_raw(inputs: csv_inputs.Inputs, transform, trained: list[int], numeric: list[str]) -> None:
    """DatasetError naming the first domain value no trained domain has, or numeric value that is no number."""
    own_path = csv_inputs.PATH_COLUMN in inputs.columns  # the input's own column `path`: no file names then
    ds = inputs.read(columns=[transform.domain.column, *numeric], include_paths=not own_path)
    problems = ds.map_batches(check_block, fn_kwargs={"domain": transform.domain, "trained": trained,
                                                      "numeric": numeric}, batch_format="pyarrow",
                              batch_size=1 << 16).to_pandas()
    if problems.empty:
        return
    domains = problems[problems["kind"] == "domain"]
    if len(domains):
        known = sorted(n for n, i in transform.domain.ids.items() if i in trained)
        values = sorted({str(v) for v in domains["value"]})
        raise DatasetError(f"{domains['file'].iloc[0] or inputs.pattern}: domain value(s) {values[:10]} (column {transform.domain.column!r}) "
                           f"are not domains this model was trained on ({known}); their rows cannot be scored")
    first = problems.iloc[0]
    raise DatasetError(f"{first['file'] or inputs.pattern}: numeric feature {first['column']!r} has a value that is not a number: "
                       f"{first['value']!r}")


def predict_raw(checkpoint: str, input: str, out: str, keep_columns: list[str] | None = None,
                batch_size: int = 8192, num_workers: int = 1, use_gpu: bool = False, overwrite: bool = False,
                log=print) -> dict[str, Any]:
    """Score raw logs (a .csv/.parquet file, a glob or an fsspec URI) with `checkpoint`; write Parquet
    under the local directory `out` (atomically). Raises ConfigError (a checkpoint without encoders,
    a kept column named like an output column), DatasetError (a missing column, a column of another
    kind than the encoders were fitted on, an unknown domain, a numeric value that is no number)."""
    import ray

    t0 = time.time()
    checkpoint, out = dfs.absolute(checkpoint), dfs.absolute(out)
    input = input if "://" in input else os.path.abspath(input)
    keep = list(keep_columns or [])
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise PathExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    clash = [c for c in keep if c in OUTPUT_COLUMNS]
    if clash:
        raise ConfigError(f"--keep-columns {clash}: {list(OUTPUT_COLUMNS)} are the output's own columns")
    ckpt = load_any_checkpoint(checkpoint, optimizer=False)
    finite_weights(ckpt, checkpoint)
    transform, state = ckpt["transform"], ckpt["state"]
    del ckpt
    if transform is None:
        raise ConfigError(f"{checkpoint}: trained on data with native ids (no encoders), so raw values cannot be "
                          f"encoded; score a converted dataset with --data instead")
    needed = list(dict.fromkeys(transform.names + [transform.domain.column] + keep))
    inputs = csv_inputs.inspect(input, needed)
    check_kinds(inputs, transform, f"the checkpoint {checkpoint}")
    spec = DatasetSpec.from_json(state["dataset"])
    _check_raw(inputs, transform, spec.domain_ids, [f.name for f in transform.features if f.kind == "buckets"])
    log(f"[predict] raw {inputs.what} {input} ({len(inputs.paths)} file(s)) with {checkpoint}: encoding "
        f"{len(transform.names)} features with its encoders")
    scored = inputs.read(columns=needed).map_batches(
        RawScorer, fn_constructor_kwargs={"checkpoint": checkpoint, "keep": keep, "use_gpu": use_gpu},
        batch_size=batch_size, batch_format="pyarrow", concurrency=num_workers, num_gpus=1 if use_gpu else 0)
    with atomic_directory(out) as tmp:
        try:
            scored.write_parquet(tmp)
        except Exception as err:  # a scorer's DatasetError (an unknown domain, ...), out of Ray Data's wrappers
            user = find_user_error(err)
            if user is None:
                raise
            raise user from None
        rows = ray.data.read_parquet(tmp).count() if any(f.endswith(".parquet") for f in os.listdir(tmp)) else 0
    log(f"[predict] wrote {rows:,} scores to {out} in {time.time() - t0:.1f}s")
    return {"rows": rows, "out": out}
