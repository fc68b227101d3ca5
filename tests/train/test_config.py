from __future__ import annotations

import pytest

from dfei.train.config import TrainConfig, load_config


def test_yaml_values_then_cli_overrides(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("data: /d\nalpha: 0.5\nk: 16\nnum-workers: 2\n")
    cfg = load_config(str(f), {"alpha": 0.7, "k": None, "epochs": None})
    assert (cfg.data, cfg.alpha, cfg.k, cfg.num_workers, cfg.epochs) == ("/d", 0.7, 16, 2, 10)


def test_bad_config_values_are_named(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("data: /d\nalfa: 0.5\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['alfa'\]"):
        load_config(str(f), {})
    with pytest.raises(ValueError, match="alpha must be in"):
        TrainConfig(alpha=1.2)
    with pytest.raises(ValueError, match="exhaustion"):
        TrainConfig(exhaustion="loop")


def test_yaml_numbers_written_without_a_dot_are_numbers(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("data: /d\nlr: 1e-3\nl2: 1e-6\nepochs: 2\n")  # YAML 1.1 reads 1e-3 as a string
    cfg = load_config(str(f), {})
    assert cfg.lr == 1e-3 and cfg.l2 == 1e-6 and cfg.epochs == 2
    f.write_text("data: /d\nlr: fast\n")
    with pytest.raises(ValueError, match=r"lr must be a number \(float\), got 'fast'"):
        load_config(str(f), {})
    with pytest.raises(ValueError, match="eval_batch_size"):
        TrainConfig(eval_batch_size=0)


@pytest.mark.parametrize("values,message", [
    ({"tower_dims": "128,64"}, r"tower_dims must be a non-empty list of positive integers .* got '128,64'"),
    ({"tower_dims": [128, 64]}, r"tower_dropouts has 3 rate\(s\) for 2 tower layer\(s\) \[128, 64\]"),
    ({"tower_dropouts": [0.1, 1.5, 0.3]}, r"tower_dropouts must be a list of rates in \[0, 1\)"),
    ({"lr": float("inf")}, "lr must be a finite number > 0, got inf"),
    ({"embed_dim": 0}, "embed_dim must be >= 1"),
    ({"cpus_per_worker": 0}, "cpus_per_worker must be > 0"),
])
def test_settings_that_would_fail_inside_a_worker_are_refused_at_once(values, message):
    from dfei.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        TrainConfig(data="/d", **values)
