"""Envs for the CLI tests, importable by worker and CLI processes (``PYTHONPATH=tests``)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from typing import ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control import CartPoleEnv as CartPoleEnv  # re-exported: cli_envs:CartPoleEnv


class DrawnCartPole(gym.Wrapper):
    """CartPole-v1 that renders ``rgb_array`` frames itself (a white cart on black), without pygame."""

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self._render_mode = render_mode

    @property
    def render_mode(self) -> str | None:
        return self._render_mode

    def render(self) -> np.ndarray:
        frame = np.zeros((40, 96, 3), dtype=np.uint8)
        x = int((float(self.env.unwrapped.state[0]) + 2.4) / 4.8 * 95)
        frame[16:28, max(x - 4, 0) : x + 4] = 255
        return frame


def plain_cartpole() -> gym.Env:
    """CartPole-v1 made without a render mode (its factory takes no ``render_mode``)."""
    return gym.make("CartPole-v1")


short_cartpole = functools.partial(gym.make, "CartPole-v1", max_episode_steps=50)
"""CartPole-v1 cut at 50 steps, as a ``functools.partial`` (``cli_envs:short_cartpole``)."""


def cartpole_killed_at_step_300() -> gym.Env:
    """CartPole-v1 whose first env in worker 0 SIGKILLs its process at step 300 (first incarnation)."""
    from aiorl.testing import FaultyEnv

    return FaultyEnv("CartPole-v1", "kill", 300)


STEP_DELAY_VARIABLE = "AIORL_TEST_STEP_DELAY_S"
"""Seconds each step of ``slow_cartpole`` sleeps (default 0.002); a test that only needs the run to
go on (a resume that finishes it) sets 0 in that process's environment."""


def slow_cartpole() -> gym.Env:
    """CartPole whose steps take 2 ms (so that a short run lasts long enough to be interrupted)."""
    return SlowStep(gym.make("CartPole-v1"), float(os.environ.get(STEP_DELAY_VARIABLE, "0.002")))


class SlowStep(gym.Wrapper):
    """Sleeps ``delay_s`` in every step."""

    def __init__(self, env: gym.Env, delay_s: float) -> None:
        super().__init__(env)
        self.delay_s = delay_s

    def step(self, action):
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        return self.env.step(action)


class UndrawableCartPole(DrawnCartPole):
    """DrawnCartPole whose renderer is "not installed", as gymnasium's envs say when pygame is missing."""

    def render(self) -> np.ndarray:
        raise gym.error.DependencyNotInstalled(
            'pygame is not installed, run `pip install "gymnasium[classic-control]"`'
        )


BUILDING_FLAG_VARIABLE = "AIORL_TEST_BUILDING_FLAG"
"""A file ``cartpole_slow_to_build`` creates when it starts building (the test then interrupts it)."""


def cartpole_slow_to_build() -> gym.Env:
    """CartPole-v1 whose construction announces itself in ``$AIORL_TEST_BUILDING_FLAG`` and takes 60 s."""
    with open(os.environ[BUILDING_FLAG_VARIABLE], "w"):
        pass
    time.sleep(60)
    return gym.make("CartPole-v1")


def four_cartpoles() -> gym.vector.VectorEnv:
    """A vector env of 4 CartPoles: each worker steps one, so envs_per_worker is 4."""
    return gym.make_vec("CartPole-v1", num_envs=4, vectorization_mode="sync")


SIMULATOR_PID_VARIABLE = "AIORL_TEST_SIMULATOR_PID_FILE"
"""Where ``cartpole_with_a_simulator`` writes its child's pid, when set."""


class WithSimulator(gym.Wrapper):
    """CartPole-v1 that starts a child process, as one driving a simulator would, and ends it in ``close()``."""

    def __init__(self) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], stdin=subprocess.DEVNULL)
        path = os.environ.get(SIMULATOR_PID_VARIABLE)
        if path:
            with open(path + ".tmp", "w") as f:
                f.write(str(self.child.pid))
            os.replace(path + ".tmp", path)  # a reader sees the whole pid or no file

    def close(self) -> None:
        self.child.kill()
        self.child.wait()
        super().close()


def cartpole_with_a_simulator() -> gym.Env:
    """A :class:`WithSimulator`."""
    return WithSimulator()
