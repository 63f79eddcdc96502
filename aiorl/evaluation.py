"""Evaluation: play whole episodes with a snapshot of the policy, apart from the workers.

:func:`play` is the one episode loop: the trainer's evaluations (:func:`play_episodes`) and
:meth:`aiorl.Policy.play` both run it. Every episode is bounded: it is cut after
``max_episode_steps`` steps (default: the env's ``spec.max_episode_steps``, else
:data:`DEFAULT_MAX_EPISODE_STEPS`) and counted in :attr:`EvalResult.capped`, so an env
that never ends an episode cannot hang an evaluation or the run that waits for it. A
wall-clock limit (``timeout_s``) raises :class:`~aiorl.errors.EvaluationTimeout`.

The trainer's evaluation builds its own envs (seeded apart from the training envs) and
runs in a thread of the trainer's process (async envs on a private event loop of that
thread), so collection and learning carry on undisturbed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from torch import nn

from aiorl.distributions import ActionDistribution
from aiorl.envs import AsyncEnv, EnvFactory, ObservationEncoder
from aiorl.envs.closing import aclose_env
from aiorl.envs.masks import ACTION_MASK_KEY, InvalidActionMask
from aiorl.envs.vector import FirstSubEnv, is_vector_env
from aiorl.errors import ConfigError, EvaluationTimeout
from aiorl.models import evaluate
from aiorl.numbers import is_integer, is_number
from aiorl.recurrent import state_size, step

log = logging.getLogger("aiorl")

T = TypeVar("T")

DEFAULT_MAX_EPISODE_STEPS = 100_000
"""Steps after which an evaluation episode is cut when neither the caller nor the env's
``spec.max_episode_steps`` sets a limit."""

Actor = Callable[[Any, Any], Any]
"""Maps one raw observation and its action mask (the env's ``info["action_mask"]`` as the env
gave it, ``None`` when the info has none) to one env action."""
FrameSink = Callable[[np.ndarray], None]
"""Receives rendered frames."""


@dataclass(slots=True)
class RecurrentMemory:
    """A recurrent policy's state in one env between its steps (see :mod:`aiorl.recurrent`).

    ``state`` is ``None`` when the next step is the first of an episode: the policy then
    starts from its initial state.
    """

    state: torch.Tensor | None = None

    def forget(self) -> None:
        """The next step starts an episode."""
        self.state = None


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Returns and lengths of evaluation episodes, played by one policy version.

    Attributes:
        policy_version: the version that played.
        returns: the return of each episode.
        lengths: the length of each episode.
        capped: how many episodes were cut at ``max_episode_steps`` before the env ended
            them (their return and length count the steps up to the cap).
    """

    policy_version: int
    returns: tuple[float, ...]
    lengths: tuple[int, ...]
    capped: int = 0

    @property
    def episodes(self) -> int:
        """How many episodes were played."""
        return len(self.returns)

    @property
    def mean_return(self) -> float:
        """Mean episode return."""
        return statistics.fmean(self.returns)

    @property
    def std_return(self) -> float:
        """Population standard deviation of the episode returns."""
        return statistics.pstdev(self.returns)


class EpisodeEnv(Protocol):
    """What :func:`play` drives: a ``gymnasium.Env``, or an :class:`~aiorl.AsyncEnv` behind :class:`_Awaited`."""

    def reset(self, *, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Start an episode; return its first observation and info."""
        ...

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        """``(obs, reward, terminated, truncated, info)`` after ``action``."""
        ...

    def render(self) -> Any:
        """The current frame (used only with ``on_frame``)."""
        ...

    def close(self) -> None:
        """Release the env."""
        ...


class _Expired(Exception):
    """The wall-clock limit passed (turned into :class:`EvaluationTimeout` by :func:`play`)."""


class EvaluationStopped(Exception):
    """:func:`play` stopped early because its ``stop`` event was set (whoever waited was cancelled)."""


def play(
    env: EpisodeEnv,
    act: Actor,
    *,
    episodes: int,
    seed: int,
    policy_version: int,
    max_episode_steps: int | None = None,
    timeout_s: float | None = None,
    on_frame: FrameSink | None = None,
    name: str | None = None,
    memory: RecurrentMemory | None = None,
    stop: threading.Event | None = None,
) -> EvalResult:
    """Play ``episodes`` whole episodes in ``env`` (episode ``i`` reset with ``seed + i``); close it at the end.

    Args:
        env: the env (closed at the end, also on an error or a rejected argument).
        act: the action for a raw observation and the action mask of the info that came
            with it (``None`` when the env gives none).
        memory: the recurrent state ``act`` keeps (a recurrent policy's): forgotten at every reset.
        episodes: how many episodes.
        seed: the reset seed of the first episode.
        policy_version: recorded in the result.
        max_episode_steps: cut an episode after this many steps (counted in
            :attr:`EvalResult.capped`); default: the env's ``spec.max_episode_steps``, else
            :data:`DEFAULT_MAX_EPISODE_STEPS`.
        timeout_s: wall-clock limit for all the episodes (``None``: none), checked after
            every step; an :class:`~aiorl.AsyncEnv`'s pending call is cancelled when it
            passes. A blocking ``step`` that never returns cannot be interrupted.
        on_frame: receives ``env.render()`` after the reset and after every step of the
            first episode.
        name: how messages name the env (default: its spec id, else its class name).
        stop: set from another thread (the caller was cancelled): stop after the current
            call and raise :class:`EvaluationStopped`.

    Raises:
        EvaluationTimeout: ``timeout_s`` passed (the message names the env and the limit).
        EvaluationStopped: ``stop`` was set.
        ConfigError: a limit is not a positive number, ``seed`` is not an integer >= 0, or
            ``on_frame`` is not callable.
    """
    name = name or _describe(env)
    returns: list[float] = []
    lengths: list[int] = []
    capped, episode, length = 0, 0, 0
    try:
        cap = episode_step_cap(env, max_episode_steps)
        if not (is_integer(seed) and seed >= 0):
            raise ConfigError(f"seed={seed!r} must be an integer >= 0")
        if timeout_s is not None and not (is_number(timeout_s) and 0 < timeout_s < math.inf):
            raise ConfigError(f"timeout_s={timeout_s!r} must be a positive number of seconds or None")
        if on_frame is not None and not callable(on_frame):
            raise ConfigError(f"on_frame={on_frame!r} must be callable (it gets each rendered frame) or None")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if isinstance(env, _Awaited):
            env.deadline = deadline
        masked: bool | None = None  # whether the env gives action masks: known at its first reset
        for episode in range(episodes):
            sink = on_frame if episode == 0 else None
            obs, info = env.reset(seed=seed + episode)
            if memory is not None:
                memory.forget()
            if sink is not None:
                sink(env.render())
            total, length, done = 0.0, 0, False
            masked = _action_mask(info) is not None if masked is None else masked
            while not done:
                mask = _action_mask(info)
                if masked and mask is None:
                    raise InvalidActionMask(
                        f"env {name!r}, episode {episode + 1}, step {length}: the info has no "
                        f"{ACTION_MASK_KEY!r}, but the env's first reset had one"
                    )
                try:
                    action = act(obs, mask)
                except InvalidActionMask as exc:
                    raise InvalidActionMask(f"env {name!r}, episode {episode + 1}, step {length}: {exc}") from None
                obs, reward, terminated, truncated, info = env.step(action)
                if sink is not None:
                    sink(env.render())
                total += float(reward)
                length += 1
                done = bool(terminated or truncated)
                if not done and length >= cap:
                    capped += 1
                    done = True
                if deadline is not None and time.monotonic() >= deadline:
                    raise _Expired
                if stop is not None and stop.is_set():
                    raise EvaluationStopped(f"evaluation of env {name!r} stopped: its caller was cancelled")
            returns.append(total)
            lengths.append(length)
    except _Expired:
        raise EvaluationTimeout(
            f"evaluation of env {name!r} did not finish within timeout_s={timeout_s:g} "
            f"(episode {episode + 1} of {episodes}, at step {length})"
        ) from None
    finally:
        env.close()
    if capped:
        log.warning(
            "evaluation of env %r: %d of %d episodes did not end within max_episode_steps=%d and were cut there",
            name,
            capped,
            episodes,
            cap,
        )
    return EvalResult(policy_version, tuple(returns), tuple(lengths), capped)


def _action_mask(info: object) -> Any:
    return info.get(ACTION_MASK_KEY) if isinstance(info, Mapping) else None


def episode_step_cap(env: object, max_episode_steps: int | None) -> int:
    """The step cap of ``env``'s episodes: ``max_episode_steps``, else the env's spec's, else the default."""
    if max_episode_steps is not None:
        if not (is_integer(max_episode_steps) and max_episode_steps >= 1):
            raise ConfigError(f"max_episode_steps={max_episode_steps!r} must be an integer >= 1 or None")
        return max_episode_steps
    from_spec = getattr(getattr(env, "spec", None), "max_episode_steps", None)
    return from_spec if isinstance(from_spec, int) and from_spec >= 1 else DEFAULT_MAX_EPISODE_STEPS


def _describe(env: object) -> str:
    spec_id = getattr(getattr(env, "spec", None), "id", None)
    return str(spec_id) if spec_id else type(env).__name__


def sampling_generator(seed: int, device: torch.device | None = None) -> torch.Generator:
    """The generator that sampled actions of an evaluation seeded with ``seed`` draw from.

    Its own, so evaluating twice with one seed plays the same episodes, stochastic or not, and
    the process's global generator (the application's) is left alone.

    Raises:
        ConfigError: ``seed`` is not an integer >= 0 (checked here: this comes first).
    """
    if not (is_integer(seed) and seed >= 0):
        raise ConfigError(f"seed={seed!r} must be an integer >= 0")
    return torch.Generator(device=device or "cpu").manual_seed(seed % 2**64)  # torch takes 64 bits


def choose_action(
    module: nn.Module,
    encoder: ObservationEncoder,
    dist: ActionDistribution,
    obs: Any,
    buffer: np.ndarray,
    *,
    deterministic: bool,
    device: torch.device | None = None,
    memory: RecurrentMemory | None = None,
    action_mask: Any = None,
    generator: torch.Generator | None = None,
) -> Any:
    """The env action for one raw observation (``buffer``: a ``[1, *obs]`` float32 scratch array).

    ``deterministic`` takes the most likely action, otherwise one is sampled, drawn from
    ``generator`` (``None``: torch's global one). A recurrent
    ``module`` needs ``memory``, its state in this env, which the step advances. Given an
    ``action_mask`` (as an env puts it into ``info["action_mask"]``), only a valid action is
    chosen. Call it under ``torch.no_grad()`` or ``torch.inference_mode()``.

    Raises:
        ConfigError: a mask was given for an action space that cannot be masked.
        InvalidActionMask: the mask is malformed or allows no action.
    """
    encoder.encode_into(obs, buffer[0])
    inputs = torch.from_numpy(buffer)
    inputs = inputs if device is None else inputs.to(device)
    if memory is None:
        dist_inputs, _ = evaluate(module, inputs)
    else:
        start = memory.state is None
        state = module.initial_state(1).to(inputs.device) if memory.state is None else memory.state  # type: ignore[operator]
        dist_inputs, _, memory.state = step(module, inputs, state, torch.full((1,), float(start), device=inputs.device))
    mask = None
    if action_mask is not None:
        masks = dist.action_masks
        if masks is None:
            raise ConfigError(f"action_mask was given, but {dist.kind} actions cannot be masked")
        mask = torch.from_numpy(masks.from_raw(action_mask)[None]).to(dist_inputs.device)
    action = dist.mode(dist_inputs, mask) if deterministic else dist.sample(dist_inputs, mask, generator)[0]
    return dist.to_env(action.cpu().numpy()[0])


def play_episodes(
    env_factory: EnvFactory,
    encoder: ObservationEncoder,
    dist: ActionDistribution,
    policy: nn.Module,
    *,
    episodes: int,
    deterministic: bool,
    seed: int,
    policy_version: int,
    max_episode_steps: int | None = None,
    timeout_s: float | None = None,
    call_timeout_s: float | None = None,
    stop: threading.Event | None = None,
) -> EvalResult:
    """Play ``episodes`` episodes of a fresh env from ``env_factory`` with :func:`play` (blocking).

    An :class:`~aiorl.AsyncEnv` is played on a private event loop of the calling thread, each
    call bounded by ``call_timeout_s`` (the trainer's ``env_timeout_s``) as well as by
    ``timeout_s``. ``stop``: as for :func:`play`.
    """
    generator = sampling_generator(seed)  # checks the seed before an env is made
    made = env_factory()
    if is_vector_env(made):  # the workers' vector env: play in its first sub-env
        made = FirstSubEnv(made)  # type: ignore[arg-type]
    env: EpisodeEnv = _Awaited(made, env_factory.describe(), call_timeout_s) if isinstance(made, AsyncEnv) else made
    buffer = np.zeros((1, *encoder.shape), dtype=np.float32)
    memory = RecurrentMemory() if state_size(policy) else None

    @torch.no_grad()
    def act(obs: Any, action_mask: Any) -> Any:
        return choose_action(
            policy,
            encoder,
            dist,
            obs,
            buffer,
            deterministic=deterministic,
            memory=memory,
            action_mask=action_mask,
            generator=generator,
        )

    return play(
        env,
        act,
        episodes=episodes,
        seed=seed,
        policy_version=policy_version,
        max_episode_steps=max_episode_steps,
        timeout_s=timeout_s,
        name=env_factory.describe(),
        memory=memory,
        stop=stop,
    )


class PeriodicEvaluation:
    """Starts an evaluation every ``interval`` trained steps during a run, one at a time.

    The evaluations are tasks of the run's task group (:meth:`aiorl.engine.session.Session.supervise`):
    the run waits for the last one when it ends normally and cancels it otherwise. An
    evaluation that fails does not stop training; :meth:`raise_failure` raises its error
    once the run is over.

    Args:
        evaluate: plays the evaluation episodes (``Trainer.evaluate`` with the configured count).
        interval: trained env steps between evaluations; ``None`` never evaluates.
        steps_trained: the trainer's trained steps when the run starts.
        tasks: the run's task group.
    """

    def __init__(
        self,
        evaluate: Callable[[], Awaitable[EvalResult]],
        interval: int | None,
        steps_trained: int,
        tasks: asyncio.TaskGroup,
    ) -> None:
        self._play = evaluate
        self.interval = interval
        self.next_at = steps_trained + (interval or 0)
        self.results: list[EvalResult] = []
        self._tasks = tasks
        self._task: asyncio.Task[None] | None = None
        self._error: Exception | None = None  # of the first evaluation that failed

    def after_update(self, steps_trained: int) -> None:
        """Start an evaluation if one is due and none is running."""
        if self.interval is None or steps_trained < self.next_at or not (self._task is None or self._task.done()):
            return
        evaluation = self._evaluate()
        try:
            self._task = self._tasks.create_task(evaluation, name="aiorl-evaluation")
        except RuntimeError:  # the run's task group has ended (an update settled after a cancellation)
            evaluation.close()
            return
        self.next_at = steps_trained + self.interval

    async def _evaluate(self) -> None:
        try:
            result = await self._play()
        except Exception as exc:  # kept for the end of the run: training goes on
            if self._error is None:
                self._error = exc
            return
        self.results.append(result)
        log.info(
            "evaluation of version %d: mean return %.1f +- %.1f over %d episodes",
            result.policy_version,
            result.mean_return,
            result.std_return,
            result.episodes,
        )

    def raise_failure(self) -> None:
        """Raise what the first failed evaluation of the run raised, if any (call after the run)."""
        if self._error is not None:
            raise self._error


class _Awaited:
    """An :class:`~aiorl.AsyncEnv` driven by :func:`play` on a private event loop of the calling thread.

    Each call runs to completion on the loop, cancelled when :func:`play`'s deadline passes
    or after ``call_timeout_s`` (then :class:`~aiorl.EvaluationTimeout` names that limit).
    """

    def __init__(self, env: AsyncEnv, name: str, call_timeout_s: float | None = None) -> None:
        self.env = env
        self.name = name
        self.spec = getattr(env, "spec", None)
        self.deadline: float | None = None  # time.monotonic() deadline, set by play()
        self.call_timeout_s = call_timeout_s
        self._runner = asyncio.Runner()

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(self._bounded(call))

    async def _bounded(self, call: Coroutine[Any, Any, T]) -> T:
        limits = [] if self.deadline is None else [self.deadline - time.monotonic()]
        if self.call_timeout_s is not None:
            limits.append(self.call_timeout_s)
        if not limits:
            return await call
        scope = asyncio.timeout(max(min(limits), 0.0))
        try:
            async with scope:
                return await call
        except TimeoutError:
            if not scope.expired():
                raise
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise _Expired from None
            raise EvaluationTimeout(
                f"evaluation of env {self.name!r}: a call took longer than env_timeout_s={self.call_timeout_s:g}"
            ) from None

    def reset(self, *, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
        """``await env.reset(seed=seed)``."""
        return self._run(self.env.reset(seed=seed))

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        """``await env.step(action)``."""
        return self._run(self.env.step(action))

    def render(self) -> Any:
        """Async envs do not render here."""
        raise NotImplementedError(f"{self.name} is an aiorl.AsyncEnv: frames cannot be rendered in evaluation")

    def close(self) -> None:
        """Close the env (bounded, errors logged) and the private event loop."""
        try:
            self._runner.run(aclose_env(self.env, self.name))
        finally:
            self._runner.close()
