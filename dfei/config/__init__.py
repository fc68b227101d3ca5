"""Settings every layer reads: a training run's TrainConfig (settings.py), --config files
(files.py) and the command-line flags derived from the fields (flags.py)."""
from dfei.config.files import load_config, read_yaml, requested_values
from dfei.config.flags import (
    CONFIG_FIELDS,
    add_config_flags,
    config_from_args,
    flags_given,
    refuse_reserved,
)
from dfei.config.settings import (
    EMBEDDING_UPDATES,
    EXHAUSTION,
    INGEST_BACKENDS,
    MODES,
    REMOVED,
    RENAMED,
    TrainConfig,
    validation_message,
)

__all__ = ["CONFIG_FIELDS", "EMBEDDING_UPDATES", "EXHAUSTION", "INGEST_BACKENDS", "MODES",
           "REMOVED", "RENAMED", "TrainConfig", "add_config_flags", "config_from_args", "flags_given",
           "load_config", "read_yaml", "refuse_reserved", "requested_values", "validation_message"]
