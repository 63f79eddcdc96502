"""An image env with stacked frames, small enough for tests: rollouts store each frame once."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class NoiseFramesEnv(gym.Env):
    """Random ``uint8`` frames ``[size, size]``; reward 1 when the action is the parity of the frame's first pixel.

    Episodes end (terminated) with probability ``end_chance`` per step, so they have random
    lengths; wrap it in a ``TimeLimit`` for truncations too (:func:`stacked_noise_frames`).
    """

    action_space = gym.spaces.Discrete(2)

    def __init__(self, size: int = 12, end_chance: float = 0.1) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (size, size), np.uint8)
        self.end_chance = end_chance
        self._frame = np.zeros((size, size), dtype=np.uint8)

    def _draw(self) -> np.ndarray:
        self._frame = self.np_random.integers(0, 256, self._frame.shape, dtype=np.uint8)
        return self._frame

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        """Start an episode on a fresh frame."""
        super().reset(seed=seed)
        return self._draw(), {}

    def step(self, action: Any) -> Any:
        """Reward the parity of the current frame's first pixel, then draw the next frame."""
        reward = float(int(action) == int(self._frame[0, 0]) % 2)
        terminated = bool(self.np_random.random() < self.end_chance)
        return self._draw(), reward, terminated, False, {}


def stacked_noise_frames(
    stack: int = 4, size: int = 12, max_episode_steps: int = 25, padding_type: str = "reset"
) -> gym.Env:
    """:class:`NoiseFramesEnv` with a time limit, its last ``stack`` frames stacked by ``FrameStackObservation``."""
    env = gym.wrappers.TimeLimit(NoiseFramesEnv(size), max_episode_steps)
    return gym.wrappers.FrameStackObservation(env, stack, padding_type=padding_type)
