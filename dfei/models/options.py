"""The model options a run can set, declared once: kind, default, range, help, and whether the option
fixes the architecture. Defaults are the paper's (Table 4, §4.2; DFEI's towers [128, 64, 32], dropout
[0.1, 0.2, 0.3], alpha 0.9, k 32) and the authors' (embedding 16, init std 0.01).

`OPTIONS` is DFEI's configuration (DFEIConfig takes every option) and the model half of TrainConfig
(dfei.config builds a validated setting and a command-line flag from each). Each registered model
reads a subset of the options (dfei.models.registry: a baseline only the embedding's;
`<backbone>+dfei` also alpha and k): a run that sets an option its model does not read is refused
naming it. A new DFEI option is one entry here plus its use in dfei/models/dfei.py: the registry,
TrainConfig, its flag, warm start's architecture check and the export's record derive from it.

Plain Python, no pydantic: the models import on a host with torch alone (a bare GPU machine);
`check_options` applies the declared ranges there, TrainConfig applies them through pydantic.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

DFE_INPUTS = ("domain", "shared")
TOWER = [128, 64, 32]  # paper Table 4: DFEI's towers, and every baseline's towers and experts
DROPOUT = [0.1, 0.2, 0.3]


@dataclass(frozen=True)
class Option:
    """One model option. kind: "int", "float", "bool", "choice" (one of `choices`), "int_list" or
    "float_list" (comma-separated on the command line; the bounds apply to each item, min_length
    to the list). Bounds: ge, gt, le, lt. architecture: the option fixes the network's shape or
    what its state means (a checkpoint continues only with the same value)."""

    kind: str
    default: Any
    help: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] = ()
    min_length: int | None = None
    architecture: bool = False


OPTIONS: dict[str, Option] = {
    "alpha": Option("float", 0.9, "DFE decay coefficient of the EMA of domain features", ge=0.0, le=1.0),
    "k": Option("int", 32, "DFI attention dimension", ge=1, architecture=True),
    "embed_dim": Option("int", 16, "embedding size per feature", ge=1, architecture=True),
    "embed_init_std": Option("float", 0.01, "std of the embedding rows' normal initialisation, every model "
                                            "(authors: 0.01)", gt=0),
    "domain_norm": Option(
        "bool", False, "DFEI models only, not in the paper: STAR's partitioned normalisation (per-domain batch "
        "statistics, scale gamma*gamma_d, shift beta+beta_d) of the shared embedding before the towers, DFE and "
        "DFI", architecture=True),
    "dfe_input": Option(
        "choice", "domain", "DFEI models only: v_d is the EMA of the batch mean of the domain tower's u_d (domain, "
        "paper Eq. 4) or of the shared tower's output s over domain d's rows (shared, not in the paper)",
        choices=DFE_INPUTS, architecture=True),
    "tower_dims": Option("int_list", TOWER, "hidden sizes of the shared and domain towers, comma-separated", ge=1,
                         min_length=1, architecture=True),
    "tower_dropouts": Option("float_list", DROPOUT, "dropout rate in [0, 1) after each tower layer, comma-separated",
                             ge=0.0, lt=1.0),
}
EMBEDDING_OPTIONS = ("embed_dim", "embed_init_std")  # the options every model reads
ARCHITECTURE: tuple[str, ...] = tuple(name for name, o in OPTIONS.items() if o.architecture)


def default(name: str) -> Any:
    """The declared default of option `name` (a fresh copy of a list)."""
    return copy.copy(OPTIONS[name].default)


def _bound_error(name: str, value: Any, option: Option) -> str | None:
    for bound, holds, text in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                               ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        limit = getattr(option, bound)
        if limit is not None and not holds(value, limit):
            return f"{name} = {value!r}: expected a value {text} {limit:g}"
    return None


def _item_error(name: str, value: Any, option: Option, kind: str) -> str | None:
    numeric = (int,) if kind == "int" else (int, float)
    if isinstance(value, bool) or not isinstance(value, numeric) or (kind == "float" and not math.isfinite(value)):
        return f"{name} = {value!r}: expected {'an integer' if kind == 'int' else 'a finite number'}"
    return _bound_error(name, value, option)


def option_error(name: str, value: Any) -> str | None:
    """Why `value` does not fit option `name`'s declaration, or None when it does."""
    o = OPTIONS[name]
    if o.kind == "bool":
        return None if isinstance(value, bool) else f"{name} = {value!r}: expected true or false"
    if o.kind == "choice":
        return None if value in o.choices else f"{name} = {value!r}: expected one of {list(o.choices)}"
    if o.kind in ("int", "float"):
        return _item_error(name, value, o, o.kind)
    if not isinstance(value, (list, tuple)) or len(value) < (o.min_length or 0):
        return f"{name} = {value!r}: expected a list of at least {o.min_length or 0} value(s)"
    errors = (_item_error(f"{name}[{i}]", v, o, o.kind.removesuffix("_list")) for i, v in enumerate(value))
    return next((e for e in errors if e), None)


def check_options(values: dict[str, Any]) -> None:
    """ValueError naming the first option of `values` (option -> value) outside its declaration, an
    unknown option, or tower_dims and tower_dropouts of different lengths (one rate per layer)."""
    unknown = sorted(set(values) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown}; options: {', '.join(OPTIONS)}")
    for name, value in values.items():
        error = option_error(name, value)
        if error:
            raise ValueError(error)
    dims, rates = values.get("tower_dims", TOWER), values.get("tower_dropouts", DROPOUT)
    if len(rates) != len(dims):
        raise ValueError(f"tower_dropouts has {len(rates)} rate(s) for {len(dims)} tower layer(s) {list(dims)}; give "
                         "one rate per layer")
