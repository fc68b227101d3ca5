"""Incremental (daily) training: day 1 continues day 0's run; v continues its EMA, a new domain
gets a tower and trains, Adam's state carries over; unusable checkpoints are refused early."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from dfei.data.dataset import ParquetDataset
from dfei.models import build_model
from dfei.train import warm_start
from dfei.train.checkpoint import load_checkpoint
from dfei.config import TrainConfig
from dfei.train.optim import build_optimizer
from dfei.train.driver import run_training


@pytest.fixture(scope="module")
def day1(tracked_run, daily_data, tmp_path_factory):
    # alpha = 1 on day 1: a continued v_d never moves again (v = 1 * v_prev), so it must still be
    # day 0's exactly; had it been re-initialised it would be day 1's first batch mean
    cfg = TrainConfig(data=daily_data["day1"], out=str(tmp_path_factory.mktemp("day1")), epochs=1, seed=1,
                      alpha=1.0, init_from=tracked_run["metrics"]["checkpoint"])
    return cfg, run_training(cfg, log=lambda *a: None)


def test_domain_features_continue_and_the_new_domain_starts_from_its_first_batch(tracked_run, day1):
    _, metrics = day1
    before = load_checkpoint(tracked_run["metrics"]["checkpoint"])["model"]
    after = load_checkpoint(metrics["checkpoint"])["model"]
    assert metrics["init_from"]["continued"] == ["B1", "B2", "B3", "B4", "B5"]
    assert metrics["init_from"]["new_domains"] == ["B6"] and metrics["init_from"]["optimizer"] == "restored"
    assert torch.equal(after["dfe.v"][:5], before["dfe.v"])  # ids 0..4: the same rows
    assert bool(after["dfe.initialized"].all()) and float(after["dfe.v"][5].norm()) > 0


def test_the_new_domain_trains_and_is_scored(day1, daily_data):
    cfg, metrics = day1
    after = load_checkpoint(metrics["checkpoint"])["model"]
    torch.manual_seed(cfg.seed)  # the tower B6 started from: the loop's seeded initialisation
    spec = ParquetDataset(daily_data["day1"]).spec
    fresh = build_model("dfei", spec.cardinalities, spec.num_domains).state_dict()
    assert not torch.equal(after["domain_towers.5.0.weight"], fresh["domain_towers.5.0.weight"])
    # and its parameters took Adam steps (state index: groups embedding, shared, domain_0..domain_5)
    model = build_model("dfei", spec.cardinalities, spec.num_domains)
    opt = build_optimizer(model)
    b6_first = sum(len(g["params"]) for g in opt.param_groups[:7])  # first parameter of group domain_5
    assert int(load_checkpoint(metrics["checkpoint"])["optimizer"]["state"][b6_first]["step"]) > 0
    assert metrics["splits"]["test"]["B6"]["n"] > 0 and 0 <= metrics["splits"]["test"]["B6"]["auc"] <= 1


def test_adam_state_carries_over(tracked_run, day1):
    _, metrics = day1
    before = load_checkpoint(tracked_run["metrics"]["checkpoint"])["optimizer"]["state"]
    after = load_checkpoint(metrics["checkpoint"])["optimizer"]["state"]
    # state index 1 is the shared tower's first weight (groups: embedding, shared, domain_0, ...)
    assert int(after[1]["step"]) == int(before[1]["step"]) + metrics["global_step"]


def test_optimizer_state_is_mapped_by_domain_id_or_reset(tracked_run, daily_data):
    ckpt = load_checkpoint(tracked_run["metrics"]["checkpoint"])
    spec = ParquetDataset(daily_data["day1"]).spec
    cfg = TrainConfig(data=daily_data["day1"], init_from="x")
    matching = warm_start.plan(cfg, spec, ckpt, "x")
    model = build_model("dfei", spec.cardinalities, spec.num_domains)
    opt = build_optimizer(model)
    state = warm_start.optimizer_state(model, opt, ckpt["optimizer"], matching)
    opt.load_state_dict(state)
    names = {id(p): n for n, p in model.named_parameters()}
    by_name = {names[id(p)]: opt.state[p] for g in opt.param_groups for p in g["params"] if p in opt.state}
    assert "domain_towers.5.0.weight" not in by_name  # B6 is new: no Adam state
    assert "domain_towers.4.0.weight" in by_name and "embedding.weight" in by_name


@pytest.mark.parametrize("change,message", [
    ({"embed_dim": 8}, "embed_dim is 16 there but 8 here"),
    ({"model": "star"}, "model is 'dfei' there but 'star' here"),
])
def test_a_different_architecture_is_refused_before_ray(tracked_run, daily_data, tmp_path, change, message):
    cfg = TrainConfig(data=daily_data["day1"], out=str(tmp_path), init_from=tracked_run["metrics"]["checkpoint"],
                      **change)
    with pytest.raises(ValueError, match=message):
        run_training(cfg, log=lambda *a: None)
    assert not (tmp_path / "metrics.json").exists()


def test_dropping_a_domain_needs_consent_and_other_features_are_refused(tracked_run, daily_data, tmp_path):
    from dfei.data.spec import DatasetError, DatasetSpec

    ckpt = load_checkpoint(tracked_run["metrics"]["checkpoint"])
    spec = ParquetDataset(daily_data["day1"]).spec
    fewer = dataclasses.replace(spec, domains=spec.domains[1:])  # B1 missing from the data
    with pytest.raises(ValueError, match=r"lacks domain\(s\) \['B1'\].*--drop-missing-domains"):
        warm_start.plan(TrainConfig(data="x"), fewer, ckpt, "ckpt")
    assert warm_start.plan(TrainConfig(data="x", drop_missing_domains=True), fewer, ckpt, "ckpt")["dropped"] == ["B1"]
    other = DatasetSpec.from_json({**json.loads(json.dumps(spec.to_json())),
                                   "features": [{"name": f.name, "cardinality": f.cardinality + (f.name == "u_age")}
                                                for f in spec.features]})
    with pytest.raises(DatasetError, match=r"features differ .* u_age: 11 -> 12"):
        warm_start.plan(TrainConfig(data="x"), other, ckpt, "ckpt")


def test_a_new_domain_can_start_from_a_trained_domains_tower(tracked_run, daily_data):
    ckpt = load_checkpoint(tracked_run["metrics"]["checkpoint"])
    spec = ParquetDataset(daily_data["day1"]).spec
    cfg = TrainConfig(data=daily_data["day1"], init_from="x", new_domain_from="B2")
    matching = warm_start.plan(cfg, spec, ckpt, "x")
    model = build_model("dfei", spec.cardinalities, spec.num_domains)
    state = warm_start.model_state(model, ckpt["model"], matching)
    for name in ("domain_towers.{}.6.bias", "heads.{}.1.weight"):
        assert torch.equal(state[name.format(5)], ckpt["model"][name.format(1)])  # B6 <- B2 (id 1)
    assert not bool(state["dfe.initialized"][5])  # v_B6 still starts from its first batch
    opt = build_optimizer(model)
    opt.load_state_dict(warm_start.optimizer_state(model, opt, ckpt["optimizer"], matching))
    assert model.domain_towers[5][0].weight not in opt.state  # a copy of the weights, not of B2's Adam state
    assert warm_start.init_record(matching, "x", "restored")["new_domains_seeded_from"] == "B2"
    with pytest.raises(ValueError, match=r"--new-domain-from 'B9': the checkpoint x has no such domain"):
        warm_start.plan(cfg.replace(new_domain_from="B9"), spec, ckpt, "x")
    with pytest.raises(ValueError, match="new_domain_from .* needs init_from"):
        TrainConfig(data=daily_data["day1"], new_domain_from="B2")


def test_a_diverged_checkpoint_is_refused_before_ray(tracked_run, daily_data, tmp_path):
    import shutil

    from dfei.errors import CheckpointError

    ckpt = tmp_path / "diverged"
    shutil.copytree(tracked_run["metrics"]["checkpoint"], ckpt)
    state = torch.load(ckpt / "model.pt", weights_only=True)
    state["shared_tower.0.weight"][0, 0] = float("nan")
    torch.save(state, ckpt / "model.pt")
    cfg = TrainConfig(data=daily_data["day1"], out=str(tmp_path / "run"), init_from=str(ckpt))
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) hold nan or inf \(shared_tower.0.weight\)"):
        run_training(cfg, log=lambda *a: None)
    assert not (tmp_path / "run").exists()
