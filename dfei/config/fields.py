"""Typed setting fields of TrainConfig: one pydantic Field per setting with its default, help text
and range, from which validation, YAML loading and the command-line flags derive; the model
options' fields are built from their plain declarations (dfei.models.options)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, create_model

from dfei.models.options import OPTIONS, Option


def _number(value: Any) -> Any:
    # pydantic's lax mode reads True as 1; a boolean where a number belongs is a mistake
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return value


Int = Annotated[int, BeforeValidator(_number)]
Float = Annotated[float, BeforeValidator(_number)]


def setting(default: Any, help: str, metavar: str | None = None, architecture: bool = False,
            **constraints: Any) -> Any:
    """A pydantic Field: `help` is its description (the flag's help), `metavar` the flag's,
    `architecture` marks a model option that fixes the network's shape or what its state means (a
    checkpoint continues only with the same value); `constraints` are pydantic's (ge, le, min_length)."""
    extra = {k: v for k, v in (("metavar", metavar), ("architecture", architecture)) if v}
    return Field(default, description=help, json_schema_extra=extra or None, **constraints)


def _bounds(option: Option) -> dict[str, Any]:
    return {k: getattr(option, k) for k in ("ge", "gt", "le", "lt") if getattr(option, k) is not None}


def _annotation(option: Option) -> Any:
    """The pydantic type of a declared option: Int, Float, StrictBool, a Literal of its choices, or a
    list of bounded Int / Float."""
    if option.kind == "bool":
        return StrictBool
    if option.kind == "choice":
        return Literal[option.choices]
    scalar = Int if option.kind.startswith("int") else Float
    if option.kind.endswith("_list"):
        return list[Annotated[scalar, Field(**_bounds(option))]]
    return scalar


def _field(option: Option) -> tuple[Any, Any]:
    constraints = _bounds(option) if not option.kind.endswith("_list") else {}
    if option.min_length is not None:
        constraints["min_length"] = option.min_length
    return _annotation(option), setting(option.default, option.help, architecture=option.architecture, **constraints)


# TrainConfig's model half: one validated field per declared model option, in declaration order
ModelOptionFields: type[BaseModel] = create_model(
    "ModelOptionFields", __config__=ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True),
    **{name: _field(option) for name, option in OPTIONS.items()})
