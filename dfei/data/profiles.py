"""Domain tables of the paper's two datasets, for the synthetic generator.

Row counts are thousands of rows (paper Table 1 and Table 2); CTR in percent.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DomainProfile:
    name: str
    train_k: float
    valid_k: float
    test_k: float
    ctr_pct: float

    def rows(self, split: str, scale: float) -> int:
        k = {"train": self.train_k, "valid": self.valid_k, "test": self.test_k}[split]
        return max(1, round(k * 1000 * scale))


def _table(names, train, valid, test, ctr) -> list[DomainProfile]:
    return [DomainProfile(*row) for row in zip(names, train, valid, test, ctr)]


# Table 1: industrial dataset (Dianping), 21 domains sorted by CTR.
INDUSTRIAL = _table(
    [f"A{i}" for i in range(1, 22)],
    [2514, 1881, 83, 18, 83, 49, 328, 832, 213, 51, 146, 15, 292, 91, 9, 20, 66, 28625, 35, 2135, 127],
    [313, 235, 11, 2, 10, 6, 41, 104, 27, 6, 18, 2, 37, 11, 1, 2, 8, 3587, 4, 266, 16],
    [314, 235, 11, 2, 10, 6, 41, 104, 27, 6, 18, 2, 37, 11, 1, 3, 8, 3579, 4, 267, 16],
    [1.09, 1.9, 2.13, 3.09, 3.47, 3.59, 3.67, 3.83, 4.6, 5.39, 5.4, 5.76, 5.98, 6.46, 6.79, 6.98,
     7.46, 7.58, 7.84, 7.86, 9.45],
)

# Table 2: public dataset (KuaiRand-1K, tab in [0, 1, 2, 4, 5, 6]).
PUBLIC = _table(
    [f"B{i}" for i in range(1, 7)],
    [857, 2615, 148, 326, 5, 50],
    [209, 671, 35, 77, 2, 17],
    [1341, 4431, 219, 493, 9, 117],
    [12.00, 44.54, 39.09, 56.05, 21.34, 18.10],
)

PROFILES: dict[str, list[DomainProfile]] = {"industrial": INDUSTRIAL, "public": PUBLIC}
SPLITS = ("train", "valid", "test")
