"""Env factories: how a worker builds its envs from what the user passed.

``Trainer(env=...)`` takes a gymnasium id (plus ``env_kwargs``) or a picklable
zero-argument callable returning a ``gymnasium.Env``, an :class:`~aiorl.AsyncEnv`, or a
``gymnasium.vector.VectorEnv`` (one per worker: :mod:`aiorl.envs.vector`).
:class:`EnvFactory` wraps either, checks it in the main process (unknown id,
unpicklable callable, wrong return type, unsupported spaces) and is what travels to
worker processes.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv

from aiorl.envs.async_env import AsyncEnv
from aiorl.envs.atari import AtariEnv
from aiorl.envs.closing import close_in_background
from aiorl.envs.frames import frame_stack_size
from aiorl.envs.masks import ACTION_MASK_KEY, ActionMasks, InvalidActionMask, detect_action_masks
from aiorl.envs.spaces import ObservationEncoder, check_action_space
from aiorl.envs.vector import VectorEnvs, autoreset_mode, is_vector_env
from aiorl.errors import ConfigError

EnvSource = str | Callable[[], gym.Env | AsyncEnv | VectorEnv]


def check_env_kwargs(env_kwargs: object) -> None:
    """Raise :class:`ConfigError` unless ``env_kwargs`` is ``None`` or a mapping with str keys."""
    if env_kwargs is not None and not (
        isinstance(env_kwargs, Mapping) and all(isinstance(key, str) for key in env_kwargs)
    ):
        raise ConfigError(f"env_kwargs={env_kwargs!r} must be a dict of keyword arguments (str keys) or None")


def _import_registering_module(env: str) -> str:
    """The gymnasium id of ``env``, after importing the module of a ``"module:EnvId"`` (as ``gym.make`` does).

    Raises:
        ConfigError: the module cannot be imported.
    """
    if ":" not in env:
        return env
    module, env_id = env.split(":", 1)
    try:
        importlib.import_module(module)
    except Exception as exc:
        raise ConfigError(
            f"env={env!r}: module {module!r}, which should register {env_id!r}, cannot be imported: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return env_id


@dataclass(frozen=True, slots=True)
class EnvFactory:
    """A picklable recipe for one environment.

    Exactly one of ``env_id`` and ``make_fn`` is set.
    """

    env_id: str | None = None
    make_fn: Callable[[], gym.Env | AsyncEnv | VectorEnv] | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_user(cls, env: EnvSource, env_kwargs: Mapping[str, Any] | None = None) -> EnvFactory:
        """Validate what the user passed as ``env`` and wrap it.

        Raises:
            ConfigError: unknown gymnasium id, a callable that cannot be pickled
                (lambdas and closures cannot reach a worker process), kwargs given
                with a callable or not as a mapping, or anything else passed as ``env``.
        """
        check_env_kwargs(env_kwargs)
        if isinstance(env, str):
            if env.startswith("ALE/") and env not in gym.registry:
                raise ConfigError(
                    f"env={env!r} is an ale-py id, which workers cannot make from the id alone: use "
                    f"Trainer.from_preset({env!r}) (Atari's preprocessing and frame stack; Pong and Breakout) "
                    f"or env=aiorl.envs.AtariEnv({env!r}); `pip install 'aiorl[atari]'` installs ale-py"
                )
            env_id = _import_registering_module(env)
            if env_id not in gym.registry:
                close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
                hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
                raise ConfigError(f"env={env!r} is not a registered gymnasium id{hint}")
            return cls(env_id=env, kwargs=dict(env_kwargs or {}))
        if callable(env):
            if env_kwargs:
                raise ConfigError(
                    f"env_kwargs={dict(env_kwargs)!r} only applies to a gymnasium id; "
                    "bind arguments into the callable instead (functools.partial)"
                )
            try:
                pickle.dumps(env)
            except Exception as exc:
                raise ConfigError(
                    f"env={env!r} cannot be pickled to reach worker processes ({exc}); "
                    "use a module-level function, a class, or functools.partial"
                ) from exc
            return cls(make_fn=env)
        raise ConfigError(
            f"env={env!r} must be a gymnasium id (str) or a zero-argument callable returning "
            "a gymnasium.Env, an aiorl.AsyncEnv or a gymnasium.vector.VectorEnv"
        )

    def __call__(self) -> gym.Env | AsyncEnv | VectorEnv:
        """Make one fresh environment."""
        if self.env_id is not None:
            try:
                return gym.make(self.env_id, **self.kwargs)
            except gym.error.UnregisteredEnv as exc:
                if ":" in self.env_id:
                    raise
                # The trainer found the id, so its process registered it: a worker process did not.
                raise type(exc)(
                    f"{exc} (in this worker process; the trainer's has it: an id registered by a call "
                    "that only the trainer's process ran, such as gymnasium.register in main(), is "
                    f"unknown to workers. Register it at the top level of a module and pass "
                    f"env='that_module:{self.env_id}': gymnasium imports the module first, in every "
                    "process; or pass a factory, a module-level function or class)"
                ) from None
        assert self.make_fn is not None
        return self.make_fn()

    def describe(self) -> str:
        """A short human-readable name for logs and errors."""
        if self.env_id is not None:
            return self.env_id
        if isinstance(self.make_fn, VectorEnvs | AtariEnv):
            return self.make_fn.describe()
        return getattr(self.make_fn, "__qualname__", repr(self.make_fn))


@dataclass(frozen=True, slots=True)
class EnvSpaces:
    """The observation and action spaces of an environment, probed once.

    ``is_async`` tells whether the factory returns an :class:`~aiorl.AsyncEnv`;
    ``action_masks`` how its action masks are read, if it gives any (see :mod:`aiorl.envs.masks`);
    ``num_envs`` the sub-envs of the ``gymnasium.vector.VectorEnv`` it returns (``None``: it
    returns single envs). The spaces of a vector env are those of one sub-env. ``frame_stack``
    is the number of stacked frames per observation when rollouts can store each frame once
    (see :mod:`aiorl.envs.frames`), else 0.
    """

    observation_space: gym.Space
    action_space: gym.Space
    is_async: bool = False
    action_masks: ActionMasks | None = None
    num_envs: int | None = None
    frame_stack: int = 0

    @classmethod
    def probe(cls, factory: EnvFactory) -> EnvSpaces:
        """Make one env in this process, read its spaces, look for action masks, close it, and check them.

        A gymnasium env (or vector env) is reset once: if the info has an ``"action_mask"``,
        the env is masked. An :class:`~aiorl.AsyncEnv` is not reset here (its ``reset`` may open
        connections): it says so with its ``action_masks`` attribute.

        Raises:
            ConfigError: the factory failed, did not return an env, its reset failed, an env
                space is unsupported, the env gives action masks for an action space
                that cannot be masked, or a vector env does not reset its sub-envs itself.
        """
        try:
            env = factory()
        except Exception as exc:
            raise ConfigError(f"env={factory.describe()!r} could not be created: {type(exc).__name__}: {exc}") from exc
        try:
            if not (hasattr(env, "observation_space") and hasattr(env, "action_space")):
                raise ConfigError(
                    f"env={factory.describe()!r} returned {type(env).__name__}, "
                    "which has no observation_space/action_space"
                )
            is_async = isinstance(env, AsyncEnv)
            num_envs = None
            observation_space, action_space = env.observation_space, env.action_space
            if isinstance(getattr(env, "unwrapped", env), gym.vector.AsyncVectorEnv):  # under vector wrappers too
                env.close()  # its env processes end now, not in the background
                raise ConfigError(
                    f"env={factory.describe()!r} returned a gymnasium AsyncVectorEnv, whose env processes a "
                    "worker (a daemon process) cannot start: use a SyncVectorEnv (vectorization_mode='sync' or "
                    "'vector_entry_point'), and more workers for more processes"
                )
            if is_vector_env(env):
                autoreset_mode(env)
                num_envs = env.num_envs
                if not (isinstance(num_envs, int | np.integer) and num_envs >= 1):
                    env.close()
                    raise ConfigError(
                        f"env={factory.describe()!r} returned a vector env with num_envs={num_envs!r}: "
                        "it must step at least one sub-env"
                    )
                num_envs = int(num_envs)
                observation_space, action_space = env.single_observation_space, env.single_action_space
            encoder = ObservationEncoder.for_space(observation_space)  # unsupported spaces fail before any reset
            check_action_space(action_space)
            if is_async:
                _check_coroutines(env, factory)
                info: object = {"action_mask": True} if getattr(env, "action_masks", False) is True else {}
            else:
                info = _first_reset(env, factory, encoder, num_envs)
            masks = detect_action_masks(info, action_space)
            if masks is not None and not is_async:
                _check_first_mask(masks, info, factory, num_envs)
            return cls(observation_space, action_space, is_async, masks, num_envs, frame_stack_size(env))
        finally:
            if hasattr(env, "close"):
                close_in_background(env, "the env built to read its spaces")


def _check_coroutines(env: AsyncEnv[Any, Any], factory: EnvFactory) -> None:
    """Raise :class:`ConfigError` unless the async env's ``reset``, ``step`` and ``close`` are coroutine functions.

    One written with a plain ``def`` (``async`` forgotten) failed only in the workers, with
    "object tuple can't be used in 'await' expression".
    """
    plain = [
        name
        for name in ("reset", "step", "close")
        if not inspect.iscoroutinefunction(inspect.unwrap(getattr(type(env), name)))
    ]
    if plain:
        raise ConfigError(
            f"env={factory.describe()!r} is an aiorl.AsyncEnv whose {' and '.join(plain)} "
            f"{'is not a coroutine function' if len(plain) == 1 else 'are not coroutine functions'}: "
            "define them with 'async def' (a blocking gymnasium env needs no AsyncEnv: pass it as it is, "
            "or wrap it in aiorl.ThreadedEnv)"
        )


def _check_first_mask(masks: ActionMasks, info: Any, factory: EnvFactory, num_envs: int | None) -> None:
    """Read the probe env's first mask (each sub-env's of a vector env) as workers will.

    So a malformed one fails before any process starts.

    Raises:
        ConfigError: a mask is malformed, missing or allows no action (the message says how).
    """
    try:
        if num_envs is None:
            masks.from_raw(info[ACTION_MASK_KEY])
        else:
            rows = np.ones(num_envs, dtype=np.bool_)
            masks.read_batch_info(info, rows, np.empty((num_envs, masks.width), dtype=np.bool_))
    except InvalidActionMask as exc:
        raise ConfigError(f"env={factory.describe()!r}: on its first reset, {exc}") from exc


def _first_reset(
    env: gym.Env | VectorEnv, factory: EnvFactory, encoder: ObservationEncoder, num_envs: int | None
) -> object:
    """Reset the probe env once, check what it returns as workers will, and return its info.

    The info is where an action mask would be; the observation must be one of the env's
    observation space (a batch of ``num_envs`` for a vector env).

    Raises:
        ConfigError: the reset raised, did not return ``(observation, info)``, or returned an
            observation that is not of the observation space.
    """
    where = f"env={factory.describe()!r}"
    try:
        returned = env.reset()
    except Exception as exc:
        raise ConfigError(
            f"{where} could not be reset (the trainer resets one env to check it): {type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(returned, tuple) and len(returned) == 2 and isinstance(returned[1], dict)):
        raise ConfigError(
            f"{where}: reset() returned {type(returned).__name__} {_short(returned)}, expected a tuple "
            "(observation, info: dict) as in gymnasium's API (an old gym env returns the observation alone)"
        )
    obs, info = returned
    try:
        if num_envs is None:
            encoder.encode_into(obs, np.zeros(encoder.shape, dtype=np.float32))
        else:
            encoder.encode_batch_into(obs, np.zeros((num_envs, *encoder.shape), dtype=np.float32))
    except Exception as exc:
        raise ConfigError(
            f"{where}: reset() returned an observation that does not fit its observation_space: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return info


def _short(value: object) -> str:
    """``repr(value)``, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
