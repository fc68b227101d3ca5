from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dfei.eval.metrics import auc, domain_metrics, gauc, split_metrics


def test_gauc_is_the_impression_weighted_mean_of_per_user_auc():
    rng = np.random.default_rng(0)
    users = rng.integers(1, 31, 2000)  # 0 is the OOV id, left out by default
    y = rng.integers(0, 2, 2000)
    s = np.round(rng.random(2000) + 0.3 * y, 2)  # rounding makes ties
    num = den = 0.0
    for u in np.unique(users):
        m = users == u
        if 0 < y[m].sum() < m.sum():
            num += roc_auc_score(y[m], s[m]) * m.sum()
            den += m.sum()
    assert gauc(y, s, users) == pytest.approx(num / den, abs=1e-12)


def test_split_metrics_avg_is_the_unweighted_mean_and_skips_undefined_domains():
    rng = np.random.default_rng(1)
    big_y, big_s = rng.integers(0, 2, 5000), rng.random(5000)
    small_y = np.array([0, 1, 1, 0])
    small_s = np.array([0.1, 0.9, 0.8, 0.2])
    out = split_metrics(["A", "B", "C"], [big_y, small_y, np.zeros(3)], [big_s, small_s, np.ones(3) * 0.2])
    assert out["domains"]["B"]["auc"] == 1.0 and out["domains"]["A"]["n"] == 5000
    assert out["avg_auc"] == pytest.approx((roc_auc_score(big_y, big_s) + 1.0) / 2)
    assert out["undefined_auc"] == ["C"] and math.isnan(out["domains"]["C"]["auc"])
    assert math.isnan(auc(np.ones(4), np.ones(4)))
    assert domain_metrics(small_y, small_s)["logloss"] < 0.3


def test_gauc_leaves_out_the_oov_user_id_0():
    y = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    s = np.array([0.1, 0.9, 0.2, 0.8, 0.1, 0.9, 0.3, 0.2])
    users = np.array([1, 1, 2, 2, 0, 0, 0, 0])  # users 1 and 2 ranked perfectly; 0 = all unseen users
    assert gauc(y, s, users) == 1.0
    assert gauc(y, s, users, ignore_user=None) < 1.0
