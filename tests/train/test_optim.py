"""Algorithm 1: shared parameters at lr * shared_lr_scale (1/D), domain parameters at lr, domain order."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfei.data.ingest import algorithm1_order
from dfei.models import build_model
from dfei.train.engine import train_epoch
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
    train_epoch(m, opt, _batches(3, [3, 3, 1, 2]), torch.device("cpu"), D)
    steps = {id(p): int(opt.state[p]["step"]) for p in m.parameters() if p in opt.state}
    shared = next(iter(m.shared_tower.parameters()))
    assert steps[id(shared)] == 3 + 3 + 1 + 2
    for d, n in enumerate([3, 3, 1, 2]):
        assert steps[id(next(iter(m.domain_towers[d].parameters())))] == n


class _Reader:
    def __init__(self, d: int, n_batches: int):
        self.domain_index, self.num_batches = d, n_batches

    def batches(self, epoch: int = 0):
        for i in range(self.num_batches):
            yield np.full((1, 1), epoch), np.array([i], dtype=np.float32)


def test_algorithm1_order_feeds_one_batch_of_every_domain_per_step():
    order = [(s, d) for s, d, _, _ in algorithm1_order([_Reader(0, 3), _Reader(1, 1), _Reader(2, 2)], 0)]
    assert order == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0)]  # exhaust: finished domains are skipped
    cyc = [(s, d, int(y[0])) for s, d, _, y in algorithm1_order([_Reader(0, 3), _Reader(1, 1)], 0, "cycle")]
    assert cyc == [(0, 0, 0), (0, 1, 0), (1, 0, 1), (1, 1, 0), (2, 0, 2), (2, 1, 0)]
    with pytest.raises(ValueError, match="exhaustion"):
        list(algorithm1_order([_Reader(0, 1)], 0, "bogus"))
