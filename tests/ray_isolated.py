"""The Ray backend's behaviours, run by ``test_ray.py`` inside a loopback-only network namespace (one pytest for all).

Ray rewrites ``--node-ip-address=127.0.0.1`` to the machine's external interface
and listens on every interface, so these tests never run in the machine's own
network namespace: ``test_ray.py`` starts pytest on this file under
``unshare --net`` (only ``lo``, brought up), with ``RAY_AUTH_MODE`` and
``RAY_TMPDIR`` set for every Ray process. Run anywhere else, the module skips.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import socket

import pytest

NAMESPACE_VARIABLE = "AIORL_RAY_NETNS_FILE"
"""Set by ``test_ray.py`` when it runs this module in a loopback-only namespace."""

if NAMESPACE_VARIABLE not in os.environ:
    pytest.skip("run by tests/test_ray.py inside a loopback-only network namespace", allow_module_level=True)
interfaces = sorted(name for _, name in socket.if_nameindex())
if interfaces != ["lo"]:  # never let Ray near a real network
    pytest.exit(f"expected a namespace with only loopback, found interfaces {interfaces}", returncode=3)

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from aiorl import PPO, EnvError, Trainer, WorkerError  # noqa: E402
from aiorl.backends import RayBackend  # noqa: E402
from aiorl.testing import FaultyEnv, RaiseAtStep, RaisesOnRealObservations  # noqa: E402
from aiorl.testing.memory import CueRecallEnv  # noqa: E402

QUICK_PPO = PPO(update_epochs=1, num_minibatches=1)
FAST = {
    "num_workers": 2,
    "envs_per_worker": 8,
    "rollout_length": 32,
    "heartbeat_interval_s": 0.2,
    "restart_backoff_s": 0.05,
    "log_interval_s": 60.0,
}


@pytest.fixture(scope="module")
def applications_ray():
    """One local Ray, initialised as an application would before it builds trainers; shut down at the end.

    The tests that take it share it (a ``ray.init`` costs ~5 s here), so they run after the
    ones that start a Ray of their own (``test_ray.py`` orders them): each of its trainers
    must leave it up, as it found it.
    """
    assert not ray.is_initialized(), "Ray was initialised before the application's"
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def ray_left_as_found(request):
    """Each test finds Ray initialised only if it shares the application's, and leaves it so.

    A trainer uses a Ray that is already initialised as it finds it: a test that left one
    behind would change the ones after it. Shut down here, and that test fails.
    """
    shared = "applications_ray" in request.fixturenames
    assert ray.is_initialized() == shared, f"Ray initialised: {ray.is_initialized()} before the test"
    yield
    if shared and not ray.is_initialized():
        pytest.fail("a trainer shut down the application's Ray")
    if not shared and ray.is_initialized():
        ray.shutdown()
        pytest.fail("the test left Ray initialised")


@pytest.fixture
def two_node_cluster():
    """A head and one more node, one CPU each, in this namespace; shut down after the test."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


@pytest.mark.timeout(150)
@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_workers_spread_over_two_nodes_and_a_killed_actor_is_replaced(two_node_cluster):
    backend = RayBackend(address=two_node_cluster.address)
    async with Trainer("CartPole-v1", QUICK_PPO, backend=backend, worker_timeout_s=10.0, **FAST) as trainer:
        cluster_nodes = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
        assert set(trainer.worker_nodes.values()) == cluster_nodes and len(cluster_nodes) == 2
        first_pids = dict(trainer.worker_pids)

        def kill_once(report):
            if report.policy_version == 3:
                os.kill(first_pids[1], signal.SIGKILL)  # the actor's process, as the OOM killer would

        result = await trainer.run(total_steps=6_000, on_update=kill_once)
        assert result.worker_restarts == 1
        async with asyncio.timeout(30):  # the replacement says hello
            while len(trainer.worker_nodes) < 2:
                await asyncio.sleep(0.05)
        assert trainer.worker_pids[0] == first_pids[0] and trainer.worker_pids[1] != first_pids[1]
        assert set(trainer.worker_nodes.values()) == cluster_nodes  # the replacement took the free CPU
        stats = trainer.stats
        assert stats.steps_collected == stats.steps_trained + stats.steps_discarded + stats.steps_pending
    assert stats.steps_pending == 0
    assert stats.steps_collected == stats.steps_trained + stats.steps_discarded


@pytest.mark.timeout(150)
@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_recurrent_policy_learns_to_recall_a_cue_on_local_ray(applications_ray):
    options = {**FAST, "rollout_length": 16, "recurrent_size": 32}
    async with Trainer(CueRecallEnv, recurrent="lstm", backend=RayBackend(), **options) as trainer:
        result = await trainer.run(total_steps=25_000, target_return=0.98)
        remembered = await trainer.evaluate(episodes=50)
    assert remembered.mean_return > 0.9, f"{remembered} after {result.env_steps} steps"
    stats = trainer.stats
    assert stats.steps_collected == stats.steps_trained + stats.steps_discarded


@pytest.mark.timeout(150)
@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_hung_actor_is_killed_and_replaced(applications_ray, caplog):
    hangs_once = functools.partial(FaultyEnv, "CartPole-v1", "hang", 40, workers=(1,))  # worker 1, first actor
    async with Trainer(hangs_once, QUICK_PPO, backend=RayBackend(), worker_timeout_s=2.0, **FAST) as trainer:
        first_pids = dict(trainer.worker_pids)
        async with asyncio.timeout(60):
            while trainer.stats.worker_restarts < 1:
                await trainer.run(total_steps=1_000)
            while 1 not in trainer.worker_pids:  # the replacement says hello
                await asyncio.sleep(0.05)
        result = await trainer.run(total_steps=2_000)  # and runs clean
        assert result.worker_restarts == 0
        assert trainer.worker_pids[0] == first_pids[0] and trainer.worker_pids[1] != first_pids[1]
    assert "worker 1 (pid" in caplog.text and "hung: no heartbeat for" in caplog.text
    stats = trainer.stats
    assert stats.worker_restarts == 1
    assert stats.steps_collected == stats.steps_trained + stats.steps_discarded


@pytest.mark.timeout(150)
@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_an_env_failing_for_good_on_actors_ends_the_run_with_env_error(applications_ray):
    failing = functools.partial(RaiseAtStep, "CartPole-v1", 5)  # every env, every time: the limit is reached
    trainer = Trainer(failing, QUICK_PPO, backend=RayBackend(), **FAST)
    with pytest.raises(EnvError, match="env_error_limit=3") as caught:
        await trainer.run(total_steps=100_000)
    assert "InjectedFault" in str(caught.value) and caught.value.__cause__ is not None  # the remote traceback
    stats = trainer.stats
    assert stats.worker_restarts == 0, "an env that fails for good would fail again: no restart"
    assert stats.env_errors >= 3 and stats.discarded.get("worker_lost", 0) == 0  # its failures, counted
    assert stats.steps_collected == stats.steps_trained + stats.steps_discarded


@pytest.mark.timeout(150)
@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_policy_raising_on_actors_ends_the_run_with_its_remote_traceback(applications_ray):
    raising = Trainer("CartPole-v1", QUICK_PPO, policy=RaisesOnRealObservations(), backend=RayBackend(), **FAST)
    with pytest.raises(WorkerError, match="IndexError: a bug in the user") as caught:
        await raising.run(total_steps=100_000)
    assert "in forward" in caught.value.remote_traceback
    stats = raising.stats
    assert stats.worker_restarts == 0, "the same policy on the same weights would raise again: no restart"
    assert stats.steps_collected == stats.steps_trained + stats.steps_discarded
