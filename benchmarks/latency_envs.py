"""Envs with variable step cost for ``io_envs.py``: one waits (I/O), one burns CPU.

Both have a 4-float observation, 2 actions and episodes of a random length between
10 and 500 steps. Each step costs a lognormal amount of time: ``io`` envs sleep it
(as an env waiting on a service would), ``cpu`` envs spin for it (as a simulator
would). :class:`LatencyEnv` is the blocking gymnasium version (for the vector envs
and for aiorl's inline stepping); :class:`AsyncLatencyEnv` awaits the I/O wait
instead of blocking, so one aiorl worker overlaps many.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Literal

import gymnasium as gym
import numpy as np

import aiorl

Kind = Literal["io", "cpu"]
MEDIAN_S: dict[str, float] = {"io": 1e-3, "cpu": 100e-6}
"""Median step cost: 1 ms of waiting, or 100 us of CPU."""
SIGMA = math.log(20) / 2.326
"""Spread of the cost's log: the p99 step costs 20x the median (2 ms for the CPU env)."""
EPISODE_STEPS = (10, 500)


class _Costs:
    """Draws step costs and episode lengths."""

    def __init__(self, kind: Kind, seed: int | None) -> None:
        self.kind = kind
        self.log_median = math.log(MEDIAN_S[kind])
        self.rng = np.random.default_rng(seed)
        self.episode_length = 0
        self.steps = 0

    def cost(self) -> float:
        return float(self.rng.lognormal(self.log_median, SIGMA))

    def reset(self) -> np.ndarray:
        self.episode_length = int(self.rng.integers(EPISODE_STEPS[0], EPISODE_STEPS[1] + 1))
        self.steps = 0
        return self.rng.standard_normal(4).astype(np.float32)

    def step(self) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.steps += 1
        obs = self.rng.standard_normal(4).astype(np.float32)
        return obs, 1.0, self.steps >= self.episode_length, False, {}


def burn(seconds: float) -> None:
    """Keep the CPU busy for ``seconds``."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


class LatencyEnv(gym.Env):
    """A blocking env whose step sleeps (``io``) or spins (``cpu``) a lognormal time."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, kind: Kind = "io") -> None:
        self.costs = _Costs(kind, None)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        if seed is not None:
            self.costs.rng = np.random.default_rng(seed)
        return self.costs.reset(), {}

    def step(self, action: Any) -> Any:
        cost = self.costs.cost()
        if self.costs.kind == "io":
            time.sleep(cost)
        else:
            burn(cost)
        return self.costs.step()


class AsyncLatencyEnv(aiorl.AsyncEnv):
    """The same env as an :class:`aiorl.AsyncEnv`: the I/O wait is awaited, CPU is burnt inline."""

    observation_space = LatencyEnv.observation_space
    action_space = LatencyEnv.action_space

    def __init__(self, kind: Kind = "io") -> None:
        self.costs = _Costs(kind, None)

    async def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        if seed is not None:
            self.costs.rng = np.random.default_rng(seed)
        return self.costs.reset(), {}

    async def step(self, action: Any) -> Any:
        cost = self.costs.cost()
        if self.costs.kind == "io":
            await asyncio.sleep(cost)
        else:
            burn(cost)
        return self.costs.step()


def mean_step_cost(kind: Kind, seconds: float = 1.0) -> float:
    """Mean wall seconds of one ``LatencyEnv`` step in this process, measured over ``seconds``."""
    env = LatencyEnv(kind)
    env.reset(seed=1)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        _, _, terminated, _, _ = env.step(0)
        steps += 1
        if terminated:
            env.reset()
    return (time.perf_counter() - started) / steps
