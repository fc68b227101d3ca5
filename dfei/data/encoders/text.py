"""Raw values -> the text form every vocabulary and hash is keyed by, and the kind of a column.

Keys are text, so a value is the same key whatever type a file or block inferred for it:
- CSV columns are read as text, as written: `007`, `07` and `7` are three values; an empty cell is
  missing (any other text, `NA` included, is a value);
- Parquet/Arrow columns keep their stored type and are keyed by Arrow's text form of it: integer
  7 -> `7`, float 7.0 -> `7` and 1.5 -> `1.5` (NaN is missing), boolean -> `true`/`false`,
  dictionary-encoded strings by their values;
- Python values (ServingModel.predict_raw) as Arrow converts them, then as above.
The kind of the column a feature was fitted on is recorded with its encoder (`source`), and new logs
whose column has another kind (text vs integer, say) are refused: int 7 and text `007` would key
differently. Numeric features are parsed as numbers from any kind.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# a numeric feature's text that means "missing" (NaN), as pandas' and pyarrow's readers treat it
MISSING_NUMBERS = ("na", "n/a", "nan", "-nan", "null", "none", "#n/a")
KINDS = ("text", "integer", "float", "decimal", "boolean", "temporal", "other")


def same_keys(a: str, b: str) -> bool:
    """Whether columns of kinds a and b key equal values alike: the same kind, or integer and float
    (7 and 7.0 both key '7'; pandas writes an integer column with a missing value as float)."""
    return a == b or {a, b} == {"integer", "float"}


def kind_of(t: pa.DataType) -> str:
    """The kind of an Arrow type, as recorded in `source`: text | integer | float | decimal | boolean |
    temporal | other (dictionary types by their values)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    for kind, test in (("integer", pa.types.is_integer), ("float", pa.types.is_floating),
                       ("decimal", pa.types.is_decimal), ("boolean", pa.types.is_boolean),
                       ("temporal", pa.types.is_temporal)):
        if test(t):
            return kind
    return "other"


def text_form(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Any column -> large_string [n] (nulls kept, NaN is null): the keys of vocabularies and hashes."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_floating(column.type):  # NaN is a missing value (OOV 0, a null domain), not a value "nan"
        column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), pc.add(column, pa.scalar(0.0, column.type)))  # -0.0 keys as 0
    return column if pa.types.is_large_string(column.type) else pc.cast(column, pa.large_string())


def parse_numbers(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 [n] with NaN for missing, bool [n] True where a present value is not a number) of a
    numeric feature's column of any kind (text is parsed: `1.5`, `2e3`, ` 7 `; an empty cell and
    MISSING_NUMBERS, any case, are missing)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    kind = kind_of(column.type)
    if kind in ("integer", "float", "decimal", "boolean"):
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return values.astype(np.float64, copy=True), np.zeros(len(values), dtype=bool)
    raw = column.to_pandas() if kind == "text" else text_form(column).to_pandas()
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    present = raw.notna().to_numpy().copy()
    if present.any() and np.isnan(values[present]).any():  # the usual spellings of "no number" are missing
        present &= ~raw.str.strip().str.lower().isin(MISSING_NUMBERS).to_numpy(dtype=bool)
    return values, np.isnan(values) & present
