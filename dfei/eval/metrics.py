"""Per-domain metrics over a whole split (never averaged over batches)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (scikit-learn); NaN when the labels hold a single class."""
    labels = np.asarray(labels)
    if len(labels) == 0 or labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def gauc(labels: np.ndarray, scores: np.ndarray, users: np.ndarray, ignore_user: int | None = 0) -> float:
    """Group AUC: per-user AUC weighted by the user's impressions, over users with both classes.

    `ignore_user` (default 0, the contract's "missing/other" id: every user unseen in train) is left
    out, since it is not one user.

    Vectorised with the rank-sum form of AUC (ties get average ranks, as roc_auc_score does).
    """
    df = pd.DataFrame({"u": np.asarray(users), "y": np.asarray(labels, dtype=np.float64),
                       "s": np.asarray(scores, dtype=np.float64)})
    if ignore_user is not None:
        df = df[df["u"] != ignore_user]
    df["rpos"] = df.groupby("u")["s"].rank(method="average") * df["y"]
    g = df.groupby("u").agg(n=("y", "size"), pos=("y", "sum"), rpos=("rpos", "sum"))
    g = g[(g["pos"] > 0) & (g["pos"] < g["n"])]
    if g.empty:
        return float("nan")
    neg = g["n"] - g["pos"]
    per_user = (g["rpos"] - g["pos"] * (g["pos"] + 1) / 2) / (g["pos"] * neg)
    return float((per_user * g["n"]).sum() / g["n"].sum())


def domain_metrics(labels: np.ndarray, scores: np.ndarray, users: np.ndarray | None = None) -> dict[str, float]:
    labels = np.asarray(labels)
    out: dict[str, float] = {"auc": auc(labels, scores), "n": int(len(labels))}
    out["logloss"] = float(log_loss(labels, np.clip(scores, 1e-7, 1 - 1e-7), labels=[0, 1])) if len(labels) else float("nan")
    if users is not None:
        out["gauc"] = gauc(labels, scores, users)
    return out


def split_metrics(names: Sequence[str], labels: Sequence[np.ndarray], scores: Sequence[np.ndarray],
                  users: Sequence[np.ndarray] | None = None) -> dict:
    """{"domains": {name: {auc, logloss, n[, gauc]}}, "avg_auc": unweighted mean over domains}.

    avg_auc is the paper's "avg"; a domain whose AUC is undefined (one class only) is left out of
    the mean and listed under "undefined_auc".
    """
    per = {}
    for i, name in enumerate(names):
        per[name] = domain_metrics(labels[i], scores[i], users[i] if users is not None else None)
    defined = [m["auc"] for m in per.values() if not math.isnan(m["auc"])]
    out = {"domains": per, "avg_auc": float(np.mean(defined)) if defined else float("nan")}
    undefined = [n for n, m in per.items() if math.isnan(m["auc"])]
    if undefined:
        out["undefined_auc"] = undefined
    return out
