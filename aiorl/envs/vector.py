"""Vector envs as a worker's env: gymnasium's ``VectorEnv`` and EnvPool's gymnasium interface.

An env factory may return a ``gymnasium.vector.VectorEnv`` instead of a single env (for
example ``gymnasium.make_vec("CartPole-v1", num_envs=16)`` or
``envpool.make("CartPole-v1", env_type="gymnasium", num_envs=16)``): each worker then builds
one and steps it as one batch per step (:mod:`aiorl.worker.vector_sampler`), and the
trainer's ``envs_per_worker`` is its ``num_envs``.

A vector env resets its sub-envs itself when their episodes end, in the mode its
``metadata["autoreset_mode"]`` names (gymnasium 1.x; absent means ``NEXT_STEP``, gymnasium's
default):

- ``NEXT_STEP`` (gymnasium's default, and EnvPool's): the step that ends an episode returns
  its final observation; the sub-env's next ``step`` ignores its action, resets, and returns
  the first observation of the next episode with reward 0. That *reset step* is no
  transition: a worker records it as an inert row (``valid=False``) that is neither
  collected, trained on nor discarded (it is not an env step).
- ``SAME_STEP``: the step that ends an episode already returns the next episode's first
  observation; the final one is in ``info["final_obs"]`` (which bootstraps a truncated
  episode).
- ``DISABLED`` (the caller resets sub-envs itself) is not supported: a :class:`ConfigError`.

:class:`VectorEnvs` is a picklable factory of either kind (what ``aiorl train ENV --vector``
builds); :class:`FirstSubEnv` shows sub-env 0 of a vector env as a single env, for
evaluation and :meth:`aiorl.Policy.play`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from aiorl.envs.masks import ACTION_MASK_KEY, ActionMasks, InvalidActionMask
from aiorl.errors import ConfigError
from aiorl.numbers import plain_numbers

VECTOR_KINDS = ("gymnasium", "envpool")
"""What :class:`VectorEnvs` builds: ``gymnasium.make_vec`` or ``envpool.make``."""
SEED_VARIABLE = "AIORL_ENV_SEED"
"""Environment variable holding the seed of the vector env a worker is building (see :func:`construction_seed`)."""

VectorKind = Literal["gymnasium", "envpool"]


def is_vector_env(env: object) -> bool:
    """Whether ``env`` is a gymnasium ``VectorEnv`` (EnvPool's gymnasium envs are)."""
    return isinstance(env, VectorEnv)


def autoreset_mode(env: VectorEnv) -> AutoresetMode:
    """The autoreset mode of ``env`` (``NEXT_STEP`` when its metadata names none).

    Raises:
        ConfigError: the mode is ``DISABLED`` or not one gymnasium defines.
    """
    mode = (getattr(env, "metadata", None) or {}).get("autoreset_mode", AutoresetMode.NEXT_STEP)
    try:
        mode = AutoresetMode(mode)
    except ValueError:
        raise ConfigError(
            f"the vector env's metadata['autoreset_mode']={mode!r} is not a gymnasium AutoresetMode"
        ) from None
    if mode is AutoresetMode.DISABLED:
        raise ConfigError(
            "the vector env's autoreset_mode is DISABLED (the caller resets sub-envs); aiorl steps vector "
            "envs that reset themselves: use AutoresetMode.NEXT_STEP or SAME_STEP"
        )
    return mode


def seeds_at_construction(env: object) -> bool:
    """Whether ``env`` takes its seed when it is built and ignores ``reset(seed=...)`` (EnvPool)."""
    envpool = sys.modules.get("envpool.python.gymnasium_envpool")
    return envpool is not None and isinstance(env, envpool.GymnasiumEnvPoolMixin)


def construction_seed() -> int | None:
    """The seed a worker wants the vector env it is building to have (``None`` outside a worker).

    A worker resets its vector env with ``seed=`` (sub-env ``i`` gets ``seed + i``), except an
    env that is seeded when built (EnvPool): a factory of such envs passes this to it.
    """
    value = os.environ.get(SEED_VARIABLE)
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class VectorEnvs:
    """A picklable factory of vector envs of a registered env id.

    Args:
        env_id: a gymnasium id (``kind="gymnasium"``) or an EnvPool task id (``kind="envpool"``).
        num_envs: sub-envs of each vector env (a worker's ``envs_per_worker``).
        kind: ``"gymnasium"``: ``gymnasium.make_vec`` (its ``vectorization_mode`` defaults to
            the env's own vectorized implementation where it has one, else ``"sync"``);
            ``"envpool"``: ``envpool.make(env_type="gymnasium")`` with ``num_threads`` threads,
            seeded with the worker's :func:`construction_seed`.
        num_threads: EnvPool's threads per vector env (one worker per core wants 1).
        kwargs: passed to ``make_vec`` (``vectorization_mode``, ``vector_kwargs``, and the env's
            own keyword arguments) or to ``envpool.make``.
    """

    env_id: str
    num_envs: int
    kind: VectorKind = "gymnasium"
    num_threads: int = 1
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        plain_numbers(self)
        problems = []
        if self.kind not in VECTOR_KINDS:
            problems.append(f"kind={self.kind!r} must be one of {VECTOR_KINDS}")
        if not (isinstance(self.num_envs, int) and self.num_envs >= 1):
            problems.append(f"num_envs={self.num_envs!r} must be an integer >= 1")
        if not (isinstance(self.num_threads, int) and self.num_threads >= 1):
            problems.append(f"num_threads={self.num_threads!r} must be an integer >= 1")
        if problems:
            raise ConfigError(problems)
        if self.kind == "envpool":
            _import_envpool()

    def __call__(self, render_mode: str | None = None) -> VectorEnv:
        """Build one vector env; ``render_mode`` goes to the sub-envs of a gymnasium one (EnvPool's do not render)."""
        if self.kind == "envpool":
            seed = construction_seed()
            extra = {} if seed is None else {"seed": seed}
            envpool = _import_envpool()
            return envpool.make(  # type: ignore[no-any-return]
                self.env_id,
                env_type="gymnasium",
                num_envs=self.num_envs,
                num_threads=self.num_threads,
                **{**extra, **self.kwargs},
            )
        kwargs = dict(self.kwargs) if render_mode is None else {**self.kwargs, "render_mode": render_mode}
        mode = kwargs.pop("vectorization_mode", None)
        if mode is None:
            spec = gym.spec(self.env_id)
            mode = "vector_entry_point" if spec.vector_entry_point is not None else "sync"
        return gym.make_vec(self.env_id, num_envs=self.num_envs, vectorization_mode=mode, **kwargs)

    def describe(self) -> str:
        """``"CartPole-v1 (envpool x 32)"``: for logs and errors."""
        return f"{self.env_id} ({self.kind} x {self.num_envs})"


def _import_envpool() -> Any:
    try:
        import envpool
    except ImportError as exc:
        raise ConfigError(
            "kind='envpool' (aiorl train --vector envpool) needs envpool, which is not installed: "
            f"pip install 'aiorl[envpool]' ({exc})"
        ) from exc
    return envpool


class FirstSubEnv(gym.Env):  # type: ignore[type-arg]
    """Sub-env 0 of a vector env, as a single gymnasium env (the others are stepped along, ignored).

    For playing episodes (evaluation, :meth:`aiorl.Policy.play`) with the env a trainer's
    workers step as a vector env: ``reset`` starts a fresh episode in sub-env 0 (stepping
    through a ``NEXT_STEP`` reset step where one is due) and ``step`` steps every sub-env
    with the same action, except that a sub-env whose info holds an ``action_mask`` that
    forbids it gets a random action its mask allows, component by component for a
    ``MultiDiscrete`` space (a masked env may raise on an invalid one).
    """

    def __init__(self, env: VectorEnv) -> None:
        self.vector = env
        self.mode = autoreset_mode(env)
        self.observation_space = env.single_observation_space
        self.action_space = env.single_action_space
        self.metadata = dict(getattr(env, "metadata", {}) or {})
        self.spec = getattr(env, "spec", None)
        self.render_mode = getattr(env, "render_mode", None)
        self._started = False
        self._ended = False
        self._masks: Any = None  # the batched info's action masks, if it has any
        self._reader: ActionMasks | None = None
        """Reads one sub-env's mask (``None``: the action space cannot be masked)."""
        with contextlib.suppress(ConfigError):  # e.g. a Box, or a MultiDiscrete of 2-D nvec
            self._reader = ActionMasks.for_space(self.action_space)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """A new episode of sub-env 0.

        Every sub-env is reset the first time, when ``seed`` is given, and when sub-env 0's
        episode has not ended; otherwise sub-env 0's next episode has already begun.
        """
        if not self._started or seed is not None or not self._ended:
            obs, info = self.vector.reset(seed=None if seeds_at_construction(self.vector) else seed)
        elif self.mode is AutoresetMode.NEXT_STEP:  # sub-env 0's episode ended
            obs, _, _, _, info = self.vector.step(self._batch(self.action_space.sample()))  # the reset step
        else:  # SAME_STEP: the step that ended the episode returned the next one's first observation
            obs, info = self._next_obs, self._next_info
        self._started, self._ended = True, False
        self._masks = info.get(ACTION_MASK_KEY) if isinstance(info, dict) else None
        return _row(obs, 0), _info_row(info, 0)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Step every sub-env with ``action``; return sub-env 0's step."""
        obs, reward, terminated, truncated, info = self.vector.step(self._batch(action))
        self._masks = info.get(ACTION_MASK_KEY) if isinstance(info, dict) else None
        term, trunc = bool(terminated[0]), bool(truncated[0])
        row_info = _info_row(info, 0)
        self._ended = term or trunc
        if self._ended and self.mode is AutoresetMode.SAME_STEP:
            self._next_obs, self._next_info = obs, info
            return info["final_obs"][0], float(reward[0]), term, trunc, _info_row(info["final_info"], 0)
        return _row(obs, 0), float(reward[0]), term, trunc, row_info

    def _batch(self, action: Any) -> np.ndarray:
        actions = np.stack([np.asarray(action)] * self.vector.num_envs)
        reader = self._reader
        if self._masks is None or reader is None:
            return actions
        mask = np.empty(reader.width, dtype=np.bool_)
        starts = np.asarray(self.action_space.start).reshape(-1)
        offsets = np.cumsum((0, *reader.sizes))
        rows = actions.reshape(len(actions), -1)  # a view: one entry per component
        for i in range(1, len(actions)):  # sub-env 0's action comes from the policy, with its own mask
            try:
                reader.read(self._masks[i], mask)
            except (InvalidActionMask, IndexError):  # no mask of its own to honour (e.g. zeros filled in)
                continue
            for j, (start, size) in enumerate(zip(starts, reader.sizes, strict=True)):
                valid = mask[offsets[j] : offsets[j] + size]
                if not valid[int(rows[i, j]) - int(start)]:
                    rows[i, j] = start + self.action_space.np_random.choice(np.flatnonzero(valid))
        return actions

    def render(self) -> Any:
        """The vector env's render (sub-env 0's frame where it renders a list or a batch)."""
        frames = self.vector.render()
        return frames[0] if isinstance(frames, list | tuple) else frames

    def close(self) -> None:
        """Close the vector env."""
        self.vector.close()


def _row(batch: Any, i: int) -> Any:
    if isinstance(batch, dict):
        return {key: _row(value, i) for key, value in batch.items()}
    if isinstance(batch, tuple):
        return tuple(_row(value, i) for value in batch)
    return batch[i]


def _info_row(info: Any, i: int) -> dict[str, Any]:
    """Sub-env ``i``'s entries of a vector env's info (the keys whose ``_key`` mask is set for it)."""
    if not isinstance(info, dict):
        return {}
    row = {}
    for key, value in info.items():
        if key.startswith("_"):
            continue
        present = info.get(f"_{key}")
        if present is not None and not bool(np.asarray(present)[i]):
            continue
        try:
            row[key] = _info_row(value, i) if isinstance(value, dict) else value[i]
        except (TypeError, IndexError, KeyError):
            row[key] = value
    return row
