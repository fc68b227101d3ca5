"""One epoch of Algorithm 1 and whole-split evaluation, in plain PyTorch (no Ray here).

The Ray glue (dfei/train/loop.py) calls these; tests and benchmarks can call them directly.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dfei.data.dataset import ParquetDataset
from dfei.data.ingest import DomainReader
from dfei.eval.metrics import split_metrics


def unwrap(model: nn.Module) -> nn.Module:
    """The DFEI module under a DistributedDataParallel wrapper, if any."""
    return getattr(model, "module", model)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator[tuple],
                device: torch.device, num_domains: int, max_steps: int | None = None,
                on_progress: Callable[[dict], None] | None = None, progress_every_s: float = 30.0) -> dict:
    """Sequential Algorithm 1: for every (step, d, x, y) one forward, one backward, one update.

    Returns per-domain mean loss, samples, batches, seconds and the wall time of the first update.
    """
    model.train()
    loss_sum = np.zeros(num_domains)
    samples = np.zeros(num_domains, dtype=np.int64)
    n_batches = np.zeros(num_domains, dtype=np.int64)
    t0 = last_log = time.time()
    first_update = None
    step = -1
    for step, d, x, y in batches:
        if max_steps is not None and step >= max_steps:
            break
        xb = torch.from_numpy(x).to(device, non_blocking=True)
        yb = torch.from_numpy(y).to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)  # other domains' parameters keep grad None: Adam skips them
        loss = F.binary_cross_entropy_with_logits(model(xb, d), yb)
        loss.backward()
        optimizer.step()
        loss_sum[d] += loss.item() * len(y)
        samples[d] += len(y)
        n_batches[d] += 1
        if first_update is None:
            first_update = time.time()
        if on_progress is not None and time.time() - last_log >= progress_every_s:
            last_log = time.time()
            on_progress({"step": step, "samples": int(samples.sum()), "seconds": last_log - t0,
                         "loss": float(loss_sum.sum() / max(samples.sum(), 1))})
    seconds = time.time() - t0
    total = int(samples.sum())
    return {
        "loss": float(loss_sum.sum() / max(total, 1)),
        "domain_loss": (loss_sum / np.maximum(samples, 1)).tolist(),
        "samples": total, "batches": n_batches.tolist(),
        "steps": step + 1 if max_steps is None else min(step + 1, max_steps),
        "seconds": seconds, "samples_per_s": total / seconds if seconds > 0 else 0.0,
        "first_update_unix": first_update,
    }


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
    has_users = bool(parts) and "user" in parts[0]
    return split_metrics(dataset.spec.domain_names, [p["label"] for p in parts], [p["score"] for p in parts],
                         [p["user"] for p in parts] if has_users else None)
