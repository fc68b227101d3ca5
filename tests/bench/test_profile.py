"""The step profiler (benchmark.py --profile): operator times per step from torch.profiler."""
import pytest

from dfei.bench.profile import profile_steps, profile_table, random_steps

CARDS, D = [50, 20, 7], 3


@pytest.mark.parametrize("mode", ["sequential", "fused"])
def test_profile_steps_reports_the_top_operators_per_step(mode):
    items = random_steps(CARDS, D, steps=4, batch_size=32)
    r = profile_steps(items, CARDS, D, mode, warmup=1, top=1000)
    assert r["steps"] == 3 and r["step_ms"] > 0 and r["profiled_step_ms"] > 0
    assert len(r["ops"]) > 10 and all(o["ms_per_step"] > 0 and 0 < o["share"] <= 1 for o in r["ops"])
    assert [o["ms_per_step"] for o in r["ops"]] == sorted((o["ms_per_step"] for o in r["ops"]), reverse=True)
    assert -1e-9 <= r["other_share"] < 1 and abs(sum(o["share"] for o in r["ops"]) + r["other_share"] - 1) < 1e-9
    # one optimizer step per domain batch in sequential, one per step fused
    # (once a torch.optim.Adam has stepped in this process, torch's profiling wrapper of Adam.step also
    # records LazyAdam's super().step() under LazyAdam's name: two records per update, by test order)
    (adam,) = [o for o in r["ops"] if o["name"] == "Optimizer.step#LazyAdam.step"]
    updates = D if mode == "sequential" else 1
    assert adam["calls_per_step"] in (updates, 2 * updates)
    assert profile_table(r).splitlines()[0].startswith(mode)
