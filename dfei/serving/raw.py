"""Raw request values -> the ids and domain ids the artifact takes, with the training data's encoders.

A request's values are Python values (JSON's): each feature's column becomes an Arrow array and is
checked against the kind of column its encoder was fitted on (a feature fitted on text takes
strings: 7 and "007" are different values there, so a number is refused rather than guessed at;
one fitted on integers takes ints; a numeric feature takes numbers or their text). Then the
encoders of dfei.data.encoders apply exactly as in the converter. Needs numpy and pyarrow.
"""
from __future__ import annotations


import numpy as np
import pyarrow as pa

from dfei.errors import RequestError, UserError

# the Arrow kinds a request column may have, per fitted kind (null: every value missing)
ACCEPTED = {"text": ("text",), "integer": ("integer", "float"), "float": ("float", "integer"), "boolean": ("boolean",),
            "decimal": ("decimal", "integer", "float"), "temporal": ("temporal",), "other": ("other",)}


def _columns(rows, names: list[str]) -> dict[str, list]:
    """{feature: values} of a list of row dicts or a dict of columns; RequestError for missing/extra ones."""
    if isinstance(rows, dict):
        columns = {k: list(v) for k, v in rows.items()}
    elif isinstance(rows, (list, tuple)) and all(isinstance(r, dict) for r in rows):
        keys = set().union(*(r.keys() for r in rows)) if rows else set()
        for i, r in enumerate(rows):
            missing = [n for n in names if n not in r]
            if missing:
                raise RequestError(f"row {i}: missing feature(s) {missing} (None for a missing value)")
        columns = {k: [r.get(k) for r in rows] for k in keys}
    else:
        raise RequestError("rows must be a list of {feature: value} objects or an object of {feature: [values]}")
    missing = [n for n in names if n not in columns]
    extra = sorted(k for k in columns if k not in names)
    if missing or extra:
        raise RequestError(f"features {names} expected; missing {missing}, unknown {extra}")
    return columns


def _array(name: str, values: list, fitted: str, numeric: bool) -> pa.Array:
    from dfei.data.encoders.text import kind_of

    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as err:
        raise RequestError(f"feature {name!r}: values of mixed or unsupported types ({str(err).splitlines()[0]})") from None
    kind = kind_of(array.type)
    if pa.types.is_null(array.type) or numeric and kind in ("text", "integer", "float", "decimal", "boolean"):
        return array
    if kind not in ACCEPTED.get(fitted, (fitted,)):
        row = next(i for i, v in enumerate(values) if v is not None)
        how = "send it as a string ('7' and '007' are different values)" if fitted == "text" else f"send {fitted} values"
        raise RequestError(f"feature {name!r}: {values[row]!r} ({type(values[row]).__name__}) at row {row}: this feature "
                           f"was fitted on {fitted} values; {how}")
    return array


def encode_request(transform, names: list[str], trained_domains: dict[int, str], rows,
                   domains) -> tuple[np.ndarray, np.ndarray]:
    """(features int64 [batch, F] in `names` order, domain ids int64 [batch]) of raw rows and domains."""
    domains = list(domains)
    return encode_rows(transform, names, rows, len(domains)), encode_domains(transform, trained_domains, domains)


def encode_rows(transform, names: list[str], rows, n: int) -> np.ndarray:
    """Feature ids int64 [n, F] in `names` order of n raw rows (a list of {feature: value} or
    {feature: [values]}); RequestError names a missing, extra or wrongly typed feature, or a column
    whose length is not n."""
    columns = _columns(rows, names)
    bad = [k for k, v in columns.items() if len(v) != n]
    if bad:
        raise RequestError(f"{n} row(s) but feature(s) {bad} have {len(columns[bad[0]])} value(s)")
    if not n:
        return np.zeros((0, len(names)), np.int64)
    table = pa.table({f.name: _array(f.name, columns[f.name], f.source, f.kind == "buckets")
                      for f in transform.features})
    try:
        ids = transform.encode(table, where="request")
    except UserError as err:
        raise RequestError(str(err)) from None
    return np.stack([ids[f] for f in names], axis=1).astype(np.int64)


def encode_domains(transform, trained_domains: dict[int, str], domains: list) -> np.ndarray:
    """Raw domain values [n] -> the dataset's domain ids int64 [n]; RequestError names a value of
    the wrong kind or a domain the model was not trained on, with its row."""
    if not domains:
        return np.zeros(0, np.int64)
    d = np.asarray(transform.domain.encode(_array("domain", domains, transform.domain.source, False)), np.int64)
    known = np.isin(d, list(trained_domains))
    if not known.all():
        row = int(np.argmin(known))
        raise RequestError(f"domain {domains[row]!r} at row {row} is not one the model was trained on (known: "
                           + ", ".join(repr(v) for v, i in transform.domain.ids.items() if i in trained_domains) + ")")
    return d
