"""Turn gymnasium spaces into what the policy sees and what the env receives.

Observations become float32 arrays of a fixed shape (``ObservationEncoder``);
the action space decides the action distribution (see :mod:`aiorl.distributions`).
Unsupported spaces are rejected here, before any worker starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from aiorl.errors import ConfigError

SUPPORTED_OBSERVATION_SPACES = ("Box", "Discrete")
SUPPORTED_ACTION_SPACES = ("Box", "Discrete")


@dataclass(frozen=True, slots=True)
class ObservationEncoder:
    """Encodes one raw observation into a float32 array of ``shape``.

    ``Box`` observations keep their shape; ``Discrete(n)`` becomes a one-hot vector of ``n``.
    """

    shape: tuple[int, ...]
    one_hot: int | None = None

    @classmethod
    def for_space(cls, space: gym.Space) -> ObservationEncoder:
        """Build the encoder for ``space`` or raise :class:`ConfigError` naming it."""
        if isinstance(space, gym.spaces.Box):
            return cls(shape=tuple(int(d) for d in space.shape))
        if isinstance(space, gym.spaces.Discrete):
            return cls(shape=(int(space.n),), one_hot=int(space.n))
        raise ConfigError(
            f"observation_space={space!r} is not supported; supported: {', '.join(SUPPORTED_OBSERVATION_SPACES)}"
        )

    def encode_into(self, obs: object, out: np.ndarray) -> None:
        """Write ``obs`` into ``out`` (a float32 array of :attr:`shape`) without allocating."""
        if self.one_hot is not None:
            out[:] = 0.0
            out[int(obs)] = 1.0  # type: ignore[call-overload]
        else:
            out[...] = obs


def check_action_space(space: gym.Space) -> None:
    """Raise :class:`ConfigError` unless aiorl has a distribution for ``space``."""
    if isinstance(space, gym.spaces.Discrete):
        return
    if isinstance(space, gym.spaces.Box):
        if len(space.shape) != 1:
            raise ConfigError(f"action_space={space!r} is not supported: Box actions must be 1-D")
        return
    raise ConfigError(f"action_space={space!r} is not supported; supported: {', '.join(SUPPORTED_ACTION_SPACES)}")
