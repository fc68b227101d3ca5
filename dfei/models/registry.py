"""Name -> registered model: how it is built and which model options it reads.

A model option (dfei.models.options) a model does not read is refused by name wherever a run sets it
(TrainConfig, build_model), never dropped silently. A new model is one file and one line in MODELS.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from dfei.models.aitm import AITM
from dfei.models.dfei import DFEI, DFEIConfig
from dfei.models.hinet import HiNet
from dfei.models.hmoe import HMoE
from dfei.models.mlp import MLPModel
from dfei.models.mmoe import MMoE
from dfei.models.options import EMBEDDING_OPTIONS, OPTIONS, default
from dfei.models.pepnet import PEPNet
from dfei.models.ple import PLE
from dfei.models.plugin import DFEIPlugin
from dfei.models.star import STAR


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: `build(cardinalities, num_domains, **options)` with exactly the options in
    `reads` (dfei.models.options.OPTIONS names), building a `cls` (whose class attributes declare the rest:
    dfei.models.base.DomainModel); `family`: "baseline", "dfei" (DFEIConfig's models: DFEI and its
    ablations) or "plugin" (`<backbone>+dfei`)."""

    build: Callable[..., nn.Module]
    reads: tuple[str, ...]
    family: str
    cls: type


def baseline(cls: type) -> ModelEntry:
    """A baseline: paper Table 4's sizes, no DFE/DFI; reads the embedding's options only."""
    return ModelEntry(lambda cardinalities, num_domains, **options: cls(cardinalities, num_domains, **options),
                      EMBEDDING_OPTIONS, "baseline", cls)


def dfei(use_dfe: bool = True, use_dfi: bool = True) -> ModelEntry:
    """DFEI (or an ablation, paper Fig. 2a): reads every model option but those of a module it lacks
    (k sizes DFI; alpha and dfe_input are DFE's)."""
    unread = (() if use_dfi else ("k",)) + (() if use_dfe else ("alpha", "dfe_input"))

    def build(cardinalities: list[int], num_domains: int, **options: Any) -> DFEI:
        return DFEI(DFEIConfig(cardinalities=cardinalities, num_domains=num_domains, use_dfe=use_dfe,
                               use_dfi=use_dfi, **options))

    return ModelEntry(build, tuple(o for o in OPTIONS if o not in unread), "dfei", DFEI)


def plugin(cls: type) -> ModelEntry:
    """`<backbone>+dfei`: DFE + DFI on the backbone's per-domain representation; the backbone keeps its
    own towers, so the plug-in reads the embedding's options, alpha and k."""
    def build(cardinalities: list[int], num_domains: int, alpha: float = default("alpha"), k: int = default("k"),
              **options: Any) -> DFEIPlugin:
        return DFEIPlugin(cls(cardinalities, num_domains, **options), alpha=alpha, k=k)

    return ModelEntry(build, (*EMBEDDING_OPTIONS, "alpha", "k"), "plugin", DFEIPlugin)


_BACKBONES = {"mmoe": MMoE, "ple": PLE, "aitm": AITM, "hmoe": HMoE, "star": STAR, "pepnet": PEPNet, "hinet": HiNet}
MODELS: dict[str, ModelEntry] = {
    "mlp": baseline(MLPModel),
    **{name: baseline(cls) for name, cls in _BACKBONES.items()},
    "dfei": dfei(),
    "dfei_wo_dfi": dfei(use_dfi=False),  # paper Fig. 2a "w/o DFI"
    "dfei_wo_dfei": dfei(use_dfe=False, use_dfi=False),  # paper Fig. 2a "w/o DFEI"
    # every backbone with a per-domain representation (MLP has none)
    **{f"{name}+dfei": plugin(cls) for name, cls in _BACKBONES.items()},
}
BASELINES = tuple(name for name, entry in MODELS.items() if entry.family == "baseline")
ABLATIONS = ("dfei_wo_dfi", "dfei_wo_dfei")


def entry(name: str) -> ModelEntry:
    """The registered model `name`; ValueError naming the registered ones when there is none."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def unread_settings(name: str) -> tuple[str, ...]:
    """The model options model `name` does not read: a value other than the default for one of them
    would be recorded as if it had been used."""
    reads = entry(name).reads
    return tuple(o for o in OPTIONS if o not in reads)


def unread_values(name: str, options: dict[str, Any]) -> list[str]:
    """`option=value` for each option in `options` that model `name` does not read and that is not at
    its default (the settings a run must not record as used)."""
    return [f"{o}={options[o]!r}" for o in unread_settings(name) if o in options and options[o] != default(o)]


def build_model(name: str, cardinalities: list[int], num_domains: int, **options: Any) -> nn.Module:
    """Build registered model `name` for `cardinalities` (one per feature) and `num_domains` domains;
    `options` are model options (dfei.models.options). ValueError for an unknown model, an unknown
    option, or an option the model does not read set to another value than its default."""
    model = entry(name)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown}; options: {', '.join(OPTIONS)}")
    unread = unread_values(name, options)
    if unread:
        raise ValueError(f"model {name!r} does not read {', '.join(unread)}")
    return model.build(list(cardinalities), num_domains, **{o: options[o] for o in model.reads if o in options})
