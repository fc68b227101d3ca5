"""Building a registered model from a run's settings: training, warm start, batch inference and
export all build their model here."""
from __future__ import annotations

from typing import Any

from torch import nn

from dfei.models.registry import build_model


def model_from_config(cfg: Any, spec: Any) -> nn.Module:
    """The model `cfg` (a TrainConfig) describes for the features and domains of `spec` (a
    DatasetSpec: cardinalities, num_domains), freshly initialised from torch's current RNG state."""
    return build_model(cfg.model, spec.cardinalities, spec.num_domains, alpha=cfg.alpha, k=cfg.k,
                       embed_dim=cfg.embed_dim, tower_dims=list(cfg.tower_dims),
                       tower_dropouts=list(cfg.tower_dropouts), embed_init_std=cfg.embed_init_std,
                       **({"domain_norm": True} if cfg.domain_norm else {}),
                       **({"dfe_input": cfg.dfe_input} if cfg.dfe_input != "domain" else {}))
