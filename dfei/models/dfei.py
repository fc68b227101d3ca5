"""DFEI: Automatic Domain Feature Extraction and Personalized Integration.

Xi, Chen, Wang, Cui, Peng, Zhuang, Yan. "Large-Scale Multi-Domain Recommendation: an Automatic
Domain Feature Extraction and Personalized Integration Framework", arXiv 2024 (Meituan).
Reference code: github.com/xidongbo/DFEI (TensorFlow 1.x).

    e   = E(x)                                     shared embedding            (Eq. 2)
    s   = f(e),  u_d = f_d(e)                       shared / domain towers      (Eq. 3)
    v_d = a * v_d' + (1 - a) * mean(u_d)            DFE, an EMA buffer          (Eq. 4)
    z   = sum_d w_d h1(v_d),                        DFI                         (Eq. 5)
    w   = softmax_d(<h2(e), h3(v_d)> / sqrt(k))                                 (Eq. 6)
    y_d = sigmoid(MLP_d([s, u_d, v_d, z]))          per-domain head             (Eq. 7)

Options beyond the paper (off by default, so `dfei` is the paper's model; README "Comparison"):
`domain_norm` (STAR's partitioned normalisation of e, before every use of e) and `dfe_input`
"shared" (v_d as the EMA of the shared tower's output over domain d's rows instead of u_d).

Unlike the authors' code (whose v_d is a random variable that is never written, so inference
uses noise), v is a registered buffer updated at every training step, saved in the state dict and
used frozen at inference.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dfei.models.base import DomainModel
from dfei.models.layers import (
    MLP,
    DomainGroups,
    FeatureEmbedding,
    GlobalBatchStatistics,
    apply_layers,
    output_dim,
    route_by_domain,
    run_layers,
    stacked_apply,
)
from dfei.models.norm import DomainAffine, PartitionedNorm
from dfei.models.options import OPTIONS, check_options, default


class DFEIConfig:
    """DFEI's configuration: every model option (dfei.models.options: alpha, k, towers, ...; the
    declared default where not given), the data's shape and the ablation switches (paper Fig. 2a:
    use_dfi=False is "w/o DFI", both False "w/o DFEI"). ValueError naming the option and the value
    when one does not fit its declaration, for an unknown option, num_domains < 1, or DFI without DFE.
    """

    def __init__(self, cardinalities: Sequence[int], num_domains: int, *, head_dims: Sequence[int] = (32,),
                 use_dfe: bool = True, use_dfi: bool = True, **options: Any):
        check_options(options)
        if num_domains < 1:
            raise ValueError(f"num_domains must be >= 1, got {num_domains}")
        if use_dfi and not use_dfe:
            raise ValueError("use_dfi=True needs use_dfe=True: DFI integrates the DFE domain features")
        self.cardinalities, self.num_domains = list(cardinalities), num_domains
        self.head_dims = list(head_dims)  # the authors' Dense(32, relu) before the output
        self.use_dfe, self.use_dfi = use_dfe, use_dfi
        for name in OPTIONS:
            setattr(self, name, copy.copy(options[name]) if name in options else default(name))

    def __repr__(self) -> str:
        return f"DFEIConfig({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class DomainFeatureExtraction(GlobalBatchStatistics, nn.Module):
    """DFE (Eq. 4): v_d^t = alpha * v_d^{t-1} + (1 - alpha) * mean(u_d^t), v_d^0 = mean(u_d^0).
    (u: the domain tower's output, as the paper; DFEI's dfe_input "shared" passes the shared tower's.)

    `v` [D, dim] and `initialized` [D] are buffers (model state, never parameters). In training
    the gradient flows through the current batch mean only; v^{t-1} is a constant. In eval the
    buffer is returned unchanged. `reducer`, when set (distributed training), turns this worker's
    per-domain [sum, count] into the global one so every worker computes the same v; it must be
    differentiable (an autograd-aware all-reduce) so the gradient through v is the global one.
    """

    def __init__(self, num_domains: int, dim: int, alpha: float):
        super().__init__()
        self.alpha = alpha
        self.register_buffer("v", torch.zeros(num_domains, dim))
        self.register_buffer("initialized", torch.zeros(num_domains, dtype=torch.bool))
        self.reducer = None  # set by dfei.train.distributed on N > 1 ranks (GlobalBatchStatistics)

    def forward(self, u: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        # u: [batch, dim], domain: [batch] in [0, D) -> V: [D, dim]
        if not self.training:
            return self.v
        n_domains, dim = self.v.shape
        sums = torch.zeros(n_domains, dim, dtype=u.dtype, device=u.device).index_add(0, domain, u)
        counts = u.new_zeros(n_domains).index_add_(0, domain, u.new_ones(domain.shape[0]))  # [D] (bincount has no
        # meta/fake kernel: this runs under torch.compile and on any device)
        sums, counts = self.global_sums(sums, counts)  # the global batch's, under DDP
        present = counts > 0
        mean = sums / counts.clamp(min=1.0).unsqueeze(1)  # [D, dim]
        prev = self.v.detach().clone()  # clones: the buffers are updated in place below
        ema = self.alpha * prev + (1.0 - self.alpha) * mean
        new = torch.where(self.initialized.clone().unsqueeze(1), ema, mean)
        v_t = torch.where(present.unsqueeze(1), new, prev)  # [D, dim]
        with torch.no_grad():
            self.v.copy_(v_t)
            self.initialized |= present
        return v_t


class DomainFeatureIntegration(nn.Module):
    """DFI (Eq. 5-6): z = sum_d w_d h1(v_d), w = softmax_d(<h2(e), h3(v_d)> / sqrt(k)).

    The query h2(e) is personalised per sample; keys h3(v_d) and values h1(v_d) depend only on
    the domain features. h1..h3 are single linear layers with bias, as in the authors' code.
    """

    def __init__(self, embed_dim: int, domain_dim: int, k: int):
        super().__init__()
        self.k = k
        self.h1 = nn.Linear(domain_dim, k)  # value
        self.h2 = nn.Linear(embed_dim, k)  # query
        self.h3 = nn.Linear(domain_dim, k)  # key

    def forward(self, e: torch.Tensor, v: torch.Tensor,
                domain: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """e: [batch, embed_dim], v: [D, domain_dim] -> z: [batch, k], w: [batch, D].

        `domain` [batch] int64 (a fused step's rows of several domains): the same z and w, but a
        row's gradient reaches only its own domain's v_d, as in a sequential step of that domain,
        where the other domains' v are buffers (constants). Without it every domain's loss would
        also train every other present domain's tower through v (measured: fused trailed
        sequential on the industrial profile; BENCHMARKS.md "Fused vs sequential").
        """
        query = self.h2(e)  # [batch, k]
        if domain is None or not (torch.is_grad_enabled() and v.requires_grad):
            keys = self.h3(v)  # [D, k]
            values = self.h1(v)  # [D, k]
            w = torch.softmax(query @ keys.T / math.sqrt(self.k), dim=1)  # [batch, D]
            return w @ values, w
        fixed = v.detach()
        keys, values = self.h3(fixed), self.h1(fixed)  # [D, k]: h1, h3 still learn; v does not
        live_keys, live_values = self.h3(v).index_select(0, domain), self.h1(v).index_select(0, domain)  # [batch, k]
        own_key = live_keys - keys.index_select(0, domain)  # 0, with the gradient of the row's own key
        scores = query @ keys.T  # [batch, D]
        scores = scores + F.one_hot(domain, scores.shape[1]) * (query * own_key).sum(1, keepdim=True)
        w = torch.softmax(scores / math.sqrt(self.k), dim=1)  # [batch, D]
        own_value = live_values - values.index_select(0, domain)  # 0, with the gradient of the row's own value
        return w @ values + w.gather(1, domain.unsqueeze(1)) * own_value, w


class DFEI(DomainModel, nn.Module):
    """The full model. `forward(x, domain)` returns logits [batch].

    `domain` is either an int (a single-domain batch, Algorithm 1's sequential step) or a
    LongTensor [batch] of per-row domain indices in [0, D) (inference, fused steps). In training
    the domain towers and heads then run as one batched matmul per layer over the present domains'
    rows (`stacked_apply`; `stacked = False` loops over the domains instead: the same outputs and
    gradients up to float summation order without dropout, the same dropout distribution, other
    masks); in eval each domain's rows go through its own modules, as single-domain batches do,
    so mixed-batch scores equal evaluation's bit for bit. DFE statistics per present domain by
    index_add.
    """

    stacked = True
    accepts_groups = True  # forward takes the fused step's DomainGroups
    per_domain_modules = ("domain_towers", "heads", "domain_norms")  # ModuleLists indexed by domain
    per_domain_rows = ("dfe.v", "dfe.initialized", "norm.running_mean", "norm.running_var", "norm.initialized")
    # None: towers and heads run as modules; else a compiled layers.run_layers (dfei.train.compiled)
    layer_runner = None

    def __init__(self, config: DFEIConfig):
        super().__init__()
        self.config = config
        c = config
        self.embedding = FeatureEmbedding(c.cardinalities, c.embed_dim, c.embed_init_std)
        e_dim = self.embedding.output_dim
        if c.domain_norm:  # shared gamma, beta and statistics; gamma_d, beta_d per domain (learn at lr)
            self.norm = PartitionedNorm(c.num_domains, e_dim)
            self.domain_norms = nn.ModuleList(DomainAffine(e_dim) for _ in range(c.num_domains))
        self.shared_tower = MLP(e_dim, c.tower_dims, c.tower_dropouts)
        self.domain_towers = nn.ModuleList(
            MLP(e_dim, c.tower_dims, c.tower_dropouts) for _ in range(c.num_domains)
        )
        out = self.shared_tower.output_dim
        head_in = 2 * out
        self.dfe = DomainFeatureExtraction(c.num_domains, out, c.alpha) if c.use_dfe else None
        self.dfi = DomainFeatureIntegration(e_dim, out, c.k) if c.use_dfi else None
        head_in += out if c.use_dfe else 0
        head_in += c.k if c.use_dfi else 0
        self.heads = nn.ModuleList(self._head(head_in, c.head_dims) for _ in range(c.num_domains))

    @staticmethod
    def _head(input_dim: int, dims: list[int]) -> nn.Sequential:
        mlp = MLP(input_dim, dims)  # the authors' Dense(32, relu), no dropout
        return nn.Sequential(mlp, nn.Linear(mlp.output_dim, 1))

    @property
    def num_domains(self) -> int:
        return self.config.num_domains

    def domain_features(self) -> torch.Tensor | None:
        return self.dfe.v if self.dfe is not None else None

    def compilable_layers(self) -> list[nn.Module]:
        return [self.shared_tower, self.domain_towers[0], self.heads[0]]  # every layer plan: tower, head

    def set_layer_runner(self, runner) -> None:
        self.layer_runner = runner

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """theta^s of Eq. 8: E, f, h1..h3 and with domain_norm the shared gamma, beta (learn at lr *
        shared_lr_scale)."""
        yield from self.embedding.parameters()
        if self.config.domain_norm:
            yield from self.norm.parameters()
        yield from self.shared_tower.parameters()
        if self.dfi is not None:
            yield from self.dfi.parameters()

    def domain_parameters(self, d: int) -> Iterator[nn.Parameter]:
        """theta^u_d: domain d's tower and head (and its norm scale/shift with domain_norm; learn at lr)."""
        if self.config.domain_norm:
            yield from self.domain_norms[d].parameters()
        yield from self.domain_towers[d].parameters()
        yield from self.heads[d].parameters()

    def _per_domain(self, modules: Sequence[nn.Module], h: torch.Tensor, domain: torch.Tensor,
                    groups: DomainGroups) -> torch.Tensor:
        # modules[d] applied to the rows of each present domain d: [rows, in] -> [rows, out]
        if not groups.present:  # an empty batch
            return h.new_zeros(0, output_dim(modules[0]))
        if len(groups.present) == 1:
            return apply_layers(modules[groups.present[0]], h, self.layer_runner)
        # training (a fused step): one batched matmul per layer over the padded per-domain blocks. In
        # eval, a mixed batch (batch predict) runs each domain's rows through its own modules: the
        # exact computation of evaluation and of the exports, so every path scores a row bit for bit
        # alike (a batched matmul sums in another order: scores moved by ~1e-7, AUCs by ~1e-5)
        if self.stacked and self.training:
            runner = self.layer_runner or run_layers
            return groups.unpad(stacked_apply(modules, groups.present, groups.pad(h), runner))
        return route_by_domain(lambda rows, d: modules[d](rows), h, domain, groups.present,
                               out=h.new_empty(h.shape[0], output_dim(modules[groups.present[0]])))

    def _normalise(self, e: torch.Tensor, domain: int | torch.Tensor, groups: DomainGroups | None) -> torch.Tensor:
        # domain_norm: each domain's rows through the partitioned norm with its own statistics and scale
        if isinstance(domain, int):
            return self.norm(e, domain, self.domain_norms[domain])
        if not groups.present:
            return e
        return route_by_domain(lambda rows, d: self.norm(rows, d, self.domain_norms[d]), e, domain, groups.present,
                               out=torch.empty_like(e))

    def forward(self, x: torch.Tensor, domain: int | torch.Tensor, groups: DomainGroups | None = None) -> torch.Tensor:
        """x: [batch, F] int64 ids; domain: an int (one domain's batch) or [batch] int64 model domain
        indices in any order (IndexError outside [0, D)); groups: the batch's DomainGroups when the
        caller has them from host ids (the fused step), else built here (one host copy) -> logits [batch]."""
        batch = x.shape[0]
        single = isinstance(domain, int)
        if single and not 0 <= domain < self.num_domains:
            raise IndexError(f"domain index {domain} outside [0, {self.num_domains})")
        if not single and groups is None:
            groups = DomainGroups.from_tensor(domain, self.num_domains)
        e = self.embedding(x)  # [batch, F * embed_dim]
        if self.config.domain_norm:
            e = self._normalise(e, domain, groups)
        s = apply_layers(self.shared_tower, e, self.layer_runner)  # [batch, 32]
        dom = torch.full((batch,), domain, dtype=torch.long, device=x.device) if single else domain
        if single:
            u = apply_layers(self.domain_towers[domain], e, self.layer_runner)
        else:
            u = self._per_domain(self.domain_towers, e, dom, groups)
        parts = [s, u]  # u: [batch, 32]
        if self.dfe is not None:
            v = self.dfe(s if self.config.dfe_input == "shared" else u, dom)  # [D, 32]
            parts.append(v[domain].expand(batch, -1) if single else v.index_select(0, dom))
            if self.dfi is not None:
                # several domains: a row's gradient to its own v only (one domain: the others are buffers already)
                z, _ = self.dfi(e, v, dom if not single and len(groups.present) > 1 else None)  # [batch, k]
                parts.append(z)
        h = torch.cat(parts, dim=1)
        if single:
            return apply_layers(self.heads[domain], h, self.layer_runner).squeeze(1)
        return self._per_domain(self.heads, h, dom, groups).squeeze(1)
