"""Atari games with the usual preprocessing, as a picklable env factory (needs ``pip install aiorl[atari]``).

:class:`AtariEnv` builds an ale-py game (``ALE/Pong-v5``, ``ALE/Breakout-v5``, ...) wrapped in
gymnasium's own wrappers, as CleanRL and Sample Factory preprocess Atari:

- ``AtariPreprocessing``: up to 30 no-op actions after a reset, a frame skip of 4 (the max of
  the last two frames), 84x84 grayscale frames, and by default no episode end on a lost life;
- ``ClipReward`` to [-1, 1] (every ALE reward is an integer, so this is its sign; the returns
  aiorl then reports are clipped ones: Pong's equal its score, Breakout's count the bricks hit);
- ``FrameStackObservation``: the last 4 frames, channel-first, so observations are ``uint8``
  ``[4, 84, 84]`` (aiorl's default CNN takes them channel-first and scales them by 1/255).

ale-py registers its ids with gymnasium when :meth:`AtariEnv.__call__` runs, in each process
that builds the env (workers included), so nothing else needs to import it. Rollouts store each
frame once (see :mod:`aiorl.envs.frames`).

:meth:`AtariEnv.vector` is the same game and preprocessing from EnvPool's C++ Atari (needs
``pip install aiorl[envpool]``): each worker steps its envs as one EnvPool vector env.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from aiorl.envs.vector import VectorEnvs
from aiorl.errors import ConfigError, did_you_mean
from aiorl.numbers import plain_numbers

ATARI_EXTRA_HINT = "Atari needs ale-py and OpenCV: pip install 'aiorl[atari]' (ale-py, opencv-python-headless)"


@dataclass(frozen=True, slots=True)
class AtariEnv:
    """A picklable factory of one preprocessed Atari game: ``Trainer(AtariEnv("ALE/Pong-v5"))``.

    Attributes:
        game: an ale-py gymnasium id, such as ``"ALE/Pong-v5"``.
        frame_stack: how many of the last frames make one observation.
        frame_skip: how many ALE frames each action repeats for (the observation is the max
            of the last two).
        screen_size: the side of the square grayscale frames.
        noop_max: the most no-op actions taken after a reset (a random number of them).
        terminal_on_life_loss: end an episode when a life is lost; off by default, as in
            Sample Factory and Machado et al. This is gymnasium's ``AtariPreprocessing`` option:
            the next reset starts a new game, so only first lives are played (CleanRL's
            ``EpisodicLifeEnv`` and EnvPool's ``episodic_life``, used by :meth:`vector`, play
            on with the lives left).
        clip_rewards: clip each reward to [-1, 1].
        repeat_action_probability: ALE's sticky actions (v5 ids use 0.25, Machado et al.'s
            recommendation; CleanRL's EnvPool PPO uses 0).
    """

    game: str = "ALE/Pong-v5"
    frame_stack: int = 4
    frame_skip: int = 4
    screen_size: int = 84
    noop_max: int = 30
    terminal_on_life_loss: bool = False
    clip_rewards: bool = True
    repeat_action_probability: float = 0.25

    def __post_init__(self) -> None:
        plain_numbers(self)
        problems = []
        if not (isinstance(self.game, str) and self.game):
            problems.append(f"game={self.game!r} must be an ale-py gymnasium id such as 'ALE/Pong-v5'")
        for name in ("frame_stack", "frame_skip", "screen_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name}={value!r} must be an int >= 1")
        if isinstance(self.noop_max, bool) or not isinstance(self.noop_max, int) or self.noop_max < 0:
            problems.append(f"noop_max={self.noop_max!r} must be an int >= 0")
        sticky = self.repeat_action_probability
        if isinstance(sticky, bool) or not isinstance(sticky, int | float) or not 0.0 <= sticky <= 1.0:
            problems.append(f"repeat_action_probability={sticky!r} must be a number in [0, 1]")
        for name in ("terminal_on_life_loss", "clip_rewards"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name}={getattr(self, name)!r} must be True or False")
        if problems:
            raise ConfigError(problems)

    def with_options(self, options: Mapping[str, Any]) -> AtariEnv:
        """A copy with ``options`` replacing its fields: a preset's ``env_kwargs`` (``[env_kwargs]`` in TOML).

        Raises:
            ConfigError: an option that is no field (named, with the one it resembles), or a bad value.
        """
        fields = [f.name for f in dataclasses.fields(self) if f.name != "game"]
        unknown = [
            f"env_kwargs[{name!r}] is not an AtariEnv option{did_you_mean(name, fields)}; options: {', '.join(fields)}"
            for name in options
            if name not in fields
        ]
        if unknown:
            raise ConfigError(unknown)
        return dataclasses.replace(self, **options)

    def __call__(self, render_mode: str | None = None) -> gym.Env:
        """Make one preprocessed game (registers ale-py's ids in this process first).

        ``render_mode`` (e.g. ``"rgb_array"``, for ``aiorl eval --video``) goes to ``gym.make``.

        Raises:
            ConfigError: ale-py is not installed, or ``game`` is not one of its ids.
        """
        register_ale()
        if self.game not in gym.registry:
            raise ConfigError(f"game={self.game!r} is not an ale-py gymnasium id (such as 'ALE/Pong-v5')")
        # frameskip=1: AtariPreprocessing skips frames itself (and max-pools the last two).
        rendering = {} if render_mode is None else {"render_mode": render_mode}
        env = gym.make(self.game, frameskip=1, repeat_action_probability=self.repeat_action_probability, **rendering)
        env = gym.wrappers.AtariPreprocessing(
            env,
            noop_max=self.noop_max,
            frame_skip=self.frame_skip,
            screen_size=self.screen_size,
            terminal_on_life_loss=self.terminal_on_life_loss,
            grayscale_obs=True,
        )
        if self.clip_rewards:
            env = gym.wrappers.ClipReward(env, -1.0, 1.0)
        return gym.wrappers.FrameStackObservation(env, stack_size=self.frame_stack)

    def vector(self, num_envs: int, *, num_threads: int = 1, **envpool_kwargs: Any) -> VectorEnvs:
        """The same game and preprocessing from EnvPool's Atari: a factory of vector envs of ``num_envs`` games.

        ``Trainer(AtariEnv("ALE/Pong-v5").vector(8), APPO(), envs_per_worker=8)``; on the command
        line ``aiorl train ALE/Pong-v5 --vector envpool``. EnvPool does the same preprocessing
        in C++ (no-ops, frame skip with the max of the last two frames, 84x84 grayscale with
        OpenCV's area resize, reward sign, frame stack padded with the first frame) with no
        fire on reset, as here. ``envpool_kwargs`` override or add ``envpool.make`` arguments.

        Raises:
            ConfigError: envpool is not installed, or a bad ``num_envs``/``num_threads``.
        """
        task = self.game.removeprefix("ALE/")  # EnvPool names games without the namespace: "Pong-v5"
        settings = {
            "stack_num": self.frame_stack,
            "frame_skip": self.frame_skip,
            "img_height": self.screen_size,
            "img_width": self.screen_size,
            "noop_max": self.noop_max,
            "episodic_life": self.terminal_on_life_loss,
            "reward_clip": self.clip_rewards,
            "repeat_action_probability": self.repeat_action_probability,
            "gray_scale": True,
            "use_fire_reset": False,
        }
        return VectorEnvs(task, num_envs, "envpool", num_threads, kwargs={**settings, **envpool_kwargs})

    def describe(self) -> str:
        """A short name for logs and errors."""
        return f"AtariEnv({self.game!r})"


def register_ale() -> None:
    """Register ale-py's gymnasium ids in this process (once; later calls cost nothing).

    Raises:
        ConfigError: ale-py or OpenCV (which ``AtariPreprocessing`` resizes frames with) is not installed.
    """
    try:
        import ale_py
        import cv2  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"{ATARI_EXTRA_HINT}; {exc}") from exc
    gym.register_envs(ale_py)
