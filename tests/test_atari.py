"""The Atari preset: ale-py games preprocessed by gymnasium's wrappers, trained by real workers.

Needs ``pip install 'aiorl[atari]'`` (ale-py and OpenCV, not in the ``test`` extra); skipped without it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import pickle

import numpy as np
import pytest
from conftest import SMALL
from test_faults import assert_accounted

from aiorl import APPO, Policy, Trainer
from aiorl.checkpoint import write_checkpoint
from aiorl.config_file import build_experiment
from aiorl.envs import AtariEnv
from aiorl.errors import ConfigError

HAS_ATARI = all(importlib.util.find_spec(name) is not None for name in ("ale_py", "cv2"))
needs_atari = pytest.mark.skipif(not HAS_ATARI, reason="ale-py or OpenCV is not installed (pip install 'aiorl[atari]')")
needs_envpool = pytest.mark.skipif(
    importlib.util.find_spec("envpool") is None, reason="envpool is not installed (pip install 'aiorl[envpool]')"
)


@needs_atari
@pytest.mark.asyncio(loop_factories=["asyncio"])  # the loop does not matter here; one run keeps it short
async def test_the_pong_preset_trains_on_real_ale_envs_with_stacked_84x84_frames() -> None:
    options = {**SMALL, "num_workers": 1, "envs_per_worker": 2}
    algo = APPO(learning_rate=2.5e-4, update_epochs=1, num_minibatches=1)
    async with Trainer.from_preset("ALE/Pong-v5", algo=algo, **options) as trainer:
        space = trainer.spaces.observation_space
        assert (space.shape, space.dtype) == ((4, 84, 84), np.uint8)
        assert trainer.config.normalize_observations is False
        assert trainer.spaces.frame_stack == 4, "rollouts store each frame once"
        result = await asyncio.wait_for(trainer.run(total_steps=64), timeout=60)
    assert trainer.policy_version >= 2  # two updates of 1 worker x 2 envs x 16 steps
    assert result.total_env_steps >= 64
    assert_accounted(trainer, result)


@needs_envpool
@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_envpool_atari_with_the_preset_preprocessing_trains_with_frames_stored_once() -> None:
    experiment = build_experiment(
        overrides={"run": {"env": "ALE/Pong-v5", "preset": "ALE/Pong-v5", "vector": "envpool"}, "trainer": SMALL}
    )
    factory = experiment.env_source()
    assert factory == AtariEnv("ALE/Pong-v5").vector(SMALL["envs_per_worker"])
    assert factory.env_id == "Pong-v5" and factory.kwargs["repeat_action_probability"] == 0.25
    algo = APPO(update_epochs=1, num_minibatches=1)
    async with Trainer(factory, algo, **{**SMALL, "num_workers": 1}) as trainer:
        assert trainer.spaces.observation_space.shape == (4, 84, 84) and trainer.spaces.frame_stack == 4
        result = await asyncio.wait_for(trainer.run(total_steps=64), timeout=60)
    assert result.total_env_steps >= 64
    assert_accounted(trainer, result)


@needs_atari
def test_an_atari_env_is_picklable_and_frame_stacks_channel_first() -> None:
    factory = pickle.loads(pickle.dumps(AtariEnv("ALE/Breakout-v5", frame_stack=2)))
    env = factory()
    try:
        observation, _ = env.reset(seed=0)
        assert (observation.shape, observation.dtype) == ((2, 84, 84), np.uint8)
    finally:
        env.close()


def test_the_cli_trains_an_atari_preset_id_on_its_factory() -> None:
    experiment = build_experiment(overrides={"run": {"env": "ALE/Pong-v5", "preset": "ALE/Pong-v5"}})
    assert experiment.env_source() == AtariEnv("ALE/Pong-v5")
    assert experiment.algo.learning_rate == 2.5e-4


def test_a_config_file_s_env_kwargs_set_the_atari_preset_s_options() -> None:
    layers = {"run": {"env": "ALE/Pong-v5", "preset": "ALE/Pong-v5"}, "env_kwargs": {"repeat_action_probability": 0.0}}
    experiment = build_experiment(layers)  # was: "only applies to a gymnasium id; bind ... (functools.partial)"
    assert experiment.env_source() == AtariEnv("ALE/Pong-v5", repeat_action_probability=0.0)
    assert experiment.trainer_env_kwargs() is None
    with pytest.raises(ConfigError, match=r"env_kwargs\['frame_stacks'\] is not an AtariEnv option; did you mean"):
        build_experiment({**layers, "env_kwargs": {"frame_stacks": 2}}).env_source()


@needs_atari
def test_from_preset_takes_env_kwargs_as_atari_options_and_refuses_another_env() -> None:
    trainer = Trainer.from_preset("ALE/Pong-v5", env_kwargs={"frame_stack": 2}, num_workers=1)
    assert trainer.env_factory.make_fn == AtariEnv("ALE/Pong-v5", frame_stack=2)
    assert trainer.spaces.observation_space.shape == (2, 84, 84)
    with pytest.raises(ConfigError, match=r"env='CartPole-v1': Trainer.from_preset\('ALE/Pong-v5'\) trains the"):
        Trainer.from_preset("ALE/Pong-v5", env="CartPole-v1")  # was: TypeError, env given twice


def test_bad_atari_settings_are_named() -> None:
    with pytest.raises(ConfigError, match=r"frame_stack=0 must be an int >= 1") as caught:
        AtariEnv("ALE/Pong-v5", frame_stack=0, repeat_action_probability=2.0)
    assert "repeat_action_probability=2.0" in str(caught.value)
    with pytest.raises(ConfigError, match=r"repeat_action_probability='0.1' must be a number in \[0, 1\]") as caught:
        AtariEnv("ALE/Pong-v5", repeat_action_probability="0.1", clip_rewards="no")  # was a TypeError; "no" clipped
    assert "clip_rewards='no' must be True or False" in str(caught.value)


def test_numpy_atari_settings_are_taken_as_pythons_own() -> None:
    options = AtariEnv("ALE/Pong-v5", frame_stack=np.int64(2), repeat_action_probability=np.float32(0.0))
    assert options == AtariEnv("ALE/Pong-v5", frame_stack=2, repeat_action_probability=0.0)
    assert type(options.frame_stack) is int and type(options.repeat_action_probability) is float


@needs_atari
def test_an_atari_checkpoint_s_policy_plays_in_a_game_that_renders(tmp_path) -> None:
    write_checkpoint(Trainer.from_preset("ALE/Pong-v5", num_workers=1).state_dict(), tmp_path / "c.pt")
    env = Policy.load(tmp_path / "c.pt").make_env("rgb_array")  # was: "does not render in that mode"
    try:
        env.reset(seed=0)
        assert env.render().shape == (210, 160, 3)
    finally:
        env.close()


@needs_atari
def test_an_unknown_game_is_named() -> None:
    with pytest.raises(ConfigError, match=r"game='ALE/Pongg-v5' is not an ale-py gymnasium id"):
        AtariEnv("ALE/Pongg-v5")()
