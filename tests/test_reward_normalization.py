"""Reward normalisation: rewards are divided by the running std of the discounted return."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SMALL

from aiorl import PPO, Trainer
from aiorl.algos.batch import RolloutBatch
from aiorl.algos.reward_scaling import RewardNormalizer


def batch_with(rewards: np.ndarray, disc_returns: np.ndarray, valid: np.ndarray) -> RolloutBatch:
    steps, envs = rewards.shape
    zeros = np.zeros((steps, envs), np.float32)
    return RolloutBatch(
        obs=np.zeros((steps, envs, 1), np.float32),
        actions=np.zeros((steps, envs), np.int64),
        logprobs=zeros,
        rewards=rewards.astype(np.float32),
        terminated=zeros.astype(bool),
        truncated=zeros.astype(bool),
        trunc_values=zeros,
        valid=valid,
        disc_returns=disc_returns.astype(np.float32),
        versions=zeros.astype(np.int64),
        next_obs=np.zeros((envs, 1), np.float32),
    )


def test_rewards_are_divided_by_the_std_of_the_valid_discounted_returns():
    rng = np.random.default_rng(0)
    returns = rng.normal(5.0, 4.0, size=(2000, 4))
    valid = np.ones_like(returns, dtype=bool)
    valid[:, 3] = False
    returns[:, 3] = 1e6  # masked steps must not count
    batch = batch_with(np.full_like(returns, 2.0), returns, valid)
    scale = RewardNormalizer().normalize(batch)
    assert scale == pytest.approx(4.0, rel=0.05)
    np.testing.assert_allclose(batch.rewards, 2.0 / scale, rtol=1e-6)


def test_scaled_rewards_are_clipped_and_statistics_round_trip():
    normalizer = RewardNormalizer(clip=1.0)
    batch = batch_with(np.array([[100.0, -100.0]]), np.array([[0.5, -0.5]]), np.ones((1, 2), bool))
    normalizer.normalize(batch)
    np.testing.assert_array_equal(batch.rewards, [[1.0, -1.0]])
    restored = RewardNormalizer()
    restored.load_state_dict(normalizer.state_dict())
    assert restored.state_dict() == normalizer.state_dict()


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_training_with_normalized_rewards_reports_the_scale_and_unscaled_returns():
    scales = []
    trainer = Trainer("CartPole-v1", PPO(update_epochs=1, num_minibatches=1), normalize_rewards=True, **SMALL)
    result = await trainer.run(total_steps=3_000, on_update=lambda u: scales.append(u.learner["reward_scale"]))
    assert scales[-1] > 1.0, "CartPole's discounted returns spread by more than 1"
    assert result.mean_return >= 8.0, "returns are reported in the env's units (CartPole: episode lengths)"
    assert trainer.reward_normalizer is not None and trainer.reward_normalizer.count > 3_000
