"""Training ingest: rank r of N gets its equal share of every domain, in batches.

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


def row_range(n: int, rank: int, world_size: int, equal: bool, offset: int = 0) -> tuple[int, int]:
    """This rank's rows of an n-row partition.

    equal=True (training): floor(n / N) rows each, so all ranks run the same number of batches per
    domain in lock-step; the N shares are contiguous from row `offset` (0 <= offset <= n mod N), so
    the up to N-1 rows left out are the first `offset` and the last n mod N - offset rows.
    equal=False (evaluation): the ranks' ranges cover all n rows.
    """
    if equal:
        share = n // world_size
        if not 0 <= offset <= n - share * world_size:
            raise ValueError(f"offset {offset} outside [0, {n - share * world_size}] for {n} rows on "
                             f"{world_size} ranks")
        return offset + rank * share, offset + (rank + 1) * share
    return rank * n // world_size, (rank + 1) * n // world_size


def share_offset(n: int, world_size: int, seed: int, domain_index: int, epoch: int) -> int:
    """Where the equal training shares of an n-row partition start in `epoch`: seeded, the same on
    every rank, drawn anew each epoch, so the n mod N rows that equal shares leave out are other
    rows every epoch (each row is left out of an epoch with probability <= (N-1)/(n mod N + 1)),
    never the same trailing rows."""
    left_out = n - (n // world_size) * world_size
    if not left_out:
        return 0
    return int(np.random.default_rng([seed, domain_index, epoch, 0x5EA5]).integers(0, left_out + 1))


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
                 shuffle_buffer_rows: int = 1 << 16, equal_shares: bool = True, epoch: int = 0):
        """`epoch` places the equal shares (share_offset); a training reader serves that epoch."""
        self.dataset = dataset
        self.partition = dataset.partitions[split][domain_index]
        self.domain_index = domain_index
        n = self.partition.num_rows
        offset = share_offset(n, world_size, seed, domain_index, epoch) if equal_shares else 0
        self.lo, self.hi = row_range(n, rank, world_size, equal_shares, offset)
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

    def batches(self, epoch: int = 0, skip: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One pass over this rank's rows: ceil(rows / batch_size) batches, the last maybe short;
        with `skip`, the same pass without its first `skip` batches (a resumed epoch).

        Shuffling: the row groups in a seeded order fill a buffer of >= shuffle_buffer_rows rows,
        which is permuted and cut into whole batches; the rows of a last partial batch stay in the
        buffer for the next fill. Skipped fills are replayed on row ids, not rows (no reading, the
        same RNG draws), and only the rows they carry into the first fill served are read: resuming
        late in an epoch reads what is left of it plus at most batch_size - 1 rows.
        Features come as the files' integer type (the model widens them on its device)."""
        rng = np.random.default_rng(self.seed_seq + [epoch])
        units = [self.units[i] for i in rng.permutation(len(self.units))] if self.shuffle else self.units
        files: dict = {}
        carry_ids = np.zeros(0, dtype=np.int64)  # while replaying: (unit << 32) | row of the carried rows
        carry: tuple[np.ndarray, np.ndarray] | None = None  # once serving: the carried rows themselves
        served = 0  # batches of this pass so far, skipped ones included
        try:
            for members, final in self._fills(units):
                sizes = [units[i].hi - units[i].lo for i in members]
                n = (len(carry_ids) if carry is None else len(carry[1])) + sum(sizes)
                keep = n if final else n - n % self.batch_size
                count = -(-keep // self.batch_size)
                if carry is None and served + count <= skip:  # replay on ids
                    ids = np.concatenate([carry_ids] + [(np.int64(i) << 32) + np.arange(k, dtype=np.int64)
                                                        for i, k in zip(members, sizes)])
                    if self.shuffle:
                        ids = ids[rng.permutation(n)]
                    carry_ids, served = ids[keep:], served + count
                    continue
                if carry is None:
                    carry = self._gather(units, carry_ids, files)
                parts = ([carry] if len(carry[1]) else []) + [self._read(units[i], files) for i in members]
                x, y = _cat([p[0] for p in parts]), _cat([p[1] for p in parts])
                if self.shuffle:  # one gather of the whole buffer; the batches are then slices of it
                    order = rng.permutation(n)
                    x, y = x[order], y[order]
                for b in range(max(0, skip - served), count):
                    lo, hi = b * self.batch_size, (b + 1) * self.batch_size
                    yield x[lo:hi], y[lo:hi]
                served += count
                carry = (x[keep:], y[keep:])
        finally:
            for handle, parquet in files.values():
                parquet.close()
                handle.close()

    def _fills(self, units: list[ReadUnit]) -> list[tuple[list[int], bool]]:
        """The shuffle buffer's fills from the units' sizes alone: (indices into units, final)."""
        fills, members, buffered = [], [], 0
        for i, unit in enumerate(units):
            members.append(i)
            buffered += unit.hi - unit.lo
            if buffered >= self.shuffle_buffer_rows:
                fills.append((members, False))
                members, buffered = [], buffered % self.batch_size
        if buffered:
            fills.append((members, True))
        return fills

    def _gather(self, units: list[ReadUnit], ids: np.ndarray, files: dict) -> tuple[np.ndarray, np.ndarray]:
        """The rows named by replayed ids ((unit << 32) | row), in that order."""
        x = y = None
        for u in np.unique(ids >> 32):
            at = np.flatnonzero((ids >> 32) == u)
            ux, uy = self._read(units[int(u)], files)
            if x is None:
                x, y = np.empty((len(ids), ux.shape[1]), ux.dtype), np.empty(len(ids), uy.dtype)
            rows = ids[at] & 0xFFFFFFFF
            x[at], y[at] = ux[rows], uy[rows]
        if x is None:
            return np.zeros((0, len(self.features)), np.int64), np.zeros(0, np.float32)
        return x, y


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def steps_per_epoch(readers: list[DomainReader]) -> int:
    return max((r.num_batches for r in readers), default=0)


def algorithm1_order(readers: list[DomainReader], epoch: int, exhaustion: str = "exhaust",
                     start_step: int = 0) -> Iterator[tuple]:
    """(step, domain index, x, y) in Algorithm 1's order: per step, one batch of each domain in turn.

    exhaust: a domain that runs out is skipped for the rest of the epoch (the authors' code).
    cycle: a domain that runs out restarts (reshuffled) until the longest domain is done.
    start_step: begin at that step (a resumed epoch): every domain is where the full epoch would
    have it then (reader_start), and the items are exactly the full epoch's from that step on.
    """
    if exhaustion not in EXHAUSTION_POLICIES:
        raise ValueError(f"exhaustion must be one of {EXHAUSTION_POLICIES}, got {exhaustion!r}")
    steps = steps_per_epoch(readers)
    starts = [reader_start(r.num_batches, start_step, exhaustion) for r in readers]
    iters = [None if s is None else r.batches(_pass_epoch(epoch, s[0]), s[1]) for r, s in zip(readers, starts)]
    passes = [0 if s is None else s[0] for s in starts]
    try:
        for step in range(start_step, steps):
            for i, reader in enumerate(readers):
                if iters[i] is None:
                    continue
                batch = next(iters[i], None)
                if batch is None and exhaustion == "cycle" and reader.num_batches:
                    passes[i] += 1
                    iters[i] = reader.batches(_pass_epoch(epoch, passes[i]))
                    batch = next(iters[i], None)
                if batch is None:
                    iters[i] = None
                    continue
                yield (step, reader.domain_index, *batch)
    finally:  # closed early (an early stop, an error): the readers close their files now, not at GC
        for it in iters:
            if it is not None:
                it.close()


def reader_start(num_batches: int, step: int, exhaustion: str) -> tuple[int, int] | None:
    """(pass, batches into that pass) of a domain with `num_batches` batches per pass when
    Algorithm 1 is at `step` (each step takes one batch of every domain still running); None when
    the domain has run out (exhaust) or has no rows."""
    if num_batches == 0 or (exhaustion == "exhaust" and step >= num_batches):
        return None
    return divmod(step, num_batches) if exhaustion == "cycle" else (0, step)


def reader_positions(readers: list[DomainReader], epoch: int, step: int, exhaustion: str) -> list[dict]:
    """Every domain's reader position when Algorithm 1 is at `step` (a mid-epoch checkpoint's
    record): its rows [lo, hi) of the partition, the shuffle seed of its current pass, and the
    batches and rows of that pass already served; "done" when it has run out."""
    out = []
    for r in readers:
        start = reader_start(r.num_batches, step, exhaustion)
        where = {"domain": r.domain_index, "range": [r.lo, r.hi]}
        if start is None:
            out.append({**where, "done": True})
            continue
        pass_index, batches = start
        out.append({**where, "done": False, "pass": pass_index, "batches": batches,
                    "rows": min(batches * r.batch_size, r.num_rows),
                    "seed": [int(v) for v in r.seed_seq] + [_pass_epoch(epoch, pass_index)]})
    return out


def _pass_epoch(epoch: int, pass_index: int) -> int:
    """The shuffle seed's epoch term of a domain's pass (cycle: later passes reshuffle)."""
    return epoch if pass_index == 0 else epoch * 1_000_003 + pass_index


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


def training_stream(readers: list[DomainReader], epoch: int, exhaustion: str, mode: str,
                    start_step: int = 0) -> Iterator:
    """One epoch of training batches from `start_step` on: Algorithm 1's order over the readers,
    merged into one item per step in the fused mode, assembled ahead in a prefetch thread (close()
    it when done early)."""
    order = algorithm1_order(readers, epoch, exhaustion, start_step)
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
