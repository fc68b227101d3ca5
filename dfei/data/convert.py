"""What every converter shares: the in-memory writer (KuaiRand-1K), dataset.json, the closing log.

The encoders themselves (vocabularies, bins, hashes: one implementation for every source) are in
dfei.data.encoders; each converter writes the ones it fitted beside the splits.
"""
from __future__ import annotations

import json
import os
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dfei.atomic import atomic_directory
from dfei.data.spec import SPLITS, DatasetSpec, Domain, Feature
from dfei.errors import PathExistsError


def write_dataset(out: str, name: str, frames: dict[str, dict[str, np.ndarray]], labels: dict[str, np.ndarray],
                  domains: dict[str, np.ndarray], domain_list: list[Domain], features: list[Feature],
                  user_column: str | None, meta: dict, overwrite: bool = False, log=print,
                  transform=None) -> DatasetSpec:
    """Write encoded feature columns + labels + per-row domain ids (in memory) as the contract,
    atomically, with the encoders of `transform` (a dfei.data.encoders.FeatureTransform). For sources
    that fit in memory (KuaiRand-1K); users' logs go through Ray Data."""
    out = os.path.abspath(out)
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise PathExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    schema = pa.schema([(f.name, pa.int32()) for f in features] + [("label", pa.int8())])
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    with atomic_directory(out) as tmp:
        for split in SPLITS:
            for dom in domain_list:
                mask = domains[split] == dom.id
                table = pa.table({**{f.name: frames[split][f.name][mask].astype(np.int32) for f in features},
                                  "label": labels[split][mask].astype(np.int8)}, schema=schema)
                directory = os.path.join(tmp, split, f"domain={dom.id}")
                os.makedirs(directory)
                pq.write_table(table, os.path.join(directory, "part-00000.parquet"), compression="zstd",
                               row_group_size=1 << 16)
                counts[split][dom.name] = table.num_rows
        spec = DatasetSpec(name=name, label="label", domains=domain_list, features=features,
                           user_column=user_column, row_counts=counts, meta=meta,
                           encoders=transform.write(tmp) if transform is not None else None)
        write_spec(tmp, spec)
    log_written(spec, out, log)
    return spec


def write_spec(directory: str, spec: DatasetSpec) -> None:
    """dataset.json of a dataset being written (inside its atomic_directory)."""
    with open(os.path.join(directory, "dataset.json"), "w") as f:
        json.dump(spec.to_json(), f, indent=1, sort_keys=True, default=str)


def log_written(spec: DatasetSpec, out: str, log=print) -> None:
    """The converters' closing lines: rows per split and domain, and where the dataset is."""
    for split in SPLITS:
        log(f"[convert] {split}: " + ", ".join(f"{n} {c:,}" for n, c in spec.row_counts[split].items()))
    log(f"[convert] wrote {out}")
