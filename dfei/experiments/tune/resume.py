"""What `tune.py --resume` must match before it continues a sweep: its saved settings, its data, and
its folder.

A resumed sweep ranks trials trained before the interruption against trials trained after it, so
every setting that defines a trial must be the one the sweep started with. Flags given with
--resume are compared with the saved ones and any difference is refused by name (a resume never
changes a sweep; start another with another --out). The data is compared by a digest of its
dataset.json (row counts per split and domain, cardinalities, encoders' digests, the generator's
or converter's settings): a dataset regenerated or reconverted in place is refused, naming the row
counts that changed where they did. A sweep folder moved since it was written resumes with its new
paths: checkpoint paths recorded under the old folder are rebased onto the new one.
"""
from __future__ import annotations

from typing import Any

from dfei.data.spec import DatasetSpec
from dfei.errors import ConfigError
from dfei.config import TrainConfig, refuse_reserved
from dfei.experiments.tune.space import ResourcePlan, SearchSpec

# settings that do not change what a trial trains: a resume takes them from this command
NOT_COMPARED = ("log_every_s", "mlflow", "mlflow_experiment", "tensorboard", "max_failures")
SPLIT_ORDER = {"train": 0, "valid": 1, "test": 2}


def data_fingerprint(spec: DatasetSpec) -> dict[str, Any]:
    """{"digest": DatasetSpec.digest() (the dataset.json content's sha256), "row_counts":
    split -> domain -> rows}: what sweep.json records and a resume compares."""
    return {"digest": spec.digest(), "row_counts": spec.row_counts}


def check_resume(base: TrainConfig, spec: SearchSpec, plan: ResourcePlan, requested: dict[str, Any],
                 search: dict[str, Any], max_concurrent: int | None = None) -> TrainConfig:
    """The saved `base` config, with `requested` (TrainConfig keys this command set: flags given
    and --config's keys) and `search` (tune.py's own flags given: alpha/k as parsed Values, search,
    scheduler, num_samples, workers_per_trial, max_concurrent) compared against the sweep's
    (`max_concurrent`: the --max-concurrent the sweep was started with, None when not given).

    Returns base with this command's NOT_COMPARED settings and `data` path applied (a moved
    dataset: the caller checks its content with check_data). Raises ConfigError naming every
    other setting that differs, with the sweep's value and this command's."""
    check_not_set_by_sweep(requested, "--resume")
    diffs = []
    if requested:
        wanted = TrainConfig.from_dict({**base.to_dict(), **requested}, where="--resume")
        saved, new = base.to_dict(), wanted.to_dict()
        diffs += [_diff(key, saved[key], new[key]) for key in requested
                  if key not in NOT_COMPARED and key != "data" and key in saved and saved[key] != new[key]]
        base = base.replace(**{key: new[key] for key in requested if key in NOT_COMPARED or key == "data"})
    saved_search = {**spec.to_json(), "workers_per_trial": plan.workers_per_trial, "max_concurrent": max_concurrent}
    for key, value in search.items():
        value = value.to_json() if hasattr(value, "to_json") else value
        if value != saved_search[key]:
            diffs.append(_diff(key, saved_search[key], value))
    if diffs:
        raise ConfigError("--resume continues a sweep with the settings it started with; this command "
                          "changes " + "; ".join(diffs) + ". Leave these flags out to resume, or start "
                          "another sweep with another --out")
    return base


# settings every trial of a sweep gets from the sweep, never from a --config file: the flag to use
SET_BY_SWEEP = {"alpha": "--alpha", "k": "--k", "num_workers": "--workers-per-trial", "out": "--out"}


def check_not_set_by_sweep(values: dict[str, Any], where: str) -> None:
    """Refuse (ConfigError naming the keys and the flags to use) a --config file that sets what the
    sweep sets per trial: its value would be silently replaced. (A sweep's best.json is for
    train.py: its train_config names alpha, k and num_workers.)"""
    refuse_reserved(values, SET_BY_SWEEP, where, "a sweep")


def check_data(saved: dict[str, Any] | None, spec: DatasetSpec, data: str, log=print) -> None:
    """Refuse a resume whose dataset is not the one the sweep's finished trials trained on.
    `saved` is sweep.json's `data` entry (None for a sweep saved before data was recorded: the
    data is then not checked, and the log says so). Raises ConfigError naming the changed row
    counts (split, domain, then and now) or the two digests."""
    if saved is None:
        log(f"[tune] warning: this sweep predates data digests; {data} is not checked against the data "
            "its finished trials trained on")
        return
    now = data_fingerprint(spec)
    if now["digest"] == saved["digest"]:
        return
    then = saved["row_counts"]
    splits = sorted(set(now["row_counts"]) | set(then), key=lambda s: (SPLIT_ORDER.get(s, 3), s))
    changed = [f"{split} {domain}: {_rows(then.get(split, {}).get(domain))} then, "
               f"{_rows(now['row_counts'].get(split, {}).get(domain))} now"
               for split in splits for domain in sorted(set(now["row_counts"].get(split, {})) | set(then.get(split, {})))
               if then.get(split, {}).get(domain) != now["row_counts"].get(split, {}).get(domain)]
    detail = (f"row counts changed ({'; '.join(changed[:6])}{' ...' if len(changed) > 6 else ''})" if changed else
              f"its dataset.json changed (digest {saved['digest'][:12]} then, {now['digest'][:12]} now)")
    raise ConfigError(f"--resume: {data} is not the dataset this sweep's trials trained on: {detail}. "
                      "Resuming would rank trials trained on different data; start another sweep with another --out")


def rebase(path: Any, folders: list[str], out: str) -> Any:
    """A checkpoint path recorded under one of the sweep folder's earlier locations (`folders`),
    moved onto its current one (`out`); anything else unchanged (a remote --storage-path, None)."""
    if not isinstance(path, str) or path.startswith(out.rstrip("/") + "/"):
        return path
    for old in folders:
        prefix = old.rstrip("/") + "/"
        if old != out and path.startswith(prefix):
            return out.rstrip("/") + "/" + path[len(prefix):]
    return path


def _rows(count: int | None) -> str:
    return "no rows" if count is None else f"{count:,} rows"


def _diff(key: str, then: Any, now: Any) -> str:
    return f"--{key.replace('_', '-')} (the sweep: {_show(then)}, this command: {_show(now)})"


def _show(value: Any) -> str:
    if value is None:
        return "not set"
    if isinstance(value, dict) and "range" in value:
        return ":".join(map(str, value["range"]))
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)
