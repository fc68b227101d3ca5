"""The process-tree memory sampler (dfei.bench.process_memory): a child's and a grandchild's peaks are seen."""
import sys

import pytest

from dfei.bench.process_memory import KINDS, measure

# touches every page (b"x" * n writes them), holds them through a few samples, then exits
ALLOC = "import time; b = b'x' * ({n} << 20); print('[convert] held', flush=True); time.sleep(0.6)"


def test_measure_sees_the_peak_of_a_child_and_of_its_child():
    grandchild = ALLOC.format(n=60)
    code = (f"import subprocess, sys; {ALLOC.format(n=100)}; "
            f"subprocess.run([sys.executable, '-c', {grandchild!r}], check=True)")
    r = measure([sys.executable, "-c", code], interval=0.05, quiet=True)
    assert set(r["by_kind"]) == set(KINDS)
    driver, other = r["by_kind"]["driver"], r["by_kind"]["other ray"]
    assert driver["processes"] == 1 and 100 <= driver["peak_rss_mb"] < 200 and driver["peak_rss_anon_mb"] >= 100
    assert other["processes"] == 1 and 60 <= other["peak_rss_mb"] < 160  # the grandchild, kind by elimination
    assert r["by_kind"]["ray workers"]["processes"] == 0
    assert r["peak_process_mb"] == driver["peak_rss_mb"]
    assert r["peak_total_mb"] >= 160  # the driver still holds its 100 MB while the grandchild holds 60
    assert r["lines"] == ["[convert] held", "[convert] held"]
    assert 1.2 <= r["seconds"] < 5 and r["after_ray_seconds"] == r["seconds"]  # no "[ray] started" line


def test_measure_raises_with_the_output_of_a_failed_command():
    with pytest.raises(RuntimeError, match="boom"):
        measure([sys.executable, "-c", "raise SystemExit('boom')"], quiet=True)
