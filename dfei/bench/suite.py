"""The performance benchmark (pipelines/benchmark.py): every comparison measured in the same run.

train       DFEI, Algorithm 1, industrial profile (21 domains): a plain in-memory PyTorch loop (the
            limit), the full Ray pipeline on 1 and 2 workers streaming Parquet; the FLOP/s it
            reaches as a fraction of this machine's matmul peak (measured here)
ingest      each ingest backend alone (no model) vs the training rate
sync        2-worker step time with and without the EMA statistics all-reduce
embeddings  step time with 10^6-row id tables vs 10^4-row ones (lazy and dense updates)
startup     Ray start-up and time to the first training step
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np
import torch

from dfei.bench import measure, ray_measure
from dfei.data.dataset import ParquetDataset
from dfei.data.fs import absolute
from dfei.errors import ConfigError
from dfei.config import MODES, TrainConfig


@dataclasses.dataclass
class BenchConfig:
    out: str = "runs/benchmark"
    scale: float = 0.02
    modes: tuple[str, ...] = MODES
    headline_mode: str = "sequential"  # the mode the train.* / ingest.* / sync.* headline keys report
    epochs: int = 2  # per 2-worker run (the median of its epochs' steady rates counts)
    repeats: int = 3  # rounds of (1-worker Ray run, plain epoch) after a first plain epoch, per mode
    use_gpu: bool = False
    two_workers: bool = True
    quick: bool = False  # Ray runs in the headline mode only, shorter sync blocks
    seed: int = 0
    compile: bool = True  # the first plain round also runs each mode with --compile (and scores both)
    parity: tuple[str, ...] = ()  # parity.json files of pipelines/parity.py (mode=sequential,mode=fused)

    def __post_init__(self) -> None:
        self.out = absolute(self.out)  # Ray Train storage and every run directory derive from it
        if any(m not in MODES for m in self.modes) or self.headline_mode not in self.modes:
            raise ConfigError(f"--modes must be among {MODES} and include --headline-mode {self.headline_mode}; "
                             f"got {self.modes}")
        if not self.scale > 0:
            raise ConfigError(f"--scale must be > 0, got {self.scale}")
        for path in self.parity:  # read before the hour of measuring, not after
            parity_figures(path)


def _data(cfg: BenchConfig, log) -> str:
    from dfei.data.synthetic import generate

    path = os.path.join(cfg.out, "data", f"industrial-s{cfg.scale:g}-seed{cfg.seed}")
    if not os.path.exists(os.path.join(path, "dataset.json")):
        log(f"[bench] generating the industrial profile at scale {cfg.scale:g} into {path}")
        generate("industrial", cfg.scale, seed=cfg.seed, out=path, log=lambda *a: None)
    return os.path.abspath(path)


def run(cfg: BenchConfig, log=print) -> dict[str, Any]:
    """Measure every comparison in one run; writes cfg.out/benchmark.json and returns its figures."""
    from dfei.atomic import write_json_atomic
    from dfei.ray_runtime import init_ray

    t_all = time.time()
    os.makedirs(cfg.out, exist_ok=True)
    device = torch.device("cuda" if cfg.use_gpu else "cpu")
    data = _data(cfg, log)
    dataset = ParquetDataset(data)
    cards, domains = dataset.spec.cardinalities, dataset.spec.num_domains
    res = _describe(cfg, dataset, data, device, log)

    # Ray first: every plain round then runs beside the same idle Ray processes, so the rounds
    # before and after each Ray run are measured in one setting
    t0 = time.time()
    ray_mode = init_ray(log)
    ray_init_s = time.time() - t0

    peak, flops, emb, plain, bound, all_domain = _in_process(cfg, data, device, cards, domains, log)
    base = TrainConfig(data=data, epochs=1, patience=1, seed=cfg.seed, use_gpu=cfg.use_gpu,
                       log_every_s=3600.0, out=os.path.join(cfg.out, "runs"))
    h = cfg.headline_mode
    ray_modes = (h,) if cfg.quick else cfg.modes
    runs = _one_worker_rounds(cfg, base, ray_modes, data, device, plain, log)
    two = _two_worker_runs(cfg, base, ray_modes, log)
    ingest = _ingest(cfg, base, log)
    sync = _sync(cfg, cards, domains, ray_modes, log)

    modes = {m: _summary(m, runs[m], plain, two) for m in ray_modes}
    res["train"] = _train_figures(h, modes, runs, two, flops, peak)
    ray_1w = res["train"]["ray_1w_sps"]
    res["ingest"] = {"backend": "arrow", "rows_per_s": ingest["arrow"]["rows_per_s"],
                     "ratio_to_train": ingest["arrow"]["rows_per_s"] / ray_1w,
                     "backends": {b: {**v, "ratio_to_train": v["rows_per_s"] / ray_1w} for b, v in ingest.items()}}
    res["sync"] = {"mode": h, "overhead_frac": sync[h]["overhead_frac"] if sync else None, "modes": sync}
    res["embeddings"] = {"ratio": emb["lazy"]["ratio"], "update": "lazy", "variants": emb}
    res["fast_path"] = _fast_path(cfg, plain, bound, all_domain, flops, peak)
    res["targets"] = targets(cfg, res)
    first = runs[h][0]
    res["startup_s"] = ray_init_s + first["fit_to_first_step_s"]
    res["startup"] = {"ray": ray_mode, "ray_init_s": ray_init_s,
                      **{k: first[k] for k in ("fit_to_first_step_s", "fit_to_worker_start_s", "worker_setup_s",
                                               "ready_to_first_step_s")}}
    res["seconds"] = time.time() - t_all
    write_json_atomic(os.path.join(cfg.out, "benchmark.json"), res)
    log("\n" + table(res))
    log(f"[bench] {res['seconds']:.0f}s; figures in {os.path.join(cfg.out, 'benchmark.json')}")
    return res


def _describe(cfg: BenchConfig, dataset: ParquetDataset, data: str, device: torch.device, log) -> dict[str, Any]:
    """The results' header: the machine, the config and the data measured."""
    spec = dataset.spec
    cards, domains = spec.cardinalities, spec.num_domains
    res: dict[str, Any] = {"machine": _machine(), "config": dataclasses.asdict(cfg),
                           "data": {"uri": data, "train_rows": sum(dataset.rows("train")), "domains": domains,
                                    "features": len(cards), "id_table_rows": max(cards)}}
    log(f"[bench] {spec.name}: {res['data']['train_rows']:,} train rows, {domains} domains, {len(cards)} features; "
        f"device {device}, torch threads {torch.get_num_threads()}")
    return res


def _in_process(cfg: BenchConfig, data: str, device: torch.device, cards: list[int], domains: int,
                log) -> tuple[float, float, dict[str, dict[str, float]], dict[str, list[float]], dict[str, float],
                              dict[str, float]]:
    """No Ray: the matmul peak, FLOPs per sample, the dense-tower bound, embedding step times and the
    first plain round (with --compile variants unless cfg.quick or not cfg.compile)."""
    peak = measure.matmul_peak_flops(device=device)
    flops = measure.flops_per_sample(cards, domains)
    bound = measure.dense_tower_bound(num_domains=domains, input_dim=16 * len(cards), device=device,
                                      steps=5 if cfg.quick else 20, rounds=2 if cfg.quick else 3)
    all_domain = measure.all_domain_step_rates(cards, domains, cfg.modes, device=device, steps=3 if cfg.quick else 10)
    log(f"[bench] dense-tower bound: {bound['bound_sps']:,.0f} samples/s (loop {bound['loop_sps']:,.0f}, stacked "
        f"{bound['stacked_sps']:,.0f}); steps with every domain present: " + ", ".join(
            f"{m} {v:,.0f}/s" for m, v in all_domain.items()))
    emb = {}
    for lazy in (True, False):
        t = measure.embedding_step_times(lazy, device=device, steps=20 if cfg.quick else 40,
                                         rounds=2 if cfg.quick else 3)
        emb["lazy" if lazy else "dense"] = {"step_s_1e4": t[10**4], "step_s_1e6": t[10**6], "ratio": t[10**6] / t[10**4]}
    plain: dict[str, list[float]] = {}  # mode -> one rate per plain round (repeats + 1 of them)
    _plain_round(cfg, data, device, plain, compiled=cfg.compile and not cfg.quick)
    log("[bench] plain loop: " + ", ".join(f"{m} {v[0]:,.0f}/s" for m, v in plain.items() if m in cfg.modes)
        + f"; embeddings 1e6/1e4 lazy {emb['lazy']['ratio']:.2f}, dense {emb['dense']['ratio']:.2f}")
    return peak, flops, emb, plain, bound, all_domain


def _plain_round(cfg: BenchConfig, data: str, device: torch.device, plain: dict[str, list[float]],
                 compiled: bool = False) -> None:
    """One epoch of the plain loop per mode (in a fresh process); appends each rate to plain[mode]
    (and, with `compiled`, the --compile figures to plain["<mode>+compile"] etc.)."""
    rates = measure.plain_rates_in_fresh_process(data, cfg.modes, cfg.seed, device.type, streaming=not cfg.quick,
                                                 compiled=compiled)
    for m, value in rates.items():
        plain.setdefault(m, []).append(value)


def _one_worker_rounds(cfg: BenchConfig, base: TrainConfig, ray_modes: tuple[str, ...], data: str,
                       device: torch.device, plain: dict[str, list[float]], log) -> dict[str, list[dict[str, Any]]]:
    """1-worker Ray runs and plain rounds alternate (ABAB), so each run is compared with the plain loop
    measured just before and after it: the machine's load drifts by +-20 % over minutes here."""
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in ray_modes}
    for r in range(cfg.repeats):
        for m in ray_modes:
            run_cfg = base.replace(mode=m, out=os.path.join(cfg.out, "runs", f"{m}-1w-{r}"))
            runs[m].append(ray_measure.pipeline_rate(run_cfg))
        _plain_round(cfg, data, device, plain)
        log(f"[bench] round {r + 1}/{cfg.repeats}: ray 1 worker " + ", ".join(
            f"{m} {runs[m][-1]['samples_per_s']:,.0f}/s" for m in ray_modes) + "; plain " + ", ".join(
            f"{m} {plain[m][-1]:,.0f}/s" for m in cfg.modes))
    return runs


def _two_worker_runs(cfg: BenchConfig, base: TrainConfig, ray_modes: tuple[str, ...],
                     log) -> dict[str, dict[str, Any]]:
    """One cfg.epochs-epoch Ray run on 2 workers per mode (none without cfg.two_workers)."""
    two: dict[str, dict[str, Any]] = {}
    if not cfg.two_workers:
        return two
    for m in ray_modes:
        run_cfg = base.replace(mode=m, num_workers=2, epochs=cfg.epochs, patience=cfg.epochs,
                               out=os.path.join(cfg.out, "runs", f"{m}-2w"))
        two[m] = ray_measure.pipeline_rate(run_cfg)
        log(f"[bench] ray {m}, 2 workers: {two[m]['samples_per_s']:,.0f} samples/s")
    return two


def _ingest(cfg: BenchConfig, base: TrainConfig, log) -> dict[str, dict[str, Any]]:
    """Each ingest backend's rows/s with no model, in the headline mode."""
    # quick: the default backend only (ray-data starts one Ray Data execution per domain: ~40 s here)
    ingest = ray_measure.ingest_rates(base.replace(mode=cfg.headline_mode),
                                      backends=("arrow",) if cfg.quick else ("arrow", "ray-data"))
    log("[bench] ingest: " + ", ".join(f"{b} {v['rows_per_s']:,.0f} rows/s" for b, v in ingest.items()))
    return ingest


def _sync(cfg: BenchConfig, cards: list[int], domains: int, ray_modes: tuple[str, ...],
          log) -> dict[str, dict[str, Any]]:
    """The EMA statistics all-reduce's share of a 2-worker step, per mode (none without cfg.two_workers)."""
    if not cfg.two_workers:
        return {}
    sync = ray_measure.sync_overhead(cards, domains, cfg.out, modes=ray_modes, use_gpu=cfg.use_gpu,
                                     steps=4 if cfg.quick else 30)
    log("[bench] EMA sync at 2 workers: " + ", ".join(f"{m} {v['overhead_frac']:.1%}" for m, v in sync.items()))
    return sync


def _summary(m: str, runs: list[dict[str, Any]], plain: dict[str, list[float]],
             two: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mode m's figures: each 1-worker run's rate over the mean of the plain rounds around it."""
    ray = [r["samples_per_s"] for r in runs]
    paired = [ray[r] / ((plain[m][r] + plain[m][r + 1]) / 2) for r in range(len(ray))]
    out = {"plain_sps": float(np.median(plain[m])), "ray_1w_sps": float(np.median(ray)),
           "ratio_1w": float(np.median(paired)), "ratio_1w_paired": paired, "ray_1w_runs": ray,
           "plain_runs": plain[m]}
    if f"{m}+arrow" in plain:  # the plain loop fed by the arrow ingest, no Ray
        out["stream_sps"] = float(np.median(plain[f"{m}+arrow"]))
        out["stream_runs"] = plain[f"{m}+arrow"]
    if m in two:
        out["ray_2w_sps"] = two[m]["samples_per_s"]
    return out


def _fast_path(cfg: BenchConfig, plain: dict[str, list[float]], bound: dict[str, float],
               steps: dict[str, float], flops: float, peak: float) -> dict[str, Any]:
    """The fast-path figures (issue 16): each mode's plain rate against the dense-tower bound, fused
    over sequential paired by plain round, and the --compile variants' rate, compile time and AUC."""
    seq, fused = plain.get("sequential"), plain.get("fused")
    paired = [f / s for f, s in zip(fused, seq)] if seq and fused else []
    modes = {}
    for m in cfg.modes:
        v: dict[str, Any] = {"plain_sps": float(np.median(plain[m])), "bound_frac": float(np.median(plain[m])) /
                             bound["bound_sps"], "peak_fraction": flops * float(np.median(plain[m])) / peak}
        if f"{m}+compile" in plain:
            c = plain[f"{m}+compile"][0]
            v.update(compile_sps=c, compile_speedup=c / plain[m][0], compile_s=plain[f"{m}+compile_s"][0],
                     compiled=bool(plain[f"{m}+compiled"][0]), compile_peak_fraction=flops * c / peak,
                     auc=plain[f"{m}_auc"][0], compile_auc=plain[f"{m}+compile_auc"][0])
        modes[m] = v
    best = max(modes, key=lambda m: max(modes[m]["plain_sps"], modes[m].get("compile_sps", 0.0)))
    best_sps = max(modes[best]["plain_sps"], modes[best].get("compile_sps", 0.0))
    return {"bound": bound, "modes": modes, "best_mode": best, "best_sps": best_sps,
            "all_domain_steps": steps, "fused_over_sequential_all_domain_steps":
                steps["fused"] / steps["sequential"] if {"fused", "sequential"} <= set(steps) else None,
            "best_bound_frac": best_sps / bound["bound_sps"],
            "fused_over_sequential": float(np.median(paired)) if paired else None,
            "fused_over_sequential_rounds": paired}


def parity_figures(path: str) -> dict[str, Any]:
    """fused vs sequential from a parity.json of pipelines/parity.py (variants mode=sequential and
    mode=fused, sequential the reference): mean test avg AUC difference, paired p, seeds, data."""
    import json

    try:
        with open(path) as f:
            p = json.load(f)
        rows = {r["variant"]: r for r in p["variants"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"--parity {path}: not a readable parity.json of pipelines/parity.py ({err})") from None
    if "mode=fused" not in rows or p["variants"][0]["variant"] != "mode=sequential":
        raise ConfigError(f"{path}: expected variants mode=sequential (first) and mode=fused, got {list(rows)}")
    f = rows["mode=fused"]
    return {"path": path, "data": p["base"]["data"], "seeds": p["seeds"], "diff": f["mean_diff_vs_ref"],
            "p": f["p_vs_ref"], "sequential": rows["mode=sequential"]["mean"], "fused": f["mean"]}


def targets(cfg: BenchConfig, res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every issue-16 target with its figure and met / MISSED / not measured, from the figures of
    `res` (benchmark.json's train, sync and fast_path keys) and cfg.parity's files."""
    fp, modes, sync = res["fast_path"], res["train"]["modes"], res["sync"]["modes"]
    out = []

    def add(name, value, op, bound, shown, detail=""):
        out.append({"target": name, "value": value, "op": op, "bound": bound, "shown": shown, "detail": detail,
                    "status": target(value, op, bound, shown)})

    add("best mode / dense-tower bound", fp["best_bound_frac"], ">=", 0.70, "0.70",
        f"{fp['best_mode']} {fp['best_sps']:,.0f} vs {fp['bound']['bound_sps']:,.0f} samples/s")
    add("fused / sequential (plain loop, paired rounds)", fp["fused_over_sequential"], ">=", 1.0, "1.0x",
        ", ".join(f"{x:.2f}" for x in fp["fused_over_sequential_rounds"]))
    for m, v in fp["modes"].items():
        if "compile_peak_fraction" in v:
            add(f"{m}: FLOP share with --compile / without", v["compile_peak_fraction"] / v["peak_fraction"], ">=",
                1.0, "1.0 (higher)", f"{v['compile_peak_fraction']:.1%} vs {v['peak_fraction']:.1%}; compile "
                f"{v['compile_s']:.0f} s; test avg AUC {v['compile_auc']:.4f} vs {v['auc']:.4f}"
                f"{'' if v['compiled'] else ' (fell back to eager)'}")
    if "fused" in sync:
        v = sync["fused"]
        add("EMA sync share of a 2-worker fused step", v["overhead_frac"], "<=", 0.02, "2%",
            f"+- {v['overhead_frac_ci95']:.1%} (95% CI)")
    for m, v in modes.items():
        add(f"Ray 1 worker / plain loop, {m}", v["ratio_1w"], ">=", 0.9, "0.9x")
    for path in cfg.parity:
        p = parity_figures(path)
        ok = abs(p["diff"]) < 0.003 and p["seeds"] >= 5
        out.append({"target": f"|fused - sequential| test avg AUC, {os.path.basename(p['data'])}", "value": p["diff"],
                    "op": "<", "bound": 0.003, "shown": "0.003",
                    "detail": f"{p['seeds']} seeds, paired p = {p['p']:.2f}",
                    "status": f"(target |diff| < 0.003 over >= 5 seeds: {'met' if ok else 'MISSED'})"})
    if not cfg.parity:
        out.append({"target": "|fused - sequential| test avg AUC", "value": None, "op": "<", "bound": 0.003,
                    "shown": "0.003", "detail": "pass --parity OUT/parity.json of pipelines/parity.py",
                    "status": "(target < 0.003: not measured)"})
    return out


def _train_figures(h: str, modes: dict[str, dict[str, Any]], runs: dict[str, list[dict[str, Any]]],
                   two: dict[str, dict[str, Any]], flops: float, peak: float) -> dict[str, Any]:
    """The train.* keys: the headline mode h's figures, every mode's, and every run's."""
    t = modes[h]
    ray_1w, ray_2w = t["ray_1w_sps"], t.get("ray_2w_sps")
    return {
        "mode": h, "plain_sps": t["plain_sps"], "ray_1w_sps": ray_1w, "ray_2w_sps": ray_2w,
        "ratio_1w": t["ratio_1w"], "ratio_2w_to_1w": ray_2w / ray_1w if ray_2w else None,
        "stream_sps": t.get("stream_sps"),
        "flops_per_sample": flops, "peak_flops": peak, "peak_fraction": flops * ray_1w / peak,
        "modes": modes, "pipeline_runs": {**{f"{m}_1w": rs for m, rs in runs.items()},
                                          **{f"{m}_2w": v for m, v in two.items()}},
    }


def _machine() -> dict[str, Any]:
    import platform

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "gpu": gpu, "platform": platform.platform()}


def _f(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def target(value: float | None, op: str, bound: float, shown: str) -> str:
    """`(target >= 0.9: met)` / `(target >= 0.9: MISSED)`: every printed figure with a target says which."""
    if value is None or value != value:
        return f"(target {op} {shown}: not measured)"
    met = value >= bound if op == ">=" else value <= bound
    return f"(target {op} {shown}: {'met' if met else 'MISSED'})"


def _train_rows(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    t, i = res["train"], res["ingest"]
    hm = t["modes"][t["mode"]]
    rows = [
        ("train: plain in-memory loop (the limit)", f"{t['plain_sps']:,.0f} samples/s",
         f"mode {t['mode']}; median of {len(hm['plain_runs'])} epochs, range "
         f"{min(hm['plain_runs']):,.0f}-{max(hm['plain_runs']):,.0f}"),
        ("train: plain loop + arrow ingest, no Ray", f"{_f(t['stream_sps'], ',.0f')} samples/s",
         f"{_f(t['stream_sps'] and t['stream_sps'] / t['plain_sps'], '.2f')}x plain"),
        ("train: Ray pipeline, 1 worker", f"{t['ray_1w_sps']:,.0f} samples/s",
         f"{t['ratio_1w']:.2f}x plain {target(t['ratio_1w'], '>=', 0.9, '0.9')}: median of the runs' ratios to "
         "the plain epochs "
         f"around them ({', '.join(f'{x:.2f}' for x in hm['ratio_1w_paired'])})"),
        ("train: Ray pipeline, 2 workers", f"{_f(t['ray_2w_sps'], ',.0f')} samples/s",
         f"{_f(t['ratio_2w_to_1w'], '.2f')}x 1 worker"),
        ("train: model FLOP/s / matmul peak", f"{t['peak_fraction']:.1%}",
         f"{t['flops_per_sample'] / 1e3:,.0f} kFLOP/sample, peak {t['peak_flops'] / 1e9:,.0f} GFLOP/s"),
        ("ingest: arrow alone", f"{i['rows_per_s']:,.0f} rows/s",
         f"{i['ratio_to_train']:.1f}x training {target(i['ratio_to_train'], '>=', 3, '3')}"),
    ]
    if "ray-data" in i["backends"]:
        b = i["backends"]["ray-data"]
        rows.append(("ingest: ray-data alone", f"{b['rows_per_s']:,.0f} rows/s", f"{b['ratio_to_train']:.1f}x training"))
    return rows


def _component_rows(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    t, s, e = res["train"], res["sync"], res["embeddings"]
    rows = []
    for m, v in s["modes"].items():
        rows.append((f"sync: EMA all-reduce, 2 workers, {m}",
                     f"{v['overhead_frac']:.1%} +- {v['overhead_frac_ci95']:.1%} of a step",
                     f"{v['step_s_with_sync'] * 1e3:.1f} vs {v['step_s_without_sync'] * 1e3:.1f} ms "
                     f"{target(v['overhead_frac'], '<=', 0.02, '2%')}; "
                     f"the collective alone {v['collective_s'] * 1e3:.2f} ms x {v['collectives_per_step']} = "
                     f"{v['intrinsic_frac']:.1%}"))
    for name, v in e["variants"].items():
        rows.append((f"embeddings: 10^6 / 10^4 rows, {name}", f"{v['ratio']:.2f}x step time",
                     f"{v['step_s_1e6'] * 1e3:.1f} vs {v['step_s_1e4'] * 1e3:.1f} ms" +
                     (f" {target(v['ratio'], '<=', 1.2, '1.2')}" if name == e["update"] else "")))
    for m, v in t["modes"].items():
        rows.append((f"train: {m} mode", f"plain {v['plain_sps']:,.0f}/s" + (
                     f", +arrow {v['stream_sps']:,.0f}/s" if v.get("stream_sps") else ""),
                     f"ray 1w {v['ray_1w_sps']:,.0f}/s ({v['ratio_1w']:.2f}x plain)" + (
                         f"; 2w {v['ray_2w_sps']:,.0f}/s" if v.get("ray_2w_sps") else "")))
    return rows


def _startup_and_fast_path_rows(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    st = res["startup"]
    rows.append(("startup: Ray init + fit to first step", f"{res['startup_s']:.1f} s",
                 f"init {st['ray_init_s']:.1f} s; fit: Ray Train starts the worker {st['fit_to_worker_start_s']:.1f} s, "
                 f"our set-up {st['worker_setup_s']:.1f} s, first batch + update {st['ready_to_first_step_s']:.1f} s"))
    fp = res.get("fast_path")
    if fp:
        b = fp["bound"]
        rows.append(("fast path: dense-tower bound", f"{b['bound_sps']:,.0f} samples/s",
                     f"towers + heads alone, random inputs: loop {b['loop_sps']:,.0f}/s, "
                     f"stacked bmm {b['stacked_sps']:,.0f}/s"))
        if fp.get("fused_over_sequential_all_domain_steps"):
            rows.append(("fast path: steps with every domain present",
                         f"{fp['fused_over_sequential_all_domain_steps']:.2f}x", "fused over sequential: " + ", ".join(
                             f"{m} {v:,.0f}/s" for m, v in fp["all_domain_steps"].items())))
        for m, v in fp["modes"].items():
            extra = (f"; --compile {v['compile_sps']:,.0f}/s ({v['compile_speedup']:.2f}x eager, compiled in "
                     f"{v['compile_s']:.0f} s{'' if v['compiled'] else ', fell back to eager'}), test avg AUC "
                     f"{v['compile_auc']:.4f} vs eager {v['auc']:.4f}") if "compile_sps" in v else ""
            rows.append((f"fast path: {m}, plain loop", f"{v['bound_frac']:.2f}x bound",
                         f"{v['plain_sps']:,.0f}/s, {v['peak_fraction']:.1%} of matmul peak{extra}"))
    return rows


def table(res: dict[str, Any]) -> str:
    """benchmark.json's figures as one markdown table: measure, value, what it is compared with
    (with its target and whether it was met)."""
    rows = _train_rows(res) + _component_rows(res) + _startup_and_fast_path_rows(res)
    for t in res.get("targets", []):
        value = "-" if t["value"] is None else (f"{t['value']:+.4f}" if t["op"] == "<" else f"{t['value']:.3f}")
        rows.append((f"target: {t['target']}", value, f"{t['status']} {t['detail']}".strip()))
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'measure'.ljust(width)} | value | compared |", f"|{'-' * (width + 2)}|---|---|"]
    lines += [f"| {a.ljust(width)} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def dotted(res: dict[str, Any], key: str):
    """benchmark.json's value at a dotted key such as "train.ratio_1w"."""
    value: Any = res
    for part in key.split("."):
        value = value[part]
    return value


REQUIRED_KEYS = ("train.plain_sps", "train.ray_1w_sps", "train.ray_2w_sps", "train.ratio_1w", "train.peak_fraction",
                 "ingest.rows_per_s", "ingest.ratio_to_train", "sync.overhead_frac", "embeddings.ratio", "startup_s",
                 "fast_path.bound.bound_sps", "fast_path.best_bound_frac", "fast_path.fused_over_sequential")

