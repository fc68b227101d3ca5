"""One epoch of Algorithm 1 and whole-split evaluation, in plain PyTorch (no Ray here).

train_epoch loops over the step objects of dfei/train/step.py (one update each) and keeps the
epoch's books: running sums, progress, divergence checks and mid-epoch checkpoints. The Ray glue
(dfei/train/worker.py) calls these; tests and benchmarks can call them directly.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dfei.data.dataset import ParquetDataset
from dfei.data.ingest import DomainReader
from dfei.errors import TrainingDivergedError
from dfei.eval.metrics import split_metrics
from dfei.train.compiled import enable_compile
from dfei.train.distributed import DistributedHooks
from dfei.train.step import Batch, StepLosses, make_step


# a non-finite loss is looked for every this many updates (and at the end of the epoch): one host
# sync and, on N ranks, one tiny all-reduce per check instead of one per update
DIVERGENCE_CHECK_EVERY = 64
_NO_DIVERGENCE = 2**62


@dataclass
class EpochOptions:
    """How train_epoch runs besides the step itself. `seed_step(step)` runs before each step's first
    update: dropout masks are then drawn from a seed of the step, not from a stream that depends on
    how many steps this process ran (a resumed epoch redraws them)."""

    max_steps: int | None = None  # steps from this one on are not trained
    check_every: int = DIVERGENCE_CHECK_EVERY  # updates between divergence checks
    compile: bool = False  # compile the towers and heads first (dfei.train.compiled)
    seed_step: Callable[[int], None] | None = None
    on_progress: Callable[[dict], None] | None = None  # every progress_every_s: step, samples, seconds, batches, loss
    progress_every_s: float = 30.0


@dataclass
class StepCheckpoints:
    """Mid-epoch checkpoints: after every `every`-th step (once its last update is done and no rank's
    loss is non-finite), `save(steps done, progress)`, progress being this rank's running sums
    (JSON: loss_sum, samples, batches, updates, seconds). `resume` (such a progress record)
    continues an epoch: the stream then starts at the step after it (ingest.training_stream's
    start_step) and the returned figures cover the whole epoch."""

    every: int | None = None
    save: Callable[[int, dict], None] | None = None
    resume: dict | None = None


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator[tuple], device: torch.device,
                num_domains: int, *, options: EpochOptions | None = None, hooks: DistributedHooks | None = None,
                checkpoints: StepCheckpoints | None = None) -> dict:
    """One epoch of Algorithm 1: every item of `batches` is one update, by the step of its mode
    (dfei.train.step: SequentialStep for (step, d, x, y), FusedStep for (step, domains [rows], x, y)).
    `hooks` are the distributed ones (dfei.train.distributed.prepare_distributed), `options` and
    `checkpoints` say how the epoch runs and where it stops to checkpoint.

    A non-finite loss (nan or inf) ends the epoch at the next check (every `check_every` updates,
    and after the last): `diverged` is then {"step", "domain" (index), "loss": "nan" | "inf"} of the
    first such batch over all ranks (hooks.min_over_ranks, a MIN all-reduce, makes every rank stop
    at the same update), else None. The caller must not evaluate or checkpoint a diverged model.

    `options.compile` compiles the model's towers and heads first (idempotent, so only the first
    epoch pays): "compiled" (False after a fallback to eager, with one warning), "compile_s"
    (excluded from the epoch's seconds) and "compile_error" are then in the result.

    Returns per-domain mean loss, samples, batches, updates, steps, seconds, the wall time of the
    first update, the steady-state rate (samples after the first update / time since it) and `diverged`.
    """
    options, checkpoints = options or EpochOptions(), checkpoints or StepCheckpoints()
    model.train()
    compiled = enable_compile(model, device) if options.compile else None
    run = _EpochRun(num_domains, device, options, hooks or DistributedHooks(), checkpoints)
    steps = {}  # the step of each mode, built at its first batch
    for item in batches:
        batch = Batch._make(item)
        run.step = batch.step
        if options.max_steps is not None and batch.step >= options.max_steps:
            break
        if batch.step != run.current and not run.begin_step(batch.step):
            break
        if batch.fused not in steps:
            steps[batch.fused] = make_step(batch.fused, model, optimizer, num_domains, device, hooks)
        run.totals.add(steps[batch.fused](batch))
        if not run.after_update():
            break
    stats = run.finish()
    if compiled is not None:
        stats.update(compiled=compiled["compiled"], compile_s=compiled["compile_s"], compile_error=compiled["error"])
    return stats


class _EpochRun:
    """train_epoch's bookkeeping around the steps: running sums, clock, divergence checks, progress
    and step checkpoints."""

    def __init__(self, num_domains: int, device: torch.device, options: EpochOptions, hooks: DistributedHooks,
                 checkpoints: StepCheckpoints):
        self.num_domains, self.options, self.hooks, self.checkpoints = num_domains, options, hooks, checkpoints
        resume = checkpoints.resume
        self.totals = _Totals.zeros(num_domains, device) if resume is None else _Totals.restore(resume, device)
        self.updates = 0 if resume is None else int(resume["updates"])
        self.last_log = time.time()
        self.t0 = self.last_log - (0.0 if resume is None else float(resume["seconds"]))  # across restarts
        self.first_update, self.first_samples = None, 0
        self.step, self.current, self.diverged = -1, None, None

    def begin_step(self, step: int) -> bool:
        """Before `step`'s first update: checkpoint the step before it if one is due, seed this one.
        False when a rank's loss was non-finite (never checkpoint a nan)."""
        every, save = self.checkpoints.every, self.checkpoints.save
        if self.current is not None and every and save and (self.current + 1) % every == 0:
            if self.check():
                return False
            save(self.current + 1, self.totals.progress(self.updates, time.time() - self.t0))
        self.current = step
        if self.options.seed_step is not None:
            self.options.seed_step(step)
        return True

    def after_update(self) -> bool:
        """Count the update; look for divergence every check_every; report progress. False: diverged."""
        self.updates += 1
        if self.updates % self.options.check_every == 0 and self.check():
            return False
        if self.first_update is None:
            self.first_update, self.first_samples = time.time(), int(self.totals.samples.sum())
        if self.options.on_progress is not None and time.time() - self.last_log >= self.options.progress_every_s:
            self.last_log = time.time()
            totals = self.totals
            self.options.on_progress({
                "step": self.step, "samples": int(totals.samples.sum()), "seconds": self.last_log - self.t0,
                "batches": int(totals.batches.sum()),
                "loss": float(totals.loss_sum.sum()) / max(int(totals.samples.sum()), 1)})
        return True

    def check(self) -> bool:
        """Whether any rank's loss was non-finite so far (one host sync); sets `diverged`."""
        self.diverged = _divergence(self.totals.first_bad, self.num_domains, self.hooks.min_over_ranks)
        return self.diverged is not None

    def finish(self) -> dict:
        """The epoch's figures, after a last divergence check over the updates since the last one."""
        if self.diverged is None and self.updates % self.options.check_every != 0:
            self.check()
        max_steps = self.options.max_steps
        steps = self.step + 1 if max_steps is None else min(self.step + 1, max_steps)
        return _epoch_stats(self.totals, self.t0, self.first_update, self.first_samples, steps, self.updates,
                            self.diverged)


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

    def add(self, out: StepLosses) -> None:
        """One update's losses (device ops only, no host sync)."""
        self.first_bad = _first_bad(self.first_bad, out.check, out.where)
        if out.domain is None:  # fused: every domain's
            self.loss_sum += out.sums
            self.samples += out.rows
            self.batches += out.rows > 0
        else:
            self.loss_sum[out.domain] += out.sums
            self.samples[out.domain] += out.rows
            self.batches[out.domain] += 1

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
