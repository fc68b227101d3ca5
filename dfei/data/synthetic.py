"""Synthetic multi-domain CTR data shaped like the paper's datasets (Tables 1 and 2).

The labels come from a latent model a multi-domain learner can exploit:
- users p_u and items q_i with latent vectors (dim 8) and biases; Zipf-like user activity and
  item popularity; each user is active in 1-3 domains, picked with probability ~ sqrt(domain size);
- domains fall in latent groups (by CTR level, as the paper's Fig. 4 finds); domain d scores with
  its own preference transform M_d = I + R_group + 0.5 R_d, plus domain-specific hour/device effects;
- score = 1.5 * p_u' M_d q_i / sqrt(8) + b_u + b_i + hour_d + device_d + Laplace(0, 1) noise, and a
  shard's label is 1 for its round(n * CTR) highest scores, so every domain's CTR matches the table
  (exactly up to rounding; at least one positive and one negative per shard of >= 2 rows);
- observed features: hashed user_id / item_id (10^4..10^6 buckets) and noisy ~10-bin buckets of
  the latents (age, gender, interests, activity, category, quality, popularity) and context
  (hour, device). The domain is the partition, never a column;
- the oracle: every row also carries `click_prob` (float32, never a feature: the spec lists only
  FEATURES), its true click probability given the shard's threshold tau: P(noise >= tau - mean),
  mean the score without noise, from the Laplace(0, 1) CDF (the noise is the difference of two
  Exp(1) draws). Its AUC on a split is the ceiling no model can beat in expectation
  (dfei.eval.oracle);
- `min_eval_rows` N: every domain's valid and test shards get at least N rows (the table's CTR
  kept), so small domains' AUCs mean something at small scales; train rows are unchanged (each
  shard has its own stream, so the train split is byte-identical with or without it).

Every (split, domain) shard draws from its own seeded stream, chunk by chunk, so shards are
independent (parallel) and the output is byte-identical for a seed.
"""
from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dfei.atomic import atomic_directory
from dfei.data.profiles import PROFILES, SPLITS, DomainProfile
from dfei.data.spec import DatasetSpec, Domain, Feature, domain_dir
from dfei.errors import ConfigError, PathExistsError

LATENT = 6
N_BINS = 10  # bucket ids 1..10, 0 = missing
MISSING_RATE = 0.02
SIGNAL = 1.5
CHUNK_ROWS = 1 << 16  # rows drawn at once: bounds a process's working memory
ROWS_PER_FILE = 1 << 20  # one Parquet file = 16 chunks = one parallel job of a large shard
ROW_GROUP_ROWS = 1 << 16  # the unit the arrow ingest reads and shuffles
EXACT_MAX_ROWS = 1 << 21  # shards up to this size get the table's CTR exactly (see shard_threshold)
CALIBRATION_ROWS = 1 << 20
ORACLE_COLUMN = "click_prob"  # the true click probability, float32; not a feature
_BIN_EDGES = np.array([NormalDist().inv_cdf(q / N_BINS) for q in range(1, N_BINS)])

FEATURES = ["user_id", "item_id", "u_age", "u_gender", "u_interest1", "u_interest2", "u_interest3",
            "u_activity", "u_click_level", "i_category", "i_style1", "i_style2", "i_style3", "i_quality",
            "i_popularity", "hour", "device"]


@dataclass
class World:
    """Latent users, items and domains; deterministic for (profile, scale, seed)."""

    domains: list[DomainProfile]
    p: np.ndarray  # [n_users, LATENT]
    b_user: np.ndarray  # [n_users]
    activity: np.ndarray  # [n_users]
    domain_users: list[np.ndarray]  # users active in domain d
    domain_user_cdf: list[np.ndarray]
    q: np.ndarray  # [n_items, LATENT]
    b_item: np.ndarray  # [n_items]
    item_cdf: np.ndarray
    item_pop: np.ndarray
    M: np.ndarray  # [D, LATENT, LATENT]
    hour_cdf: np.ndarray  # [D, 24]
    hour_effect: np.ndarray  # [D, 24]
    device_cdf: np.ndarray  # [D, 4]
    device_effect: np.ndarray  # [D, 4]
    user_dirs: np.ndarray  # [LATENT, 3] projections for observed user interests
    item_dirs: np.ndarray  # [LATENT, 15] 12 category prototypes + 3 style projections
    user_card: int
    item_card: int
    seed: int

    @property
    def cardinalities(self) -> dict[str, int]:
        cards = {name: N_BINS + 1 for name in FEATURES}
        cards.update(user_id=self.user_card, item_id=self.item_card, u_gender=3, i_category=13, hour=25, device=5)
        return cards


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(w / w.sum())


def _hash_card(n: int) -> int:
    return int(min(10**6, max(10**4, 2 * n)))


def build_world(profile: str, scale: float, seed: int) -> World:
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    if not scale > 0:
        raise ConfigError(f"scale must be > 0, got {scale}")
    domains = PROFILES[profile]
    n_dom = len(domains)
    rng = np.random.default_rng([seed, 0xD0E1])
    total = sum(d.rows(s, scale) for d in domains for s in SPLITS)
    n_users = int(np.clip(total // 40, 1000, 2_000_000))
    n_items = int(np.clip(total // 25, 1000, 2_000_000))

    p = rng.standard_normal((n_users, LATENT)).astype(np.float32)
    b_user = (0.5 * rng.standard_normal(n_users)).astype(np.float32)
    activity = _zipf_weights(n_users, 0.8, rng)
    # membership: 1-3 domains per user, chosen ~ sqrt(train size)
    size_w = np.sqrt([d.train_k for d in domains])
    size_w /= size_w.sum()
    n_member = np.minimum(rng.choice([1, 2, 3], size=n_users, p=[0.5, 0.3, 0.2]), n_dom)
    # sampling without replacement ~ size_w, vectorised: Gumbel top-k per user, in blocks of users
    member = np.zeros((n_users, n_dom), dtype=bool)
    for lo in range(0, n_users, 1 << 16):
        hi = min(lo + (1 << 16), n_users)
        keys = np.log(size_w) + rng.gumbel(size=(hi - lo, n_dom))
        member[lo:hi] = np.argsort(np.argsort(-keys, axis=1), axis=1) < n_member[lo:hi, None]
    domain_users, domain_user_cdf = [], []
    for d in range(n_dom):
        users = np.flatnonzero(member[:, d])
        if len(users) < min(50, n_users):  # every domain keeps a usable audience
            users = np.union1d(users, rng.choice(n_users, size=min(50, n_users), replace=False))
        domain_users.append(users)
        domain_user_cdf.append(np.cumsum(activity[users]) / activity[users].sum())

    q = rng.standard_normal((n_items, LATENT)).astype(np.float32)
    item_pop = _zipf_weights(n_items, 0.9, rng)
    b_item = (0.5 * rng.standard_normal(n_items) + 0.1 * np.log(item_pop * n_items)).astype(np.float32)

    # domain groups by CTR level (domains are listed in CTR order within a profile's table)
    n_groups = min(3, n_dom)
    order = np.argsort([d.ctr_pct for d in domains], kind="stable")
    group = np.empty(n_dom, dtype=int)
    group[order] = np.arange(n_dom) * n_groups // n_dom
    r_group = rng.standard_normal((n_groups, LATENT, LATENT)) / math.sqrt(LATENT)
    M = np.stack([np.eye(LATENT) + r_group[group[d]] + 0.5 * rng.standard_normal((LATENT, LATENT)) / math.sqrt(LATENT)
                  for d in range(n_dom)]).astype(np.float32)
    hour_logits = rng.standard_normal((n_dom, 24))
    hour_cdf = np.cumsum(np.exp(hour_logits), axis=1)
    device_cdf = np.cumsum(rng.dirichlet(np.full(4, 2.0), size=n_dom), axis=1)
    return World(
        domains=domains, p=p, b_user=b_user, activity=activity, domain_users=domain_users,
        domain_user_cdf=domain_user_cdf, q=q, b_item=b_item, item_cdf=np.cumsum(item_pop), item_pop=item_pop,
        M=M, hour_cdf=hour_cdf / hour_cdf[:, -1:], hour_effect=0.3 * rng.standard_normal((n_dom, 24)),
        device_cdf=device_cdf / device_cdf[:, -1:], device_effect=0.2 * rng.standard_normal((n_dom, 4)),
        user_dirs=rng.standard_normal((LATENT, 3)) / math.sqrt(LATENT),
        item_dirs=rng.standard_normal((LATENT, 15)) / math.sqrt(LATENT),
        user_card=_hash_card(n_users), item_card=_hash_card(n_items), seed=seed,
    )


def _bucket(values: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Standardised noisy value -> bucket 1..10 (normal deciles), 0 for a missing value."""
    z = (values + noise * rng.standard_normal(values.shape)) / math.sqrt(1 + noise**2)
    ids = np.searchsorted(_BIN_EDGES, z) + 1
    ids[rng.random(values.shape) < MISSING_RATE] = 0
    return ids


def _hash_ids(ids: np.ndarray, card: int, salt: int) -> np.ndarray:
    # multiplicative hash into [1, card); 0 stays "missing/other"
    return 1 + ((ids.astype(np.uint64) * np.uint64(2654435761) + np.uint64(salt)) % np.uint64(card - 1)).astype(np.int64)


def _draw_chunk(world: World, d: int, n: int, rng: np.random.Generator
                ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """n rows of domain d: observed features, the latent score (before thresholding) and its
    noiseless part (the score minus its Laplace(0, 1) noise)."""
    users = world.domain_users[d][np.searchsorted(world.domain_user_cdf[d], rng.random(n), side="right").clip(
        max=len(world.domain_users[d]) - 1)]
    items = np.searchsorted(world.item_cdf, rng.random(n) * world.item_cdf[-1], side="right").clip(max=len(world.q) - 1)
    hour = np.searchsorted(world.hour_cdf[d], rng.random(n), side="right").clip(max=23)
    device = np.searchsorted(world.device_cdf[d], rng.random(n), side="right").clip(max=3)
    p, q = world.p[users], world.q[items]
    affinity = np.einsum("bi,ij,bj->b", p, world.M[d], q) / math.sqrt(LATENT)
    noise = np.log(rng.random(n)) - np.log1p(-rng.random(n))  # -E1 + E2, E ~ Exp(1): Laplace(0, 1)
    mean = (SIGNAL * affinity + world.b_user[users] + world.b_item[items]
            + world.hour_effect[d, hour] + world.device_effect[d, device])
    score = mean + noise
    up, iq = p @ world.user_dirs, q @ world.item_dirs
    cols = {
        "user_id": _hash_ids(users, world.user_card, world.seed),
        "item_id": _hash_ids(items, world.item_card, world.seed + 1),
        "u_age": _bucket(p[:, 0], 0.5, rng),
        "u_gender": np.where(rng.random(n) < MISSING_RATE, 0, 1 + (p[:, 1] + 0.3 * rng.standard_normal(n) > 0)),
        "u_interest1": _bucket(up[:, 0], 0.3, rng),
        "u_interest2": _bucket(up[:, 1], 0.3, rng),
        "u_interest3": _bucket(up[:, 2], 0.3, rng),
        "u_activity": _bucket(np.log(world.activity[users] * len(world.p)) / 0.8, 0.3, rng),
        "u_click_level": _bucket(world.b_user[users] / 0.5, 0.5, rng),
        "i_category": 1 + np.argmax(iq[:, :12] + 0.2 * rng.standard_normal((n, 12)), axis=1),
        "i_style1": _bucket(iq[:, 12], 0.3, rng),
        "i_style2": _bucket(iq[:, 13], 0.3, rng),
        "i_style3": _bucket(iq[:, 14], 0.3, rng),
        "i_quality": _bucket(world.b_item[items] / 0.55, 0.5, rng),
        "i_popularity": _bucket(np.log(world.item_pop[items] * len(world.q)) / 0.9, 0.2, rng),
        "hour": 1 + hour,
        "device": 1 + device,
    }
    return cols, score, mean


def click_probability(mean: np.ndarray, tau: float) -> np.ndarray:
    """P(mean + noise >= tau) for Laplace(0, 1) noise, float32 [n]: a row's true click probability."""
    t = np.asarray(tau - mean, dtype=np.float64)
    half_tail = 0.5 * np.exp(-np.abs(t))  # P(noise >= |t|)
    return np.where(t >= 0, half_tail, 1.0 - half_tail).astype(np.float32)


def _positives(n: int, ctr: float) -> int:
    k = round(n * ctr)
    return min(max(k, 1), n - 1) if n >= 2 else k


def _shard_chunks(n: int) -> list[int]:
    return [min(CHUNK_ROWS, n - start) for start in range(0, n, CHUNK_ROWS)]


def _seq(world: World, split: str, d: int, day: int) -> list[int]:
    """A shard's random stream; another day draws new rows from the same world (day 0 = no suffix)."""
    return [world.seed, SPLITS.index(split), d] + ([day] if day else [])


def shard_threshold(world: World, split: str, d: int, n: int, day: int = 0) -> float:
    """The score threshold that gives domain d's table CTR.

    Shards up to EXACT_MAX_ROWS: exact, from every row's score (4 bytes a row, one extra pass).
    Larger shards: the quantile of a CALIBRATION_ROWS sample from the same distribution (relative
    CTR error ~0.4 % at 1M rows), so memory stays bounded whatever the scale.
    """
    ctr = world.domains[d].ctr_pct / 100
    seq = _seq(world, split, d, day)
    if n <= EXACT_MAX_ROWS:
        scores = np.concatenate([_draw_chunk(world, d, c, np.random.default_rng(seq + [i]))[1]
                                 for i, c in enumerate(_shard_chunks(n))])
        k = _positives(n, ctr)
        return float(np.partition(scores, n - k)[n - k]) if k > 0 else float("inf")
    sample = np.concatenate([  # chunk by chunk, from streams no data chunk uses
        _draw_chunk(world, d, c, np.random.default_rng(seq + [1 << 30, i]))[1]
        for i, c in enumerate(_shard_chunks(CALIBRATION_ROWS))])
    return float(np.quantile(sample, 1.0 - ctr))


def write_file(world: World, split: str, d: int, n: int, file_index: int, tau: float, out_dir: str,
               day: int = 0) -> tuple[int, int]:
    """Write part-<file_index>.parquet of a shard: its ROWS_PER_FILE rows; returns (rows, positives)."""
    seq = _seq(world, split, d, day)
    chunks = _shard_chunks(n)
    per_file = ROWS_PER_FILE // CHUNK_ROWS
    schema = pa.schema([(f, pa.int32()) for f in FEATURES] + [("label", pa.int8()), (ORACLE_COLUMN, pa.float32())])
    os.makedirs(out_dir, exist_ok=True)
    rows = positives = 0
    with pq.ParquetWriter(os.path.join(out_dir, f"part-{file_index:05d}.parquet"), schema, compression="zstd") as w:
        for i in range(file_index * per_file, min((file_index + 1) * per_file, len(chunks))):
            cols, score, mean = _draw_chunk(world, d, chunks[i], np.random.default_rng(seq + [i]))
            label = (score >= tau).astype(np.int8)
            prob = click_probability(mean, tau)
            w.write_table(pa.table({**{f: cols[f].astype(np.int32) for f in FEATURES}, "label": label,
                                    ORACLE_COLUMN: prob}, schema=schema), row_group_size=ROW_GROUP_ROWS)
            rows, positives = rows + chunks[i], positives + int(label.sum())
    return rows, positives


def num_files(n: int) -> int:
    return -(-n // ROWS_PER_FILE)


_WORLD: tuple[tuple, World] | None = None


def _world(profile: str, scale: float, seed: int) -> World:
    global _WORLD  # one World per process, reused across its jobs
    key = (profile, scale, seed)
    if _WORLD is None or _WORLD[0] != key:
        _WORLD = (key, build_world(profile, scale, seed))
    return _WORLD[1]


def _job(args: tuple) -> tuple[str, int, int, int]:
    """One shard (small: threshold computed here, all its files) or one file of a large shard."""
    profile, scale, seed, split, d, n, files, tau, out_dir, day = args
    world = _world(profile, scale, seed)
    if tau is None:
        tau = shard_threshold(world, split, d, n, day)
    rows = positives = 0
    for f in files:
        r, p = write_file(world, split, d, n, f, tau, out_dir, day)
        rows, positives = rows + r, positives + p
    return split, d, rows, positives


def shard_rows(world: World, split: str, d: int, scale: float, min_eval_rows: int = 0) -> int:
    """Rows of domain d's `split` shard: the table's count at `scale`, raised to `min_eval_rows` for
    valid and test (never train)."""
    n = world.domains[d].rows(split, scale)
    return max(n, min_eval_rows) if split != "train" else n


def _check_generate(out: str, profile: str, domains: list[str] | None, day: int, min_eval_rows: int,
                    overwrite: bool) -> list[str]:
    """generate's arguments checked (module errors as generate documents); the profile's domain names."""
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise PathExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    names = [dom.name for dom in PROFILES[profile]]
    unknown = sorted(set(domains or []) - set(names))
    if unknown:
        raise ConfigError(f"--domains: {unknown} not in the {profile} profile's domains {names}")
    if day < 0:
        raise ConfigError(f"--day must be >= 0, got {day}")
    if min_eval_rows < 0:
        raise ConfigError(f"--min-eval-rows must be >= 0, got {min_eval_rows}")
    return names


def _jobs(world, profile: str, scale: float, seed: int, keep: list[int], min_eval_rows: int, tmp: str,
          day: int) -> list[tuple]:
    """One job per small shard, one per file of a large one (all with the shard's calibrated
    threshold), largest first for load balance."""
    jobs = []
    for split in SPLITS:
        for d in keep:
            n = shard_rows(world, split, d, scale, min_eval_rows)
            common = (profile, scale, seed, split, d, n)
            if n <= EXACT_MAX_ROWS:
                jobs.append((*common, list(range(num_files(n))), None, domain_dir(tmp, split, d), day))
            else:
                tau = shard_threshold(world, split, d, n, day)
                jobs += [(*common, [f], tau, domain_dir(tmp, split, d), day) for f in range(num_files(n))]
    jobs.sort(key=lambda j: -min(j[5], ROWS_PER_FILE * len(j[6])))
    return jobs


def _run_jobs(jobs: list[tuple], workers: int, total: int, t0: float, log) -> dict[str, dict[int, list[int]]]:
    """Every job run (in `workers` processes when > 1) with a progress bar every 5 %; -> per split,
    per domain [rows, positives]. A failure stops the pool before the error propagates (running jobs
    would otherwise recreate the temporary directory after it is deleted)."""
    counts: dict[str, dict[int, list[int]]] = {s: {} for s in SPLITS}
    done, next_report = 0, 0.0
    executor = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        results = (map(_job, jobs) if executor is None
                   else (f.result() for f in as_completed([executor.submit(_job, j) for j in jobs])))
        for split, d, rows, positives in results:
            acc = counts[split].setdefault(d, [0, 0])
            acc[0], acc[1] = acc[0] + rows, acc[1] + positives
            done += rows
            if done / total >= next_report:
                next_report = done / total + 0.05
                elapsed = time.time() - t0
                log(f"[generate] [{'#' * int(30 * done / total):<30}] {done / total:6.1%} {done:,}/{total:,} rows, "
                    f"{done / max(elapsed, 1e-9):,.0f} rows/s, ETA {elapsed * (total - done) / max(done, 1):.0f}s")
    except BaseException:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    return counts


def _spec(world, profile: str, scale: float, seed: int, day: int, keep: list[int], names: list[str],
          min_eval_rows: int, counts: dict[str, dict[int, list[int]]]) -> DatasetSpec:
    stats = {s: {world.domains[d].name: {"rows": r, "ctr": p / r}
                 for d, (r, p) in sorted(counts[s].items())} for s in SPLITS}
    return DatasetSpec(
        name=f"{profile}-s{scale:g}-seed{seed}" + (f"-day{day}" if day else "")
             + (f"-{len(keep)}of{len(names)}domains" if len(keep) < len(names) else "")
             + (f"-e{min_eval_rows}" if min_eval_rows else ""),
        label="label", user_column="user_id", encoders={"native": True},  # generated as ids
        domains=[Domain(d, names[d]) for d in keep],
        features=[Feature(name, card) for name, card in world.cardinalities.items()],
        row_counts={s: {name: int(v["rows"]) for name, v in stats[s].items()} for s in SPLITS},
        meta={"generator": "dfei.data.synthetic", "profile": profile, "scale": scale, "seed": seed, "day": day,
              "min_eval_rows": min_eval_rows, "oracle_column": ORACLE_COLUMN,
              "ctr": {s: {name: round(v["ctr"], 6) for name, v in stats[s].items()} for s in SPLITS}},
    )


def generate(profile: str, scale: float, seed: int, out: str, workers: int | None = None,
             overwrite: bool = False, log=print, day: int = 0, domains: list[str] | None = None,
             min_eval_rows: int = 0) -> DatasetSpec:
    """Write a complete dataset (spec + Parquet) to the local directory `out`, atomically.

    `day` > 0 draws another sample of the same world (users, items, domain behaviour): the logs of
    another day, for incremental training. `domains` keeps only those domains (by name, ids kept).
    `min_eval_rows` N >= 0: each domain's valid and test shards get at least N rows (recorded in
    dataset.json's meta; the world, hence the train split, is the one without it). ConfigError for
    a negative N, an unknown profile or domain, a negative day; PathExistsError for a non-empty
    `out` without overwrite.
    """
    out = os.path.abspath(out)
    names = _check_generate(out, profile, domains, day, min_eval_rows, overwrite)
    t0 = time.time()
    world = _world(profile, scale, seed)  # cached before the pool forks: workers inherit it
    keep = [d for d, name in enumerate(names) if not domains or name in domains]
    with atomic_directory(out) as tmp:
        jobs = _jobs(world, profile, scale, seed, keep, min_eval_rows, tmp, day)
        total = sum(shard_rows(world, split, d, scale, min_eval_rows) for split in SPLITS for d in keep)
        workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
        log(f"[generate] {profile} x{scale}: {len(keep)} domains, {total:,} rows, "
            f"{len(world.p):,} users, {len(world.q):,} items, {len(jobs)} jobs on {workers} process(es)")
        counts = _run_jobs(jobs, workers, total, t0, log)
        spec = _spec(world, profile, scale, seed, day, keep, names, min_eval_rows, counts)
        with open(os.path.join(tmp, "dataset.json"), "w") as f:
            json.dump(spec.to_json(), f, indent=1, sort_keys=True)
    log(f"[generate] wrote {out} in {time.time() - t0:.1f}s")
    return spec
