"""Evaluation: play whole episodes with a snapshot of the policy, apart from the workers.

Evaluation builds its own envs (seeded apart from the training envs) and runs in a
thread of the trainer's process (async envs on a private event loop of that thread),
so collection and learning carry on undisturbed.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from aiorl.distributions import ActionDistribution
from aiorl.envs import AsyncEnv, EnvFactory, ObservationEncoder
from aiorl.envs.async_env import StepResult
from aiorl.models import evaluate

log = logging.getLogger("aiorl")


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Returns and lengths of evaluation episodes, played by one policy version.

    Attributes:
        policy_version: the version that played.
        returns: the return of each episode.
        lengths: the length of each episode.
    """

    policy_version: int
    returns: tuple[float, ...]
    lengths: tuple[int, ...]

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
) -> EvalResult:
    """Play ``episodes`` episodes, one env at a time, and return what they scored (blocking).

    An :class:`~aiorl.AsyncEnv` is played on a private event loop of the calling thread.
    """
    env = env_factory()
    play = _play(env, encoder, dist, policy, episodes=episodes, deterministic=deterministic, seed=seed)
    returns, lengths = asyncio.run(play)
    return EvalResult(policy_version, tuple(returns), tuple(lengths))


async def _play(
    env: gym.Env | AsyncEnv,
    encoder: ObservationEncoder,
    dist: ActionDistribution,
    policy: nn.Module,
    *,
    episodes: int,
    deterministic: bool,
    seed: int,
) -> tuple[list[float], list[int]]:
    returns, lengths = [], []
    obs_buffer = np.zeros((1, *encoder.shape), dtype=np.float32)
    playing = env if isinstance(env, AsyncEnv) else _Inline(env)
    try:
        for episode in range(episodes):
            obs, _ = await playing.reset(seed=seed + episode)
            total, length, done = 0.0, 0, False
            while not done:
                encoder.encode_into(obs, obs_buffer[0])
                with torch.no_grad():
                    dist_inputs, _ = evaluate(policy, torch.from_numpy(obs_buffer))
                    action = dist.mode(dist_inputs) if deterministic else dist.sample(dist_inputs)[0]
                obs, reward, terminated, truncated, _ = await playing.step(dist.to_env(action.numpy()[0]))
                total += float(reward)
                length += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(length)
    finally:
        await playing.close()
    return returns, lengths


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
        self.next_at = steps_trained + self.interval
        self._task = self._tasks.create_task(self._evaluate(), name="aiorl-evaluation")

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


class _Inline(AsyncEnv[Any, Any]):
    """A gymnasium env behind the async interface, called inline (evaluation only)."""

    def __init__(self, env: gym.Env) -> None:
        self.env = env
        self.observation_space = env.observation_space
        self.action_space = env.action_space

    async def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        return self.env.reset(seed=seed, options=options)

    async def step(self, action: Any) -> StepResult:
        return self.env.step(action)

    async def close(self) -> None:
        self.env.close()
