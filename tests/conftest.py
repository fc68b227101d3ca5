"""Session fixtures: one Ray cluster for the whole session, an S3-compatible endpoint on loopback,
small synthetic datasets made here.

The cluster is a real `ray start --head` (ephemeral ports, usage stats off, token authentication
on, as Ray 2.60 defaults), so the same session serves in-process tests (`ray.init(address=...)`)
and `ray job submit`. At the end only the processes this session started are stopped: `ray stop`
would also kill any other Ray on the machine.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The S3 endpoint's address must be in the environment before the cluster starts, so Ray's
# workers inherit it; the server itself starts only if an S3 test runs (fixture `s3_endpoint`).
S3_PORT = free_port()
os.environ.update({
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "RAY_AUTH_MODE": "token",
    # this session's own token: `ray start` refuses token mode without one, and the user's
    # ~/.ray/auth_token (if any) is neither needed nor touched
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",  # as dfei.train.driver.init_ray sets: runs end sooner
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
})
# One torch (OpenMP) thread in this process and every process it starts (Ray's workers set their own
# from the run's config): on this 2-core machine, shared with other jobs, two threads wait for each
# other whenever one is preempted: tests/models/test_registry.py's fused-steps tests took over 300 s
# with 2 threads and 47 s with 1 beside another test suite (16 s on an idle machine). Set in the
# environment before torch is imported; OMP_NUM_THREADS given to pytest is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:  # imported before this file (a plugin): the environment came too late
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
RAY_BIN = os.path.join(os.path.dirname(sys.executable), "ray")


def _pids() -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _descendants(roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, []))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except (OSError, IndexError):
        return False


def _kill(pids: set[int]) -> None:
    # SIGTERM, then SIGKILL for what is left after 3 s: the GCS, the raylet and the runtime-env agent
    # outlived a 10 s grace period here every time, so waiting longer only delayed the session's end
    for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)


def _ray_start(temp_dir: str) -> tuple[subprocess.CompletedProcess, set[int], int, int]:
    """`ray start --head` on fresh ports: (the command's result, the processes it started, GCS and
    dashboard ports)."""
    gcs, dashboard = free_port(), free_port()
    cmd = [RAY_BIN, "start", "--head", "--disable-usage-stats", "--num-cpus=2", "--node-ip-address=127.0.0.1",
           f"--port={gcs}", f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1",
           f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
           f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
           f"--metrics-export-port={free_port()}", f"--object-store-memory={768 << 20}", f"--temp-dir={temp_dir}"]
    before = _pids()
    # RAY_ADDRESS in the cluster's own environment: its processes (Ray Train's PlacementGroupCleaner)
    # find their cluster by it, not by a scan that also finds any other Ray on the machine
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "RAY_ADDRESS": f"127.0.0.1:{gcs}"})
    # this cluster's processes: new since `ray start` and naming its temp dir or holding this
    # session's token (the Ray client server names neither dir nor session); another Ray on the
    # machine may have started processes meanwhile: they are not ours to stop
    token = f"RAY_AUTH_TOKEN={os.environ['RAY_AUTH_TOKEN']}".encode()
    started = {pid for pid in _pids() - before if temp_dir in _cmdline(pid) or token in _environ(pid)}
    return proc, started, gcs, dashboard


@pytest.fixture(scope="session")
def ray_cluster():
    """A head node started with `ray start --head`; yields its GCS and dashboard addresses. A start
    that fails is tried once more (its processes stopped first): on a loaded machine the raylet can
    miss `ray start`'s fixed 30 s to register with the GCS, and every Ray test of the session would fail."""
    started: set[int] = set()
    try:
        for attempt in range(2):
            temp_dir = tempfile.mkdtemp(prefix="dfei-ray-", dir="/tmp")  # short: Ray's socket paths are limited
            proc, new, gcs, dashboard = _ray_start(temp_dir)
            started |= new
            if proc.returncode == 0:
                break
            if attempt == 1:
                raise RuntimeError(f"ray start failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
            _kill(_descendants(new))
        yield {"address": f"127.0.0.1:{gcs}", "dashboard": f"http://127.0.0.1:{dashboard}", "temp_dir": temp_dir}
    finally:
        _kill(_descendants(started))


@pytest.fixture(scope="session")
def ray_session(ray_cluster):
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_cluster["address"], log_to_driver=True, configure_logging=False)
    yield ray
    ray.shutdown()


def _forbid_ray_start(monkeypatch) -> None:
    import ray

    def started(*args, **kwargs):  # pytest's Failed is a BaseException: no `except Exception` hides it
        pytest.fail("Ray was started: the input was not refused before Ray starts")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", started)


@pytest.fixture
def ray_must_not_start(monkeypatch):
    """For a command run in this process that must refuse its input before Ray starts: this process
    looks as a new one does (no Ray initialised, no RAY_ADDRESS: dfei.ray_runtime.init_ray would start
    an embedded Ray), and starting Ray fails the test."""
    _forbid_ray_start(monkeypatch)


@pytest.fixture
def ray_start_guard():
    """ray_must_not_start for a part of a test: `with ray_start_guard(): ...`."""
    @contextlib.contextmanager
    def guard():
        with pytest.MonkeyPatch.context() as monkeypatch:
            _forbid_ray_start(monkeypatch)
            yield

    return guard


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1 (never the internet); yields its URL."""
    url = os.environ["AWS_ENDPOINT_URL"]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(S3_PORT)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", S3_PORT), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto S3 server did not start")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


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


@pytest.fixture(scope="session")
def daily_data(tmp_path_factory) -> dict[str, str]:
    """Two days of the `public` world at scale 0.002: day 0 without domain B6, day 1 with all six."""
    from dfei.data.synthetic import generate

    root = tmp_path_factory.mktemp("daily")
    day0 = str(root / "day0")
    day1 = str(root / "day1")
    generate("public", 0.002, seed=0, out=day0, workers=1, log=lambda *a: None,
             domains=["B1", "B2", "B3", "B4", "B5"])
    generate("public", 0.002, seed=0, out=day1, workers=1, log=lambda *a: None, day=1)
    return {"day0": day0, "day1": day1}


@pytest.fixture(scope="session")
def tracked_run(ray_session, daily_data, tmp_path_factory) -> dict:
    """A 2-epoch run on day 0 with TensorBoard and an MLflow sqlite store: the tracking, export and
    incremental-training tests all start from it."""
    from dfei.config import TrainConfig
    from dfei.train.driver import run_training

    root = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{root}/mlflow.db"
    cfg = TrainConfig(data=daily_data["day0"], out=str(root / "run"), epochs=2, patience=2, seed=0,
                      mlflow=uri, mlflow_experiment="tests")
    metrics = run_training(cfg, log=lambda *a: None)
    return {"cfg": cfg, "metrics": metrics, "mlflow": uri}


def write_tiny_checkpoint(path: str) -> str:
    """A checkpoint of an untrained small DFEI (2 features, domain ids 3 and 7), written without Ray."""
    import torch

    from dfei.data.spec import DatasetSpec, Domain, Feature
    from dfei.train.checkpoint import TrainState, save_checkpoint
    from dfei.models.build import model_from_config
    from dfei.config import TrainConfig

    spec = DatasetSpec(name="t", label="label", domains=[Domain(3, "A"), Domain(7, "B")],
                       features=[Feature("user", 20), Feature("item", 30)])
    cfg = TrainConfig(data="/d", tower_dims=[16, 8], tower_dropouts=[0.0, 0.0], k=4)
    torch.manual_seed(0)
    save_checkpoint(path, model_from_config(cfg, spec).state_dict(), None, TrainState().to_json(cfg, spec))
    return path


@pytest.fixture
def tiny_checkpoint(tmp_path) -> str:
    """A checkpoint of an untrained small DFEI (2 features, domain ids 3 and 7), written without Ray."""
    return write_tiny_checkpoint(str(tmp_path / "ckpt"))


@pytest.fixture(scope="session")
def no_ray_child(tmp_path_factory) -> dict:
    """tests/no_ray_child.py run once: a process where Ray, pydantic, fsspec, tqdm, MLflow and
    TensorBoard cannot be imported (then only Ray), as a bare GPU machine or a serving host has it.
    Yields its results per phase (see that file) and the folders: "out" (gpu_check.json under
    out/check), "checkpoint" (the tiny checkpoint it exported)."""
    root = tmp_path_factory.mktemp("no-ray")
    checkpoint = write_tiny_checkpoint(str(root / "ckpt"))
    result = root / "result.json"
    # one torch thread: on a shared 2-core machine, two OpenMP threads beside another busy process
    # made the plain loop ~100x slower (44 s vs 0.4 s for gpu_check's epoch, measured)
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "OMP_NUM_THREADS": "1"}
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, os.path.join(here, "no_ray_child.py"), str(result), checkpoint, str(root)],
                          cwd=os.path.dirname(here), capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and result.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"phases": json.loads(result.read_text()), "out": str(root), "checkpoint": checkpoint}
