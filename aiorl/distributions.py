"""Action distributions, one per action space, shared by workers and learners.

A policy outputs ``dist_inputs`` of shape ``[B, num_inputs]``; the distribution
turns them into sampled actions, log-probabilities and entropies:

- ``Discrete(n)``: ``n`` logits, categorical.
- ``Box(d,)``: ``2 * d`` inputs, the mean then the log standard deviation of a
  diagonal Gaussian. Sampled actions are stored unclipped (their log-prob is
  exact) and **clipped to the space's bounds only when handed to the env**.
- ``MultiDiscrete(nvec)``: ``sum(nvec)`` logits, one independent categorical per
  component (log-probs and entropies add up).
- ``MultiBinary(n)``: ``n`` logits, one independent Bernoulli per component.

Categorical kinds take an optional action ``mask`` (bool, ``[B, num_inputs]``, True =
valid; see :mod:`aiorl.envs.masks`): the logits of invalid actions are replaced by
:data:`MASKED_LOGIT` before anything else, so they are never sampled nor chosen, and
log-probabilities and entropies are those of the categorical renormalised over the valid
actions. (A large finite number rather than ``-inf``, as sb3-contrib's MaskablePPO does:
the entropy stays finite, and a row with no valid action cannot produce NaN.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch.distributions import Bernoulli, Categorical, Normal

from aiorl.envs.masks import ActionMasks
from aiorl.envs.spaces import check_action_space

MASKED_LOGIT = -1e8
"""The logit an invalid action gets (its probability is exactly 0 in float32)."""
_TINY_NOISE = 1e-30
"""The smallest exponential noise of categorical sampling (log: -69, far above a masked log-prob)."""
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
"""Bounds of a Gaussian's log standard deviation as the distribution uses it (:func:`bounded_log_std`)."""
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _gumbel_max(log_probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A draw from the categorical ``log_probs`` (last dim): ``argmax(log p - log E)``, ``E ~ Exp(1)``.

    Gumbel-max: 2x cheaper than ``multinomial`` for a worker's small batches. ``E`` is kept
    off 0, so an action with probability 0 (masked) never wins.
    """
    exp_noise = torch.empty_like(log_probs).exponential_(generator=generator).clamp_(min=_TINY_NOISE).log_()
    return (log_probs - exp_noise).argmax(-1)


def bounded_log_std(log_std: torch.Tensor) -> torch.Tensor:
    """``log_std`` clamped to [``LOG_STD_MIN``, ``LOG_STD_MAX``], with the gradient of the identity.

    A plain clamp has no gradient beyond its bounds: a log std that ran past 2 (wide action
    bounds, a large entropy bonus) would stay there for good. Here the value is bounded and
    the gradient still tells the parameter which way to go, so it can learn its way back.
    """
    return log_std + (log_std.clamp(LOG_STD_MIN, LOG_STD_MAX) - log_std).detach()


def _categorical_log_prob_entropy(logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log softmax(logits)[a]`` and ``-sum(p * log p)`` per row (``0 * log 0`` counts as 0)."""
    log_probs = torch.log_softmax(logits, dim=-1)
    log_prob = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs.clamp(min=torch.finfo(log_probs.dtype).min)).sum(dim=-1)
    return log_prob, entropy


@dataclass(frozen=True, slots=True)
class ActionDistribution:
    """The distribution family for one action space.

    Attributes:
        kind: ``"categorical"``, ``"gaussian"``, ``"multi_categorical"`` or ``"bernoulli"``.
        num_inputs: width of the policy's ``dist_inputs`` output.
        action_shape: shape of one stored action (``()`` for categorical).
        low, high: bounds for clipping Gaussian actions, in the action space's dtype.
        nvec: component sizes of a MultiDiscrete space.
        start: what action 0 means to the env (``Discrete.start``, ``MultiDiscrete.start``).
        env_dtype: the dtype of the actions the env is given (a Box's or MultiDiscrete's own:
            ``action_space.contains`` refuses another); ``None``: as stored.
    """

    kind: str
    num_inputs: int
    action_shape: tuple[int, ...]
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    nvec: tuple[int, ...] = ()
    start: np.ndarray | int = 0
    env_dtype: np.dtype | None = None

    @classmethod
    def for_space(cls, space: gym.Space) -> ActionDistribution:
        """The distribution for ``space`` (raises ``ConfigError`` if unsupported)."""
        check_action_space(space)
        if isinstance(space, gym.spaces.Discrete):
            return cls(kind="categorical", num_inputs=int(space.n), action_shape=(), start=int(space.start))
        if isinstance(space, gym.spaces.MultiDiscrete):
            nvec = tuple(int(n) for n in space.nvec)
            return cls(
                kind="multi_categorical",
                num_inputs=sum(nvec),
                action_shape=(len(nvec),),
                nvec=nvec,
                start=np.asarray(space.start, dtype=np.int64),
                env_dtype=None if space.dtype == np.int64 else space.dtype,
            )
        if isinstance(space, gym.spaces.MultiBinary):
            n = int(np.prod(space.shape))
            return cls(kind="bernoulli", num_inputs=n, action_shape=(n,))
        assert isinstance(space, gym.spaces.Box)
        dim = int(space.shape[0])
        return cls(
            kind="gaussian",
            num_inputs=2 * dim,
            action_shape=(dim,),
            low=space.low,  # in the space's dtype: float32 bounds would let a float64 action pass them
            high=space.high,
            env_dtype=None if space.dtype == np.float32 else space.dtype,
        )

    @property
    def action_dtype(self) -> np.dtype:
        """The numpy dtype actions are stored with."""
        return np.dtype(np.float32) if self.kind == "gaussian" else np.dtype(np.int64)

    def _components(self, dist_inputs: torch.Tensor) -> list[Categorical]:
        return [Categorical(logits=part, validate_args=False) for part in dist_inputs.split(self.nvec, dim=-1)]

    def _torch_dist(self, dist_inputs: torch.Tensor) -> torch.distributions.Distribution:
        if self.kind == "categorical":
            return Categorical(logits=dist_inputs, validate_args=False)
        if self.kind == "bernoulli":
            return Bernoulli(logits=dist_inputs, validate_args=False)
        mean, log_std = dist_inputs.chunk(2, dim=-1)
        std = bounded_log_std(log_std).exp()
        return Normal(mean, std, validate_args=False)

    @property
    def action_masks(self) -> ActionMasks | None:
        """How env action masks map onto these logits (``None``: the space cannot be masked)."""
        if self.kind == "categorical":
            return ActionMasks((self.num_inputs,))
        if self.kind == "multi_categorical":
            return ActionMasks(self.nvec)
        return None

    def masked(self, dist_inputs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``dist_inputs`` with the logits of invalid actions (``mask`` False) set to :data:`MASKED_LOGIT`."""
        if mask is None:
            return dist_inputs
        if self.kind not in ("categorical", "multi_categorical"):
            raise ValueError(f"an action mask was given, but {self.kind} actions cannot be masked")
        return dist_inputs.masked_fill(~mask, MASKED_LOGIT)

    def sample(
        self, dist_inputs: torch.Tensor, mask: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample actions (only valid ones, given a ``mask``); return ``(actions, log_probs)``.

        ``generator`` (on ``dist_inputs``' device) draws the noise; ``None``: torch's global
        generator (a worker's own process). Evaluation passes one seeded from its ``seed``.
        """
        dist_inputs = self.masked(dist_inputs, mask)
        if self.kind == "categorical":  # the same as Categorical, without its overhead (hot path)
            log_probs = torch.log_softmax(dist_inputs, dim=-1)
            actions = _gumbel_max(log_probs, generator).unsqueeze(-1)
            return actions.squeeze(-1), log_probs.gather(-1, actions).squeeze(-1)
        if self.kind == "multi_categorical":  # each component on its own
            parts = [torch.log_softmax(part, dim=-1) for part in dist_inputs.split(self.nvec, dim=-1)]
            actions = torch.stack([_gumbel_max(part, generator) for part in parts], dim=-1)
            return actions, self.log_prob_entropy(dist_inputs, actions)[0]
        if self.kind == "bernoulli":
            actions = torch.bernoulli(torch.sigmoid(dist_inputs), generator=generator)
        else:
            mean, log_std = dist_inputs.chunk(2, dim=-1)
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
            actions = mean + bounded_log_std(log_std).exp() * noise
        log_probs = self._sum(self._torch_dist(dist_inputs).log_prob(actions))
        return (actions.long() if self.kind == "bernoulli" else actions), log_probs

    def mode(self, dist_inputs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The most likely action (the most likely valid one, given a ``mask``), for deterministic evaluation."""
        dist_inputs = self.masked(dist_inputs, mask)
        if self.kind == "categorical":
            return dist_inputs.argmax(dim=-1)
        if self.kind == "multi_categorical":
            return torch.stack([part.argmax(dim=-1) for part in dist_inputs.split(self.nvec, dim=-1)], dim=-1)
        if self.kind == "bernoulli":
            return (dist_inputs > 0).long()
        return dist_inputs.chunk(2, dim=-1)[0]

    def log_prob_entropy(
        self, dist_inputs: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of ``actions`` and the entropy, each of shape ``[B]``.

        Given a ``mask``, both are over the valid actions only (the renormalised categorical).
        Written out with plain tensor ops (no ``torch.distributions`` objects): this runs
        in every minibatch step of the learner, where building distribution objects and
        their argument checks cost more than the arithmetic.
        """
        dist_inputs = self.masked(dist_inputs, mask)
        if self.kind == "categorical":
            return _categorical_log_prob_entropy(dist_inputs, actions)
        if self.kind == "multi_categorical":
            log_prob, entropy = 0.0, 0.0
            for i, logits in enumerate(dist_inputs.split(self.nvec, dim=-1)):
                part_log_prob, part_entropy = _categorical_log_prob_entropy(logits, actions[..., i])
                log_prob, entropy = log_prob + part_log_prob, entropy + part_entropy
            return log_prob, entropy  # type: ignore[return-value]
        if self.kind == "bernoulli":
            # log p(a) = a * x - softplus(x); H = softplus(x) - sigmoid(x) * x for logits x.
            softplus = torch.nn.functional.softplus(dist_inputs)
            log_prob = actions.to(dist_inputs.dtype) * dist_inputs - softplus
            entropy = softplus - torch.sigmoid(dist_inputs) * dist_inputs
            return log_prob.sum(dim=-1), entropy.sum(dim=-1)
        # Diagonal Gaussian: log p(a) = -((a - mu) / sigma)^2 / 2 - log sigma - log(2 pi) / 2.
        mean, log_std = dist_inputs.chunk(2, dim=-1)
        log_std = bounded_log_std(log_std)
        z = (actions - mean) * torch.exp(-log_std)
        log_prob = (-0.5 * z**2 - log_std - _HALF_LOG_2PI).sum(dim=-1)
        entropy = (log_std + (0.5 + _HALF_LOG_2PI)).sum(dim=-1)
        return log_prob, entropy

    def _sum(self, value: torch.Tensor) -> torch.Tensor:
        return value if self.kind == "categorical" else value.sum(dim=-1)

    def to_env(self, action: np.ndarray) -> object:
        """Convert one stored action (or a vector env's batch of them) into a member of the action space.

        Gaussian actions are cast to the space's dtype, then clipped to its bounds (in that
        order: a float32 clipped to a float64 bound of -0.1 is -0.10000000149, outside it).
        """
        if self.kind == "categorical":  # a numpy integer: gymnasium's fast path for Discrete.contains
            return action + self.start if self.start else action
        if self.kind == "multi_categorical":
            action = action + self.start
            return action if self.env_dtype is None else action.astype(self.env_dtype)
        if self.kind == "bernoulli":
            return action.astype(np.int8)
        if self.env_dtype is not None:
            action = action.astype(self.env_dtype)
        return np.clip(action, self.low, self.high)
