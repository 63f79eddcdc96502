"""Async test envs: a counting :class:`~aiorl.AsyncEnv` with latency and faults on schedule.

Like :class:`~aiorl.testing.CountingEnv`, its observation identifies the env and
counts its steps, so a test can prove that every column of a rollout is one env's
contiguous trajectory. Latency makes envs progress at different speeds; faults are
injected by schedule, never by chance.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np

from aiorl.envs.async_env import AsyncEnv, StepResult
from aiorl.testing.envs import InjectedFault, worker_identity

AsyncFault = Literal["raise", "hang", "nan", "wrong_shape", "block", "cancelled"]


class AsyncCountingEnv(AsyncEnv[np.ndarray, np.int64]):
    """Observation ``[who, env_index, instance, counter]``; each step awaits ``latency_s``.

    Args:
        episode_length: steps per episode; the last one is ``terminated`` (or
            ``truncated`` with ``truncate=True``). The reward is 1 per step.
        latency_s: seconds each ``step`` awaits (``asyncio.sleep``).
        slow_envs, slow_latency_s: env indices whose steps await ``slow_latency_s`` instead.
        fault: ``"raise"`` (:class:`~aiorl.testing.InjectedFault`), ``"hang"`` (await
            forever), ``"nan"`` (a NaN observation), ``"wrong_shape"`` (an observation
            with one element too many) or ``"block"`` (block the thread
            for ``block_s``, as a blocking call in a coroutine would) or ``"cancelled"``
            (await a future that is cancelled, as a request whose connection dropped would:
            ``CancelledError`` though nobody cancelled the worker), on the
            ``fault_at``-th step of the envs in ``fault_envs`` of the workers in
            ``fault_workers`` (``None``: all), first incarnation only, in the first
            ``fault_times`` envs built at each of those indices (a re-created env is
            a new one).
    """

    observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)
    _built = 0
    _built_at: ClassVar[dict[int, int]] = {}  # envs built per env index in this process

    def __init__(
        self,
        episode_length: int = 20,
        latency_s: float = 0.0,
        *,
        truncate: bool = False,
        slow_envs: Collection[int] = (),
        slow_latency_s: float = 0.0,
        fault: AsyncFault | None = None,
        fault_at: int = 1,
        fault_envs: Collection[int] = (0,),
        fault_workers: Collection[int] | None = (0,),
        block_s: float = 0.0,
        fault_times: int = 1,
    ) -> None:
        worker, incarnation, env_index = worker_identity()
        self.who = worker * 1000 + incarnation
        self.env_index = env_index
        self.instance = AsyncCountingEnv._built
        AsyncCountingEnv._built += 1
        self.episode_length = episode_length
        self.truncate = truncate
        self.latency_s = slow_latency_s if env_index in slow_envs else latency_s
        built_here = AsyncCountingEnv._built_at.get(env_index, 0)
        AsyncCountingEnv._built_at[env_index] = built_here + 1
        in_worker = fault_workers is None or worker in fault_workers
        armed = in_worker and env_index in fault_envs and incarnation == 0 and built_here < fault_times
        self.fault = fault if armed else None
        self.fault_at = fault_at
        self.block_s = block_s
        self.counter = 0
        self.episode_step = 0
        self.closed = False

    def _obs(self) -> np.ndarray:
        return np.array([self.who, self.env_index, self.instance, self.counter], dtype=np.float32)

    async def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode (the counter keeps counting)."""
        self.episode_step = 0
        return self._obs(), {}

    async def step(self, action: np.int64) -> StepResult:
        """Await the latency, then advance the counter (or misbehave on schedule)."""
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        self.counter += 1
        self.episode_step += 1
        obs = self._obs()
        if self.fault is not None and self.counter == self.fault_at:
            if self.fault == "raise":
                raise InjectedFault(f"injected fault in step {self.counter}")
            if self.fault == "hang":
                await asyncio.Event().wait()
            if self.fault == "nan":
                obs = np.full_like(obs, np.nan)
            if self.fault == "wrong_shape":
                obs = np.append(obs, obs[:1])
            if self.fault == "block":
                time.sleep(self.block_s)  # noqa: ASYNC251 - the fault being simulated
            if self.fault == "cancelled":
                reply: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                reply.cancel()  # the connection that would have answered went away
                await reply
        done = self.episode_step >= self.episode_length
        return obs, 1.0, done and not self.truncate, done and self.truncate, {}

    async def close(self) -> None:
        """Mark the env closed."""
        self.closed = True
