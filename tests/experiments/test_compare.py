"""compare.py: tables in the paper's layout with a correct paired t-test, resumable, seeded.

The report, resume and reuse tests run compare with a stand-in trainer (`fake_training`: it writes a
metrics.json and a checkpoint as run_training does, no Ray); one test trains for real end to end."""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import zlib

import numpy as np
import pytest
from scipy.stats import ttest_rel

from dfei.errors import ConfigError, PathNotFoundError
from dfei.experiments.compare import compare, load_variants
from dfei.config import TrainConfig

COLUMNS = ["B1", "B2", "B3", "B4", "B5", "B6", "avg"]


def fake_training(data: str):
    """compare's `train` without Ray: writes cfg.out/metrics.json as run_training does (the dataset's
    digest and rows per domain, per-domain AUCs and loglosses, a 1-epoch history, the config) and a
    checkpoint of the untrained model. The AUCs are drawn from a generator seeded by the run's
    folder (<name>/seed<k>): every run has its own numbers, the same in every test session. The
    configs it was called with are in its `calls`."""
    import torch

    from dfei.data.dataset import ParquetDataset
    from dfei.eval.oracle import split_reference
    from dfei.models.build import model_from_config
    from dfei.train.checkpoint import TrainState, save_checkpoint

    dataset = ParquetDataset(data)
    spec = dataset.spec
    rows = {split: {d: r["n"] for d, r in split_reference(dataset, split, auc=False).items()}
            for split in ("valid", "test")}

    def train(cfg: TrainConfig) -> None:
        train.calls.append(cfg)
        name = os.path.join(os.path.basename(os.path.dirname(cfg.out)), os.path.basename(cfg.out))
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        splits = {split: {d: {"auc": float(rng.uniform(0.55, 0.75)), "gauc": float(rng.uniform(0.5, 0.7)),
                              "logloss": float(rng.uniform(0.3, 0.6)), "n": n} for d, n in counts.items()}
                  for split, counts in rows.items()}
        avg = {split: float(np.mean([m["auc"] for m in splits[split].values()])) for split in splits}
        checkpoint = os.path.join(cfg.out, "ray_results", "run", "epoch_0001")
        torch.manual_seed(cfg.seed)
        save_checkpoint(checkpoint, model_from_config(cfg, spec).state_dict(), None, TrainState().to_json(cfg, spec))
        metrics = {"avg_auc": avg, "splits": splits, "model": cfg.model, "config": cfg.to_dict(),
                   "dataset": {"name": spec.name, "uri": cfg.data, "domains": spec.domain_names,
                               "digest": spec.digest()},
                   "best_epoch": 1, "epochs_run": 1, "checkpoint": checkpoint, "timings": {"total_s": 1.0},
                   "history": [{"epoch": 1, "train_loss": float(rng.uniform(0.4, 0.5)), "valid_avg_auc": avg["valid"]}]}
        with open(os.path.join(cfg.out, "metrics.json"), "w") as f:
            json.dump(metrics, f)

    train.calls = []
    return train


def no_training(cfg: TrainConfig) -> None:
    raise AssertionError(f"{cfg.out} was trained")


@pytest.fixture(scope="module")
def report(public_tiny, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("compare"))
    base = TrainConfig(data=public_tiny, epochs=1, cpus_per_worker=1)
    variants = {"dfei_domain_norm": base.replace(model="dfei", domain_norm=True)}
    train = fake_training(public_tiny)
    compare(base, ["mlp", "dfei"], seeds=2, out=out, log=lambda *a: None, variants=variants, train=train)
    return base, out, variants, train.calls


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tables_have_the_paper_layout_and_a_correct_t_test(report):
    _, out, _, _ = report
    table = open(os.path.join(out, "table.md")).read()
    assert "| Model | " + " | ".join(COLUMNS) + " |" in table
    main = table.split("\n\n")[1]  # the first table (then the t-tests, the summary, the intervals)
    assert main.count("\n| mlp |") == 1 and main.count("\n| dfei |") == 1
    runs = _rows(os.path.join(out, "runs.csv"))
    assert [(r["model"], r["seed"]) for r in runs] == [("mlp", "0"), ("mlp", "1"), ("dfei", "0"), ("dfei", "1"),
                                                        ("dfei_domain_norm", "0"), ("dfei_domain_norm", "1")]
    means = {r["model"]: r for r in _rows(os.path.join(out, "table.csv")) if r["model"] in ("mlp", "dfei")}
    p_row = next(r for r in _rows(os.path.join(out, "table.csv")) if r["model"] == "p_dfei_vs_best_baseline")
    for col in COLUMNS:
        dfei = [float(r[col]) for r in runs if r["model"] == "dfei"]
        mlp = [float(r[col]) for r in runs if r["model"] == "mlp"]
        assert float(means["dfei"][col]) == pytest.approx(np.mean(dfei), abs=1e-6)
        expected = ttest_rel(dfei, mlp).pvalue  # mlp is the only (hence best) baseline
        if math.isnan(expected):
            assert p_row[col] == "nan"
        else:
            assert float(p_row[col]) == pytest.approx(expected, rel=1e-4)
    assert "<u>" in table  # the best baseline is underlined in every column
    with open(os.path.join(out, "domain_features_tsne.png"), "rb") as f:  # ablation.png needs the ablation runs
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_report_has_the_oracle_row_the_per_model_summary_the_intervals_and_the_curves(report, public_tiny):
    from dfei.data.dataset import ParquetDataset
    from dfei.eval.oracle import split_reference

    _, out, _, _ = report
    table = open(os.path.join(out, "table.md")).read()
    ref = split_reference(ParquetDataset(public_tiny), "test")
    oracle_row = next(line for line in table.splitlines() if line.startswith("| *oracle* | *"))
    cells = [float(c.strip(" *")) for c in oracle_row.split("|")[2:-1]]
    assert cells[:6] == pytest.approx([ref[f"B{i}"]["auc"] for i in range(1, 7)], abs=1e-4)
    assert cells[6] == pytest.approx(np.mean(cells[:6]), abs=1e-4)
    oracle_csv = next(r for r in _rows(os.path.join(out, "table.csv")) if r["model"] == "oracle")
    assert float(oracle_csv["B2"]) == pytest.approx(ref["B2"]["auc"], abs=1e-6)
    summary = next(line for line in table.splitlines() if line.startswith("| dfei_domain_norm | 2 |"))
    metrics = [json.load(open(os.path.join(out, "runs", "dfei_domain_norm", f"seed{s}", "metrics.json")))
               for s in (0, 1)]
    dfei = [json.load(open(os.path.join(out, "runs", "dfei", f"seed{s}", "metrics.json"))) for s in (0, 1)]
    test = [m["avg_auc"]["test"] for m in metrics]
    assert f"| {np.mean(test):.4f} +- {np.std(test, ddof=1):.4f} |" in summary
    p_vs_dfei = ttest_rel(test, [m["avg_auc"]["test"] for m in dfei]).pvalue
    assert summary.rstrip(" |").endswith(f"{p_vs_dfei:.4f}")
    assert "| B5 | " + f"{ref['B5']['n']:,} | {ref['B5']['positives']:,} | {ref['B5']['auc']:.4f} |" in table
    with open(os.path.join(out, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert metrics[0]["config"]["domain_norm"] is True and dfei[0]["config"]["domain_norm"] is False


def test_each_run_is_trained_once_with_its_model_seed_and_folder(report):
    base, out, _, calls = report
    assert [(c.model, c.domain_norm, c.seed, c.out) for c in calls] == [
        (model, norm, seed, os.path.join(out, "runs", name, f"seed{seed}"))
        for name, model, norm in (("mlp", "mlp", False), ("dfei", "dfei", False), ("dfei_domain_norm", "dfei", True))
        for seed in (0, 1)]
    assert all(c.to_dict() == base.replace(model=c.model, domain_norm=c.domain_norm, seed=c.seed, out=c.out).to_dict()
               for c in calls)  # the shared settings, unchanged


def test_finished_runs_are_not_trained_again(report):
    base, out, variants, _ = report
    logs: list[str] = []
    compare(base, ["mlp", "dfei"], seeds=2, out=out, log=logs.append, variants=variants, train=no_training)
    assert sum("skipped" in line for line in logs) == 6 and not any(": training (" in line for line in logs)


def test_a_relative_out_gives_each_run_an_absolute_folder(public_tiny, tmp_path, monkeypatch):
    """Ray's workers and storage have another working directory: a run's out must be absolute
    (the CLIs' other relative paths: tests/test_relative_paths.py, TrainConfig's: test_config.py)."""
    monkeypatch.chdir(tmp_path)
    train = fake_training(public_tiny)
    compare(TrainConfig(data=public_tiny, epochs=1), ["mlp"], seeds=1, out="cmp", log=lambda *a: None, train=train)
    assert [c.out for c in train.calls] == [str(tmp_path / "cmp" / "runs" / "mlp" / "seed0")]
    assert (tmp_path / "cmp" / "table.md").exists()


def test_report_only_trains_nothing_and_reports_the_finished_seeds(report, tmp_path):
    import shutil

    base, out, variants, _ = report
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    shutil.rmtree(os.path.join(copy, "runs", "dfei", "seed1"))
    logs: list[str] = []
    compare(base, ["mlp", "dfei"], seeds=4, out=copy, log=logs.append, variants=variants, report_only=True,
            train=no_training)
    assert not any(": training (" in line for line in logs)
    assert "[compare] dfei: seed 1 not run, reporting seeds 0..0" in logs
    runs = _rows(os.path.join(copy, "runs.csv"))
    assert [(r["model"], r["seed"]) for r in runs] == [("mlp", "0"), ("mlp", "1"), ("dfei", "0"),
                                                        ("dfei_domain_norm", "0"), ("dfei_domain_norm", "1")]
    with pytest.raises(ConfigError, match="--report-only: .*runs/ple/seed0/metrics.json is missing"):
        compare(base, ["ple"], seeds=1, out=copy, log=lambda *a: None, report_only=True)


def test_a_finished_run_with_other_settings_is_an_error_not_a_silent_reuse(report):
    base, out, _, _ = report
    with pytest.raises(ConfigError, match=r"dfei_domain_norm/seed0/metrics.json: this finished run was trained "
                                          r"with other settings \(domain_norm=True now False\)"):
        compare(base, [], seeds=1, out=out, log=lambda *a: None,
                variants={"dfei_domain_norm": base.replace(model="dfei")}, train=no_training)


def test_a_finished_run_on_another_version_of_the_dataset_is_refused(report, tmp_path):
    """Regenerated in place with the same row counts (another seed): only the digest tells."""
    import json
    import shutil

    base, out, _, _ = report
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    path = os.path.join(copy, "runs", "mlp", "seed0", "metrics.json")
    metrics = json.load(open(path))
    assert len(metrics["dataset"]["digest"]) == 64
    metrics["dataset"]["digest"] = "0" * 64  # what a run on the earlier version recorded
    json.dump(metrics, open(path, "w"))
    with pytest.raises(ConfigError, match=r"mlp/seed0/metrics.json: this run trained on another version of the "
                                          r"dataset \(dataset.json digest 000000000000 then, \w{12} now"):
        compare(base, ["mlp"], seeds=1, out=copy, log=lambda *a: None, report_only=True)


def test_variants_file_is_validated_before_anything_trains(tmp_path, public_tiny):
    base = TrainConfig(data=public_tiny)
    good = tmp_path / "v.yaml"
    good.write_text("dfei_norm: {domain-norm: true}\nstar_l2: {model: star, l2: 1.0e-5}\n")
    variants = load_variants(str(good), base)
    assert variants["dfei_norm"].model == "dfei" and variants["dfei_norm"].domain_norm
    assert variants["star_l2"].model == "star" and variants["star_l2"].l2 == 1e-5
    for text, message in (("star: {l2: 0.1}", "variant name 'star' must be"),
                          ("a/b: {l2: 0.1}", "variant name 'a/b' must be"),
                          ("x: {seed: 3}", r"variant 'x' sets \['seed'\]"),
                          ("x: {lr: -1}", "variant x: lr = -1"),
                          ("x: {model: mlp, domain_norm: true}", "variant x: model 'mlp' does not read domain_norm=True"),
                          ("- a\n- b", "expected a mapping of name -> mapping")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_variants(str(bad), base)
    with pytest.raises(PathNotFoundError, match="--variants .*missing.yaml: no such file"):
        load_variants(str(tmp_path / "missing.yaml"), base)
    with pytest.raises(ConfigError, match="--models mlp: the shared settings do not apply to it .*domain_norm.*"
                                          "--variants"):
        compare(base.replace(domain_norm=True), ["dfei", "mlp"], seeds=1, out=str(tmp_path / "c"), log=lambda *a: None)
    bad = tmp_path / "bad.yaml"
    bad.write_text("oracle: {l2: 0.1}")
    with pytest.raises(ConfigError, match="variant name 'oracle' must be"):
        load_variants(str(bad), base)


def test_compare_cli_trains_to_convergence_by_default_and_a_config_file_or_flag_overrides(tmp_path, public_tiny):
    import argparse

    from dfei.config import add_config_flags, config_from_args

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "pipelines"))
    from compare import DEFAULTS

    parser = argparse.ArgumentParser()
    add_config_flags(parser, exclude=("model", "seed", "out"))
    assert config_from_args(vars(parser.parse_args(["--data", public_tiny])), None, DEFAULTS).epochs == 20
    assert config_from_args(vars(parser.parse_args(["--data", public_tiny])), None, DEFAULTS).patience == 3
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epochs: 4\n")
    assert config_from_args(vars(parser.parse_args(["--data", public_tiny])), str(cfg_file), DEFAULTS).epochs == 4
    args = vars(parser.parse_args(["--data", public_tiny, "--patience", "1"]))
    assert config_from_args(args, str(cfg_file), DEFAULTS).patience == 1


def test_compare_trains_with_run_training_and_reports_its_runs(ray_session, public_tiny, tmp_path):
    """The end-to-end check with the real trainer (2 runs on Ray): each run's metrics.json is the
    one run_training wrote, the report is made of them and the t-SNE figure of the trained v; another
    seed trains another model (the same seed giving identical metrics: tests/train/test_fault_tolerance.py)."""
    from dfei.train.checkpoint import load_checkpoint

    out = str(tmp_path / "cmp")
    logs: list[str] = []
    compare(TrainConfig(data=public_tiny, epochs=1, cpus_per_worker=1), ["dfei"], seeds=2, out=out, log=logs.append)
    assert sum(": training (" in line for line in logs) == 2
    runs = [json.load(open(os.path.join(out, "runs", "dfei", f"seed{s}", "metrics.json"))) for s in (0, 1)]
    for seed, m in enumerate(runs):
        assert m["config"]["seed"] == seed and m["timings"]["train_samples_per_s"] > 0 and m["global_step"] > 0
        assert m["config"]["torch_threads"] >= 1  # resolved at run time: a real run's
    assert runs[1]["avg_auc"]["test"] != runs[0]["avg_auc"]["test"]
    rows = _rows(os.path.join(out, "runs.csv"))
    assert [float(r["avg"]) for r in rows] == pytest.approx([m["avg_auc"]["test"] for m in runs], abs=1e-6)
    v = load_checkpoint(runs[0]["checkpoint"], optimizer=False)["best_model"]["dfe.v"]
    assert bool(load_checkpoint(runs[0]["checkpoint"], optimizer=False)["best_model"]["dfe.initialized"].all())
    assert float(v.norm()) > 0  # a trained buffer
    with open(os.path.join(out, "domain_features_tsne.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
