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
from dfei.train.engine import train_epoch
from dfei.train.optim import build_optimizer


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


def plain_loop(data: list[tuple[np.ndarray, np.ndarray]], cardinalities: list[int], mode: str = "sequential",
               batch_size: int = 512, seed: int = 0, device: torch.device = torch.device("cpu")) -> dict:
    """The limit: one process, no Ray, no Parquet, batches pre-loaded; same model and engine."""
    torch.manual_seed(seed)
    model = build_model("dfei", cardinalities, len(data)).to(device)
    optimizer = build_optimizer(model)
    order = in_memory_order(data, batch_size, seed)
    if mode == "fused":
        order = fused_steps(order)
        order = iter(list(order))  # concatenation done ahead: the loop only trains
    return train_epoch(model, optimizer, order, device, len(data))


def streaming_loop(dataset: ParquetDataset, mode: str = "sequential", seed: int = 0,
                   device: torch.device = torch.device("cpu")) -> dict:
    """The plain loop fed by training's own arrow ingest (Parquet, shuffle buffers, prefetch
    thread), no Ray: what streaming costs by itself."""
    from dfei.data.ingest import training_stream
    from dfei.train.config import TrainConfig
    from dfei.train.loop import train_readers

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
                streaming: bool = False) -> dict[str, float]:
    """Steady samples/s of one plain-loop epoch per mode, in this process; with `streaming`, also
    "<mode>+arrow": the same loop fed from Parquet by the arrow ingest."""
    dataset = ParquetDataset(data)
    in_memory = load_split(dataset)
    dev = torch.device(device)
    rates: dict[str, float] = {}
    for m in modes:
        stats = plain_loop(in_memory, dataset.spec.cardinalities, mode=m, seed=seed, device=dev)
        rates[m] = stats["steady_samples_per_s"]
        if streaming:
            rates[f"{m}+arrow"] = streaming_loop(dataset, mode=m, seed=seed, device=dev)["steady_samples_per_s"]
    return rates


def plain_rates_in_fresh_process(data: str, modes: tuple[str, ...], seed: int = 0, device: str = "cpu",
                                 streaming: bool = False) -> dict[str, float]:
    """plain_rates in a new Python process: a clean interpreter and allocator, as a Ray worker gets
    (measured here: the same loop ran ~15 % slower in the benchmark's own long-lived process)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(plain_rates, data, modes, seed, device, streaming).result()


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
