"""`ray-data` training ingest backend: per-domain Ray Datasets split equally on the driver.

Each domain's training partition becomes one Ray Dataset, `split(N, equal=True)` on the driver
(floor(n_d / N) rows per rank: lock-step by construction), and every (domain, rank) shard is handed
to the trainer as its own named dataset with `DataConfig(datasets_to_split=[])`, so no per-dataset
split coordinator is started (Ray Data's streaming_split starts one coordinator actor per dataset). The data lives in the
object store, so this backend suits data that fits it; `arrow` streams from Parquet at any scale.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dfei.data.dataset import ParquetDataset


def shard_name(split: str, domain_index: int, rank: int) -> str:
    return f"{split}_d{domain_index}_r{rank}"


def build_shards(dataset: ParquetDataset, split: str, world_size: int) -> tuple[dict, list[list[int]]]:
    """Driver side: {name: shard dataset} and rows[d][rank] for every domain and rank."""
    import ray.data

    shards, rows = {}, []
    for d, partition in enumerate(dataset.partitions[split]):
        # the files' own columns, no hive partition column: Ray Data's default partitioning would add
        # `domain` from the directory name, overriding a feature of that name with one value per shard
        ds = ray.data.read_parquet([p.path for p in partition.parts], filesystem=dataset.fs,
                                   partitioning=None).select_columns(dataset.columns)
        parts = ds.split(world_size, equal=True)
        rows.append([p.count() for p in parts])
        for rank, part in enumerate(parts):
            shards[shard_name(split, d, rank)] = part
    return shards, rows


class RayDataDomainReader:
    """Worker side: the same interface as `DomainReader`, over this rank's shard of domain d."""

    def __init__(self, dataset: ParquetDataset, split: str, domain_index: int, rank: int, rows: int,
                 batch_size: int = 512, shuffle: bool = False, seed: int = 0, shuffle_buffer_rows: int = 1 << 16):
        import ray.train

        self.iterator = ray.train.get_dataset_shard(shard_name(split, domain_index, rank))
        self.domain_index = domain_index
        self.num_rows = rows
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed * 1_000_003 + domain_index * 1009 + rank
        self.shuffle_buffer_rows = shuffle_buffer_rows
        self.features = dataset.spec.feature_names
        self.label = dataset.spec.label

    @property
    def num_batches(self) -> int:
        return -(-self.num_rows // self.batch_size)

    def batches(self, epoch: int = 0, skip: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One pass over this rank's shard. `skip` (resuming inside an epoch) is not supported: Ray
        Data's local shuffle cannot be replayed, so TrainConfig refuses checkpoint_every_steps here."""
        if skip:
            raise ValueError("the ray-data ingest cannot resume inside an epoch (use --ingest arrow)")
        shuffle = {"local_shuffle_buffer_size": min(self.shuffle_buffer_rows, max(self.num_rows, 1)),
                   "local_shuffle_seed": self.seed + epoch} if self.shuffle and self.num_rows else {}
        for batch in self.iterator.iter_batches(batch_size=self.batch_size, batch_format="numpy", **shuffle):
            x = np.stack([batch[c] for c in self.features], axis=1).astype(np.int64, copy=False)
            yield x, batch[self.label].astype(np.float32)
