"""Stacked domain towers (one batched matmul per layer) compute what the loop over domains computes,
and the counter-based dropout masks keep the rate they are given."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfei.models.dfei import DFEI, DFEIConfig
from dfei.models.layers import DomainGroups, Dropout, keep_mask

CARDS, D = [50, 40, 7, 5], 5


def _model(dropouts=(0.0, 0.0, 0.0)) -> DFEI:
    torch.manual_seed(0)
    return DFEI(DFEIConfig(cardinalities=CARDS, num_domains=D, tower_dropouts=list(dropouts)))


def _batch(domains: np.ndarray, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.randint(0, c, (len(domains),), generator=g) for c in CARDS], dim=1)
    y = torch.randint(0, 2, (len(domains),), generator=g).float()
    return x, y


def _logits_and_grads(model: DFEI, x, y, domains: np.ndarray, stacked: bool, train: bool):
    model.stacked = stacked
    model.train(train)
    model.zero_grad(set_to_none=True)
    if model.dfe is not None:  # every call starts from the same DFE state
        model.dfe.v.zero_()
        model.dfe.initialized.zero_()
    groups = DomainGroups.from_numpy(domains, D, torch.device("cpu"))
    logits = model(x, torch.from_numpy(domains), groups=groups)
    F.binary_cross_entropy_with_logits(logits, y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads, model.dfe.v.clone()


@pytest.mark.parametrize("layout", ["grouped-equal", "grouped-unequal", "shuffled", "some-absent"])
@pytest.mark.parametrize("train", [True, False])
def test_stacked_towers_equal_the_loop_over_domains_outputs_and_gradients(layout, train):
    rng = np.random.default_rng(1)
    if layout == "grouped-equal":  # the fused step's usual case: a view, no padding
        domains = np.repeat(np.arange(D), 12)
    elif layout == "grouped-unequal":
        domains = np.repeat(np.arange(D), [12, 3, 7, 1, 9])
    elif layout == "shuffled":  # inference: rows in any order
        domains = rng.permutation(np.repeat(np.arange(D), [12, 3, 7, 1, 9]))
    else:
        domains = rng.permutation(np.repeat([0, 2, 4], [5, 11, 2]))
    x, y = _batch(domains)
    model = _model()
    a_logits, a_grads, a_v = _logits_and_grads(model, x, y, domains, stacked=True, train=train)
    b_logits, b_grads, b_v = _logits_and_grads(model, x, y, domains, stacked=False, train=train)
    torch.testing.assert_close(a_logits, b_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a_v, b_v, rtol=1e-5, atol=1e-6)
    assert a_grads.keys() == b_grads.keys()
    absent = set(range(D)) - set(domains.tolist())
    assert not any(n.startswith((f"domain_towers.{d}.", f"heads.{d}.")) for d in absent for n in a_grads)
    for name in a_grads:
        torch.testing.assert_close(a_grads[name], b_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_mixed_inference_batch_scores_every_row_as_its_own_domain_batch():
    # batch predict (mixed domains) gives evaluation's scores (int-domain batches) up to the last bit of
    # a matmul over another number of rows; the reported AUC is re-derived from predict.py's output
    # (tests/train/test_end_to_end.py), so eval does not use the stacked matmuls
    model = _model(dropouts=(0.1, 0.2, 0.3)).eval()
    domains = np.random.default_rng(2).integers(0, D, 40)
    x, _ = _batch(domains)
    with torch.no_grad():
        mixed = model(x, torch.from_numpy(domains))
        for d in range(D):
            rows = torch.from_numpy(np.flatnonzero(domains == d))
            torch.testing.assert_close(mixed[rows], model(x[rows], d), rtol=1e-6, atol=1e-8)


def test_domain_groups_refuse_out_of_range_domains_and_a_view_needs_no_index():
    with pytest.raises(IndexError, match="domain index 5 outside"):
        DomainGroups.from_numpy(np.array([0, 5]), D, torch.device("cpu"))
    with pytest.raises(IndexError, match="domain index -1 outside"):
        DomainGroups.from_numpy(np.array([-1, 0]), D, torch.device("cpu"))
    g = DomainGroups.from_numpy(np.repeat([1, 3], 4), D, torch.device("cpu"))
    assert g.present == [1, 3] and g.m == 4 and g.dest is None
    g = DomainGroups.from_numpy(np.array([3, 1, 3, 3]), D, torch.device("cpu"))
    assert g.present == [1, 3] and g.m == 3 and g.dest.tolist() == [3, 0, 4, 5]
    h = torch.arange(4.0).unsqueeze(1)
    torch.testing.assert_close(g.unpad(g.pad(h)), h)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_keep_mask_keeps_the_given_rate_unbiased_and_is_deterministic(p):
    seed = torch.tensor(12345, dtype=torch.int32)
    mask = keep_mask(torch.Size([400, 250]), p, seed, torch.float32)
    kept = (mask > 0).float()
    n = kept.numel()
    assert abs(kept.mean().item() - (1 - p)) < 4 * (p * (1 - p) / n) ** 0.5
    assert abs(mask.mean().item() - 1.0) < 0.01  # inverted dropout: E[mask] = 1
    torch.testing.assert_close(mask, keep_mask(torch.Size([400, 250]), p, seed, torch.float32))
    other = keep_mask(torch.Size([400, 250]), p, seed + 1, torch.float32) > 0
    assert (other != (mask > 0)).float().mean().item() > 2 * p * (1 - p) - 0.02  # independent masks
    # neighbouring elements and rows are not correlated (the counter is hashed)
    a, b = kept[:, :-1].flatten(), kept[:, 1:].flatten()
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 0.02


def test_dropout_draws_from_torch_seed_and_is_identity_in_eval():
    drop = Dropout(0.2)
    x = torch.ones(64, 32)
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    torch.testing.assert_close(a, drop(x))
    assert not torch.equal(a, drop(x))
    drop.eval()
    assert drop(x) is x


def test_dfi_of_a_fused_step_gives_each_row_the_gradient_of_its_own_domain_feature_only():
    # as in a sequential step, where the other domains' v are buffers: the same z and w, but a row of
    # domain d trains v_d (and through it d's tower), never another domain's
    from dfei.models.dfei import DomainFeatureIntegration

    torch.manual_seed(0)
    dfi = DomainFeatureIntegration(12, 8, 4)
    e = torch.randn(10, 12)
    v = torch.randn(3, 8, requires_grad=True)
    domain = torch.tensor([0, 0, 1, 2, 2, 2, 1, 0, 2, 1])
    z_all, w_all = dfi(e, v)
    z, w = dfi(e, v, domain)
    torch.testing.assert_close(z, z_all)
    torch.testing.assert_close(w, w_all)
    for d in range(3):
        rows = domain == d
        (grad_v,) = torch.autograd.grad(z[rows].sum(), v, retain_graph=True)
        assert grad_v[d].abs().sum() > 0
        assert grad_v[[o for o in range(3) if o != d]].abs().sum() == 0
        # h1..h3 (shared) still learn from every row
        assert all(p.grad is None for p in dfi.parameters())
    (z.sum() + w.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dfi.parameters())


def test_the_device_paths_run_off_the_cpu_on_the_meta_device():
    # what a GPU runs that the CPU does not (torch's dropout, device-side DomainGroups index, stacked
    # bmm, the DFE and DFI on device tensors) runs here on `meta` tensors (shapes only): no CPU-only op
    # or host copy hides in the fused forward and backward
    model = _model(dropouts=(0.1, 0.2, 0.3)).to("meta")
    domains = np.repeat(np.arange(D), [4, 2, 3, 1, 5])
    x = torch.zeros(len(domains), len(CARDS), dtype=torch.long, device="meta")
    groups = DomainGroups.from_numpy(domains, D, torch.device("meta"))
    assert groups.dest.device.type == "meta"
    logits = model(x, torch.from_numpy(domains).to("meta"), groups=groups)
    assert logits.shape == (len(domains),) and logits.device.type == "meta"
    logits.sum().backward()
    assert model.domain_towers[4][0].weight.grad.device.type == "meta"
    assert Dropout(0.3)(torch.ones(3, 5, device="meta")).device.type == "meta"
