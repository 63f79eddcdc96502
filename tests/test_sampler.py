"""A worker's sampler fills a slot correctly: flags, bootstrap values, versions, episode stats."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import sampler_template

from aiorl.models import evaluate
from aiorl.shm import RolloutSlots
from aiorl.testing import COUNTING_ENV_ID, FaultyEnv, worker_identity
from aiorl.worker.acting import all_finite
from aiorl.worker.sampler import EnvSampler


def make_sampler(
    max_episode_steps: int, steps: int, envs: int, reward_gamma: float | None = None, env: str = "CartPole-v1"
) -> tuple[EnvSampler, RolloutSlots]:
    template, policy = sampler_template(
        env, envs=envs, steps=steps, env_kwargs={"max_episode_steps": max_episode_steps}, reward_gamma=reward_gamma
    )
    slots = RolloutSlots.create(template.layout, 1)
    spec = template.worker_spec(worker_id=0, incarnation=0)
    return EnvSampler(spec, policy), slots


def test_truncated_steps_carry_the_value_of_the_final_observation():
    sampler, slots = make_sampler(max_episode_steps=5, steps=12, envs=3)
    try:
        slot = slots[0]
        summary = asyncio.run(sampler.collect(slot, policy_version=7))
        truncated, terminated = slot["truncated"], slot["terminated"]
        assert truncated[4].all() and truncated[9].all(), "time limit of 5 steps truncates steps 5 and 10"
        assert not terminated.any()
        assert (slot["trunc_values"][truncated] != 0).all()
        assert (slot["trunc_values"][~truncated] == 0).all()
        assert summary.episode_lengths == [5] * 6 and summary.episode_returns == [5.0] * 6
        assert (slot["versions"] == 7).all()
        assert summary.env_steps == 36 and sampler.total_steps == 36
        with torch.no_grad():  # the behaviour log-probabilities are those of the recorded actions
            dist_inputs = evaluate(sampler.policy, torch.from_numpy(slot["obs"].reshape(-1, 4)))[0]
            actions = torch.from_numpy(slot["actions"].reshape(-1))
            logprobs = sampler.dist.log_prob_entropy(dist_inputs, actions)[0]
        np.testing.assert_allclose(slot["logprobs"].reshape(-1), logprobs.numpy(), rtol=1e-5, atol=1e-6)
    finally:
        sampler.close()
        slots.close()


def test_next_obs_is_the_observation_after_the_last_step():
    sampler, slots = make_sampler(max_episode_steps=500, steps=4, envs=2)
    try:
        slot = slots[0]
        asyncio.run(sampler.collect(slot, policy_version=0))
        np.testing.assert_array_equal(slot["next_obs"], sampler.obs)
        assert not np.array_equal(slot["obs"][-1], slot["next_obs"])
    finally:
        sampler.close()
        slots.close()


def test_discounted_returns_are_recorded_per_episode_for_reward_normalisation():
    sampler, slots = make_sampler(max_episode_steps=3, steps=6, envs=2, reward_gamma=0.5, env=COUNTING_ENV_ID)
    try:
        slot = slots[0]
        asyncio.run(sampler.collect(slot, policy_version=0))
        assert (slot["rewards"] == 1).all()
        expected = np.array([1.0, 1.5, 1.75, 1.0, 1.5, 1.75])[:, None].repeat(2, axis=1)
        np.testing.assert_allclose(slot["disc_returns"], expected)
    finally:
        sampler.close()
        slots.close()


def test_every_field_of_a_rollout_is_written_even_into_uninitialised_arrays():
    # The Ray actor collects into fresh np.empty arrays, not zeroed shared memory.
    sampler, slots = make_sampler(max_episode_steps=500, steps=5, envs=3)
    try:
        layout = slots.layout
        arrays = {
            name: np.full(shape, np.nan if np.dtype(dtype).kind == "f" else 7, dtype)
            for name, (shape, dtype) in layout.fields().items()
        }
        asyncio.run(sampler.collect(arrays, policy_version=0))
        for name, array in arrays.items():
            assert np.isfinite(array.astype(np.float64)).all(), f"{name} was left unwritten"
        assert (arrays["disc_returns"] == 0).all(), "no reward normalisation: discounted returns stay 0"
    finally:
        sampler.close()
        slots.close()


class CloseFails(gym.Wrapper):
    """CartPole whose ``close`` raises, as a broken simulator's might."""

    def __init__(self) -> None:
        super().__init__(gym.make("CartPole-v1"))

    def close(self) -> None:
        raise ConnectionError("simulator already gone")


if "aiorl-test/CloseFails-v0" not in gym.registry:
    gym.register("aiorl-test/CloseFails-v0", entry_point=CloseFails)


def test_an_env_whose_close_fails_is_logged_not_raised(caplog):
    sampler, slots = make_sampler(max_episode_steps=500, steps=2, envs=2, env="aiorl-test/CloseFails-v0")
    try:
        with caplog.at_level(logging.WARNING, logger="aiorl"):
            sampler.close()
    finally:
        slots.close()
    assert caplog.text.count("closing env") == 2 and "ConnectionError: simulator already gone" in caplog.text


@pytest.mark.parametrize("faulty_envs", [(1,), None], ids=["one-env-ragged", "every-env-wrong"])
def test_an_observation_of_the_wrong_shape_breaks_only_its_own_env(faulty_envs):
    # A step's observations are written as one array when they stack to the expected shape:
    # one of another shape (the batch is ragged) or all of the same wrong one must still be
    # caught, and blamed on their own envs only.
    env = functools.partial(
        FaultyEnv, "CartPole-v1", "wrong_shape", 3, workers=None, env_indices=faulty_envs, incarnations=None
    )
    template, policy = sampler_template(env, envs=3, steps=5)  # a re-created env would fault at row 5
    slots = RolloutSlots.create(template.layout, 1)
    sampler = EnvSampler(template.worker_spec(worker_id=0, incarnation=0), policy)
    try:
        slot = slots[0]
        summary = asyncio.run(sampler.collect(slot, policy_version=0))
        broken = [0, 1, 2] if faulty_envs is None else [1]
        assert sorted(error.env_index for error in summary.env_errors) == broken
        assert all("an observation of shape (5,)" in error.message for error in summary.env_errors)
        assert not slot["valid"][:3, broken].any() and slot["valid"][3:].all(), "the broken episodes' rows are masked"
        intact = [i for i in range(3) if i not in broken]
        assert slot["valid"][:, intact].all()
        assert summary.env_steps == 15 - 3 * len(broken)
        assert np.isfinite(sampler.obs).all() and sampler.obs.shape == (3, 4)
    finally:
        sampler.close()
        slots.close()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_one_call_finiteness_check_finds_any_nan_or_infinity(dtype):
    values = np.full((7, 5), np.finfo(dtype).max, dtype=dtype)  # huge, but finite
    assert all_finite(values)
    for bad in (np.nan, np.inf, -np.inf):
        for index in [(0, 0), (3, 2), (6, 4)]:
            broken = values.copy()
            broken[index] = bad
            assert not all_finite(broken), (bad, index)


def test_an_env_re_created_after_an_error_is_seeded_so_the_run_repeats():
    env = functools.partial(FaultyEnv, "CartPole-v1", "raise", 3, workers=None, incarnations=None)
    rows_after_recovery = []
    for _ in range(2):
        template, policy = sampler_template(env, envs=2, steps=5)  # env 0 raises on its 3rd step (row 2)
        slots = RolloutSlots.create(template.layout, 1)
        sampler = EnvSampler(template.worker_spec(worker_id=0, incarnation=0), policy)
        try:
            summary = asyncio.run(sampler.collect(slots[0], policy_version=0))
            assert [error.env_index for error in summary.env_errors] == [0]
            rows_after_recovery.append(slots[0]["obs"][3:, 0].copy())  # the re-created env's first observations
        finally:
            sampler.close()
            slots.close()
    np.testing.assert_array_equal(*rows_after_recovery)


class ObservationTurnsIntoAGradTensor(gym.Wrapper):
    """CartPole; env 1's 3rd step returns its observation as a tensor that requires grad (numpy cannot read it)."""

    def __init__(self) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.index, self.steps = worker_identity()[2], 0

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps == 3 and self.index == 1:
            obs = torch.tensor(obs, requires_grad=True)
        return obs, reward, terminated, truncated, info


class ScalarBoxEnv(gym.Env):
    """A scalar Box observation space (shape ``()``); every env's 3rd step returns an observation of shape ``(1,)``."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self) -> None:
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        return np.float32(0.0), {}

    def step(self, action: Any) -> Any:
        self.steps += 1
        obs = np.zeros(1, np.float32) if self.steps == 3 else np.float32(0.0)
        return obs, 1.0, False, False, {}


@pytest.mark.parametrize(
    ("env", "broken", "message"),
    [
        (ObservationTurnsIntoAGradTensor, [1], "requires grad"),
        (ScalarBoxEnv, [0, 1], "an observation of shape (1,), but observation_space is Box"),
    ],
    ids=["unreadable", "scalar-box"],
)
def test_an_observation_numpy_cannot_stack_or_of_a_scalar_boxs_wrong_shape_is_an_env_error(env, broken, message):
    template, policy = sampler_template(env, envs=2, steps=5)
    slots = RolloutSlots.create(template.layout, 1)
    sampler = EnvSampler(template.worker_spec(worker_id=0, incarnation=0), policy)
    try:
        summary = asyncio.run(sampler.collect(slots[0], policy_version=0))
        assert sorted({error.env_index for error in summary.env_errors}) == broken
        assert all(message in error.message for error in summary.env_errors)
    finally:
        sampler.close()
        slots.close()


class BadStepResult(gym.Env):
    """CartPole's spaces; ``step`` returns ``result`` (a malformed step result)."""

    observation_space = gym.spaces.Box(-1, 1, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, result: Any) -> None:
        self.result = result

    def reset(self, *, seed=None, options=None):
        return np.zeros(4, np.float32), {}

    def step(self, action):
        return self.result


OBS = np.zeros(4, np.float32)


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (
            (OBS, np.array([1.0]), False, False, {}),
            r"returned reward array\(\[1\.\]\) of shape \(1,\), expected a number",
        ),
        ((OBS, None, False, False, {}), r"returned reward None, expected a number"),
        (
            (OBS, 1.0, np.array([True, False]), False, {}),
            r"returned terminated array\(\[ True, False\]\) of shape \(2,\)",
        ),
        (
            (OBS, 1.0, False, {}),
            r"returned 4 values, expected a tuple of 5 \(observation, reward, terminated, truncated",
        ),
    ],
    ids=["reward_array", "reward_none", "terminated_array", "old_gym_api"],
)
def test_a_malformed_step_result_is_an_env_error_naming_the_field_and_value(result, message):
    # The errors of float() and unpacking named neither ("only 0-dimensional arrays can be converted ...").
    template, policy = sampler_template(functools.partial(BadStepResult, result), envs=1, steps=1)
    slots = RolloutSlots.create(template.layout, 1)
    sampler = EnvSampler(template.worker_spec(worker_id=0, incarnation=0), policy)
    try:
        summary = asyncio.run(sampler.collect(slots[0], policy_version=0))
    finally:
        sampler.close()
        slots.close()
    (error,) = summary.env_errors
    assert re.search(message, error.message), error.message
