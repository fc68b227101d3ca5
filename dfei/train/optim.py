"""Algorithm 1's optimiser: shared parameters at lr * shared_lr_scale, domain parameters at lr.

One Adam with parameter groups. In a sequential step each domain's backward is followed by one
`step()`: parameters without a gradient (other domains' towers and heads) are skipped by Adam, so
domain parameters move once per step and shared parameters D times, each at lr / D by default.
(The authors' TF code keeps a separate Adam state for the shared weights per domain; one state
stepped D times is Algorithm 1 as written, with D times less optimiser memory for the embeddings.)
L2 (lambda ||W||^2 / 2, lambda = 1e-6) applies to the embedding tables only, as the authors do;
Adam's weight_decay adds exactly its gradient lambda * W.
"""
from __future__ import annotations

import torch
from torch import nn


def resolve_shared_lr_scale(shared_lr_scale: float | None, num_domains: int) -> float:
    return 1.0 / num_domains if shared_lr_scale is None else float(shared_lr_scale)


def param_groups(model: nn.Module, lr: float, l2: float, shared_lr_scale: float) -> list[dict]:
    embedding = list(model.embedding.parameters())
    embedding_ids = {id(p) for p in embedding}
    shared = [p for p in model.shared_parameters() if id(p) not in embedding_ids]
    groups = [
        {"name": "shared_embedding", "params": embedding, "lr": lr * shared_lr_scale, "weight_decay": l2},
        {"name": "shared", "params": shared, "lr": lr * shared_lr_scale, "weight_decay": 0.0},
    ]
    for d in range(model.num_domains):
        groups.append({"name": f"domain_{d}", "params": list(model.domain_parameters(d)), "lr": lr, "weight_decay": 0.0})
    covered = [id(p) for g in groups for p in g["params"]]
    every = [id(p) for p in model.parameters()]
    if sorted(covered) != sorted(every):
        raise RuntimeError("shared and domain parameter groups must cover every parameter exactly once")
    return groups


def build_optimizer(model: nn.Module, lr: float = 1e-3, l2: float = 1e-6,
                    shared_lr_scale: float | None = None) -> torch.optim.Adam:
    scale = resolve_shared_lr_scale(shared_lr_scale, model.num_domains)
    return torch.optim.Adam(param_groups(model, lr, l2, scale), lr=lr)
