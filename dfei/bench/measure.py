"""In-process measurements (no Ray): the plain PyTorch limit, embedding-size scaling, model FLOPs
and the machine's matmul peak. Each uses the same model, optimizer and engine as training."""
from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import torch

from dfei.data.dataset import ParquetDataset
from dfei.data.ingest import DomainReader, fused_steps
from dfei.models import build_model
from dfei.train.epoch import EpochOptions, predict_split, score_split, train_epoch
from dfei.train.optim import build_optimizer, fast_adam_kernel


def load_split(dataset: ParquetDataset, split: str = "train") -> list[tuple[np.ndarray, np.ndarray]]:
    """Every domain of a split in memory: [(x [n, F], y [n])] in domain order."""
    out = []
    for d in range(dataset.spec.num_domains):
        reader = DomainReader(dataset, split, d, batch_size=1 << 16)
        parts = list(reader.batches())
        out.append((np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])))
    return out


def in_memory_order(data: list[tuple[np.ndarray, np.ndarray]], batch_size: int, seed: int = 0) -> Iterator[tuple]:
    """Algorithm 1's order (exhaust) over pre-shuffled in-memory arrays: batches are views."""
    rng = np.random.default_rng(seed)
    shuffled = []
    for x, y in data:
        order = rng.permutation(len(y))
        shuffled.append((np.ascontiguousarray(x[order]), y[order]))
    steps = max(-(-len(y) // batch_size) for _, y in shuffled)
    for step in range(steps):
        for d, (x, y) in enumerate(shuffled):
            a = step * batch_size
            if a < len(y):
                yield step, d, x[a:a + batch_size], y[a:a + batch_size]


def random_steps(cardinalities: list[int], num_domains: int, steps: int, batch_size: int = 512,
                 seed: int = 0) -> list[tuple]:
    """Algorithm 1's (step, d, x [batch, F] int64, y [batch] float32) items with every domain present
    in every step (the 21-domain steps at the start of an epoch), random ids and labels."""
    rng = np.random.default_rng(seed)
    return [(s, d, np.stack([rng.integers(0, c, batch_size) for c in cardinalities], axis=1),
             rng.integers(0, 2, batch_size).astype(np.float32)) for s in range(steps) for d in range(num_domains)]


def all_domain_step_rates(cardinalities: list[int], num_domains: int, modes: tuple[str, ...] = ("sequential", "fused"),
                          steps: int = 10, warmup: int = 3, batch_size: int = 512, seed: int = 0,
                          device: torch.device = torch.device("cpu"), compile: bool = False) -> dict[str, float]:
    """samples/s of Algorithm-1 steps in which every domain has a batch (random_steps): where the
    modes differ most (D updates vs one). An epoch of the industrial profile has few such steps (its
    largest domain holds 76 % of the rows, so most steps are that domain alone), so the epoch rates
    understate the difference. Per mode a fresh model (seeded), `warmup` steps untimed."""
    items = random_steps(cardinalities, num_domains, warmup + steps, batch_size, seed)
    rates = {}
    for mode in modes:
        torch.manual_seed(seed)
        model = build_model("dfei", cardinalities, num_domains).to(device)
        optimizer = build_optimizer(model)
        warm = [it for it in items if it[0] < warmup]
        timed = [it for it in items if it[0] >= warmup]
        if mode == "fused":
            warm, timed = list(fused_steps(iter(warm))), list(fused_steps(iter(timed)))
        train_epoch(model, optimizer, iter(warm), device, num_domains, options=EpochOptions(compile=compile))
        stats = train_epoch(model, optimizer, iter(timed), device, num_domains, options=EpochOptions(compile=compile))
        rates[mode] = stats["samples"] / stats["seconds"]
    return rates


def plain_loop(data: list[tuple[np.ndarray, np.ndarray]], cardinalities: list[int], mode: str = "sequential",
               batch_size: int = 512, seed: int = 0, device: torch.device = torch.device("cpu"),
               compile: bool = False, score: ParquetDataset | None = None) -> dict:
    """The limit: one process, no Ray, no Parquet, batches pre-loaded; same model and epoch loop.
    Returns train_epoch's stats (with "compiled"/"compile_s" when `compile`, and "test_avg_auc" of
    the trained model on `score`'s test split when given)."""
    torch.manual_seed(seed)
    model = build_model("dfei", cardinalities, len(data)).to(device)
    optimizer = build_optimizer(model)
    order = in_memory_order(data, batch_size, seed)
    if mode == "fused":
        order = fused_steps(order)
        order = iter(list(order))  # concatenation done ahead: the loop only trains
    stats = train_epoch(model, optimizer, order, device, len(data), options=EpochOptions(compile=compile))
    if score is not None:
        stats["test_avg_auc"] = score_split(score, predict_split(model, score, "test", device))["avg_auc"]
    return stats


def streaming_loop(dataset: ParquetDataset, mode: str = "sequential", seed: int = 0,
                   device: torch.device = torch.device("cpu")) -> dict:
    """The plain loop fed by training's own arrow ingest (Parquet, shuffle buffers, prefetch
    thread), no Ray: what streaming costs by itself."""
    from dfei.data.ingest import training_stream
    from dfei.config import TrainConfig
    from dfei.train.worker import train_readers

    cfg = TrainConfig(data=dataset.uri, mode=mode, seed=seed)
    spec = dataset.spec
    torch.manual_seed(seed)
    model = build_model("dfei", spec.cardinalities, spec.num_domains).to(device)
    optimizer = build_optimizer(model)
    stream = training_stream(train_readers(cfg, dataset, 0, 1, None), 0, cfg.exhaustion, cfg.mode)
    try:
        return train_epoch(model, optimizer, stream, device, spec.num_domains)
    finally:
        stream.close()


def plain_rates(data: str, modes: tuple[str, ...], seed: int = 0, device: str = "cpu",
                streaming: bool = False, compiled: bool = False) -> dict[str, float]:
    """Steady samples/s of one plain-loop epoch per mode, in this process; with `streaming`, also
    "<mode>+arrow": the same loop fed from Parquet by the arrow ingest. With `compiled`, each mode
    also runs with --compile ("<mode>+compile", its compilation seconds "<mode>+compile_s") and both
    runs' test avg AUC after the epoch ("<mode>_auc", "<mode>+compile_auc"; same seed)."""
    dataset = ParquetDataset(data)
    in_memory = load_split(dataset)
    dev = torch.device(device)
    rates: dict[str, float] = {}
    for m in modes:
        stats = plain_loop(in_memory, dataset.spec.cardinalities, mode=m, seed=seed, device=dev,
                           score=dataset if compiled else None)
        rates[m] = stats["steady_samples_per_s"]
        if compiled:
            rates[f"{m}_auc"] = stats["test_avg_auc"]
            stats = plain_loop(in_memory, dataset.spec.cardinalities, mode=m, seed=seed, device=dev, compile=True,
                               score=dataset)
            rates.update({f"{m}+compile": stats["steady_samples_per_s"], f"{m}+compile_s": stats["compile_s"],
                          f"{m}+compile_auc": stats["test_avg_auc"], f"{m}+compiled": float(stats["compiled"])})
        if streaming:
            rates[f"{m}+arrow"] = streaming_loop(dataset, mode=m, seed=seed, device=dev)["steady_samples_per_s"]
    return rates


def plain_rates_in_fresh_process(data: str, modes: tuple[str, ...], seed: int = 0, device: str = "cpu",
                                 streaming: bool = False, compiled: bool = False) -> dict[str, float]:
    """plain_rates in a new Python process: a clean interpreter and allocator, as a Ray worker gets
    (measured here: the same loop ran ~15 % slower in the benchmark's own long-lived process)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(plain_rates, data, modes, seed, device, streaming, compiled).result()


def _mlp(layers, h: torch.Tensor, last_relu: bool = True) -> torch.Tensor:
    """Dense layers [(w [in, out], b [out])] with ReLU (not after the last unless last_relu)."""
    for i, (w, b) in enumerate(layers):
        h = torch.addmm(b, h, w)
        h = torch.relu(h) if last_relu or i < len(layers) - 1 else h
    return h


class _TowerLayouts:
    """DFEI's dense layers at Table 4 sizes on random inputs, in two layouts: "loop" (a module per
    domain, as DFEI's towers) and "stacked" (weights [D, in, out], one bmm per layer), each with its
    own fused Adam."""

    def __init__(self, num_domains: int, input_dim: int, batch_size: int, seed: int, device: torch.device):
        g = torch.Generator().manual_seed(seed)
        self.d, self.b, self.input_dim, self.rows = num_domains, batch_size, input_dim, num_domains * batch_size
        self.x = torch.randn(num_domains, batch_size, input_dim, generator=g).to(device)
        self.y = torch.randint(0, 2, (num_domains, batch_size), generator=g).float().to(device)

        def params(*shape):
            return torch.nn.Parameter(torch.randn(*shape, generator=g).mul_(0.05).to(device))

        dims = [input_dim, 128, 64, 32]
        tower_shapes, head_shapes = list(zip(dims, dims[1:])), [(128, 32), (32, 1)]
        self.shared = [(params(a, b), params(b)) for a, b in tower_shapes]
        self.towers = [[(params(a, b), params(b)) for a, b in tower_shapes] for _ in range(num_domains)]
        self.heads = [[(params(a, b), params(b)) for a, b in head_shapes] for _ in range(num_domains)]
        self.s_towers = [(params(num_domains, a, b), params(num_domains, 1, b)) for a, b in tower_shapes]
        self.s_heads = [(params(num_domains, a, b), params(num_domains, 1, b)) for a, b in head_shapes]
        flat = lambda layers: [p for layer in layers for p in layer]  # noqa: E731
        self.loop_opt = torch.optim.Adam(flat(self.shared) + [p for t in self.towers + self.heads for p in flat(t)],
                                         lr=1e-3, **fast_adam_kernel())
        self.stacked_opt = torch.optim.Adam(flat(self.shared) + flat(self.s_towers) + flat(self.s_heads), lr=1e-3,
                                            **fast_adam_kernel())

    def loop_loss(self) -> torch.Tensor:
        s = _mlp(self.shared, self.x.view(self.rows, self.input_dim)).view(self.d, self.b, -1)
        loss = 0.0
        for d in range(self.d):
            u = _mlp(self.towers[d], self.x[d])
            logit = _mlp(self.heads[d], torch.cat([s[d], u, u, s[d]], 1), last_relu=False).squeeze(1)
            loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(logit, self.y[d])
        return loss

    def stacked_loss(self) -> torch.Tensor:
        s = _mlp(self.shared, self.x.view(self.rows, self.input_dim)).view(self.d, self.b, -1)
        h = self.x
        for w, b in self.s_towers:
            h = torch.relu(torch.baddbmm(b, h, w))
        h = torch.cat([s, h, h, s], 2)
        h = torch.relu(torch.baddbmm(self.s_heads[0][1], h, self.s_heads[0][0]))
        logit = torch.baddbmm(self.s_heads[1][1], h, self.s_heads[1][0]).squeeze(2)
        return torch.nn.functional.binary_cross_entropy_with_logits(logit, self.y, reduction="none").mean(1).sum()

    def samples_per_s(self, layout: str, steps: int, device: torch.device) -> float:
        loss_fn, opt = (self.loop_loss, self.loop_opt) if layout == "loop" else (self.stacked_loss, self.stacked_opt)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss_fn().backward()
            opt.step()
        _sync(device)
        return steps * self.rows / (time.perf_counter() - t0)


def dense_tower_bound(num_domains: int = 21, input_dim: int = 272, batch_size: int = 512, steps: int = 20,
                      rounds: int = 3, seed: int = 0, device: torch.device = torch.device("cpu")) -> dict[str, float]:
    """What DFEI's matmuls alone cost: samples/s of the shared tower + D domain towers + D heads at
    paper Table 4 sizes ([128, 64, 32]; heads Dense(32) -> 1 on the 4 x 32-wide [s, u, v, z] input)
    on random dense inputs [D x batch, input_dim], D x batch rows per step, forward + backward + one
    fused Adam update, no embeddings, ingest, DFE/DFI, dropout or per-batch Python.

    Two layouts, alternated over `rounds` (the best round of each counts): "loop" (a module per
    domain, a loop over the domains) and "stacked" (weights [D, in, out], one bmm per layer).
    Returns {"loop_sps", "stacked_sps", "bound_sps" (the better)}.
    """
    layouts = _TowerLayouts(num_domains, input_dim, batch_size, seed, device)
    best = {"loop": 0.0, "stacked": 0.0}
    for layout in best:  # warm-up: Adam state, allocator
        layouts.samples_per_s(layout, 2, device)
    for _ in range(rounds):
        for layout in best:
            best[layout] = max(best[layout], layouts.samples_per_s(layout, steps, device))
    return {"loop_sps": best["loop"], "stacked_sps": best["stacked"], "bound_sps": max(best.values())}


def embedding_step_times(lazy: bool, rows: tuple[int, int] = (10**4, 10**6), n_features: int = 17,
                         num_domains: int = 21, batch_size: int = 512, steps: int = 40, rounds: int = 3,
                         seed: int = 0, device: torch.device = torch.device("cpu")) -> dict[int, float]:
    """Seconds per sequential domain step of DFEI whose two id tables have each size in `rows`
    (other features 11 rows). The sizes alternate over `rounds`; the median per size counts."""
    rng = np.random.default_rng(seed)
    setups = {}
    for n in rows:
        cards = [n, n] + [11] * (n_features - 2)
        torch.manual_seed(seed)
        model = build_model("dfei", cards, num_domains).to(device)
        optimizer = build_optimizer(model, lazy_embeddings=lazy)
        batches = [(s, s % num_domains, np.stack([rng.integers(0, c, batch_size) for c in cards], axis=1),
                    rng.integers(0, 2, batch_size).astype(np.float32)) for s in range(steps)]
        train_epoch(model, optimizer, iter(batches[:10]), device, num_domains)  # warm-up: Adam state, allocator
        setups[n] = (model, optimizer, batches)
    times: dict[int, list[float]] = {n: [] for n in rows}
    for _ in range(rounds):
        for n, (model, optimizer, batches) in setups.items():
            times[n].append(train_epoch(model, optimizer, iter(batches), device, num_domains)["seconds"] / steps)
    return {n: float(np.median(t)) for n, t in times.items()}


def flops_per_sample(cardinalities: list[int], num_domains: int, batch_size: int = 512) -> float:
    """Model FLOPs of one training sample (forward + backward), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = build_model("dfei", cardinalities, num_domains)
    x = torch.stack([torch.randint(0, c, (batch_size,)) for c in cardinalities], dim=1)
    y = torch.randint(0, 2, (batch_size,)).float()
    counter = FlopCounterMode(display=False)
    with counter:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x, 0), y)
        loss.backward()
    return counter.get_total_flops() / batch_size


def matmul_peak_flops(n: int = 2048, seconds: float = 1.5, device: torch.device = torch.device("cpu")) -> float:
    """This machine's fp32 matmul FLOP/s (torch's current thread count on CPU), the best of a few runs."""
    n = n * 4 if device.type == "cuda" else n
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)  # warm-up
    best, t_end = 0.0, time.time() + seconds
    while time.time() < t_end:
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
