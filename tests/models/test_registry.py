"""Every registered model: shapes, a training step that lowers the loss, state round trip, the
shared/domain parameter split Algorithm 1 relies on."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfei.models import BASELINES, MODELS, build_model
from dfei.train.optim import build_optimizer

CARDS = [40, 11, 7, 5]
D = 3
# models whose paper gives each domain its own parameters (MLP treats all domains as one)
PER_DOMAIN = set(MODELS) - {"mlp"}


def _batch(n: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.randint(0, c, (n,), generator=g) for c in CARDS], dim=1)
    y = (x[:, 0] % 2 == 0).float()  # learnable from feature 0
    return x, y


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shapes_and_mixed_domain_batches(name):
    torch.manual_seed(0)
    model = build_model(name, CARDS, D)
    x, _ = _batch()
    assert model(x, 1).shape == (64,)
    model.eval()
    dom = torch.arange(64) % D
    mixed = model.predict_proba(x, dom)
    for d in range(D):
        torch.testing.assert_close(mixed[dom == d], model.predict_proba(x[dom == d], d), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_training_steps_reduce_the_loss_on_a_fixed_batch(name):
    torch.manual_seed(0)
    model = build_model(name, CARDS, D)
    opt = build_optimizer(model, lr=1e-2, shared_lr_scale=1.0)
    x, y = _batch()
    model.eval()
    with torch.no_grad():
        before = F.binary_cross_entropy_with_logits(model(x, 0), y).item()
    model.train()
    for _ in range(30):
        opt.zero_grad(set_to_none=True)
        F.binary_cross_entropy_with_logits(model(x, 0), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = F.binary_cross_entropy_with_logits(model(x, 0), y).item()
    assert after < before - 0.05, (before, after)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_state_dict_round_trip(name):
    torch.manual_seed(0)
    model = build_model(name, CARDS, D)
    model.train()
    x, _ = _batch()
    model(x, 2)  # touch running statistics / buffers
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(1)
    clone = build_model(name, CARDS, D)
    clone.load_state_dict(torch.load(buf, weights_only=True))
    for d in range(D):
        assert torch.equal(clone.predict_proba(x, d), model.predict_proba(x, d))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_split(name):
    model = build_model(name, CARDS, D)
    shared = {id(p) for p in model.shared_parameters()}
    per_domain = [{id(p) for p in model.domain_parameters(d)} for d in range(D)]
    assert shared and shared.isdisjoint(set().union(*per_domain))
    assert len(shared) + sum(len(s) for s in per_domain) == len(list(model.parameters()))
    if name in PER_DOMAIN:
        assert all(per_domain) and not (per_domain[0] & per_domain[1])
    build_optimizer(model)  # the groups cover every parameter exactly once


def test_baselines_are_registered():
    assert set(BASELINES) == {"mlp", "mmoe", "ple", "aitm", "hmoe", "star", "pepnet", "hinet"} <= set(MODELS)


@pytest.mark.parametrize("backbone", [b for b in BASELINES if b != "mlp"])
def test_dfei_plugs_into_every_backbone_with_a_per_domain_representation(backbone):
    torch.manual_seed(0)
    model = build_model(f"{backbone}+dfei", CARDS, D, alpha=0.5)
    model.train()
    x, _ = _batch()
    u_seen = []
    model.backbone.represent = (lambda f: lambda e, d: u_seen.append(f(e, d)) or u_seen[-1])(model.backbone.represent)
    model(x, 1)
    torch.testing.assert_close(model.dfe.v[1], u_seen[0].detach().mean(0))  # v_1^0 = mean of the backbone's u_1
    assert model.dfe.initialized.tolist() == [False, True, False]
    assert model.embedding is model.backbone.embedding
    with pytest.raises(ValueError, match="no per-domain representation"):
        from dfei.models.mlp import MLPModel
        from dfei.models.plugin import DFEIPlugin
        DFEIPlugin(MLPModel(CARDS, D))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fused_steps_over_all_domains_reduce_the_loss(name):
    # the fused mode: one mixed batch of every domain, per-domain mean losses summed, one update.
    # 30 updates at lr 1e-2 on 64 rows: a single seed can overshoot (STAR's per-domain statistics on
    # 16-row batches), so the median over 3 seeds must fall
    from dfei.data.ingest import fused_steps
    from dfei.train.epoch import train_epoch

    x, y = _batch()
    dom = np.arange(64) % D
    items = [(s, d, x.numpy()[dom == d], y.numpy()[dom == d]) for s in range(30) for d in range(D)]
    drops = []
    for seed in range(3):
        torch.manual_seed(seed)
        model = build_model(name, CARDS, D)
        opt = build_optimizer(model, lr=1e-2, shared_lr_scale=1.0 / D)

        def loss() -> float:
            model.eval()
            with torch.no_grad():
                return F.binary_cross_entropy_with_logits(model(x, torch.from_numpy(dom)), y).item()

        before = loss()
        stats = train_epoch(model, opt, fused_steps(iter(items)), torch.device("cpu"), D)
        assert stats["steps"] == 30 and stats["samples"] == 30 * 64
        drops.append(before - loss())
    assert np.median(drops) > 0.05, drops


# ---- what each model declares (dfei.models.base.DomainModel, dfei.models.registry) ----------------

TOWERS = {"tower_dims": [16, 8], "tower_dropouts": [0.0, 0.0]}


def _other_value(option: str):
    from dfei.models.options import default

    return {"alpha": 0.5, "k": 8, "embed_dim": 4, "embed_init_std": 0.02, "domain_norm": True, "dfe_input": "shared",
            "tower_dims": [16, 8], "tower_dropouts": [0.0, 0.0]}.get(option, default(option))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_option_the_model_does_not_read_is_refused_by_the_builder_and_the_config(name):
    from dfei.config import TrainConfig
    from dfei.errors import ConfigError
    from dfei.models.options import OPTIONS
    from dfei.models.registry import unread_settings

    unread = unread_settings(name)
    assert set(unread) | set(MODELS[name].reads) == set(OPTIONS) and not set(unread) & set(MODELS[name].reads)
    for option in unread:  # (tower_dims and tower_dropouts go together: one rate per layer)
        values = {option: _other_value(option), **(TOWERS if option.startswith("tower_") else {})}
        with pytest.raises(ValueError, match=f"model '{re.escape(name)}' does not read .*{option}="):
            build_model(name, CARDS, D, **values)
        with pytest.raises(ConfigError, match=f"model '{re.escape(name)}' does not read .*{option}="):
            TrainConfig(data="x", model=name, **values)
    for option in MODELS[name].reads:  # every option it reads builds
        build_model(name, CARDS, D, **{option: _other_value(option), **(TOWERS if option.startswith("tower_") else {})})


def test_an_unknown_option_is_refused_by_the_builder():
    with pytest.raises(ValueError, match=r"unknown model option\(s\) \['depth'\]"):
        build_model("dfei", CARDS, D, depth=3)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_model_declares_its_per_domain_state_and_domain_features(name):
    model = build_model(name, CARDS, D, **({"domain_norm": True} if "domain_norm" in MODELS[name].reads else {}))
    assert isinstance(model, MODELS[name].cls)
    names = dict(model.named_modules())
    state = model.state_dict()
    # DFEI and its ablations can change domains between runs; the baselines and plug-ins have state
    # sized by the number of domains (gates, experts, the backbone's) and cannot
    assert (model.per_domain_modules is not None) == (MODELS[name].family == "dfei")
    if model.per_domain_modules is not None:  # each names a ModuleList (or an absent option's) of D modules
        present = [m for m in model.per_domain_modules if m in names]
        assert present and all(len(names[m]) == D for m in present)
        assert all(state[r].shape[0] == D for r in model.per_domain_rows if r in state)
        assert any(r in state for r in model.per_domain_rows)
    v = model.domain_features()
    has_dfe = MODELS[name].family == "plugin" or (MODELS[name].family == "dfei" and "alpha" in MODELS[name].reads)
    assert (v is not None) == has_dfe
    if v is not None:
        assert v.shape[0] == D and v.data_ptr() == state["dfe.v"].data_ptr()  # the buffer itself
    assert bool(model.compilable_layers()) == (MODELS[name].family == "dfei")
