"""End to end: PPO on persistent async workers learns CartPole (asserts returns, never times)."""

from __future__ import annotations

import logging

import pytest
from conftest import SMALL

from aiorl import Trainer


@pytest.mark.slow
@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_cartpole_reaches_475_with_default_settings():
    trainer = Trainer("CartPole-v1", seed=0)
    result = await trainer.run(total_steps=400_000, target_return=475)
    assert result.reached_target, f"mean return {result.mean_return} after {result.env_steps} steps"
    assert result.mean_return >= 475
    assert result.worker_restarts == 0


@pytest.mark.slow
@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_pendulum_reaches_minus_250_with_default_settings():
    # gamma 0.99 and no preset: the automatic observation and reward normalisation make it learn.
    trainer = Trainer("Pendulum-v1", seed=0)
    result = await trainer.run(total_steps=800_000, target_return=-250)
    assert result.reached_target, f"mean return {result.mean_return} after {result.env_steps} steps"


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_the_log_says_when_a_preset_exists_and_when_one_is_used(caplog):
    with caplog.at_level(logging.INFO, logger="aiorl"):
        async with Trainer("CartPole-v1", **SMALL):
            pass
        assert "a tuned preset exists for CartPole-v1: Trainer.from_preset('CartPole-v1')" in caplog.text
        async with Trainer.from_preset("CartPole-v1", **SMALL) as trainer:
            assert trainer.preset == "CartPole-v1"
        assert "settings: the tuned preset 'CartPole-v1'" in caplog.text


@pytest.mark.slow
@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_strict_on_policy_ppo_also_learns_cartpole():
    trainer = Trainer("CartPole-v1", seed=1, max_policy_lag=0)
    result = await trainer.run(total_steps=400_000, target_return=475)
    assert result.reached_target, f"mean return {result.mean_return} after {result.env_steps} steps"
    assert result.policy_lag is not None and result.policy_lag.max == 0


@pytest.mark.slow
@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_pendulum_preset_reaches_minus_300():
    trainer = Trainer.from_preset("Pendulum-v1", seed=0)
    result = await trainer.run(total_steps=600_000, target_return=-300)
    assert result.reached_target, f"mean return {result.mean_return} after {result.env_steps} steps"


@pytest.mark.slow
@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_acrobot_preset_reaches_minus_100():
    trainer = Trainer.from_preset("Acrobot-v1", seed=0)
    result = await trainer.run(total_steps=400_000, target_return=-100)
    assert result.reached_target, f"mean return {result.mean_return} after {result.env_steps} steps"


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"preset='Pong' is unknown; known presets: ALE/Breakout-v5, ALE/Pong-v5, "):
        Trainer.from_preset("Pong")


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_run_reports_how_busy_its_learner_was():
    trainer = Trainer("CartPole-v1", **SMALL)
    first = await trainer.run(total_steps=2048)
    second = await trainer.run(total_steps=1024)
    for result in (first, second):
        assert result.updates > 0
        assert 0 < result.learner_time <= result.wall_time
        assert result.learner_busy == pytest.approx(result.learner_time / result.wall_time)
