"""Command-line flags derived from TrainConfig's fields: one typed `--flag-name` per field with its
help and default, and the TrainConfig of a pipeline's parsed flags."""
from __future__ import annotations

import argparse
import types
import typing
from typing import Annotated, Any, Literal

from dfei.config.files import load_config, requested_values
from dfei.config.settings import TrainConfig
from dfei.errors import ConfigError

CONFIG_FIELDS = "_config_fields"  # the parser default naming the TrainConfig fields that have flags

def _flag_type(annotation: Any) -> tuple[Any, bool]:
    """(scalar type or Literal, is a list) of a field annotation, Optional and Annotated removed."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return _flag_type(args[0])
    if typing.get_origin(annotation) is Annotated:
        return _flag_type(args[0])
    if typing.get_origin(annotation) is list:
        return _flag_type(args[0])[0], True
    return annotation, False


def _comma_list(kind: type):
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None
    return parse


def add_config_flags(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = (),
                     help: dict[str, str] | None = None) -> None:
    """One `--flag-name` per TrainConfig field not in `exclude`, typed, with the field's help and
    default. Every flag defaults to None (absent): only flags the user gives override --config.
    `help` replaces a field's help text where a pipeline gives it another meaning (e.g. per trial).
    The fields it added are remembered on the parser: config_from_args reads only those. The model
    options (dfei.models.options) come last, in their own group."""
    from dfei.models.options import OPTIONS
    from dfei.models.registry import MODELS

    fields = [name for name in TrainConfig.model_fields if name not in exclude and name not in OPTIONS]
    fields += [name for name in OPTIONS if name not in exclude]
    parser.set_defaults(**{CONFIG_FIELDS: fields})
    options = parser.add_argument_group("model options", "a model refuses one it does not read: a baseline reads "
                                        "--embed-*,\n<backbone>+dfei also --alpha, --k; DFEI all but its ablated modules")
    for name in fields:
        field = TrainConfig.model_fields[name]
        target = options if name in OPTIONS else parser
        text = (help or {}).get(name, field.description)
        flag = "--" + name.replace("_", "-")
        kind, is_list = _flag_type(field.annotation)
        extra = field.json_schema_extra or {}
        kwargs: dict[str, Any] = {"dest": name, "default": None, "metavar": extra.get("metavar")}
        if kind is bool:  # --x / --no-x: a flag can turn off what a --config file turned on
            target.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{text} (default {'on' if field.default else 'off'})")
            continue
        if name == "model":  # the registry's names, listed in the help rather than the usage line
            kwargs.update(choices=sorted(MODELS), metavar="MODEL")
            text = f"{text}; one of {', '.join(sorted(MODELS))}"
        elif typing.get_origin(kind) is Literal:
            kwargs["choices"] = list(typing.get_args(kind))
            kwargs.pop("metavar")
        elif is_list:
            kwargs["type"] = _comma_list(typing.get_args(kind)[0] if typing.get_origin(kind) is Annotated else kind)
        else:
            kwargs["type"] = kind
        default = field.default
        if default not in (None, "") and name not in (help or {}):
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            text = f"{text} (default {shown})"
        target.add_argument(flag, help=text, **kwargs)


def flags_given(args: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig flags the user gave, of a parser given add_config_flags (parsed as a dict)."""
    return {k: args[k] for k in args[CONFIG_FIELDS] if args.get(k) is not None}


def refuse_reserved(values: dict[str, Any], reserved: dict[str, str], where: str, who: str) -> None:
    """ConfigError when `values` (a --config file's keys) set a key the pipeline sets itself for each
    of its runs (`reserved`: key -> the pipeline's flag for it): the file's value would be silently
    replaced. `who` names the pipeline ("a sweep", "compare.py")."""
    found = [key for key in values if key in reserved]
    if found:
        raise ConfigError(f"{where}: the config sets {', '.join(found)}, which {who} sets for every run itself; give "
                          f"{', '.join(reserved[k] for k in found)} instead")


def config_from_args(args: dict[str, Any], config_file: str | None = None, defaults: dict[str, Any] | None = None,
                     reserved: dict[str, str] | None = None, who: str = "this command", **overrides: Any) -> TrainConfig:
    """The TrainConfig of a pipeline's parsed flags (`vars(parser.parse_args())` of a parser given
    add_config_flags): `defaults` (the pipeline's own), --config's file, then the flags given, then
    `overrides` (values the pipeline sets itself). A pipeline's own flags of the same name (tune.py's
    --alpha list) are not read. ConfigError when no dataset is named, or when the file sets a key
    in `reserved` (see refuse_reserved)."""
    if config_file and reserved:
        refuse_reserved(requested_values(config_file, {}), reserved, f"--config {config_file}", who)
    cfg = load_config(config_file, {**flags_given(args), **overrides}, defaults)
    if not cfg.data:
        raise ConfigError("--data is required (or `data:` in --config)")
    return cfg
