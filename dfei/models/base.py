"""What every multi-domain model shares: the embedding, the shared/domain parameter split, the head,
and mixed-domain batches.

A model implements `forward_domain(e, d) -> logits` for a batch of one domain (Algorithm 1's
sequential step) and `domain_modules(d)` (the modules only domain d uses: they learn at lr; all
other parameters are shared and learn at lr * shared_lr_scale). Mixed-domain batches (inference)
are split by domain with index_select, one call per present domain.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from dfei.models.layers import MLP, FeatureEmbedding, route_by_domain

TOWER = [128, 64, 32]  # paper Table 4: towers and experts
DROPOUT = [0.1, 0.2, 0.3]


def check_domain_indices(present: list[int], num_domains: int) -> None:
    """Raise IndexError unless every model domain index in `present` is in [0, num_domains): a
    negative index would otherwise pick another domain's tower (Python indexing from the end)."""
    bad = [d for d in present if not 0 <= d < num_domains]
    if bad:
        raise IndexError(f"domain index {bad[0]} outside [0, {num_domains}); map dataset domain ids to model "
                         "indices with DatasetSpec.domain_index_of")


def head(input_dim: int) -> nn.Sequential:
    """The output head every model gets: Dense(32, ReLU) -> Dense(1), as DFEI's."""
    mlp = MLP(input_dim, [32])
    return nn.Sequential(mlp, nn.Linear(mlp.output_dim, 1))


class PredictProba:
    """`predict_proba(x, domain)`: CTR in (0, 1) in eval mode (DFE buffers frozen), mode restored."""

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, domain: int | torch.Tensor) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            return torch.sigmoid(self(x, domain))
        finally:
            self.train(was_training)


class MultiDomainModel(PredictProba, nn.Module):
    def __init__(self, cardinalities: Sequence[int], num_domains: int, embed_dim: int = 16,
                 embed_init_std: float = 0.01):
        super().__init__()
        if num_domains < 1:
            raise ValueError(f"num_domains must be >= 1, got {num_domains}")
        self.num_domains = num_domains
        self.embedding = FeatureEmbedding(cardinalities, embed_dim, embed_init_std)

    @property
    def embed_output_dim(self) -> int:
        return self.embedding.output_dim

    def domain_modules(self, d: int) -> list[nn.Module]:
        return []

    def domain_parameters(self, d: int) -> Iterator[nn.Parameter]:
        for module in self.domain_modules(d):
            yield from module.parameters()

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        owned = {id(p) for d in range(self.num_domains) for p in self.domain_parameters(d)}
        return (p for p in self.parameters() if id(p) not in owned)

    # Backbones with a per-domain representation (the tensor their head reads) expose it, so the
    # DFEI plug-in (dfei/models/plugin.py) can use it as u_d.
    representation_dim: int | None = None

    def represent(self, e: torch.Tensor, d: int) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no per-domain representation")

    def domain_head(self, d: int) -> nn.Module:
        raise NotImplementedError

    def forward_domain(self, e: torch.Tensor, d: int) -> torch.Tensor:
        return self.domain_head(d)(self.represent(e, d)).squeeze(1)  # [batch]

    def forward(self, x: torch.Tensor, domain: int | torch.Tensor) -> torch.Tensor:
        # x: [batch, n_features] -> logits [batch]
        e = self.embedding(x)  # [batch, F * embed_dim]
        if isinstance(domain, int):
            if not 0 <= domain < self.num_domains:
                raise IndexError(f"domain index {domain} outside [0, {self.num_domains})")
            return self.forward_domain(e, domain)
        present = torch.unique(domain).tolist()
        check_domain_indices(present, self.num_domains)
        return route_by_domain(self.forward_domain, e, domain, present, out=e.new_empty(e.shape[0]))


def experts(n: int, input_dim: int) -> nn.ModuleList:
    return nn.ModuleList(MLP(input_dim, TOWER, DROPOUT) for _ in range(n))


def mix(outputs: list[torch.Tensor], gate_logits: torch.Tensor) -> torch.Tensor:
    """Softmax-gated sum of expert outputs: [batch, n] weights x n x [batch, dim] -> [batch, dim]."""
    weights = torch.softmax(gate_logits, dim=1)  # [batch, n]
    return torch.einsum("bn,bnd->bd", weights, torch.stack(outputs, dim=1))
