"""What every multi-domain model shares: the embedding, the shared/domain parameter split, the head,
and mixed-domain batches.

A model implements `forward_domain(e, d) -> logits` for a batch of one domain (Algorithm 1's
sequential step) and `domain_modules(d)` (the modules only domain d uses: they learn at lr; all
other parameters are shared and learn at lr * shared_lr_scale). Mixed-domain batches (inference)
are split by domain with index_select, one call per present domain.

`DomainModel` is what every registered model declares to the trainer, warm start and export; they
use nothing else of a model.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from dfei.models.layers import MLP, FeatureEmbedding, route_by_domain
from dfei.models.options import DROPOUT, TOWER  # noqa: F401 (the baselines' sizes, imported from here)


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


class DomainModel(PredictProba):
    """The declared interface of a registered model (an nn.Module with an `embedding`).

    Parameter groups (Algorithm 1): `shared_parameters()` learn at lr * shared_lr_scale,
    `domain_parameters(d)` at lr. Per-domain state (warm start over new or dropped domains):
    `per_domain_modules`, the names of the ModuleLists indexed by domain, and `per_domain_rows`, the
    state-dict tensors with one row per domain; None: the model has state sized by the number of
    domains elsewhere (gates, experts), so its domains cannot change between runs. `accepts_groups`:
    forward(x, domain, groups=) takes a fused step's DomainGroups. The rest are methods below.
    """

    per_domain_modules: tuple[str, ...] | None = None
    per_domain_rows: tuple[str, ...] = ()
    accepts_groups = False

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        raise NotImplementedError

    def domain_parameters(self, d: int) -> Iterator[nn.Parameter]:
        raise NotImplementedError

    def domain_features(self) -> torch.Tensor | None:
        """The domain feature buffer v [D, dim] (DFE, Eq. 4), or None for a model without DFE."""
        return None

    def compilable_layers(self) -> list[nn.Module]:
        """One module of each dense layer plan `--compile` compiles (dfei.train.compiled), [] when the
        model has no compiled path; set_layer_runner then installs the compiled function."""
        return []

    def set_layer_runner(self, runner) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no compiled path")

    def use_row_sparse_embedding(self, enabled: bool) -> None:
        """Row-sparse embedding gradients (the lazy Adam's rows) when enabled, dense otherwise."""
        self.embedding.sparse = enabled


class MultiDomainModel(DomainModel, nn.Module):
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
        """Every parameter no domain owns (domain_modules)."""
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
