"""DDP across Ray Train workers: every buffer (DFE's v, STAR's partitioned-norm statistics) stays
identical on every rank and equal to one worker's on the same global batches; the state is
broadcast from rank 0 at set-up and checked equal before evaluation."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import ray.cloudpickle
import torch

from dfei.models import MODELS, build_model
from dfei.train.distributed import ddp_kwargs, prepare_distributed
from dfei.train.epoch import train_epoch
from dfei.train.optim import build_optimizer
from dfei.train.step import unwrap

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


VARIANTS = {  # name: (model, lazy embedding updates, mode)
    "lazy-sequential": ("dfei", True, "sequential"),
    "dense-sequential": ("dfei", False, "sequential"),
    "lazy-fused": ("dfei", True, "fused"),
    "star-sequential": ("star", True, "sequential"),  # partitioned-norm statistics: global batch statistics
    "star+dfei-fused": ("star+dfei", True, "fused"),
}


def _build(name: str, seed: int = 0):
    torch.manual_seed(seed)
    reads = MODELS[name].reads  # (a model refuses an option it does not read)
    model = build_model(name, CARDS, D, **{k: v for k, v in (("alpha", 0.8), ("tower_dropouts", [0.0, 0.0, 0.0]))
                                           if k in reads})
    for m in model.modules():  # the baselines' dropout rates are fixed: off, so 1 and 2 workers compare
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


def _buffers(model) -> np.ndarray:
    return np.concatenate([b.detach().float().numpy().ravel() for n, b in unwrap(model).state_dict().items()
                           if n.endswith(("v", "initialized", "running_mean", "running_var", "stats_initialized"))])


def _replica_drills(rank: int, world: int) -> dict:
    """Set-up from deliberately different initial weights, then a buffer and a parameter made to differ."""
    from dfei.train.distributed import broadcast_state, check_replicas

    model = _build("star+dfei", seed=rank)  # each rank its own init: only the broadcast makes them equal
    before = model.embedding.weight.detach().clone()
    broadcast_state(model)
    out = {"changed": not torch.equal(before, model.embedding.weight), "embedding": model.embedding.weight.detach().numpy().copy(),
           "running_mean": model.backbone.running_mean.numpy().copy(), "v": model.dfe.v.numpy().copy()}
    lines: list[str] = []
    weight = model.shared_tower[0].weight
    with torch.no_grad():  # rank 1's parameter differs in its last bits (as non-deterministic GPU sums leave it)
        weight[0, 0] = torch.nextafter(weight[0, 0], torch.tensor(1.0)) if rank else weight[0, 0]
    out["replaced"] = check_replicas(model, world, "drill", lines.append)
    out["param_equal_after"] = weight.detach().numpy().copy()
    out["warning"] = lines

    def refused() -> str | None:
        try:
            check_replicas(model, world, "drill", lines.append)
        except RuntimeError as err:
            return str(err)
        return None

    with torch.no_grad():
        weight[0, 0] += rank  # a real desync: refused
    out["param_error"] = refused()
    with torch.no_grad():
        weight[0, 0] -= rank
        model.dfe.v[0, 0] += rank  # rank 1's buffer differs: a bug, refused
    out["buffer_error"] = refused()
    return out


def _lockstep_worker(config: dict) -> dict:
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    from dfei.data.ingest import fused_steps

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    out = {"drills": None}
    if world > 1:  # every rank's drill results, on rank 0 (whose return value the trainer gives back)
        out["drills"] = [None] * world
        dist.all_gather_object(out["drills"], _replica_drills(rank, world))
    for name, (model_name, lazy, mode) in VARIANTS.items():
        model = _build(model_name)
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
                history.append(_buffers(model))  # every buffer after that update

        stream = fused_steps(my_share()) if mode == "fused" else my_share()
        train_epoch(model, optimizer, recorded(stream), torch.device("cpu"), D, hooks=hooks)
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
    flags = [n for n in rank0 if n.endswith("initialized")]
    assert flags and all(bool(rank0[n].all()) for n in flags)


@pytest.mark.parametrize("variant", VARIANTS)
def test_two_workers_match_one_worker_on_the_same_global_batches(runs, variant):
    one, two = runs[0][variant], runs[1][variant]
    updates = STEPS if VARIANTS[variant][2] == "fused" else STEPS * D - 2
    assert one["history"].shape == two["history"].shape and len(one["history"]) == updates
    np.testing.assert_allclose(two["history"], one["history"], rtol=1e-4, atol=1e-5)  # after every update
    for name, tensor in one["states"][0].items():
        np.testing.assert_allclose(two["states"][0][name], tensor, rtol=1e-3, atol=1e-4, err_msg=name)


def test_the_variants_train_differently(runs):
    # the comparison above could pass vacuously if the variants ignored their settings
    one = runs[0]
    emb = {name: one[name]["states"][0]["embedding.weight"] for name in VARIANTS if VARIANTS[name][0] == "dfei"}
    assert not np.allclose(emb["lazy-sequential"], emb["dense-sequential"])
    assert not np.allclose(emb["lazy-sequential"], emb["lazy-fused"])
    star = one["star-sequential"]["states"][0]
    assert float(np.abs(star["running_mean"]).max()) > 0 and not np.allclose(star["running_var"], 1.0)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if VARIANTS[v][0] == "dfei"])
def test_ddp_leaves_other_domains_parameters_alone(runs, variant):
    steps = runs[1][variant]["adam_steps"]
    fused = VARIANTS[variant][2] == "fused"
    assert steps["domain_towers.0.0.weight"] == STEPS and steps["domain_towers.2.0.weight"] == 2
    assert steps["shared_tower.0.weight"] == (STEPS if fused else STEPS * D - 2)
    assert steps["embedding.weight"] == (STEPS if fused else STEPS * D - 2)


def test_set_up_broadcasts_rank_0s_state_to_every_rank(runs):
    rank0, rank1 = runs[1]["drills"]
    assert not rank0["changed"] and rank1["changed"]  # rank 1 started from other weights
    for key in ("embedding", "running_mean", "v"):  # the table outside DDP and every buffer
        assert np.array_equal(rank0[key], rank1[key]), key


def test_a_differing_buffer_or_desynced_parameter_is_refused_and_last_bit_drift_replaced(runs):
    rank0, rank1 = runs[1]["drills"]
    assert rank0["replaced"] == rank1["replaced"] == ["shared_tower.0.weight"]
    assert np.array_equal(rank0["param_equal_after"], rank1["param_equal_after"])
    assert "parameters ['shared_tower.0.weight'] differed between ranks by at most" in rank0["warning"][0]
    for rank in (rank0, rank1):  # every rank raises, so none waits for the others in a collective
        assert rank["param_error"] and "parameter shared_tower.0.weight differs between ranks by" in rank["param_error"]
        assert rank["buffer_error"] and "buffers ['dfe.v'] differ between ranks" in rank["buffer_error"]
