"""Every example runs (with a short budget) so none rots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_cartpole_example_trains_and_prints_progress():
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "cartpole.py"), "--steps", "4096", "--envs-per-worker", "4"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert lines[0].startswith("update    1  steps"), completed.stdout
    assert "mean return of 475" in lines[-1] and "steps/s" in lines[-1]


def test_async_env_example_overlaps_service_latency_and_trains():
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "async_env.py"), "--steps", "8192", "--envs-per-worker", "32"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert lines[0].startswith("update    1  steps"), completed.stdout
    assert "mean return of 475" in lines[-1] and "discarded steps by reason" in lines[-1]
