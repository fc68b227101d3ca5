"""The plain engine runs where only torch, numpy, pyarrow, pandas and scikit-learn are installed (a
bare GPU machine): with Ray, pydantic, fsspec, tqdm, MLflow and TensorBoard unimportable, the
model, engine, optimizer, ingest, generator and benchmark modules import and pipelines/gpu_check.py
trains, scores and reports on the device it is given."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from dfei.bench.gpu_check import GpuCheckConfig, prepare_data, resolve_device
from dfei.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BLOCKED = ("ray", "pydantic", "fsspec", "tqdm", "mlflow", "tensorboard", "tensorboardX")

# installed first in the child: every import of a blocked package (or a submodule) fails as if it were
# not installed, and importlib.util.find_spec answers None for it, as it does for a missing package
# (torch._dynamo probes tqdm that way); each import attempt is recorded with the file that made it
# (torch.hub tries tqdm and does without)
BLOCKER = f"""
import importlib.util
import sys
BLOCKED = {BLOCKED!r}
ATTEMPTS = []

def blocked(name):
    return name.split(".")[0] in BLOCKED

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if not blocked(name):
            return None
        frame = sys._getframe(1)
        while frame.f_code.co_filename.startswith("<frozen"):
            frame = frame.f_back
        ATTEMPTS.append((name, frame.f_code.co_filename))
        raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by tests/test_no_ray.py)", name=name)

_find_spec = importlib.util.find_spec

def find_spec(name, package=None):
    if blocked(name) and "." not in name:
        return None
    return _find_spec(name, package)

sys.meta_path.insert(0, Blocker())
importlib.util.find_spec = find_spec
for name in list(sys.modules):
    if blocked(name):
        del sys.modules[name]
"""

MODULES = ("dfei.models", "dfei.train.epoch", "dfei.train.optim", "dfei.data.ingest", "dfei.data.synthetic",
           "dfei.bench.measure", "dfei.bench.gpu_check")


def _run_blocked(body: str, timeout: float = 120) -> subprocess.CompletedProcess:
    code = BLOCKER + "\n" + body + (
        "\nloaded = sorted(k for k in sys.modules if k.split('.')[0] in BLOCKED and sys.modules[k] is not None)"
        "\nassert not loaded, loaded"
        "\nprint('ATTEMPTS', sorted(set(ATTEMPTS)))"
        f"\nours = [(n, f) for n, f in ATTEMPTS if f.startswith(({ROOT + '/dfei/'!r}, {ROOT + '/pipelines/'!r}))]"
        "\nassert not ours, f'dfei imports a package a bare GPU machine lacks: {ours}'\n")
    # one torch thread: on a shared 2-core machine, two OpenMP threads beside another busy process
    # made the plain loop ~100x slower (44 s vs 0.4 s for this test's epoch, measured)
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_the_blocker_blocks_and_names_a_dfei_module_that_tried():
    proc = _run_blocked("try:\n    import ray.train\nexcept ImportError as e:\n    print('blocked', e)\n"
                        "assert importlib.util.find_spec('tqdm') is None\n")
    assert proc.returncode == 0 and "blocked" in proc.stdout, proc.stderr[-3000:]
    # dfei.data.fs imports fsspec only for a URI: the attempt fails and is charged to dfei/data/fs.py
    proc = _run_blocked("from dfei.data.fs import resolve\ntry:\n    resolve('s3://bucket/x')\n"
                        "except ImportError:\n    pass\n")
    assert proc.returncode == 1 and "dfei imports a package a bare GPU machine lacks" in proc.stderr
    assert "dfei/data/fs.py" in proc.stderr


def test_the_plain_engine_modules_import_without_ray_pydantic_fsspec_tqdm():
    proc = _run_blocked("import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in MODULES))
    # no dfei module even tried one (an optional import that is caught would be a hidden dependency)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_gpu_check_trains_scores_and_reports_on_cpu_without_ray(tmp_path):
    out = tmp_path / "check"
    body = ("import runpy\n"
            f"mod = runpy.run_path({os.path.join(ROOT, 'pipelines', 'gpu_check.py')!r}, run_name='gpu_check')\n"
            f"rc = mod['main'](['--out', {str(out)!r}, '--device', 'cpu', '--scale', '0.0005', '--workers', '1',"
            " '--variants', 'sequential,fused', '--all-domain-steps', '2'])\n"
            "assert rc == 0, rc\n")
    proc = _run_blocked(body, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.load(open(out / "gpu_check.json"))
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
    assert "| sequential |" in proc.stdout and "| fused |" in proc.stdout
    assert "the target is for GPUs, not judged on cpu" in proc.stdout
    # a second run reuses the generated data
    logged = []
    assert prepare_data(GpuCheckConfig(out=str(out), scale=0.0005), log=logged.append) == res["data"]["uri"]
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
