"""DDP across Ray Train workers: the domain features stay identical on every rank and equal to
one worker's on the same global batches."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import ray.cloudpickle
import torch

from dfei.models import build_model
from dfei.train.distributed import ddp_kwargs, prepare_distributed
from dfei.train.engine import train_epoch, unwrap
from dfei.train.optim import build_optimizer

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/

CARDS = [30, 11, 7, 5]
D, GLOBAL_BATCH, STEPS = 3, 64, 4


def _global_batches(steps: int):
    rng = np.random.default_rng(7)
    for step in range(steps):
        for d in range(D):
            n = GLOBAL_BATCH if d != 2 or step < 2 else 0  # domain 2 is exhausted after 2 steps
            if n:
                x = np.stack([rng.integers(0, c, n) for c in CARDS], axis=1)
                y = (rng.random(n) < 0.3).astype(np.float32)
                yield step, d, x, y


VARIANTS = {  # name: (lazy embedding updates, mode)
    "lazy-sequential": (True, "sequential"),
    "dense-sequential": (False, "sequential"),
    "lazy-fused": (True, "fused"),
}


def _lockstep_worker(config: dict) -> dict:
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    from dfei.data.ingest import fused_steps

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    out = {}
    for name, (lazy, mode) in VARIANTS.items():
        torch.manual_seed(0)
        model = build_model("dfei", CARDS, D, alpha=0.8, tower_dropouts=[0.0, 0.0, 0.0])
        optimizer = build_optimizer(model, lazy_embeddings=lazy)
        hooks = prepare_distributed(model, world)
        model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs=ddp_kwargs())
        history = []

        def my_share():  # rank r takes the r-th contiguous slice of every global batch
            for step, d, x, y in _global_batches(STEPS):
                share = len(y) // world
                yield step, d, x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]

        def recorded(stream):
            for item in stream:
                yield item
                history.append(unwrap(model).dfe.v.detach().clone().numpy())  # v after that update

        stream = fused_steps(my_share()) if mode == "fused" else my_share()
        train_epoch(model, optimizer, recorded(stream), torch.device("cpu"), D, after_backward=hooks.after_backward,
                    gather=hooks.gather)
        state = {k: v.detach().numpy().copy() for k, v in unwrap(model).state_dict().items()}
        steps = {n: int(optimizer.state[p]["step"]) for n, p in unwrap(model).named_parameters()
                 if p in optimizer.state}
        gathered = [None] * world
        if world > 1:
            dist.all_gather_object(gathered, state)
        else:
            gathered = [state]
        out[name] = {"history": np.stack(history), "states": gathered, "adam_steps": steps}
    return out


def _fit(num_workers: int) -> dict:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(_lockstep_worker, scaling_config=ScalingConfig(
        num_workers=num_workers, resources_per_worker={"CPU": 0.5}), run_config=RunConfig(name=f"lockstep-{num_workers}"))
    return trainer.fit().return_value


@pytest.fixture(scope="module")
def runs(ray_session, tmp_path_factory):
    return _fit(1), _fit(2)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rank_holds_identical_buffers_and_parameters(runs, variant):
    rank0, rank1 = runs[1][variant]["states"]
    for name in rank0:
        assert np.array_equal(rank0[name], rank1[name]), name  # exact, not approximate
    assert bool(rank0["dfe.initialized"].all())


@pytest.mark.parametrize("variant", VARIANTS)
def test_two_workers_match_one_worker_on_the_same_global_batches(runs, variant):
    one, two = runs[0][variant], runs[1][variant]
    updates = STEPS if VARIANTS[variant][1] == "fused" else STEPS * D - 2
    assert one["history"].shape == two["history"].shape == (updates, D, 32)
    np.testing.assert_allclose(two["history"], one["history"], rtol=1e-4, atol=1e-5)  # after every update
    for name, tensor in one["states"][0].items():
        np.testing.assert_allclose(two["states"][0][name], tensor, rtol=1e-3, atol=1e-4, err_msg=name)


def test_the_variants_train_differently(runs):
    # the comparison above could pass vacuously if the variants ignored their settings
    one = runs[0]
    emb = {name: one[name]["states"][0]["embedding.weight"] for name in VARIANTS}
    assert not np.allclose(emb["lazy-sequential"], emb["dense-sequential"])
    assert not np.allclose(emb["lazy-sequential"], emb["lazy-fused"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_ddp_leaves_other_domains_parameters_alone(runs, variant):
    steps = runs[1][variant]["adam_steps"]
    fused = VARIANTS[variant][1] == "fused"
    assert steps["domain_towers.0.0.weight"] == STEPS and steps["domain_towers.2.0.weight"] == 2
    assert steps["shared_tower.0.weight"] == (STEPS if fused else STEPS * D - 2)
    assert steps["embedding.weight"] == (STEPS if fused else STEPS * D - 2)
