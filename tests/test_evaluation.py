"""Evaluation plays whole episodes on its own envs without disturbing collection."""

from __future__ import annotations

import asyncio
import functools
import math

import pytest
from conftest import SMALL

from aiorl import PPO, Trainer
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


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_evaluate_while_training_in_another_task():
    async with Trainer("CartPole-v1", QUICK_PPO, **SMALL) as trainer:
        training = asyncio.create_task(trainer.run(total_steps=6_000))
        await asyncio.sleep(0.5)
        result = await trainer.evaluate(episodes=2, deterministic=False)
        assert result.episodes == 2
        run = await training
    assert run.env_steps >= 6_000


def test_bad_episode_count_is_rejected():
    trainer = Trainer("CartPole-v1")
    with pytest.raises(ValueError, match=r"episodes=0"):
        asyncio.run(trainer.evaluate(episodes=0))


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_run_evaluates_every_eval_interval_steps_without_pausing_training():
    trainer = Trainer("CartPole-v1", QUICK_PPO, eval_interval_steps=1_000, eval_episodes=2, **SMALL)
    result = await trainer.run(total_steps=4_000)
    assert 1 <= len(result.evaluations) <= 4, "at most one per 1,000 trained steps, one at a time"
    assert all(evaluation.episodes == 2 for evaluation in result.evaluations)
    versions = [evaluation.policy_version for evaluation in result.evaluations]
    assert versions == sorted(versions) and versions[-1] <= result.policy_version


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_an_async_env_is_evaluated_on_its_own_loop():
    trainer = Trainer(functools.partial(AsyncCountingEnv, episode_length=7), QUICK_PPO, **SMALL)
    result = await trainer.evaluate(episodes=2)
    assert result.returns == (7.0, 7.0) and result.lengths == (7, 7)
