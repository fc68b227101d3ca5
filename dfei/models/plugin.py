"""DFEI as a plug-in: DFE + DFI attached to any backbone's per-domain representation.

The DFEI paper names this as future work. `<backbone>+dfei` keeps the backbone's embedding and
its per-domain representation u_d = backbone.represent(e, d) (the tensor its own head reads:
MMoE/HMoE the domain's gated expert mix, PLE the CGC output, AITM the AIT output, STAR the
star-topology FCN output, PEPNet the last PPNet layer, HiNet the domain tower's hidden layer), adds
DFEI's shared tower s = f(e), the domain feature buffer v_d (an EMA of the batch mean of u_d, Eq. 4)
and the personalised integration z (Eq. 5-6), and predicts with a new per-domain head on
[s, u_d, v_d, z] (Eq. 7). The backbone's own heads (and STAR's auxiliary net, HMoE's label-space
mixing) are not used. MLP has no per-domain representation, so there is no mlp+dfei.
"""
from __future__ import annotations

import torch
from torch import nn

from dfei.models.base import DROPOUT, TOWER, MultiDomainModel, check_domain_indices, head
from dfei.models.options import default
from dfei.models.dfei import DomainFeatureExtraction, DomainFeatureIntegration
from dfei.models.layers import MLP, route_by_domain


class DFEIPlugin(MultiDomainModel):
    def __init__(self, backbone: MultiDomainModel, alpha: float = default("alpha"), k: int = default("k")):
        nn.Module.__init__(self)
        if backbone.representation_dim is None:
            raise ValueError(f"{type(backbone).__name__} exposes no per-domain representation to attach DFEI to")
        self.backbone = backbone
        self.embedding = backbone.embedding  # the same module (and parameters) as the backbone's
        self.num_domains = backbone.num_domains
        e_dim, u_dim = self.embedding.output_dim, backbone.representation_dim
        self.shared_tower = MLP(e_dim, TOWER, DROPOUT)
        self.dfe = DomainFeatureExtraction(self.num_domains, u_dim, alpha)
        self.dfi = DomainFeatureIntegration(e_dim, u_dim, k)
        self.heads = nn.ModuleList(head(TOWER[-1] + 2 * u_dim + k) for _ in range(self.num_domains))

    def domain_modules(self, d: int) -> list[nn.Module]:
        return self.backbone.domain_modules(d) + [self.heads[d]]

    def domain_features(self) -> torch.Tensor:
        return self.dfe.v

    def forward(self, x: torch.Tensor, domain: int | torch.Tensor) -> torch.Tensor:
        # x: [batch, n_features] -> logits [batch]
        e = self.embedding(x)
        s = self.shared_tower(e)  # [batch, 32]
        if isinstance(domain, int):
            if not 0 <= domain < self.num_domains:
                raise IndexError(f"domain index {domain} outside [0, {self.num_domains})")
            dom = torch.full((x.shape[0],), domain, dtype=torch.long, device=x.device)
            present = [domain]
            u = self.backbone.represent(e, domain)
        else:
            dom, present = domain, torch.unique(domain).tolist()
            check_domain_indices(present, self.num_domains)
            u = route_by_domain(self.backbone.represent, e, dom, present,
                                out=e.new_empty(e.shape[0], self.backbone.representation_dim))
        v = self.dfe(u, dom)  # [D, u_dim]
        z, _ = self.dfi(e, v, dom if len(present) > 1 else None)  # [batch, k]; own-domain gradients
        h = torch.cat([s, u, v.index_select(0, dom), z], dim=1)
        return route_by_domain(lambda rows, d: self.heads[d](rows).squeeze(1), h, dom, present,
                               out=e.new_empty(e.shape[0]))
