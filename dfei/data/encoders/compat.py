"""Is data encoded the way a model expects? Two transforms compared: the same, grown, or different.

`relate(model's, data's)`:
- `same`: every encoder identical (equal digests);
- `grown`: the data's encoders extend the model's: each vocabulary starts with the model's values
  at the model's ids (`--grow` appended the rest), the domain map keeps every domain's id, bins,
  hashes and the label rule are unchanged. A model continues on such data with its embedding
  tables extended (dfei.train.warm_start), and scores it with the new ids read as 0;
- anything else is refused with DatasetError naming the feature and an example value, e.g.
  `item_id: 'i00006' is id 3 in the checkpoint's encoders, 5 in the data's`.
Both None (native ids, e.g. synthetic data) is `native`: the caller compares cardinalities.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from dfei.data.encoders.transform import FeatureEncoder, FeatureTransform
from dfei.errors import DatasetError


@dataclass(frozen=True)
class Relation:
    kind: str  # native | same | grown
    grown: dict[str, tuple[int, int]] = field(default_factory=dict)  # feature -> (model's, data's cardinality)
    new_domains: dict[str, int] = field(default_factory=dict)  # domain value -> id, in the data's map only


def check_recorded(model_spec, data_spec, where: str) -> None:
    """DatasetError when either dataset was converted (not generated) before encoders were kept
    (`encoders` absent from its spec) and the two are not the very same dataset: whether an id means
    the same value in both cannot be checked. Native ids (synthetic data) pass."""
    def unrecorded(spec) -> bool:
        return spec.encoders is None and spec.meta.get("converter") is not None

    same = (model_spec.name == data_spec.name and model_spec.row_counts == data_spec.row_counts
            and model_spec.features == data_spec.features)
    if (unrecorded(model_spec) or unrecorded(data_spec)) and not same:
        which = "the checkpoint's data" if unrecorded(model_spec) else "the data"
        raise DatasetError(f"{where}: {which} was converted before encoders were kept, so whether an id means the same "
                           f"value in both cannot be checked; convert the logs again with prepare_data.py csv (and the "
                           f"next days with --encoders-from)")


def relate(model: FeatureTransform | None, data: FeatureTransform | None, where: str,
           model_name: str = "the checkpoint's encoders", data_name: str = "the data's") -> Relation:
    """How `data`'s encoders relate to `model`'s; DatasetError (prefixed by `where`) unless the same or grown."""
    if model is None and data is None:
        return Relation("native")
    if model is None or data is None:
        has, lacks = (data_name, model_name) if model is None else (model_name, data_name)
        raise DatasetError(f"{where}: {has} come with encoders and {lacks} have none (native ids): the same id "
                           f"would not mean the same value; convert the data with the model's encoders "
                           f"(prepare_data.py csv --encoders-from)")
    if model.names != data.names:
        raise DatasetError(f"{where}: features {data.names} ({data_name}) are not {model.names} ({model_name})")
    if model.label != data.label:
        raise DatasetError(f"{where}: the label rule is {data.label} in {data_name}, {model.label} in {model_name}")
    grown = {}
    for old, new in zip(model.features, data.features):
        extra = _feature_relation(old, new, f"{where}: {old.name}", model_name, data_name)
        if extra:
            grown[old.name] = (old.cardinality, new.cardinality)
    moved = {n: (i, data.domain.ids.get(n)) for n, i in model.domain.ids.items() if data.domain.ids.get(n) != i}
    if moved or model.domain.column != data.domain.column:
        name, (i, j) = next(iter(moved.items())) if moved else (model.domain.column, (None, None))
        raise DatasetError(f"{where}: domain {name!r} (column {model.domain.column!r}) is id {i} in {model_name}, "
                           f"{'absent' if j is None else f'id {j}'} in {data_name}")
    new_domains = {n: i for n, i in data.domain.ids.items() if n not in model.domain.ids}
    return Relation("grown" if grown or new_domains else "same", grown, new_domains)


def _feature_relation(old: FeatureEncoder, new: FeatureEncoder, where: str, model_name: str, data_name: str) -> bool:
    """True when `new` extends `old` (a grown vocabulary), False when identical; else DatasetError."""
    if old.kind != new.kind or old.source != new.source:
        raise DatasetError(f"{where}: a {new.kind} fitted on {new.source} values in {data_name}, a {old.kind} fitted on "
                           f"{old.source} values in {model_name}")
    if old.encoder.digest() == new.encoder.digest():
        return False
    if old.kind == "hash":
        raise DatasetError(f"{where}: hashed into {new.encoder.buckets} buckets (seed {new.encoder.seed}) in "
                           f"{data_name}, {old.encoder.buckets} (seed {old.encoder.seed}) in {model_name}")
    if old.kind == "buckets":
        value = _value_binned_apart(old.encoder.edges, new.encoder.edges)
        raise DatasetError(f"{where}: {value!r} is id {int(old.encoder.encode(np.array([value]))[0])} in {model_name}, "
                           f"{int(new.encoder.encode(np.array([value]))[0])} in {data_name} (other bin edges)")
    n = old.encoder.size
    head = new.encoder.values.slice(0, n)
    if new.encoder.size >= n and head.equals(old.encoder.values):
        return True
    differ = np.flatnonzero(~np.asarray(_equal(head, old.encoder.values.slice(0, len(head)))))
    i = int(differ[0]) if len(differ) else len(head)
    value = old.encoder.values[i].as_py()
    data_id = int(new.encoder.encode(pa.array([value], pa.large_string()))[0])
    raise DatasetError(f"{where}: {value!r} is id {i + 1} in {model_name}, "
                       f"{data_id if data_id else '0 (unknown)'} in {data_name}")


def _equal(a: pa.Array, b: pa.Array) -> list[bool]:
    import pyarrow.compute as pc

    return pc.equal(a, b).fill_null(False).to_numpy(zero_copy_only=False)


def _value_binned_apart(a: np.ndarray, b: np.ndarray) -> float:
    """A value two sets of bin edges put in bins of different ids: the first edge one has and the other not
    (or, with equal edge sets, none: then the first edge)."""
    for e in np.union1d(a, b):
        if np.searchsorted(a, e, side="right") != np.searchsorted(b, e, side="right"):
            return float(e)
    return float(np.union1d(a, b)[0]) if len(a) or len(b) else 0.0
