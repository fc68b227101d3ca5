"""The ingest's prefetch thread ends with its stream: closing the stream early (early stop, an
error in the step) closes the wrapped generator in its own thread, so the readers' Parquet files
are closed at once, and waits for the thread instead of giving up after a timeout."""
from __future__ import annotations

import os
import threading
import time

from dfei.data.dataset import ParquetDataset
from dfei.data.ingest import DomainReader, prefetch, training_stream


def test_closing_the_stream_closes_the_wrapped_generator_and_ends_the_thread():
    events: list[tuple[str, str]] = []

    def source():
        try:
            for i in range(1000):
                time.sleep(0.01)
                yield i
        finally:
            events.append(("closed", threading.current_thread().name))

    stream = prefetch(source(), depth=2)
    assert [next(stream), next(stream)] == [0, 1]
    stream.close()
    assert events == [("closed", "dfei-prefetch")]  # in the producer's thread, before close() returned
    assert not any(t.name == "dfei-prefetch" and t.is_alive() for t in threading.enumerate())


def test_a_slow_read_is_waited_for_not_abandoned():
    closed = threading.Event()

    def slow():
        try:
            yield 0
            time.sleep(1.0)  # a long read in progress when the consumer stops
            yield 1
        finally:
            closed.set()

    stream = prefetch(slow(), depth=1)
    assert next(stream) == 0
    time.sleep(0.1)
    stream.close()
    assert closed.is_set()


def _open_parquet_files(root: str) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(root) and target.endswith(".parquet"):
            out.append(target)
    return out


def test_an_epoch_stopped_early_leaves_no_parquet_file_open(public_tiny):
    root = os.path.realpath(public_tiny)
    ds = ParquetDataset(public_tiny)
    readers = [DomainReader(ds, "train", d, batch_size=64, shuffle=True, shuffle_buffer_rows=64)
               for d in range(ds.spec.num_domains)]
    for mode in ("sequential", "fused"):
        stream = training_stream(readers, epoch=0, exhaustion="exhaust", mode=mode)
        next(stream)
        next(stream)
        assert _open_parquet_files(root)  # the readers are mid-file
        stream.close()
        assert _open_parquet_files(root) == [], mode
