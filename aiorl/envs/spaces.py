"""Turn gymnasium spaces into what the policy sees and what the env receives.

Observations become float32 arrays of a fixed shape (:class:`ObservationEncoder`):

- ``Box``: its own shape (so image observations keep their layout for a CNN);
- ``Discrete(n)``: a one-hot vector of ``n``;
- ``MultiDiscrete``: the one-hot vectors of its components, concatenated;
- ``MultiBinary(n)``: ``n`` zeros and ones;
- ``Dict`` and ``Tuple`` of these: flattened and concatenated (``gymnasium.spaces.flatten``
  order: Dict keys sorted), a 1-D vector. A custom policy that wants the structure can
  unflatten with ``gymnasium.spaces.unflatten``.

The action space decides the action distribution (see :mod:`aiorl.distributions`).
Unsupported spaces (``Text``, ``Graph``, ``Sequence``, ...) are rejected here, before
any worker starts.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from aiorl.errors import ConfigError

OBSERVATION_SPACES = (
    gym.spaces.Box,
    gym.spaces.Discrete,
    gym.spaces.MultiDiscrete,
    gym.spaces.MultiBinary,
    gym.spaces.Dict,
    gym.spaces.Tuple,
)
ACTION_SPACES = (gym.spaces.Discrete, gym.spaces.Box, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)


def _names(kinds: tuple[type, ...]) -> str:
    return ", ".join(kind.__name__ for kind in kinds)


def _check_observation_space(space: gym.Space, path: str = "observation_space") -> None:
    if isinstance(space, gym.spaces.Dict):
        for key, sub in space.spaces.items():
            _check_observation_space(sub, f"{path}[{key!r}]")
    elif isinstance(space, gym.spaces.Tuple):
        for index, sub in enumerate(space.spaces):
            _check_observation_space(sub, f"{path}[{index}]")
    elif not isinstance(space, OBSERVATION_SPACES):
        raise ConfigError(f"{path}={space!r} is not supported; supported: {_names(OBSERVATION_SPACES)}")
    elif isinstance(space, gym.spaces.MultiDiscrete) and space.nvec.ndim != 1:
        raise ConfigError(f"{path}={space!r} is not supported: MultiDiscrete must be 1-D")


@dataclass(frozen=True, slots=True)
class ObservationEncoder:
    """Encodes one raw observation into a float32 array of :attr:`shape`.

    Attributes:
        shape: the encoded shape.
        space: the raw observation space.
        kind: ``"box"`` (copy), ``"one_hot"`` (Discrete) or ``"flatten"`` (everything
            else, through ``gymnasium.spaces.flatten``).
    """

    shape: tuple[int, ...]
    space: gym.Space
    kind: str
    bytes: bool = False
    """A ``uint8`` Box space: rollouts store its observations as bytes (:attr:`storage_dtype`)."""

    @classmethod
    def for_space(cls, space: gym.Space) -> ObservationEncoder:
        """Build the encoder for ``space`` or raise :class:`ConfigError` naming it."""
        _check_observation_space(space)
        if isinstance(space, gym.spaces.Box):
            shape = tuple(int(d) for d in space.shape) or (1,)  # a scalar Box: a vector of one
            return cls(shape=shape, space=space, kind="box", bytes=space.dtype == np.uint8)
        if isinstance(space, gym.spaces.Discrete):
            return cls(shape=(int(space.n),), space=space, kind="one_hot")
        size = int(gym.spaces.flatdim(space))
        return cls(shape=(size,), space=space, kind="flatten")

    @property
    def storage_dtype(self) -> str:
        """How rollouts store encoded observations: ``"uint8"`` for ``uint8`` Box spaces (images), else ``"float32"``.

        Encoded ``uint8`` observations are whole numbers in [0, 255], so storing them as bytes is
        exact and 4x smaller; the learner turns them back into float32.
        """
        if self.bytes:
            return "uint8"
        return "float32"

    def encode_into(self, obs: object, out: np.ndarray) -> None:
        """Write ``obs`` into ``out`` (a float32 array of :attr:`shape`) in place.

        Raises:
            ValueError: ``obs`` is not an observation of :attr:`space` (a Box observation
                of another shape, which numpy would otherwise broadcast; a Discrete value
                out of range). Workers treat it as an env error.
        """
        if self.kind == "box":
            shape = getattr(obs, "shape", None)
            shape = tuple(np.shape(obs)) if shape is None else tuple(shape)  # type: ignore[arg-type]
            if shape != self.space.shape:
                raise ValueError(f"an observation of shape {shape}, but observation_space is {self.space}")
            if self.bytes and getattr(obs, "dtype", None) != np.uint8:
                self._check_bytes(obs, "an observation")
            out[...] = obs  # a scalar fills its vector of one
        elif self.kind == "one_hot":
            index = _whole_number(obs, self.space) - int(self.space.start)  # type: ignore[attr-defined]
            if not 0 <= index < self.shape[0]:
                raise ValueError(f"observation {obs!r} is outside observation_space {self.space}")
            out[:] = 0.0
            out[index] = 1.0
        else:
            check_member(self.space, obs)  # gymnasium's flatten checks nothing (a -1 index wraps around)
            out[:] = gym.spaces.flatten(self.space, obs)

    def _check_bytes(self, obs: object, what: str) -> None:
        """Raise unless ``obs`` (not of dtype ``uint8``) holds only whole numbers in [0, 255].

        Rollouts store a ``uint8`` space's observations as bytes: any other value would reach
        the learner changed (0.7 as 0, 300 as 44) while the workers acted on the real one.
        """
        values = np.asarray(obs)
        if values.dtype.kind not in "biuf" or not np.array_equal(values, np.clip(np.rint(values), 0, 255)):
            raise ValueError(
                f"{what} of dtype {values.dtype} with values other than whole numbers in [0, 255] "
                f"(min {values.min()}, max {values.max()}), but observation_space is {self.space}: "
                "its observations are stored as bytes. Return uint8 arrays, or declare a float32 Box"
            )

    def encode_batch_into(self, obs: object, out: np.ndarray) -> None:
        """Write a vector env's batch of observations ``obs`` into ``out`` (float32, ``[K, *shape]``).

        ``obs`` is batched as ``gymnasium.vector.utils.batch_space`` batches :attr:`space`
        (a Box: one array ``[K, *shape]``; a Dict: a dict of batched arrays).

        Raises:
            ValueError: ``obs`` is not a batch of ``K`` observations of :attr:`space`.
        """
        k = out.shape[0]
        if self.kind == "box":
            shape, expected = tuple(np.shape(obs)), (k, *self.space.shape)
            if shape != expected:
                raise ValueError(f"a batch of observations of shape {shape}, expected {expected} ({self.space})")
            if self.bytes and getattr(obs, "dtype", None) != np.uint8:
                self._check_bytes(obs, "a batch of observations")
            out[...] = obs if shape == out.shape else np.reshape(obs, out.shape)  # scalars: [K] -> [K, 1]
        elif self.kind == "one_hot":
            values = np.asarray(obs)
            if values.shape != (k,) or values.dtype.kind not in "iu":
                raise ValueError(f"a batch of observations {values!r}, expected {k} values of {self.space}")
            index = values - int(self.space.start)  # type: ignore[attr-defined]
            if ((index < 0) | (index >= self.shape[0])).any():
                raise ValueError(f"observations {values!r} are outside observation_space {self.space}")
            out[...] = 0.0
            out[np.arange(k), index] = 1.0
        else:
            _check_batch_rows(self.space, obs, k, "observations")
            rows = gym.vector.utils.iterate(gym.vector.utils.batch_space(self.space, k), obs)
            for i, row in enumerate(rows):
                check_member(self.space, row, f"sub-env {i}'s observation")
                out[i] = gym.spaces.flatten(self.space, row)


def _check_batch_rows(space: gym.Space, batch: object, k: int, where: str) -> None:
    """Every array of a batched structured observation (Dict, Tuple, Multi*) has ``k`` rows.

    Raises:
        ValueError: naming the entry (``observations['pos']``) and its number of rows; a
            short entry would otherwise leave the missing sub-envs' rows stale, unnoticed.
    """
    if isinstance(space, gym.spaces.Dict):
        if not isinstance(batch, dict) or set(batch) != set(space.spaces):
            got = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise ValueError(f"{where} is {got!r}, expected a dict of {sorted(space.spaces)} ({space})")
        for key, subspace in space.spaces.items():
            _check_batch_rows(subspace, batch[key], k, f"{where}[{key!r}]")
    elif isinstance(space, gym.spaces.Tuple):
        if not isinstance(batch, tuple | list) or len(batch) != len(space.spaces):
            raise ValueError(f"{where} is not a tuple of {len(space.spaces)} batches ({space})")
        for i, (subspace, part) in enumerate(zip(space.spaces, batch, strict=True)):
            _check_batch_rows(subspace, part, k, f"{where}[{i}]")
    else:
        rows = np.shape(batch)[0] if np.ndim(batch) else None
        if rows != k:
            raise ValueError(
                f"{where} holds {rows} rows for {k} sub-envs (a batch of {space}, shape {np.shape(batch)})"
            )


def check_member(space: gym.Space, obs: object, where: str = "the observation") -> None:
    """Raise ``ValueError`` naming the entry unless ``obs`` is an observation of the structured ``space``.

    For the spaces encoded through ``gymnasium.spaces.flatten`` (Dict, Tuple, MultiDiscrete,
    MultiBinary and what they hold), which checks nothing: a Dict entry of another shape
    passes when the sizes add up, a Discrete or MultiDiscrete value of -1 becomes the last
    one, a MultiBinary 7 stays 7. Box values are not range-checked (as for a plain Box);
    their shapes are.
    """
    if isinstance(space, gym.spaces.Dict):
        keys = set(obs) if isinstance(obs, dict) else None
        if keys != set(space.spaces):
            got = sorted(map(str, keys)) if keys is not None else type(obs).__name__
            raise ValueError(f"{where} is {got!r}, expected a dict of {sorted(space.spaces)} ({space})")
        for key, subspace in space.spaces.items():
            check_member(subspace, obs[key], f"{where}[{key!r}]")  # type: ignore[index]
    elif isinstance(space, gym.spaces.Tuple):
        if not isinstance(obs, tuple | list) or len(obs) != len(space.spaces):
            raise ValueError(f"{where} is {_brief(obs)}, expected a tuple of {len(space.spaces)} ({space})")
        for i, (subspace, part) in enumerate(zip(space.spaces, obs, strict=True)):
            check_member(subspace, part, f"{where}[{i}]")
    elif isinstance(space, gym.spaces.Discrete):
        value = _whole_number(obs, space)
        if not int(space.start) <= value < int(space.start) + int(space.n):
            raise ValueError(f"{where} {obs!r} is outside {space}")
    elif isinstance(space, gym.spaces.Box):
        if tuple(np.shape(obs)) != space.shape:  # type: ignore[arg-type]
            raise ValueError(f"{where} has shape {np.shape(obs)}, but its space is {space}")  # type: ignore[arg-type]
    elif isinstance(space, gym.spaces.MultiDiscrete | gym.spaces.MultiBinary):
        values = np.asarray(obs)
        if values.shape != space.shape:
            raise ValueError(f"{where} has shape {values.shape}, but its space is {space}")
        if isinstance(space, gym.spaces.MultiDiscrete) and values.dtype.kind not in "iu":  # flatten indexes with them
            raise ValueError(f"{where} {_brief(obs)} is of dtype {values.dtype}, not integers: its space is {space}")
        if values.dtype.kind not in "biuf" or (
            values.dtype.kind == "f" and not np.array_equal(values, np.rint(values))
        ):
            raise ValueError(f"{where} {_brief(obs)} is not whole numbers, but its space is {space}")
        if isinstance(space, gym.spaces.MultiBinary):
            inside = (values == 0) | (values == 1)
        else:
            inside = (values >= space.start) & (values < space.start + space.nvec)
        if not inside.all():
            raise ValueError(f"{where} {_brief(obs)} is outside {space}")


def _brief(value: object) -> str:
    """``repr(value)``, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _whole_number(obs: object, space: gym.Space) -> int:
    """A Discrete observation as an int: an integer (numpy's too), or a float that is a whole number.

    Raises:
        ValueError: anything else (``5.7``, an array), which ``int()`` would truncate or reject obscurely.
    """
    try:
        return operator.index(obs)  # type: ignore[arg-type]
    except TypeError:
        if isinstance(obs, float | np.floating) and float(obs).is_integer():
            return int(obs)
    raise ValueError(f"observation {obs!r} is not a whole number, but observation_space is {space}")


def check_action_space(space: gym.Space) -> None:
    """Raise :class:`ConfigError` unless aiorl has a distribution for ``space``."""
    if not isinstance(space, ACTION_SPACES):
        raise ConfigError(f"action_space={space!r} is not supported; supported: {_names(ACTION_SPACES)}")
    if isinstance(space, gym.spaces.Box) and len(space.shape) != 1:
        raise ConfigError(f"action_space={space!r} is not supported: Box actions must be 1-D")
    if isinstance(space, gym.spaces.Box) and not np.issubdtype(space.dtype, np.floating):
        raise ConfigError(
            f"action_space={space!r} is not supported: a Box of {space.dtype} would get Gaussian (float) "
            "actions; use a float Box, or MultiDiscrete for whole-number actions"
        )
    if isinstance(space, gym.spaces.MultiDiscrete) and space.nvec.ndim != 1:
        raise ConfigError(f"action_space={space!r} is not supported: MultiDiscrete must be 1-D")
    if isinstance(space, gym.spaces.MultiBinary) and np.ndim(space.n) != 0:
        raise ConfigError(f"action_space={space!r} is not supported: MultiBinary must be 1-D")


def check_same_action_space(env: object, expected: gym.Space | None) -> None:
    """Raise ``ValueError`` if ``env``'s action space is not ``expected`` (``None``: no check).

    Workers build their own envs: one whose actions differ from the trainer's (another
    ``Discrete(n)``, other bounds) would be trained with actions it does not have.
    """
    actual = getattr(env, "action_space", None)
    if expected is not None and actual != expected:
        raise ValueError(f"the env's action_space is {actual}, but the trainer's is {expected}")
