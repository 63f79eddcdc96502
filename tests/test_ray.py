"""The Ray backend: same Trainer, workers as Ray actors; run in loopback-only network namespaces.

Ray listens on every interface and rewrites ``127.0.0.1`` to the machine's
external address, so the Ray tests run the tests of ``ray_isolated.py`` in a
fresh pytest under ``unshare --net`` (only ``lo``, brought up), with
``RAY_AUTH_MODE=disabled`` and a private ``RAY_TMPDIR`` for every Ray process:
one pytest (one interpreter start, one namespace) for all the selected ones, each
of which starts and stops its own Ray; each test here passes only if its own test
there passed. The autouse ``no_leaks`` fixture checks each of those for processes
and aiorl segments left behind; afterwards no process may be left in that
namespace and no Ray segment in ``/dev/shm``. Skipped, with the reason, where ray
is not installed or no network namespace can be made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from xml.etree import ElementTree

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


ISOLATED_TESTS = {  # in this order: those that start a Ray of their own, then those sharing the application's
    "test_two_node_cluster_spreads_workers_and_replaces_a_killed_actor": (
        "test_workers_spread_over_two_nodes_and_a_killed_actor_is_replaced"
    ),
    "test_a_recurrent_policy_learns_on_local_ray": "test_a_recurrent_policy_learns_to_recall_a_cue_on_local_ray",
    "test_a_hung_actor_is_killed_and_replaced": "test_a_hung_actor_is_killed_and_replaced",
    "test_an_env_failing_for_good_on_actors_ends_the_run_with_env_error": (
        "test_an_env_failing_for_good_on_actors_ends_the_run_with_env_error"
    ),
    "test_a_policy_raising_on_actors_ends_the_run_with_its_remote_traceback": (
        "test_a_policy_raising_on_actors_ends_the_run_with_its_remote_traceback"
    ),
}
"""The tests here that pass when their test of ``ray_isolated.py`` passes in the namespace."""
INNER_TIMEOUT_S = 150
"""The ``pytest.mark.timeout`` of each test of ``ray_isolated.py``."""
IN_NAMESPACE = pytest.mark.timeout(INNER_TIMEOUT_S * len(ISOLATED_TESTS) + 120)
"""The first of them to run waits for them all (one pytest in the namespace)."""


@pytest.fixture(scope="module")
def isolated_outcomes(request: pytest.FixtureRequest) -> dict[str, tuple[str, str]]:
    """Run the tests of ``ray_isolated.py`` that this session selected in one pytest, in one namespace.

    Returns each one's outcome (``passed``, ``failed``, ``error`` or ``skipped``) and its report.
    """
    selected = [item.name for item in request.session.items if getattr(item, "module", None) is request.module]
    names = [inner for outer, inner in ISOLATED_TESTS.items() if outer in selected]  # in ISOLATED_TESTS' order
    workdir = tempfile.mkdtemp(prefix="aiorl-ray-report-")
    report = os.path.join(workdir, "report.xml")
    try:
        arguments = ["-m", "pytest", *(f"{ISOLATED}::{name}" for name in names), "-q", "-p", "no:cacheprovider"]
        arguments += [f"--junitxml={report}", "-o", "junit_logging=all"]
        done = run_in_namespace(arguments, timeout_s=INNER_TIMEOUT_S * len(names) + 60)
        output = f"{done.stdout[-8000:]}\n{done.stderr[-4000:]}"
        assert os.path.exists(report), (
            f"the namespace's pytest wrote no report (exit code {done.returncode}):\n{output}"
        )
        with open(report) as f:
            outcomes = inner_outcomes(f.read())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {name: outcomes.get(name, ("did not run", output)) for name in names}


def inner_outcomes(junit_xml: str) -> dict[str, tuple[str, str]]:
    """Each test's outcome and report in a pytest JUnit XML report: only a test with nothing else is ``passed``."""
    outcomes = {}
    for case in ElementTree.fromstring(junit_xml).iter("testcase"):
        text = "\n".join(f"{child.tag}: {child.get('message', '')}\n{child.text or ''}" for child in case)
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        outcome = "failed" if "failure" in kinds else "error" if "error" in kinds else "skipped" if kinds else "passed"
        outcomes[case.get("name", "")] = (outcome, text)
    return outcomes


def assert_passed_in_namespace(outcomes: dict[str, tuple[str, str]], request: pytest.FixtureRequest) -> None:
    """Fail with its report unless this test's test of ``ray_isolated.py`` passed in the namespace."""
    name = ISOLATED_TESTS[request.node.name]
    outcome, report = outcomes[name]
    # A skip inside (ray missing there, not in a namespace) is no pass either.
    assert outcome == "passed", f"{name} {outcome} in its namespace:\n{report[-12000:]}"


JUNIT_SAMPLE = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="5">
<testcase classname="tests.ray_isolated" name="test_passes" time="3.1"><system-out>log</system-out></testcase>
<testcase classname="tests.ray_isolated" name="test_fails" time="1.0"><failure message="assert 1 == 2">tb</failure>
</testcase>
<testcase classname="tests.ray_isolated" name="test_skips" time="0.0"><skipped message="no ray" /></testcase>
<testcase classname="tests.ray_isolated" name="test_leaks" time="2.0"><error message="processes left behind" />
</testcase></testsuite></testsuites>"""


def test_only_a_passing_inner_run_counts_as_a_pass():
    outcomes = inner_outcomes(JUNIT_SAMPLE)
    assert {name: outcome for name, (outcome, _) in outcomes.items()} == {
        "test_passes": "passed",
        "test_fails": "failed",
        "test_skips": "skipped",
        "test_leaks": "error",  # passed, then its teardown (the no_leaks fixture) failed
    }
    assert "assert 1 == 2" in outcomes["test_fails"][1] and "tb" in outcomes["test_fails"][1]
    assert inner_outcomes('<testsuites><testsuite name="pytest" tests="0"></testsuite></testsuites>') == {}


@IN_NAMESPACE
def test_a_recurrent_policy_learns_on_local_ray(isolated_outcomes, request):
    assert_passed_in_namespace(isolated_outcomes, request)


@IN_NAMESPACE
def test_two_node_cluster_spreads_workers_and_replaces_a_killed_actor(isolated_outcomes, request):
    assert_passed_in_namespace(isolated_outcomes, request)


@IN_NAMESPACE
def test_a_hung_actor_is_killed_and_replaced(isolated_outcomes, request):
    assert_passed_in_namespace(isolated_outcomes, request)


@IN_NAMESPACE
def test_an_env_failing_for_good_on_actors_ends_the_run_with_env_error(isolated_outcomes, request):
    assert_passed_in_namespace(isolated_outcomes, request)


@IN_NAMESPACE
def test_a_policy_raising_on_actors_ends_the_run_with_its_remote_traceback(isolated_outcomes, request):
    assert_passed_in_namespace(isolated_outcomes, request)


def test_ray_cluster_example_trains_the_preset_to_475_on_a_ray_it_starts_and_stops():
    # The example starts a local Ray (the trainer's), trains, and the trainer shuts that Ray down:
    # run_in_namespace checks that no process of it is left.
    arguments = [str(EXAMPLES / "ray_cluster.py"), "--steps", "300000", "--num-cpus", "2"]
    done = run_in_namespace(arguments)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("worker 0: pid ") and lines[1].startswith("worker 1: pid "), done.stdout
    assert lines[0].split(" on node ")[1] == lines[1].split(" on node ")[1], "one local Ray node"
    assert lines[-1].startswith("reached a mean return of 475: "), done.stdout
    assert lines[-1].endswith("steps/s), 0 restarts"), done.stdout


def test_importing_aiorl_never_imports_ray():
    code = "import sys, aiorl, aiorl.backends; from aiorl.backends import RayBackend; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_an_unknown_backend_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match=r"backend='spark' must be one of \('local', 'ray'\)"):
        Trainer("CartPole-v1", backend="spark")
