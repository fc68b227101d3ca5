"""`--compile`: torch.compile of a model's dense layers (DFEI's shared tower, domain towers and heads),
with the compilation timed apart from training and an eager fallback.

What is compiled is `dfei.models.layers.run_layers`, the towers and heads as a function of their
weights, with dynamic shapes: one graph per layer plan (tower / head, train / eval) and rank (one
module [rows, in] or the fused step's stacked domains [n, m, in]) serves every domain and batch
size, so 21 domains do not mean 21 compilations. The embedding (row-sparse gradients, which
torch.compile does not handle), DFE/DFI and the optimizer stay eager. On CPU this is inductor's C++
backend; on CUDA, inductor's Triton kernels.
"""
from __future__ import annotations

import time
import warnings
from typing import Any

import torch
from torch import nn

from dfei.models.layers import dropout_seeds, layer_plan, run_layers


class CompiledLayers:
    """run_layers compiled; after the first failure it warns once and runs eager run_layers for good."""

    def __init__(self, fn, info: dict[str, Any]):
        self.fn, self.info = fn, info

    def __call__(self, *args):
        if self.info["compiled"]:
            try:
                return self.fn(*args)
            except Exception as err:  # a graph the trial did not see failed to compile
                _warn(err)
                self.info.update(compiled=False, error=_describe(err))
        return run_layers(*args)


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:300]


def _warn(err: BaseException) -> None:
    warnings.warn(f"--compile: torch.compile failed ({_describe(err)}); training continues eager (same math, "
                  "uncompiled speed)", RuntimeWarning, stacklevel=3)


def _trial(fn, modules: list[nn.Module], device: torch.device) -> None:
    """Compile every graph training and evaluation will use, on copies of the weights: forward and
    backward of each module's training plan alone and stacked over 2 domains, and its eval plan,
    with 64 rows and with 1 (dynamo specialises sizes 0 and 1). Runs on a forked RNG: the caller's
    random streams are what they would be without --compile."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for module in modules:
            for training in (True, False):
                was = module.training
                module.train(training)
                try:
                    plan, linears = layer_plan(module)
                finally:
                    module.train(was)
                for stacked, rows in ((False, 64), (False, 1), (True, 64), (True, 1)):
                    w = [m.weight.detach().clone() for m in linears]
                    b = [m.bias.detach().clone() for m in linears]
                    if stacked:
                        w, b = [torch.stack([t, t]) for t in w], [torch.stack([t, t]) for t in b]
                    shape = (2, rows, linears[0].in_features) if stacked else (rows, linears[0].in_features)
                    h = torch.randn(*shape, device=device)
                    with torch.set_grad_enabled(training):
                        for t in w + b + [h]:
                            t.requires_grad_(training)
                        out = fn(h, plan, w, b, dropout_seeds(plan))
                        if training:
                            out.sum().backward()


def _limit_recompiles() -> None:
    """Room for every graph ((tower, head) x (train, eval) x (one module, stacked) x sizes 1 / many)
    above dynamo's default 8, and an error instead of a silent eager run past it (CompiledLayers then
    falls back and says so). The config names moved between torch versions."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), 64))
    if hasattr(config, "fail_on_recompile_limit_hit"):
        config.fail_on_recompile_limit_hit = True


def enable_compile(model: nn.Module, device: torch.device) -> dict[str, Any]:
    """Compile `model`'s dense layers, once per model: later calls return its state without compiling
    or trying again. Returns {"compiled": bool, "compile_s": seconds spent compiling in this call
    (0 after the first), "error": None or why it runs eager}. A model without a compiled path (the
    baselines) or a failed compilation warns once (RuntimeWarning) and trains eager."""
    m = getattr(model, "module", model)
    done = getattr(m, "compile_info", None)
    if done is not None:
        return {**done, "compile_s": 0.0}
    layers = m.compilable_layers()  # dfei.models.base.DomainModel
    if not layers:
        warnings.warn(f"--compile: {type(m).__name__} has no compiled path (DFEI's towers and heads have); "
                      "training runs eager", RuntimeWarning, stacklevel=2)
        info = {"compiled": False, "compile_s": 0.0, "error": f"{type(m).__name__} has no compiled path"}
    else:
        t0 = time.perf_counter()
        try:
            _limit_recompiles()
            fn = torch.compile(run_layers, dynamic=True)
            _trial(fn, layers, device)
        except Exception as err:
            _warn(err)
            info = {"compiled": False, "compile_s": time.perf_counter() - t0, "error": _describe(err)}
        else:
            info = {"compiled": True, "compile_s": time.perf_counter() - t0, "error": None}
            m.set_layer_runner(CompiledLayers(fn, info))
    m.compile_info = info  # plain attribute: not model state, not in the state dict
    return dict(info)
