"""Name -> model builder, so trainers and tests can iterate over every model."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from dfei.models.aitm import AITM
from dfei.models.dfei import DFEI, DFEIConfig
from dfei.models.hinet import HiNet
from dfei.models.hmoe import HMoE
from dfei.models.mlp import MLPModel
from dfei.models.mmoe import MMoE
from dfei.models.pepnet import PEPNet
from dfei.models.ple import PLE
from dfei.models.plugin import DFEIPlugin
from dfei.models.star import STAR

ModelBuilder = Callable[..., nn.Module]
DFEI_ONLY = ("alpha", "k", "tower_dims", "tower_dropouts", "use_dfe", "use_dfi", "head_dims", "domain_norm",
             "dfe_input")


def _dfei(**overrides: Any) -> ModelBuilder:
    def build(cardinalities: list[int], num_domains: int, **kwargs: Any) -> DFEI:
        return DFEI(DFEIConfig(cardinalities=cardinalities, num_domains=num_domains, **{**kwargs, **overrides}))

    return build


def _baseline(cls) -> ModelBuilder:
    def build(cardinalities: list[int], num_domains: int, **kwargs: Any) -> nn.Module:
        # baselines use paper Table 4's sizes; DFEI's own knobs (alpha, k, ...) do not apply
        return cls(cardinalities, num_domains, **{k: v for k, v in kwargs.items() if k not in DFEI_ONLY})

    return build


MODELS: dict[str, ModelBuilder] = {
    "mlp": _baseline(MLPModel),
    "mmoe": _baseline(MMoE),
    "ple": _baseline(PLE),
    "aitm": _baseline(AITM),
    "hmoe": _baseline(HMoE),
    "star": _baseline(STAR),
    "pepnet": _baseline(PEPNet),
    "hinet": _baseline(HiNet),
    "dfei": _dfei(),
    "dfei_wo_dfi": _dfei(use_dfi=False),  # paper Fig. 2a "w/o DFI"
    "dfei_wo_dfei": _dfei(use_dfe=False, use_dfi=False),  # paper Fig. 2a "w/o DFEI"
}
BASELINES = ("mlp", "mmoe", "ple", "aitm", "hmoe", "star", "pepnet", "hinet")


def _plugin(cls) -> ModelBuilder:
    def build(cardinalities: list[int], num_domains: int, **kwargs: Any) -> DFEIPlugin:
        backbone = cls(cardinalities, num_domains, **{k: v for k, v in kwargs.items() if k not in DFEI_ONLY})
        return DFEIPlugin(backbone, alpha=kwargs.get("alpha", 0.9), k=kwargs.get("k", 32))

    return build


# `<backbone>+dfei`: DFE + DFI on every backbone with a per-domain representation (not MLP)
for _name, _cls in (("mmoe", MMoE), ("ple", PLE), ("aitm", AITM), ("hmoe", HMoE), ("star", STAR),
                    ("pepnet", PEPNet), ("hinet", HiNet)):
    MODELS[f"{_name}+dfei"] = _plugin(_cls)


# the training settings each kind of model does not read (the rest it does: embed_dim, embed_init_std)
_DFEI_STRUCTURE = ("tower_dims", "tower_dropouts", "domain_norm", "dfe_input")
UNREAD_SETTINGS: dict[str, tuple[str, ...]] = {
    **{name: ("alpha", "k", *_DFEI_STRUCTURE) for name in BASELINES},  # paper Table 4's sizes, no DFE/DFI
    **{f"{name}+dfei": _DFEI_STRUCTURE for name in BASELINES if name != "mlp"},  # the backbone's own towers
    "dfei": (), "dfei_wo_dfi": ("k",), "dfei_wo_dfei": ("alpha", "k"),  # k sizes DFI, alpha is DFE's decay
}


def unread_settings(name: str) -> tuple[str, ...]:
    """The training settings (TrainConfig field names) model `name` does not read: a value other
    than the default for one of them would be recorded as if it had been used."""
    return UNREAD_SETTINGS.get(name, ())


def build_model(name: str, cardinalities: list[int], num_domains: int, **kwargs: Any) -> nn.Module:
    """Build a registered model; kwargs are the model's config fields (alpha, k, ...)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[name](cardinalities, num_domains, **kwargs)
