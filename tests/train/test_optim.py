"""Algorithm 1: shared parameters at lr * shared_lr_scale (1/D), domain parameters at lr, domain order."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfei.data.ingest import algorithm1_order, fused_steps
from dfei.models import build_model
from dfei.train.epoch import train_epoch
from dfei.train.optim import build_optimizer

CARDS = [40, 11, 9]
D = 4


def model():
    torch.manual_seed(0)
    return build_model("dfei", CARDS, D)


def test_shared_parameters_get_lr_over_d_and_domain_parameters_get_lr():
    m = model()
    opt = build_optimizer(m, lr=1e-3, l2=1e-6)
    groups = {g["name"]: g for g in opt.param_groups}
    shared_ids = {id(p) for p in m.shared_parameters()}
    assert {id(p) for p in groups["shared_embedding"]["params"]} | {id(p) for p in groups["shared"]["params"]} == shared_ids
    assert groups["shared_embedding"]["lr"] == pytest.approx(1e-3 / D)
    assert groups["shared"]["lr"] == pytest.approx(1e-3 / D)
    assert {id(p) for p in groups["shared_embedding"]["params"]} == {id(p) for p in m.embedding.parameters()}
    assert groups["shared_embedding"]["weight_decay"] == 1e-6 and groups["shared"]["weight_decay"] == 0
    for d in range(D):
        assert groups[f"domain_{d}"]["lr"] == pytest.approx(1e-3)
        assert {id(p) for p in groups[f"domain_{d}"]["params"]} == {id(p) for p in m.domain_parameters(d)}
    # h1..h3 (DFI) are shared, as Eq. 8 lists them in theta^s
    assert {id(p) for p in m.dfi.parameters()} <= shared_ids
    off = build_optimizer(m, lr=1e-3, shared_lr_scale=1.0)
    assert {g["name"]: g["lr"] for g in off.param_groups}["shared"] == pytest.approx(1e-3)


def _batches(steps: int, sizes: list[int]):
    rng = np.random.default_rng(0)
    for step in range(steps):
        for d in range(D):
            if step < sizes[d]:
                x = np.stack([rng.integers(0, c, 16) for c in CARDS], axis=1)
                yield step, d, x, rng.integers(0, 2, 16).astype(np.float32)


def test_a_domain_step_moves_that_domain_and_the_shared_parameters_only():
    m = model()
    opt = build_optimizer(m)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    x = torch.from_numpy(np.stack([np.arange(16) % c for c in CARDS], axis=1))
    opt.zero_grad(set_to_none=True)
    F.binary_cross_entropy_with_logits(m(x, 2), torch.ones(16)).backward()
    opt.step()
    moved = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("domain_towers.2.") for n in moved) and any(n.startswith("heads.2.") for n in moved)
    assert not any(n.startswith(("domain_towers.0.", "domain_towers.1.", "domain_towers.3.", "heads.0.", "heads.1.",
                                 "heads.3.")) for n in moved)
    assert any(n.startswith("embedding.") for n in moved) and any(n.startswith("shared_tower.") for n in moved)


def test_shared_parameters_update_once_per_domain_batch_domain_parameters_once_per_own_batch():
    m = model()
    opt = build_optimizer(m)
    stats = train_epoch(m, opt, _batches(3, [3, 3, 1, 2]), torch.device("cpu"), D)
    steps = {id(p): int(opt.state[p]["step"]) for p in m.parameters() if p in opt.state}
    shared = next(iter(m.shared_tower.parameters()))
    assert steps[id(shared)] == 3 + 3 + 1 + 2 == stats["updates"]  # what global_step counts
    for d, n in enumerate([3, 3, 1, 2]):
        assert steps[id(next(iter(m.domain_towers[d].parameters())))] == n


class _Reader:
    def __init__(self, d: int, n_batches: int):
        self.domain_index, self.num_batches = d, n_batches

    def batches(self, epoch: int = 0, skip: int = 0):
        for i in range(skip, self.num_batches):
            yield np.full((1, 1), epoch), np.array([i], dtype=np.float32)


def test_algorithm1_order_feeds_one_batch_of_every_domain_per_step():
    order = [(s, d) for s, d, _, _ in algorithm1_order([_Reader(0, 3), _Reader(1, 1), _Reader(2, 2)], 0)]
    assert order == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0)]  # exhaust: finished domains are skipped
    cyc = [(s, d, int(y[0])) for s, d, _, y in algorithm1_order([_Reader(0, 3), _Reader(1, 1)], 0, "cycle")]
    assert cyc == [(0, 0, 0), (0, 1, 0), (1, 0, 1), (1, 1, 0), (2, 0, 2), (2, 1, 0)]
    with pytest.raises(ValueError, match="exhaustion"):
        list(algorithm1_order([_Reader(0, 1)], 0, "bogus"))


def test_a_fused_step_updates_once_with_the_shared_lr_times_the_present_domains():
    m = model()
    for mod in m.modules():  # no dropout: Adam's first step is then exactly lr * sign(grad)
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    opt = build_optimizer(m, lr=1e-3)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    present = [0, 1, 3]  # domain 2 is exhausted in this step
    train_epoch(m, opt, fused_steps(b for b in _batches(1, [1, 1, 0, 1])), torch.device("cpu"), D)
    moved = {n: (p.detach() - before[n]).abs() for n, p in m.named_parameters()}

    def step_size(name):  # Adam's first step is lr * g / (|g| + eps): the largest |g| shows lr
        return float(moved[name].max())

    # (rel 1e-2: the shared gradient is the domains' mean, small enough for Adam's eps to show)
    assert step_size("shared_tower.0.weight") == pytest.approx(len(present) * 1e-3 / D, rel=1e-2)
    assert step_size("embedding.weight") == pytest.approx(len(present) * 1e-3 / D, rel=1e-2)
    for d in present:
        assert step_size(f"domain_towers.{d}.0.weight") == pytest.approx(1e-3, rel=1e-3)
    assert float(moved["domain_towers.2.0.weight"].max()) == 0.0
    assert {g["name"]: g["lr"] for g in opt.param_groups}["shared"] == pytest.approx(1e-3 / D)  # restored
    steps = {id(p): int(opt.state[p]["step"]) for p in m.parameters() if p in opt.state}
    assert steps[id(m.embedding.weight)] == 1 and steps[id(next(iter(m.shared_tower.parameters())))] == 1


def test_a_fused_step_feeds_adam_the_mean_of_the_domains_shared_gradients():
    # Adam's moments see one domain's gradient scale however many domains a fused step holds: the
    # dense shared parameters get the mean over the present domains, each embedding row the mean
    # over the domains whose batch holds it; domain parameters their own domain's gradient
    from dfei.train.step import embedding_row_domains

    m = model()
    for mod in m.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    items = list(_batches(1, [1, 1, 0, 1]))
    (_, domains, x, y), = list(fused_steps(iter(items)))
    xb, yb, db = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(domains)
    # each domain's own gradient, from the fused forward itself (DFE and DFI see every domain's rows)
    reference = copy.deepcopy(m)
    per_row = F.binary_cross_entropy_with_logits(reference(xb, db), yb, reduction="none")
    shared_w, domain_w, table = (reference.shared_tower[0].weight, reference.domain_towers[1][0].weight,
                                 reference.embedding.weight)
    grads = []
    for d in (0, 1, 3):
        loss_d = per_row[db == d].mean()
        grads.append(torch.autograd.grad(loss_d, [shared_w, domain_w, table], retain_graph=True, allow_unused=True))
    opt = build_optimizer(m, lr=1e-3)
    train_epoch(m, opt, iter([(0, domains, x, y)]), torch.device("cpu"), D)
    beta1 = opt.param_groups[0]["betas"][0]
    shared_mean = sum(g[0] for g in grads) / 3
    tight = {"rtol": 1e-4, "atol": 1e-10}  # gradients here are ~1e-6: the default atol (1e-5) would pass anything
    torch.testing.assert_close(opt.state[m.shared_tower[0].weight]["exp_avg"], (1 - beta1) * shared_mean, **tight)
    torch.testing.assert_close(opt.state[m.domain_towers[1][0].weight]["exp_avg"], (1 - beta1) * grads[1][1], **tight)
    rows, counts = embedding_row_domains(m.embedding, xb, db, D)
    row_sum = sum(g[2].to_dense() if g[2].is_sparse else g[2] for g in grads)[rows]
    l2 = opt.param_groups[0]["weight_decay"] * reference.embedding.weight.detach()[rows]
    expected = (1 - beta1) * (row_sum / counts.unsqueeze(1) + l2)
    torch.testing.assert_close(opt.state[m.embedding.weight]["exp_avg"][rows], expected, **tight)
    assert counts.max() > 1  # some rows are in several domains' batches: their mean is not their sum


def test_lazy_updates_touch_only_the_rows_in_the_batch_and_dense_updates_every_row():
    x = torch.from_numpy(np.stack([np.arange(16) % 5 for _ in CARDS], axis=1))  # ids 0..4 of every feature
    seen = torch.zeros(sum(CARDS), dtype=torch.bool)
    seen[(x + torch.tensor([0, CARDS[0], CARDS[0] + CARDS[1]])).flatten()] = True
    for lazy in (True, False):
        m = model()
        opt = build_optimizer(m, lazy_embeddings=lazy)
        for _ in range(2):  # the second step: dense Adam's moments move rows that had a gradient before
            opt.zero_grad(set_to_none=True)
            F.binary_cross_entropy_with_logits(m(x, 1), torch.ones(16)).backward()
            before = m.embedding.weight.detach().clone()
            opt.step()
        changed = (m.embedding.weight.detach() != before).any(dim=1)
        assert m.embedding.weight.grad.is_sparse == lazy
        assert bool(changed[seen].all())
        assert bool(changed[~seen].any()) != lazy  # dense: L2 decay moves every row; lazy: none of the others


def test_lazy_adam_matches_adam_on_rows_that_get_a_gradient_every_step():
    # with every row in every batch and no L2, lazy Adam is Adam
    torch.manual_seed(0)
    cards = [4, 3]
    x = torch.tensor([[i % 4, i % 3] for i in range(12)])
    y = torch.tensor([float(i % 2) for i in range(12)])
    a, b = build_model("dfei", cards, 2), build_model("dfei", cards, 2)
    b.load_state_dict(a.state_dict())
    for mod in list(a.modules()) + list(b.modules()):
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    opt_a, opt_b = build_optimizer(a, l2=0.0, lazy_embeddings=True), build_optimizer(b, l2=0.0, lazy_embeddings=False)
    for _ in range(5):
        for m, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad(set_to_none=True)
            F.binary_cross_entropy_with_logits(m(x, 0), y).backward()
            opt.step()
    torch.testing.assert_close(a.embedding.weight, b.embedding.weight, rtol=1e-5, atol=1e-6)


def test_fused_rows_learn_at_the_lr_of_the_domains_whose_batches_hold_them():
    from dfei.train.step import embedding_row_domains

    m = model()  # features of 40, 11 and 9 ids: rows 0..39, 40..50, 51..59
    x = torch.tensor([[5, 0, 0], [5, 1, 0], [7, 0, 0]])
    domains = torch.tensor([0, 1, 1])
    rows, counts = embedding_row_domains(m.embedding, x, domains, D)
    assert rows.tolist() == [5, 7, 40, 41, 51] and counts.tolist() == [2, 1, 2, 1, 2]
    # rows in one domain's batch move at lr / D, rows in two domains' batches at 2 lr / D
    opt = build_optimizer(m, lr=1e-3)
    before = m.embedding.weight.detach().clone()
    items = [(0, d, x[domains == d].numpy(), np.ones(int((domains == d).sum()), dtype=np.float32)) for d in (0, 1)]
    train_epoch(m, opt, fused_steps(iter(items)), torch.device("cpu"), D)
    moved = (m.embedding.weight.detach() - before).abs().max(dim=1).values
    assert float(moved[7]) == pytest.approx(1e-3 / D, rel=1e-3) and float(moved[5]) == pytest.approx(2e-3 / D, rel=1e-3)
    assert float(moved[6]) == 0.0


def test_the_fused_mode_refuses_dense_embedding_updates():
    from dfei.config import TrainConfig

    with pytest.raises(ValueError, match="mode fused needs embedding_update lazy"):
        TrainConfig(data="x", mode="fused", embedding_update="dense")


def test_a_fused_epoch_counts_one_update_per_step():
    m = model()
    opt = build_optimizer(m)
    stats = train_epoch(m, opt, fused_steps(iter(list(_batches(3, [3, 3, 1, 2])))), torch.device("cpu"), D)
    assert stats["updates"] == 3 and sum(stats["batches"]) == 9  # global_step counts updates, not domain batches
    assert int(opt.state[next(iter(m.shared_tower.parameters()))]["step"]) == 3
