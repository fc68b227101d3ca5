"""MMoE: Ma, Zhao, Yi, Chen, Hong, Chi. "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts", KDD 2018. https://doi.org/10.1145/3219819.3220007

Adapted to multi-domain as the DFEI paper §4.4 says: domains are tasks. Shared experts
(n_experts = 4, our setting; MLP [128, 64, 32] as Table 4); per-domain softmax gate over the
experts and per-domain head.
"""
from __future__ import annotations

import torch
from torch import nn

from dfei.models.base import MultiDomainModel, experts, head, mix


class MMoE(MultiDomainModel):
    def __init__(self, cardinalities, num_domains, n_experts: int = 4, **kw):
        super().__init__(cardinalities, num_domains, **kw)
        self.experts = experts(n_experts, self.embed_output_dim)
        self.gates = nn.ModuleList(nn.Linear(self.embed_output_dim, n_experts) for _ in range(num_domains))
        self.heads = nn.ModuleList(head(32) for _ in range(num_domains))

    def domain_modules(self, d: int) -> list[nn.Module]:
        return [self.gates[d], self.heads[d]]

    representation_dim = 32

    def represent(self, e: torch.Tensor, d: int) -> torch.Tensor:
        return mix([expert(e) for expert in self.experts], self.gates[d](e))  # [batch, 32]

    def domain_head(self, d: int) -> nn.Module:
        return self.heads[d]
