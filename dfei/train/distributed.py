"""DDP wiring for DFEI: the domain-feature statistics all-reduce and DDP's settings.

DESIGN §3: after every step every worker holds the same v. The batch mean that updates v_d is the
global mean over all workers, computed by one all-reduce of every domain's [sum, count]. The
all-reduce is autograd-aware: its backward sums the gradient of v over the ranks, so each rank's
towers get the gradient of the *global* loss through v, exactly as one worker on the global batch.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn


def allreduce_domain_stats(sums: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[D, dim] sums and [D] counts of this rank -> the global ones, in one collective."""
    from torch.distributed.nn.functional import all_reduce

    buf = all_reduce(torch.cat([sums, counts.unsqueeze(1)], dim=1))
    return buf[:, :-1], buf[:, -1]


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
        model.dfe.reducer = allreduce_domain_stats
