"""Building blocks shared by every model: the feature embedding, the MLP tower and per-domain row routing."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
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


# int32 constants of the lowbias32 integer hash (C. Wellons, "Prospecting for hash functions", 2018)
# and the golden-ratio increment that spreads the counter: two's-complement forms of 0x9E3779B9,
# 0x7FEB352D and 0x846CA68B
_GOLDEN, _MUL1, _MUL2 = -1640531527, 0x7FEB352D, -2073254261
_counter = torch.zeros(0, dtype=torch.int32)


def _words(n: int) -> torch.Tensor:
    """arange(n) int32 on the CPU, from a cache grown on demand (no allocation per call)."""
    global _counter
    if _counter.numel() < n:
        _counter = torch.arange(max(n, 2 * _counter.numel()), dtype=torch.int32)
    return _counter[:n]


def _shr(z: torch.Tensor, bits: int) -> torch.Tensor:
    return (z >> bits) & ((1 << (32 - bits)) - 1)  # a logical shift of int32 (torch's >> is arithmetic)


def keep_mask(shape: torch.Size, p: float, seed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Dropout's scaled keep mask [shape] (0 or 1/keep) for drop probability p, from `seed` (int32 0-dim).

    Counter-based: element pairs i hash (lowbias32) the counter i + seed * golden-ratio into 32 bits,
    two 16-bit uniforms per hash; an element is kept when its uniform is >= round(p * 2^16), so the
    keep probability is 1 - round(p * 2^16) / 2^16 (0.900009 for p = 0.1) and the scale its inverse
    (unbiased). Vectorised integer ops: 4-5x cheaper on CPU than torch's bernoulli_, which draws one
    mt19937 number per element (17-22 % of a DFEI training step, profiled). Deterministic given
    the seed, the same under torch.compile.
    """
    n = math.prod(shape)
    cut = round(p * 65536)
    if cut >= 65536:  # p within 2^-17 of 1: nothing is kept
        return torch.zeros(shape, dtype=dtype)
    words = torch.arange((n + 1) // 2, dtype=torch.int32) if torch.compiler.is_compiling() else _words((n + 1) // 2)
    z = words + seed * _GOLDEN
    z = (z ^ _shr(z, 16)) * _MUL1
    z = (z ^ _shr(z, 15)) * _MUL2
    z = z ^ _shr(z, 16)
    keep = z.view(torch.int16)[:n] >= cut - 32768  # [n] bool; int16 reads the words' halves as uniforms
    return (keep.to(dtype) * (65536.0 / (65536 - cut))).view(shape)


class Dropout(nn.Dropout):
    """nn.Dropout (inverted: kept units scaled by 1/keep) whose CPU masks come from `keep_mask`.

    On other devices torch's own dropout runs (CUDA's Philox generator is already cheap). The
    per-call seed is drawn from torch's default generator, so runs seeded the same (the trainer
    seeds each step) draw the same masks. x: [..] any shape -> the same shape.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or self.p >= 1.0:
            return F.dropout(x, self.p, True, self.inplace)
        seed = torch.randint(-2**31, 2**31 - 1, (), dtype=torch.int32)
        return x * keep_mask(x.shape, self.p, seed, x.dtype)


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
                layers.append(Dropout(p))
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


class DomainGroups:
    """Where each row of a mixed-domain batch goes in a padded per-domain layout [n, m, ...]: the n
    present domains (ascending) x m = the largest domain's row count, so the D domain towers run as
    one batched matmul per layer (`stacked_apply`) instead of a loop over domains.

    `dest` [rows] int64 is each row's slot (i * m + its rank among domain present[i]'s rows, in
    batch order), None when rows are already grouped by domain in ascending order with equal
    counts (the padded layout is then a view). Built from host ids (`from_numpy`: no device sync,
    what the fused training step uses) or from a device tensor (`from_tensor`: one host copy of
    the per-domain counts).
    """

    def __init__(self, present: list[int], m: int, dest: torch.Tensor | None):
        self.present, self.m, self.dest = present, m, dest

    @classmethod
    def from_numpy(cls, domain: np.ndarray, num_domains: int, device: torch.device) -> "DomainGroups":
        """domain: [rows] int model domain indices in [0, num_domains) (IndexError otherwise)."""
        domain = np.asarray(domain, dtype=np.int64)
        if domain.size and (domain.min() < 0 or domain.max() >= num_domains):
            bad = domain[(domain < 0) | (domain >= num_domains)][0]
            raise IndexError(f"domain index {bad} outside [0, {num_domains})")
        counts = np.bincount(domain, minlength=num_domains)
        present = np.flatnonzero(counts)
        m = int(counts.max()) if domain.size else 0
        grouped = bool(np.all(domain[1:] >= domain[:-1]))
        if grouped and bool(np.all(counts[present] == m)):
            return cls(present.tolist(), m, None)
        slot = np.zeros(num_domains, dtype=np.int64)
        slot[present] = np.arange(len(present)) * m
        order = np.argsort(domain, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        dest = np.empty(len(domain), dtype=np.int64)
        dest[order] = slot[domain[order]] + np.arange(len(domain)) - starts[domain[order]]
        return cls(present.tolist(), m, torch.from_numpy(dest).to(device, non_blocking=True))

    @classmethod
    def from_tensor(cls, domain: torch.Tensor, num_domains: int) -> "DomainGroups":
        return cls.from_numpy(domain.cpu().numpy(), num_domains, domain.device)

    def pad(self, h: torch.Tensor) -> torch.Tensor:
        """[rows, k] -> [n, m, k] (padding rows are zeros)."""
        n, k = len(self.present), h.shape[1]
        if self.dest is None:
            return h.view(n, self.m, k)
        return h.new_zeros(n * self.m, k).index_copy(0, self.dest, h).view(n, self.m, k)

    def unpad(self, h3: torch.Tensor) -> torch.Tensor:
        """[n, m, k] -> [rows, k] in batch order."""
        flat = h3.reshape(-1, h3.shape[2])
        return flat if self.dest is None else flat.index_select(0, self.dest)


def output_dim(module: nn.Module) -> int:
    """out_features of the last Linear layer of a Sequential tree."""
    return [m for m in leaf_layers(module) if isinstance(m, nn.Linear)][-1].out_features


def leaf_layers(module: nn.Module) -> list[nn.Module]:
    """The module's leaf layers in call order (an nn.Sequential tree of Linear/ReLU/Dropout)."""
    return [m for m in module.modules() if not list(m.children())]


def layer_plan(module: nn.Module) -> tuple[tuple[tuple[str, float], ...], list[nn.Linear]]:
    """A Sequential tree of Linear / ReLU / Dropout as data: (plan, its Linear layers), where plan is
    (("linear", 0.0) | ("relu", 0.0) | ("dropout", p), ...) in call order; Dropout appears only while
    it is active (training, p > 0). TypeError for any other layer."""
    plan, linears = [], []
    for m in leaf_layers(module):
        if isinstance(m, nn.Linear):
            plan.append(("linear", 0.0))
            linears.append(m)
        elif isinstance(m, nn.ReLU):
            plan.append(("relu", 0.0))
        elif isinstance(m, nn.Dropout):
            if m.training and m.p > 0:
                plan.append(("dropout", float(m.p)))
        else:
            raise TypeError(f"layer plans hold Linear, ReLU and Dropout layers, not {type(m).__name__}")
    return tuple(plan), linears


def run_layers(h: torch.Tensor, plan: tuple, weights: list[torch.Tensor], biases: list[torch.Tensor],
               seeds: torch.Tensor) -> torch.Tensor:
    """A layer plan as a function of its parameters: what torch.compile compiles (one graph per plan
    for every module of that shape, the weights being inputs).

    h: [rows, in] with weights [out, in] and biases [out] (one module), or [n, m, in] with weights
    [n, out, in] and biases [n, out] (n stacked domain modules) -> [rows, out] / [n, m, out].
    seeds: int32 [dropouts] (keep_mask's seeds on CPU; elsewhere torch's dropout, which draws its own).
    """
    i = j = 0
    for kind, p in plan:
        if kind == "linear":
            w, b = weights[i], biases[i]
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)) if h.dim() == 3 else F.linear(h, w, b)
            i += 1
        elif kind == "relu":
            h = torch.relu(h)
        elif h.device.type == "cpu":
            h = h * keep_mask(h.shape, p, seeds[j], h.dtype)
            j += 1
        else:
            h = F.dropout(h, p, True)
    return h


def dropout_seeds(plan: tuple) -> torch.Tensor:
    """One int32 seed per active dropout of `plan`, from torch's default generator."""
    n = sum(kind == "dropout" for kind, _ in plan)
    return torch.randint(-2**31, 2**31 - 1, (n,), dtype=torch.int32)


def stacked_apply(modules: Sequence[nn.Module], present: list[int], h3: torch.Tensor,
                  runner: Callable = run_layers) -> torch.Tensor:
    """modules[d] applied to h3[i] for d = present[i], as one batched matmul per Linear layer.

    modules: D structurally identical nn.Sequential trees of Linear / ReLU / Dropout (domain towers,
    heads); h3: [n, m, in] -> [n, m, out]. The present domains' weights are stacked per step
    ([n, out, in]; torch.stack's backward hands each domain its own gradient), so parameters keep
    their per-domain names, optimizer state and checkpoint layout. The same math as the loop over
    domains (test: outputs and gradients equal); `runner` is run_layers or its compiled form.
    """
    plan, _ = layer_plan(modules[present[0]])
    linears = [layer_plan(modules[d])[1] for d in present]
    weights = [torch.stack([ls[i].weight for ls in linears]) for i in range(len(linears[0]))]  # [n, out, in]
    biases = [torch.stack([ls[i].bias for ls in linears]) for i in range(len(linears[0]))]  # [n, out]
    return runner(h3, plan, weights, biases, dropout_seeds(plan))


def apply_layers(module: nn.Module, h: torch.Tensor, runner: Callable | None) -> torch.Tensor:
    """module(h), or through `runner` (compiled run_layers) when given. h: [rows, in] -> [rows, out]."""
    if runner is None:
        return module(h)
    plan, linears = layer_plan(module)
    return runner(h, plan, [m.weight for m in linears], [m.bias for m in linears], dropout_seeds(plan))
