"""Training configuration: every setting declared once, here (the model options in
dfei.models.options, whose fields TrainConfig inherits).

Each `TrainConfig` field carries its type, default, range and help text. From that one declaration
come the validation (pydantic, which names the key, the value and what was expected), the YAML
loading (`load_config`) and the command-line flags of train.py, tune.py, compare.py and parity.py
(`add_config_flags`, `config_from_args`).
"""
from __future__ import annotations

import contextvars
from typing import Any, Literal

from pydantic import ConfigDict, StrictBool, ValidationError, field_validator, model_validator

from dfei.errors import ConfigError
from dfei.config.fields import Float, Int, ModelOptionFields, setting

MODES = ("sequential", "fused")
EMBEDDING_UPDATES = ("lazy", "dense")
INGEST_BACKENDS = ("arrow", "ray-data")
EXHAUSTION = ("exhaust", "cycle")
# keys of older configs (checkpoints' state.json, best.json files): old name -> current name
RENAMED = {"shuffle_rows": "shuffle_buffer_rows"}
REMOVED = ("fail_once_at",)  # a test hook; fault drills now inject failures from the test side
_WHERE = contextvars.ContextVar("where", default="config")  # what from_dict's errors name


class TrainConfig(ModelOptionFields):
    """One training run's settings (train.py; every trial of tune.py, every run of compare.py and parity.py).

    Raises ConfigError naming the key, the value and what was expected when a value does not fit
    its declaration. Paper defaults: §4.2 and Table 4 (alpha 0.9, k 32, towers [128, 64, 32]),
    Algorithm 1 (Adam, lr 1e-3, shared lr/D, batch 512 per domain).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)

    data: str = setting("", "dataset directory or URI (dataset.json + split/domain=<id>/*.parquet)")
    out: str = setting("runs/dfei", "run directory for metrics.json and Ray results", min_length=1)
    model: str = setting("dfei", "registered model name (dfei, a baseline, <backbone>+dfei, an ablation)")
    epochs: Int = setting(10, "maximum epochs (early stopping may end sooner)", ge=1)
    patience: Int = setting(1, "epochs without a better mean valid AUC before stopping (authors: 1)", ge=1)
    num_workers: Int = setting(1, "Ray Train workers (DDP)", ge=1)
    use_gpu: StrictBool = setting(False, "one GPU per worker")
    cpus_per_worker: Float | None = setting(None, "CPUs per worker (default: an equal share of the cluster)", gt=0)
    torch_threads: Int | None = setting(
        None, "torch threads per worker (default: 1 in sequential mode on CPU, whose small operators gain nothing "
        "from more and slow down 40x when another process takes a core; else the worker's whole CPUs); results "
        "depend on it (float summation order), so metrics.json records the value a run used", ge=1)
    seed: Int = setting(0, "random seed (weights, shuffling, dropout)", ge=0)
    # optimisation (Algorithm 1)
    lr: Float = setting(1e-3, "learning rate of the domain parameters (Adam)", gt=0)
    l2: Float = setting(1e-6, "weight decay on the embedding tables only, as the authors", ge=0)
    shared_lr_scale: Float | None = setting(
        None, "shared parameters' lr = lr x scale (default 1/D, Algorithm 1; 1.0 turns it off)", gt=0)
    batch_size: Int = setting(512, "mini-batch per domain", ge=1)
    mode: Literal[MODES] = setting(
        "sequential", "sequential: Algorithm 1 as written, one update per domain batch; fused: one update per "
        "step over all domains' batches (one forward/backward, one collective per step; the towers as batched "
        "matmuls): "
        "faster, recommended for speed (BENCHMARKS.md: AUC within noise of sequential or above)")
    embedding_update: Literal[EMBEDDING_UPDATES] = setting(
        "lazy", "lazy: only the embedding rows in the batch are updated (step cost independent of the table "
        "size); dense: every row every step, as the authors' TF Adam")
    compile: StrictBool = setting(
        False, "torch.compile the towers and heads (DFEI): compiled once before the first epoch (its time "
        "reported apart as compile_s), falling back to eager with one warning where it cannot compile")
    exhaustion: Literal[EXHAUSTION] = setting(
        "exhaust", "exhaust: a domain that runs out sits out the rest of the epoch (as the authors); cycle: "
        "small domains repeat until the largest is done")
    # ingest
    ingest: Literal[INGEST_BACKENDS] = setting(
        "arrow", "training ingest: arrow (pyarrow readers per rank, bounded memory at any scale) or ray-data "
        "(per-domain Ray Datasets split equally on the driver, held in the object store)")
    shuffle_buffer_rows: Int = setting(1 << 16, "rows per domain held in the training shuffle buffer", ge=1)
    eval_batch_size: Int = setting(8192, "rows per evaluation batch", ge=1)
    max_steps_per_epoch: Int | None = setting(None, "cap on Algorithm-1 steps per epoch (smoke runs)", ge=1)
    # incremental training (dfei/train/warm_start.py)
    init_from: str | None = setting(
        None, "incremental training: start from this checkpoint's weights, domain features (their EMA "
        "continues) and optimizer state; new domains get fresh towers", metavar="CKPT")
    reset_optimizer: StrictBool = setting(
        False, "with --init-from: start Adam from scratch (weights and v carried over)")
    drop_missing_domains: StrictBool = setting(
        False, "with --init-from: allow data without some of the checkpoint's domains (their towers are dropped)")
    new_domain_from: str | None = setting(
        None, "with --init-from: a new domain's tower and head (and norm scale/shift with domain_norm) start as a "
        "copy of this checkpoint domain's (default: fresh); its v_d still starts from its first batch",
        metavar="DOMAIN")
    # tracking (dfei/train/tracking.py)
    tensorboard: StrictBool = setting(True, "write TensorBoard event files under RUN_DIR/tensorboard/<run name>")
    mlflow: str | None = setting(None, "also log params, per-epoch metrics and the best checkpoint to this MLflow "
                                      "tracking store (sqlite:///path/mlflow.db, http://host:5000)", metavar="URI")
    mlflow_experiment: str = setting("dfei", "MLflow experiment name")
    # Ray
    max_failures: Int = setting(0, "worker failures to recover from (Ray Train restarts from the last checkpoint)", ge=0)
    storage_path: str | None = setting(None, "Ray Train storage for checkpoints (default RUN_DIR/ray_results)",
                                      metavar="URI")
    checkpoint_every_steps: Int | None = setting(
        None, "also checkpoint inside an epoch, every N Algorithm-1 steps: a restarted worker group resumes "
        "from that step exactly (same rows, same RNG draws) instead of redoing the epoch (default: at epoch "
        "ends only)", metavar="N", ge=1)
    log_every_s: Float = setting(30.0, "seconds between progress lines within an epoch", gt=0)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise ConfigError(validation_message(err, _WHERE.get())) from None

    @field_validator("data", "out", "storage_path", "init_from")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        # resolved once, here, against the driver's working directory: Ray's processes have another
        from dfei.data.fs import absolute

        return absolute(value) if value else value

    @field_validator("mlflow")
    @classmethod
    def _absolute_store(cls, value: str | None) -> str | None:
        from dfei.data.fs import absolute_tracking_uri

        return absolute_tracking_uri(value) if value else value

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        from dfei.models.registry import MODELS, unread_values  # (torch only; no Ray)

        if self.model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}, got {self.model!r}")
        unread = unread_values(self.model, self.model_dump())
        if unread:
            raise ValueError(f"model {self.model!r} does not read {', '.join(unread)}: leave "
                             f"{'it' if len(unread) == 1 else 'them'} at the default, or choose a model that uses "
                             f"{'it' if len(unread) == 1 else 'them'}")
        if len(self.tower_dropouts) != len(self.tower_dims):
            raise ValueError(f"tower_dropouts has {len(self.tower_dropouts)} rate(s) for {len(self.tower_dims)} "
                             f"tower layer(s) {self.tower_dims}; give one rate per layer")
        if self.mode == "fused" and self.embedding_update != "lazy":
            raise ValueError("mode fused needs embedding_update lazy (its learning rates are per embedding row)")
        if self.checkpoint_every_steps is not None and self.ingest != "arrow":
            raise ValueError(f"checkpoint_every_steps needs ingest arrow (got {self.ingest!r}): only the arrow "
                             "readers can resume inside an epoch")
        if self.new_domain_from is not None and not self.init_from:
            raise ValueError(f"new_domain_from ({self.new_domain_from!r}) needs init_from: it names a domain "
                             "of that checkpoint")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with `changes` applied, validated like a new config (ConfigError when invalid)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config", legacy: bool = False) -> "TrainConfig":
        """Validate a mapping of keys (a YAML file, a checkpoint's config); ConfigError names `where`,
        the key, the value and what was expected. Keys of older configs are renamed (RENAMED) or
        dropped (REMOVED: when unset, or whatever their value with legacy=True, for the config a
        checkpoint of an older version recorded)."""
        values = dict(values)
        for old, new in RENAMED.items():
            if old in values and new not in values:
                values[new] = values.pop(old)
        for key in REMOVED:  # unset: a config of an older version; set: dropped only from a checkpoint's
            if key in values and (values[key] is None or legacy):
                del values[key]
        if legacy:  # recorded by a version that accepted settings the model ignores: they were not used
            from dfei.models.registry import unread_settings

            for key in unread_settings(str(values.get("model", "dfei"))):
                values.pop(key, None)
        token = _WHERE.set(where)
        try:
            return cls(**values)
        finally:
            _WHERE.reset(token)


def validation_message(err: ValidationError, where: str) -> str:
    """pydantic's errors as one message: `where: key = value: what was expected`, one per problem."""
    unknown = [str(e["loc"][0]) for e in err.errors() if e["type"] == "extra_forbidden"]
    lines = ([f"{where}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(TrainConfig.model_fields)}"]
             if unknown else [])
    for e in err.errors():
        if e["type"] == "extra_forbidden":
            continue
        message = e["msg"].removeprefix("Value error, ")
        if e["loc"]:
            key = str(e["loc"][0]) + "".join(f"[{i}]" for i in e["loc"][1:])
            lines.append(f"{where}: {key} = {e['input']!r}: {message}")
        else:
            lines.append(f"{where}: {message}")
    return "; ".join(lines)
