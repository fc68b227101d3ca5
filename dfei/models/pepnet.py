"""PEPNet: Chang, Zhang, Fu, Zang, Guan, Lu, Niu, Song, Gai. "PEPNet: Parameter and Embedding
Personalized Network for Infusing with Personalized Prior Information", KDD 2023.
https://doi.org/10.1145/3580305.3599884

- Gate NU: 2 * sigmoid(W2 ReLU(W1 x)) (hidden 64), output in (0, 2).
- EPNet: e' = e * GateNU([domain embedding, stopgrad(e)]) personalises the embedding by domain.
- PPNet: one tower per domain [128, 64, 32]; every hidden layer is scaled by a Gate NU over the
  personalised prior [stopgrad(e), domain embedding] (the paper feeds user/item/author ids; the
  dataset does not mark which features those are, so all feature embeddings serve as the prior).
"""
from __future__ import annotations

import torch
from torch import nn

from dfei.models.base import DROPOUT, TOWER, MultiDomainModel, head
from dfei.models.layers import Dropout


class GateNU(nn.Sequential):
    def __init__(self, in_dim: int, out_dim: int, hidden: int = 64):
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


class PPTower(nn.Module):
    def __init__(self, in_dim: int, prior_dim: int):
        super().__init__()
        sizes = [in_dim] + TOWER
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.gates = nn.ModuleList(GateNU(prior_dim, b) for b in TOWER)
        self.dropouts = nn.ModuleList(Dropout(p) for p in DROPOUT)
        self.head = head(TOWER[-1])

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        for layer, gate, drop in zip(self.layers, self.gates, self.dropouts):
            x = drop(torch.relu(layer(x)) * gate(prior))
        return x  # [batch, 32]


class PEPNet(MultiDomainModel):
    def __init__(self, cardinalities, num_domains, domain_dim: int = 16, **kw):
        super().__init__(cardinalities, num_domains, **kw)
        dim = self.embed_output_dim
        self.domain_embedding = nn.Embedding(num_domains, domain_dim)
        self.epnet = GateNU(dim + domain_dim, dim)
        self.towers = nn.ModuleList(PPTower(dim, dim + domain_dim) for _ in range(num_domains))

    def domain_modules(self, d: int) -> list[nn.Module]:
        return [self.towers[d]]

    representation_dim = TOWER[-1]

    def represent(self, e: torch.Tensor, d: int) -> torch.Tensor:
        dom = self.domain_embedding.weight[d].expand(e.shape[0], -1)  # [batch, 16]
        prior = torch.cat([e.detach(), dom], dim=1)
        e_personal = e * self.epnet(prior)  # EPNet
        return self.towers[d](e_personal, prior)  # PPNet: [batch, 32]

    def domain_head(self, d: int) -> nn.Module:
        return self.towers[d].head
