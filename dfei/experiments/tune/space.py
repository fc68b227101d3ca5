"""What a sweep searches and how it fits the cluster: parsed values, the Tune search space, and the
resource plan (trials in parallel, CPUs per Ray Train worker).

Values come from the command line as comma lists (`0,0.1,0.9`) or, for random search, as ranges
(`lo:hi`: uniform for alpha, integers lo..hi for k). Everything is checked before Ray starts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dfei.errors import ConfigError

SEARCHES = ("grid", "random")
SCHEDULERS = ("none", "asha")
TRIAL_DRIVER_CPU = 0.05  # the trial function only waits on its TorchTrainer (whose controller takes 0 CPU)


@dataclass(frozen=True)
class Values:
    """A searched hyperparameter: a list of choices, or a (lo, hi) range for random search."""

    name: str
    choices: tuple[float, ...] = ()
    low: float | None = None
    high: float | None = None

    @property
    def is_range(self) -> bool:
        return self.low is not None

    def to_json(self) -> Any:
        return {"range": [self.low, self.high]} if self.is_range else list(self.choices)


def parse_values(text: str, name: str, kind: type) -> Values:
    """`0,0.1,0.9` -> choices; `0.5:1` -> a range. Raises ValueError naming the bad value."""
    text = str(text).strip()
    if not text:
        raise ConfigError(f"--{name}: no values given")
    check = _ALPHA_OK if name == "alpha" else _K_OK

    def number(token: str) -> float:
        try:
            value = float(token)
        except ValueError:
            raise ConfigError(f"--{name}: {token!r} is not a number") from None
        if kind is int and not value.is_integer():
            raise ConfigError(f"--{name}: {token!r} is not an integer")
        ok, expected = check
        if not ok(value):
            raise ConfigError(f"--{name}: {token} is outside the valid range ({expected})")
        return int(value) if kind is int else value

    if ":" in text:
        parts = text.split(":")
        if len(parts) != 2:
            raise ConfigError(f"--{name}: a range is lo:hi, got {text!r}")
        low, high = number(parts[0]), number(parts[1])
        if low >= high:
            raise ConfigError(f"--{name}: range {text!r} needs lo < hi")
        return Values(name, low=low, high=high)
    tokens = [t.strip() for t in text.split(",") if t.strip()]
    choices = tuple(dict.fromkeys(number(t) for t in tokens))  # drop repeats, keep order
    if len(choices) != len(tokens):
        raise ConfigError(f"--{name}: repeated value in {text!r}")
    return Values(name, choices=choices)


_ALPHA_OK = (lambda a: 0.0 <= a <= 1.0, "alpha in [0, 1]")
_K_OK = (lambda k: k >= 1, "k a positive integer")


@dataclass(frozen=True)
class SearchSpec:
    alpha: Values
    k: Values
    search: str = "grid"
    scheduler: str = "none"
    num_samples: int = 1  # grid: seeds per grid point; random: trials

    def __post_init__(self) -> None:
        if self.search not in SEARCHES:
            raise ConfigError(f"--search must be one of {SEARCHES}, got {self.search!r}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"--scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.num_samples < 1:
            raise ConfigError(f"--num-samples must be >= 1, got {self.num_samples}")
        if self.search == "grid" and (self.alpha.is_range or self.k.is_range):
            raise ConfigError("--search grid needs lists of values (0,0.5,0.9); ranges lo:hi need --search random")

    @property
    def num_trials(self) -> int:
        if self.search == "random":
            return self.num_samples
        return len(self.alpha.choices) * len(self.k.choices) * self.num_samples

    def param_space(self, base_seed: int) -> dict[str, Any]:
        """Tune's param_space. Grid: every (alpha, k) x seeds base_seed..base_seed+N-1. Random: N draws."""
        from ray import tune

        if self.search == "grid":
            return {"alpha": tune.grid_search(list(self.alpha.choices)), "k": tune.grid_search(list(self.k.choices)),
                    "seed": tune.grid_search([base_seed + i for i in range(self.num_samples)])}

        def dist(v: Values):
            if not v.is_range:
                return tune.choice(list(v.choices))
            return tune.uniform(v.low, v.high) if v.name == "alpha" else tune.randint(int(v.low), int(v.high) + 1)

        return {"alpha": dist(self.alpha), "k": dist(self.k), "seed": base_seed}

    def to_json(self) -> dict[str, Any]:
        return {"alpha": self.alpha.to_json(), "k": self.k.to_json(), "search": self.search,
                "scheduler": self.scheduler, "num_samples": self.num_samples}


@dataclass(frozen=True)
class ResourcePlan:
    concurrency: int  # trials running at once
    cpus_per_worker: float  # each of a trial's Ray Train workers
    workers_per_trial: int
    use_gpu: bool

    @property
    def cpus_per_trial(self) -> float:
        return TRIAL_DRIVER_CPU + self.workers_per_trial * self.cpus_per_worker


def plan_resources(cluster_cpus: float, cluster_gpus: float, num_trials: int, workers_per_trial: int = 1,
                   use_gpu: bool = False, max_concurrent: int | None = None, cpus_per_worker: float | None = None,
                   reserve_cpus: float = 0.0) -> ResourcePlan:
    """Trials in parallel and CPUs per worker, so all running trials fit at once (never a deadlock
    waiting on a placement group that cannot be granted) and a big cluster is filled.

    Without GPUs each worker gets at least one whole CPU when the cluster has room for it, else an
    equal fraction; with GPUs a worker takes one GPU and the concurrency is GPUs / workers.
    `reserve_cpus` stays free (Ray Data read tasks for the ray-data ingest).
    """
    if workers_per_trial < 1:
        raise ConfigError(f"--workers-per-trial must be >= 1, got {workers_per_trial}")
    if max_concurrent is not None and max_concurrent < 1:
        raise ConfigError(f"--max-concurrent must be >= 1, got {max_concurrent}")
    usable = cluster_cpus - reserve_cpus
    if usable < TRIAL_DRIVER_CPU + workers_per_trial * 0.1:
        raise ConfigError(f"the cluster has {cluster_cpus:g} CPUs; a trial of {workers_per_trial} worker(s) needs more")
    if use_gpu:
        fits = int(cluster_gpus // workers_per_trial)
        if fits < 1:
            raise ConfigError(f"--use-gpu: a trial needs {workers_per_trial} GPU(s), the cluster has {cluster_gpus:g}")
    elif cpus_per_worker is not None:
        fits = int(usable // (TRIAL_DRIVER_CPU + workers_per_trial * cpus_per_worker))
        if fits < 1:
            raise ConfigError(f"--cpus-per-worker {cpus_per_worker:g} x {workers_per_trial} worker(s) does not fit "
                             f"the cluster's {usable:g} usable CPUs")
    else:
        fits = max(1, int(usable // workers_per_trial))  # a whole CPU per worker where possible
    concurrency = max(1, min(num_trials, fits, max_concurrent or num_trials))
    if cpus_per_worker is None:
        share = (usable / concurrency - TRIAL_DRIVER_CPU) / workers_per_trial
        # whole CPUs where there are enough (a fused or GPU worker runs a torch thread per CPU), else the
        # fraction that fits
        cpus_per_worker = float(math.floor(share)) if share >= 1 else math.floor(share * 100) / 100
    elif use_gpu:
        concurrency = max(1, min(concurrency, int(usable // (TRIAL_DRIVER_CPU + workers_per_trial * cpus_per_worker))))
    return ResourcePlan(concurrency, cpus_per_worker, workers_per_trial, use_gpu)
