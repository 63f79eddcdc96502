"""Inference: act with a trained policy from a checkpoint, without workers or an event loop.

    policy = aiorl.Policy.load("runs/cartpole/checkpoint.pt")
    env = policy.make_env()
    obs, _ = env.reset(seed=0)
    action = policy.act(obs)  # deterministic (the most likely action) by default

A recurrent policy (``policy.recurrent``) carries a state from one step to the next:
``action, state = policy.act(obs, state)``, with ``state=None`` at the first observation
of every episode.

With an env that gives action masks, pass the mask of the observation's info:
``policy.act(obs, action_mask=info["action_mask"])`` (:meth:`Policy.play` does).

Only torch and gymnasium are used: no worker process, no shared memory, no asyncio.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from aiorl.checkpoint import read_checkpoint
from aiorl.config import device_problem
from aiorl.distributions import ActionDistribution
from aiorl.envs import AsyncEnv, EnvFactory, ObservationEncoder
from aiorl.envs.vector import FirstSubEnv, is_vector_env
from aiorl.errors import ConfigError
from aiorl.evaluation import EvalResult, FrameSink, RecurrentMemory, choose_action, play, sampling_generator
from aiorl.models import ObservationNormalizer
from aiorl.numbers import is_integer, plain_number
from aiorl.recurrent import state_size


class Policy:
    """A trained policy that maps one raw observation to one env action.

    Args:
        module: the policy network (see :mod:`aiorl.models` for its interface).
        obs_encoder: turns a raw observation into the network's input.
        dist: the action distribution of the env's action space.
        env_factory: how to build the env it was trained on (for :meth:`make_env`).
        policy_version: the training update that produced these weights.
        device: torch device to act on.
    """

    def __init__(
        self,
        module: nn.Module,
        obs_encoder: ObservationEncoder,
        dist: ActionDistribution,
        *,
        env_factory: EnvFactory | None = None,
        policy_version: int = 0,
        device: str = "cpu",
        action_space: gym.Space | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.action_space = action_space
        """The action space it was trained for (``None``: not known); :meth:`play` checks an env's against it."""
        self.module = module.to(self.device).eval()
        self.obs_encoder = obs_encoder
        self.dist = dist
        self.env_factory = env_factory
        self.policy_version = policy_version
        self.recurrent = state_size(self.module) > 0
        """Whether the policy carries a state between steps (:meth:`act` then takes and returns it)."""

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str = "cpu") -> Policy:
        """The policy saved in a checkpoint file (or a log directory holding ``checkpoint.pt``).

        Checkpoints are pickles: load only files you trust.

        Raises:
            CheckpointError: the file is missing, unreadable or not an aiorl checkpoint.
            ConfigError: ``device`` is not a torch device usable here.
        """
        problem = device_problem("device", device)
        if problem:
            raise ConfigError(problem)
        state = read_checkpoint(path)
        encoder = ObservationEncoder.for_space(state["observation_space"])
        dist = ActionDistribution.for_space(state["action_space"])
        module: nn.Module = state["policy_module"]
        if state["config"].get("normalize_observations"):
            module = ObservationNormalizer(module, encoder.shape)
        module.load_state_dict(state["learner"]["policy"])
        return cls(
            module,
            encoder,
            dist,
            env_factory=state["env"],
            policy_version=state["policy_version"],
            device=device,
            action_space=state["action_space"],
        )

    @torch.inference_mode()
    def act(
        self, obs: Any, state: torch.Tensor | None = None, *, deterministic: bool = True, action_mask: Any = None
    ) -> Any:
        """The action for one raw observation, ready for ``env.step``.

        ``deterministic`` takes the most likely action (the Gaussian's mean, clipped to
        the bounds); otherwise the action is sampled from the policy's distribution, with
        torch's global generator (``torch.manual_seed`` makes it repeatable; :meth:`play`
        seeds its own).

        ``action_mask`` restricts the choice to the valid actions, for envs with action
        masks: pass the ``info["action_mask"]`` that came with ``obs``, in the env's format
        (``Discrete(n)``: an int8 or bool array of ``n``, nonzero = valid; ``MultiDiscrete``:
        one such array per component, or one of ``sum(nvec)``). ``None`` (the default):
        every action is valid. The policy was trained never to choose an invalid action,
        but only a given mask guarantees it.

        A recurrent policy (:attr:`recurrent`) returns ``(action, state)``: pass that state
        back with the next observation of the same episode, and ``state=None`` with the
        first observation of an episode (the policy starts from its initial state). One
        state per env; it is a ``[1, state_size]`` tensor on the policy's device.

        Calls from several threads at once (a server's handlers in ``asyncio.to_thread``) are
        safe: each call has its own buffers.

        Raises:
            ConfigError: ``state`` given to a feed-forward policy, a ``state`` that is not
                a ``[1, state_size]`` tensor, or a mask for a ``Box`` or ``MultiBinary`` action space.
            InvalidActionMask: (a ``ValueError``) the mask is malformed or allows no action.
        """
        if state is not None and not self.recurrent:
            raise ConfigError(f"state={type(state).__name__}: this policy is not recurrent and keeps no state")
        if state is not None:
            expected = (1, state_size(self.module))
            if not (isinstance(state, torch.Tensor) and tuple(state.shape) == expected):
                given = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
                raise ConfigError(
                    f"state={given}: pass back the state act() returned (a tensor of shape {expected}), "
                    "or None at the start of an episode"
                )
        memory = RecurrentMemory(state) if self.recurrent else None
        action = self._act(obs, deterministic, memory, action_mask)
        return action if memory is None else (action, memory.state)

    def _act(
        self,
        obs: Any,
        deterministic: bool,
        memory: RecurrentMemory | None,
        action_mask: Any,
        generator: torch.Generator | None = None,
    ) -> Any:
        return choose_action(
            self.module,
            self.obs_encoder,
            self.dist,
            obs,
            # A buffer per call: one shared by the policy was overwritten by another thread's call
            # while torch (which releases the GIL) still read it, giving that call's action.
            np.empty((1, *self.obs_encoder.shape), dtype=np.float32),
            deterministic=deterministic,
            device=self.device,
            memory=memory,
            action_mask=action_mask,
            generator=generator,
        )

    def make_env(self, render_mode: str | None = None) -> gym.Env:
        """A fresh instance of the env the policy was trained on.

        Raises:
            ConfigError: the policy has no env recipe, the env cannot be made in this process,
                or it cannot render in ``render_mode``.
        """
        factory = self.env_factory
        if factory is None:
            raise ConfigError("this Policy was built without an env_factory; make the env yourself")
        made: gym.Env | AsyncEnv
        try:
            if factory.env_id is not None:
                # render_mode=None is left out: gym.make passes it on, and not every env takes one.
                options = factory.kwargs if render_mode is None else {**factory.kwargs, "render_mode": render_mode}
                made = gym.make(factory.env_id, **options)
            elif render_mode is not None and factory.make_fn is not None and _accepts(factory.make_fn, "render_mode"):
                made = factory.make_fn(render_mode=render_mode)  # type: ignore[call-arg]
            else:
                made = factory()
        except Exception as exc:  # an id registered by a module not imported here, a missing dependency
            raise ConfigError(
                f"env={factory.describe()!r} could not be made here: {type(exc).__name__}: {exc}"
            ) from exc
        if is_vector_env(made):  # a trainer's workers step vector envs: play in one of its sub-envs
            made = FirstSubEnv(made)  # type: ignore[arg-type]
        if not isinstance(made, gym.Env):
            raise ConfigError(f"env={factory.describe()!r} is an aiorl.AsyncEnv; drive it yourself with policy.act()")
        env = made
        if render_mode is None:
            return env
        if env.render_mode != render_mode:
            env.close()
            raise ConfigError(
                f"render={render_mode!r}: the env {factory.describe()!r} does not render in that mode "
                f"(its render_mode is {env.render_mode!r})"
            )
        return env

    def play(
        self,
        episodes: int = 10,
        *,
        seed: int = 0,
        deterministic: bool = True,
        on_frame: FrameSink | None = None,
        env: gym.Env | None = None,
        max_episode_steps: int | None = None,
        timeout_s: float | None = None,
    ) -> EvalResult:
        """Play ``episodes`` whole episodes (episode ``i`` reset with ``seed + i``).

        Actions respect the env's action masks (``info["action_mask"]``) when it gives them.
        The episodes are bounded as the trainer's evaluations are (:func:`aiorl.evaluation.play`):
        an episode that has not ended after ``max_episode_steps`` steps is cut there and
        counted in :attr:`EvalResult.capped`.

        Args:
            episodes: how many episodes.
            seed: the reset seed of the first episode, and of the actions sampled when
                not ``deterministic``: one seed plays the same episodes every time.
            deterministic: act with the most likely action, else sample.
            on_frame: receives ``env.render()`` after the reset and after every step of
                the *first* episode (make the env with ``render_mode="rgb_array"``).
            env: play in this env (closed at the end; a vector env: in its first sub-env);
                default: :meth:`make_env`.
            max_episode_steps: the step cap of an episode; default: the env's
                ``spec.max_episode_steps``, else :data:`aiorl.evaluation.DEFAULT_MAX_EPISODE_STEPS`.
            timeout_s: wall-clock limit for all the episodes (``None``: none), checked
                after every step.

        Raises:
            EvaluationTimeout: ``timeout_s`` passed (the message names the env and the limit).
            ConfigError: ``env`` is an :class:`~aiorl.AsyncEnv`, or its action space is not the
                policy's (a CartPole policy would play only two of three actions in silence);
                an observation that does not fit the policy raises when it comes.
        """
        episodes, seed, max_episode_steps, timeout_s = map(plain_number, (episodes, seed, max_episode_steps, timeout_s))
        if not (is_integer(episodes) and episodes >= 1):
            raise ConfigError(f"episodes={episodes!r} must be an integer >= 1")
        name = self.env_factory.describe() if env is None and self.env_factory is not None else None
        if env is not None and is_vector_env(env):  # as trained on vector envs: play in one of its sub-envs
            env = FirstSubEnv(env)  # type: ignore[arg-type]
        try:
            generator = sampling_generator(seed, self.device)  # checks the seed
            if env is not None:
                self._check_env(env)
        except ConfigError:
            if env is not None and callable(getattr(env, "close", None)):
                env.close()  # closed at the end, as documented, also when refused
            raise
        env = self.make_env() if env is None else env
        memory = RecurrentMemory() if self.recurrent else None

        @torch.inference_mode()
        def act(obs: Any, action_mask: Any) -> Any:
            return self._act(obs, deterministic, memory, action_mask, generator)

        return play(
            env,
            act,
            episodes=episodes,
            seed=seed,
            policy_version=self.policy_version,
            max_episode_steps=max_episode_steps,
            timeout_s=timeout_s,
            on_frame=on_frame,
            name=name,
            memory=memory,
        )

    def _check_env(self, env: object) -> None:
        """Raise :class:`ConfigError` unless :meth:`play` can play in ``env`` with this policy."""
        if isinstance(env, AsyncEnv):
            raise ConfigError(f"env={env!r} is an aiorl.AsyncEnv; drive it yourself with policy.act()")
        if not (callable(getattr(env, "reset", None)) and callable(getattr(env, "step", None))):
            raise ConfigError(
                f"env={env!r} must be a gymnasium env (or vector env) to play in; for an env id, "
                "make it first (gymnasium.make) or leave env out to play in make_env()"
            )
        action_space = getattr(env, "action_space", None)
        if self.action_space is not None and action_space != self.action_space:
            raise ConfigError(f"env's action_space is {action_space}, but the policy's is {self.action_space}")


def _accepts(function: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
