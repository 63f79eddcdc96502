"""Every example runs (with a short budget) so none rots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

SHORT_BUDGETS = {
    "cartpole.py": ["--steps", "400000"],  # its defaults (2 workers x 16 envs): solved in ~35-60k steps, ~2 s
    "checkpoint_and_deploy.py": ["--steps", "4096", "--dir", "{tmp}"],
    "async_env.py": ["--steps", "400000", "--envs-per-worker", "32"],  # solved in ~40k steps
}
"""Arguments that keep each example short (the training examples keep a budget ~10x what they need to
reach their target, and their tests require that they reach it). A new example needs an entry here
(or in TESTED_ELSEWHERE)."""
TESTED_ELSEWHERE = {
    "serve_while_training.py": "tests/test_serve_while_training.py",
    "ray_cluster.py": "tests/test_ray.py",
}
"""Examples that need more than a run to completion, and the test that drives each."""


def run_example(name: str, tmp_path: Path) -> list[str]:
    args = [arg.format(tmp=tmp_path) for arg in SHORT_BUDGETS[name]]
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=240, cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip().splitlines()


def test_every_example_has_a_short_budget():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted({**SHORT_BUDGETS, **TESTED_ELSEWHERE})


def test_cartpole_example_trains_and_prints_progress(tmp_path):
    lines = run_example("cartpole.py", tmp_path)
    assert lines[0].startswith("update    1  steps"), lines
    assert lines[-1].startswith("reached a mean return of 475: "), lines[-1]
    assert "steps/s" in lines[-1]


def test_async_env_example_overlaps_service_latency_and_trains(tmp_path):
    lines = run_example("async_env.py", tmp_path)
    assert lines[0].startswith("update    1  steps"), lines
    assert lines[-1].startswith("reached a mean return of 475: "), lines[-1]
    assert "discarded steps by reason" in lines[-1]


def test_checkpoint_example_resumes_and_deploys(tmp_path):
    lines = run_example("checkpoint_and_deploy.py", tmp_path)
    assert lines[0].startswith("first run: ") and lines[1].startswith("after resuming: "), lines
    assert lines[2].startswith("deployed policy (version ") and (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("name", sorted({**SHORT_BUDGETS, **TESTED_ELSEWHERE}))
def test_examples_explain_how_to_run_them(name):
    assert f"python examples/{name}" in (EXAMPLES / name).read_text()
