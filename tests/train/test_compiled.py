"""--compile: a run that cannot compile trains eager, with one warning and the same result."""
import warnings

import numpy as np
import pytest
import torch

from dfei.data.ingest import fused_steps
from dfei.models import build_model
from dfei.train import compiled
from dfei.train.epoch import EpochOptions, train_epoch
from dfei.train.optim import build_optimizer

CARDS, D = [30, 20, 6], 3


def _items(steps: int = 6, batch: int = 16):
    rng = np.random.default_rng(0)
    return [(s, d, np.stack([rng.integers(0, c, batch) for c in CARDS], axis=1), rng.integers(0, 2, batch).astype(
        np.float32)) for s in range(steps) for d in range(D)]


def _train(mode: str, compile: bool, name: str = "dfei"):
    torch.manual_seed(0)
    model = build_model(name, CARDS, D)
    optimizer = build_optimizer(model)
    items = fused_steps(iter(_items())) if mode == "fused" else iter(_items())
    stats = train_epoch(model, optimizer, items, torch.device("cpu"), D,
                        options=EpochOptions(compile=compile, seed_step=lambda step: torch.manual_seed(step)))
    return model, stats


def _broken_compile(fail_after: int):
    """A torch.compile stand-in whose functions fail after `fail_after` calls (0: in the trial)."""
    def fake(fn, **kwargs):
        calls = {"n": 0}

        def run(*args):
            calls["n"] += 1
            if calls["n"] > fail_after:
                raise RuntimeError("InductorError: no C++ compiler found")
            return fn(*args)
        return run
    return fake


@pytest.mark.parametrize("mode", ["sequential", "fused"])
@pytest.mark.parametrize("fail_after", [0, 20])  # at compile time (the trial) / later, in a graph not tried
def test_a_failed_compile_warns_once_and_trains_eager_to_the_same_weights(monkeypatch, mode, fail_after):
    eager, eager_stats = _train(mode, compile=False)
    monkeypatch.setattr(torch, "compile", _broken_compile(fail_after))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, stats = _train(mode, compile=True)
    failures = [w for w in caught if "torch.compile failed" in str(w.message)]
    assert len(failures) == 1, [str(w.message) for w in caught]
    assert "no C++ compiler found" in str(failures[0].message) and "continues eager" in str(failures[0].message)
    assert stats["compiled"] is False and "no C++ compiler" in stats["compile_error"]
    assert stats["compile_s"] >= 0 and stats["samples"] == eager_stats["samples"]
    for (name, a), b in zip(eager.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)  # the fallback is the eager math, dropout masks included
    assert model.layer_runner is None or not model.layer_runner.info["compiled"]


def test_a_model_without_a_compiled_path_warns_and_trains_eager():
    with pytest.warns(RuntimeWarning, match="MMoE has no compiled path"):
        _, stats = _train("sequential", compile=True, name="mmoe")
    assert stats["compiled"] is False and stats["samples"] == 6 * D * 16


def test_enable_compile_is_idempotent(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # a compiler that returns the function
    model = build_model("dfei", CARDS, D)
    first = compiled.enable_compile(model, torch.device("cpu"))
    assert first["compiled"] is True and isinstance(model.layer_runner, compiled.CompiledLayers)
    monkeypatch.setattr(torch, "compile", _broken_compile(0))
    again = compiled.enable_compile(model, torch.device("cpu"))  # not compiled (or tried) again
    assert again == {**first, "compile_s": 0.0}


def test_a_failed_compile_is_not_retried_every_epoch(monkeypatch):
    monkeypatch.setattr(torch, "compile", _broken_compile(0))
    model = build_model("dfei", CARDS, D)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        first = compiled.enable_compile(model, torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would fail here
        again = compiled.enable_compile(model, torch.device("cpu"))
    assert first["compiled"] is False and again == {**first, "compile_s": 0.0}


def test_the_trial_leaves_the_callers_random_stream_alone(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    model = build_model("dfei", CARDS, D)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    compiled.enable_compile(model, torch.device("cpu"))
    torch.testing.assert_close(torch.rand(3), expected)


def test_keep_mask_compiles_to_the_same_masks_as_eager():
    # the one real torch.compile in the suite (inductor's C++ backend; ~10 s): int32 wrap-around,
    # logical shifts and the int16 view must give eager's masks bit for bit
    from dfei.models.layers import keep_mask

    def masks(seed):
        return keep_mask(torch.Size([37, 29]), 0.3, seed, torch.float32)

    seed = torch.tensor(-123456789, dtype=torch.int32)
    try:
        fn = torch.compile(masks, dynamic=False)
        got = fn(seed)
    except Exception as err:  # no C++ compiler here: what --compile would fall back from
        pytest.skip(f"torch.compile unavailable: {err}")
    torch.testing.assert_close(got, masks(seed), rtol=0, atol=0)
