"""examples/serve_while_training.py answers HTTP while it trains, and /stop ends it cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import alive, descendants, wait_until

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "serve_while_training.py"


def request(url: str, method: str = "GET") -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as response:
        return json.load(response)


def poll_until_the_return_rises(status_url: str, timeout_s: float = 180.0) -> dict:
    """The first status whose mean return is well above the first one reported."""
    first = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = request(status_url)
        if status["return"] is not None:
            if first is None:
                first = status["return"]
            elif status["return"] >= min(first + 50, 475):
                return status
        time.sleep(0.1)
    pytest.fail(f"the return did not rise from {first} within {timeout_s} s")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_status_shows_learning_and_stop_exits_cleanly(loop):
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", "0", "--loop", loop],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("serving on http://127.0.0.1:"), line + (process.stderr.read() if not line else "")
        base = line.split()[-1]
        status = poll_until_the_return_rises(f"{base}/status")
        assert status["steps"] > 0 and status["restarts"] == 0 and status["episodes"] > 0
        assert status["lag"]["min"] >= 0
        children = descendants(process.pid)  # workers, forkserver, resource tracker
        assert len(children) >= 2
        assert request(f"{base}/stop", method="POST") == {"state": "stopping"}
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert stdout.strip().startswith("stopped after"), stdout
    assert wait_until(lambda: not [pid for pid in children if alive(pid)], 10), "orphans left"
