"""README.md as a new user runs it: static checks of its commands (every input a command reads is
shipped with the repository or made by an earlier command; no dataset is made twice), and the
parser of `make readme-check` (.ci/readme_check.py), which runs them all on a fresh clone."""
from __future__ import annotations

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _checker():
    spec = importlib.util.spec_from_file_location("readme_check", os.path.join(ROOT, ".ci", "readme_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_commands() -> list[str]:
    rc = _checker()
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = rc.blocks(f.read())
    return [c for b in blocks if b["lang"] == "bash" and not b["skip"] for c in rc.commands(b["code"])]


def test_the_checker_skips_exactly_the_blocks_that_need_what_it_lacks():
    rc = _checker()
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = rc.blocks(f.read())
    skipped = [b["code"] for b in blocks if b["skip"]]
    assert len(skipped) == 4, [s[:60] for s in skipped]
    assert any("python3 -m venv" in s for s in skipped) and any("cu128" in s for s in skipped)
    assert any("prepare_data.py kuairand" in s for s in skipped) and any("ray start --head" in s for s in skipped)
    assert sum(b["lang"] == "python" for b in blocks) == 2  # the loader snippets run too


def test_every_input_is_shipped_or_made_earlier_and_nothing_is_made_twice():
    rc = _checker()
    made = {"data/public-s0.05", "runs/demo"}  # make demo
    datasets = ["data/public-s0.05"]
    for command in _run_commands():
        for flag in ("--data", "--config", "--input"):
            value = rc._flag(command, flag)
            if value is None or "$" in value:
                continue
            assert not value.startswith(".."), f"{flag} {value}: outside the repository"
            path = os.path.dirname(value) if value.endswith((".json",)) else value
            assert value in made or path in made or os.path.exists(os.path.join(ROOT, value)), (flag, value, command)
        out = rc._flag(command, "--out")
        if out:
            if "prepare_data.py" in command:
                assert out not in datasets, f"{out} is made twice (the second would fail: pass --overwrite)"
                datasets.append(out)
            made.add(out)


def test_runs_are_made_small_and_outputs_are_checked():
    rc = _checker()
    cmd = rc.small("python pipelines/compare.py --data d --models mlp,mmoe,ple,aitm,hmoe,star,pepnet,hinet,dfei "
                   "--seeds 5 --ablation --out runs/c")
    assert "--seeds 2" in cmd and "--models mlp,dfei" in cmd and cmd.endswith(rc.RUN_FLAGS)
    assert rc.small("python pipelines/train.py --help") == "python pipelines/train.py --help"
    assert rc.small("tensorboard --logdir runs/") is None and rc.small("make test   # the suite") is None
    assert "runs/c/ablation.png" in rc.outputs(cmd) and "runs/c/table.md" in rc.outputs(cmd)
    assert rc.outputs("python pipelines/export.py --checkpoint x --out runs/s/m.pt") == [
        "runs/s/m.pt", "runs/s/m.pt.json"]
