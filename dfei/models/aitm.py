"""AITM: Xi, Chen, Yan, Zhang, Zhu, Zhuang, Chen. "Modeling the Sequential Dependence among
Audience Multi-step Conversions with Multi-task Learning in Targeted Display Advertising", KDD 2021.
https://doi.org/10.1145/3447548.3467071

Domains as a sequence (dataset order): each domain has a tower q_d = f_d(e) (MLP [128, 64, 32]);
for d > 0 the Adaptive Information Transfer module attends over [q_d, p_{d-1}], where
p_{d-1} = transfer_d(q_{d-1}) carries the previous domain's representation (the paper's AIT with
self-attention over the two inputs, h = 32). As in AITM, domain d's loss also reaches domain d-1's
tower through the transfer (so a step of domain d moves towers d and d-1).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from dfei.models.base import DROPOUT, TOWER, MultiDomainModel, head
from dfei.models.layers import MLP


class AITM(MultiDomainModel):
    def __init__(self, cardinalities, num_domains, attention_dim: int = 32, **kw):
        super().__init__(cardinalities, num_domains, **kw)
        self.towers = nn.ModuleList(MLP(self.embed_output_dim, TOWER, DROPOUT) for _ in range(num_domains))
        self.transfers = nn.ModuleList(nn.Sequential(nn.Linear(32, 32), nn.ReLU()) for _ in range(num_domains))
        self.q = nn.ModuleList(nn.Linear(32, attention_dim) for _ in range(num_domains))
        self.k = nn.ModuleList(nn.Linear(32, attention_dim) for _ in range(num_domains))
        self.v = nn.ModuleList(nn.Linear(32, attention_dim) for _ in range(num_domains))
        self.heads = nn.ModuleList(head(attention_dim) for _ in range(num_domains))
        self.attention_dim = self.representation_dim = attention_dim

    def domain_modules(self, d: int) -> list[nn.Module]:
        return [self.towers[d], self.transfers[d], self.q[d], self.k[d], self.v[d], self.heads[d]]

    def domain_head(self, d: int) -> nn.Module:
        return self.heads[d]

    def represent(self, e: torch.Tensor, d: int) -> torch.Tensor:
        q_d = self.towers[d](e)  # [batch, 32]
        if d == 0:
            z = self.v[d](q_d)
        else:
            prev = self.towers[d - 1](e)
            inputs = torch.stack([q_d, self.transfers[d](prev)], dim=1)  # [batch, 2, 32]
            scores = (self.q[d](inputs) * self.k[d](inputs)).sum(-1) / math.sqrt(self.attention_dim)  # [batch, 2]
            z = (torch.softmax(scores, dim=1).unsqueeze(-1) * self.v[d](inputs)).sum(1)  # [batch, h]
        return z
