"""Training configuration: one dataclass, filled from a YAML file and overridden by CLI flags."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from dfei.errors import ConfigError, PathNotFoundError

MODES = ("sequential", "fused")
EMBEDDING_UPDATES = ("lazy", "dense")
INGEST_BACKENDS = ("arrow", "ray-data")


@dataclass
class TrainConfig:
    data: str = ""
    out: str = "runs/dfei"
    model: str = "dfei"
    epochs: int = 10
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float | None = None  # None: an equal share of the cluster's CPUs
    seed: int = 0
    # model (paper Table 4 and §4.2)
    alpha: float = 0.9
    k: int = 32
    embed_dim: int = 16
    tower_dims: list[int] = field(default_factory=lambda: [128, 64, 32])
    tower_dropouts: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3])
    # optimisation (Algorithm 1)
    lr: float = 1e-3
    l2: float = 1e-6  # weight decay on the embedding tables only, as the authors
    shared_lr_scale: float | None = None  # None: 1/D (Algorithm 1); 1.0 turns it off
    batch_size: int = 512
    # sequential: Algorithm 1 as written, one update per domain batch; fused: one update per step
    # over all domains' batches (dfei/train/engine.py)
    mode: str = "sequential"
    # lazy: only the embedding rows in the batch are updated (sparse gradients; step cost independent
    # of the table size); dense: every row every step, as the authors' TF Adam (dfei/train/optim.py)
    embedding_update: str = "lazy"
    exhaustion: str = "exhaust"  # exhaust (authors) | cycle
    patience: int = 1  # stop after this many epochs without a better mean valid AUC (authors: 1, max 10 epochs)
    # ingest (DESIGN §2): arrow streams Parquet per rank (any scale); ray-data holds equal
    # per-domain shards in the object store
    ingest: str = "arrow"
    shuffle_rows: int = 1 << 16
    eval_batch_size: int = 8192
    max_steps_per_epoch: int | None = None  # cap for smoke tests; None = the whole epoch
    # incremental training (dfei/train/warm_start.py): start from a previous run's checkpoint
    init_from: str | None = None
    reset_optimizer: bool = False
    drop_missing_domains: bool = False
    new_domain_from: str | None = None  # a checkpoint domain whose tower and head seed each new domain's
    # tracking (dfei/train/tracking.py): TensorBoard events under <out>/tensorboard; MLflow when a
    # tracking URI is given (sqlite:///path/mlflow.db, http://server:5000, ...)
    tensorboard: bool = True
    mlflow: str | None = None
    mlflow_experiment: str = "dfei"
    # Ray
    max_failures: int = 0
    storage_path: str | None = None  # None: <out>/ray_results
    log_every_s: float = 30.0
    # testing fault tolerance: {"epoch": E, "step": S, "marker": PATH} makes rank 0 raise once at
    # that Algorithm-1 step (the marker file records that it happened, across restarts)
    fail_once_at: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        dims, drops = self.tower_dims, self.tower_dropouts
        if not (isinstance(dims, (list, tuple)) and dims and all(isinstance(x, int) and not isinstance(x, bool)
                                                                  and x >= 1 for x in dims)):
            raise ConfigError(f"tower_dims must be a non-empty list of positive integers (e.g. [128, 64, 32]), got {dims!r}")
        if not (isinstance(drops, (list, tuple)) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                          and 0.0 <= x < 1.0 for x in drops)):
            raise ConfigError(f"tower_dropouts must be a list of rates in [0, 1) (e.g. [0.1, 0.2, 0.3]), got {drops!r}")
        if len(drops) != len(dims):
            raise ConfigError(f"tower_dropouts has {len(drops)} rate(s) for {len(dims)} tower layer(s) {list(dims)}; "
                              "give one rate per layer")
        from dfei.models.registry import MODELS  # (torch only; no Ray)

        checks = [
            (self.model in MODELS, f"model must be one of {sorted(MODELS)}, got {self.model!r}"),
            (self.embed_dim >= 1, f"embed_dim must be >= 1, got {self.embed_dim}"),
            (self.l2 >= 0 and math.isfinite(self.l2), f"l2 must be a finite number >= 0, got {self.l2}"),
            (self.shuffle_rows >= 1, f"shuffle_rows must be >= 1, got {self.shuffle_rows}"),
            (self.max_failures >= 0, f"max_failures must be >= 0, got {self.max_failures}"),
            (self.cpus_per_worker is None or self.cpus_per_worker > 0,
             f"cpus_per_worker must be > 0, got {self.cpus_per_worker}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.num_workers >= 1, f"num_workers must be >= 1, got {self.num_workers}"),
            (0.0 <= self.alpha <= 1.0, f"alpha must be in [0, 1], got {self.alpha}"),
            (self.k >= 1, f"k must be >= 1, got {self.k}"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be a finite number > 0, got {self.lr}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}"),
            (self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1,
             f"max_steps_per_epoch must be >= 1, got {self.max_steps_per_epoch}"),
            (self.patience >= 1, f"patience must be >= 1, got {self.patience}"),
            (self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}"),
            (self.embedding_update in EMBEDDING_UPDATES,
             f"embedding_update must be one of {EMBEDDING_UPDATES}, got {self.embedding_update!r}"),
            (self.mode != "fused" or self.embedding_update == "lazy",
             "mode fused needs embedding_update lazy (its learning rates are per embedding row)"),
            (self.exhaustion in ("exhaust", "cycle"), f"exhaustion must be exhaust or cycle, got {self.exhaustion!r}"),
            (self.ingest in INGEST_BACKENDS, f"ingest must be one of {INGEST_BACKENDS}, got {self.ingest!r}"),
            (self.shared_lr_scale is None or (self.shared_lr_scale > 0 and math.isfinite(self.shared_lr_scale)),
             f"shared_lr_scale must be a finite number > 0, got {self.shared_lr_scale}"),
            (self.new_domain_from is None or self.init_from is not None,
             f"new_domain_from ({self.new_domain_from!r}) needs init_from: it names a domain of that checkpoint"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> "TrainConfig":
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        names = set(types)
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
        return cls(**{k: _typed(k, v, types[k], where) for k, v in values.items()})


def _typed(key: str, value: Any, annotation: str, where: str) -> Any:
    """YAML reads `1e-3` as a string and `2` as an int: coerce numbers to the field's type."""
    if value is None or isinstance(value, bool):
        return value
    for name, kind in (("float", float), ("int", int)):
        if annotation.startswith(name) and not isinstance(value, (list, dict)):
            try:
                number = kind(float(value)) if kind is int and float(value).is_integer() else kind(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: {key} must be a number ({annotation}), got {value!r}") from None
            return number
    return value


def load_config(path: str | None, overrides: dict[str, Any]) -> TrainConfig:
    """YAML file values, then every override that is not None (CLI flags given by the user).

    The file is a mapping of TrainConfig keys, or a tune sweep's best.json (its `train_config`).
    """
    values: dict[str, Any] = {}
    if path:
        import yaml

        try:
            with open(path) as f:
                loaded = yaml.safe_load(f) or {}
        except FileNotFoundError:
            raise PathNotFoundError(f"--config {path}: no such file") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise ConfigError(f"--config {path}: not a readable YAML/JSON file: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
        if isinstance(loaded.get("train_config"), dict):  # a sweep's best.json: its best trial's settings
            loaded = loaded["train_config"]
        values.update({k.replace("-", "_"): v for k, v in loaded.items()})
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values, where=path or "config")
