"""V-trace matches plain per-env, per-step references of the paper's definitions."""

from __future__ import annotations

import numpy as np
import pytest

from aiorl.algos import gae
from aiorl.algos.vtrace import vtrace


def boundary_value(t, n, values, next_value, terminated, truncated, trunc_values, targets=None):
    """V(x_{t+1}) (or v_{t+1} given ``targets``) of the state step t led to, for env n."""
    if terminated[t, n]:
        return 0.0
    if truncated[t, n]:
        return trunc_values[t, n]
    if t + 1 < values.shape[0]:
        return (values if targets is None else targets)[t + 1, n]
    return next_value[n]


def reference_vtrace(
    mu_logp, pi_logp, rewards, values, next_value, terminated, truncated, trunc_values, gamma, rho_bar, c_bar
):
    """The recursion of Remark 1, one env at a time, backwards in time:

    v_s = V(x_s) + delta_s V + gamma c_s (v_{s+1} - V(x_{s+1})), the correction being 0
    after an episode boundary or the rollout's end.
    """
    steps, envs = rewards.shape
    vs = np.zeros((steps, envs))
    advantages = np.zeros((steps, envs))
    boundary = (values, next_value, terminated, truncated, trunc_values)
    for n in range(envs):
        for t in reversed(range(steps)):
            ratio = np.exp(pi_logp[t, n] - mu_logp[t, n])
            rho, c = min(rho_bar, ratio), min(c_bar, ratio)
            next_v = boundary_value(t, n, *boundary)
            delta = rho * (rewards[t, n] + gamma * next_v - values[t, n])
            episode_goes_on = not (terminated[t, n] or truncated[t, n]) and t + 1 < steps
            correction = vs[t + 1, n] - values[t + 1, n] if episode_goes_on else 0.0
            vs[t, n] = values[t, n] + delta + gamma * c * correction
    for n in range(envs):
        for t in range(steps):
            ratio = np.exp(pi_logp[t, n] - mu_logp[t, n])
            next_vs = boundary_value(t, n, *boundary, targets=vs)
            advantages[t, n] = min(rho_bar, ratio) * (rewards[t, n] + gamma * next_vs - values[t, n])
    return vs, advantages


def reference_vtrace_sum(
    mu_logp, pi_logp, rewards, values, next_value, terminated, truncated, trunc_values, gamma, rho_bar, c_bar
):
    """The n-step sum of eq. 1, forwards from each state until its episode or the rollout ends:

    v_s = V(x_s) + sum_t gamma^(t-s) (prod_{i=s}^{t-1} c_i) delta_t V.
    """
    steps, envs = rewards.shape
    vs = np.zeros((steps, envs))
    for n in range(envs):
        for s in range(steps):
            total, weight = values[s, n], 1.0
            for t in range(s, steps):
                ratio = np.exp(pi_logp[t, n] - mu_logp[t, n])
                next_v = boundary_value(t, n, values, next_value, terminated, truncated, trunc_values)
                total += weight * min(rho_bar, ratio) * (rewards[t, n] + gamma * next_v - values[t, n])
                if terminated[t, n] or truncated[t, n]:
                    break
                weight *= gamma * min(c_bar, ratio)
            vs[s, n] = total
    return vs


def random_rollout(rng, steps=29, envs=6, spread=0.7):
    """Random off-policy inputs with terminations and truncations inside the rollout."""
    terminated = rng.random((steps, envs)) < 0.1
    truncated = (rng.random((steps, envs)) < 0.1) & ~terminated
    mu_logp = rng.normal(-1.0, 0.5, size=(steps, envs))
    return (
        mu_logp,
        mu_logp + rng.normal(0.0, spread, size=(steps, envs)),
        rng.normal(size=(steps, envs)),
        rng.normal(size=(steps, envs)),
        rng.normal(size=envs),
        terminated,
        truncated,
        np.where(truncated, rng.normal(size=(steps, envs)), 0.0),
    )


@pytest.mark.parametrize(("gamma", "rho_bar", "c_bar"), [(0.99, 1.0, 1.0), (0.9, 2.0, 0.5), (1.0, 0.5, 1.5)])
def test_vtrace_matches_recursive_reference(gamma, rho_bar, c_bar):
    rng = np.random.default_rng(0)
    inputs = random_rollout(rng)
    assert inputs[5].any() and inputs[6].any(), "the rollout must contain both kinds of boundary"
    got_vs, got_adv = vtrace(*inputs, gamma, rho_bar, c_bar)
    want_vs, want_adv = reference_vtrace(*inputs, gamma, rho_bar, c_bar)
    np.testing.assert_allclose(got_vs, want_vs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got_adv, want_adv, rtol=1e-10, atol=1e-10)


def test_vtrace_matches_the_n_step_sum_of_the_paper():
    rng = np.random.default_rng(1)
    inputs = random_rollout(rng)
    got_vs, _ = vtrace(*inputs, 0.95, 1.0, 1.0)
    np.testing.assert_allclose(got_vs, reference_vtrace_sum(*inputs, 0.95, 1.0, 1.0), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("gamma", [0.99, 0.5])
def test_on_policy_vtrace_equals_gae_with_lambda_1(gamma):
    rng = np.random.default_rng(2)
    mu_logp, _, *rest = random_rollout(rng)
    vs, pg_advantages = vtrace(mu_logp, mu_logp, *rest, gamma, 1.0, 1.0)
    advantages, returns = gae(*rest, gamma, 1.0)
    np.testing.assert_allclose(vs, returns, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(pg_advantages, advantages, rtol=1e-10, atol=1e-10)


def test_truncation_bootstraps_from_final_value_termination_does_not():
    logp = np.zeros((1, 2))
    rewards = np.ones((1, 2))
    values = np.zeros((1, 2))
    next_value = np.array([100.0, 100.0])  # the next episode's first state: must not leak in
    terminated = np.array([[True, False]])
    truncated = np.array([[False, True]])
    trunc_values = np.array([[0.0, 10.0]])
    vs, pg_advantages = vtrace(logp, logp, rewards, values, next_value, terminated, truncated, trunc_values, 0.5)
    np.testing.assert_array_equal(vs, [[1.0, 1.0 + 0.5 * 10.0]])
    np.testing.assert_array_equal(pg_advantages, [[1.0, 1.0 + 0.5 * 10.0]])


@pytest.mark.parametrize("boundary", ["terminated", "truncated"])
def test_trace_does_not_cross_episode_boundary(boundary):
    logp = np.zeros((2, 1))
    rewards = np.array([[0.0], [5.0]])  # the reward of the next episode must not leak back
    values = np.zeros((2, 1))
    done = np.array([[True], [False]])
    no = np.zeros_like(done)
    ends = (done, no) if boundary == "terminated" else (no, done)
    vs, pg_advantages = vtrace(logp, logp, rewards, values, np.zeros(1), *ends, np.zeros((2, 1)), 0.99)
    assert vs[0, 0] == 0.0
    assert pg_advantages[0, 0] == 0.0


def test_importance_weights_are_clipped():
    # pi/mu = e^3 at every step, one env, no boundary, V = 0: rho = rho_bar, c = c_bar.
    mu_logp = np.full((2, 1), -3.0)
    pi_logp = np.zeros((2, 1))
    rewards = np.ones((2, 1))
    zeros = np.zeros((2, 1))
    no = np.zeros((2, 1), dtype=bool)
    vs, pg_advantages = vtrace(mu_logp, pi_logp, rewards, zeros, np.zeros(1), no, no, zeros, 0.5, 2.0, 0.25)
    # v_1 = 0 + 2 * 1; v_0 = 0 + 2 * 1 + 0.5 * 0.25 * (v_1 - 0)
    np.testing.assert_allclose(vs[:, 0], [2.0 + 0.125 * 2.0, 2.0])
    # A_0 = rho_0 * (r_0 + gamma * v_1 - V(x_0))
    np.testing.assert_allclose(pg_advantages[:, 0], [2.0 * (1.0 + 0.5 * 2.0), 2.0])


def test_huge_ratios_do_not_overflow():
    inputs = list(random_rollout(np.random.default_rng(3)))
    inputs[1] = inputs[0] + 1e4  # pi/mu = e^10000
    vs, pg_advantages = vtrace(*(np.asarray(x) for x in inputs), 0.99)
    assert np.isfinite(vs).all() and np.isfinite(pg_advantages).all()


def test_float32_inputs_give_float32_outputs():
    inputs = [x.astype(np.float32) if x.dtype == np.float64 else x for x in random_rollout(np.random.default_rng(4))]
    vs, pg_advantages = vtrace(*inputs, 0.99)
    assert vs.dtype == np.float32 and pg_advantages.dtype == np.float32
