"""Tasks that need memory: a cue to recall, and CartPole without its velocities.

Both are picklable classes, so ``Trainer(CueRecallEnv, recurrent="lstm")`` reaches worker
processes as it is.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class CueRecallEnv(gym.Env):
    """A cue shown once, to be named ``delay`` steps later.

    The first observation shows the cue (``[1, 0, 0]`` left or ``[0, 1, 0]`` right, drawn
    at random); the next ``delay - 1`` are blank (``[0, 0, 0]``) and the last one asks for
    the answer (``[0, 0, 1]``). Actions before the question do nothing; the answer (action
    0 = left, 1 = right) ends the episode with reward +1 if it names the cue, else -1.

    At the question every episode looks the same, so a memoryless policy's best expected
    return is 0 (chance); a policy that remembers the cue gets 1.
    """

    observation_space = gym.spaces.Box(0.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, delay: int = 4) -> None:
        if not (isinstance(delay, int) and delay >= 1):
            raise ValueError(f"delay={delay!r} must be an integer >= 1")
        self.delay = delay
        self.cue = 0
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        """Draw a cue and show it."""
        super().reset(seed=seed)
        self.cue = int(self.np_random.integers(2))
        self.t = 0
        obs = np.zeros(3, dtype=np.float32)
        obs[self.cue] = 1.0
        return obs, {}

    def step(self, action: Any) -> Any:
        """Wait, or (at the question) answer."""
        if self.t == self.delay:
            reward = 1.0 if int(action) == self.cue else -1.0
            return np.zeros(3, dtype=np.float32), reward, True, False, {}
        self.t += 1
        obs = np.zeros(3, dtype=np.float32)
        if self.t == self.delay:
            obs[2] = 1.0
        return obs, 0.0, False, False, {}


class CartPoleNoVelocity(gym.ObservationWrapper):
    """``CartPole-v1`` observing the cart's position and the pole's angle only (no velocities).

    A standard memory benchmark (rl-zoo3's ``CartPoleNoVel-v1`` zeroes the velocities; this
    drops them): a policy has to infer the velocities from successive observations.
    """

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(gym.make("CartPole-v1", render_mode=render_mode))
        inner = self.env.observation_space
        assert isinstance(inner, gym.spaces.Box)
        self.observation_space = gym.spaces.Box(inner.low[[0, 2]], inner.high[[0, 2]], (2,), np.float32)

    def observation(self, observation: Any) -> Any:
        """Position and angle."""
        return np.asarray(observation, dtype=np.float32)[[0, 2]]
