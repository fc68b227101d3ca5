"""The CSV/Parquet converter's settings, checked before Ray starts, and what `--encoders-from` fixes.

Fitting new encoders, every setting is the user's. Encoding with a dataset's encoders
(`--encoders-from`), what those encoders were fitted with is fixed: the domain and label columns,
the label threshold, the features (hashed, numeric, categorical), the user column. Leaving a setting
out takes the encoders' value; giving another value is refused by name (a setting that would not be
used is never accepted). `--min-count` is read only when fitting or with `--grow`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numpy as np

from dfei.data import csv_blocks as cb
from dfei.data.csv_inputs import Inputs, check_columns
from dfei.data.encoders import FeatureTransform
from dfei.data.encoders.hashing import MAX_BUCKETS
from dfei.data.encoders.text import same_keys
from dfei.data.spec import DatasetSpec, check_column_names
from dfei.errors import ConfigError, DatasetError, PathExistsError


@dataclass
class ConvertOptions:
    domain_col: str | None = None
    label_col: str | None = None
    features: list[str] | None = None  # None: every other column (or, with encoders, theirs)
    label_threshold: float | None = None
    user_col: str | None = None
    time_col: str | None = None
    split: str = "random"
    numeric: list[str] = field(default_factory=list)
    min_count: int | None = None  # None: 1 (fitting), the encoders' dataset's (growing)
    valid_frac: float = 0.1
    test_frac: float = 0.1
    seed: int = 0
    hash_buckets: dict[str, int] = field(default_factory=dict)  # feature -> buckets
    hash_seed: int | None = None  # None: 0 when fitting, the encoders' seed with --encoders-from
    encoders_from: str | None = None
    grow: bool = False

    def check(self) -> None:
        """ConfigError for a value no input could make right."""
        if self.split not in cb.SPLIT_KINDS:
            raise ConfigError(f"--split must be one of {list(cb.SPLIT_KINDS)}, got {self.split!r}")
        if self.split == "time" and not self.time_col:
            raise ConfigError("--split time needs --time-col")
        if self.label_threshold is not None and not np.isfinite(self.label_threshold):
            raise ConfigError(f"--label-threshold must be a finite number, got {self.label_threshold}")
        if not (self.valid_frac >= 0 and self.test_frac >= 0 and self.valid_frac + self.test_frac < 1):
            raise ConfigError(f"--valid-frac and --test-frac must be >= 0 with a sum < 1, got {self.valid_frac}, "
                              f"{self.test_frac}")
        if self.min_count is not None and self.min_count < 1:
            raise ConfigError(f"--min-count must be >= 1, got {self.min_count}")
        bad = {f: b for f, b in self.hash_buckets.items() if not isinstance(b, int) or not 1 <= b <= MAX_BUCKETS}
        if bad:
            raise ConfigError(f"--hash: bucket counts must be integers in [1, {MAX_BUCKETS}] (ids are int32), got {bad}")
        if self.hash_seed is not None and (not isinstance(self.hash_seed, int) or not 0 <= self.hash_seed < 1 << 64):
            raise ConfigError(f"--hash-seed must be in [0, 2^64), got {self.hash_seed}")
        if self.grow and not self.encoders_from:
            raise ConfigError("--grow extends existing encoders: it needs --encoders-from DATASET")
        if not self.encoders_from:
            if not self.domain_col or not self.label_col:
                raise ConfigError("--domain-col and --label-col are required (unless --encoders-from gives them)")
            if self.hash_seed is not None and not self.hash_buckets:
                raise ConfigError("--hash-seed seeds the --hash features; there are none")
            self.check_split()
        elif self.min_count is not None and not self.grow:
            raise ConfigError("--min-count is not read with --encoders-from (nothing is fitted); it applies to new "
                              "values with --grow")


    def check_split(self) -> None:
        """ConfigError when the split needs a column no option names (after --encoders-from filled them)."""
        if self.split == "random-user" and not self.user_col:
            raise ConfigError("--split random-user needs --user-col (the users to keep apart)")


def with_encoders(opts: ConvertOptions, transform: FeatureTransform, spec: DatasetSpec) -> ConvertOptions:
    """The options an encoding with `transform` runs with: the encoders' settings where the user
    left them out; ConfigError naming each one given with another value."""
    where = opts.encoders_from
    numeric = [f.name for f in transform.features if f.kind == "buckets"]
    hashed = {f.name: f.encoder.buckets for f in transform.features if f.kind == "hash"}
    fixed = {"--domain-col": (opts.domain_col, transform.domain.column),
             "--label-col": (opts.label_col, transform.label.column),
             "--label-threshold": (opts.label_threshold, transform.label.threshold),
             "--user-col": (opts.user_col, spec.user_column),
             "--numeric": (sorted(opts.numeric) or None, sorted(numeric)),
             "--hash": (opts.hash_buckets or None, hashed)}
    seeds = sorted({f.encoder.seed for f in transform.features if f.kind == "hash"})
    fixed["--hash-seed"] = (opts.hash_seed, seeds[0] if len(seeds) == 1 else (seeds or None))
    for flag, (given, theirs) in fixed.items():
        if given is not None and given != theirs:
            raise ConfigError(f"{flag} {given!r}: the encoders of {where} were fitted with {theirs!r}; leave it out "
                              f"(the encoders' value is used) or fit new encoders without --encoders-from")
    if opts.features is not None and sorted(opts.features) != sorted(transform.names):
        raise ConfigError(f"--features {opts.features}: with {where} the features are the encoders' "
                          f"{transform.names} (list exactly those to ignore the input's other columns)")
    min_count = opts.min_count or int(spec.meta.get("min_count") or 1)
    resolved = replace(opts, domain_col=transform.domain.column, label_col=transform.label.column,
                   label_threshold=transform.label.threshold, user_col=spec.user_column, numeric=numeric,
                   hash_buckets=hashed, min_count=min_count)
    resolved.check_split()
    return resolved


def resolve_features(opts: ConvertOptions, inputs: Inputs, transform: FeatureTransform | None) -> tuple[list, list]:
    """(categorical, numeric) features, in the dataset's order; DatasetError for a column that cannot
    be a feature, is missing, or (with encoders) is new or changed kind since the encoders were fitted."""
    where, columns = inputs.pattern, inputs.columns
    own = (opts.domain_col, opts.label_col, opts.time_col)
    if transform is not None:
        extra = [c for c in columns if c not in transform.names and c not in own and c != opts.user_col]
        if extra and opts.features is None:
            raise DatasetError(f"{where}: column(s) {extra} are not in the encoders of {opts.encoders_from} (features "
                               f"{transform.names}); drop them, or pass --features with exactly the encoders' features "
                               f"to ignore them")
        check_kinds(inputs, transform, opts.encoders_from)
        features = transform.names
    else:
        features = opts.features if opts.features is not None else [c for c in columns if c not in own]
        if opts.user_col and opts.user_col not in features:
            features = [opts.user_col] + features
    clash = [c for c in features if c in (opts.domain_col, opts.label_col, "label")]
    if clash:
        raise DatasetError(f"{where}: column(s) {clash} cannot be features: the domain and label columns are not "
                           f"inputs, and 'label' is the name of the written label column (rename it)")
    check_column_names(features, "label", where)  # refused here, not when predict.py reads the dataset back
    internal = [c for c in features if c.startswith("__dfei_")]
    if internal:
        raise DatasetError(f"{where}: column(s) {internal}: names starting with '__dfei_' are the converter's own")
    unknown = [c for c in [*opts.numeric, *opts.hash_buckets] if c not in features]
    if unknown:
        raise DatasetError(f"{where}: --numeric/--hash name(s) {unknown} that are not features ({features})")
    both = sorted(set(opts.numeric) & set(opts.hash_buckets))
    if both:
        raise ConfigError(f"feature(s) {both} cannot be both --numeric and --hash")
    if transform is not None:
        categorical = [f.name for f in transform.features if f.kind != "buckets"]
        numeric = [f.name for f in transform.features if f.kind == "buckets"]
    else:
        categorical = [c for c in features if c not in opts.numeric]
        numeric = [c for c in features if c in opts.numeric]
    read = [c for c in dict.fromkeys([*features, *own, opts.user_col]) if c]
    check_columns(inputs, read, [*categorical, opts.domain_col, *([opts.user_col] if opts.user_col else [])])
    return categorical, numeric


def check_kinds(inputs: Inputs, transform: FeatureTransform, encoders_from: str) -> None:
    """A categorical/hashed feature or the domain keyed by text: its column must have the kind it had
    when the encoders were fitted (integer 7 keys '7', CSV text '007' keys '007'), in every file."""
    keyed = [(f.name, f.source) for f in transform.features if f.kind != "buckets"]
    for name, source in keyed + [(transform.domain.column, transform.domain.source)]:
        kind = inputs.kinds.get(name)
        if kind is not None and not same_keys(kind, source):
            how = "CSV columns are read as text, as written" if inputs.format == "csv" else \
                f"{inputs.what}: {inputs.inferred[name]}"
            raise DatasetError(
                f"{inputs.pattern}: column {name!r} is {kind} here ({how}) but was "
                f"{source} when the encoders ({encoders_from}) were fitted; values are keyed by their text form "
                f"(integer 7 -> '7', text '007' -> '007'), so the same value could get another id: cast the column "
                f"to its fitted kind first")
    names = [name for name, _ in keyed] + [transform.domain.column]
    check_columns(inputs, names, names)  # and the same kind in every file, not only in the first


def output_path(out: str, overwrite: bool) -> str:
    """The local, absolute --out; ConfigError for a URI, PathExistsError when it exists un-emptied."""
    if "://" in out and not out.startswith("file://"):
        raise ConfigError(f"--out {out}: write the dataset to a local path (on a cluster: one mounted at the same "
                          f"path on every node), then copy it to object storage")
    out = os.path.abspath(out[len("file://"):] if out.startswith("file://") else out)
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise PathExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    return out
