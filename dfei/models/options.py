"""The model options a run can set, declared once: type, default, range, help, and whether the option
fixes the architecture. Defaults are the paper's (Table 4, §4.2; DFEI's towers [128, 64, 32], dropout
[0.1, 0.2, 0.3], alpha 0.9, k 32) and the authors' (embedding 16, init std 0.01).

`ModelOptions` is DFEI's configuration and the model half of TrainConfig (which inherits it, so every
option is a validated setting and a command-line flag). Each registered model reads a subset of the
options (dfei.models.registry: a baseline only the embedding's; `<backbone>+dfei` also alpha and k):
a run that sets an option its model does not read is refused naming it. A new DFEI option is one
field here plus its use in dfei/models/dfei.py: the registry, TrainConfig, its flag, warm start's
architecture check and the export's record derive from this declaration.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from dfei.fields import Float, Int, setting

DFE_INPUTS = ("domain", "shared")
TOWER = [128, 64, 32]  # paper Table 4: DFEI's towers, and every baseline's towers and experts
DROPOUT = [0.1, 0.2, 0.3]


class ModelOptions(BaseModel):
    """The options of the registered models (ValidationError, a ValueError, naming the option and the
    value when one does not fit its declaration)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)

    alpha: Float = setting(0.9, "DFE decay coefficient of the EMA of domain features", ge=0.0, le=1.0)
    k: Int = setting(32, "DFI attention dimension", ge=1, architecture=True)
    embed_dim: Int = setting(16, "embedding size per feature", ge=1, architecture=True)
    embed_init_std: Float = setting(0.01, "std of the embedding rows' normal initialisation, every model (authors: "
                                          "0.01)", gt=0)
    domain_norm: StrictBool = setting(
        False, "DFEI models only, not in the paper: STAR's partitioned normalisation (per-domain batch statistics, "
        "scale gamma*gamma_d, shift beta+beta_d) of the shared embedding before the towers, DFE and DFI",
        architecture=True)
    dfe_input: Literal[DFE_INPUTS] = setting(
        "domain", "DFEI models only: v_d is the EMA of the batch mean of the domain tower's u_d (domain, paper "
        "Eq. 4) or of the shared tower's output s over domain d's rows (shared, not in the paper)", architecture=True)
    tower_dims: list[Annotated[Int, Field(ge=1)]] = setting(
        TOWER, "hidden sizes of the shared and domain towers, comma-separated", min_length=1, architecture=True)
    tower_dropouts: list[Annotated[Float, Field(ge=0.0, lt=1.0)]] = setting(
        DROPOUT, "dropout rate in [0, 1) after each tower layer, comma-separated")

    @model_validator(mode="after")
    def _one_rate_per_layer(self) -> "ModelOptions":
        if len(self.tower_dropouts) != len(self.tower_dims):
            raise ValueError(f"tower_dropouts has {len(self.tower_dropouts)} rate(s) for {len(self.tower_dims)} "
                             f"tower layer(s) {self.tower_dims}; give one rate per layer")
        return self


OPTIONS: tuple[str, ...] = tuple(ModelOptions.model_fields)
EMBEDDING_OPTIONS = ("embed_dim", "embed_init_std")  # the options every model reads
ARCHITECTURE: tuple[str, ...] = tuple(
    name for name, f in ModelOptions.model_fields.items() if (f.json_schema_extra or {}).get("architecture"))


def default(name: str) -> Any:
    """The declared default of option `name` (a fresh copy of a list)."""
    value = ModelOptions.model_fields[name].default
    return list(value) if isinstance(value, list) else value
