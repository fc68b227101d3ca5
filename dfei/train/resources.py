"""Will the run fit where it is about to start? Checked before Ray starts (embedded Ray) or as soon
as the driver is connected (a cluster), so an impossible run fails in seconds with the setting or
feature to change, not after Ray's start-up with a torch allocation traceback or a wait for
resources that never come.

What a training worker holds that grows with the data is the embedding table: sum(cardinalities)
rows x embed_dim float32 (4 bytes). Training holds it `TABLE_COPIES` times per worker: the
weights, Adam's two moments and the best epoch's weights kept for the final evaluation (dense
embedding updates add a dense gradient: one more). Every DDP worker holds a full replica.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from dfei.data.spec import DatasetSpec
from dfei.errors import ResourceError

BYTES_PER_FLOAT = 4
TABLE_COPIES = {"lazy": 4, "dense": 5}  # weights, Adam exp_avg and exp_avg_sq, best-epoch copy (+ dense grad)
MEMORY_FRACTION = 0.9  # of a machine's memory that the workers' tables may take (the rest: Ray, data, OS)


@dataclass(frozen=True)
class EmbeddingNeed:
    rows: int
    table_bytes: int  # one copy of the table
    worker_bytes: int  # what one training worker holds for it
    copies: int
    largest: list[tuple[str, int, int]]  # (feature, rows, bytes), largest first

    def describe(self, embed_dim: int) -> str:
        top = ", ".join(f"{name} {rows:,} rows ({_size(size)})" for name, rows, size in self.largest[:3])
        return (f"the embedding tables have {self.rows:,} rows x {embed_dim} floats = {_size(self.table_bytes)}, and a "
                f"training worker holds them {self.copies} times (weights, Adam's two moments, the best epoch's copy"
                f"{', the dense gradient' if self.copies == TABLE_COPIES['dense'] else ''}): "
                f"{_size(self.worker_bytes)} per worker. Largest: {top}")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError


def embedding_need(spec: DatasetSpec, embed_dim: int, embedding_update: str = "lazy") -> EmbeddingNeed:
    copies = TABLE_COPIES[embedding_update]
    rows = sum(spec.cardinalities)
    table = rows * embed_dim * BYTES_PER_FLOAT
    largest = sorted(((f.name, f.cardinality, f.cardinality * embed_dim * BYTES_PER_FLOAT) for f in spec.features),
                     key=lambda t: -t[1])
    return EmbeddingNeed(rows, table, table * copies, copies, largest)


def machine_memory_bytes() -> int:
    """This machine's memory, or the container's limit when cgroup v2/v1 sets a lower one."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


HASHING_HINT = ("hash the largest features into fewer buckets when preparing the data (e.g. id mod 2^20; most "
                "pipelines bucket ids of 10^6+ values), or lower --embed-dim")


def check_local_memory(spec: DatasetSpec, embed_dim: int, embedding_update: str, num_workers: int,
                       what: str = "", memory_bytes: int | None = None) -> None:
    """ResourceError unless `num_workers` training workers' tables fit this machine's memory."""
    need = embedding_need(spec, embed_dim, embedding_update)
    memory = machine_memory_bytes() if memory_bytes is None else memory_bytes
    if need.worker_bytes * num_workers > MEMORY_FRACTION * memory:
        raise ResourceError(f"{spec.name}: {need.describe(embed_dim)}; {what}{num_workers} worker(s) on this machine "
                            f"need {_size(need.worker_bytes * num_workers)} but it has {_size(memory)}. To fit, "
                            + HASHING_HINT)


def check_local_fit(spec: DatasetSpec, embed_dim: int, embedding_update: str, num_workers: int, use_gpu: bool,
                    cpus_per_worker: float | None, memory_bytes: int | None = None,
                    cpu_count: int | None = None, gpu_count: int | None = None) -> None:
    """Before an embedded Ray starts on this machine: every worker's replica of the tables must fit in
    its memory, and the CPUs / GPUs asked for must exist (Ray Train would otherwise wait for them
    forever). Raises ResourceError naming the features or the setting."""
    check_local_memory(spec, embed_dim, embedding_update, num_workers, memory_bytes=memory_bytes)
    cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    if cpus_per_worker is not None and cpus_per_worker * num_workers > cpus:
        raise ResourceError(f"--cpus-per-worker {cpus_per_worker:g} x --num-workers {num_workers} needs "
                            f"{cpus_per_worker * num_workers:g} CPUs; this machine has {cpus}")
    if use_gpu:
        check_local_gpus(num_workers, "worker(s)", gpu_count)


def check_local_gpus(needed: int, what: str, gpu_count: int | None = None) -> None:
    """ResourceError unless this machine has `needed` GPUs (--use-gpu: one per worker or actor)."""
    if gpu_count is None:
        import torch

        gpu_count = torch.cuda.device_count()
    if gpu_count < needed:
        raise ResourceError(f"--use-gpu gives each of the {needed} {what} a GPU; this machine has {gpu_count} "
                            "(drop --use-gpu, or lower --num-workers)")


def cluster_warnings(spec: DatasetSpec, embed_dim: int, embedding_update: str, num_workers: int,
                     use_gpu: bool, nodes: list[dict], cluster_gpus: float) -> list[str]:
    """On a cluster the nodes an autoscaler may add are unknown, so what does not fit the nodes
    alive now is a warning, not an error. `nodes` are ray.nodes() entries."""
    out = []
    need = embedding_need(spec, embed_dim, embedding_update)
    alive = [n for n in nodes if n.get("Alive")]
    memory = max((n.get("Resources", {}).get("memory", 0.0) for n in alive), default=0.0)
    if memory and need.worker_bytes > memory:
        out.append(f"{need.describe(embed_dim)}; the largest node alive offers {_size(memory)} to a worker: the run "
                   f"fails unless bigger nodes join. To fit, {HASHING_HINT}")
    if use_gpu and cluster_gpus < 1:
        out.append(f"--use-gpu: the cluster has no GPU now; the {num_workers} worker(s) wait until GPU nodes join")
    return out
