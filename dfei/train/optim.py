"""Algorithm 1's optimiser: shared parameters at lr * shared_lr_scale, domain parameters at lr.

One Adam with parameter groups. In a sequential step each domain's backward is followed by one
`step()`: parameters without a gradient (other domains' towers and heads) are skipped by Adam, so
domain parameters move once per step and shared parameters D times, each at lr / D by default.
(The authors' TF code keeps a separate Adam state for the shared weights per domain; one state
stepped D times is Algorithm 1 as written, with D times less optimiser memory for the embeddings.)
The fused mode (dfei.train.step.FusedStep, where its lr rule is explained) updates every parameter
once per step instead, with larger learning rates for the shared parameters and per embedding row:
LazyAdam takes the per-row multipliers as step()'s `row_lr`, which needs lazy (row-sparse)
embedding updates.

L2 (lambda ||W||^2 / 2, lambda = 1e-6) applies to the embedding tables only, as the authors do;
Adam's weight_decay adds exactly its gradient lambda * W.

Embedding updates (`lazy_embeddings`):
- lazy (default): the embedding's gradient is row-sparse and only the rows in the batch are
  updated, with their Adam moments (the lazy Adam of torch.optim.SparseAdam and TF's LazyAdam) and
  L2 on those rows. A step costs the same for a 10^4- or a 10^6-row table.
- dense: every row moves every step (decaying moments), as TF's Adam does on the authors' code;
  the step cost grows with the table (2 x 10^6 rows x 16 at the industrial scale).
"""
from __future__ import annotations

import torch
from torch import nn


def resolve_shared_lr_scale(shared_lr_scale: float | None, num_domains: int) -> float:
    return 1.0 / num_domains if shared_lr_scale is None else float(shared_lr_scale)


def shared_groups(optimizer: torch.optim.Optimizer) -> list[dict]:
    return [g for g in optimizer.param_groups if str(g.get("name", "")).startswith("shared")]


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


class LazyAdam(torch.optim.Adam):
    """torch's Adam for dense gradients; lazy Adam for row-sparse ones (embedding tables).

    A parameter whose gradient is sparse is set aside while torch's Adam steps the dense ones,
    then updated on its present rows only: weight decay on those rows, their first and second
    moments, and the bias correction of the parameter's step count (as torch.optim.SparseAdam).
    State keys are Adam's ("step", "exp_avg", "exp_avg_sq"), so state dicts load either way.
    """

    @torch.no_grad()
    def step(self, closure=None, *, row_lr: dict[torch.Tensor, torch.Tensor] | None = None):
        """One Adam step. row_lr {sparse parameter: multipliers [rows, 1]}: this step's lr of each row
        of that parameter's gradient times its multiplier, in the order of the gradient's coalesced
        rows (the fused mode's rows, computed by dfei.train.step.FusedStep); rows of other
        parameters, or of a step without row_lr, at their group's lr."""
        sparse, dense_groups = [], []
        for group in self.param_groups:
            dense = False
            for p in group["params"]:
                if p.grad is not None:
                    if p.grad.is_sparse:
                        sparse.append((group, p, p.grad))
                        p.grad = None  # torch's Adam refuses sparse gradients
                    else:
                        dense = True
            if dense:
                dense_groups.append(group)
        # torch's Adam walks only the groups with a gradient: a sequential update touches the shared
        # groups and one domain's, and each group Adam visits costs ~20 us even with nothing to do
        # (a third of a step's optimizer time with 21 domain groups, profiled)
        groups, self.param_groups = self.param_groups, dense_groups
        try:
            loss = super().step(closure)
        finally:
            self.param_groups = groups
            for _, p, grad in sparse:
                p.grad = grad
        for group, p, grad in sparse:
            self._lazy_update(group, p, grad, None if row_lr is None else row_lr.get(p))
        return loss

    def _lazy_update(self, group: dict, p: torch.Tensor, grad: torch.Tensor,
                     row_lr: torch.Tensor | None = None) -> None:
        """Lazy Adam on the rows of a row-sparse gradient; row_lr [n, 1]: the rows' lr multipliers."""
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()  # [n], [n, dim]
        if row_lr is not None and row_lr.shape != (rows.numel(), 1):
            raise ValueError(f"row_lr has shape {tuple(row_lr.shape)}; the gradient has {rows.numel()} rows")
        if rows.numel() == 0:
            return
        beta1, beta2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = float(state["step"])
        if group["weight_decay"]:
            values = values.add(p.index_select(0, rows), alpha=group["weight_decay"])
        m = state["exp_avg"].index_select(0, rows).mul_(beta1).add_(values, alpha=1 - beta1)
        v = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(values, values, value=1 - beta2)
        state["exp_avg"].index_copy_(0, rows, m)
        state["exp_avg_sq"].index_copy_(0, rows, v)
        denom = v.div_(1 - beta2 ** step).sqrt_().add_(group["eps"])
        update = m.div_(denom)
        if row_lr is not None:
            update.mul_(row_lr)
        p.index_add_(0, rows, update, alpha=-group["lr"] / (1 - beta1 ** step))


def build_optimizer(model: nn.Module, lr: float = 1e-3, l2: float = 1e-6, shared_lr_scale: float | None = None,
                    lazy_embeddings: bool = True) -> LazyAdam:
    """Algorithm 1's Adam. lazy_embeddings also switches the model's embedding to sparse gradients."""
    scale = resolve_shared_lr_scale(shared_lr_scale, model.num_domains)
    model.use_row_sparse_embedding(lazy_embeddings)
    return LazyAdam(param_groups(model, lr, l2, scale), lr=lr, **fast_adam_kernel())


def fast_adam_kernel() -> dict:
    # the fused (one-kernel) Adam is the fastest on CPU and GPU for many small tensors; torch >= 2.4
    # has it for CPU. Older versions fall back to foreach/for-loop.
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return {"fused": True} if (major, minor) >= (2, 4) else {}
