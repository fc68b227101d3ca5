"""MLP: all domains treated as one (the paper's single-task baseline, §4.4).

One shared tower [128, 64, 32] (ReLU, dropout [0.1, 0.2, 0.3]) and one head; no parameter is
domain-specific, so every parameter learns at lr * shared_lr_scale under Algorithm 1.
"""
from __future__ import annotations

import torch

from dfei.models.base import DROPOUT, TOWER, MultiDomainModel, head
from dfei.models.layers import MLP


class MLPModel(MultiDomainModel):
    def __init__(self, cardinalities, num_domains, **kw):
        super().__init__(cardinalities, num_domains, **kw)
        self.tower = MLP(self.embed_output_dim, TOWER, DROPOUT)
        self.head = head(self.tower.output_dim)

    def forward_domain(self, e: torch.Tensor, d: int) -> torch.Tensor:
        return self.head(self.tower(e)).squeeze(1)  # [batch]
