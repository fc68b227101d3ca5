"""A resumed epoch reads exactly the rest of the epoch: the reader's `skip` and Algorithm 1's
`start_step` give the full epoch's items from that point on, bit for bit; equal training shares
leave other rows out every epoch."""
from __future__ import annotations

import numpy as np
import pytest

from dfei.data.dataset import ParquetDataset
from dfei.data.ingest import DomainReader, ReadUnit, algorithm1_order, reader_positions, row_range, share_offset


def _reader(ds: ParquetDataset, domain: int, **kwargs) -> DomainReader:
    """A reader whose rows come in read units of 40 rows (the tiny files have one row group each),
    so shuffling permutes many units and fills span several of them."""
    reader = DomainReader(ds, "train", domain, **kwargs)
    reader.units = [ReadUnit(u.path, u.row_group, a, min(a + 40, u.hi)) for u in reader.units
                    for a in range(u.lo, u.hi, 40)]
    return reader


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, u) and np.array_equal(y, v) for (x, y), (u, v) in zip(a, b))


@pytest.mark.parametrize("shuffle,buffer_rows", [(True, 300), (True, 1 << 16), (False, 300)])
def test_skipping_k_batches_gives_the_rest_of_the_pass_exactly(public_tiny, shuffle, buffer_rows):
    ds = ParquetDataset(public_tiny)
    reader = _reader(ds, 1, batch_size=64, shuffle=shuffle, seed=3, shuffle_buffer_rows=buffer_rows)
    full = list(reader.batches(epoch=2))
    assert reader.num_batches == len(full) > 10
    for k in (0, 1, 4, 5, 9, len(full) - 1, len(full), len(full) + 3):
        assert _same(list(reader.batches(epoch=2, skip=k)), full[k:]), k


def test_skipped_fills_are_not_read(public_tiny, monkeypatch):
    ds = ParquetDataset(public_tiny)
    reader = _reader(ds, 1, batch_size=32, shuffle=True, seed=0, shuffle_buffer_rows=100)
    full = list(reader.batches())
    calls = []
    real = DomainReader._read
    monkeypatch.setattr(DomainReader, "_read", lambda self, unit, files: calls.append(unit) or real(self, unit, files))
    late = len(full) - 2
    assert _same(list(reader.batches(skip=late)), full[late:])
    assert len(reader.units) > 10 and len(calls) < len(reader.units) // 2  # the early fills were replayed on ids only


@pytest.mark.parametrize("exhaustion", ["exhaust", "cycle"])
def test_algorithm1_from_a_step_is_the_tail_of_the_full_epoch(public_tiny, exhaustion):
    ds = ParquetDataset(public_tiny)
    readers = [_reader(ds, d, batch_size=64, shuffle=True, seed=1, shuffle_buffer_rows=200)
               for d in range(ds.spec.num_domains)]
    full = list(algorithm1_order(readers, 1, exhaustion))
    for start in (1, 3, full[-1][0]):
        tail = list(algorithm1_order(readers, 1, exhaustion, start_step=start))
        expected = [item for item in full if item[0] >= start]
        assert [(s, d) for s, d, _, _ in tail] == [(s, d) for s, d, _, _ in expected]
        assert all(np.array_equal(a[2], b[2]) and np.array_equal(a[3], b[3]) for a, b in zip(tail, expected))
    positions = reader_positions(readers, 1, 3, exhaustion)
    assert [p["domain"] for p in positions] == list(range(ds.spec.num_domains))
    assert all(p["done"] or p["batches"] < r.num_batches for p, r in zip(positions, readers))


def test_equal_shares_leave_out_other_rows_every_epoch(public_tiny):
    ds = ParquetDataset(public_tiny)
    odd = next(d for d, n in enumerate(ds.rows("train")) if n % 3)  # 3 ranks leave 1 or 2 rows out
    starts = {DomainReader(ds, "train", odd, rank=0, world_size=3, epoch=e).lo for e in range(20)}
    assert len(starts) > 1  # the training readers take the epoch's placement
    n, world = 1003, 4  # 3 rows left out per epoch
    offsets = {share_offset(n, world, 0, 2, epoch) for epoch in range(40)}
    assert offsets == {0, 1, 2, 3}  # seeded, and over epochs every placement occurs
    assert share_offset(n, world, 0, 2, 5) == share_offset(n, world, 0, 2, 5)
    for off in offsets:
        ranges = [row_range(n, r, world, True, off) for r in range(world)]
        assert ranges[0][0] == off and ranges[-1][1] == off + 4 * (n // 4)
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert share_offset(1000, 4, 0, 2, 5) == 0  # nothing left out: nothing moves
    with pytest.raises(ValueError, match="offset 4 outside"):
        row_range(n, 0, world, True, 4)
