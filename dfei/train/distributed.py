"""DDP wiring: the batch-statistics all-reduce, DDP's settings, the all-reduce of the embedding
table's row-sparse gradient, and keeping every rank's model state identical.

After every step every worker holds the same v. The batch mean that updates v_d is the
global mean over all workers, computed by one all-reduce of every domain's [sum, count]. The
all-reduce is autograd-aware: its backward sums the gradient of v over the ranks, so each rank's
towers get the gradient of the *global* loss through v, exactly as one worker on the global batch.
The same holds for every module with batch statistics (`GlobalBatchStatistics`: DFE, STAR's
partitioned norm). DDP's own buffer sync is off (it would overwrite v with rank 0's), and the
embedding table is outside DDP when its gradient is sparse, so the whole state is broadcast from
rank 0 once at set-up, and checked equal on every rank before each evaluation and checkpoint.
"""
from __future__ import annotations

import hashlib
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dfei.models.layers import GlobalBatchStatistics

# the functional collectives are deprecated in favour of ones whose autograd differs: we need these
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_reduce is deprecated",
                        category=FutureWarning)


def allreduce_domain_stats(sums: torch.Tensor, counts: torch.Tensor, group=None) -> tuple[torch.Tensor, torch.Tensor]:
    """[D, dim] sums and [D] counts of this rank -> the global ones, in one collective."""
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_reduce

    buf = all_reduce(torch.cat([sums, counts.unsqueeze(1)], dim=1), group=group or dist.group.WORLD)
    return buf[:, :-1], buf[:, -1]


class StatsReducer:
    """allreduce_domain_stats on its own process group. On DDP's group, its backward all-reduce
    would queue behind DDP's gradient buckets (a process group runs its collectives in order) and
    stall the backward pass until they are done, losing DDP's overlap of communication and compute."""

    def __init__(self):
        import torch.distributed as dist

        self.group = dist.new_group()  # every rank must create it, in the same order

    def __call__(self, sums: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return allreduce_domain_stats(sums, counts, self.group)


def ddp_kwargs() -> dict[str, Any]:
    """DDP must not overwrite the DFE buffer (the stats all-reduce keeps it equal on every rank).

    In a sequential step only one domain's tower and head take part: find_unused_parameters lets
    DDP reduce the rest without waiting for gradients that never come; their grads stay None, so
    Adam leaves other domains' parameters (and their moments) alone, as on one worker.
    """
    from torch.nn.parallel import DistributedDataParallel

    params = inspect.signature(DistributedDataParallel.__init__).parameters
    sync = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"  # torch < 2.13
    return {sync: False, "find_unused_parameters": True}


def attach_reducer(model: nn.Module, world_size: int) -> None:
    """On N > 1 ranks, give every GlobalBatchStatistics module one all-reduce (on its own process
    group). Refuses a model with buffers outside such modules: nothing would keep them equal."""
    if world_size <= 1:
        return
    modules = [m for m in model.modules() if isinstance(m, GlobalBatchStatistics)]
    owned = {id(b) for m in modules for b in m.buffers(recurse=False)}
    persistent = set(model.state_dict())  # model state; non-persistent buffers are constants of the architecture
    stray = [n for n, b in model.named_buffers() if n in persistent and id(b) not in owned]
    if stray:
        raise RuntimeError(f"{type(model).__name__} has buffers {stray} outside any GlobalBatchStatistics module: "
                           "under DDP nothing would keep them equal on every rank")
    if modules:
        reducer = StatsReducer()
        for module in modules:
            module.reducer = reducer


def embedding_parameter_name(model: nn.Module) -> str:
    """The fully qualified name DDP knows the embedding table by (a plug-in shares its backbone's)."""
    return next(n for n, p in model.named_parameters() if p is model.embedding.weight)


def exclude_sparse_embedding_from_ddp(model: nn.Module) -> bool:
    """With lazy embedding updates the table's gradient is row-sparse, which DDP can reduce on gloo
    only (NCCL has no sparse all-reduce): DDP leaves it alone and `allreduce_sparse_grad` does it,
    with dense collectives that every backend has. Call before wrapping the model in DDP.

    Private API, checked against PyTorch 2.13: DDP's static _set_params_and_buffers_to_ignore_for_model,
    the only way to exclude one parameter of a module from DDP (pytorch/pytorch#43690; Ray Train's
    prepare_model wraps the whole module). tests/train/test_private_apis.py fails loudly if it goes."""
    if not getattr(model.embedding, "sparse", False):
        return False
    from torch.nn.parallel import DistributedDataParallel

    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, [embedding_parameter_name(model)])
    return True


def all_gather_varlen(t: torch.Tensor, world_size: int, sizes: list[int] | None = None) -> list[torch.Tensor]:
    """Every rank's tensor (same trailing shape, any length): gather the lengths (unless `sizes`
    already holds them), pad to the longest, all-gather, cut. Dense collectives only, so any
    backend (gloo, NCCL) does it."""
    import torch.distributed as dist

    if sizes is None:
        n = torch.tensor([t.shape[0]], device=t.device)
        gathered = [torch.zeros_like(n) for _ in range(world_size)]
        dist.all_gather(gathered, n)
        sizes = [int(x) for x in gathered]
    padded = t.new_zeros((max(sizes), *t.shape[1:]))
    padded[:t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    return [part[:k] for part, k in zip(parts, sizes)]


def allreduce_sparse_grad(param: torch.Tensor, world_size: int) -> None:
    """Average a row-sparse gradient over the ranks, as DDP averages dense ones: all-gather every
    rank's (rows, values), then sum duplicate rows and divide by N."""
    grad = param.grad.coalesce() if param.grad is not None else torch.sparse_coo_tensor(
        torch.zeros(1, 0, dtype=torch.long, device=param.device), param.new_zeros(0, param.shape[1]), param.shape,
        check_invariants=False)
    rows = all_gather_varlen(grad.indices()[0], world_size)
    values = torch.cat(all_gather_varlen(grad.values(), world_size, [len(r) for r in rows])) / world_size
    rows = torch.cat(rows)
    param.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), values, param.shape, check_invariants=False).coalesce()


def broadcast_state(model: nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s parameters and buffers to every rank (one broadcast per tensor). Called once
    after set-up (initialisation, restore, warm start): DDP broadcasts only the parameters it
    manages, so the embedding table outside DDP and the buffers would otherwise rest on every
    rank seeding and restoring identically."""
    import torch.distributed as dist

    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor.data, src=src)


def _digest(t: torch.Tensor) -> str:
    return hashlib.blake2b(t.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).hexdigest()


def differing_state(model: nn.Module, world_size: int) -> dict[str, list[str]]:
    """{"buffers": names, "parameters": names} of the state tensors that are not bitwise equal on
    every rank (one all_gather_object of per-tensor digests)."""
    import torch.distributed as dist

    buffers = {n for n, _ in model.named_buffers()}
    mine = {n: _digest(t) for n, t in model.state_dict().items()}
    every: list = [None] * world_size
    dist.all_gather_object(every, mine)
    differ = sorted(n for n in mine if any(other.get(n) != mine[n] for other in every))
    return {"buffers": [n for n in differ if n in buffers], "parameters": [n for n in differ if n not in buffers]}


PARAMETER_TOLERANCE = 1e-4  # relative to the tensor's largest magnitude: last-bit drift, not a desync


def check_replicas(model: nn.Module, world_size: int, when: str, log=print) -> list[str]:
    """Before an evaluation or a checkpoint on N > 1 ranks: every rank must hold the same state.

    Buffers are equal by construction (GlobalBatchStatistics): a buffer that differs is a bug and
    raises RuntimeError on every rank, naming it. Parameters are equal when every rank applies the
    same averaged gradients; a backend whose reductions are not bitwise deterministic (some GPU
    kernels) may leave last-bit differences: a parameter within PARAMETER_TOLERANCE of rank 0's
    is replaced by rank 0's (logged), so evaluation and checkpoint agree; a larger difference is a
    desync and raises RuntimeError on every rank. Returns the parameters replaced."""
    if world_size <= 1:
        return []
    import torch.distributed as dist

    differ = differing_state(model, world_size)  # the same lists on every rank
    if differ["buffers"]:
        raise RuntimeError(f"{when}: buffers {differ['buffers']} differ between ranks; every rank must hold the "
                           "same model state (this is a bug: the buffers' module must reduce its statistics over "
                           "the ranks, see GlobalBatchStatistics)")
    if not differ["parameters"]:
        return []
    params = dict(model.named_parameters())
    refs, gaps = [], []
    with torch.no_grad():
        for name in differ["parameters"]:
            ref = params[name].detach().clone()
            dist.broadcast(ref, src=0)
            refs.append(ref)
            gaps.append(((params[name] - ref).abs().max() / ref.abs().max().clamp(min=1e-12)).double().reshape(1))
        gap = torch.cat(gaps)
        dist.all_reduce(gap, op=dist.ReduceOp.MAX)
        worst = int(gap.argmax())
        if float(gap[worst]) > PARAMETER_TOLERANCE:
            raise RuntimeError(f"{when}: parameter {differ['parameters'][worst]} differs between ranks by "
                               f"{float(gap[worst]):.3g} of its magnitude (> {PARAMETER_TOLERANCE:g}): the ranks "
                               "did not apply the same updates (this is a bug in the gradient all-reduce)")
        for name, ref in zip(differ["parameters"], refs):
            params[name].copy_(ref)
    log(f"[train] warning: {when}: parameters {differ['parameters']} differed between ranks by at most "
        f"{float(gap.max()):.2g} of their magnitude; using rank 0's")
    return differ["parameters"]


@dataclass
class DistributedHooks:
    """What the epoch loop calls on N > 1 ranks: between backward and update (the embedding's sparse
    gradient), to join a 1-D tensor over the ranks (the fused mode's per-row counts), and to take
    the minimum of a tensor over the ranks (so every rank stops at the same update on divergence)."""

    after_backward: Callable[[], None] | None = None
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None
    min_over_ranks: Callable[[torch.Tensor], torch.Tensor] | None = None  # the divergence check's agreement


def _min(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


def prepare_distributed(model: nn.Module, world_size: int) -> DistributedHooks:
    """Everything DFEI needs before DDP wraps the model on `world_size` ranks: the statistics
    reducer, and for a row-sparse embedding its exclusion from DDP. Returns the epoch loop's hooks.
    Call after build_optimizer, which decides whether the embedding's gradient is sparse."""
    attach_reducer(model, world_size)
    if world_size <= 1:
        return DistributedHooks()
    hooks = DistributedHooks(gather=lambda t: torch.cat(all_gather_varlen(t, world_size)), min_over_ranks=_min)
    if exclude_sparse_embedding_from_ddp(model):
        table = model.embedding.weight

        def after_backward() -> None:
            allreduce_sparse_grad(table, world_size)

        hooks.after_backward = after_backward
    return hooks
