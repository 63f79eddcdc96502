"""GAE matches a plain per-env, per-step reference, with terminated vs truncated handled apart."""

from __future__ import annotations

import numpy as np

from aiorl.algos import gae


def reference_gae(rewards, values, next_value, terminated, truncated, trunc_values, gamma, lam):
    """Straightforward loops: one env at a time, backwards in time."""
    steps, envs = rewards.shape
    advantages = np.zeros((steps, envs))
    for n in range(envs):
        running = 0.0
        for t in reversed(range(steps)):
            if terminated[t, n]:
                bootstrap, running = 0.0, 0.0
            elif truncated[t, n]:
                bootstrap, running = trunc_values[t, n], 0.0
            else:
                bootstrap = values[t + 1, n] if t + 1 < steps else next_value[n]
            delta = rewards[t, n] + gamma * bootstrap - values[t, n]
            running = delta + gamma * lam * running
            advantages[t, n] = running
    return advantages, advantages + values


def random_rollout(rng, steps=37, envs=5):
    terminated = rng.random((steps, envs)) < 0.08
    truncated = (rng.random((steps, envs)) < 0.08) & ~terminated
    trunc_values = np.where(truncated, rng.normal(size=(steps, envs)), 0.0)
    return (
        rng.normal(size=(steps, envs)),
        rng.normal(size=(steps, envs)),
        rng.normal(size=envs),
        terminated,
        truncated,
        trunc_values,
    )


def test_gae_matches_reference_on_random_rollouts():
    rng = np.random.default_rng(0)
    for gamma, lam in [(0.99, 0.95), (0.9, 1.0), (1.0, 0.0)]:
        inputs = random_rollout(rng)
        got_adv, got_ret = gae(*inputs, gamma, lam)
        want_adv, want_ret = reference_gae(*inputs, gamma, lam)
        np.testing.assert_allclose(got_adv, want_adv, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got_ret, want_ret, rtol=1e-10, atol=1e-10)


def test_truncation_bootstraps_from_final_value_termination_does_not():
    rewards = np.ones((1, 2))
    values = np.zeros((1, 2))
    next_value = np.array([100.0, 100.0])  # the next episode's first state: must not leak in
    terminated = np.array([[True, False]])
    truncated = np.array([[False, True]])
    trunc_values = np.array([[0.0, 10.0]])
    advantages, _ = gae(rewards, values, next_value, terminated, truncated, trunc_values, 0.5, 0.9)
    assert advantages[0, 0] == 1.0  # r only
    assert advantages[0, 1] == 1.0 + 0.5 * 10.0  # r + gamma * V(final obs)


def test_advantage_does_not_cross_episode_boundary():
    rewards = np.array([[0.0], [5.0]])
    values = np.zeros((2, 1))
    done = np.array([[True], [False]])
    advantages, _ = gae(rewards, values, np.zeros(1), done, np.zeros_like(done), np.zeros((2, 1)), 0.99, 0.95)
    assert advantages[0, 0] == 0.0
