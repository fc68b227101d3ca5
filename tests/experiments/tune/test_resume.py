"""What a resumed sweep must match: its settings, its data; a moved sweep folder's paths. No Ray."""
from __future__ import annotations

import dataclasses

import pytest

from dfei.data.spec import load_spec
from dfei.errors import ConfigError
from dfei.config import TrainConfig
from dfei.experiments.tune.resume import check_data, check_resume, data_fingerprint, rebase
from dfei.experiments.tune.space import ResourcePlan, SearchSpec, parse_values

SPEC = SearchSpec(parse_values("0.5,0.9", "alpha", float), parse_values("32", "k", int))
PLAN = ResourcePlan(concurrency=1, cpus_per_worker=1.0, workers_per_trial=1, use_gpu=False)


def test_the_flags_of_a_resume_must_be_the_sweeps(tmp_path):
    base = TrainConfig(data=str(tmp_path / "d"), epochs=3, lr=1e-3)
    assert check_resume(base, SPEC, PLAN, {"epochs": 3}, {"alpha": SPEC.alpha}) == base  # the same: fine
    with pytest.raises(ConfigError) as err:
        check_resume(base, SPEC, PLAN, {"epochs": 5, "lr": 0.01},
                     {"alpha": parse_values("0.5", "alpha", float), "workers_per_trial": 2})
    text = str(err.value)
    for named in ("--epochs (the sweep: 3, this command: 5)", "--lr (the sweep: 0.001, this command: 0.01)",
                  "--alpha (the sweep: 0.5,0.9, this command: 0.5)",
                  "--workers-per-trial (the sweep: 1, this command: 2)"):
        assert named in text


def test_a_resume_takes_a_new_data_path_and_logging_settings(tmp_path):
    base = TrainConfig(data=str(tmp_path / "d"), epochs=3)
    moved = check_resume(base, SPEC, PLAN, {"data": str(tmp_path / "moved"), "log_every_s": 5.0}, {})
    assert (moved.data, moved.log_every_s, moved.epochs) == (str(tmp_path / "moved"), 5.0, 3)


def test_a_dataset_changed_in_place_is_refused_naming_the_rows(public_tiny):
    spec = load_spec(public_tiny)
    saved = data_fingerprint(spec)
    check_data(saved, spec, public_tiny)  # the same data: fine
    counts = {split: dict(domains) for split, domains in spec.row_counts.items()}
    counts["train"]["B2"] += 7
    with pytest.raises(ConfigError, match=r"row counts changed \(train B2: 5,230 rows then, 5,237 rows now\)"):
        check_data(saved, dataclasses.replace(spec, row_counts=counts), public_tiny)
    reseeded = dataclasses.replace(spec, meta={**spec.meta, "seed": 1})  # same counts, other data
    with pytest.raises(ConfigError, match=r"its dataset.json changed \(digest \w+ then, \w+ now\)"):
        check_data(saved, reseeded, public_tiny)


def test_paths_under_an_earlier_folder_are_rebased():
    assert rebase("/a/s/trials/t1/epoch_0001", ["/a/s"], "/b/s2") == "/b/s2/trials/t1/epoch_0001"
    assert rebase("/a/s2x/t", ["/a/s"], "/b/s2") == "/a/s2x/t"  # not under /a/s
    assert rebase("s3://bucket/t", ["/a/s"], "/b") == "s3://bucket/t" and rebase(None, ["/a"], "/b") is None


def test_max_concurrent_is_compared_with_the_flag_the_sweep_was_given(tmp_path):
    base = TrainConfig(data=str(tmp_path / "d"))
    check_resume(base, SPEC, PLAN, {}, {"max_concurrent": 4}, max_concurrent=4)  # as given: fine (plan ran 1)
    with pytest.raises(ConfigError, match=r"--max-concurrent \(the sweep: not set, this command: 4\)"):
        check_resume(base, SPEC, PLAN, {}, {"max_concurrent": 4}, max_concurrent=None)


def test_what_a_sweep_sets_per_trial_is_refused_in_a_config_and_the_rest_applies(tmp_path):
    base = TrainConfig(data=str(tmp_path / "d"))
    with pytest.raises(ConfigError, match=r"the config sets alpha, num_workers, which a sweep sets for every run "
                                          r"itself; give --alpha, --workers-per-trial instead"):
        check_resume(base, SPEC, PLAN, {"alpha": 0.5, "num_workers": 2}, {})
    applied = check_resume(base, SPEC, PLAN, {"tensorboard": False, "max_failures": 2}, {})
    assert (applied.tensorboard, applied.max_failures) == (False, 2)


def test_a_path_already_in_the_new_folder_is_not_rebased_again():
    """A sweep moved into a subfolder of its old location: its new paths start with the old one too."""
    assert rebase("/a/s/new/trials/t2/e1", ["/a/s"], "/a/s/new") == "/a/s/new/trials/t2/e1"
    assert rebase("/a/s/trials/t1/e1", ["/a/s"], "/a/s/new") == "/a/s/new/trials/t1/e1"
