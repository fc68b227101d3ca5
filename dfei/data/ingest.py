"""Training ingest (DESIGN.md §2): rank r of N gets its equal share of every domain, in batches.

`arrow` backend: each rank opens pyarrow readers over its own row range of every domain's Parquet
files (local or fsspec), reads row groups lazily, shuffles with a seeded buffer, and a prefetch
thread assembles Algorithm 1's step order (per step one batch of every domain, in domain order).
Memory is bounded by the shuffle buffers (one per domain) and the prefetch queue, at any scale.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from dfei.data.dataset import ParquetDataset, Partition

EXHAUSTION_POLICIES = ("exhaust", "cycle")


@dataclass(frozen=True)
class ReadUnit:
    """Rows [lo, hi) of one row group of one file."""

    path: str
    row_group: int
    lo: int
    hi: int


def row_range(n: int, rank: int, world_size: int, equal: bool) -> tuple[int, int]:
    """This rank's rows of an n-row partition.

    equal=True (training): floor(n / N) rows each, so all ranks run the same number of batches per
    domain in lock-step (up to N-1 trailing rows are left out). equal=False (evaluation): the
    ranks' ranges cover all n rows.
    """
    if equal:
        share = n // world_size
        return rank * share, (rank + 1) * share
    return rank * n // world_size, (rank + 1) * n // world_size


def plan_units(partition: Partition, lo: int, hi: int) -> list[ReadUnit]:
    """The row-group slices covering rows [lo, hi) of a partition (files in sorted order)."""
    units, offset = [], 0
    for part in partition.parts:
        for rg, rows in enumerate(part.row_group_rows):
            a, b = max(lo, offset), min(hi, offset + rows)
            if a < b:
                units.append(ReadUnit(part.path, rg, a - offset, b - offset))
            offset += rows
    return units


class DomainReader:
    """Batches of one domain for one rank: (features int64 [B, F], labels float32 [B])."""

    def __init__(self, dataset: ParquetDataset, split: str, domain_index: int, rank: int = 0,
                 world_size: int = 1, batch_size: int = 512, shuffle: bool = False, seed: int = 0,
                 shuffle_buffer_rows: int = 1 << 16, equal_shares: bool = True):
        self.dataset = dataset
        self.partition = dataset.partitions[split][domain_index]
        self.domain_index = domain_index
        self.lo, self.hi = row_range(self.partition.num_rows, rank, world_size, equal_shares)
        self.units = plan_units(self.partition, self.lo, self.hi)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed_seq = [seed, domain_index, rank]
        self.shuffle_buffer_rows = max(shuffle_buffer_rows, batch_size)
        self.features = dataset.spec.feature_names
        self.label = dataset.spec.label

    @property
    def num_rows(self) -> int:
        return self.hi - self.lo

    @property
    def num_batches(self) -> int:
        return -(-self.num_rows // self.batch_size)

    def _read(self, unit: ReadUnit, files: dict) -> tuple[np.ndarray, np.ndarray]:
        """Rows of one read unit as (features [n, F] in the file's integer type, labels float32 [n])."""
        if unit.path not in files:
            handle = self.dataset.fs.open_input_file(unit.path)
            files[unit.path] = (handle, pq.ParquetFile(handle))
        f = files[unit.path][1]
        table = f.read_row_group(unit.row_group, columns=self.features + [self.label]).slice(unit.lo, unit.hi - unit.lo)
        # one [n, F] matrix per row group, so a batch is a slice, not F column gathers. (numpy, not
        # torch: torch ops here would share the training thread's intra-op thread pool; measured 2x slower)
        x = np.stack([table.column(c).to_numpy() for c in self.features], axis=1)
        return x, table.column(self.label).to_numpy().astype(np.float32)

    def batches(self, epoch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One pass over this rank's rows: ceil(rows / batch_size) batches, the last maybe short.

        Features come as the files' integer type (the model widens them on its device)."""
        rng = np.random.default_rng(self.seed_seq + [epoch])
        units = [self.units[i] for i in rng.permutation(len(self.units))] if self.shuffle else self.units
        files: dict = {}
        buffer: list[tuple[np.ndarray, np.ndarray]] = []
        buffered = 0

        def drain(final: bool):
            x = _cat([b[0] for b in buffer])
            y = _cat([b[1] for b in buffer])
            n = len(y)
            keep = n if final else n - n % self.batch_size
            if self.shuffle:  # one gather of the whole buffer; the batches are then slices of it
                order = rng.permutation(n)
                x, y = x[order], y[order]
            for start in range(0, keep, self.batch_size):
                yield x[start:start + self.batch_size], y[start:start + self.batch_size]
            return (x[keep:], y[keep:]), n - keep

        try:
            for unit in units:
                buffer.append(self._read(unit, files))
                buffered += unit.hi - unit.lo
                if buffered >= self.shuffle_buffer_rows:
                    rest, buffered = yield from drain(final=False)
                    buffer = [rest] if buffered else []
            if buffered:
                yield from drain(final=True)
        finally:
            for handle, parquet in files.values():
                parquet.close()
                handle.close()


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def steps_per_epoch(readers: list[DomainReader]) -> int:
    return max((r.num_batches for r in readers), default=0)


def algorithm1_order(readers: list[DomainReader], epoch: int, exhaustion: str = "exhaust") -> Iterator[tuple]:
    """(step, domain index, x, y) in Algorithm 1's order: per step, one batch of each domain in turn.

    exhaust: a domain that runs out is skipped for the rest of the epoch (the authors' code).
    cycle: a domain that runs out restarts (reshuffled) until the longest domain is done.
    """
    if exhaustion not in EXHAUSTION_POLICIES:
        raise ValueError(f"exhaustion must be one of {EXHAUSTION_POLICIES}, got {exhaustion!r}")
    steps = steps_per_epoch(readers)
    iters = [r.batches(epoch) for r in readers]
    passes = [0] * len(readers)
    try:
        for step in range(steps):
            for i, reader in enumerate(readers):
                if iters[i] is None:
                    continue
                batch = next(iters[i], None)
                if batch is None and exhaustion == "cycle" and reader.num_batches:
                    passes[i] += 1
                    iters[i] = reader.batches(epoch * 1_000_003 + passes[i])
                    batch = next(iters[i], None)
                if batch is None:
                    iters[i] = None
                    continue
                yield (step, reader.domain_index, *batch)
    finally:  # closed early (an early stop, an error): the readers close their files now, not at GC
        for it in iters:
            if it is not None:
                it.close()


def fused_steps(order: Iterator[tuple]) -> Iterator[tuple]:
    """Group Algorithm 1's (step, d, x, y) items by step: (step, domains [rows], x, y), rows grouped
    by domain in domain order. The fused mode's one update per step reads these."""
    pending: list[tuple] = []

    def merge() -> tuple:
        domains = np.concatenate([np.full(len(p[3]), p[1], dtype=np.int64) for p in pending])
        return pending[0][0], domains, _cat([p[2] for p in pending]), _cat([p[3] for p in pending])

    try:
        for item in order:
            if pending and item[0] != pending[0][0]:
                yield merge()
                pending = []
            pending.append(item)
        if pending:
            yield merge()
    finally:
        close = getattr(order, "close", None)
        if close is not None:
            close()


def training_stream(readers: list[DomainReader], epoch: int, exhaustion: str, mode: str) -> Iterator:
    """One epoch of training batches: Algorithm 1's order over the readers, merged into one item
    per step in the fused mode, assembled ahead in a prefetch thread (close() it when done early)."""
    order = algorithm1_order(readers, epoch, exhaustion)
    return prefetch(fused_steps(order) if mode == "fused" else order)


def prefetch(iterator: Iterator, depth: int = 32) -> Iterator:
    """Run `iterator` in a background thread (pyarrow and numpy release the GIL while reading).

    Closing the returned generator (or abandoning it with an error) stops the thread after the item
    it is producing, closes `iterator` in that thread (a generator must be closed by the thread
    that runs it: its `finally` blocks then close the readers' files) and waits for the thread to
    end, so no file handle or thread outlives the stream."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    sentinel = object()
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterator:
                if not put(item):
                    return
            put(sentinel)
        except BaseException as err:  # surfaced in the consumer
            put(err)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()
                except BaseException as err:  # noqa: BLE001 (reported to the consumer if it still listens)
                    put(err)

    thread = threading.Thread(target=produce, daemon=True, name="dfei-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is sentinel:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()  # at most the item in production: `put` gives up once `stop` is set
