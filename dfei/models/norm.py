"""Partitioned normalisation (STAR, Sheng et al. CIKM 2021, §3.2): batch normalisation whose
statistics are kept per domain, with a scale gamma * gamma_d and a shift beta + beta_d.

`partitioned_statistics` is the statistics step STAR and DFEI's `--domain-norm` share; the affine
parameters stay with their owner (STAR keeps its historical parameter and buffer names).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dfei.models.layers import GlobalBatchStatistics

EPS = 1e-5


def partitioned_statistics(e: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor,
                           initialized: torch.Tensor, momentum: float, training: bool,
                           global_sums: Callable) -> tuple[torch.Tensor, torch.Tensor]:
    """e: [batch, dim] rows of one domain d; running_mean / running_var: [dim] views of domain d's
    running statistics, initialized: a 0-d bool view of its flag -> (mean [dim], var [dim]).

    Training: the statistics are the global batch's (every rank's rows through `global_sums`, as
    SyncBatchNorm), and the running ones (the views, in place) move to them with `momentum`; the
    domain's first batch sets them (embeddings start tiny). A 1-row global batch has no variance:
    the running statistics serve. Eval: the running statistics.
    """
    running = running_mean.clone(), running_var.clone()
    if not training:
        return running
    dim = e.shape[1]
    # sums of (e - shift) and its square; the shift (the running mean, equal on every rank) keeps the
    # one-pass variance exact, float64 sums exact even before the shift is near the mean
    c = (e - running[0]).double()
    sums, count = global_sums(torch.cat([c.sum(0), c.square().sum(0)]).unsqueeze(0),
                              c.new_full((1,), float(e.shape[0])))
    n = count[0]
    use_batch = n > 1
    mean_c = sums[0, :dim] / n.clamp(min=1.0)
    var_c = (sums[0, dim:] / n.clamp(min=1.0) - mean_c.square()).clamp(min=0.0)
    mean = torch.where(use_batch, mean_c.to(e.dtype) + running[0], running[0])
    var = torch.where(use_batch, var_c.to(e.dtype), running[1])
    with torch.no_grad():
        rate = torch.where(initialized, momentum, 1.0) * use_batch.to(e.dtype)
        running_mean.lerp_(mean.detach(), rate)
        running_var.lerp_(var.detach(), rate)
        initialized |= use_batch
    return mean, var


class DomainAffine(nn.Module):
    """Domain d's own scale and shift [dim] (learn at the domain lr)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma, self.beta = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))


class PartitionedNorm(GlobalBatchStatistics, nn.Module):
    """STAR's partitioned normalisation of a [batch, dim] input, for DFEI's `domain_norm` option.

    Holds the shared gamma, beta [dim] and the per-domain running statistics [D, dim] (buffers,
    momentum 0.1); the per-domain gamma_d, beta_d live in the caller's per-domain modules so they
    learn at the domain lr. forward(e, d, affine) -> [batch, dim].
    """

    def __init__(self, num_domains: int, dim: int, momentum: float = 0.1):
        super().__init__()
        self.momentum = momentum
        self.gamma, self.beta = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(num_domains, dim))
        self.register_buffer("running_var", torch.ones(num_domains, dim))
        self.register_buffer("initialized", torch.zeros(num_domains, dtype=torch.bool))

    def forward(self, e: torch.Tensor, d: int, affine: DomainAffine) -> torch.Tensor:
        mean, var = partitioned_statistics(e, self.running_mean[d], self.running_var[d], self.initialized[d],
                                           self.momentum, self.training, self.global_sums)
        return (e - mean) / torch.sqrt(var + EPS) * (self.gamma * affine.gamma) + (self.beta + affine.beta)
