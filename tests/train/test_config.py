from __future__ import annotations

import argparse
import importlib.util
import os

import pytest

from dfei.errors import ConfigError
from dfei.config import TrainConfig, add_config_flags, config_from_args, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_yaml_values_then_cli_overrides(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("data: /d\nalpha: 0.5\nk: 16\nnum-workers: 2\n")
    cfg = load_config(str(f), {"alpha": 0.7, "k": None, "epochs": None})
    assert (cfg.data, cfg.alpha, cfg.k, cfg.num_workers, cfg.epochs) == ("/d", 0.7, 16, 2, 10)


def test_yaml_numbers_written_without_a_dot_are_numbers(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("data: /d\nlr: 1e-3\nl2: 1e-6\nepochs: 2\nuse_gpu: no\n")  # YAML 1.1 reads 1e-3 as a string
    cfg = load_config(str(f), {})
    assert cfg.lr == 1e-3 and cfg.l2 == 1e-6 and cfg.epochs == 2 and cfg.use_gpu is False


@pytest.mark.parametrize("line,message", [
    ("epochs: 2.5", r"run\.yaml: epochs = 2\.5: Input should be a valid integer, got a number with a fractional part"),
    ('use_gpu: "no"', r"run\.yaml: use_gpu = 'no': Input should be a valid boolean"),
    ('tower_dims: "128,64"', r"run\.yaml: tower_dims = '128,64': Input should be a valid list"),
    ("tower_dims: [128, 0, 32]", r"run\.yaml: tower_dims\[1\] = 0: Input should be greater than or equal to 1"),
    ("epochs: true", r"run\.yaml: epochs = True: expected a number, got a boolean"),
    ("lr: fast", r"run\.yaml: lr = 'fast': Input should be a valid number"),
    ("lr: .inf", r"run\.yaml: lr = inf: Input should be a finite number"),
    ("alpha: 1.2", r"run\.yaml: alpha = 1\.2: Input should be less than or equal to 1"),
    ("exhaustion: loop", r"run\.yaml: exhaustion = 'loop': Input should be 'exhaust' or 'cycle'"),
    ("data: 7", r"run\.yaml: data = 7: Input should be a valid string"),
    ("alfa: 0.5\nbatchsize: 3", r"run\.yaml: unknown key\(s\) \['alfa', 'batchsize'\]; valid keys: \[.*'alpha'"),
    ("model: dfie", r"run\.yaml: model must be one of \[.*'dfei'.*\], got 'dfie'"),
    ("seed: -1", r"run\.yaml: seed = -1: Input should be greater than or equal to 0"),
    ('out: ""', r"run\.yaml: out = '': String should have at least 1 character"),
    ('init_from: ""\nnew_domain_from: B1', r"new_domain_from \('B1'\) needs init_from"),
])
def test_each_bad_yaml_value_is_an_error_naming_key_value_and_expectation(tmp_path, line, message):
    f = tmp_path / "run.yaml"
    f.write_text(f"{line}\n" if line.startswith("data:") else f"data: /d\n{line}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(str(f), {})


@pytest.mark.parametrize("values,message", [
    ({"tower_dims": [128, 64]}, r"tower_dropouts has 3 rate\(s\) for 2 tower layer\(s\) \[128, 64\]"),
    ({"tower_dropouts": [0.1, 1.5, 0.3]}, r"tower_dropouts\[1\] = 1\.5: Input should be less than 1"),
    ({"lr": float("inf")}, "lr = inf: Input should be a finite number"),
    ({"embed_dim": 0}, "embed_dim = 0: Input should be greater than or equal to 1"),
    ({"cpus_per_worker": 0}, "cpus_per_worker = 0: Input should be greater than 0"),
    ({"eval_batch_size": 0}, "eval_batch_size = 0"),
    ({"mode": "fused", "embedding_update": "dense"}, "mode fused needs embedding_update lazy"),
    ({"new_domain_from": "B1"}, r"new_domain_from \('B1'\) needs init_from"),
])
def test_settings_that_would_fail_inside_a_worker_are_refused_at_once(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(data="/d", **values)


def test_older_configs_load_renamed_and_removed_keys():
    """A checkpoint's state.json from before the rename of shuffle_rows and the removal of fail_once_at."""
    cfg = TrainConfig.from_dict({"data": "/d", "shuffle_rows": 1024, "fail_once_at": None})
    assert cfg.shuffle_buffer_rows == 1024
    with pytest.raises(ConfigError, match="fail_once_at"):  # in a user's file: named
        TrainConfig.from_dict({"data": "/d", "fail_once_at": {"epoch": 1}})
    # in a checkpoint's recorded config, whatever its value: the checkpoint stays usable
    assert TrainConfig.from_dict({"data": "/d", "fail_once_at": {"epoch": 1}}, legacy=True).data == "/d"


def test_local_paths_are_made_absolute_once_uris_are_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(data="d", out="runs/x", storage_path="store", init_from="ckpt/epoch_0001")
    assert (cfg.data, cfg.out, cfg.storage_path, cfg.init_from) == (
        str(tmp_path / "d"), str(tmp_path / "runs" / "x"), str(tmp_path / "store"),
        str(tmp_path / "ckpt" / "epoch_0001"))
    remote = TrainConfig(data="s3://b/d", storage_path="gs://b/s", init_from="s3://b/c")
    assert (remote.data, remote.storage_path, remote.init_from) == ("s3://b/d", "gs://b/s", "s3://b/c")
    # MLflow stores: a Tune trial logs from its own directory, so relative stores are resolved here too
    assert TrainConfig(mlflow="sqlite:///runs/m.db").mlflow == f"sqlite:///{tmp_path}/runs/m.db"
    assert TrainConfig(mlflow="mlruns").mlflow == f"file://{tmp_path}/mlruns"
    assert TrainConfig(mlflow="http://host:5000").mlflow == "http://host:5000"
    assert TrainConfig().out == str(tmp_path / "runs" / "dfei")  # the default too


def test_replace_validates():
    cfg = TrainConfig(data="/d")
    assert cfg.replace(k=8).k == 8 and cfg.k == 32
    with pytest.raises(ConfigError, match="k = 0"):
        cfg.replace(k=0)


def test_flags_are_derived_from_the_fields(tmp_path):
    p = argparse.ArgumentParser()
    add_config_flags(p)
    args = vars(p.parse_args(["--data", "/d", "--tower-dims", "64,32", "--tower-dropouts", "0,0.5", "--use-gpu",
                              "--no-tensorboard", "--epochs", "3", "--mode", "fused"]))
    cfg = config_from_args(args)
    assert (cfg.tower_dims, cfg.tower_dropouts, cfg.use_gpu, cfg.tensorboard, cfg.epochs, cfg.mode) == (
        [64, 32], [0.0, 0.5], True, False, 3, "fused")
    assert config_from_args(vars(p.parse_args(["--data", "/d"]))) == TrainConfig(data="/d")  # absent: defaults
    # a flag turns off what a --config file (e.g. a GPU sweep's best.json) turned on
    gpu_sweep = tmp_path / "best.yaml"
    gpu_sweep.write_text("data: /d\nuse_gpu: true\ntensorboard: false\n")
    assert config_from_args(vars(p.parse_args([])), str(gpu_sweep)).use_gpu is True
    cfg = config_from_args(vars(p.parse_args(["--no-use-gpu", "--tensorboard"])), str(gpu_sweep))
    assert (cfg.use_gpu, cfg.tensorboard) == (False, True)
    with pytest.raises(ConfigError, match="--data is required"):
        config_from_args(vars(p.parse_args([])))
    with pytest.raises(SystemExit):
        p.parse_args(["--tower-dims", "64,x"])


# each CLI's own flags, as before TrainConfig's flags were derived (they must all still be there)
OWN_FLAGS = {"train": ["--config"], "tune": ["--alpha", "--k", "--out", "--search", "--scheduler", "--num-samples",
                                             "--workers-per-trial", "--max-concurrent", "--resume", "--config"],
             "compare": ["--models", "--ablation", "--seeds", "--out", "--config"],
             "parity": ["--variants", "--seeds", "--out", "--config"]}


@pytest.mark.parametrize("script,excluded", [
    ("train", ()), ("tune", ("alpha", "k", "out", "num_workers")), ("compare", ("model", "seed", "out")),
    ("parity", ("seed", "out")),
])
def test_every_cli_lists_every_config_flag(script, excluded, capsys):
    spec = importlib.util.spec_from_file_location(f"pipeline_{script}", os.path.join(ROOT, "pipelines", f"{script}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    flags = [("--no-" if name == "tensorboard" else "--") + name.replace("_", "-")
             for name in TrainConfig.model_fields if name not in excluded]
    missing = [f for f in flags + OWN_FLAGS[script] if f"{f} " not in text and not text.count(f + "\n")]
    assert not missing, f"{script}.py --help lacks {missing}"


def test_models_serving_and_config_import_without_ray(no_ray_child):
    """dfei.models, dfei.serving (export and loader) and the checkpoint/config modules they use must
    not need Ray: a serving host has no Ray. (tests/no_ray_child.py's `serving` phase imports them
    in a process where any `import ray` fails.)"""
    phase = no_ray_child["phases"]["serving"]
    assert phase["error"] is None, phase["error"]
    assert phase["loaded"] == []  # no ray module


@pytest.mark.parametrize("text, message", [
    ("data: /d\nlr: 0.01\nepochs: 2\nlr: 0.001\n", "key 'lr' is set twice (lines 2 and 4)"),
    ("data: /d\nbatch-size: 256\nbatch_size: 512\n",
     "keys 'batch-size' and 'batch_size' set one setting, batch_size (lines 2 and 3)"),
    ('{"data": "/d", "epochs": 2, "epochs": 3}', "key 'epochs' is set twice (line 1, columns 16 and 29)"),  # JSON
])
def test_a_setting_given_twice_in_a_config_file_is_refused_naming_both_lines(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"c\.yaml: " + __import__("re").escape(message)):
        load_config(str(path), {})


def test_yaml_merge_keys_may_be_overridden_and_nested_names_keep_their_spelling(tmp_path):
    """`<<: *anchor` then a key of the anchor: YAML's override, not a duplicate; below the top level
    `-` and `_` are different names (e.g. two --variants `dfei-a` and `dfei_a`)."""
    from dfei.config import read_yaml

    path = tmp_path / "c.yaml"
    path.write_text("base: &b {epochs: 2, lr: 0.01}\nrun:\n  <<: *b\n  lr: 0.001\n"
                    "variants: {dfei-a: {alpha: 0.5}, dfei_a: {alpha: 0.7}}\n")
    loaded = read_yaml(str(path), "--config")
    assert loaded["run"] == {"epochs": 2, "lr": 0.001} and set(loaded["variants"]) == {"dfei-a", "dfei_a"}


def test_a_config_key_the_pipeline_sets_per_run_is_refused(tmp_path):
    """compare.py sets model, seed and out for each run: a --config value for them would be replaced."""
    import argparse

    from dfei.config import add_config_flags, config_from_args

    path = tmp_path / "c.yaml"
    path.write_text("data: /d\nmodel: mlp\nseed: 3\n")
    parser = argparse.ArgumentParser()
    add_config_flags(parser, exclude=("model", "seed", "out"))
    with pytest.raises(ConfigError, match=r"c\.yaml: the config sets model, seed, which compare.py sets for every run "
                                          r"itself; give --models, --seeds instead"):
        config_from_args(vars(parser.parse_args([])), str(path), reserved={"model": "--models", "seed": "--seeds"},
                         who="compare.py")
