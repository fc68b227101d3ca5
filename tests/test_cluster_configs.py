"""The files in cluster/ parse as YAML and carry what their tools require."""
from __future__ import annotations

import os

import yaml

CLUSTER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster")


def load(name: str) -> dict:
    with open(os.path.join(CLUSTER, name)) as f:
        text = f.read()
    assert "EDIT:" in text, f"{name} must say what to edit"
    return yaml.safe_load(text)


def test_cluster_launcher_config():
    cfg = load("gpu-cluster.yaml")
    assert cfg["head_node_type"] in cfg["available_node_types"]
    assert any("gpu" in name for name in cfg["available_node_types"])
    assert any("pip install" in c and "-e" in c for c in cfg["setup_commands"])


def test_kuberay_rayjob_manifest():
    job = load("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert "pipelines/train.py" in job["spec"]["entrypoint"]
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert workers[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]


def test_runtime_env():
    env = load("runtime_env.yaml")
    assert env["working_dir"] == "." and env["env_vars"]["RAY_USAGE_STATS_ENABLED"] == "0"


def _serve_app(config: dict) -> dict:
    from dfei.serving.app import Scorer, ScoringConfig, ServeSettings

    (app,) = config["applications"]
    assert app["import_path"] == "dfei.serving.app:build_app" and app["route_prefix"] == "/"
    assert ServeSettings.model_validate(app["args"]).model is None  # the model is in the user_config alone
    (scorer,) = app["deployments"]
    assert scorer["name"] == Scorer.name  # overrides the deployment that exists
    ScoringConfig.model_validate(scorer["user_config"])  # what reconfigure reads, every key known
    return app


def test_serve_config_deploys_the_scoring_application():
    _serve_app(load("serve_config.yaml"))


def test_kuberay_rayservice_manifest():
    service = load("rayservice.yaml")
    assert service["apiVersion"] == "ray.io/v1" and service["kind"] == "RayService"
    app = _serve_app(yaml.safe_load(service["spec"]["serveConfigV2"]))
    assert app == _serve_app(load("serve_config.yaml"))
    assert service["spec"]["rayClusterConfig"]["rayVersion"] == "2.60.0"
