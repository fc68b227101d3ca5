"""One epoch of Algorithm 1 and whole-split evaluation, in plain PyTorch (no Ray here).

The Ray glue (dfei/train/worker.py) calls these; tests and benchmarks can call them directly.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dfei.data.dataset import ParquetDataset
from dfei.data.ingest import DomainReader
from dfei.errors import TrainingDivergedError
from dfei.eval.metrics import split_metrics
from dfei.models.layers import DomainGroups
from dfei.train.compiled import enable_compile
from dfei.train.optim import shared_groups


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


# a non-finite loss is looked for every this many updates (and at the end of the epoch): one host
# sync and, on N ranks, one tiny all-reduce per check instead of one per update
DIVERGENCE_CHECK_EVERY = 64
_NO_DIVERGENCE = 2**62


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator[tuple],
                device: torch.device, num_domains: int, max_steps: int | None = None,
                on_progress: Callable[[dict], None] | None = None, progress_every_s: float = 30.0,
                after_backward: Callable[[], None] | None = None,
                gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
                min_over_ranks: Callable[[torch.Tensor], torch.Tensor] | None = None,
                check_every: int = DIVERGENCE_CHECK_EVERY, resume: dict | None = None,
                seed_step: Callable[[int], None] | None = None, checkpoint_every: int | None = None,
                on_checkpoint: Callable[[int, dict], None] | None = None, compile: bool = False) -> dict:
    """One epoch of Algorithm 1; every item of `batches` is one update.

    sequential items (step, d, x, y): one domain's batch, its loss, one backward, one update.
    fused items (step, domains, x, y) with `domains` an int array [rows]: all domains' batches of a
    step at once (rows grouped by domain); the loss is the sum over the present domains of each
    domain's mean loss. Every domain's tower and head get the gradient a sequential step would give
    them (DFI passes a row's gradient to its own domain's v only), the shared parameters the mean of
    the domains' gradients, in one update whose shared lr is scaled by the number of present domains
    (sequential steps them once per domain; _fused_update). DFEI runs the step's towers and heads
    as one batched matmul per layer (DomainGroups, built here from the host ids).
    `after_backward` runs between backward and the update (the sparse-gradient all-reduce);
    `gather` concatenates a 1-D tensor over the ranks (the fused mode's per-row counts).

    A non-finite loss (nan or inf) ends the epoch at the next check (every `check_every` updates,
    and after the last): `diverged` is then {"step", "domain" (index), "loss": "nan" | "inf"} of the
    first such batch over all ranks (`min_over_ranks`, a MIN all-reduce, makes every rank stop at
    the same update), else None. The caller must not evaluate or checkpoint a diverged model.

    Mid-epoch checkpoints: after every `checkpoint_every`-th step (once the step's last update is
    done and no rank's loss is non-finite), `on_checkpoint(steps done, progress)` is called, where
    progress is this rank's running sums (JSON: loss_sum, samples, batches, updates, seconds).
    `resume` (such a progress record) continues an epoch: `batches` then starts at the step after
    it (ingest.training_stream's start_step) and the returned figures cover the whole epoch.
    `seed_step(step)` runs before each step's first update: dropout masks are drawn from a seed of
    the step, not from a stream that depends on how many steps this process ran.

    `compile` compiles the model's towers and heads first (dfei.train.compiled; idempotent, so only
    the first epoch pays): "compiled" (False after a fallback to eager, with one warning) and
    "compile_s" (excluded from the epoch's seconds) are then in the result.

    Returns per-domain mean loss, samples, batches, updates, seconds, the wall time of the first update,
    the steady-state rate (samples after the first update / time since it) and `diverged`.
    """
    model.train()
    compiled = enable_compile(model, device) if compile else None
    totals = _Totals.zeros(num_domains, device) if resume is None else _Totals.restore(resume, device)
    updates = 0 if resume is None else int(resume["updates"])
    last_log = time.time()
    t0 = last_log - (0.0 if resume is None else float(resume["seconds"]))  # the epoch's clock, across restarts
    first_update, first_samples, step, diverged, current = None, 0, -1, None, None
    for step, d, x, y in batches:
        if max_steps is not None and step >= max_steps:
            break
        if step != current:
            if current is not None and checkpoint_every and on_checkpoint and (current + 1) % checkpoint_every == 0:
                diverged = _divergence(totals.first_bad, num_domains, min_over_ranks)  # never checkpoint a nan
                if diverged is not None:
                    break
                on_checkpoint(current + 1, totals.progress(updates, time.time() - t0))
            current = step
            if seed_step is not None:
                seed_step(step)
        xb, yb = to_device(x, device), to_device(y, device)
        optimizer.zero_grad(set_to_none=True)  # other domains' parameters keep grad None: Adam skips them
        fused = not isinstance(d, (int, np.integer))
        if fused:
            loss, db, present = _fused_loss(model, xb, yb, d, step, totals)
        else:
            loss = _domain_loss(model, xb, yb, int(d), step, totals)
        loss.backward()
        if after_backward is not None:
            after_backward()
        if fused:
            _fused_update(optimizer, present, model, xb, db, num_domains, gather)
        else:
            optimizer.step()
        updates += 1
        if updates % check_every == 0:
            diverged = _divergence(totals.first_bad, num_domains, min_over_ranks)
            if diverged is not None:
                break
        if first_update is None:
            first_update, first_samples = time.time(), int(totals.samples.sum())
        if on_progress is not None and time.time() - last_log >= progress_every_s:
            last_log = time.time()
            on_progress({"step": step, "samples": int(totals.samples.sum()), "seconds": last_log - t0,
                         "batches": int(totals.batches.sum()),
                         "loss": float(totals.loss_sum.sum()) / max(int(totals.samples.sum()), 1)})
    if diverged is None and updates % check_every != 0:  # the updates since the last check
        diverged = _divergence(totals.first_bad, num_domains, min_over_ranks)
    steps = step + 1 if max_steps is None else min(step + 1, max_steps)
    stats = _epoch_stats(totals, t0, first_update, first_samples, steps, updates, diverged)
    if compiled is not None:
        stats.update(compiled=compiled["compiled"], compile_s=compiled["compile_s"], compile_error=compiled["error"])
    return stats


@dataclass
class _Totals:
    """An epoch's running sums, per domain; loss_sum and first_bad stay on the device (no host
    sync per update)."""

    loss_sum: torch.Tensor  # [D] float64: sum of per-row losses
    samples: np.ndarray  # [D] int64
    batches: np.ndarray  # [D] int64
    # the first non-finite batch as ((step * D + domain) * 2 + is_nan); _NO_DIVERGENCE when none
    first_bad: torch.Tensor

    @classmethod
    def zeros(cls, num_domains: int, device: torch.device) -> "_Totals":
        return cls(torch.zeros(num_domains, dtype=torch.float64, device=device),
                   np.zeros(num_domains, dtype=np.int64), np.zeros(num_domains, dtype=np.int64),
                   torch.full((), _NO_DIVERGENCE, dtype=torch.int64, device=device))

    def progress(self, updates: int, seconds: float) -> dict:
        """This rank's running sums as JSON (a mid-epoch checkpoint's; floats round-trip exactly)."""
        return {"loss_sum": self.loss_sum.cpu().tolist(), "samples": self.samples.tolist(),
                "batches": self.batches.tolist(), "updates": updates, "seconds": seconds}

    @classmethod
    def restore(cls, progress: dict, device: torch.device) -> "_Totals":
        totals = cls.zeros(len(progress["samples"]), device)
        totals.loss_sum = torch.tensor(progress["loss_sum"], dtype=torch.float64, device=device)
        totals.samples = np.asarray(progress["samples"], dtype=np.int64)
        totals.batches = np.asarray(progress["batches"], dtype=np.int64)
        return totals


def _domain_loss(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, d: int, step: int,
                 totals: _Totals) -> torch.Tensor:
    """Sequential mode: domain d's mean loss over its batch [rows]."""
    num_domains = len(totals.samples)
    loss = F.binary_cross_entropy_with_logits(model(xb, d), yb)
    totals.first_bad = _first_bad(totals.first_bad, loss.detach(), step * num_domains + d)
    totals.loss_sum[d] += loss.detach() * len(yb)
    totals.samples[d] += len(yb)
    totals.batches[d] += 1
    return loss


def _fused_loss(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, d: np.ndarray, step: int,
                totals: _Totals) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Fused mode: the sum over the present domains of each one's mean loss; with the domain index
    of every row on the device [rows] and the number of present domains."""
    num_domains = len(totals.samples)
    counts = np.bincount(d, minlength=num_domains)
    db = torch.from_numpy(d).to(xb.device, non_blocking=True)
    # models that take the rows' grouping from host ids (DFEI's stacked towers) get it: no device sync
    extra = {"groups": DomainGroups.from_numpy(d, num_domains, xb.device)} if getattr(
        unwrap(model), "accepts_groups", False) else {}
    per_row = F.binary_cross_entropy_with_logits(model(xb, db, **extra), yb, reduction="none")
    sums = torch.zeros(num_domains, dtype=per_row.dtype, device=xb.device).index_add(0, db, per_row)
    count_t = torch.from_numpy(counts).to(xb.device, per_row.dtype)
    loss = (sums / count_t.clamp(min=1)).sum()  # absent domains contribute 0
    bad = ~torch.isfinite(sums.detach())  # [D]
    worst = torch.argmax(bad.to(torch.int8))  # the first non-finite domain (0 when none)
    totals.first_bad = _first_bad(totals.first_bad, sums.detach()[worst], step * num_domains + worst)
    totals.loss_sum += sums.detach()
    totals.samples += counts
    totals.batches += counts > 0
    return loss, db, int((counts > 0).sum())


def _epoch_stats(totals: _Totals, t0: float, first_update: float | None, first_samples: int, steps: int,
                 updates: int, diverged: dict | None) -> dict:
    domain_loss = totals.loss_sum.cpu().numpy()  # waits for the device's last kernels: the clock below is honest
    t_end = time.time()
    seconds = t_end - t0
    total = int(totals.samples.sum())
    steady_s = t_end - first_update if first_update else 0.0
    return {
        "loss": float(domain_loss.sum() / max(total, 1)),
        "domain_loss": (domain_loss / np.maximum(totals.samples, 1)).tolist(),
        "samples": total, "batches": totals.batches.tolist(), "updates": updates, "steps": steps,
        "seconds": seconds, "samples_per_s": total / seconds if seconds > 0 else 0.0,
        "steady_samples_per_s": (total - first_samples) / steady_s if steady_s > 0 else 0.0,
        "first_update_unix": first_update, "diverged": diverged,
    }


def _first_bad(first_bad: torch.Tensor, loss: torch.Tensor, where) -> torch.Tensor:
    """first_bad updated with this update's loss (a 0-dim tensor) at `where` = step * D + domain."""
    code = torch.as_tensor(where, device=first_bad.device) * 2 + torch.isnan(loss).to(torch.int64)
    return torch.where(torch.isfinite(loss), first_bad, torch.minimum(first_bad, code))


def _divergence(first_bad: torch.Tensor, num_domains: int,
                min_over_ranks: Callable[[torch.Tensor], torch.Tensor] | None) -> dict | None:
    """{"step", "domain", "loss"} of the first non-finite loss on any rank, or None (one host sync)."""
    value = first_bad.clone() if min_over_ranks is None else min_over_ranks(first_bad.clone())
    code = int(value)
    if code >= _NO_DIVERGENCE:
        return None
    where, is_nan = divmod(code, 2)
    return {"step": where // num_domains, "domain": where % num_domains, "loss": "nan" if is_nan else "inf"}


def embedding_row_domains(model: nn.Module, x: torch.Tensor, domains: torch.Tensor, num_domains: int,
                          gather: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """(sorted embedding rows of the batch, number of domains whose rows hold each): an id in the
    batches of k domains would get k updates in a sequential step. `gather` joins the ranks' keys."""
    emb = unwrap(model).embedding
    keys = (emb.rows(x) * num_domains + domains.unsqueeze(1)).flatten().unique()  # (row, domain)
    if gather is not None:
        keys = gather(keys).unique()
    rows, counts = torch.unique_consecutive(keys // num_domains, return_counts=True)
    return rows, counts.to(emb.weight.dtype)


def _fused_update(optimizer: torch.optim.Optimizer, present: int, model: nn.Module, x: torch.Tensor,
                  domains: torch.Tensor, num_domains: int, gather) -> None:
    """One update for a fused step of `present` domains, with the lr sequential would spread over
    several updates (dfei/train/optim.py): the dense shared parameters' lr times `present`, each
    embedding row's lr times the number of domains whose batch holds it.

    The shared gradients are the mean over those domains, not their sum: Adam's second moment
    (beta2 = 0.999, a memory of ~1000 updates) is then fed gradients of one domain's scale whether
    21 domains or 1 are present. With the sum, the many-domain steps at each epoch's start left it up
    to n times too large for the hundreds of one-domain steps after them (the industrial profile's
    largest domain alone), shrinking those steps; fused trailed sequential there (BENCHMARKS.md)."""
    table = unwrap(model).embedding.weight
    if table.grad is None or not table.grad.is_sparse or not hasattr(optimizer, "row_scale"):
        raise ValueError("the fused mode needs lazy embedding updates (embedding_update=lazy): its learning "
                         "rates are per embedding row")
    if present == 1:  # one domain (on every rank: equal shares): every multiplier is 1, as sequential
        optimizer.step()
        return
    optimizer.row_scale[table] = embedding_row_domains(model, x, domains, num_domains, gather)  # rows: mean too
    groups = [g for g in shared_groups(optimizer) if not any(q is table for q in g["params"])]
    base = [g["lr"] for g in groups]
    for g in groups:
        g["lr"] *= present
        for p in g["params"]:
            if p.grad is not None:
                p.grad.div_(present)
    try:
        optimizer.step()
    finally:
        for g, lr in zip(groups, base):
            g["lr"] = lr


@torch.no_grad()
def predict_split(model: nn.Module, dataset: ParquetDataset, split: str, device: torch.device,
                  rank: int = 0, world_size: int = 1, batch_size: int = 8192) -> list[dict[str, np.ndarray]]:
    """This rank's part of every domain of `split`: {"label", "score"[, "user"]} per domain.

    The ranks' parts together cover the whole split (no row is dropped at evaluation).
    """
    model.eval()
    spec = dataset.spec
    user_idx = spec.feature_names.index(spec.user_column) if spec.user_column else None
    out = []
    for d in range(spec.num_domains):
        reader = DomainReader(dataset, split, d, rank, world_size, batch_size, shuffle=False, equal_shares=False)
        labels, scores, users = [], [], []
        for x, y in reader.batches():
            scores.append(torch.sigmoid(model(torch.from_numpy(x).to(device), d)).float().cpu().numpy())
            labels.append(y)
            if user_idx is not None:
                users.append(x[:, user_idx])
        part = {"label": _cat(labels, np.float32), "score": _cat(scores, np.float32)}
        if user_idx is not None:
            part["user"] = _cat(users, np.int64)
        out.append(part)
    return out


def _cat(chunks: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)


def merge_parts(parts_by_rank: list[list[dict[str, np.ndarray]]]) -> list[dict[str, np.ndarray]]:
    """Concatenate the ranks' per-domain predictions (rank order = row order)."""
    merged = []
    for d in range(len(parts_by_rank[0])):
        keys = parts_by_rank[0][d].keys()
        merged.append({k: np.concatenate([p[d][k] for p in parts_by_rank]) for k in keys})
    return merged


def score_split(dataset: ParquetDataset, parts: list[dict[str, np.ndarray]]) -> dict:
    """Per-domain metrics of predict_split's (merged) parts. Raises TrainingDivergedError when a
    score is nan or inf: the model's weights are no longer finite."""
    for name, part in zip(dataset.spec.domain_names, parts):
        bad = int((~np.isfinite(part["score"])).sum())
        if bad:
            raise TrainingDivergedError(f"{bad} of {len(part['score']):,} scores of domain {name} are nan or inf: the "
                                        "model's weights are not finite (training diverged); try a lower --lr")
    has_users = bool(parts) and "user" in parts[0]
    return split_metrics(dataset.spec.domain_names, [p["label"] for p in parts], [p["score"] for p in parts],
                         [p["user"] for p in parts] if has_users else None)
