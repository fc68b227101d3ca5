"""Train every model (and named variant) x seed with the one train loop, resumably, then write the
comparison report."""
from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Callable

from dfei.data.dataset import ParquetDataset
from dfei.errors import ConfigError, RunInterruptedError
from dfei.eval.plots import ablation_plot, curves_plot, tsne_plot
from dfei.eval.significance import per_seed, run_facts
from dfei.eval.tables import write_tables
from dfei.eval.oracle import oracle_column, split_reference
from dfei.models import MODELS
from dfei.train.checkpoint import load_checkpoint
from dfei.config import TrainConfig, read_yaml
from dfei.ray_runtime import init_ray
from dfei.train.driver import check_evaluable, preflight, run_training

# keys that do not change what a run computes: a finished run is reused whatever their value
NOT_RESULT_KEYS = ("out", "storage_path", "tensorboard", "mlflow", "mlflow_experiment", "log_every_s", "max_failures",
                   "checkpoint_every_steps")
RESERVED = ("oracle", "p_dfei_vs_best_baseline")  # row names of the report's tables
VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def load_variants(path: str, base: TrainConfig) -> dict[str, TrainConfig]:
    """A YAML mapping of variant name -> TrainConfig keys that differ from the base (`model`
    defaults to dfei), e.g. `dfei_domain_norm: {domain_norm: true}`. Each variant is validated
    as a config here, before anything trains. ConfigError for a bad file, a name that is not a
    plain identifier or that is a registered model's, or a bad key or value (naming the variant);
    PathNotFoundError for a missing file."""
    loaded = read_yaml(path, "--variants")
    if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
        raise ConfigError(f"--variants {path}: expected a mapping of name -> mapping of config keys")
    variants = {}
    for name, keys in loaded.items():
        name = str(name)
        if not VARIANT_NAME.fullmatch(name) or name in MODELS or name in RESERVED:
            raise ConfigError(f"--variants {path}: variant name {name!r} must be letters, digits, _ . + - and "
                              f"not a registered model's name nor one of {list(RESERVED)}")
        keys = {str(k).replace("-", "_"): v for k, v in keys.items()}
        bad = sorted(set(keys) & {"seed", "out", "data"})
        if bad:
            raise ConfigError(f"--variants {path}: variant {name!r} sets {bad}; compare sets those itself")
        variants[name] = TrainConfig.from_dict({**base.to_dict(), "model": "dfei", **keys},
                                               where=f"{path}: variant {name}")
    return variants


def _check_reusable(path: str, cfg: TrainConfig) -> None:
    """A finished run is reused only when it computed what `cfg` asks for (ConfigError otherwise).
    A key `cfg` leaves unset (None: resolved at run time, e.g. torch_threads) matches any value."""
    with open(path) as f:
        recorded = json.load(f).get("config", {})
    wanted = cfg.to_dict()
    differ = sorted(k for k in wanted if k not in NOT_RESULT_KEYS and k in recorded and wanted[k] is not None
                    and recorded[k] != wanted[k])
    if differ:
        raise ConfigError(f"{path}: this finished run was trained with other settings "
                          f"({', '.join(f'{k}={recorded[k]!r} now {wanted[k]!r}' for k in differ)}); use another "
                          "--out, or delete that run directory to train it again")


def _check_rows(path: str, metrics: dict, reference: dict[str, Any]) -> None:
    """A finished run's dataset must be the one there now (ConfigError naming the run otherwise):
    its recorded dataset digest (DatasetSpec.digest) and its valid/test rows per domain. A dataset
    regenerated at the same path (another --min-eval-rows, seed or scale) would put old AUCs next to
    new oracle rows and intervals."""
    digest = metrics.get("dataset", {}).get("digest")  # recorded since runs keep it
    if digest is not None and digest != reference["digest"]:
        raise ConfigError(f"{path}: this run trained on another version of the dataset (dataset.json digest "
                          f"{digest[:12]} then, {reference['digest'][:12]} now: regenerated or reconverted in "
                          "place?); use another --out for the new data")
    for split in ("valid", "test"):
        ran = {d: m["n"] for d, m in metrics["splits"][split].items()}
        now = {d: r["n"] for d, r in reference[split].items()}
        if ran != now:
            first = next(d for d in now if ran.get(d) != now[d])
            raise ConfigError(f"{path}: this run was evaluated on {ran.get(first)} {split} rows of domain {first}, "
                              f"the dataset has {now[first]} now (regenerated?); use another --out for the new data")


def train_run(cfg: TrainConfig) -> None:
    """compare's default `train`: run_training, quiet, the Ray Train run named by model, seed and time."""
    run_training(cfg, log=lambda *a: None, run_name=f"{cfg.model}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}")


def _train(train: Callable[[TrainConfig], Any], cfg: TrainConfig, model: str, seed: int, which: str,
           out: str) -> None:
    """One run of the comparison; a Ctrl-C during it ends the comparison (RunInterruptedError,
    exit 130) saying that the finished runs are kept and reused by the same command."""
    try:
        train(cfg)
    except RunInterruptedError:
        raise RunInterruptedError(
            f"the comparison was stopped during {which} ({model} seed {seed}); no report was written. Finished "
            f"runs are kept under {out}/runs: the same command continues from them") from None


def _configs(base: TrainConfig, models: list[str], variants: dict[str, TrainConfig] | None) -> dict[str, TrainConfig]:
    """name -> config of every model (base's settings) and variant; ConfigError for a model the
    shared settings do not apply to, or nothing to compare."""
    configs = {}
    for m in models:
        try:
            configs[m] = base.replace(model=m)
        except ConfigError as err:  # e.g. --domain-norm given to every model, baselines included
            raise ConfigError(f"--models {m}: the shared settings do not apply to it ({err}); put settings that "
                              "only some models take in --variants") from None
    configs.update(variants or {})
    if not configs:
        raise ConfigError("nothing to compare: give --models and/or --variants")
    return configs


def compare(base: TrainConfig, models: list[str], seeds: int, out: str, log=print,
            variants: dict[str, TrainConfig] | None = None, report_only: bool = False,
            train: Callable[[TrainConfig], Any] | None = None) -> dict[str, Any]:
    """Train each of `models` (registry names, with `base`'s settings) and of `variants` (name ->
    config) for seeds 0..seeds-1 under out/runs/<name>/seed<k>, then write the report
    (dfei.eval.tables, dfei.eval.plots). `report_only`: train nothing; report each model's finished seeds
    0..k-1 (k <= seeds; paired tests use the seeds both models have). Raises ConfigError for an
    unknown model, seeds < 1, a finished run trained with other settings than asked for, or (with
    report_only) a model without a finished seed 0.

    `train`: what trains one run, called as train(cfg) with the run's config (its model, seed and
    out = out/runs/<name>/seed<k> set); it must leave cfg.out/metrics.json as run_training writes it
    (the report reads the splits, avg_auc, history, dataset digest, config and checkpoint from it).
    Default: `train_run` (run_training on Ray, which compare then starts before the first run); with
    another function compare starts no Ray itself (tests pass one that writes a metrics.json)."""
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown}; registered: {sorted(MODELS)}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    configs = _configs(base, models, variants)
    dataset = ParquetDataset(base.data)
    if report_only:
        check_evaluable(dataset, log)  # nothing trains: no fit check
    else:
        preflight(base, dataset, log)  # the embedding table is every model's: one check before Ray starts
    os.makedirs(out, exist_ok=True)
    if not report_only and train is None:
        init_ray(log)
    reference = {split: split_reference(dataset, split, auc=split != "train") for split in ("train", "valid", "test")}
    reference_digest = dataset.spec.digest()
    results: dict[str, dict[int, dict]] = {m: {} for m in configs}
    total, t0 = len(configs) * seeds, time.time()
    for i, (model, seed) in enumerate((m, s) for m in configs for s in range(seeds)):
        run_dir = os.path.join(out, "runs", model, f"seed{seed}")
        path = os.path.join(run_dir, "metrics.json")
        cfg = configs[model].replace(seed=seed, out=run_dir)
        if os.path.exists(path):  # resumable: a finished run is never trained again
            _check_reusable(path, cfg)
            log(f"[compare] {i + 1}/{total} {model} seed {seed}: done before, skipped")
        elif report_only:
            if seed == 0:
                raise ConfigError(f"--report-only: {path} is missing; {model} has no finished run to report")
            if seed == len(results[model]):  # seeds 0..seed-1 stay: pairs are by seed
                log(f"[compare] {model}: seed {seed} not run, reporting seeds 0..{seed - 1}")
            continue
        else:
            log(f"[compare] {i + 1}/{total} {model} seed {seed}: training ({time.time() - t0:.0f}s elapsed)")
            _train(train or train_run, cfg, model, seed, f"run {i + 1} of {total}", out)
        if report_only and len(results[model]) < seed:  # after a gap, later seeds are left out too
            continue
        with open(path) as f:
            results[model][seed] = json.load(f)
        m = results[model][seed]
        _check_rows(path, m, {**reference, "digest": reference_digest})
        log(f"[compare] {model} seed {seed}: test avg AUC {m['avg_auc']['test']:.4f}")
    report = _write_report(dataset, results, reference, out, log)
    log(f"[compare] {total} runs in {time.time() - t0:.0f}s; report in {out}")
    return report


def _write_report(dataset: ParquetDataset, results: dict[str, dict[int, dict]], reference: dict[str, Any],
                  out: str, log) -> dict[str, Any]:
    """The tables (dfei.eval.tables) and figures (dfei.eval.plots) of the finished runs; logs table.md."""
    domains = dataset.spec.domain_names
    values = per_seed(results, domains)
    facts = run_facts(results)
    if oracle_column(dataset) is None:
        log("[compare] no oracle row: the dataset carries no true click probability (synthetic data does)")
    report = write_tables(values, domains, out, facts=facts, reference=reference)
    ablation_plot(values, domains, out)
    curves_plot(facts, out)
    dfei_runs = results.get("dfei")
    if dfei_runs and len(domains) < 2:
        log("[compare] no t-SNE figure of the domain features: the dataset has 1 domain")
    elif dfei_runs:
        ckpt = load_checkpoint(dfei_runs[min(dfei_runs)]["checkpoint"], optimizer=False)
        train = reference["train"]
        ctr = [train[d]["positives"] / train[d]["n"] if train[d]["n"] else float("nan") for d in domains]
        tsne_plot(ckpt["best_model"]["dfe.v"].numpy(), domains, ctr, out)
    with open(os.path.join(out, "table.md")) as f:
        log("\n" + f.read())
    return report
