"""Recurrent policies: their interface, the built-in LSTM/GRU actor-critic, and stepping them.

The recurrent policy interface
------------------------------
A recurrent policy is a ``torch.nn.Module`` with:

- ``state_size: int``: the width of one env's state, a flat float32 vector (an LSTM keeps
  its hidden and cell state side by side in it);
- ``initial_state(batch: int) -> Tensor``: ``[batch, state_size]``, the state an episode
  starts from (zeros for the built-in policies);
- ``forward(obs, state, episode_start) -> (dist_inputs, value, new_state)`` over a
  *sequence*: ``obs`` is ``[T, B, *obs_shape]``, ``state`` ``[B, state_size]`` (the state
  before step 0), ``episode_start`` ``[T, B]`` float (1.0 where step ``t`` is the first of
  an episode: the policy starts that env from its initial state before reading ``obs[t]``);
  it returns ``dist_inputs`` ``[T, B, num_inputs]``, ``value`` ``[T, B]`` and ``new_state``
  ``[B, state_size]``, the state after the last step.

Workers call ``forward`` with ``T = 1`` at every step and keep each env's state across
steps and rollouts; at the first step of every rollout they record the state they had
(``initial_state`` of the slot) and, at every step, whether an episode started there
(``episode_starts``). The learner replays each env's rollout from that recorded state
(truncated backpropagation through time over ``rollout_length`` steps), resetting at the
recorded episode starts, so it sees what the actor saw. A policy is checked once on a
dummy sequence when the trainer is built (:func:`validate_recurrent_policy`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from aiorl.distributions import ActionDistribution
from aiorl.errors import ConfigError
from aiorl.models import (
    ImageEncoder,
    _layer,
    _mlp,
    check_float32_weights,
    check_float_outputs,
    is_image_shape,
    is_image_space,
)

RecurrentKind = Literal["lstm", "gru"]
RECURRENT_KINDS: tuple[str, ...] = ("lstm", "gru")

SEGMENTS_PER_STEP = 3
"""The built-in policy replays a sequence in fused runs when it has at most one run per this many steps."""


class RecurrentActorCritic(nn.Module):
    """An encoder, one LSTM or GRU cell shared by the actor and the critic, and two linear heads.

    The encoder is a tanh MLP for vector observations and the default CNN's trunk for
    images. Gaussian actions get a learned, state-independent log standard deviation, as
    in :class:`~aiorl.models.ActorCritic`.

    Args:
        obs_shape: shape of one (encoded) observation.
        dist: the action distribution, which fixes the actor's output width.
        kind: ``"lstm"`` or ``"gru"``.
        hidden_size: width of the recurrent state (an LSTM's state is twice this: h and c).
        encoder_sizes: hidden layers of the MLP encoder (vector observations).
        scale: factor applied to image observations (``1/255`` for ``uint8`` images).
        log_std_init: initial log standard deviation for Gaussian actions.
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        dist: ActionDistribution,
        kind: RecurrentKind = "lstm",
        hidden_size: int = 128,
        encoder_sizes: Sequence[int] = (64,),
        scale: float = 1.0,
        log_std_init: float = 0.0,
    ) -> None:
        super().__init__()
        if kind not in RECURRENT_KINDS:
            raise ConfigError(f"recurrent={kind!r} must be one of {RECURRENT_KINDS}")
        if not (isinstance(hidden_size, int) and not isinstance(hidden_size, bool) and hidden_size >= 1):
            raise ConfigError(f"recurrent_size={hidden_size!r} must be an integer >= 1")
        self.kind = kind
        self.hidden_size = hidden_size
        self.state_size = 2 * hidden_size if kind == "lstm" else hidden_size
        self.encoder: nn.Module
        if is_image_shape(obs_shape):
            self.encoder = ImageEncoder(obs_shape, scale)
            features = self.encoder.features
        else:
            obs_dim = int(np.prod(obs_shape))
            self.encoder = nn.Sequential(
                nn.Flatten(), _mlp(obs_dim, encoder_sizes[:-1], encoder_sizes[-1], np.sqrt(2.0))
            )
            self.encoder.append(nn.Tanh())
            features = encoder_sizes[-1]
        self.rnn: nn.LSTM | nn.GRU = nn.LSTM(features, hidden_size) if kind == "lstm" else nn.GRU(features, hidden_size)
        self.gaussian = dist.kind == "gaussian"
        actor_outputs = dist.num_inputs // 2 if self.gaussian else dist.num_inputs
        self.actor = _layer(hidden_size, actor_outputs, 0.01)
        self.critic = _layer(hidden_size, 1, 1.0)
        if self.gaussian:
            self.log_std = nn.Parameter(torch.full((actor_outputs,), float(log_std_init)))

    def _split(self, state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The flat state as the RNN's own: ``(h, c)`` for an LSTM, ``(h,)`` for a GRU."""
        return tuple(state.split(self.hidden_size, dim=-1)) if self.kind == "lstm" else (state,)

    def _segments(
        self, features: torch.Tensor, state: torch.Tensor, keep: torch.Tensor, bounds: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = []
        for start, end in itertools.pairwise(bounds):
            parts = tuple((part * keep[start]).unsqueeze(0) for part in self._split(state))
            output, carried = self.rnn(features[start:end], parts if self.kind == "lstm" else parts[0])
            state = torch.cat([part.squeeze(0) for part in carried], dim=-1) if self.kind == "lstm" else carried[0]
            outputs.append(output)
        return torch.cat(outputs), state

    def _steps(
        self, features: torch.Tensor, state: torch.Tensor, keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rnn = self.rnn
        weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
        hidden_states = []
        if self.kind == "lstm":
            h, c = self._split(state)
            for t in range(features.shape[0]):
                h, c = torch.lstm_cell(features[t], (h * keep[t], c * keep[t]), *weights)
                hidden_states.append(h)
            return torch.stack(hidden_states), torch.cat([h, c], dim=-1)
        h = state
        for t in range(features.shape[0]):
            h = torch.gru_cell(features[t], h * keep[t], *weights)
            hidden_states.append(h)
        return torch.stack(hidden_states), h

    def initial_state(self, batch: int) -> torch.Tensor:
        """Zeros: the state every episode starts from, ``[batch, state_size]``."""
        return torch.zeros(batch, self.state_size, device=self.actor.weight.device)

    def forward(
        self, obs: torch.Tensor, state: torch.Tensor, episode_start: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run ``T`` steps for ``B`` envs (see the module's interface); return ``(dist_inputs, value, new_state)``."""
        steps, batch = obs.shape[:2]
        features = self.encoder(obs.reshape(steps * batch, *obs.shape[2:])).reshape(steps, batch, -1)
        keep = (1.0 - episode_start.to(features.dtype)).unsqueeze(-1)  # 0 where an episode starts: zero state
        # Runs between steps where some env starts an episode go through the fused nn.LSTM/GRU
        # at once (2x faster than a cell per step on CPU); when episodes start at most steps,
        # a cell per step is cheaper than many short runs.
        restarts = (torch.nonzero(episode_start[1:].any(dim=1)).flatten() + 1).tolist()
        bounds = [0, *restarts, steps]
        if len(bounds) - 1 <= max(1, steps // SEGMENTS_PER_STEP):
            hidden, new_state = self._segments(features, state, keep, bounds)
        else:
            hidden, new_state = self._steps(features, state, keep)
        out = self.actor(hidden)
        if self.gaussian:
            out = torch.cat([out, self.log_std.expand_as(out)], dim=-1)
        return out, self.critic(hidden).squeeze(-1), new_state


def default_recurrent_policy(
    obs_space: gym.Space, obs_shape: tuple[int, ...], dist: ActionDistribution, kind: str, hidden_size: int
) -> RecurrentActorCritic:
    """The recurrent policy aiorl builds for ``recurrent=kind`` (a CNN encoder for images, else an MLP)."""
    uint8_images = is_image_space(obs_space) and obs_space.dtype == np.uint8
    return RecurrentActorCritic(
        obs_shape,
        dist,
        kind,  # type: ignore[arg-type]  # checked by the config and the constructor
        hidden_size,
        scale=1.0 / 255.0 if uint8_images else 1.0,
    )


def state_size(policy: nn.Module) -> int:
    """The width of ``policy``'s recurrent state; 0 for a feed-forward policy."""
    size = getattr(policy, "state_size", 0)
    return size if isinstance(size, int) and not isinstance(size, bool) else 0


def initial_state(policy: nn.Module, batch: int) -> torch.Tensor:
    """``policy.initial_state(batch)`` as a float32 CPU tensor ``[batch, state_size]``."""
    return policy.initial_state(batch).detach().to("cpu", torch.float32)  # type: ignore[operator]


def step(
    policy: nn.Module, obs: torch.Tensor, state: torch.Tensor, episode_start: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step for a batch of envs: ``obs`` ``[B, *obs]``, ``state`` ``[B, S]``, ``episode_start`` ``[B]``.

    Returns ``(dist_inputs [B, D], value [B], new_state [B, S])``.
    """
    dist_inputs, value, new_state = policy(obs.unsqueeze(0), state, episode_start.reshape(1, -1).float())
    return dist_inputs[0], value.reshape(1, -1)[0], new_state


def unroll(
    policy: nn.Module, obs: torch.Tensor, state: torch.Tensor, episode_start: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replay sequences: ``obs`` ``[T, B, *obs]`` from ``state`` ``[B, S]`` with ``episode_start`` ``[T, B]``.

    Returns ``(dist_inputs, value)`` flattened time-major to ``[T * B, D]`` and ``[T * B]``
    (the order of :class:`~aiorl.algos.surrogate.Targets`).
    """
    dist_inputs, value, _ = policy(obs, state, episode_start.float())
    return dist_inputs.reshape(-1, dist_inputs.shape[-1]), value.reshape(-1)


def validate_recurrent_policy(policy: nn.Module, obs_shape: tuple[int, ...], dist: ActionDistribution) -> None:
    """Check a recurrent ``policy`` against the interface on a dummy sequence (3 steps, 2 envs).

    Raises:
        ConfigError: no ``initial_state``, a state of the wrong shape, ``forward`` failed,
            or output shapes that do not match the action space.
    """
    name = type(policy).__name__
    size = state_size(policy)
    check_float32_weights(policy)
    if not callable(getattr(policy, "initial_state", None)):
        raise ConfigError(f"policy={name} has state_size={size} but no initial_state(batch) method")
    steps, batch = 3, 2
    try:
        with torch.no_grad():
            state = policy.initial_state(batch)  # type: ignore[operator]
            if not isinstance(state, torch.Tensor) or tuple(state.shape) != (batch, size):
                shape = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
                raise ConfigError(f"policy={name}.initial_state({batch}) returned {shape}, expected {(batch, size)}")
            obs = torch.zeros((steps, batch, *obs_shape), dtype=torch.float32)
            starts = torch.zeros(steps, batch)
            starts[0] = 1.0
            out = policy(obs, state, starts)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"policy={name} failed on a dummy sequence (obs {(steps, batch, *obs_shape)}, state {(batch, size)}, "
            f"episode_start {(steps, batch)}): {type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(out, tuple) and len(out) == 3):
        raise ConfigError(f"policy={name} must return (dist_inputs, value, new_state), got {type(out).__name__}")
    expected = {
        "dist_inputs": (steps, batch, dist.num_inputs),
        "value": (steps, batch),
        "new_state": (batch, size),
    }
    check_float_outputs(name, dict(zip(expected, out, strict=True)))  # was: int logits failing in the workers
    for (what, shape), tensor in zip(expected.items(), out, strict=True):
        if tuple(tensor.shape) != shape:
            raise ConfigError(
                f"policy={name} returned {what} of shape {tuple(tensor.shape)}, expected {shape} "
                f"(a sequence of {steps} steps for {batch} envs; action space {dist.kind}, {dist.num_inputs} inputs)"
            )
