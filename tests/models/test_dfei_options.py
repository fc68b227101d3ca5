"""DFEI's options beyond the paper (issue 18's hypotheses): `domain_norm` (STAR's partitioned
normalisation of e) and `dfe_input` "shared"; off by default, so `dfei` stays the paper's model."""
from __future__ import annotations

import re

import pytest
import torch

from dfei.errors import ConfigError
from dfei.models import DFEI, DFEIConfig
from dfei.config import TrainConfig

CARDS = [50, 20, 11, 7]
D = 3


def make_model(**kw) -> DFEI:
    torch.manual_seed(0)
    return DFEI(DFEIConfig(cardinalities=CARDS, num_domains=D, tower_dropouts=[0.0, 0.0, 0.0], **kw))


def batch(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, c, (n,), generator=g) for c in CARDS], dim=1)


def test_defaults_are_the_papers_model():
    model = make_model()
    assert not hasattr(model, "norm") and model.config.dfe_input == "domain"
    assert not any("norm" in name for name in model.state_dict())


def test_domain_norm_standardises_each_domains_rows_with_its_own_statistics():
    model = make_model(domain_norm=True)
    seen = []
    model.shared_tower.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    x = batch(64, 1)
    model.train()
    model(x, 1)  # one domain's batch: its statistics are this batch's
    e = model.embedding(x)
    expected = (e - e.mean(0)) / torch.sqrt(e.var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(seen[0], expected, rtol=1e-4, atol=1e-4)
    assert model.norm.initialized.tolist() == [False, True, False]
    torch.testing.assert_close(model.norm.running_mean[1], e.mean(0).detach())  # the first batch sets them
    assert torch.equal(model.norm.running_mean[0], torch.zeros_like(model.norm.running_mean[0]))


def test_domain_norm_mixed_eval_batches_equal_single_domain_calls_and_the_affine_is_per_domain():
    model = make_model(domain_norm=True)
    model.train()
    for d in range(D):
        model(batch(32, d), d)
    with torch.no_grad():
        model.domain_norms[2].gamma.mul_(3.0)
    model.eval()
    x, dom = batch(30, 9), torch.arange(30) % D
    mixed = model(x, dom)
    single = torch.empty(30)
    for d in range(D):
        single[dom == d] = model(x[dom == d], d)
    torch.testing.assert_close(mixed, single, rtol=1e-6, atol=1e-7)  # GEMM blocking differs with batch size
    shared = {id(p) for p in model.shared_parameters()}
    assert id(model.norm.gamma) in shared and id(model.domain_norms[2].gamma) not in shared
    assert id(model.domain_norms[2].gamma) in {id(p) for p in model.domain_parameters(2)}
    assert id(model.domain_norms[2].gamma) not in {id(p) for p in model.domain_parameters(1)}


def test_dfe_input_shared_averages_the_shared_towers_output():
    for dfe_input, tower in (("shared", "shared_tower"), ("domain", "domain_towers")):
        model = make_model(dfe_input=dfe_input)
        seen = []
        module = model.shared_tower if tower == "shared_tower" else model.domain_towers[0]
        module.register_forward_hook(lambda mod, inp, out: seen.append(out.detach().clone()))
        model.train()
        model(batch(16, 3), 0)
        torch.testing.assert_close(model.dfe.v[0], seen[0].mean(0))


def test_the_options_are_refused_where_they_do_not_apply():
    with pytest.raises(ConfigError, match="model 'star' does not read domain_norm=True"):
        TrainConfig(data="x", model="star", domain_norm=True)
    with pytest.raises(ConfigError, match="model 'dfei_wo_dfei' does not read dfe_input='shared'"):
        TrainConfig(data="x", model="dfei_wo_dfei", dfe_input="shared")
    with pytest.raises(ConfigError, match="dfe_input"):
        TrainConfig(data="x", dfe_input="tower")
    with pytest.raises(ConfigError, match="embed_init_std"):
        TrainConfig(data="x", embed_init_std=0)
    TrainConfig(data="x", model="dfei_wo_dfi", domain_norm=True, dfe_input="shared")


@pytest.mark.parametrize("model, settings, named", [
    ("mlp", {"alpha": 0.3}, "alpha=0.3"),
    ("star+dfei", {"tower_dims": [64, 32], "tower_dropouts": [0.1, 0.2]}, "tower_dims=[64, 32], tower_dropouts=[0.1, 0.2]"),
    ("dfei_wo_dfi", {"k": 64}, "k=64"),
    ("dfei_wo_dfei", {"alpha": 0.5}, "alpha=0.5"),
])
def test_a_setting_the_model_does_not_read_is_refused_by_name(model, settings, named):
    """Before, the registry dropped it and metrics.json recorded it as if it had been used."""
    with pytest.raises(ConfigError, match=re.escape(f"model '{model}' does not read {named}")):
        TrainConfig(data="x", model=model, **settings)
    TrainConfig(data="x", model="star+dfei", alpha=0.5, k=16)  # what the plug-in does read


def test_a_checkpoint_config_that_recorded_an_unread_setting_still_loads():
    cfg = TrainConfig.from_dict({"data": "x", "model": "mlp", "alpha": 0.3}, legacy=True)
    assert (cfg.model, cfg.alpha) == ("mlp", 0.9)  # the value the model never read is dropped


@pytest.mark.parametrize("options, message", [
    ({"alpha": 1.5}, "alpha = 1.5: expected a value <= 1"),
    ({"k": 0}, "k = 0: expected a value >= 1"),
    ({"k": 2.5}, "k = 2.5: expected an integer"),
    ({"domain_norm": 1}, "domain_norm = 1: expected true or false"),
    ({"dfe_input": "tower"}, "dfe_input = 'tower': expected one of ['domain', 'shared']"),
    ({"tower_dims": [64, 0], "tower_dropouts": [0.1, 0.1]}, "tower_dims[1] = 0: expected a value >= 1"),
    ({"tower_dims": [64], "tower_dropouts": [1.0]}, "tower_dropouts[0] = 1.0: expected a value < 1"),
    ({"tower_dims": [64, 32]}, "tower_dropouts has 3 rate(s) for 2 tower layer(s)"),
    ({"depth": 3}, "unknown model option(s) ['depth']"),
])
def test_the_model_config_checks_each_option_against_its_declaration(options, message):
    """Without pydantic (the models import on a bare GPU host): the declared kinds and ranges."""
    with pytest.raises(ValueError, match=re.escape(message)):
        DFEIConfig(cardinalities=CARDS, num_domains=D, **options)
    assert DFEIConfig(cardinalities=CARDS, num_domains=D, alpha=1.0, tower_dims=[8], tower_dropouts=[0.0]).alpha == 1.0
