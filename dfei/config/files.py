"""Reading settings from a --config file (YAML or JSON, a sweep's best.json) and merging them with
the flags a user gave: the file's keys, then the flags, validated as one TrainConfig."""
from __future__ import annotations

from typing import Any

from dfei.config.settings import TrainConfig
from dfei.errors import ConfigError, PathNotFoundError


def read_yaml(path: str, flag: str) -> Any:
    """The parsed YAML (or JSON) file at `path`, {} when empty. PathNotFoundError for a missing
    file; ConfigError for an unreadable one, and for a mapping that sets one key twice (`lr` on
    two lines, or `batch-size` and `batch_size`: `-` and `_` spell the same setting) naming both
    lines, where PyYAML would silently keep the last. Errors name `flag` and the path."""
    import yaml

    try:
        with open(path) as f:
            return yaml.load(f, Loader=_unique_key_loader()) or {}
    except FileNotFoundError:
        raise PathNotFoundError(f"{flag} {path}: no such file") from None
    except _DuplicateKey as err:
        raise ConfigError(f"{flag} {path}: {err}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{flag} {path}: not a readable YAML/JSON file: {err}") from None


class _DuplicateKey(Exception):
    pass


def _unique_key_loader():
    import yaml

    merge = "tag:yaml.org,2002:merge"

    class UniqueKeyLoader(yaml.SafeLoader):
        """SafeLoader whose mappings refuse a key set twice; at the top level (the settings) also
        two spellings of one setting (`-` and `_`). Keys merged in with `<<: *anchor` may be
        overridden, as YAML intends."""

        def construct_document(self, node):
            self._top = node
            return super().construct_document(node)

        def construct_mapping(self, node, deep=False):
            seen: dict[str, tuple[Any, Any]] = {}
            for key_node, _ in node.value:
                if key_node.tag == merge:
                    continue
                key = self.construct_object(key_node, deep=True)
                spelled = str(key).replace("-", "_") if node is getattr(self, "_top", None) else str(key)
                if spelled in seen:
                    first, mark = seen[spelled]
                    where = _positions(mark, key_node.start_mark)
                    raise _DuplicateKey(f"key {key!r} is set twice ({where}); keep one" if first == key else
                                        f"keys {first!r} and {key!r} set one setting, {spelled} ({where}); keep one")
                seen[spelled] = (key, key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _positions(first, second) -> str:
    """`lines 2 and 4`, or `line 1, columns 3 and 20` for two keys on one line (JSON)."""
    if first.line != second.line:
        return f"lines {first.line + 1} and {second.line + 1}"
    return f"line {first.line + 1}, columns {first.column + 1} and {second.column + 1}"


def requested_values(path: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The settings a --config file and the flags given set: the file's keys (`-` or `_` in names;
    a tune sweep's best.json gives its `train_config`), then every override that is not None (the
    flags the user gave). Unvalidated. Raises what read_yaml raises, and ConfigError for a file
    that is not a mapping."""
    values: dict[str, Any] = {}
    if path:
        loaded = read_yaml(path, "--config")
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
        if isinstance(loaded.get("train_config"), dict):  # a sweep's best.json: its best trial's settings
            loaded = loaded["train_config"]
        values.update({str(k).replace("-", "_"): v for k, v in loaded.items()})
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values


def load_config(path: str | None, overrides: dict[str, Any], defaults: dict[str, Any] | None = None) -> TrainConfig:
    """`defaults` (a pipeline's own defaults, e.g. compare.py's epochs), then the YAML file's values,
    then every override that is not None (CLI flags given by the user): see requested_values.
    Raises PathNotFoundError for a missing file, ConfigError for an unreadable one, a key set twice,
    an unknown key or a bad value."""
    values = {**(defaults or {}), **requested_values(path, overrides)}
    return TrainConfig.from_dict(values, where=path or "config")
