"""Named, tuned settings for well-known tasks: ``Trainer.from_preset("Pendulum-v1")``.

Each preset is an algorithm config plus trainer options, tuned on a 2-core machine
(see `benchmarks/README.md`, time_to_solve.py). Any option can be overridden by keyword.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiorl.algos import APPO, PPO, Algorithm
from aiorl.envs.atari import AtariEnv
from aiorl.errors import ConfigError, did_you_mean


@dataclass(frozen=True, slots=True)
class Preset:
    """An environment id with the algorithm and trainer options that solve it well.

    Attributes:
        env: the gymnasium id (``run.env`` in the CLI and ``config.toml``).
        algo: the algorithm config.
        options: :class:`~aiorl.config.TrainerConfig` fields.
        target_return: the mean return regarded as solved.
        env_factory: what builds the env when ``gymnasium.make(env)`` alone is not enough
            (Atari's preprocessing: :class:`~aiorl.envs.atari.AtariEnv`); ``Trainer.from_preset``
            and the CLI (for ``run.env`` equal to this preset's ``env``) train on it.
    """

    env: str
    algo: Algorithm
    options: dict[str, Any] = field(default_factory=dict)
    target_return: float | None = None
    env_factory: Callable[[], Any] | None = None

    @property
    def env_source(self) -> str | Callable[[], Any]:
        """What ``Trainer(env=...)`` gets: the factory if there is one, else the id."""
        return self.env_factory if self.env_factory is not None else self.env


# Atari (pip install 'aiorl[atari]'): CleanRL's ppo_atari_envpool settings (lr 2.5e-4, 4 epochs of
# 4 minibatches, clip 0.1, entropy 0.01, 8 envs x 128 steps per update, rewards clipped to [-1, 1]
# by the env and not normalised) with APPO's V-trace (as Sample Factory's and IMPALA's Atari runs)
# in place of GAE. Not yet tuned or benchmarked on aiorl: solving Pong takes hours on 2 cores.
_ATARI_APPO = APPO(learning_rate=2.5e-4, clip_coef=0.1, ent_coef=0.01, vf_coef=0.5, update_epochs=4, num_minibatches=4)
_ATARI_OPTIONS: dict[str, Any] = {
    "num_workers": 2,
    "envs_per_worker": 4,
    "rollout_length": 128,
    "normalize_observations": False,
    "normalize_rewards": False,
}

PRESETS: dict[str, Preset] = {
    "CartPole-v1": Preset(
        env="CartPole-v1",
        # The defaults (PPO 4 x 2 at lr 2e-3, observations and rewards normalised) solved it in
        # 0.17x SB3-zoo's time against 0.39x for the APPO 6 x 2 settings tuned before them.
        algo=PPO(),
        options={"num_workers": 2, "envs_per_worker": 16, "rollout_length": 32},
        target_return=475.0,
    ),
    "Acrobot-v1": Preset(
        env="Acrobot-v1",
        # The defaults: -100 in 42-53k env steps (3.4-4.8 s on 2 cores, seeds 0-3), where the
        # PPO 10 x 4 settings of before took most of a 400k-step budget.
        algo=PPO(),
        options={"num_workers": 2, "envs_per_worker": 16, "rollout_length": 32},
        target_return=-100.0,
    ),
    "Pendulum-v1": Preset(
        env="Pendulum-v1",
        algo=PPO(gamma=0.9, gae_lambda=0.95, learning_rate=2e-3, update_epochs=5, num_minibatches=8),
        options={
            "num_workers": 2,
            "envs_per_worker": 8,
            "rollout_length": 128,
            "normalize_observations": False,
            "normalize_rewards": True,
        },
        target_return=-250.0,
    ),
    "Taxi-v4": Preset(
        env="Taxi-v4",
        # Masked by the env's info["action_mask"]. The defaults at lr 5e-3 reached a mean return
        # of 5 in 38-43k env steps (seeds 0-1) against 45k at 2e-3; gamma 0.95 or APPO did not
        # need fewer steps.
        algo=PPO(learning_rate=5e-3),
        options={"num_workers": 2, "envs_per_worker": 16, "rollout_length": 32},
        target_return=5.0,
    ),
    "aiorl/CartPoleNoVel-v1": Preset(
        env="aiorl/CartPoleNoVel-v1",
        # CartPole without velocities needs memory: the default LSTM (128 units) on the defaults.
        algo=PPO(),
        options={"num_workers": 2, "envs_per_worker": 16, "rollout_length": 32, "recurrent": "lstm"},
        target_return=475.0,
    ),
    "ALE/Pong-v5": Preset(
        env="ALE/Pong-v5",
        env_factory=AtariEnv("ALE/Pong-v5"),
        algo=_ATARI_APPO,
        options=dict(_ATARI_OPTIONS),
        target_return=18.0,
    ),
    "ALE/Breakout-v5": Preset(
        env="ALE/Breakout-v5",
        env_factory=AtariEnv("ALE/Breakout-v5"),
        algo=_ATARI_APPO,
        options=dict(_ATARI_OPTIONS),
    ),
}
"""Preset name -> preset. Names are the gymnasium ids they solve."""


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (raises :class:`ConfigError` listing the known names)."""
    if not isinstance(name, str):
        raise ConfigError(f"preset={name!r} must be a preset's name (a str): one of {', '.join(sorted(PRESETS))}")
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"preset={name!r} is unknown{did_you_mean(name, PRESETS)}; known presets: {', '.join(sorted(PRESETS))}"
        ) from None


def preset_env_factory(env_id: str | None) -> Callable[[], Any] | None:
    """The factory that builds ``env_id``'s env when its preset has one (Atari), else ``None``."""
    preset = PRESETS.get(env_id) if env_id is not None else None
    return preset.env_factory if preset is not None else None


def describe_settings(env_id: str | None, preset: str | None) -> str:
    """One log line: the preset in use, or the one that exists for ``env_id`` and is not used."""
    if preset is not None:
        return f"settings: the tuned preset {preset!r} (aiorl.presets.PRESETS)"
    if env_id in PRESETS:
        return (
            f"a tuned preset exists for {env_id}: Trainer.from_preset({env_id!r}) (CLI: --preset {env_id}); "
            "training with the defaults and your options instead"
        )
    return "settings: the defaults and your options (no tuned preset for this env)"
