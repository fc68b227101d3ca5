"""Fitting the converter's encoders on the train rows (Ray Data), or growing existing ones.

Vocabularies: per-block train value counts (`map_batches`) summed by Ray Data's groupby; the
driver gets one row per distinct (feature, value) and sorts them into ids (dfei.data.encoders).
Numeric bins: exact quantiles of the train values (dfei.data.select). Hashed features fit nothing.
Ray Data's preprocessors are not used: `OrdinalEncoder` orders categories by value, has no minimum
count and no reserved id for unseen values, and Ray Data has no quantile discretizer.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pyarrow as pa

from dfei.data import csv_blocks as cb
from dfei.data import select
from dfei.data.encoders import Buckets, DomainMap, FeatureEncoder, FeatureTransform, HashBuckets, LabelRule, Vocabulary
from dfei.data.encoders.text import text_form

SMALL_INPUT_ROWS = 1 << 20
NUMERIC_ORDER_KINDS = ("integer", "float", "decimal")  # ties of a vocabulary ordered by number


def train_value_counts(staged, rule: cb.SplitRule, features: tuple[str, ...],
                       rows: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{feature: (distinct train values as text [n], their counts [n])} of `features`."""
    import ray
    from ray.data.context import ShuffleStrategy

    if not features:
        return {}
    split_cols = [cb.KEY] + ([cb.TIME] if rule.kind == "time" else [])
    partials = staged.select_columns(list(features) + split_cols).map_batches(
        cb.train_value_counts, fn_kwargs={"rule": rule, "categorical": features}, batch_format="pyarrow",
        batch_size=None)
    # Large inputs: Ray Data's hash shuffle (aggregator actors that sum as blocks arrive: memory ~
    # distinct values, whatever the input size), one partition per CPU. Small ones: the task-based
    # sort shuffle, which holds every block's partial counts until the reduce but starts no actors
    # (~3 s less per conversion). Both give the same sums.
    if rows < SMALL_INPUT_ROWS:
        partials.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    parts = min(200, max(1, int(ray.cluster_resources().get("CPU", 1))))
    summed = partials.groupby(["feature", "value"], num_partitions=parts).sum("count")
    values: dict[int, list] = {i: [] for i in range(len(features))}
    counts: dict[int, list] = {i: [] for i in range(len(features))}
    for batch in summed.iter_batches(batch_size=None, batch_format="pyarrow"):
        feature = batch.column("feature").to_numpy()
        for i in np.unique(feature):
            mask = pa.array(feature == i)
            values[int(i)].append(text_form(batch.column("value").filter(mask)))
            counts[int(i)].append(batch.column("sum(count)").filter(mask).to_numpy())
    return {c: (pa.concat_arrays(values[i]) if values[i] else pa.array([], pa.large_string()),
                np.concatenate(counts[i]) if counts[i] else np.array([], dtype=np.int64))
            for i, c in enumerate(features)}


def numeric_buckets(staged, rule: cb.SplitRule, numeric: tuple[str, ...], summary: dict | None) -> dict[str, Buckets]:
    """~10 quantile bins per numeric feature from its exact train order statistics. summary: the
    dfei.data.select summary of the check pass where it made one (random splits)."""
    if not numeric:
        return {}
    split_cols = [cb.KEY] + ([cb.TIME] if rule.kind == "time" else [])
    ds = staged.select_columns(list(numeric) + split_cols)
    keys = partial(cb.numeric_keys, rule=rule, numeric=numeric)
    summary = summary if summary is not None else select.summarize(ds, keys)
    ranks = {c: Buckets.edge_ranks(summary[c].rows) for c in numeric if c in summary and summary[c].rows}
    chosen = select.select(ds, keys, ranks, summary) if ranks else {}
    return {c: Buckets.from_values([select.float_of_key(k[0]) for k in chosen.get(c, [])]) for c in numeric}


def fit_transform(staged, rule: cb.SplitRule, cfg: cb.StageConfig, kinds: dict[str, str], hashed: dict[str, int],
                  hash_seed: int, min_count: int, summary: dict | None, rows: int,
                  domain_names: list[str]) -> FeatureTransform:
    """Every encoder fitted on the train rows, features in the dataset's order (categorical, then numeric)."""
    vocab = tuple(c for c in cfg.categorical if c not in hashed)
    counts = train_value_counts(staged, rule, vocab, rows)
    buckets = numeric_buckets(staged, rule, cfg.numeric, summary)
    features = []
    for c in cfg.categorical:
        encoder = HashBuckets(hashed[c], hash_seed) if c in hashed else Vocabulary.from_counts(
            *counts[c], min_count, numeric=kinds[c] in NUMERIC_ORDER_KINDS)
        features.append(FeatureEncoder(c, encoder, kinds[c]))
    features += [FeatureEncoder(c, buckets[c], kinds[c]) for c in cfg.numeric]
    numbered = kinds[cfg.domain_col] in NUMERIC_ORDER_KINDS  # integer domains 2 < 10, text ones by code point
    names = sorted(domain_names, key=(lambda n: (float(n), n)) if numbered else None)
    domain = DomainMap(cfg.domain_col, {n: i for i, n in enumerate(names)}, kinds[cfg.domain_col])
    return FeatureTransform(features, domain, LabelRule(cfg.label_col, cfg.label_threshold))


def grow_transform(staged, rule: cb.SplitRule, transform: FeatureTransform, min_count: int, rows: int,
                   domain_names: list[str]) -> tuple[FeatureTransform, dict[str, int], list[str]]:
    """(the transform with the train values it does not know appended to each vocabulary (seen at
    least `min_count` times) and new domain values as new domains, values added per feature, new
    domain names). Known ids never move; bins and hashed features are unchanged."""
    vocab = tuple(f.name for f in transform.features if f.kind == "vocabulary")
    counts = train_value_counts(staged, rule, vocab, rows)
    features, added = [], {}
    for f in transform.features:
        if f.kind == "vocabulary":
            grown, added[f.name] = f.encoder.grow(*counts[f.name], min_count, numeric=f.source in NUMERIC_ORDER_KINDS)
            f = FeatureEncoder(f.name, grown, f.source)
        features.append(f)
    domain, new_domains = transform.domain.grow(domain_names)
    return FeatureTransform(features, domain, transform.label), added, new_domains
