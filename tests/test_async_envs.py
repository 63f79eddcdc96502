"""Async envs: each env progresses on its own lane, rollouts stay per-env correct, faults are contained.

The sampler tests run the worker's :class:`AsyncEnvSampler` in the test's own loop
(real envs, real policy, real shared-memory slots); the trainer tests run real
worker processes.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch
from cli_envs import slow_cartpole
from conftest import SMALL, sampler_template

from aiorl import APPO, PPO, AsyncEnv, ConfigError, EnvError, Trainer
from aiorl.engine.stats import TrainingStats
from aiorl.envs import ThreadedEnv
from aiorl.models import evaluate
from aiorl.shm import RolloutSlots
from aiorl.testing import AsyncCountingEnv, FaultyEnv, InjectedFault, StepsTakenEnv, steps_taken
from aiorl.worker import AsyncActing
from aiorl.worker.async_sampler import AsyncEnvSampler
from aiorl.worker.episodes import RolloutSummary

QUICK_PPO = PPO(update_epochs=1, num_minibatches=1)
FAST = {**SMALL, "heartbeat_interval_s": 0.2, "worker_timeout_s": 5.0, "restart_backoff_s": 0.05}


def make_sampler(
    env: Callable[[], Any], *, envs: int, steps: int, num_slots: int = 2, act_batch: int | None = None, **acting: Any
) -> tuple[AsyncEnvSampler, RolloutSlots]:
    template, policy = sampler_template(env, envs=envs, steps=steps, num_slots=num_slots)
    slots = RolloutSlots.create(template.layout, num_slots)
    spec = template.worker_spec(worker_id=0, incarnation=0)
    options = {"env_threads": False, "env_timeout_s": 10.0, "act_wait_s": 0.0, **acting}
    sampler = AsyncEnvSampler(spec, policy, AsyncActing(act_batch=act_batch or envs, **options), lambda: 0)
    return sampler, slots


async def collect(sampler: AsyncEnvSampler, slots: RolloutSlots, count: int) -> list[tuple[RolloutSummary, dict]]:
    """Run the sampler until ``count`` slots are reported (each granted again at once); copies of them."""
    await sampler.start()
    try:
        return await collect_with(sampler, slots, [], count)
    finally:
        slots.close()


async def collect_with(
    sampler: AsyncEnvSampler, slots: RolloutSlots, env_errors: list, count: int
) -> list[tuple[RolloutSummary, dict]]:
    """:func:`collect` on a started sampler, its env errors appended to ``env_errors``; closes the sampler."""
    granted: asyncio.Queue[int] = asyncio.Queue()
    for slot in range(slots.num_slots):
        granted.put_nowait(slot)
    reported: asyncio.Queue[tuple[int, RolloutSummary]] = asyncio.Queue()
    running = asyncio.create_task(
        sampler.run(
            slots, granted, lambda slot, summary, _version: reported.put_nowait((slot, summary)), env_errors.append
        )
    )
    out = []
    try:
        async with asyncio.timeout(60):
            while len(out) < count:
                slot, summary = await reported.get()
                out.append((summary, {name: array.copy() for name, array in slots[slot].items()}))
                granted.put_nowait(slot)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await sampler.aclose()
    return out


async def run_until(trainer: Trainer, done: Callable[[TrainingStats], bool], timeout_s: float = 60) -> None:
    """Train in short runs until ``done(trainer.stats)``."""
    async with asyncio.timeout(timeout_s):
        while not done(trainer.stats):
            await trainer.run(total_steps=1_000)


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_every_column_is_one_envs_contiguous_trajectory_and_segments_chain_without_gaps():
    env = functools.partial(AsyncCountingEnv, episode_length=5, latency_s=0.001)
    sampler, slots = make_sampler(env, envs=4, steps=8)
    rollouts = await collect(sampler, slots, count=6)
    starts: dict[int, list[int]] = {}
    for _summary, slot in rollouts:
        obs, next_obs = slot["obs"], slot["next_obs"]
        for column in range(4):
            ids, counter = obs[:, column, :3], obs[:, column, 3]
            assert (ids == ids[0]).all(), "one env per column"
            assert (np.diff(counter) == 1).all(), "consecutive steps"
            assert next_obs[column, 3] == counter[-1] + 1
            np.testing.assert_array_equal(slot["terminated"][:, column], (counter + 1) % 5 == 0)
            starts.setdefault(int(ids[0, 1]), []).append(int(counter[0]))
    for env_index, firsts in starts.items():
        assert sorted(firsts) == list(range(0, 8 * len(firsts), 8)), f"env {env_index} lost or repeated a segment"
    assert all(summary.env_steps == 32 and summary.discarded_steps == 0 for summary, _ in rollouts)


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_truncated_steps_bootstrap_from_the_value_of_the_final_observation():
    env = functools.partial(AsyncCountingEnv, episode_length=3, truncate=True)
    sampler, slots = make_sampler(env, envs=2, steps=6)
    policy = sampler.batcher.acting.policy
    [(summary, slot)] = await collect(sampler, slots, count=1)
    truncated = slot["truncated"]
    assert truncated[[2, 5]].all() and not slot["terminated"].any()
    final = slot["obs"][[2, 5]].copy()
    final[..., 3] += 1  # the final observation is the one after the truncated step
    with torch.no_grad():
        expected = evaluate(policy, torch.from_numpy(final.reshape(-1, 4)))[1].numpy()
    np.testing.assert_allclose(slot["trunc_values"][[2, 5]].reshape(-1), expected, rtol=1e-5, atol=1e-6)
    assert (slot["trunc_values"][~truncated] == 0).all()
    assert summary.episode_lengths == [3] * 4


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_slow_env_does_not_hold_back_the_others():
    env = functools.partial(AsyncCountingEnv, latency_s=0.001, slow_envs=(0,), slow_latency_s=0.5)
    sampler, slots = make_sampler(env, envs=4, steps=8)
    rollouts = await collect(sampler, slots, count=4)  # env 0 needs 4 s for one segment
    columns_by_env = [int(slot["obs"][0, column, 1]) for _, slot in rollouts for column in range(4)]
    assert 0 not in columns_by_env and len(columns_by_env) == 16


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_one_forward_pass_serves_act_batch_waiting_envs():
    env = functools.partial(AsyncCountingEnv, latency_s=0.001)
    sampler, slots = make_sampler(env, envs=4, steps=8, act_batch=2, act_wait_s=30.0)
    await collect(sampler, slots, count=2)
    assert sampler.batcher.forward_passes > 0
    assert sampler.batcher.actions_taken == 2 * sampler.batcher.forward_passes


class FailingPolicy(torch.nn.Module):
    """A policy whose forward pass raises (as NaN logits make sampling raise)."""

    def forward(self, obs: torch.Tensor) -> Any:
        raise RuntimeError("the policy failed")


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_failing_forward_pass_fails_the_sampler_instead_of_leaving_envs_waiting():
    sampler, slots = make_sampler(functools.partial(AsyncCountingEnv, latency_s=0.001), envs=4, steps=8)
    sampler.batcher.acting.policy = FailingPolicy()
    granted: asyncio.Queue[int] = asyncio.Queue()
    granted.put_nowait(0)
    try:
        await sampler.start()
        with pytest.raises(ExceptionGroup) as caught:
            async with asyncio.timeout(30):
                await sampler.run(slots, granted, lambda *_: None, print)
        assert caught.value.subgroup(RuntimeError) is not None
    finally:
        await sampler.aclose()
        slots.close()


class OwnTimeoutEnv(AsyncCountingEnv):
    """The first one built raises its own TimeoutError (a socket timeout, say) at once in its 5th step."""

    raised = False
    first = -1  # the instance number of the env that raises, set by the test

    async def step(self, action: Any) -> Any:
        if self.counter == 4 and self.instance == OwnTimeoutEnv.first and not OwnTimeoutEnv.raised:
            OwnTimeoutEnv.raised = True
            raise TimeoutError("the service did not answer")
        return await super().step(action)


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_an_envs_own_timeout_error_is_an_env_error_and_the_env_is_closed():
    errors = []
    sampler, slots = make_sampler(OwnTimeoutEnv, envs=2, steps=8)
    await sampler.start()
    first = sampler.envs[0]
    OwnTimeoutEnv.first = first.instance
    try:
        await collect_with(sampler, slots, errors, count=2)
    finally:
        slots.close()
    assert [e.error_type for e in errors] == ["TimeoutError"] and "did not answer" in errors[0].message
    assert first.closed, "an ordinary env error closes the env (only our own timeout abandons it)"


class BlockingEnv(gym.Env):
    """A gymnasium env whose step blocks the thread (like a socket call); counts concurrent steps."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)
    lock = threading.Lock()
    running = 0
    most = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        return np.zeros(2, np.float32), {}

    def step(self, action: Any) -> Any:
        with BlockingEnv.lock:
            BlockingEnv.running += 1
            BlockingEnv.most = max(BlockingEnv.most, BlockingEnv.running)
        time.sleep(0.05)
        with BlockingEnv.lock:
            BlockingEnv.running -= 1
        return np.zeros(2, np.float32), 1.0, False, False, {}


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_env_threads_overlap_blocking_gymnasium_envs():
    sampler, slots = make_sampler(BlockingEnv, envs=4, steps=2, env_threads=True)
    await collect(sampler, slots, count=1)
    assert BlockingEnv.most == 4, "each env steps in its own thread"


@pytest.mark.asyncio
async def test_async_env_trains_with_its_steps_accounted():
    trainer = Trainer(functools.partial(AsyncCountingEnv, latency_s=0.001), QUICK_PPO, **SMALL)
    result = await trainer.run(total_steps=2_000)
    stats = trainer.stats
    assert result.env_steps >= 2_000 and result.episodes > 0
    assert stats.steps_collected == stats.steps_trained + stats.steps_discarded
    assert set(stats.discarded) <= {"shutdown", "policy_lag"}


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_the_reported_lag_is_that_of_the_steps_trained_on_never_above_max_policy_lag():
    # An async env's slot spans policy versions; steps older than max_policy_lag are masked
    # (discarded as policy_lag) and must not count in the lag of what was trained on.
    # How soon steps get too old depends on timing: train in short runs until some were masked.
    lags = []
    env = functools.partial(AsyncCountingEnv, latency_s=0.001)
    async with Trainer(env, QUICK_PPO, max_policy_lag=1, **SMALL) as trainer, asyncio.timeout(60):
        while trainer.stats.discarded.get("policy_lag", 0) == 0:  # else the test checks nothing
            result = await trainer.run(total_steps=3_000, on_update=lambda report: lags.append(report.lag.max))
            assert result.policy_lag is not None and result.policy_lag.max <= 1
    assert lags and max(lags) <= 1


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_strict_on_policy_mode_trains_only_on_the_newest_policy():
    lags = []
    trainer = Trainer(functools.partial(AsyncCountingEnv, latency_s=0.001), QUICK_PPO, max_policy_lag=0, **SMALL)
    await trainer.run(total_steps=2_000, on_update=lambda report: lags.append(report.lag.max))
    assert lags and set(lags) == {0}
    assert trainer.stats.discarded["policy_lag"] == 0


@pytest.mark.asyncio(loop_factories=["uvloop"])
@pytest.mark.parametrize("fault", ["raise", "cancelled"])  # cancelled: the env's lane ended silently, the run hung
async def test_an_env_step_that_raises_is_recreated_and_its_episode_discarded(fault):
    env = functools.partial(AsyncCountingEnv, episode_length=50, fault=fault, fault_at=10)
    async with Trainer(env, QUICK_PPO, **FAST) as trainer:
        await run_until(trainer, lambda stats: stats.discarded["env_error"] > 0)
    assert trainer.stats.env_errors == 1 and trainer.stats.worker_restarts == 0
    assert trainer.stats.discarded["env_error"] == 10, "the broken episode's 10 steps"


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_an_observation_of_the_wrong_shape_is_an_env_error_and_its_episode_discarded(caplog):
    env = functools.partial(AsyncCountingEnv, episode_length=50, fault="wrong_shape", fault_at=10)
    async with Trainer(env, QUICK_PPO, **FAST) as trainer:
        await run_until(trainer, lambda stats: stats.discarded["env_error"] > 0)
    assert trainer.stats.env_errors == 1 and trainer.stats.worker_restarts == 0
    assert trainer.stats.discarded["env_error"] == 10, "the broken episode's 10 steps"
    assert "an observation of shape (5,), but observation_space is Box" in caplog.text


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_hung_env_step_is_cancelled_after_env_timeout_without_stopping_the_worker():
    env = functools.partial(AsyncCountingEnv, episode_length=50, fault="hang", fault_at=10)
    async with Trainer(env, QUICK_PPO, env_timeout_s=0.5, **FAST) as trainer:
        await run_until(trainer, lambda stats: stats.discarded["env_error"] > 0)  # the others go on meanwhile
    assert trainer.stats.env_errors == 1 and trainer.stats.worker_restarts == 0
    assert trainer.stats.discarded["env_error"] == 10


class HangsOnce(FaultyEnv):
    """CartPole whose first instance in worker 0, env 0 blocks its thread forever in step 5."""

    hung = False

    def __init__(self) -> None:
        super().__init__("CartPole-v1", "hang", at=5)
        self.armed = self.armed and not HangsOnce.hung
        HangsOnce.hung = HangsOnce.hung or self.armed


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_blocking_env_that_hangs_in_its_thread_is_abandoned_after_env_timeout():
    async with Trainer(HangsOnce, QUICK_PPO, env_threads=True, env_timeout_s=0.5, **FAST) as trainer:
        await run_until(trainer, lambda stats: stats.discarded["env_error"] > 0)
    assert trainer.stats.env_errors == 1 and trainer.stats.worker_restarts == 0


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_steps_in_flight_in_env_threads_when_the_workers_stop_are_counted(tmp_path):
    env = functools.partial(StepsTakenEnv, str(tmp_path), slow_cartpole)  # 2 ms steps: some in flight at the stop
    async with Trainer(env, QUICK_PPO, env_threads=True, **FAST) as trainer:
        await trainer.run(total_steps=512)
    stats = trainer.stats
    assert stats.steps_collected == stats.steps_trained + stats.steps_discarded
    assert stats.steps_collected == steps_taken(str(tmp_path))  # was up to one step per env short


class StuckUntilReleased(gym.Wrapper):
    """CartPole whose step blocks its thread until ``release`` is set; ``closed`` is set by close()."""

    def __init__(self) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.release, self.closed = threading.Event(), threading.Event()

    def step(self, action: Any) -> Any:
        self.release.wait(timeout=60)
        return self.env.step(action)

    def close(self) -> None:
        self.closed.set()
        super().close()


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_an_abandoned_env_is_closed_if_its_stuck_call_ever_returns():
    env = StuckUntilReleased()
    threaded = ThreadedEnv(env)
    await threaded.reset(seed=0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(threaded.step(0), timeout=0.05)  # as the worker's env_timeout_s does
    threaded.abandon()
    env.release.set()  # the simulator answers at last
    assert await asyncio.to_thread(env.closed.wait, 10), "the abandoned env (and what it started) stayed open"
    await asyncio.to_thread(threaded._thread.join, 10)
    assert not threaded._thread.is_alive()


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_an_env_that_keeps_failing_ends_the_run_with_env_error():
    env = functools.partial(AsyncCountingEnv, episode_length=50, fault="raise", fault_at=3, fault_times=10)
    with pytest.raises(EnvError, match="env_error_limit=3"):
        await Trainer(env, QUICK_PPO, **FAST).run(total_steps=10_000)


class AsyncCartPole(AsyncEnv):
    """CartPole-v1 behind the async interface."""

    def __init__(self) -> None:
        self.env = gym.make("CartPole-v1")
        self.observation_space, self.action_space = self.env.observation_space, self.env.action_space

    async def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        return self.env.reset(seed=seed, options=options)

    async def step(self, action: Any) -> Any:
        await asyncio.sleep(0)
        return self.env.step(action)


@pytest.mark.slow
@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_cartpole_as_an_async_env_learns_to_475_with_appo():
    trainer = Trainer(AsyncCartPole, APPO(), num_workers=2, envs_per_worker=16, rollout_length=32, seed=0)
    result = await trainer.run(total_steps=300_000, target_return=475)
    assert result.reached_target, result
    evaluation = await trainer.evaluate(episodes=3)
    assert evaluation.mean_return > 200


class ExhaustedReplayEnv(gym.Wrapper):
    """CartPole that, like a replay of a log, calls ``next()`` on an iterator that runs out at step 10."""

    def __init__(self) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.log = iter(range(9))

    def step(self, action):
        """The next logged step (StopIteration once the log is exhausted)."""
        next(self.log)
        return self.env.step(action)


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_stop_iteration_from_a_threaded_env_is_an_env_error_not_a_timeout():
    # asyncio cannot put StopIteration into a future: the call never ended and the env
    # waited out env_timeout_s (60 s by default), then was reported as a timeout.
    trainer = Trainer(ExhaustedReplayEnv, QUICK_PPO, env_threads=True, env_timeout_s=60, **FAST)
    with pytest.raises(EnvError, match=r"RuntimeError: the env raised StopIteration"):
        await asyncio.wait_for(trainer.run(total_steps=10**9), timeout=30)


def test_env_threads_with_an_async_env_is_a_config_error():
    with pytest.raises(ConfigError, match="env_threads=True"):
        Trainer(AsyncCountingEnv, env_threads=True)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"act_batch": 0}, "act_batch=0"),
        ({"act_batch": 17, "envs_per_worker": 16}, "act_batch=17"),
        ({"act_wait_s": -1.0}, "act_wait_s=-1.0"),
        ({"env_timeout_s": 0}, "env_timeout_s=0"),
        ({"env_threads": "yes"}, "env_threads='yes'"),
    ],
)
def test_bad_async_options_name_the_field(options, field):
    with pytest.raises(ConfigError, match=field):
        Trainer(AsyncCountingEnv, **options)


@pytest.mark.parametrize("options", [{"act_batch": 4}, {"act_wait_s": 0.5}])
def test_async_acting_options_for_inline_gymnasium_envs_are_refused_not_ignored(options):
    (name,) = options
    with pytest.raises(ConfigError, match=f"{name}=.* batches the actions of async envs"):
        Trainer("CartPole-v1", **options)  # was: accepted, and ignored


class SeedsSeen(AsyncCountingEnv):
    """Records the seed of every reset; env 0 of the first pair built raises in its 3rd step."""

    seeds: ClassVar[list[tuple[int, int | None]]] = []
    armed: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__(episode_length=50)

    async def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        SeedsSeen.seeds.append((self.env_index, seed))
        return await super().reset(seed=seed, options=options)

    async def step(self, action: np.int64) -> Any:
        if self.env_index == 0 and self.counter == 2 and SeedsSeen.armed:
            SeedsSeen.armed = False
            raise InjectedFault("env 0 fails in its 3rd step")
        return await super().step(action)


async def env_errors_of_one_slot(sampler: AsyncEnvSampler, slots: RolloutSlots) -> list:
    """Start ``sampler``, let it fill one slot, return the env errors it reported (closes ``slots``)."""
    env_errors: list = []
    await sampler.start()
    try:
        await collect_with(sampler, slots, env_errors, 1)
    finally:
        slots.close()
    return env_errors


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_an_async_env_re_created_after_an_error_is_seeded_from_the_run_s_seed():
    SeedsSeen.seeds.clear()
    SeedsSeen.armed = True
    sampler, slots = make_sampler(SeedsSeen, envs=2, steps=5)
    env_errors = await env_errors_of_one_slot(sampler, slots)
    assert [error.env_index for error in env_errors] == [0]
    spec = sampler.spec
    assert SeedsSeen.seeds == [(0, spec.env_seed(0)), (1, spec.env_seed(1)), (0, spec.env_seed(0, 1))]  # was None


class ForgotAsync(AsyncEnv):
    """An async env whose reset and step were written with a plain ``def``."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):  # type: ignore[override]
        return np.zeros(2, np.float32), {}

    def step(self, action):  # type: ignore[override]
        return np.zeros(2, np.float32), 1.0, False, False, {}


def test_an_async_env_whose_methods_are_not_coroutines_is_a_config_error_naming_them():
    with pytest.raises(
        ConfigError, match=r"whose reset and step are not coroutine functions: define them with 'async def'"
    ):
        Trainer(ForgotAsync)  # was accepted, then failed in the workers: "object tuple can't be used in 'await'"


class ArrayReward(AsyncCountingEnv):
    """Its rewards are arrays of one element, not numbers."""

    async def step(self, action: np.int64) -> Any:
        obs, reward, terminated, truncated, info = await super().step(action)
        return obs, np.array([reward]), terminated, truncated, info


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_an_async_env_s_malformed_reward_is_an_env_error_naming_it():
    sampler, slots = make_sampler(ArrayReward, envs=1, steps=1)
    env_errors = await env_errors_of_one_slot(sampler, slots)
    assert "step() returned reward array([1.]) of shape (1,), expected a number" in env_errors[0].message
