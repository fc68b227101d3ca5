"""DDP wiring for DFEI: the domain-feature statistics all-reduce, DDP's settings, and the
all-reduce of the embedding table's row-sparse gradient.

DESIGN §3: after every step every worker holds the same v. The batch mean that updates v_d is the
global mean over all workers, computed by one all-reduce of every domain's [sum, count]. The
all-reduce is autograd-aware: its backward sums the gradient of v over the ranks, so each rank's
towers get the gradient of the *global* loss through v, exactly as one worker on the global batch.
"""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

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
    if world_size > 1 and getattr(model, "dfe", None) is not None:
        model.dfe.reducer = StatsReducer()


def embedding_parameter_name(model: nn.Module) -> str:
    """The fully qualified name DDP knows the embedding table by (a plug-in shares its backbone's)."""
    return next(n for n, p in model.named_parameters() if p is model.embedding.weight)


def exclude_sparse_embedding_from_ddp(model: nn.Module) -> bool:
    """With lazy embedding updates the table's gradient is row-sparse, which DDP can reduce on gloo
    only (NCCL has no sparse all-reduce): DDP leaves it alone and `allreduce_sparse_grad` does it,
    with dense collectives that every backend has. Call before wrapping the model in DDP."""
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


@dataclass
class DistributedHooks:
    """What the engine calls on N > 1 ranks: between backward and update (the embedding's sparse
    gradient), and to join a 1-D tensor over the ranks (the fused mode's per-row counts)."""

    after_backward: Callable[[], None] | None = None
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None


def prepare_distributed(model: nn.Module, world_size: int) -> DistributedHooks:
    """Everything DFEI needs before DDP wraps the model on `world_size` ranks: the statistics
    reducer, and for a row-sparse embedding its exclusion from DDP. Returns the engine's hooks.
    Call after build_optimizer, which decides whether the embedding's gradient is sparse."""
    attach_reducer(model, world_size)
    if world_size <= 1:
        return DistributedHooks()
    hooks = DistributedHooks(gather=lambda t: torch.cat(all_gather_varlen(t, world_size)))
    if exclude_sparse_embedding_from_ddp(model):
        table = model.embedding.weight

        def after_backward() -> None:
            allreduce_sparse_grad(table, world_size)

        hooks.after_backward = after_backward
    return hooks
