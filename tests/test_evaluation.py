"""Evaluation plays whole episodes on its own envs without disturbing collection."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import math
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import SMALL
from gymnasium.envs.registration import EnvSpec

from aiorl import PPO, AsyncEnv, ConfigError, EvaluationFinished, EvaluationTimeout, Trainer, TrainingUpdate
from aiorl.distributions import ActionDistribution
from aiorl.envs import ObservationEncoder
from aiorl.envs.async_env import StepResult
from aiorl.evaluation import PeriodicEvaluation, choose_action, play
from aiorl.models import ActorCritic
from aiorl.testing import AsyncCountingEnv, EndlessEnv
from aiorl.video import GifRecorder

QUICK_PPO = PPO(update_epochs=2, num_minibatches=2)


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_evaluate_plays_the_requested_episodes_with_the_published_policy():
    async with Trainer("CartPole-v1", QUICK_PPO, **SMALL) as trainer:
        await trainer.run(total_steps=2_000)
        result = await trainer.evaluate(episodes=3)
    assert result.episodes == 3 and len(result.lengths) == 3
    assert result.policy_version == trainer.policy_version
    assert all(length >= 1 and math.isfinite(ret) for ret, length in zip(result.returns, result.lengths, strict=True))
    assert result.returns == tuple(float(length) for length in result.lengths)  # CartPole pays 1 per step


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_deterministic_evaluation_is_repeatable_and_does_not_count_as_collection():
    trainer = Trainer("CartPole-v1", QUICK_PPO, **SMALL)
    first = await trainer.evaluate(episodes=2, seed=5)
    second = await trainer.evaluate(episodes=2, seed=5)
    assert first.returns == second.returns
    assert trainer.stats.steps_collected == 0 and trainer.worker_pids == {}


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_numpy_evaluation_arguments_are_taken_as_pythons_own():
    trainer = Trainer("CartPole-v1", QUICK_PPO, **SMALL)
    plain = await trainer.evaluate(episodes=2, seed=5, max_episode_steps=40, timeout_s=60.0)
    numpy = await trainer.evaluate(
        episodes=np.int64(2), seed=np.int64(5), max_episode_steps=np.int32(40), timeout_s=np.float32(60)
    )  # were refused: an np.int64 is no int
    assert numpy.returns == plain.returns and numpy.lengths == plain.lengths
    with pytest.raises(ConfigError, match=r"episodes=0 must be an integer >= 1"):
        await trainer.evaluate(episodes=np.int64(0))


SLOW_EPISODES = functools.partial(AsyncCountingEnv, episode_length=50, latency_s=0.01)
"""Episodes of 0.5 s (50 steps of 10 ms): an evaluation of 4 lasts ~2 s, long enough to see
training go on meanwhile (workers step 4 such envs concurrently: ~800 steps/s, an update of
128 steps every ~0.2 s)."""


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_evaluate_while_training_in_another_task_does_not_pause_training():
    update_times: list[float] = []
    async with Trainer(SLOW_EPISODES, QUICK_PPO, **SMALL) as trainer:
        training = asyncio.create_task(
            # ~3.5 s of training: over 20 updates still to come once the ~2 s evaluation starts after the first
            trainer.run(total_steps=3_000, on_update=lambda _report: update_times.append(time.monotonic()))
        )
        while not update_times:
            await asyncio.sleep(0.05)
        started = time.monotonic()
        result = await trainer.evaluate(episodes=4, deterministic=False)
        finished = time.monotonic()
        assert result.episodes == 4
        run = await training
    assert run.env_steps >= 3_000
    during = [t for t in update_times if started < t < finished]
    assert len(during) >= 2, f"{len(during)} updates during a {finished - started:.1f} s evaluation"


def test_bad_episode_count_is_rejected():
    trainer = Trainer("CartPole-v1")
    with pytest.raises(ValueError, match=r"episodes=0"):
        asyncio.run(trainer.evaluate(episodes=0))


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_run_evaluates_every_eval_interval_steps_without_pausing_training():
    trainer = Trainer(SLOW_EPISODES, QUICK_PPO, eval_interval_steps=1_000, eval_episodes=4, **SMALL)
    stream = trainer.events(maxsize=100_000)
    result = await trainer.run(total_steps=5_000)  # outside `async with`: the stream ends with the run
    events = [event async for event in stream if isinstance(event, TrainingUpdate | EvaluationFinished)]
    assert 1 <= len(result.evaluations) <= 5, "at most one per 1,000 trained steps, one at a time"
    assert all(evaluation.episodes == 4 for evaluation in result.evaluations)
    versions = [evaluation.policy_version for evaluation in result.evaluations]
    assert versions == sorted(versions) and versions[-1] <= result.policy_version
    # Each evaluation starts right after the update that made its version; training goes on
    # while it plays, so later versions are trained before it finishes.
    for index, event in enumerate(events):
        if isinstance(event, EvaluationFinished):
            version = event.result.policy_version
            trained_meanwhile = [
                e for e in events[:index] if isinstance(e, TrainingUpdate) and e.policy_version > version
            ]
            assert len(trained_meanwhile) >= 2, f"evaluation of version {version}: training paused"


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_an_async_env_is_evaluated_on_its_own_loop():
    trainer = Trainer(functools.partial(AsyncCountingEnv, episode_length=7), QUICK_PPO, **SMALL)
    result = await trainer.evaluate(episodes=2)
    assert result.returns == (7.0, 7.0) and result.lengths == (7, 7)


# ---- bounded episodes -----------------------------------------------------------------------


def greedy_actor(env: gym.Env) -> Callable[[object, object], object]:
    """Acts with a fresh policy for ``env``'s spaces (which actions does not matter here)."""
    encoder = ObservationEncoder.for_space(env.observation_space)
    dist = ActionDistribution.for_space(env.action_space)
    policy = ActorCritic(encoder.shape, dist)
    buffer = np.zeros((1, *encoder.shape), dtype=np.float32)

    @torch.no_grad()
    def act(obs: object, action_mask: object) -> object:
        return choose_action(policy, encoder, dist, obs, buffer, deterministic=True, action_mask=action_mask)

    return act


def test_an_episode_that_never_ends_is_cut_at_the_step_cap_of_the_envs_spec(caplog):
    env = EndlessEnv(give_up_after=10_000)
    env.spec = EnvSpec("aiorl-test/Endless-v0", entry_point="aiorl.testing:EndlessEnv", max_episode_steps=30)
    with caplog.at_level(logging.WARNING, logger="aiorl"):
        result = play(env, greedy_actor(env), episodes=2, seed=0, policy_version=3)
    assert result.lengths == (30, 30) and result.returns == (30.0, 30.0)
    assert result.capped == 2 and result.policy_version == 3
    assert "'aiorl-test/Endless-v0'" in caplog.text and "max_episode_steps=30" in caplog.text


def test_an_episode_the_env_ends_at_the_cap_is_not_counted_as_capped():
    env = gym.make("CartPole-v1", max_episode_steps=5)  # the time limit truncates at step 5
    result = play(env, greedy_actor(env), episodes=2, seed=0, policy_version=0, max_episode_steps=5)
    assert result.lengths == (5, 5) and result.capped == 0


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_evaluating_an_env_that_never_ends_an_episode_returns_at_eval_max_episode_steps():
    trainer = Trainer(functools.partial(EndlessEnv, give_up_after=5_000), QUICK_PPO, eval_max_episode_steps=40, **SMALL)
    result = await trainer.evaluate(episodes=2)
    assert result.lengths == (40, 40) and result.capped == 2
    shorter = await trainer.evaluate(episodes=1, max_episode_steps=7)  # the argument overrides the option
    assert shorter.lengths == (7,) and shorter.capped == 1


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_periodic_evaluation_of_an_env_that_never_ends_an_episode_does_not_hang_the_run():
    trainer = Trainer(
        functools.partial(EndlessEnv, give_up_after=5_000),
        QUICK_PPO,
        eval_interval_steps=500,
        eval_episodes=2,
        eval_max_episode_steps=100,
        **SMALL,
    )
    result = await asyncio.wait_for(trainer.run(total_steps=1_500), timeout=120)
    assert result.env_steps >= 1_500 and result.evaluations
    assert all(e.lengths == (100, 100) and e.capped == 2 for e in result.evaluations)


def test_an_evaluation_past_its_wall_clock_limit_raises_naming_the_env_and_the_limit():
    env = EndlessEnv(give_up_after=10**9)
    started = time.monotonic()
    with pytest.raises(EvaluationTimeout, match=r"env 'EndlessEnv' did not finish within timeout_s=0.2 \(episode 1 of"):
        play(env, greedy_actor(env), episodes=1, seed=0, policy_version=0, max_episode_steps=10**9, timeout_s=0.2)
    assert time.monotonic() - started < 30  # stopped by the limit, not by the env


class NeverAnsweringEnv(AsyncEnv[np.ndarray, np.int64]):
    """An async env whose ``step`` never returns (a request that is never answered)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    async def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """The first observation."""
        return np.zeros(2, dtype=np.float32), {}

    async def step(self, action: np.int64) -> StepResult:
        """Wait forever."""
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Nothing to release."""


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_an_async_env_call_that_never_returns_is_cancelled_at_the_evaluation_timeout():
    trainer = Trainer(NeverAnsweringEnv, QUICK_PPO, eval_timeout_s=0.3, **SMALL)
    with pytest.raises(EvaluationTimeout, match=r"'NeverAnsweringEnv' did not finish within timeout_s=0.3"):
        await asyncio.wait_for(trainer.evaluate(episodes=1), timeout=60)


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_an_async_env_call_in_evaluation_is_bounded_by_env_timeout_s_too():
    trainer = Trainer(NeverAnsweringEnv, QUICK_PPO, env_timeout_s=0.3, eval_timeout_s=5, **SMALL)
    with pytest.raises(EvaluationTimeout, match=r"'NeverAnsweringEnv': a call took longer than env_timeout_s=0.3"):
        await asyncio.wait_for(trainer.evaluate(episodes=1), timeout=60)  # before: only eval_timeout_s ended it


class CountedEndlessEnv(EndlessEnv):
    """:class:`EndlessEnv` whose steps (in any instance of this process) are counted, 1 ms each."""

    steps = 0

    def step(self, action):
        """One more step, counted."""
        CountedEndlessEnv.steps += 1
        time.sleep(0.001)
        return super().step(action)


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_cancelled_evaluation_stops_its_thread_instead_of_playing_on():
    # A thread cannot be cancelled: before, it played its (capped) episodes to the end, and an
    # interpreter exiting, or a Ctrl-C of `aiorl train` with periodic evaluation, waited for it.
    trainer = Trainer(CountedEndlessEnv, QUICK_PPO, **SMALL)
    evaluation = asyncio.create_task(trainer.evaluate(episodes=1, max_episode_steps=50_000))
    while CountedEndlessEnv.steps < 50:
        await asyncio.sleep(0.01)
    evaluation.cancel()
    with pytest.raises(asyncio.CancelledError):
        await evaluation
    stopped_at = CountedEndlessEnv.steps
    await asyncio.sleep(0.3)
    assert CountedEndlessEnv.steps == stopped_at < 50_000


def test_bad_episode_limits_are_rejected():
    env = EndlessEnv()
    with pytest.raises(ConfigError, match=r"max_episode_steps=0 must be an integer >= 1"):
        play(env, greedy_actor(env), episodes=1, seed=0, policy_version=0, max_episode_steps=0)
    with pytest.raises(ConfigError, match=r"timeout_s=-1 must be a positive number"):
        play(env, greedy_actor(env), episodes=1, seed=0, policy_version=0, timeout_s=-1)
    with pytest.raises(ConfigError, match=r"eval_max_episode_steps=0 .*\n?.*eval_timeout_s=inf"):
        Trainer("CartPole-v1", eval_max_episode_steps=0, eval_timeout_s=math.inf)


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_an_evaluation_falling_due_after_its_run_ended_is_not_started(recwarn):
    async def evaluate():
        raise AssertionError("no evaluation once the run's tasks have ended")

    async with asyncio.TaskGroup() as tasks:
        periodic = PeriodicEvaluation(evaluate, interval=100, steps_trained=0, tasks=tasks)
    # An update that a second cancellation left in the learner thread is settled after the run's
    # task group ended: its after-update call must not fail on it ("TaskGroup ... is finished").
    periodic.after_update(100)
    periodic.raise_failure()
    gc.collect()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


def test_a_recording_that_fails_to_save_leaves_the_earlier_gif_whole_and_no_temporary_file(tmp_path):
    from PIL import Image

    path = tmp_path / "eval.gif"
    frames = [np.full((8, 8, 3), shade, dtype=np.uint8) for shade in (0, 128, 255)]
    earlier = GifRecorder(path)
    for frame in frames:
        earlier(frame)
    assert earlier.save() == path
    with Image.open(path) as gif:
        assert gif.n_frames == 3
    before = path.read_bytes()

    failing = GifRecorder(path)
    failing(frames[0])
    failing.frames.append("not a frame")  # Pillow fails after writing the first frame
    with pytest.raises(AttributeError):
        failing.save()
    assert path.read_bytes() == before  # was truncated to the part written before the failure
    assert [p.name for p in tmp_path.iterdir()] == ["eval.gif"]
