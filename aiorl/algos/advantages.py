"""Generalized Advantage Estimation with terminated vs truncated handled apart.

- ``terminated``: the episode really ended; the next state's value is 0.
- ``truncated``: the episode was cut (e.g. a time limit); bootstrap from
  V(final observation), recorded by the worker in ``trunc_values``.
- Either way the advantage does not flow across the episode boundary.
"""

from __future__ import annotations

import numpy as np


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_value: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    trunc_values: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(advantages, returns)``, each ``[T, N]``.

    Args:
        rewards: ``[T, N]`` rewards.
        values: ``[T, N]`` V(s_t) of the observation each action was taken in.
        next_value: ``[N]``, V of the observation after the last step.
        terminated: ``[T, N]`` bool, the step ended the episode in a terminal state.
        truncated: ``[T, N]`` bool, the step cut the episode short.
        trunc_values: ``[T, N]`` V(final observation) where ``truncated``.
        gamma: discount factor.
        gae_lambda: GAE's lambda (1 = Monte Carlo, 0 = one-step TD).
    """
    steps = rewards.shape[0]
    # Value of the state each step led to: the next row, the final observation
    # on truncation, or nothing on termination.
    following = np.concatenate([values[1:], next_value[None]], axis=0)
    following = np.where(truncated, trunc_values, following)
    following = np.where(terminated, 0.0, following)
    continues = 1.0 - (terminated | truncated)
    deltas = rewards + gamma * following - values
    advantages = np.zeros_like(values)
    running = np.zeros_like(next_value)
    for t in reversed(range(steps)):
        running = deltas[t] + gamma * gae_lambda * continues[t] * running
        advantages[t] = running
    return advantages, advantages + values
