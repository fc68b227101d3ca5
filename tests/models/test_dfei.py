"""DFE / DFI behaviour the paper promises (v identical on every worker, used at inference), and what the authors' code gets wrong."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from dfei.models import DFEI, DFEIConfig, DomainFeatureExtraction, build_model
from dfei.train.checkpoint import load_checkpoint, save_checkpoint

CARDS = [50, 20, 11, 7]
D = 3


def make_model(**kw) -> DFEI:
    torch.manual_seed(0)
    return DFEI(DFEIConfig(cardinalities=CARDS, num_domains=D, **kw))


def batch(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, c, (n,), generator=g) for c in CARDS], dim=1)


def capture_tower_outputs(model: DFEI) -> list[list[torch.Tensor]]:
    """u_d = f_d(e) as the forward computed it (dropout included), per domain."""
    seen: list[list[torch.Tensor]] = [[] for _ in range(D)]
    for d, tower in enumerate(model.domain_towers):
        tower.register_forward_hook(lambda mod, inp, out, d=d: seen[d].append(out.detach().clone()))
    return seen


def test_first_batch_initialises_buffer_and_ema_follows_hand_computation():
    model = make_model(alpha=0.7)
    seen = capture_tower_outputs(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    assert not model.dfe.initialized.any()
    order = [0, 1, 2, 0, 1, 2, 0, 2]
    for t, d in enumerate(order):
        x, y = batch(32, seed=t), torch.randint(0, 2, (32,)).float()
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(x, d), y).backward()
        opt.step()
        if t == 0:  # v_0^0 = mean(u_0^0)
            torch.testing.assert_close(model.dfe.v[0], seen[0][0].mean(0))
            assert model.dfe.initialized.tolist() == [True, False, False]
    for d in range(D):
        expected = seen[d][0].mean(0)
        for u in seen[d][1:]:
            expected = 0.7 * expected + 0.3 * u.mean(0)
        torch.testing.assert_close(model.dfe.v[d], expected, rtol=1e-5, atol=1e-6)
    assert model.dfe.initialized.all()


def test_eval_forward_leaves_buffer_unchanged():
    model = make_model()
    model.train()
    for d in range(D):
        model(batch(16, d), d)
    before = model.dfe.v.clone()
    model.eval()
    with torch.no_grad():
        for d in range(D):
            model(batch(64, 10 + d), d)
        model(batch(64, 20), torch.tensor([0, 1, 2] * 21 + [0]))
    assert torch.equal(model.dfe.v, before)


def test_gradient_flows_through_current_batch_mean_only():
    dfe = DomainFeatureExtraction(num_domains=2, dim=4, alpha=0.9)
    dfe.train()
    u1 = torch.randn(8, 4, requires_grad=True)
    dfe(u1, torch.zeros(8, dtype=torch.long))
    u2 = torch.randn(8, 4, requires_grad=True)
    v = dfe(u2, torch.zeros(8, dtype=torch.long))
    v[0].sum().backward()
    torch.testing.assert_close(u2.grad, torch.full((8, 4), 0.1 / 8))  # (1 - alpha) / B
    assert u1.grad is None  # v^{t-1} is a constant
    assert "v" in dict(dfe.named_buffers()) and not list(dfe.parameters())


def test_mixed_domain_batch_uses_scatter_means_and_matches_single_domain_predictions():
    model = make_model(tower_dropouts=[0.0, 0.0, 0.0])
    model.train()
    x = batch(30, 1)
    dom = torch.tensor([0, 1, 2] * 10)
    model(x, dom)
    with torch.no_grad():
        e = model.embedding(x)
        for d in range(D):
            torch.testing.assert_close(model.dfe.v[d], model.domain_towers[d](e[dom == d]).mean(0))
    model.eval()
    mixed = model.predict_proba(x, dom)
    for d in range(D):
        torch.testing.assert_close(mixed[dom == d], model.predict_proba(x[dom == d], d))


def test_dfi_weights_are_a_softmax_over_domains_with_a_per_sample_query():
    model = make_model()
    model.train()
    for d in range(D):
        model(batch(16, d), d)
    model.eval()
    e = model.embedding(batch(10, 5))
    z, w = model.dfi(e, model.dfe.v)
    assert w.shape == (10, D) and z.shape == (10, model.config.k)
    torch.testing.assert_close(w.sum(1), torch.ones(10))
    assert not torch.allclose(w[0], w[1])  # the query h2(e) is personalised
    # keys and values depend on the domain features only: z = w @ h1(V) with one value matrix
    torch.testing.assert_close(z, w @ model.dfi.h1(model.dfe.v))
    z2, w2 = model.dfi(e.flip(0), model.dfe.v)
    torch.testing.assert_close(w2, w.flip(0))


def test_checkpoint_round_trip_restores_buffer_bit_exactly(tmp_path):
    model = make_model()
    opt = torch.optim.Adam(model.parameters())
    model.train()
    for t in range(5):
        opt.zero_grad()
        model(batch(32, t), t % D).sum().backward()
        opt.step()
    save_checkpoint(str(tmp_path), model.state_dict(), opt.state_dict(), {"epoch": 0})
    restored = DFEI(DFEIConfig(cardinalities=CARDS, num_domains=D))
    ckpt = load_checkpoint(str(tmp_path))
    restored.load_state_dict(ckpt["model"])
    assert torch.equal(restored.dfe.v, model.dfe.v)
    assert torch.equal(restored.dfe.initialized, model.dfe.initialized)
    x = batch(64, 99)
    for d in range(D):
        assert torch.equal(restored.predict_proba(x, d), model.predict_proba(x, d))


def test_ablation_switches_change_the_architecture():
    full = build_model("dfei", CARDS, D)
    wo_dfi = build_model("dfei_wo_dfi", CARDS, D)
    wo_dfei = build_model("dfei_wo_dfei", CARDS, D)
    assert full.dfe is not None and full.dfi is not None
    assert wo_dfi.dfe is not None and wo_dfi.dfi is None
    assert wo_dfei.dfe is None and wo_dfei.dfi is None
    x = batch(8, 0)
    for m in (full, wo_dfi, wo_dfei):
        assert m(x, 1).shape == (8,)
    with pytest.raises(ValueError, match="use_dfi=True needs use_dfe=True"):
        DFEIConfig(cardinalities=CARDS, num_domains=D, use_dfe=False, use_dfi=True)
    with pytest.raises(ValueError, match="alpha"):
        DFEIConfig(cardinalities=CARDS, num_domains=D, alpha=1.5)


def test_paper_sizes():
    m = make_model()
    linears = [mod for mod in m.domain_towers[0] if isinstance(mod, torch.nn.Linear)]
    assert [l.out_features for l in linears] == [128, 64, 32]
    drops = [mod.p for mod in m.shared_tower if isinstance(mod, torch.nn.Dropout)]
    assert drops == [0.1, 0.2, 0.3]
    assert m.embedding.weight.shape == (sum(CARDS), 16) and m.embedding.output_dim == 16 * len(CARDS)
    assert m.config.k == 32 and m.config.alpha == 0.9


def test_models_package_imports_no_ray():
    code = "import sys, dfei.models; bad = [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]; " \
           "sys.exit(1 if bad else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_the_fused_table_looks_up_each_features_own_rows():
    from dfei.models.layers import FeatureEmbedding

    emb = FeatureEmbedding([3, 5, 2], dim=4)
    x = torch.tensor([[2, 0, 1], [0, 4, 0]])
    e = emb(x).view(2, 3, 4)
    w = emb.weight.detach()
    assert torch.equal(e[0, 0], w[2]) and torch.equal(e[0, 1], w[3 + 0]) and torch.equal(e[0, 2], w[3 + 5 + 1])
    assert torch.equal(e[1, 1], w[3 + 4]) and torch.equal(e[1, 2], w[8])
    emb.sparse = True
    emb(x).sum().backward()
    grad = emb.weight.grad.coalesce()
    assert emb.weight.grad.is_sparse and sorted(grad.indices()[0].tolist()) == [0, 2, 3, 7, 8, 9]
