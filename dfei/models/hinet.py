"""HiNet: Zhou, Cao, Xu, Xiao, Li, Li, Mao, Chen, Sun, Zhou, Zhou. "HiNet: Novel Multi-Scenario &
Multi-Task Learning with Hierarchical Information Extraction", ICDE 2023. https://arxiv.org/abs/2303.06095

Scenario extraction layer, adapted to one task per domain:
- shared experts (n_shared = 2) mixed by a per-domain gate;
- scenario-specific experts (one per domain), MLP [128, 64, 32];
- scenario-aware attentive network (SAN): domain d attends over the *other* domains' specific
  experts with weights softmax(W_d [domain embedding]) and adds what it gathers;
then [shared mix, specific_d, SAN_d] -> domain tower [64, 32] -> head.
"""
from __future__ import annotations

import torch
from torch import nn

from dfei.models.base import MultiDomainModel, experts, head, mix
from dfei.models.layers import MLP


class HiNet(MultiDomainModel):
    def __init__(self, cardinalities, num_domains, n_shared: int = 2, domain_dim: int = 16, **kw):
        super().__init__(cardinalities, num_domains, **kw)
        dim = self.embed_output_dim
        self.shared_experts = experts(n_shared, dim)
        self.specific_experts = experts(num_domains, dim)
        self.gates = nn.ModuleList(nn.Linear(dim, n_shared) for _ in range(num_domains))
        self.domain_embedding = nn.Embedding(num_domains, domain_dim)
        self.san = nn.ModuleList(nn.Linear(domain_dim, max(num_domains - 1, 1)) for _ in range(num_domains))
        self.towers = nn.ModuleList(nn.Sequential(MLP(3 * 32, [64, 32]), head(32)) for _ in range(num_domains))

    def domain_modules(self, d: int) -> list[nn.Module]:
        return [self.specific_experts[d], self.gates[d], self.san[d], self.towers[d]]

    representation_dim = 32

    def domain_head(self, d: int) -> nn.Module:
        return self.towers[d][1]

    def represent(self, e: torch.Tensor, d: int) -> torch.Tensor:
        shared = mix([x(e) for x in self.shared_experts], self.gates[d](e))  # [batch, 32]
        specific = self.specific_experts[d](e)
        others = [self.specific_experts[j](e) for j in range(self.num_domains) if j != d]
        if others:
            w = torch.softmax(self.san[d](self.domain_embedding.weight[d]), dim=0)  # [D - 1]
            san = torch.einsum("n,nbd->bd", w, torch.stack(others))
        else:
            san = torch.zeros_like(specific)
        return self.towers[d][0](torch.cat([shared, specific, san], dim=1))  # [batch, 32]
