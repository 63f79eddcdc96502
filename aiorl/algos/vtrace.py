"""V-trace off-policy targets (Espeholt et al., 2018, "IMPALA", Section 4).

Read it against the paper. ``mu`` is the behaviour policy (the one that acted; its
log-prob was recorded by the worker), ``pi`` the target policy (the learner's
network), ``V`` the learner's value function. For each step ``t``::

    rho_t = min(rho_bar, pi(a_t|x_t) / mu(a_t|x_t))      truncated importance weight
    c_t   = min(c_bar,   pi(a_t|x_t) / mu(a_t|x_t))      "trace cutting" coefficient
    delta_t V = rho_t * (r_t + gamma * V(x_{t+1}) - V(x_t))

The n-step V-trace target of state ``x_s`` (eq. 1) is::

    v_s = V(x_s) + sum_{t=s}^{s+n-1} gamma^(t-s) * (prod_{i=s}^{t-1} c_i) * delta_t V

computed backwards in time with the recursion of Remark 1::

    v_s = V(x_s) + delta_s V + gamma * c_s * (v_{s+1} - V(x_{s+1}))

and the policy-gradient advantage of Section 4.2 is::

    A_s = rho_s * (r_s + gamma * v_{s+1} - V(x_s))

Episode boundaries (as in :mod:`aiorl.algos.advantages`): ``V(x_{t+1})`` and
``v_{t+1}`` stand for the state step ``t`` led to:

- ``terminated``: the episode really ended; both are 0.
- ``truncated``: the episode was cut (e.g. a time limit); both are V(final
  observation), recorded by the worker in ``trunc_values`` (no trace is known
  beyond it, so its target is its value).
- the last step of the rollout: both are ``next_value``, V of the observation
  after it (the n-step sum stops at the rollout's end).

At any of these the correction ``gamma * c_s * (v_{s+1} - V(x_{s+1}))`` is 0, so
the trace does not flow across an episode boundary or past the rollout.

With ``pi == mu`` and ``rho_bar = c_bar = 1`` every ``rho_t = c_t = 1``: ``v_s`` is the
n-step (Monte Carlo, bootstrapped at the rollout end) return and ``A_s = v_s - V(x_s)``,
i.e. GAE with lambda = 1.
"""

from __future__ import annotations

import math

import numpy as np


def _successor(
    per_step: np.ndarray,
    last: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    trunc_values: np.ndarray,
) -> np.ndarray:
    """``[T, N]``: for each step, the quantity ``per_step`` of the state it led to.

    That is the next row of ``per_step`` (``last`` after the final row),
    ``trunc_values`` on truncation, and 0 on termination.
    """
    following = np.concatenate([per_step[1:], last[None]], axis=0)
    following = np.where(truncated, trunc_values, following)
    return np.where(terminated, 0.0, following)


def vtrace(
    behaviour_logprobs: np.ndarray,
    target_logprobs: np.ndarray,
    rewards: np.ndarray,
    values: np.ndarray,
    next_value: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    trunc_values: np.ndarray,
    gamma: float,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(vs, pg_advantages)``, each ``[T, N]``: V-trace targets and policy-gradient advantages.

    Args:
        behaviour_logprobs: ``[T, N]`` log mu(a_t|x_t), recorded when acting.
        target_logprobs: ``[T, N]`` log pi(a_t|x_t) under the policy being trained.
        rewards: ``[T, N]`` rewards.
        values: ``[T, N]`` V(x_t) of the observation each action was taken in.
        next_value: ``[N]``, V of the observation after the last step.
        terminated: ``[T, N]`` bool, the step ended the episode in a terminal state.
        truncated: ``[T, N]`` bool, the step cut the episode short.
        trunc_values: ``[T, N]`` V(final observation) where ``truncated``.
        gamma: discount factor.
        rho_bar: clip of the importance weight rho_t (> 0; the paper's rho-bar).
        c_bar: clip of the trace coefficient c_t (> 0; the paper's c-bar).
    """
    steps = rewards.shape[0]
    # min(bar, pi / mu), taken in log space so a huge ratio cannot overflow.
    log_ratios = target_logprobs - behaviour_logprobs
    rhos = np.exp(np.minimum(log_ratios, math.log(rho_bar)))
    cs = np.exp(np.minimum(log_ratios, math.log(c_bar)))

    next_values = _successor(values, next_value, terminated, truncated, trunc_values)
    continues = 1.0 - (terminated | truncated)
    deltas = rhos * (rewards + gamma * next_values - values)

    # v_s - V(x_s) = delta_s V + gamma * c_s * (v_{s+1} - V(x_{s+1})), backwards in time;
    # the correction of the state after a boundary (or the rollout's end) is 0.
    corrections = np.zeros_like(values)
    running = np.zeros_like(next_value)
    for t in reversed(range(steps)):
        running = deltas[t] + gamma * cs[t] * continues[t] * running
        corrections[t] = running
    vs = values + corrections

    next_vs = _successor(vs, next_value, terminated, truncated, trunc_values)
    pg_advantages = rhos * (rewards + gamma * next_vs - values)
    return vs, pg_advantages
