"""Raw values -> the text form every vocabulary and hash is keyed by, and the kind of a column.

Keys are text, so a value is the same key whatever type a file or block inferred for it:
- CSV columns are read as text, as written: `007`, `07` and `7` are three values; an empty cell is
  missing (any other text, `NA` included, is a value);
- Parquet/Arrow columns keep their stored type and are keyed by a canonical text form of it
  (`text_form`): integer 7 and float 7.0 -> `7`, 1.5 -> `1.5` (NaN is missing), decimal 7.50 ->
  `7.5`, boolean -> `true`/`false`, timestamps at nanosecond resolution whatever their unit (with a
  time zone: as UTC),
  dictionary-encoded strings by their values (float32 and float64 write a value at their own
  precision: 0.3 stored as float32 and read as float64 is another value);
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
NUMBER_KEYS = {"integer", "float", "decimal"}  # kinds whose values key alike (text_form)
KINDS = ("text", "integer", "float", "decimal", "boolean", "timestamp", "date", "temporal", "other")


def same_keys(a: str, b: str) -> bool:
    """Whether columns of kinds a and b key equal values alike: the same kind, or two kinds of numbers
    (7, 7.0 and decimal 7.00 all key '7'; pandas writes an integer column with a missing value as float)."""
    return a == b or {a, b} <= NUMBER_KEYS


def kind_of(t: pa.DataType) -> str:
    """The kind of an Arrow type, as recorded in `source`: text | integer | float | decimal | boolean |
    timestamp | date | temporal (times, durations) | other (dictionary types by their values)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    for kind, test in (("integer", pa.types.is_integer), ("float", pa.types.is_floating),
                       ("decimal", pa.types.is_decimal), ("boolean", pa.types.is_boolean),
                       ("timestamp", pa.types.is_timestamp), ("date", pa.types.is_date),
                       ("temporal", pa.types.is_temporal)):
        if test(t):
            return kind
    return "other"


def text_form(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Any column -> large_string [n] (nulls kept, NaN is null): the keys of vocabularies and hashes.

    Canonical within a kind, so a value keys alike whatever width or unit a file stored it in:
    integral floats as integers (7.0 and int 7 -> `7`, 1.5 -> `1.5`, -0.0 -> `0`), decimals without
    trailing zeros (7.50 -> `7.5`), timestamps at nanosecond resolution whatever their unit."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_floating(column.type):
        return _float_text(column)
    if pa.types.is_decimal(column.type):
        text = pc.replace_substring_regex(pc.cast(column, pa.large_string()), r"(\.\d*?)0+$", r"\1")
        return pc.replace_substring_regex(text, r"\.$", "")
    if pa.types.is_timestamp(column.type) and (column.type.unit != "ns" or column.type.tz):
        try:
            column = pc.cast(column, pa.timestamp("ns"))  # tz-aware: its UTC time, as naive ones are read
        except pa.ArrowInvalid:  # beyond what nanoseconds hold (years < 1677 or > 2262): its own unit
            pass
    return column if pa.types.is_large_string(column.type) else pc.cast(column, pa.large_string())


def _float_text(column: pa.Array) -> pa.Array:
    """Floats as text: NaN missing, integral values below 2^63 as integers, others as Arrow writes them."""
    values = column.to_numpy(zero_copy_only=False).astype(np.float64)
    with np.errstate(invalid="ignore"):
        integral = np.isfinite(values) & (np.floor(values) == values) & (np.abs(values) < 2.0 ** 63)
    whole = pa.array(np.where(integral, values, 0).astype(np.int64)).cast(pa.large_string())
    text = pc.if_else(pa.array(integral), whole, pc.cast(column, pa.large_string()))
    missing = pa.array(np.isnan(values))  # NaN (and null) is a missing value (OOV 0), not a value "nan"
    return pc.if_else(missing, pa.scalar(None, pa.large_string()), text)


def parse_numbers(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 [n] with NaN for missing, bool [n] True where a present value is not a number) of a
    numeric feature's column of any kind (text is parsed: `1.5`, `2e3`, ` 7 `; an empty cell and
    MISSING_NUMBERS, any case, are missing; so are infinities: no bin edge is ever infinite)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    kind = kind_of(column.type)
    if kind in ("integer", "float", "decimal", "boolean"):
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=True)
        values[np.isinf(values)] = np.nan
        return values, np.zeros(len(values), dtype=bool)
    raw = column.to_pandas() if kind == "text" else text_form(column).to_pandas()
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, copy=True)
    present = raw.notna().to_numpy().copy()
    if present.any() and np.isnan(values[present]).any():  # the usual spellings of "no number" are missing
        present &= ~raw.str.strip().str.lower().isin(MISSING_NUMBERS).to_numpy(dtype=bool)
    bad = np.isnan(values) & present
    values[np.isinf(values)] = np.nan
    return values, bad
