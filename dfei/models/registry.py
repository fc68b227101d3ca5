"""Name -> model builder, so trainers and tests can iterate over every model."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from dfei.models.dfei import DFEI, DFEIConfig

ModelBuilder = Callable[..., nn.Module]


def _dfei(**overrides: Any) -> ModelBuilder:
    def build(cardinalities: list[int], num_domains: int, **kwargs: Any) -> DFEI:
        return DFEI(DFEIConfig(cardinalities=cardinalities, num_domains=num_domains, **{**kwargs, **overrides}))

    return build


MODELS: dict[str, ModelBuilder] = {
    "dfei": _dfei(),
    "dfei_wo_dfi": _dfei(use_dfi=False),  # paper Fig. 2a "w/o DFI"
    "dfei_wo_dfei": _dfei(use_dfe=False, use_dfi=False),  # paper Fig. 2a "w/o DFEI"
}


def build_model(name: str, cardinalities: list[int], num_domains: int, **kwargs: Any) -> nn.Module:
    """Build a registered model; kwargs are the model's config fields (alpha, k, ...)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[name](cardinalities, num_domains, **kwargs)
