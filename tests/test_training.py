"""End to end: PPO on persistent async workers learns CartPole (asserts returns, never times)."""

from __future__ import annotations

import pytest

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
@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_strict_on_policy_ppo_also_learns_cartpole():
    trainer = Trainer("CartPole-v1", seed=1, max_policy_lag=0)
    result = await trainer.run(total_steps=400_000, target_return=475)
    assert result.reached_target, f"mean return {result.mean_return} after {result.env_steps} steps"
    assert result.policy_lag is not None and result.policy_lag.max == 0
