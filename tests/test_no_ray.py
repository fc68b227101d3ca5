"""The plain engine runs where only torch, numpy, pyarrow, pandas and scikit-learn are installed (a
bare GPU machine): with Ray, pydantic, fsspec, tqdm, MLflow and TensorBoard unimportable, the
model, engine, optimizer, ingest, generator and benchmark modules import and pipelines/gpu_check.py
trains, scores and reports on the device it is given (in one such process: tests/no_ray_child.py)."""
from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

from dfei.bench.gpu_check import GpuCheckConfig, prepare_data, resolve_device
from dfei.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _phase(no_ray_child: dict, name: str) -> dict:
    """One phase of tests/no_ray_child.py (the one process without those packages: see there)."""
    phase = no_ray_child["phases"][name]
    assert phase["error"] is None, phase["error"]
    return phase


def test_the_blocker_blocks_and_names_a_dfei_module_that_tried(no_ray_child):
    phase = _phase(no_ray_child, "blocker")
    assert phase["blocked"] and "blocked by tests/no_ray_child.py" in phase["blocked"]
    assert phase["tqdm_spec"] == "None"
    # dfei.data.fs imports fsspec only for a URI: the attempt fails and is charged to dfei/data/fs.py
    ours = _phase(no_ray_child, "fs")["ours"]
    assert ours and all(name == "fsspec" and file == os.path.join(ROOT, "dfei", "data", "fs.py") for name, file in ours)


def test_the_plain_engine_modules_import_without_ray_pydantic_fsspec_tqdm(no_ray_child):
    phase = _phase(no_ray_child, "modules")
    # no dfei module even tried one (an optional import that is caught would be a hidden dependency)
    assert phase["ours"] == [] and phase["loaded"] == [], phase


def test_gpu_check_trains_scores_and_reports_on_cpu_without_ray(no_ray_child):
    phase = _phase(no_ray_child, "gpu_check")
    assert phase["rc"] == 0 and phase["ours"] == [] and phase["loaded"] == [], phase
    out = os.path.join(no_ray_child["out"], "check")
    res = json.load(open(os.path.join(out, "gpu_check.json")))
    assert set(res["variants"]) == {"sequential", "fused"}
    for name, r in res["variants"].items():
        assert r["steady_samples_per_s"] > 0 and r["epoch_s"] > 0, (name, r)
        assert r["samples"] == res["data"]["train_rows"], name  # the whole train split, once
        assert 0 < r["test_avg_auc"] < 1, (name, r["test_avg_auc"])
        assert 0 < r["peak_fraction"] < 1, (name, r["peak_fraction"])
    assert res["variants"]["fused"]["updates"] < res["variants"]["sequential"]["updates"]
    assert res["ratios"]["fused_vs_sequential"] > 0 and res["ratios"]["compile_vs_fused"] is None
    assert set(res["all_domain_steps"]) == {"sequential", "fused"} and res["ratios"][
        "fused_vs_sequential_all_domain_steps"] > 0
    assert res["machine"]["device"] == "cpu" and res["target"]["met"] is None  # the target is judged on a GPU only
    assert "| sequential |" in phase["stdout"] and "| fused |" in phase["stdout"]
    assert "the target is for GPUs, not judged on cpu" in phase["stdout"]
    # a second run reuses the generated data
    logged = []
    assert prepare_data(GpuCheckConfig(out=out, scale=0.0005), log=logged.append) == res["data"]["uri"]
    assert logged == []


def _cli():
    spec = importlib.util.spec_from_file_location("pipeline_gpu_check", os.path.join(ROOT, "pipelines", "gpu_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli().main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--scale", "--device", "--variants", "--epochs", "--batch-size", "--seed", "--workers"):
        assert f"{flag} " in text, flag
    assert "fused+compile" in text and "gpu_check.json" in text


@pytest.mark.parametrize("flags,message", [(["--variants", "sequential,jit"], "--variants must be"),
                                           (["--variants", "fused,fused"], "--variants must be"),
                                           (["--scale", "0"], "--scale must be > 0"),
                                           (["--epochs", "0"], "--epochs must be >= 1"),
                                           (["--device", "tpu"], "--device tpu")])
def test_gpu_check_refuses_a_bad_flag_with_exit_2(flags, message, tmp_path, capsys):
    assert _cli().main(["--out", str(tmp_path / "x"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything is written


def test_the_device_is_cuda_when_torch_sees_one_else_cpu(monkeypatch):
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(ConfigError, match="sees no CUDA device"):
        resolve_device("cuda")


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocess above: a shared 2-core machine
    yield
    torch.set_num_threads(threads)


def test_a_compiled_variant_reports_its_compile_time_and_an_eager_fallback(one_thread, tmp_path, monkeypatch):
    from dfei.bench import gpu_check
    from dfei.train.epoch import train_epoch

    calls = []

    def compiling_epoch(*args, options=None, **kwargs):  # train_epoch with the compile option
        compile = bool(options and options.compile)
        calls.append(compile)
        stats = train_epoch(*args, **kwargs)
        if not compile:
            return stats
        first = calls.count(True) == 1  # train_epoch reports the compile time in the call that compiled, 0 after
        return {**stats, "compile_s": 2.0 if first else 0.0, "compiled": False, "compile_error": "no C++ compiler"}

    monkeypatch.setattr(gpu_check, "train_epoch", compiling_epoch)
    logged = []
    res = gpu_check.run(GpuCheckConfig(out=str(tmp_path), scale=0.0005, device="cpu", epochs=2, workers=1,
                                       variants=("fused", "fused+compile"), all_domain_steps=1),
                       log=logged.append)
    assert calls == [False, False, True, True]  # compile is passed to the compiled variant only
    compiled = res["variants"]["fused+compile"]
    assert compiled["compile_s"] == 2.0 and compiled["compiled"] is False and len(compiled["epochs"]) == 2
    assert res["variants"]["fused"]["compile_s"] is None
    assert res["ratios"]["compile_vs_fused"] > 0 and res["ratios"]["fused_vs_sequential"] is None
    assert compiled["compile_error"] == "no C++ compiler"
    assert "| fused+compile |" in logged[-2] and "2.0 (failed: eager)" in logged[-2]
    assert "- fused+compile: torch.compile failed, so it ran eager: no C++ compiler" in logged[-2]
