"""Building blocks shared by every model: the feature embedding, the MLP tower and per-domain row routing."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# (sums [G, n], counts [G]) of this rank's rows -> the same summed over every rank. An autograd-aware
# all-reduce: its backward sums the gradient over the ranks (dfei.train.distributed.StatsReducer).
BatchStatsAllReduce = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class GlobalBatchStatistics:
    """Mixin of a module whose training forward uses statistics over the rows of a batch and keeps
    buffers from them (DFE's v, STAR's partitioned-norm statistics).

    Under DDP each rank sees only its share of the global batch. If each used its own share's
    statistics, the buffers would drift apart between ranks (evaluation would then score each
    rank's rows with that rank's buffers while the checkpoint holds rank 0's) and N workers would
    not compute what one worker computes on the same global batch. So the module sums its rows'
    statistics and calls `global_sums`: with `reducer` set (dfei.train.distributed does, for every
    such module, when N > 1) the sums are the global batch's, the same on every rank; on one
    process they are this batch's. Modules with buffers that are not GlobalBatchStatistics are
    refused by the distributed set-up.
    """

    reducer: BatchStatsAllReduce | None = None

    def global_sums(self, sums: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sums [G, n], counts [G]) over this rank's rows -> over every rank's rows."""
        return (sums, counts) if self.reducer is None else self.reducer(sums, counts)


class FeatureEmbedding(nn.Module):
    """One embedding table per feature, outputs concatenated: e = E(x) (paper Eq. 2).

    The F tables are stored as one [sum(cardinalities), dim] matrix with a row offset per feature,
    so a batch is one gather (not F lookups and a concat) and the optimizer sees one parameter.
    Rows are initialised N(0, init_std^2) like the authors' code (std 0.01).

    `sparse=True` makes the backward produce a row-sparse gradient (only the rows in the batch),
    which the lazy Adam of dfei.train.optim updates without touching the rest of the table: the
    cost of a step then does not grow with the table. The trainer sets it; it is not model state.
    """

    def __init__(self, cardinalities: Sequence[int], dim: int = 16, init_std: float = 0.01):
        super().__init__()
        if not cardinalities:
            raise ValueError("FeatureEmbedding needs at least one feature")
        if any(int(c) < 1 for c in cardinalities):
            raise ValueError(f"every cardinality must be >= 1, got {list(cardinalities)}")
        self.dim = dim
        self.cardinalities = [int(c) for c in cardinalities]
        self.weight = nn.Parameter(torch.empty(sum(self.cardinalities), dim))
        nn.init.normal_(self.weight, std=init_std)
        starts = torch.tensor([0] + self.cardinalities[:-1], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", starts, persistent=False)  # [F] first row of each feature's table
        self.sparse = False

    @property
    def num_features(self) -> int:
        return len(self.cardinalities)

    @property
    def output_dim(self) -> int:
        return self.dim * self.num_features

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, F] feature ids -> [batch, F] rows of the fused table."""
        return x.long() + self.offsets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [batch, n_features] integer ids -> [batch, n_features * dim]
        return F.embedding(self.rows(x), self.weight, sparse=self.sparse).flatten(1)


class MLP(nn.Sequential):
    """Linear -> ReLU -> Dropout per layer (paper Table 4: [128, 64, 32], dropout [0.1, 0.2, 0.3])."""

    def __init__(self, input_dim: int, dims: Sequence[int], dropouts: Sequence[float] | None = None):
        dropouts = list(dropouts) if dropouts is not None else [0.0] * len(dims)
        if len(dropouts) != len(dims):
            raise ValueError(f"{len(dims)} layer sizes but {len(dropouts)} dropout rates")
        layers: list[nn.Module] = []
        for dim, p in zip(dims, dropouts):
            layers += [nn.Linear(input_dim, dim), nn.ReLU()]
            if p > 0:
                layers.append(nn.Dropout(p))
            input_dim = dim
        super().__init__(*layers)
        self.output_dim = input_dim


def route_by_domain(fn: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, domain: torch.Tensor,
                    domains: Iterable[int], out: torch.Tensor) -> torch.Tensor:
    """Apply `fn(rows, d)` to each domain d's rows of `x` and write the results into those rows of `out`.

    x: [batch, ...]; domain: [batch] int64 model domain indices; out: [batch, ...] shaped like fn's
    results; returns a new tensor like `out` (out-of-place, so autograd reaches every fn call). One
    gather and one scatter per domain: a loop over domains, not rows. Rows whose domain is not in
    `domains` keep out's values (new_empty: undefined; a NaN fill marks them). A listed domain with
    no rows calls fn on an empty [0, ...] slice and writes nothing, so a fixed list such as range(D)
    gives one graph for any domain mix (what torch.jit.trace and the ONNX exporter need); eager
    callers pass the present domains (torch.unique) to skip those calls.
    """
    for d in domains:
        rows = (domain == d).nonzero().squeeze(1)  # [rows of d]; nonzero() + squeeze traces and exports
        out = out.index_copy(0, rows, fn(x.index_select(0, rows), d))
    return out
