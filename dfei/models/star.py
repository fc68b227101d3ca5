"""STAR: Sheng, Zhao, Zhang, Li, Zheng, Zhu, Fan, Liu, Zhu. "One Model to Serve All: Star Topology
Adaptive Recommender for Multi-Domain CTR Prediction", CIKM 2021. https://doi.org/10.1145/3459637.3481941

- Partitioned normalization (PN) of the embedding: batch statistics per domain (running statistics
  per domain at inference, momentum 0.1, set by the domain's first batch); scale gamma * gamma_d,
  shift beta + beta_d. Under DDP the batch statistics are the global batch's (one all-reduce of
  per-rank sums, as SyncBatchNorm; GlobalBatchStatistics), so the running statistics stay equal on
  every rank and N workers compute what one worker computes on the same global batch.
- Star-topology FCN [128, 64, 32]: layer weights W = W_shared (elementwise *) W_d, bias b_shared + b_d
  (W_d initialised to ones, so every domain starts at the shared network).
- Auxiliary network: an MLP [64, 32] over [domain embedding, e] whose logit is added.
Each domain's W_d, b_d, gamma_d, beta_d and embedding live in that domain's own module, so they
learn at lr and only when their domain is trained.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from dfei.models.base import DROPOUT, TOWER, MultiDomainModel, head
from dfei.models.layers import MLP, Dropout, GlobalBatchStatistics
from dfei.models.norm import EPS, partitioned_statistics


class StarDomain(nn.Module):
    """Domain d's own parameters: PN scale/shift, per-layer W_d and b_d, its embedding."""

    def __init__(self, sizes: list[int], embed_dim: int = 16):
        super().__init__()
        self.gamma, self.beta = nn.Parameter(torch.ones(sizes[0])), nn.Parameter(torch.zeros(sizes[0]))
        self.w = nn.ParameterList(nn.Parameter(torch.ones(a, b)) for a, b in zip(sizes, sizes[1:]))
        self.b = nn.ParameterList(nn.Parameter(torch.zeros(b)) for b in sizes[1:])
        self.embedding = nn.Parameter(torch.randn(embed_dim) * 0.01)


class STAR(GlobalBatchStatistics, MultiDomainModel):
    def __init__(self, cardinalities, num_domains, aux_dims: tuple[int, ...] = (64, 32), momentum: float = 0.1,
                 **kw):
        super().__init__(cardinalities, num_domains, **kw)
        dim = self.embed_output_dim
        sizes = [dim] + TOWER
        self.gamma, self.beta = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(num_domains, dim))
        self.register_buffer("running_var", torch.ones(num_domains, dim))
        self.register_buffer("stats_initialized", torch.zeros(num_domains, dtype=torch.bool))
        self.momentum = momentum
        self.w = nn.ParameterList(
            nn.Parameter(torch.empty(a, b).uniform_(-1 / math.sqrt(a), 1 / math.sqrt(a))) for a, b in zip(sizes, sizes[1:]))
        self.b = nn.ParameterList(nn.Parameter(torch.zeros(b)) for b in sizes[1:])
        self.domains = nn.ModuleList(StarDomain(sizes) for _ in range(num_domains))
        self.dropouts = nn.ModuleList(Dropout(p) for p in DROPOUT)
        self.head = head(TOWER[-1])
        self.aux = nn.Sequential(MLP(dim + 16, list(aux_dims)), nn.Linear(aux_dims[-1], 1))

    def domain_modules(self, d: int) -> list[nn.Module]:
        return [self.domains[d]]

    def _partitioned_norm(self, e: torch.Tensor, d: int) -> torch.Tensor:
        # e: [batch, dim] rows of domain d -> normalised [batch, dim]
        mean, var = partitioned_statistics(e, self.running_mean[d], self.running_var[d], self.stats_initialized[d],
                                           self.momentum, self.training, self.global_sums)
        dom = self.domains[d]
        return (e - mean) / torch.sqrt(var + EPS) * (self.gamma * dom.gamma) + (self.beta + dom.beta)

    representation_dim = TOWER[-1]

    def represent(self, e: torch.Tensor, d: int) -> torch.Tensor:
        """The star-topology FCN's output for domain d."""
        dom = self.domains[d]
        h = self._partitioned_norm(e, d)  # [batch, F * 16]
        for w, b, w_d, b_d, drop in zip(self.w, self.b, dom.w, dom.b, self.dropouts):
            h = drop(torch.relu(h @ (w * w_d) + b + b_d))  # star topology FCN
        return h  # [batch, 32]

    def forward_domain(self, e: torch.Tensor, d: int) -> torch.Tensor:
        aux_in = torch.cat([self.domains[d].embedding.expand(e.shape[0], -1), e], dim=1)
        return (self.head(self.represent(e, d)) + self.aux(aux_in)).squeeze(1)
