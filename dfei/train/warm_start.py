"""Incremental (daily) training: start a run from a previous run's checkpoint (--init-from).

The new run takes the checkpoint's weights, its domain features v with their `initialized` flags
(so each v_d continues its EMA instead of restarting from a batch mean) and, unless
--reset-optimizer, its Adam state. Domains are matched by their dataset ids, so the new data may
list them in another order and may add domains: a new domain gets a fresh tower and head and its
v_d starts from its first batch mean, as in a first run (with new_domain_from, its tower and head
start as a copy of that checkpoint domain's, without its Adam state). A domain of the checkpoint that the new
data lacks would lose its tower: that is refused unless drop_missing_domains is set.

Features must be encoded the same way (dfei.data.encoders.compat.relate): datasets with encoders
must have the checkpoint's encoders (then their cardinalities are equal) or grown ones (`prepare_data.py
csv --encoders-from ... --grow`): each grown feature's embedding rows are extended, the old rows and
their Adam moments kept bit for bit at their ids, the new rows initialised as a fresh model's and
their moments zero. Datasets with native ids (synthetic) must have the same names and cardinalities.
Data encoded otherwise is refused naming the feature and a value whose id differs. Every registered model can be continued on the same domains; adding or dropping domains is supported
for the models that declare their per-domain state (dfei.models.base.DomainModel: per_domain_modules,
per_domain_rows; DFEI and its ablations: the domain towers, heads, rows of v, and with domain_norm each
domain's norm scale/shift and statistics rows; the baselines have parameters sized by the number of
domains). The model and its architecture options must match (dfei.models.options: those marked
architecture, dfe_input among them, so an EMA of u_d never continues as one of s).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dfei.data.encoders import FeatureTransform
from dfei.data.encoders.compat import check_recorded, relate
from dfei.data.spec import DatasetError, DatasetSpec
from dfei.errors import CheckpointError
from dfei.config import TrainConfig
from dfei.models import options
from dfei.models.build import model_from_config
from dfei.models.registry import MODELS, entry

ARCHITECTURE = ("model", *options.ARCHITECTURE)  # what a continued run must share with its checkpoint


def _per_domain(model: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(modules indexed by domain, state tensors with a row per domain) model `model` declares, or
    None when its domains cannot change between runs."""
    cls = entry(model).cls
    return None if cls.per_domain_modules is None else (cls.per_domain_modules, cls.per_domain_rows)


def _domain_changing_models() -> list[str]:
    return [name for name in MODELS if _per_domain(name) is not None]


def _source_name(name: str, new_ids: list[int], old_index: dict[int, int], per_domain_modules: tuple[str, ...],
                 seed_index: int | None = None) -> str | None:
    """The old state-dict entry a new entry is copied from (None: a new domain's, left as built;
    with seed_index, a new domain's comes from that old domain)."""
    if name.split(".", 1)[0] in per_domain_modules:
        prefix, j, rest = name.split(".", 2)
        old = old_index.get(new_ids[int(j)], seed_index)
        return None if old is None else f"{prefix}.{old}.{rest}"
    return name


def plan(cfg: TrainConfig, spec: DatasetSpec, ckpt: dict[str, Any], where: str,
         data_transform: FeatureTransform | None = None) -> dict[str, Any]:
    """Check that the checkpoint can start this run (its encoders against `data_transform`, the
    data's); return the domain matching and the embedding rows each feature carries over."""
    old_cfg = TrainConfig.from_dict(ckpt["state"]["config"], where=where, legacy=True)
    old_spec = DatasetSpec.from_json(ckpt["state"]["dataset"])
    for key in ARCHITECTURE:
        if getattr(old_cfg, key) != getattr(cfg, key):
            raise CheckpointError(f"--init-from {where}: {key} is {getattr(old_cfg, key)!r} there but {getattr(cfg, key)!r} "
                             "here; a run can only continue the same architecture")
    check_recorded(old_spec, spec, f"--init-from {where}")
    relation = relate(ckpt["transform"], data_transform, f"--init-from {where}", data_name="the data's (--data)")
    if relation.kind != "native":
        if old_spec.feature_names != spec.feature_names:  # same encoders, other dataset.json features: edited
            raise DatasetError(f"--init-from {where}: features {spec.feature_names} differ from the checkpoint's "
                               f"{old_spec.feature_names}")
    elif old_spec.features != spec.features:
        old = {f.name: f.cardinality for f in old_spec.features}
        new = {f.name: f.cardinality for f in spec.features}
        diff = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
        raise DatasetError(f"--init-from {where}: features differ from the checkpoint's (name: checkpoint -> data) "
                           + ", ".join(f"{n}: {old.get(n)} -> {new.get(n)}" for n in diff)
                           + "; the embedding tables cannot be carried over")
    old_ids, new_ids = [d.id for d in old_spec.domains], [d.id for d in spec.domains]
    continued = [d for d in spec.domains if d.id in old_ids]
    new = [d for d in spec.domains if d.id not in old_ids]
    dropped = [d for d in old_spec.domains if d.id not in new_ids]
    if (new or dropped or old_ids != new_ids) and _per_domain(cfg.model) is None:
        raise CheckpointError(f"--init-from {where}: the domains changed ({[d.name for d in old_spec.domains]} -> "
                              f"{spec.domain_names}); continuing over changed domains is supported for "
                              f"{_domain_changing_models()}, not {cfg.model!r}")
    if dropped and not cfg.drop_missing_domains:
        raise CheckpointError(f"--init-from {where}: the data lacks domain(s) {[d.name for d in dropped]} of the checkpoint; "
                         "their towers and v rows would be lost. Add them to the data, or pass "
                         "--drop-missing-domains to continue without them")
    seed_index = None
    if cfg.new_domain_from is not None:
        names = [d.name for d in old_spec.domains]
        if cfg.new_domain_from not in names:
            raise CheckpointError(f"--new-domain-from {cfg.new_domain_from!r}: the checkpoint {where} has no such domain; "
                             f"it has {names}")
        if _per_domain(cfg.model) is None:
            raise CheckpointError(f"--new-domain-from needs one of {_domain_changing_models()}, not {cfg.model!r}")
        seed_index = names.index(cfg.new_domain_from)
    return {"old_cfg": old_cfg, "old_spec": old_spec, "old_index": {i: k for k, i in enumerate(old_ids)},
            "seed_index": seed_index, "seeded_from": cfg.new_domain_from if new else None,
            "new_ids": new_ids, "continued": [d.name for d in continued], "new": [d.name for d in new],
            "dropped": [d.name for d in dropped], "grown": dict(relation.grown),
            "rows": (old_spec.cardinalities, spec.cardinalities)}


def embedding_rows(old_cards: list[int], new_cards: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows of the old fused table, the rows they move to in the new one) [sum(old_cards)] int64:
    feature f's ids 0..old_cards[f]-1 keep their ids; a grown feature's new ids follow them."""
    old_start = [0] + list(torch.tensor(old_cards).cumsum(0)[:-1].tolist())
    new_start = [0] + list(torch.tensor(new_cards).cumsum(0)[:-1].tolist())
    old = torch.cat([torch.arange(o, o + c) for o, c in zip(old_start, old_cards)])
    new = torch.cat([torch.arange(n, n + c) for n, c in zip(new_start, old_cards)])
    return old, new


def _carry_rows(fresh: torch.Tensor, old: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    """`fresh` (the new table, or its Adam moment) with the old table's rows at their places."""
    old_rows, new_rows = embedding_rows(*p["rows"])
    merged = fresh.clone()
    merged[new_rows] = old[old_rows].to(merged.dtype)
    return merged


def model_state(model: nn.Module, old_state: dict[str, torch.Tensor], p: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The new model's state dict with every tensor the checkpoint has for it."""
    state = model.state_dict()
    tables = {n for n, t in model.state_dict(keep_vars=True).items() if t is model.embedding.weight}
    modules, rows = _per_domain(p["old_cfg"].model) or ((), ())
    for name, tensor in state.items():
        if name in tables and p["grown"]:
            state[name] = _carry_rows(tensor, old_state[name], p)
            continue
        if name in rows:
            merged = tensor.clone()
            for j, domain_id in enumerate(p["new_ids"]):
                if domain_id in p["old_index"]:
                    merged[j] = old_state[name][p["old_index"][domain_id]]
            state[name] = merged
            continue
        src = _source_name(name, p["new_ids"], p["old_index"], modules, p["seed_index"])
        if src is None:
            continue
        if src not in old_state or old_state[src].shape != tensor.shape:
            raise CheckpointError(f"--init-from: the checkpoint has no {src} of shape {list(tensor.shape)}")
        state[name] = old_state[src]
    return state


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, old_optimizer_state: dict,
                    p: dict[str, Any]) -> dict:
    """The new optimizer's state dict carrying each parameter's Adam state from the checkpoint
    (a new domain's parameters start without state); learning rates are this run's."""
    from dfei.train.optim import param_groups

    old_cfg, old_spec = p["old_cfg"], p["old_spec"]
    with torch.device("meta"):  # only its parameter names and their order in the optimizer: no memory
        old_model = model_from_config(old_cfg, old_spec)
    old_names = {id(q): n for n, q in old_model.named_parameters()}
    order = [old_names[id(q)] for g in param_groups(old_model, 1.0, 0.0, 1.0) for q in g["params"]]
    old_by_name = {order[int(i)]: st for i, st in old_optimizer_state["state"].items()}
    new_names = {id(q): n for n, q in model.named_parameters()}
    modules = (_per_domain(old_cfg.model) or ((), ()))[0]
    state = optimizer.state_dict()
    index = 0
    for group in optimizer.param_groups:
        for q in group["params"]:
            src = _source_name(new_names[id(q)], p["new_ids"], p["old_index"], modules)
            if src in old_by_name:
                carried = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in old_by_name[src].items()}
                if q is model.embedding.weight and p["grown"]:  # moments of the new rows start at zero
                    carried = {k: (_carry_rows(torch.zeros_like(q), v, p) if k in ("exp_avg", "exp_avg_sq") else v)
                               for k, v in carried.items()}
                state["state"][index] = carried
            index += 1
    return state


def summary(p: dict[str, Any], checkpoint: str, optimizer: str) -> str:
    """One log line: what a run takes from the checkpoint."""
    seeded = f" (towers and heads seeded from {p['seeded_from']})" if p["seeded_from"] else ""
    dropped = f"; dropping {p['dropped']}" if p["dropped"] else ""
    grown = ("; embedding rows extended for " + ", ".join(f"{n} {a:,} -> {b:,}" for n, (a, b) in p["grown"].items())
             if p["grown"] else "")
    return (f"from {checkpoint}: continuing {p['continued']} (their v_d continue their EMA); new domains "
            f"{p['new'] or 'none'}{seeded}{dropped}{grown}; optimizer state {optimizer}")


def optimizer_source(cfg: TrainConfig, has_optimizer: bool) -> str:
    return "restored" if has_optimizer and not cfg.reset_optimizer else "reset"


def init_record(p: dict[str, Any], checkpoint: str, optimizer: str) -> dict[str, Any]:
    """What metrics.json records of a warm start (`init_from`): the checkpoint, the domains continued,
    new (and the domain they were seeded from), dropped, the optimizer state's source, grown features."""
    return {"checkpoint": checkpoint, "continued": p["continued"], "new_domains": p["new"],
            "dropped_domains": p["dropped"], "new_domains_seeded_from": p["seeded_from"], "optimizer": optimizer,
            "grown_features": {n: list(c) for n, c in p["grown"].items()}}
