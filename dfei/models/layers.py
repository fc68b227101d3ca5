"""Building blocks shared by every model: the feature embedding and the MLP tower."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class FeatureEmbedding(nn.Module):
    """One embedding table per feature, outputs concatenated: e = E(x) (paper Eq. 2).

    Tables are initialised N(0, init_std^2) like the authors' code (std 0.01).
    """

    def __init__(self, cardinalities: Sequence[int], dim: int = 16, init_std: float = 0.01):
        super().__init__()
        if not cardinalities:
            raise ValueError("FeatureEmbedding needs at least one feature")
        if any(int(c) < 1 for c in cardinalities):
            raise ValueError(f"every cardinality must be >= 1, got {list(cardinalities)}")
        self.dim = dim
        self.tables = nn.ModuleList(nn.Embedding(int(c), dim) for c in cardinalities)
        for table in self.tables:
            nn.init.normal_(table.weight, std=init_std)

    @property
    def output_dim(self) -> int:
        return self.dim * len(self.tables)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [batch, n_features] integer ids -> [batch, n_features * dim]
        return torch.cat([table(x[:, j]) for j, table in enumerate(self.tables)], dim=1)


class MLP(nn.Sequential):
    """Linear -> ReLU -> Dropout per layer (paper Table 4: [128, 64, 32], dropout [0.1, 0.2, 0.3])."""

    def __init__(self, input_dim: int, dims: Sequence[int], dropouts: Sequence[float] | None = None):
        dropouts = list(dropouts) if dropouts is not None else [0.0] * len(dims)
        if len(dropouts) != len(dims):
            raise ValueError(f"{len(dims)} layer sizes but {len(dropouts)} dropout rates")
        layers: list[nn.Module] = []
        for dim, p in zip(dims, dropouts):
            layers += [nn.Linear(input_dim, dim), nn.ReLU()]
            if p > 0:
                layers.append(nn.Dropout(p))
            input_dim = dim
        super().__init__(*layers)
        self.output_dim = input_dim
