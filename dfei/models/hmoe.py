"""HMoE: Li, Chen, Huang, Zhang, Liu, Wang. "Improving Multi-Scenario Learning to Rank in E-commerce
by Exploiting Task Relationships in the Label Space", CIKM 2020. https://doi.org/10.1145/3340531.3412713

Scenario-aware MoE: shared experts (n_experts = 4, MLP [128, 64, 32]) mixed by a per-domain gate
(as MMoE) into every domain's tower; then, in the label space, domain d's logit is a gated sum of
all domains' tower outputs, sum_j g_dj(e) * t_j, where the other domains' outputs are used with
a stopped gradient (the paper's trick: scenario d's data only trains scenario d's tower).
"""
from __future__ import annotations

import torch
from torch import nn

from dfei.models.base import MultiDomainModel, experts, head, mix


class HMoE(MultiDomainModel):
    def __init__(self, cardinalities, num_domains, n_experts: int = 4, **kw):
        super().__init__(cardinalities, num_domains, **kw)
        dim = self.embed_output_dim
        self.experts = experts(n_experts, dim)
        self.gates = nn.ModuleList(nn.Linear(dim, n_experts) for _ in range(num_domains))
        self.towers = nn.ModuleList(head(32) for _ in range(num_domains))
        self.label_gates = nn.ModuleList(nn.Linear(dim, num_domains) for _ in range(num_domains))

    def domain_modules(self, d: int) -> list[nn.Module]:
        return [self.gates[d], self.towers[d], self.label_gates[d]]

    representation_dim = 32

    def represent(self, e: torch.Tensor, d: int) -> torch.Tensor:
        """Domain d's gated expert mix (its tower's input)."""
        return mix([x(e) for x in self.experts], self.gates[d](e))  # [batch, 32]

    def forward_domain(self, e: torch.Tensor, d: int) -> torch.Tensor:
        outs = [x(e) for x in self.experts]
        logits = []
        for j in range(self.num_domains):
            t_j = self.towers[j](mix(outs, self.gates[j](e))).squeeze(1)  # [batch]
            logits.append(t_j if j == d else t_j.detach())
        weights = torch.softmax(self.label_gates[d](e), dim=1)  # [batch, D]
        return (weights * torch.stack(logits, dim=1)).sum(1)
