"""Fault injection with real processes: crashed, hung and failing workers are replaced, nothing is lost.

Each test injects its fault on a schedule (at a given call, in given workers and
incarnations) during one short run, then checks that the run finishes (or fails
with the named error), that restarts are counted, and that every collected step
is trained or discarded with a reason. The autouse ``no_leaks`` fixture checks
for orphans and shared memory after each test.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import multiprocessing.forkserver
import os
import signal
import threading
import time

import gymnasium as gym
import numpy as np
import pytest
from conftest import SMALL, alive, leftover_workers, open_fds, wait_until

from aiorl import PPO, ConfigError, EnvError, LearnerError, Trainer, TrainerClosed, TrainResult, WorkerCrashed
from aiorl.engine import consumer as consumer_module
from aiorl.errors import WorkerError, WorkerHung, WorkerRestartError
from aiorl.models import flat_weights
from aiorl.testing import (
    COUNTING_ENV_ID,
    ChildProcessEnv,
    FaultyEnv,
    NanMeanOnRealObservations,
    OneRowForBigBatches,
    RaisesOnRealObservations,
    StepsTakenEnv,
    env_child_pids,
    steps_taken,
    worker_identity,
)

FAST = {
    **SMALL,
    "heartbeat_interval_s": 0.2,
    "worker_timeout_s": 2.0,
    "restart_backoff_s": 0.05,
    "shutdown_grace_s": 2.0,
}
QUICK_PPO = PPO(update_epochs=1, num_minibatches=1)


def assert_accounted(trainer: Trainer, result: TrainResult | None = None) -> None:
    stats = trainer.stats
    assert stats.steps_collected == stats.steps_trained + stats.steps_discarded + stats.steps_pending
    if result is not None:
        pending = result.steps_pending
        assert result.steps_collected == result.total_env_steps + sum(result.steps_discarded.values()) + pending


def assert_failures_counted(trainer: Trainer) -> None:
    """An env failed for good: its failures are counted, the rollout it lost discarded as ``env_error``."""
    stats = trainer.stats
    assert stats.env_errors >= 3  # was 0: the failures of the rollout in progress went unreported
    assert stats.discarded.get("env_error", 0) > 0
    assert stats.discarded.get("worker_lost", 0) == 0  # was: every step of that rollout, as "worker_lost"
    assert_accounted(trainer)


async def run_until_restarts(trainer: Trainer, restarts: int, timeout_s: float = 60) -> None:
    """Keep training in short runs until ``restarts`` workers have been replaced."""
    async with asyncio.timeout(timeout_s):
        while trainer.stats.worker_restarts < restarts:
            await trainer.run(total_steps=1_000)


def faulty(fault: str, at: int, **where) -> functools.partial:
    return functools.partial(FaultyEnv, "CartPole-v1", fault, at, **where)


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_worker_killed_from_outside_is_replaced():
    async with Trainer("CartPole-v1", QUICK_PPO, **FAST) as trainer:
        first_pids = dict(trainer.worker_pids)

        def kill_once(report):
            if report.policy_version == 3:
                os.kill(first_pids[1], signal.SIGKILL)

        result = await trainer.run(total_steps=8_000, on_update=kill_once)
        assert result.worker_restarts == 1
        assert trainer.worker_pids[0] == first_pids[0] and trainer.worker_pids[1] != first_pids[1]
        assert_accounted(trainer, result)
    assert trainer.stats.steps_pending == 0


@pytest.mark.asyncio(loop_factories=["asyncio"])
@pytest.mark.parametrize("fault", ["kill", "segfault", "exit"])
async def test_a_worker_that_dies_is_replaced_each_time(fault, caplog):
    env = faulty(fault, at=40, incarnations=(0, 1))  # worker 0 dies twice, then runs clean
    async with Trainer(env, QUICK_PPO, **FAST) as trainer:
        await run_until_restarts(trainer, 2)
        result = await trainer.run(total_steps=3_000)  # the third process runs clean
        assert result.worker_restarts == 0 and trainer.stats.worker_restarts == 2
        assert result.steps_discarded.get("worker_lost", 0) > 0, "its unfinished rollouts are counted"
        assert_accounted(trainer, result)
    cause = {"kill": "killed by SIGKILL", "segfault": "killed by SIGSEGV", "exit": "exited with code 1"}[fault]
    assert caplog.text.count("worker 0 (pid") >= 2 and cause in caplog.text


@pytest.mark.asyncio(loop_factories=["uvloop"])
@pytest.mark.parametrize("method", ["step", "reset"])
async def test_a_hung_worker_is_dumped_killed_and_replaced(method, caplog):
    env = faulty("hang", at=40 if method == "step" else 3, method=method)
    async with Trainer(env, QUICK_PPO, **FAST) as trainer:
        hung_pid = trainer.worker_pids[0]
        await run_until_restarts(trainer, 1)
        result = await trainer.run(total_steps=3_000)
        assert trainer.stats.worker_restarts == 1
        assert hung_pid not in trainer.worker_pids.values()
        assert_accounted(trainer, result)
    hung = [r for r in caplog.records if isinstance(r.args, tuple) and r.args and isinstance(r.args[0], WorkerHung)]
    assert hung, caplog.text
    stack = hung[0].args[0].stack
    assert "_maybe_fault" in stack and f"in {method}" in stack, stack
    assert caplog.text.count("its Python stack when it was stopped") == 1  # not again with "replacing it"
    assert "hung: no heartbeat for" in caplog.text.split("replacing it in")[0].splitlines()[-1]


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_stopped_worker_is_killed_without_waiting_for_a_stack_or_sigterm(caplog):
    async with Trainer("CartPole-v1", QUICK_PPO, **FAST) as trainer:
        await trainer.run(total_steps=300)
        stopped_pid = trainer.worker_pids[0]
        os.kill(stopped_pid, signal.SIGSTOP)  # as a debugger or a job-control stop would
        await run_until_restarts(trainer, 1)
        assert stopped_pid not in trainer.worker_pids.values()
    hung = [r for r in caplog.records if isinstance(r.args, tuple) and r.args and isinstance(r.args[0], WorkerHung)]
    assert hung, caplog.text
    assert hung[0].args[0].stack == "(the process is stopped: SIGSTOP or a debugger; no stack)"


async def until(predicate, timeout_s: float = 30) -> None:
    """Poll ``predicate`` without blocking the loop (the trainer keeps running meanwhile)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


async def kill_the_forkserver() -> int:
    """SIGKILL the forkserver the workers came from; return its pid once it is dead."""
    forkserver = multiprocessing.forkserver._forkserver._forkserver_pid
    os.kill(forkserver, signal.SIGKILL)
    await until(lambda: not alive(forkserver))
    return forkserver


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_workers_keep_working_when_the_forkserver_is_killed():
    async with Trainer("CartPole-v1", QUICK_PPO, **FAST) as trainer:
        await trainer.run(total_steps=300)
        workers = dict(trainer.worker_pids)
        await kill_the_forkserver()
        result = await trainer.run(total_steps=3_000)
        assert result.worker_restarts == 0 and trainer.worker_pids == workers
        assert_accounted(trainer, result)
    # No longer children of this process's children, so the no_leaks fixture cannot see them:
    assert wait_until(lambda: not any(alive(pid) for pid in workers.values())), "orphaned workers outlived the trainer"


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_worker_lost_after_the_forkserver_died_is_replaced_from_a_new_one(caplog):
    async with Trainer("CartPole-v1", QUICK_PPO, **FAST) as trainer:
        await trainer.run(total_steps=300)
        dead_forkserver = await kill_the_forkserver()
        victim = trainer.worker_pids[1]
        await until(lambda: trainer._session.pool.seats[1].handle.link.watch.orphaned)  # it saw the forkserver die
        os.kill(victim, signal.SIGKILL)
        await until(lambda: trainer.worker_pids.get(1) not in (None, victim), timeout_s=60)  # torch loads again
        result = await trainer.run(total_steps=1_000)
        assert trainer.stats.worker_restarts == 1
        assert multiprocessing.forkserver._forkserver._forkserver_pid not in (None, dead_forkserver)
        assert_accounted(trainer, result)
    assert f"worker 1 (pid {victim}) died: ended with an unknown exit code (the forkserver" in caplog.text


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_hung_worker_is_killed_with_the_processes_its_envs_started(tmp_path):
    env = functools.partial(ChildProcessEnv, faulty("hang", at=40), str(tmp_path))  # worker 0 hangs once
    async with Trainer(env, QUICK_PPO, **{**FAST, "envs_per_worker": 2}) as trainer:
        await run_until_restarts(trainer, 1)
        children = env_child_pids(str(tmp_path))
        of_the_hung_worker = [
            pid for (worker, incarnation, _), pid in children.items() if (worker, incarnation) == (0, 0)
        ]
        assert len(of_the_hung_worker) == 2
        await until(lambda: not any(alive(pid) for pid in of_the_hung_worker), timeout_s=10)
        assert alive(children[1, 0, 0]) and alive(children[1, 0, 1]), "the other worker's are still in use"


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_an_env_that_raises_is_recreated_and_its_episode_discarded(caplog):
    env = functools.partial(FaultyEnv, COUNTING_ENV_ID, "raise", 30, workers=None, incarnations=None)
    async with Trainer(env, QUICK_PPO, **FAST) as trainer:
        result = await trainer.run(total_steps=4_000)
        assert result.worker_restarts == 0
        assert result.env_errors >= 4  # workers keep collecting after run() returns: more may come
        assert result.steps_discarded.get("env_error", 0) > 0
        assert_accounted(trainer, result)
    assert "InjectedFault: injected fault in step call 30" in caplog.text
    assert 'testing/envs.py", line' in caplog.text, "the remote traceback reaches the log"


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_nan_observation_is_handled_like_an_env_error():
    env = functools.partial(FaultyEnv, COUNTING_ENV_ID, "nan", 25, workers=None, incarnations=None)
    async with Trainer(env, QUICK_PPO, **FAST) as trainer:
        result = await trainer.run(total_steps=3_000)
        assert trainer.stats.env_errors >= 2 and result.worker_restarts == 0
        assert np.isfinite(flat_weights(trainer.policy)).all()
        assert_accounted(trainer, result)


@pytest.mark.asyncio(loop_factories=["asyncio"])
@pytest.mark.parametrize(
    ("fault", "at", "method"),
    [
        ("nan_reward", 40, "step"),  # step 40 ends an episode
        ("nan", 30, "step"),
        ("nan", 2, "reset"),
        ("wrong_shape", 30, "step"),
        ("wrong_shape", 2, "reset"),
        ("bad_flags", 30, "step"),  # a terminated flag with no truth value (crashed the worker)
    ],
)
async def test_non_finite_or_malformed_rewards_and_observations_anywhere_are_env_errors(fault, at, method):
    env = functools.partial(FaultyEnv, COUNTING_ENV_ID, fault, at, method=method, workers=None, incarnations=None)
    async with Trainer(env, QUICK_PPO, **FAST) as trainer:
        result = await trainer.run(total_steps=3_000)
        assert trainer.stats.env_errors >= 2 and result.worker_restarts == 0
        assert np.isfinite(result.mean_return)
        assert_accounted(trainer, result)


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_an_env_constructor_that_raises_in_a_worker_fails_clearly_without_restarts():
    env = faulty("raise", at=1, method="init", workers=(1,))
    trainer = Trainer(env, QUICK_PPO, **FAST)
    with pytest.raises(EnvError, match=r"worker 1, env 0, step 0, .*InjectedFault") as info:
        await trainer.run(total_steps=1_000)
    assert "InjectedFault" in str(info.value.__cause__)
    assert trainer.stats.worker_restarts == 0
    assert trainer.stats.env_errors == 1  # counted, as the README says (was 0)


class ActionsDifferInWorker1(gym.Wrapper):
    """CartPole, except that worker 1's envs say they take three actions."""

    def __init__(self) -> None:
        super().__init__(gym.make("CartPole-v1"))
        if worker_identity()[0] == 1:
            self.action_space = gym.spaces.Discrete(3)


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_worker_env_with_another_action_space_ends_the_run_with_env_error():
    trainer = Trainer(ActionsDifferInWorker1, QUICK_PPO, **FAST)
    expected = r"worker 1, .*action_space is Discrete\(3\), but the trainer's is Discrete\(2\)"
    with pytest.raises(EnvError, match=expected):
        await asyncio.wait_for(trainer.run(total_steps=10**9), timeout=60)
    assert trainer.stats.worker_restarts == 0


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_an_env_that_keeps_failing_ends_the_run_instead_of_looping():
    env = faulty("raise", at=1, workers=None, incarnations=None)  # fails on every first step
    trainer = Trainer(env, QUICK_PPO, **FAST)
    with pytest.raises(EnvError, match=r"env 0, step 1, .*InjectedFault.*failed 3 times in a row"):
        await asyncio.wait_for(trainer.run(total_steps=10**9), timeout=60)
    assert trainer.stats.worker_restarts == 0
    assert_failures_counted(trainer)


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_once_the_workers_failed_a_run_the_open_trainer_refuses_more_until_started_again():
    # each env fails at its 300th step: after the (one) worker said hello, so the start succeeds
    env = faulty("raise", at=300, workers=None, incarnations=None)
    trainer = Trainer(env, QUICK_PPO, env_error_limit=1, **{**FAST, "num_workers": 1})
    async with trainer:
        with pytest.raises(EnvError):
            await asyncio.wait_for(trainer.run(total_steps=10**9), timeout=60)
        trained = trainer.stats.steps_trained
        for call in (lambda: trainer.run(total_steps=10**9), lambda: trainer.sample(10**9)):
            with pytest.raises(RuntimeError, match=r"workers failed in an earlier run \(EnvError: .*start it again"):
                await asyncio.wait_for(call(), timeout=60)
        assert trainer.stats.steps_trained == trained  # was: an update, then the same EnvError object again
    with pytest.raises(EnvError):  # started again: new workers (whose env fails anew)
        await asyncio.wait_for(trainer.run(total_steps=10**9), timeout=60)


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_the_steps_taken_in_the_row_where_an_env_fails_for_good_are_counted(tmp_path):
    # env 3 of worker 0 breaks on its 100th step (after envs 0-2 took theirs) and may fail only once
    breaks = faulty("wrong_shape", at=100, env_indices=(3,))
    trainer = Trainer(functools.partial(StepsTakenEnv, str(tmp_path), breaks), QUICK_PPO, env_error_limit=1, **FAST)
    with pytest.raises(EnvError, match=r"env 3, step 100"):
        await asyncio.wait_for(trainer.run(total_steps=10**9), timeout=60)
    assert trainer.stats.steps_collected == steps_taken(str(tmp_path))  # was 4 short: the row was not on the board
    assert_accounted(trainer)


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_teardown_cut_short_still_counts_every_step_the_workers_took(tmp_path):
    # Worker 0 hangs at its env 0's 100th step, so the close waits out its grace period; an
    # application's shutdown hook gives the close 0.5 s (wait_for) and cancels it.
    env = functools.partial(StepsTakenEnv, str(tmp_path), faulty("hang", at=100))
    trainer = Trainer(env, QUICK_PPO, **{**FAST, "worker_timeout_s": 60.0, "shutdown_grace_s": 30.0})
    await trainer.__aenter__()
    await asyncio.wait_for(trainer.run(total_steps=1_000), timeout=60)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(trainer.aclose(), timeout=0.5)
    assert wait_until(lambda: not leftover_workers())  # killed on the way out: the files are final
    assert trainer.stats.steps_collected == steps_taken(str(tmp_path))  # was short by the steps never reported
    assert_accounted(trainer)


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_an_env_that_always_returns_the_wrong_shape_ends_the_run_with_env_error_not_restarts():
    env = faulty("wrong_shape", at=1, workers=None, incarnations=None)  # CartPole's Box(4,) gets 5 numbers
    trainer = Trainer(env, QUICK_PPO, **FAST)
    with pytest.raises(EnvError, match=r"an observation of shape \(5,\), but observation_space is Box.*3 times"):
        await asyncio.wait_for(trainer.run(total_steps=10**9), timeout=60)
    assert trainer.stats.worker_restarts == 0


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_policy_that_raises_in_a_worker_ends_the_run_with_its_traceback_not_restarts():
    trainer = Trainer("CartPole-v1", QUICK_PPO, policy=RaisesOnRealObservations(), **FAST)
    with pytest.raises(WorkerError, match=r"worker \d, policy version 0: IndexError: a bug in the user") as info:
        await asyncio.wait_for(trainer.run(total_steps=10**9), timeout=60)
    assert "in forward" in info.value.remote_traceback and "in forward" in str(info.value.__cause__)
    assert trainer.stats.worker_restarts == 0
    assert_accounted(trainer)


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_policy_with_non_finite_outputs_is_blamed_not_the_env_that_would_get_nan_actions():
    trainer = Trainer("Pendulum-v1", QUICK_PPO, policy=NanMeanOnRealObservations(), **FAST)
    with pytest.raises(WorkerError, match=r"FloatingPointError: the policy \(weights version 0\) gave non-finite"):
        await asyncio.wait_for(trainer.run(total_steps=10**9), timeout=60)
    assert trainer.stats.worker_restarts == 0 and trainer.stats.env_errors == 0


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_policy_whose_outputs_lose_the_batch_dimension_is_blamed_not_the_env():
    trainer = Trainer("CartPole-v1", QUICK_PPO, policy=OneRowForBigBatches(), **FAST)
    with pytest.raises(WorkerError, match=r"ValueError: .* inputs of 1 rows for a batch of 4 observations"):
        await asyncio.wait_for(trainer.run(total_steps=10**9), timeout=60)
    # was: each env re-created 3 times over an IndexError, then an EnvError
    assert trainer.stats.worker_restarts == 0 and trainer.stats.env_errors == 0


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_too_many_restarts_stop_the_run_with_the_cause():
    env = faulty("kill", at=20, incarnations=None)  # worker 0 dies in every incarnation
    async with Trainer(env, QUICK_PPO, max_restarts=2, **FAST) as trainer:
        with pytest.raises(WorkerRestartError, match=r"worker 0 .*max_restarts=2.*killed by SIGKILL") as info:
            await asyncio.wait_for(trainer.run(total_steps=10**9), timeout=60)
        assert isinstance(info.value.__cause__, WorkerCrashed)
        assert trainer.stats.worker_restarts == 2
        assert_accounted(trainer)


class FlakyLearnerPPO(PPO):
    """PPO whose learner raises on a chosen update (and records the weights before)."""

    fail_at = 3

    def make_learner(self, policy, dist, device):
        learner = super().make_learner(policy, dist, device)
        calls = {"n": 0}
        update = learner.update
        learner.good_weights = []

        def flaky_update(batch, progress):
            calls["n"] += 1
            learner.good_weights.append(flat_weights(learner.policy))
            if calls["n"] == self.fail_at:
                update(batch, progress)  # change the weights, then fail
                raise RuntimeError("learner blew up")
            return update(batch, progress)

        learner.update = flaky_update
        return learner


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_learner_failure_stops_the_run_and_keeps_the_last_good_weights():
    trainer = Trainer("CartPole-v1", FlakyLearnerPPO(update_epochs=1, num_minibatches=1), **FAST)
    with pytest.raises(LearnerError, match=r"learner raised RuntimeError: learner blew up.*version 2"):
        await trainer.run(total_steps=10**9)
    learner = trainer._learner
    np.testing.assert_array_equal(flat_weights(trainer.policy), learner.good_weights[-1])
    assert trainer.stats.discarded["learner_error"] > 0
    assert_accounted(trainer)
    assert trainer.stats.steps_pending == 0


class SlowLearnerPPO(PPO):
    """PPO whose updates signal when they start and take a while."""

    def make_learner(self, policy, dist, device):
        learner = super().make_learner(policy, dist, device)
        update = learner.update
        learner.updating = threading.Event()

        def slow_update(batch, progress):
            learner.updating.set()
            time.sleep(0.5)
            return update(batch, progress)

        learner.update = slow_update
        return learner


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_cancelling_run_mid_update_tears_down_and_accounts():
    trainer = Trainer("CartPole-v1", SlowLearnerPPO(update_epochs=1), **FAST)
    task = asyncio.create_task(trainer.run(total_steps=10**9))
    assert await asyncio.to_thread(trainer._learner.updating.wait, 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert trainer.worker_pids == {}
    assert trainer.stats.discarded["shutdown"] > 0
    assert trainer.stats.steps_pending == 0
    assert_accounted(trainer)


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_run_cancelled_three_times_mid_update_leaves_the_closed_trainer_consistent():
    # Each cancellation cuts short a wait for the update in the learner thread (the run's, then
    # its settling before the final checkpoint); the close settles it once the thread is done.
    algo = SlowLearnerPPO(update_epochs=1, num_minibatches=2)
    trainer = Trainer("CartPole-v1", algo, **FAST)
    task = asyncio.create_task(trainer.run(total_steps=10**9))
    assert await asyncio.to_thread(trainer._learner.updating.wait, 60)
    for _ in range(3):
        task.cancel()
        await asyncio.sleep(0.05)
    with pytest.raises(asyncio.CancelledError):
        await task
    (adam,) = trainer.state_dict()["learner"]["optimizer"]["state"].values()
    updates = trainer.stats.updates
    assert int(adam["step"]) == 2 * updates  # was 2 * (updates + 1): the learner held one more update
    assert trainer.policy_version == updates and trainer.stats.steps_trained == updates * trainer.config.batch_steps
    assert_accounted(trainer)


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_run_cancelled_twice_while_a_rollout_is_copied_in_a_thread_keeps_it_with_the_batch(monkeypatch):
    # Big rollouts (images) are copied into the batch in a thread. A cancellation during that
    # copy must wait for it: the rollout goes into the batch and its slot is freed, so the
    # counts agree and the next run trains on whole batches.
    monkeypatch.setattr(consumer_module, "THREAD_COPY_BYTES", 0)  # CartPole's rollouts take that path too
    async with Trainer("CartPole-v1", QUICK_PPO, **SMALL) as trainer:
        consumer = trainer._session.consumer
        builder, add = consumer.builder, consumer.builder.add
        copying = threading.Event()

        def slow_add(slot):
            copying.set()
            time.sleep(0.3)
            return add(slot)

        builder.add = slow_add
        task = asyncio.create_task(trainer.run(total_steps=10**9))
        assert await asyncio.to_thread(copying.wait, 60)
        task.cancel()
        await asyncio.sleep(0.05)  # a second Ctrl-C while the copy goes on
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert builder.count == len(consumer.in_batch) >= 1
        assert_accounted(trainer)
        builder.add = add
        result = await trainer.run(total_steps=2_000)
        assert result.updates >= 1
        assert_accounted(trainer, result)


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_an_update_that_finishes_after_its_run_is_cancelled_is_reported_like_the_others():
    # The cancelled run waits for the update in the learner thread and applies it (the final
    # checkpoint holds it), so on_update (aiorl train's metrics.jsonl) must get its record too.
    trainer = Trainer("CartPole-v1", SlowLearnerPPO(update_epochs=1), **FAST)
    reports = []
    task = asyncio.create_task(trainer.run(total_steps=10**9, on_update=reports.append))
    assert await asyncio.to_thread(trainer._learner.updating.wait, 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert trainer.policy_version >= 1
    assert [r.policy_version for r in reports] == list(range(1, trainer.policy_version + 1))
    assert reports[-1].env_steps == trainer.stats.steps_trained
    assert_accounted(trainer)


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_an_update_left_running_by_a_second_cancellation_is_applied_and_checkpointed(tmp_path):
    # Ctrl-C twice: the second cancellation interrupts the wait for the update in the learner
    # thread. It still finishes there, so it must be applied (weights, version, steps trained),
    # recorded and in the final checkpoint, not counted as discarded with the learner ahead.
    trainer = Trainer("CartPole-v1", SlowLearnerPPO(update_epochs=1), **FAST)
    reports = []
    checkpoint = tmp_path / "checkpoint.pt"
    task = asyncio.create_task(trainer.run(total_steps=10**9, on_update=reports.append, checkpoint_path=checkpoint))
    assert await asyncio.to_thread(trainer._learner.updating.wait, 60)
    task.cancel()
    await asyncio.sleep(0.05)  # the run is now waiting for the update
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert trainer.policy_version == 1 and [r.policy_version for r in reports] == [1]
    assert trainer.stats.steps_trained == reports[-1].env_steps > 0
    assert_accounted(trainer)
    saved = Trainer.load(checkpoint)  # the final checkpoint was written, with the update in it
    assert saved.policy_version == 1 and saved.stats.steps_trained == trainer.stats.steps_trained
    assert np.array_equal(flat_weights(saved.policy), flat_weights(trainer.policy))


async def settled(trainer: Trainer) -> None:
    """Wait until every worker is up and the supervisors of lost ones have finished."""
    pool = trainer._session.pool
    while len(pool._supervisors) != len(pool.seats) or any(s.live() is None for s in pool.seats.values()):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # closed transports release their sockets on the next loop turns


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_no_fd_or_thread_growth_across_25_restarts():
    async def replace_worker(trainer: Trainer) -> None:
        victim = trainer.worker_pids[1]
        restarts = trainer.stats.worker_restarts
        os.kill(victim, signal.SIGKILL)
        while trainer.stats.worker_restarts == restarts or victim in trainer.worker_pids.values():
            await asyncio.sleep(0.01)
        await trainer.run(total_steps=64)  # the replacement is up and collecting
        await settled(trainer)

    async with Trainer(
        "CartPole-v1",
        QUICK_PPO,
        **{**FAST, "max_restarts": 1000, "restart_backoff_s": 0.01, "restart_backoff_max_s": 0.05},
    ) as trainer:
        await replace_worker(trainer)
        # Earlier tests' trainers may still hold torch's shared-memory fds (each tensor pickled for a
        # worker gets one) until the garbage collector frees them: free them before the baseline,
        # or the count falls during this test and hides growth.
        gc.collect()
        fds, threads = open_fds(), threading.active_count()
        for _ in range(24):  # each would leave its fd behind: equality below catches a single one
            await replace_worker(trainer)
        assert trainer.stats.worker_restarts == 25
        async with asyncio.timeout(10):  # a loaded machine may take a few loop turns more to close the last ones
            while len(open_fds()) > len(fds):
                await asyncio.sleep(0.05)
        assert len(open_fds()) == len(fds), (fds, open_fds())
        assert threading.active_count() == threads, threading.enumerate()
        assert_accounted(trainer)


class RecordingPPO(PPO):
    """PPO whose learner keeps every observation it trained on."""

    def make_learner(self, policy, dist, device):
        learner = super().make_learner(policy, dist, device)
        update = learner.update
        learner.trained_obs = []

        def recording_update(batch, progress):
            learner.trained_obs.append(batch.obs[batch.valid].copy())
            return update(batch, progress)

        learner.update = recording_update
        return learner


def stream_counters(rows: np.ndarray) -> dict[tuple[int, int, int], np.ndarray]:
    """Counters seen per env instance (who, env_index, instance), sorted."""
    streams: dict[tuple[int, int, int], list[int]] = {}
    for who, env_index, instance, counter in rows.astype(np.int64):
        streams.setdefault((who, env_index, instance), []).append(counter)
    return {key: np.sort(values) for key, values in streams.items()}


@pytest.mark.asyncio(loop_factories=["uvloop"])
@pytest.mark.parametrize("fault", ["kill", "raise"])
async def test_the_learner_sees_every_surviving_step_exactly_once(fault):
    env = functools.partial(FaultyEnv, COUNTING_ENV_ID, fault, 30, workers=(0,), incarnations=(0,))
    trainer = Trainer(env, RecordingPPO(update_epochs=1, num_minibatches=1), max_policy_lag=None, **FAST)
    async with trainer:
        if fault == "kill":
            await run_until_restarts(trainer, 1)
        await trainer.run(total_steps=4_000)
    rows = np.concatenate(trainer._learner.trained_obs)
    assert len(rows) == trainer.stats.steps_trained
    assert len(np.unique(rows, axis=0)) == len(rows), "a step reached the learner twice"
    # Lost or discarded steps are always the tail of an env's stream: no gaps inside.
    for key, counters in stream_counters(rows).items():
        assert np.array_equal(counters, np.arange(len(counters))), f"gap in the steps of env {key}"
    stats = trainer.stats
    lost = stats.discarded["worker_lost" if fault == "kill" else "env_error"]
    assert lost > 0
    assert stats.steps_collected == stats.steps_trained + stats.steps_discarded


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_closing_the_trainer_ends_a_run_in_another_task():
    async with Trainer("CartPole-v1", QUICK_PPO, **FAST) as trainer:
        running = asyncio.create_task(trainer.run(total_steps=10**9))
        await asyncio.sleep(1.0)
    with pytest.raises(TrainerClosed):
        await asyncio.wait_for(running, timeout=30)


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_strict_on_policy_training_resumes_after_a_learner_failure():
    algo = FlakyLearnerPPO(update_epochs=1, num_minibatches=1)
    async with Trainer("CartPole-v1", algo, max_policy_lag=0, **FAST) as trainer:
        with pytest.raises(LearnerError):
            await trainer.run(total_steps=10**9)
        result = await asyncio.wait_for(trainer.run(total_steps=2_000), timeout=60)
        assert result.updates >= 3


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_an_id_registered_in_a_module_named_in_env_trains_in_workers():
    # gymnasium's "module:EnvId": each process imports the module, which registers the id.
    trainer = Trainer("registered_envs:RegisteredCartPole-v0", QUICK_PPO, num_workers=1, envs_per_worker=2)
    result = await trainer.run(total_steps=256)  # was a ConfigError: "not a registered gymnasium id"
    assert result.env_steps >= 256 and result.env_errors == 0


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_an_id_registered_only_in_the_trainer_s_process_fails_in_workers_saying_how_to_register_it():
    gym.register("OnlyHere-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv")  # as in main()
    try:
        trainer = Trainer("OnlyHere-v0", QUICK_PPO, num_workers=1, envs_per_worker=2)
        with pytest.raises(
            EnvError, match=r"in this worker process; the trainer's has it.*env='that_module:OnlyHere-v0'"
        ):
            await trainer.run(total_steps=256)
    finally:
        del gym.registry["OnlyHere-v0"]


def test_a_module_that_cannot_be_imported_for_an_env_id_is_a_config_error():
    with pytest.raises(ConfigError, match=r"module 'no_such_module', which should register 'X-v0', cannot be imported"):
        Trainer("no_such_module:X-v0")
