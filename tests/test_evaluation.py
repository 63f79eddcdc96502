"""Evaluation plays whole episodes on its own envs without disturbing collection."""

from __future__ import annotations

import asyncio
import functools
import math
import time

import pytest
from conftest import SMALL

from aiorl import PPO, EvaluationFinished, Trainer, TrainingUpdate
from aiorl.testing import AsyncCountingEnv

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


SLOW_EPISODES = functools.partial(AsyncCountingEnv, episode_length=50, latency_s=0.01)
"""Episodes of 0.5 s (50 steps of 10 ms): an evaluation of 4 lasts ~2 s, long enough to see
training go on meanwhile (workers step 4 such envs concurrently: ~800 steps/s, an update of
128 steps every ~0.2 s)."""


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_evaluate_while_training_in_another_task_does_not_pause_training():
    update_times: list[float] = []
    async with Trainer(SLOW_EPISODES, QUICK_PPO, **SMALL) as trainer:
        training = asyncio.create_task(
            trainer.run(total_steps=6_000, on_update=lambda _report: update_times.append(time.monotonic()))
        )
        while not update_times:
            await asyncio.sleep(0.05)
        started = time.monotonic()
        result = await trainer.evaluate(episodes=4, deterministic=False)
        finished = time.monotonic()
        assert result.episodes == 4
        run = await training
    assert run.env_steps >= 6_000
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
