"""Package structure a contributor relies on: no import circles; the model and serving side
(checkpoint loading, model building, export, the loader) works on a host without Ray."""
from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_graph() -> dict[str, set[str]]:
    """module -> the dfei modules it imports, at module level or inside functions (a lazy import
    still ties two modules together)."""
    modules = {}
    for directory, _, files in os.walk(os.path.join(ROOT, "dfei")):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(directory, f), ROOT)[:-3].replace(os.sep, ".")
                modules[rel.removesuffix(".__init__")] = os.path.join(directory, f)
    graph = {}
    for name, path in modules.items():
        deps = set()
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dfei"):
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                         for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("dfei")}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}  # state: 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                found.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_package_has_no_import_circle():
    graph = _import_graph()
    assert "dfei.train.worker" in graph and graph["dfei.train.worker"]  # the graph is real
    assert _cycles(graph) == []


# the layers, lowest first: a module imports from its own layer or a lower one, never a higher one
LAYERS = (
    ("dfei", "dfei.errors", "dfei.atomic", "dfei.signals", "dfei.cli", "dfei.ray_runtime"),  # foundations
    ("dfei.data", "dfei.models"),  # the data contract and encoders; the models (torch only)
    ("dfei.config",),  # a run's settings, validated against the registry's models
    ("dfei.eval",),  # metrics, significance, the report's tables and figures
    ("dfei.train",),  # one training run: driver, worker, epoch, optimizer, checkpoints
    ("dfei.inference", "dfei.serving"),  # batch scoring with Ray Data; export and in-process scoring
    ("dfei.experiments",),  # drivers of many runs: compare, tune sweeps, parity
    ("dfei.bench",),  # benchmarks measure everything below
)


def _layer(module: str) -> int:
    """The index in LAYERS of the deepest package that holds `module` (AssertionError if none)."""
    best = None
    for i, names in enumerate(LAYERS):
        for name in names:
            if module == name or (name != "dfei" and module.startswith(name + ".")):
                best = i
    assert best is not None, f"{module} is in no layer of LAYERS: add it"
    return best


def _upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps if _layer(d) > _layer(m))


def test_no_module_imports_from_a_higher_layer():
    graph = _import_graph()
    assert _layer("dfei.train.worker") == 4 and _layer("dfei.atomic") == 0
    assert _upward_imports(graph) == []


def test_the_layer_check_finds_an_upward_import():
    assert _upward_imports({"dfei.data.csv_converter": {"dfei.train.driver"}, "dfei.train.driver": {"dfei.data.spec"}}) \
        == ["dfei.data.csv_converter -> dfei.train.driver"]


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_a_checkpoint_loads_and_exports_on_a_host_without_ray(no_ray_child):
    """In tests/no_ray_child.py's process (its `serving` phase: any `import ray` fails there), the
    tiny checkpoint of tests/conftest.py exports to TorchScript, and the artifact loads and scores."""
    phase = no_ray_child["phases"]["serving"]
    assert phase["error"] is None, phase["error"]
    assert len(phase["scores"]) == 2 and all(0 < p < 1 for p in phase["scores"]), phase["scores"]
    assert phase["max_abs_error_vs_eager"] <= 1e-5
    assert phase["loaded"] == [] and phase["ours"] == []  # no ray module, and no dfei module even tried one


# the only modules of dfei/models and dfei/serving that may import Ray: the Serve application
RAY_ALLOWED = {"dfei/serving/app.py", "dfei/serving/launch.py"}


def test_models_and_serving_import_ray_only_in_the_serve_application():
    found = []
    for package in ("models", "serving"):
        for directory, _, files in os.walk(os.path.join(ROOT, "dfei", package)):
            for f in (f for f in files if f.endswith(".py")):
                path = os.path.join(directory, f)
                with open(path) as fh:
                    tree = ast.parse(fh.read())
                names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names] + [
                    n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
                if any(n == "ray" or n.startswith("ray.") for n in names):
                    found.append(os.path.relpath(path, ROOT))
    assert "dfei/serving/app.py" in found  # the check sees imports
    assert set(found) <= RAY_ALLOWED, sorted(set(found) - RAY_ALLOWED)
