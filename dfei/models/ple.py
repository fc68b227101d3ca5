"""PLE: Tang, Liu, Zhao, Gong. "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning
(MTL) Model for Personalized Recommendations", RecSys 2020. https://doi.org/10.1145/3383313.3412236

Domains as tasks, one CGC extraction level with n_shared = 1 shared expert and n_specific = 1
expert per domain (MLP [128, 64, 32]; our setting, kept small because industrial data has 21
domains); domain d's gate mixes its own experts with the shared ones; per-domain head.
"""
from __future__ import annotations

import torch
from torch import nn

from dfei.models.base import MultiDomainModel, experts, head, mix


class PLE(MultiDomainModel):
    def __init__(self, cardinalities, num_domains, n_shared: int = 1, n_specific: int = 1, **kw):
        super().__init__(cardinalities, num_domains, **kw)
        dim = self.embed_output_dim
        self.shared_experts = experts(n_shared, dim)
        self.specific_experts = nn.ModuleList(experts(n_specific, dim) for _ in range(num_domains))
        self.gates = nn.ModuleList(nn.Linear(dim, n_shared + n_specific) for _ in range(num_domains))
        self.heads = nn.ModuleList(head(32) for _ in range(num_domains))

    def domain_modules(self, d: int) -> list[nn.Module]:
        return [self.specific_experts[d], self.gates[d], self.heads[d]]

    representation_dim = 32

    def represent(self, e: torch.Tensor, d: int) -> torch.Tensor:
        outputs = [x(e) for x in self.specific_experts[d]] + [x(e) for x in self.shared_experts]
        return mix(outputs, self.gates[d](e))  # [batch, 32]

    def domain_head(self, d: int) -> nn.Module:
        return self.heads[d]
