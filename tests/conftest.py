"""Session fixtures: one Ray for the whole test session, small synthetic datasets made here."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=512 << 20,
                 log_to_driver=True, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def public_small(tmp_path_factory) -> str:
    """The `public` profile (6 domains) at scale 0.02: 80k train rows, ~1 s to generate."""
    from dfei.data.synthetic import generate

    out = str(tmp_path_factory.mktemp("data") / "public-s0.02")
    generate("public", 0.02, seed=0, out=out, workers=1, log=lambda *a: None)
    return out


@pytest.fixture(scope="session")
def public_tiny(tmp_path_factory) -> str:
    """The `public` profile at scale 0.002: ~8k train rows, for fast unit tests."""
    from dfei.data.synthetic import generate

    out = str(tmp_path_factory.mktemp("data") / "public-s0.002")
    generate("public", 0.002, seed=0, out=out, workers=1, log=lambda *a: None)
    return out
