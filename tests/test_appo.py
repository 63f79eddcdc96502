"""APPO: config validation, the learner on synthetic batches, and end to end on CartPole."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from aiorl import ConfigError, LearnerError, Trainer
from aiorl.algos.appo import APPO, APPOLearner
from aiorl.algos.batch import RolloutBatch
from aiorl.distributions import ActionDistribution
from aiorl.models import ActorCritic, ObservationNormalizer, flat_weights

OBS_DIM = 4
QUICK = {"update_epochs": 2, "num_minibatches": 2}


def make_learner(space: gym.Space | None = None, **config) -> APPOLearner:
    torch.manual_seed(0)
    dist = ActionDistribution.for_space(space or gym.spaces.Discrete(2))
    return APPO(**config).make_learner(ActorCritic((OBS_DIM,), dist), dist, "cpu")


def bandit_batch(learner: APPOLearner, seed: int = 0, steps: int = 16, envs: int = 8) -> RolloutBatch:
    """One-step episodes acted by the learner's own policy.

    Discrete action 0 earns 1, any other 0; a continuous action earns ``-|a|^2``.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    obs = rng.normal(size=(steps, envs, OBS_DIM)).astype(np.float32)
    with torch.no_grad():
        dist_inputs, _ = learner.policy(torch.from_numpy(obs.reshape(steps * envs, OBS_DIM)))
        actions, logprobs = learner.dist.sample(dist_inputs)
    actions = actions.numpy().reshape(steps, envs, *learner.dist.action_shape)
    categorical = learner.dist.kind == "categorical"
    rewards = (actions == 0).astype(np.float32) if categorical else -(actions**2).sum(axis=-1)
    return RolloutBatch(
        obs=obs,
        actions=actions,
        logprobs=logprobs.numpy().reshape(steps, envs),
        rewards=rewards,
        terminated=np.ones((steps, envs), dtype=bool),
        truncated=np.zeros((steps, envs), dtype=bool),
        trunc_values=np.zeros((steps, envs), dtype=np.float32),
        valid=np.ones((steps, envs), dtype=bool),
        disc_returns=np.zeros((steps, envs), dtype=np.float32),
        versions=np.zeros((steps, envs), dtype=np.int64),
        next_obs=rng.normal(size=(envs, OBS_DIM)).astype(np.float32),
    )


def prob_of_action_0(learner: APPOLearner, obs: np.ndarray) -> float:
    with torch.no_grad():
        logits, _ = learner.policy(torch.from_numpy(obs.reshape(-1, OBS_DIM)))
    return float(torch.softmax(logits, dim=-1)[:, 0].mean())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("learning_rate", 0.0),
        ("gamma", 1.5),
        ("rho_bar", -1.0),
        ("c_bar", float("inf")),
        ("clip_coef", float("nan")),
        ("ent_coef", -0.1),
        ("update_epochs", 0),
        ("num_minibatches", True),
        ("lr_schedule", "cosine"),
    ],
)
def test_bad_appo_hyperparameter_names_field_and_value(field, value):
    with pytest.raises(ValueError, match=rf"APPO\.{field}={value!r}") as info:
        APPO(**{field: value})
    assert isinstance(info.value, ConfigError)


def test_every_bad_appo_hyperparameter_is_listed_at_once():
    with pytest.raises(ConfigError) as info:
        APPO(rho_bar=0.0, c_bar=0.0)
    assert len(info.value.problems) == 2


def test_update_returns_finite_metrics_and_changes_weights():
    learner = make_learner(**QUICK)
    before = learner.weights()
    metrics = learner.update(bandit_batch(learner), progress=0.5)
    assert set(metrics) >= {"policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "rho_mean"}
    assert all(np.isfinite(value) for value in metrics.values()), metrics
    assert metrics["learning_rate"] == pytest.approx(APPO().learning_rate * 0.5)  # linear schedule
    assert metrics["rho_mean"] == pytest.approx(1.0, abs=1e-5)  # the batch is on-policy
    assert not np.array_equal(learner.weights(), before)


def test_weights_round_trip():
    learner = make_learner()
    weights = learner.weights()
    learner.update(bandit_batch(learner), progress=0.0)
    learner.load_weights(weights)
    np.testing.assert_array_equal(flat_weights(learner.policy), weights)


def test_updates_favour_the_rewarded_action_and_fit_the_value():
    learner = make_learner()
    probe = bandit_batch(learner, seed=99)
    p_before = prob_of_action_0(learner, probe.obs)
    value_losses = [learner.update(bandit_batch(learner, seed=i), progress=0.0)["value_loss"] for i in range(10)]
    assert prob_of_action_0(learner, probe.obs) > p_before + 0.2
    assert value_losses[-1] < value_losses[0]


def test_stale_behaviour_policy_is_corrected_by_truncated_importance_weights():
    learner = make_learner(**QUICK)
    batch = bandit_batch(learner)
    batch.logprobs = batch.logprobs + 1.0  # mu was e times more likely to act as it did than pi is
    metrics = learner.update(batch, progress=0.0)
    assert metrics["rho_mean"] == pytest.approx(np.exp(-1.0), rel=1e-4)


def break_episode(batch: RolloutBatch, env: int = 3, steps: int = 5) -> None:
    """Make env ``env``'s first ``steps`` steps an episode broken by an env error, as the
    sampler leaves it: masked out, and ended by an inert truncated row."""
    batch.valid[:steps, env] = False
    batch.terminated[:steps, env] = False
    batch.truncated[steps - 1, env] = True


def test_masked_steps_do_not_affect_the_update():
    learners, batches = [], []
    for _ in range(2):
        learners.append(make_learner(**QUICK))
        batches.append(bandit_batch(learners[-1]))
        break_episode(batches[-1])
    garbage = batches[1]
    garbage.rewards[:5, 3] = 1e6
    garbage.obs[:5, 3] = 50.0
    garbage.logprobs[:5, 3] = -30.0
    for learner, batch in zip(learners, batches, strict=True):
        torch.manual_seed(1)  # the same minibatch order
        learner.update(batch, progress=0.0)
    np.testing.assert_allclose(learners[1].weights(), learners[0].weights(), rtol=1e-6, atol=1e-7)
    assert not np.array_equal(learners[0].weights(), make_learner().weights())


def test_a_fully_masked_batch_leaves_the_weights_alone():
    learner = make_learner()
    batch = bandit_batch(learner)
    batch.valid[:] = False
    weights = learner.weights()
    assert set(learner.update(batch, progress=0.0)) == {"learning_rate"}
    np.testing.assert_array_equal(learner.weights(), weights)


def test_observation_statistics_follow_the_valid_steps():
    dist = ActionDistribution.for_space(gym.spaces.Discrete(2))
    policy = ObservationNormalizer(ActorCritic((OBS_DIM,), dist), (OBS_DIM,))
    learner = APPO(**QUICK).make_learner(policy, dist, "cpu")
    batch = bandit_batch(learner)
    batch.obs += 3.0
    break_episode(batch)
    batch.obs[:5, 3] = 1e6
    metrics = learner.update(batch, progress=0.0)
    assert all(np.isfinite(value) for value in metrics.values()), metrics
    np.testing.assert_allclose(policy.mean.numpy(), batch.obs[batch.valid].mean(axis=0), rtol=1e-3)
    batch.valid[:] = False
    learner.update(batch, progress=0.0)
    assert np.isfinite(policy.mean.numpy()).all() and np.isfinite(policy.var.numpy()).all()


def test_non_finite_loss_raises_learner_error():
    learner = make_learner()
    batch = bandit_batch(learner)
    batch.rewards[2, 1] = np.nan
    with pytest.raises(LearnerError, match=r"non-finite APPO loss"):
        learner.update(batch, progress=0.0)


def test_gaussian_actions_update():
    learner = make_learner(gym.spaces.Box(-1.0, 1.0, (2,), np.float32), **QUICK)
    metrics = learner.update(bandit_batch(learner), progress=0.0)
    assert all(np.isfinite(value) for value in metrics.values()), metrics


@pytest.mark.slow
@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_appo_learns_cartpole():
    trainer = Trainer("CartPole-v1", APPO(), seed=0)
    result = await trainer.run(total_steps=400_000, target_return=475)
    assert result.reached_target, f"mean return {result.mean_return} after {result.env_steps} steps"
    assert result.mean_return >= 475
    assert result.worker_restarts == 0
