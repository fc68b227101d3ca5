"""`make readme-check`: run README.md's commands in order, as a new user would, on a fresh clone.

Every ```bash and ```python block of the README runs in order in a fresh `git clone` of this
repository (one bash process per block, after `source .venv/bin/activate`, from the clone's root;
no RAY_ADDRESS, so each CLI starts its embedded Ray). It fails when a command exits non-zero or
leaves one of its documented outputs missing (OUTPUTS). To finish in minutes, runs are made small
by the substitutions in SMALL and RUN_FLAGS; nothing else is changed. What is not run:
- blocks preceded by `<!-- readme-check: skip (why) -->` (they need files or machines this check
  has no access to, or start a machine-wide Ray cluster);
- single lines matching SKIP_LINES (long-running servers, the full benchmark, `make test`, which
  CI runs on its own).

Usage: python .ci/readme_check.py [--keep] [--repo DIR]
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

# the README's commands at a small scale: (pattern, replacement)
SMALL = [
    (r"--alpha 0,0\.1,0\.3,0\.5,0\.7,0\.9,1", "--alpha 0.5,0.9"),
    (r"--alpha 0\.5,0\.7,0\.9 --k 16,32,64", "--alpha 0.5,0.9 --k 16"),
    (r"--num-samples \d+", "--num-samples 2"),
    (r"--seeds \d+", "--seeds 2"),
    (r"--models mlp,mmoe,ple,aitm,hmoe,star,pepnet,hinet,dfei", "--models mlp,dfei"),
    (r"--profile industrial --scale 0\.01", "--profile industrial --scale 0.002"),
    (r"--profile industrial --scale 1\.0", "--profile industrial --scale 0.002"),  # README "Industrial scale"
    (r"rawlogs (.*)--rows 1000000", r"rawlogs \1--rows 100000"),  # README "Daily training on your own logs"
]
# appended to every training command (train, tune, compare, parity): one short epoch per run
RUN_FLAGS = "--epochs 1 --max-steps-per-epoch 20"
TRAINING = re.compile(r"pipelines/(train|tune|compare|parity)\.py\b(?!.*(--help|--resume))")
SKIP_LINES = [r"^tensorboard ", r"http://mlflow\.internal", r"pipelines/benchmark\.py\s*(#|$)",
              r"pipelines/benchmark\.py --use-gpu", r"^make test\b"]
SKIP_MARK = re.compile(r"<!--\s*readme-check:\s*skip\b(.*?)-->")


def blocks(readme: str) -> list[dict]:
    """The fenced bash/python blocks in order: {"lang", "code", "line", "skip": reason or None}."""
    out, lines, i = [], readme.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^```(bash|python)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start = i
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        before = "\n".join(lines[max(0, start - 2):start])
        skip = SKIP_MARK.search(before)
        out.append({"lang": m.group(1), "code": "\n".join(lines[start + 1:j]), "line": start + 1,
                    "skip": skip.group(1).strip(" ()") if skip else None})
        i = j + 1
    return out


def commands(code: str) -> list[str]:
    """Shell lines with their continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [c for c in joined.splitlines() if c.strip() and not c.strip().startswith("#")]


def small(command: str) -> str | None:
    """The command as run here, or None when it is not run."""
    if any(re.search(p, command) for p in SKIP_LINES):
        return None
    for pattern, replacement in SMALL:
        command = re.sub(pattern, replacement, command)
    if TRAINING.search(command):
        code, sep, comment = command.partition(" #")
        command = f"{code.rstrip()} {RUN_FLAGS}" + (f" {sep.strip()}{comment}" if sep else "")
    return command


def _flag(command: str, name: str) -> str | None:
    try:
        words = shlex.split(command.split(" #")[0])
    except ValueError:
        return None
    return words[words.index(name) + 1] if name in words and words.index(name) + 1 < len(words) else None


def outputs(command: str) -> list[str]:
    """The files the README says this command writes (relative to the clone)."""
    out = _flag(command, "--out")
    if command.startswith("make demo"):
        return ["data/public-s0.05/dataset.json", "runs/demo/metrics.json"]
    if "--help" in command or (out is None and "benchmark.py" not in command):
        return []
    if "prepare_data.py rawlogs" in command:
        return [out]
    if "prepare_data.py" in command:
        return [f"{out}/dataset.json"]
    if "train.py" in command:
        return [f"{out}/metrics.json"]
    if "tune.py" in command:
        return [f"{out}/results.csv", f"{out}/results.md", f"{out}/best.json", f"{out}/alpha_curve.png"]
    if "compare.py" in command:
        return [f"{out}/table.md", f"{out}/table.csv", f"{out}/runs.csv", f"{out}/curves.png",
                f"{out}/domain_features_tsne.png"] + (
            [f"{out}/ablation.png"] if "--ablation" in command else [])
    if "predict.py" in command:
        return [out]
    if "export.py" in command:
        return [out, f"{out}.json"]
    if "parity.py" in command:
        return [f"{out}/parity.md", f"{out}/parity.json"]
    if "benchmark.py" in command:
        return [f"{out or 'runs/benchmark'}/benchmark.json"]
    return []


def run_block(block: dict, root: str, env: dict) -> tuple[bool, str]:
    if block["lang"] == "python":
        proc = subprocess.run([os.path.join(root, ".venv", "bin", "python"), "-c", block["code"]], cwd=root, env=env,
                              capture_output=True, text=True)
        return proc.returncode == 0, proc.stdout + proc.stderr
    run = [c for c in map(small, commands(block["code"])) if c is not None]
    if not run:
        return True, "(nothing to run)"
    script = ("set -euo pipefail\nif [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi\nset -x\n"
              + "\n".join(run))
    proc = subprocess.run(["bash", "-c", script], cwd=root, env=env, capture_output=True, text=True)
    missing = [p for c in run for p in outputs(c) if not os.path.exists(os.path.join(root, p))
               or (os.path.isdir(os.path.join(root, p)) and not os.listdir(os.path.join(root, p)))]
    text = proc.stdout + proc.stderr + (f"\nmissing documented outputs: {missing}" if missing else "")
    return proc.returncode == 0 and not missing, text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    args = p.parse_args(argv)
    root = tempfile.mkdtemp(prefix="readme-check-")
    subprocess.run(["git", "clone", "-q", args.repo, root], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VIRTUAL_ENV")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    with open(os.path.join(root, "README.md")) as f:
        todo = blocks(f.read())
    print(f"[readme-check] {len(todo)} blocks of README.md in {root}", flush=True)
    t0, failed = time.time(), []
    for b in todo:
        head = f"README.md:{b['line']} ({b['lang']})"
        if b["skip"]:
            print(f"[readme-check] {head}: skipped ({b['skip']})", flush=True)
            continue
        t = time.time()
        ok, text = run_block(b, root, env)
        print(f"[readme-check] {head}: {'ok' if ok else 'FAILED'} in {time.time() - t:.0f}s", flush=True)
        if not ok:
            failed.append(head)
            print(text[-6000:], flush=True)
            break  # later blocks build on this one
    print(f"[readme-check] {'FAILED at ' + failed[0] if failed else 'every block ran'} "
          f"({time.time() - t0:.0f}s)", flush=True)
    if args.keep or failed:
        print(f"[readme-check] the clone is kept at {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
