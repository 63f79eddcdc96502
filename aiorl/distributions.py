"""Action distributions, one per action space, shared by workers and learners.

A policy outputs ``dist_inputs`` of shape ``[B, num_inputs]``; the distribution
turns them into sampled actions, log-probabilities and entropies:

- ``Discrete(n)``: ``num_inputs = n`` logits, categorical distribution.
- ``Box(d,)``: ``num_inputs = 2 * d``, the mean then the log standard deviation of
  a diagonal Gaussian. Sampled actions are stored unclipped (their log-prob is
  exact) and **clipped to the space's bounds only when handed to the env**.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch.distributions import Categorical, Normal

from aiorl.envs.spaces import check_action_space

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


@dataclass(frozen=True, slots=True)
class ActionDistribution:
    """The distribution family for one action space.

    Attributes:
        kind: ``"categorical"`` or ``"gaussian"``.
        num_inputs: width of the policy's ``dist_inputs`` output.
        action_shape: shape of one stored action (``()`` for categorical).
        low, high: bounds for clipping Gaussian actions (``None`` for categorical).
    """

    kind: str
    num_inputs: int
    action_shape: tuple[int, ...]
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    @classmethod
    def for_space(cls, space: gym.Space) -> ActionDistribution:
        """The distribution for ``space`` (raises ``ConfigError`` if unsupported)."""
        check_action_space(space)
        if isinstance(space, gym.spaces.Discrete):
            return cls(kind="categorical", num_inputs=int(space.n), action_shape=())
        assert isinstance(space, gym.spaces.Box)
        dim = int(space.shape[0])
        return cls(
            kind="gaussian",
            num_inputs=2 * dim,
            action_shape=(dim,),
            low=space.low.astype(np.float32),
            high=space.high.astype(np.float32),
        )

    @property
    def action_dtype(self) -> np.dtype:
        """The numpy dtype actions are stored with."""
        return np.dtype(np.int64) if self.kind == "categorical" else np.dtype(np.float32)

    def _torch_dist(self, dist_inputs: torch.Tensor) -> torch.distributions.Distribution:
        if self.kind == "categorical":
            return Categorical(logits=dist_inputs, validate_args=False)
        mean, log_std = dist_inputs.chunk(2, dim=-1)
        std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
        return Normal(mean, std, validate_args=False)

    def sample(self, dist_inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample actions; return ``(actions, log_probs)``."""
        if self.kind == "categorical":  # the same as Categorical, without its overhead (hot path)
            log_probs = torch.log_softmax(dist_inputs, dim=-1)
            actions = torch.multinomial(log_probs.exp(), 1)
            return actions.squeeze(-1), log_probs.gather(-1, actions).squeeze(-1)
        dist = self._torch_dist(dist_inputs)
        actions = dist.sample()
        return actions, self._sum(dist.log_prob(actions))

    def mode(self, dist_inputs: torch.Tensor) -> torch.Tensor:
        """The most likely action (for deterministic evaluation)."""
        if self.kind == "categorical":
            return dist_inputs.argmax(dim=-1)
        return dist_inputs.chunk(2, dim=-1)[0]

    def log_prob_entropy(self, dist_inputs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of ``actions`` and the entropy, each of shape ``[B]``."""
        dist = self._torch_dist(dist_inputs)
        return self._sum(dist.log_prob(actions)), self._sum(dist.entropy())

    def _sum(self, value: torch.Tensor) -> torch.Tensor:
        return value if self.kind == "categorical" else value.sum(dim=-1)

    def to_env(self, action: np.ndarray) -> object:
        """Convert one stored action into what ``env.step`` expects."""
        if self.kind == "categorical":
            return action  # a numpy integer: gymnasium's fast path for Discrete.contains
        return np.clip(action, self.low, self.high)
