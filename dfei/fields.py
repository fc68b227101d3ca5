"""Typed setting fields shared by the model options (dfei.models.options) and TrainConfig
(dfei.config): one pydantic Field per setting with its default, help text and range, from which
validation, YAML loading, command-line flags and the exports' records all derive."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field


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
