"""One update of Algorithm 1, one object per mode; train_epoch (dfei/train/epoch.py) loops over it.

- `SequentialStep`: one domain's batch: its mean loss, one backward, the distributed hook, one
  update (Algorithm 1 as written: D such updates per step).
- `FusedStep`: every domain's batch of a step at once: the per-domain mean losses summed, one
  backward, the hook, one update with the fused lr rule (explained once, on FusedStep).

A step is called with a `Batch` (host arrays) and returns its `StepLosses` (on the device). It
asks the device for no value (no .item(), .cpu(), float(tensor)) and makes no Python decision on a
tensor's value (a later issue compiles it as one graph): what it decides, it decides at
construction or from the host batch (its domain ids and row counts). Whether a loss is finite is
left on the device, for the epoch's periodic check. (The fused step's row-sparse gradient, unique
and coalesce have data-dependent sizes, which a CUDA device reports to the host, as before.)

What a step uses of the model is its declared interface (dfei.models.base.DomainModel), read once
at construction: the module under a DDP wrapper (`unwrap`), its `embedding` (and whether its
gradient is row-sparse: `sparse`, set by the optimizer builder through use_row_sparse_embedding) and
whether its forward takes the rows' grouping (`accepts_groups`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dfei.models.layers import DomainGroups
from dfei.train.distributed import DistributedHooks
from dfei.train.optim import LazyAdam, shared_groups


def unwrap(model: nn.Module) -> nn.Module:
    """The DFEI module under a DistributedDataParallel wrapper, if any."""
    return getattr(model, "module", model)


def to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host batch on `device`: zero-copy on CPU; on CUDA copied from pinned memory without
    blocking the host (the copy is queued on the stream, the host goes on to the next batch)."""
    t = torch.from_numpy(a)
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


class Batch(NamedTuple):
    """One item of an epoch's stream (dfei.data.ingest): sequential (step, d, x, y), one domain's
    batch; fused (step, domains [rows] int64, x, y), a step's batches of every domain, rows grouped
    by domain. x [rows, features] int ids, y [rows] float32 labels."""

    step: int
    domains: int | np.ndarray
    x: np.ndarray
    y: np.ndarray

    @property
    def fused(self) -> bool:
        return not isinstance(self.domains, (int, np.integer))


@dataclass
class StepLosses:
    """What an update leaves for the epoch's running sums: losses detached, on the device."""

    sums: torch.Tensor  # sum of the row losses: 0-dim, of `domain` (sequential); [D], per domain (fused)
    rows: int | np.ndarray  # rows of `domain` (sequential); [D] per domain (fused), host
    domain: int | None  # sequential: the batch's domain; fused: None
    check: torch.Tensor  # 0-dim: non-finite when any of the update's losses is (the first such domain's)
    where: int | torch.Tensor  # step * D + the domain of `check`


class TrainStep:
    """What both modes share: the model (DDP wrapper and all), its optimizer, the number of domains,
    the device and the distributed hooks (dfei.train.distributed: after_backward between backward
    and update, the sparse-gradient all-reduce; gather, the fused mode's keys over the ranks)."""

    fused = False

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, num_domains: int,
                 device: torch.device, hooks: DistributedHooks | None = None):
        self.model, self.optimizer, self.num_domains, self.device = model, optimizer, num_domains, device
        self.hooks = hooks or DistributedHooks()
        self.module = unwrap(model)
        self.embedding = self.module.embedding

    def __call__(self, batch: Batch) -> StepLosses:
        raise NotImplementedError

    def _backward(self, loss: torch.Tensor) -> None:
        loss.backward()
        if self.hooks.after_backward is not None:
            self.hooks.after_backward()


class SequentialStep(TrainStep):
    """One domain's batch: its mean loss, backward, one update. Other domains' towers and heads keep
    grad None, so Adam skips them; the shared parameters move at their lr (lr / D by default)."""

    def __call__(self, batch: Batch) -> StepLosses:
        x, y = to_device(batch.x, self.device), to_device(batch.y, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        d = int(batch.domains)
        loss = F.binary_cross_entropy_with_logits(self.model(x, d), y)
        self._backward(loss)
        self.optimizer.step()
        loss = loss.detach()
        return StepLosses(loss * len(y), len(y), d, loss, batch.step * self.num_domains + d)


class FusedStep(TrainStep):
    """Every domain's batch of a step in one update, in place of sequential Algorithm 1's one per domain.

    The loss is the sum over the present domains of each domain's mean loss. Every domain's tower
    and head then get the gradient its own sequential update would give them (DFI passes a row's
    gradient to its own domain's v only) and update at lr, as there. DFEI runs the step's towers
    and heads as one batched matmul per layer (DomainGroups, built from the host ids).

    The fused lr rule (here and nowhere else; LazyAdam only applies the per-row multipliers it is
    given). A shared parameter reached by n domains' batches takes, in sequential, n updates of
    lr_s = lr * shared_lr_scale, one per domain; here it takes one. So its gradient is divided by n
    (the mean of those domains' gradients, not their sum) and its step size multiplied by n:
    - dense shared parameters (every present domain reaches them): n = the present domains; their
      gradients are divided by n and their groups' lr multiplied by n for this update;
    - embedding rows: n_r = the number of domains whose batch holds row r (one for most user ids,
      all of them for a 10-bin feature), counted over the ranks; the row's gradient is divided by
      n_r and LazyAdam multiplies the row's update by n_r.
    Adam's step is about its lr whatever the gradient's scale, so one step of n * lr_s moves a
    parameter as far as n steps of lr_s, and the mean keeps Adam's moments at one domain's scale
    whether 21 domains or 1 are present: with the sum, the many-domain steps at an epoch's start
    left the second moment (beta2 = 0.999, a memory of ~1000 updates) up to n times too large for
    the one-domain steps after them, shrinking those (fused trailed sequential, BENCHMARKS.md).
    With one present domain every n is 1: the update is sequential's. Per-row multipliers need a
    row-sparse embedding gradient (embedding_update=lazy) and LazyAdam.
    """

    fused = True

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, num_domains: int,
                 device: torch.device, hooks: DistributedHooks | None = None):
        super().__init__(model, optimizer, num_domains, device, hooks)
        if not getattr(self.embedding, "sparse", False) or not isinstance(optimizer, LazyAdam):
            raise ValueError("the fused mode needs lazy embedding updates (embedding_update=lazy): its learning "
                             "rates are per embedding row")
        self.pass_groups = self.module.accepts_groups  # DFEI's stacked towers
        self.table = self.embedding.weight

    def __call__(self, batch: Batch) -> StepLosses:
        x, y = to_device(batch.x, self.device), to_device(batch.y, self.device)
        self.optimizer.zero_grad(set_to_none=True)  # absent domains' parameters keep grad None: Adam skips them
        counts = np.bincount(batch.domains, minlength=self.num_domains)
        domains = torch.from_numpy(batch.domains).to(self.device, non_blocking=True)
        # models that take the rows' grouping from host ids get it: no device sync
        extra = {"groups": DomainGroups.from_numpy(batch.domains, self.num_domains, self.device)} \
            if self.pass_groups else {}
        per_row = F.binary_cross_entropy_with_logits(self.model(x, domains, **extra), y, reduction="none")
        sums = torch.zeros(self.num_domains, dtype=per_row.dtype, device=self.device).index_add(0, domains, per_row)
        count_t = torch.from_numpy(counts).to(self.device, per_row.dtype)
        loss = (sums / count_t.clamp(min=1)).sum()  # absent domains contribute 0
        self._backward(loss)
        self._update(int((counts > 0).sum()), x, domains)
        sums = sums.detach()
        worst = torch.argmax((~torch.isfinite(sums)).to(torch.int8))  # the first non-finite domain (0 when none)
        return StepLosses(sums, counts, None, sums[worst], batch.step * self.num_domains + worst)

    def _update(self, present: int, x: torch.Tensor, domains: torch.Tensor) -> None:
        """One update by the fused lr rule (class docstring) for a step of `present` domains."""
        if present == 1:  # one domain (on every rank: equal shares): every n is 1
            self.optimizer.step()
            return
        row_lr = self._mean_row_gradients(x, domains)
        groups = [g for g in shared_groups(self.optimizer) if not any(q is self.table for q in g["params"])]
        base = [g["lr"] for g in groups]
        for g in groups:
            g["lr"] *= present
            for p in g["params"]:
                if p.grad is not None:
                    p.grad.div_(present)
        try:
            self.optimizer.step(row_lr={self.table: row_lr})
        finally:
            for g, lr in zip(groups, base):
                g["lr"] = lr

    def _mean_row_gradients(self, x: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        """Divide each row's gradient by its n_r (class docstring); return n_r [rows of the gradient, 1],
        in the order of the coalesced gradient's rows (LazyAdam's per-row lr multipliers)."""
        rows, n = embedding_row_domains(self.embedding, x, domains, self.num_domains, self.hooks.gather)
        grad = self.table.grad.coalesce()
        grad_rows = grad.indices()[0]
        at = torch.searchsorted(rows, grad_rows).clamp(max=len(rows) - 1)
        scale = torch.where(rows[at] == grad_rows, n[at], torch.ones_like(n[at])).unsqueeze(1)  # rows not listed: 1
        self.table.grad = torch.sparse_coo_tensor(grad.indices(), grad.values() / scale, grad.shape,
                                                  is_coalesced=True, check_invariants=False)
        return scale


def embedding_row_domains(embedding: nn.Module, x: torch.Tensor, domains: torch.Tensor, num_domains: int,
                          gather=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted embedding rows of the batch, number of domains whose rows hold each): an id in the
    batches of k domains would get k updates in a sequential step. `gather` joins the ranks' keys."""
    keys = (embedding.rows(x) * num_domains + domains.unsqueeze(1)).flatten().unique()  # (row, domain)
    if gather is not None:
        keys = gather(keys).unique()
    rows, counts = torch.unique_consecutive(keys // num_domains, return_counts=True)
    return rows, counts.to(embedding.weight.dtype)


def make_step(fused: bool, model: nn.Module, optimizer: torch.optim.Optimizer, num_domains: int,
              device: torch.device, hooks: DistributedHooks | None = None) -> TrainStep:
    """The step of a mode: FusedStep when `fused`, else SequentialStep."""
    return (FusedStep if fused else SequentialStep)(model, optimizer, num_domains, device, hooks)
