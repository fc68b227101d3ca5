"""Building a registered model from a run's settings: training, warm start, batch inference and
export all build their model here."""
from __future__ import annotations

from typing import Any

from torch import nn

from dfei.models.registry import build_model, entry


def model_from_config(cfg: Any, spec: Any) -> nn.Module:
    """The model `cfg` (a TrainConfig: `model` and the model options) describes for the features and
    domains of `spec` (a DatasetSpec: cardinalities, num_domains), freshly initialised from torch's
    current RNG state. Passes the options the model reads (dfei.models.registry), nothing else."""
    return build_model(cfg.model, spec.cardinalities, spec.num_domains,
                       **read_options(cfg))


def read_options(cfg: Any) -> dict[str, Any]:
    """The model options model `cfg.model` reads, with cfg's values: what a run's exports record."""
    return {option: getattr(cfg, option) for option in entry(cfg.model).reads}
