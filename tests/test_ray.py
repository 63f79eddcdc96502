"""The Ray backend: same Trainer, workers as Ray actors; run in loopback-only network namespaces.

Ray listens on every interface and rewrites ``127.0.0.1`` to the machine's
external address, so each Ray test re-runs one test of ``ray_isolated.py`` in a
fresh pytest under ``unshare --net`` (only ``lo``, brought up), with
``RAY_AUTH_MODE=disabled`` and a private ``RAY_TMPDIR`` for every Ray process.
Afterwards no process may be left in that namespace and no Ray segment in
``/dev/shm``. Skipped, with the reason, where ray is not installed or no network
namespace can be made.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import wait_until

from aiorl import ConfigError, Trainer

ISOLATED = Path(__file__).with_name("ray_isolated.py")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NAMESPACE_VARIABLE = "AIORL_RAY_NETNS_FILE"
UNSHARE_VARIANTS = (["unshare", "--net"], ["unshare", "--user", "--map-root-user", "--net"])
"""As root, a network namespace; otherwise inside a user namespace, where allowed."""


def unshare_command() -> tuple[list[str] | None, str]:
    """The ``unshare`` invocation that makes a loopback-only namespace here, or why there is none."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None, "the Ray tests need `unshare` (util-linux) and `ip` (iproute2) for a loopback-only namespace"
    errors = []
    for variant in UNSHARE_VARIANTS:
        probe = subprocess.run([*variant, "--", "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
        if probe.returncode == 0:
            return variant, ""
        errors.append(probe.stderr.strip())
    return None, f"cannot make a network namespace for the Ray tests (root or user namespaces needed): {errors}"


def processes_in_namespace(namespace: str) -> list[int]:
    """Live processes whose network namespace is ``namespace`` (as ``readlink /proc/PID/ns/net`` says)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/net") == namespace:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def ray_segments() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if "ray" in name.lower() or "plasma" in name.lower()}


def run_in_namespace(arguments: list[str], timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGUMENTS`` in its own loopback-only namespace, then check it left nothing behind."""
    pytest.importorskip("ray", reason="ray is not installed (pip install 'aiorl[ray]')")
    unshare, why_not = unshare_command()
    if unshare is None:
        pytest.skip(why_not)
    segments_before = ray_segments()
    workdir = tempfile.mkdtemp(prefix="aiorl-ray-")  # short: Ray puts unix sockets in it
    namespace_file = os.path.join(workdir, "netns")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": workdir, NAMESPACE_VARIABLE: namespace_file}
    script = f'ip link set lo up && readlink /proc/self/ns/net > "{namespace_file}" && exec "$@"'
    command = [*unshare, "--", "sh", "-c", script, "sh", sys.executable, *arguments]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
        with open(namespace_file) as f:
            namespace = f.read().strip()
        assert wait_until(lambda: not processes_in_namespace(namespace), 10.0), (
            f"processes left in the test's namespace: {processes_in_namespace(namespace)}"
        )
        assert ray_segments() <= segments_before, f"Ray left shared memory: {ray_segments() - segments_before}"
        return done
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_isolated(test_name: str) -> None:
    """Run ``ray_isolated.py::test_name`` in a pytest of its own, in its own namespace; fail with its output."""
    done = run_in_namespace(["-m", "pytest", f"{ISOLATED}::{test_name}", "-q", "-p", "no:cacheprovider"])
    output = f"{done.stdout[-8000:]}\n{done.stderr[-4000:]}"
    assert done.returncode == 0, f"{test_name} failed in its namespace:\n{output}"
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    # A skip inside (ray missing there, not in a namespace) also exits 0: only a pass is a pass.
    assert inner_test_passed(summary), f"{test_name} did not pass in its namespace ({summary!r}):\n{output}"


def inner_test_passed(summary: str) -> bool:
    """Whether pytest's last line says that exactly one test ran and passed."""
    others = re.search(r"skipped|deselected|failed|error", summary)
    return re.search(r"\b1 passed\b", summary) is not None and others is None


def test_only_a_passing_inner_run_counts_as_a_pass():
    assert inner_test_passed("1 passed in 12.31s")
    assert inner_test_passed("1 passed, 2 warnings in 3.05s")
    assert not inner_test_passed("1 skipped in 0.02s")
    assert not inner_test_passed("no tests ran in 0.01s")
    assert not inner_test_passed("1 passed, 1 skipped in 4.00s")


def test_cartpole_reaches_475_with_workers_on_local_ray():
    run_isolated("test_cartpole_preset_reaches_475_on_local_ray")


def test_a_recurrent_policy_learns_on_local_ray():
    run_isolated("test_a_recurrent_policy_learns_to_recall_a_cue_on_local_ray")


def test_two_node_cluster_spreads_workers_and_replaces_a_killed_actor():
    run_isolated("test_workers_spread_over_two_nodes_and_a_killed_actor_is_replaced")


def test_a_hung_actor_is_killed_and_replaced():
    run_isolated("test_a_hung_actor_is_killed_and_replaced")


def test_an_env_that_fails_for_good_on_an_actor_ends_the_run_with_env_error():
    run_isolated("test_an_env_that_fails_for_good_ends_the_run_with_env_error")


def test_ray_cluster_example_trains_and_prints_where_workers_run():
    arguments = [str(EXAMPLES / "ray_cluster.py"), "--steps", "4096", "--envs-per-worker", "4", "--num-cpus", "2"]
    done = run_in_namespace(arguments)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("worker 0: pid ") and lines[1].startswith("worker 1: pid "), done.stdout
    assert "mean return of 475" in lines[-1] and "steps/s" in lines[-1], done.stdout


def test_importing_aiorl_never_imports_ray():
    code = "import sys, aiorl, aiorl.backends; from aiorl.backends import RayBackend; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_an_unknown_backend_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match=r"backend='spark' must be one of \('local', 'ray'\)"):
        Trainer("CartPole-v1", backend="spark")
