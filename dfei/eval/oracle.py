"""The ceiling of a synthetic dataset and the noise of an AUC.

- `split_reference`: per domain of a split, the label counts and, when the data carries the
  generator's true click probability (dataset.json meta "oracle_column", dfei.data.synthetic), the
  AUC and logloss of that probability: the best any model can reach in expectation (the oracle).
- `auc_interval`: a 95 % interval of an AUC from its value and the label counts alone, by Hanley &
  McNeil (Radiology 1982, Eq. 2). Neither scikit-learn nor scipy has an AUC interval, and DeLong's
  or a bootstrap needs every row's score, which a comparison of hundreds of runs does not keep; the
  Hanley-McNeil error is the standard approximation from (AUC, positives, negatives).
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.stats import norm
from sklearn.metrics import log_loss

from dfei.data.dataset import ParquetDataset
from dfei.errors import DatasetError
from dfei.eval.metrics import auc as metric_auc


def oracle_column(dataset: ParquetDataset) -> str | None:
    """The dataset's true-probability column (synthetic data), or None."""
    return dataset.spec.meta.get("oracle_column") if dataset.spec.meta else None


def split_reference(dataset: ParquetDataset, split: str, auc: bool = True) -> dict[str, dict]:
    """domain name -> {"n", "positives", and with an oracle column "logloss" (+ "auc" when `auc`)}.

    Reads the label (and oracle) column file by file with pyarrow; the logloss is summed per file,
    so only `auc` (valid/test) holds a domain's probabilities at once. DatasetError naming the file
    when dataset.json names an oracle column a file lacks or one holds a value outside [0, 1].
    """
    column = oracle_column(dataset)
    cols = [dataset.spec.label] + ([column] if column else [])
    out = {}
    for partition in dataset.partitions[split]:
        n = positives = 0
        loss_sum = 0.0
        labels, probs = [], []
        for part in partition.parts:
            try:
                table = pq.read_table(part.path, columns=cols, filesystem=dataset.fs)
            except (KeyError, ValueError, pa.ArrowInvalid) as err:  # a column the file lacks
                raise DatasetError(f"{part.path}: cannot read columns {cols} ({err})") from None
            y = table.column(0).to_numpy()
            n, positives = n + len(y), positives + int(y.sum())
            if not column or not len(y):
                continue
            p = table.column(1).to_numpy().astype(np.float64)
            if not (np.all(np.isfinite(p)) and p.min() >= 0.0 and p.max() <= 1.0):
                raise DatasetError(f"{part.path}: oracle column {column!r} has values outside [0, 1]; expected the "
                                   f"generator's true click probability ({partition.domain.name}, {split})")
            loss_sum += float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), normalize=False, labels=[0, 1]))
            if auc:
                labels.append(y)
                probs.append(p)
        entry: dict = {"n": n, "positives": positives}
        if column:
            entry["logloss"] = loss_sum / n if n else float("nan")
            if auc:
                entry["auc"] = metric_auc(np.concatenate(labels), np.concatenate(probs)) if labels else float("nan")
        out[partition.domain.name] = entry
    return out


def auc_interval(auc: float, positives: int, negatives: int, level: float = 0.95) -> tuple[float, float]:
    """(low, high) of a `level` interval of an AUC measured on `positives` + `negatives` rows
    (Hanley & McNeil 1982; clipped to [0, 1]); (nan, nan) for a NaN AUC or a class without rows."""
    if math.isnan(auc) or positives < 1 or negatives < 1:
        return float("nan"), float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / (
        positives * negatives)
    half = norm.ppf(0.5 + level / 2) * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)
