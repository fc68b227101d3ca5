"""One Python process as a bare GPU machine or a serving host has it, for tests/test_no_ray.py,
tests/test_structure.py and tests/train/test_config.py (one process, not one per test: each imports
torch). Run by the session fixture `no_ray_child` (tests/conftest.py):

    python tests/no_ray_child.py RESULT.json CHECKPOINT OUT

A blocker installed first makes every import of Ray, pydantic, fsspec, tqdm, MLflow or TensorBoard
(or a submodule) fail as if the package were not installed, and importlib.util.find_spec answer None
for it, as it does for a missing package (torch._dynamo probes tqdm that way); each import attempt is
recorded with the file that made it and the phase it came in (torch.hub tries tqdm and does without).
The phases, in order:

  blocker    the blocker blocks (import ray.train fails, find_spec('tqdm') is None)
  fs         dfei.data.fs resolving an s3:// URI tries fsspec: the attempt is charged to dfei/data/fs.py
  modules    the plain engine modules (MODULES) import
  gpu_check  pipelines/gpu_check.py trains, scores and reports on CPU (OUT/gpu_check.json, its stdout kept)
  serving    only Ray blocked now (a serving host has pydantic): the model, serving, checkpoint and config
             modules import, and CHECKPOINT exports to TorchScript and loads and scores

RESULT.json: per phase {"error": traceback or None, "ours": attempts by a file under dfei/ or
pipelines/, "loaded": blocked modules in sys.modules at the phase's end, ...}.
"""
import contextlib
import importlib
import importlib.util
import io
import json
import os
import runpy
import sys
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL_BLOCKED = ("ray", "pydantic", "fsspec", "tqdm", "mlflow", "tensorboard", "tensorboardX")
MODULES = ("dfei.models", "dfei.train.epoch", "dfei.train.step", "dfei.train.optim", "dfei.data.ingest", "dfei.data.synthetic",
           "dfei.bench.measure", "dfei.bench.gpu_check")
SERVING_MODULES = ("dfei.models", "dfei.serving.export", "dfei.serving.loader", "dfei.serving.endpoint",
                   "dfei.serving.protocol", "dfei.train.checkpoint", "dfei.config")
BLOCKED = list(ALL_BLOCKED)
ATTEMPTS: list[tuple[str, str, str]] = []  # (phase, module, file that imported it)
PHASE = ["start"]


def blocked(name: str) -> bool:
    return name.split(".")[0] in BLOCKED


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if not blocked(name):
            return None
        frame = sys._getframe(1)
        while frame.f_code.co_filename.startswith("<frozen"):
            frame = frame.f_back
        ATTEMPTS.append((PHASE[0], name, frame.f_code.co_filename))
        raise ModuleNotFoundError(f"No module named {name!r} (blocked by tests/no_ray_child.py)", name=name)


_find_spec = importlib.util.find_spec


def find_spec(name, package=None):
    if blocked(name) and "." not in name:
        return None
    return _find_spec(name, package)


sys.meta_path.insert(0, Blocker())
importlib.util.find_spec = find_spec
for loaded_name in list(sys.modules):
    if blocked(loaded_name):
        del sys.modules[loaded_name]
sys.path.insert(0, ROOT)


def blocker_phase() -> dict:
    try:
        import ray.train  # noqa: F401
        message = None
    except ImportError as err:
        message = str(err)
    return {"blocked": message, "tqdm_spec": repr(importlib.util.find_spec("tqdm"))}


def fs_phase() -> dict:
    from dfei.data.fs import resolve

    try:
        resolve("s3://bucket/x")
    except ImportError:
        pass
    return {}


def modules_phase() -> dict:
    for name in MODULES:
        importlib.import_module(name)
    return {}


def gpu_check_phase(out: str) -> dict:
    stdout = io.StringIO()
    mod = runpy.run_path(os.path.join(ROOT, "pipelines", "gpu_check.py"), run_name="gpu_check")
    with contextlib.redirect_stdout(stdout):
        rc = mod["main"](["--out", out, "--device", "cpu", "--scale", "0.0005", "--workers", "1",
                          "--variants", "sequential,fused", "--all-domain-steps", "2"])
    return {"rc": rc, "stdout": stdout.getvalue()}


def serving_phase(checkpoint: str, out: str) -> dict:
    BLOCKED[:] = ["ray"]  # a serving host: no Ray, the rest installed
    for name in SERVING_MODULES:
        importlib.import_module(name)
    import numpy as np

    from dfei.serving.export import export_checkpoint
    from dfei.serving.loader import ServingModel

    path = os.path.join(out, "m.pt")
    meta = export_checkpoint(checkpoint, "torchscript", path, log=lambda *a: None)
    p = ServingModel.load(path).predict(np.array([[1, 2], [3, 4]]), np.array([3, 7]))
    return {"scores": p.tolist(), "max_abs_error_vs_eager": meta["parity"]["max_abs_error_vs_eager"]}


def main(result_path: str, checkpoint: str, out: str) -> None:
    phases = {"blocker": blocker_phase, "fs": fs_phase, "modules": modules_phase,
              "gpu_check": lambda: gpu_check_phase(os.path.join(out, "check")),
              "serving": lambda: serving_phase(checkpoint, out)}
    results = {}
    for name, phase in phases.items():
        PHASE[0] = name
        try:
            results[name] = {**phase(), "error": None}
        except Exception:
            results[name] = {"error": traceback.format_exc()}
        results[name]["ours"] = [(m, f) for p, m, f in ATTEMPTS if p == name and f.startswith(
            (os.path.join(ROOT, "dfei") + os.sep, os.path.join(ROOT, "pipelines") + os.sep))]
        results[name]["attempts"] = sorted({(m, f) for p, m, f in ATTEMPTS if p == name})
        results[name]["loaded"] = sorted(k for k in sys.modules if blocked(k) and sys.modules[k] is not None)
    with open(result_path, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
