"""Every common space works: encoders, distributions, and toy envs with structured spaces learn."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from aiorl import PPO, ActorCritic, CNNActorCritic, ConfigError, Trainer
from aiorl.distributions import ActionDistribution
from aiorl.envs import ObservationEncoder
from aiorl.models import ObservationNormalizer


@pytest.mark.parametrize(
    ("space", "shape"),
    [
        (gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), (8, 8, 3)),
        (gym.spaces.Discrete(4, start=1), (4,)),
        (gym.spaces.MultiDiscrete([2, 3]), (5,)),
        (gym.spaces.MultiBinary(3), (3,)),
        (gym.spaces.Dict({"b": gym.spaces.Box(-1, 1, (2,)), "a": gym.spaces.Discrete(3)}), (5,)),
        (gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.MultiBinary(2))), (4,)),
    ],
)
def test_observations_encode_to_float32_of_a_fixed_shape(space, shape):
    encoder = ObservationEncoder.for_space(space)
    assert encoder.shape == shape
    out = np.full(shape, -7.0, dtype=np.float32)
    encoder.encode_into(space.sample(), out)
    assert np.isfinite(out).all() and (out != -7.0).any()


def test_discrete_with_a_start_is_one_hot_from_zero():
    encoder = ObservationEncoder.for_space(gym.spaces.Discrete(3, start=5))
    out = np.zeros(3, dtype=np.float32)
    encoder.encode_into(np.int64(6), out)
    assert out.tolist() == [0.0, 1.0, 0.0]


def test_dict_observations_flatten_in_sorted_key_order():
    space = gym.spaces.Dict({"b": gym.spaces.Box(-1, 1, (2,)), "a": gym.spaces.Discrete(3)})
    out = np.zeros(5, dtype=np.float32)
    ObservationEncoder.for_space(space).encode_into({"a": 2, "b": np.array([0.5, -0.5])}, out)
    assert out.tolist() == [0.0, 0.0, 1.0, 0.5, -0.5]


@pytest.mark.parametrize(
    "space",
    [
        gym.spaces.Discrete(3, start=-1),
        gym.spaces.Box(-2.0, 3.0, (2,), np.float32),
        gym.spaces.MultiDiscrete([3, 2], start=[1, 0]),
        gym.spaces.MultiBinary(4),
        # Other dtypes: actions were float32 / int64, which contains() refuses, and a float32
        # clipped to the float32 of a float64 bound could lie outside it (-0.10000000149).
        gym.spaces.Box(-0.1, 0.1, (2,), np.float64),
        gym.spaces.Box(-1.0, 1.0, (2,), np.float16),
        gym.spaces.MultiDiscrete([3, 2], dtype=np.int32, start=[1, 0]),
    ],
)
def test_sampled_actions_are_valid_for_the_env_with_exact_log_probs(space):
    dist = ActionDistribution.for_space(space)
    torch.manual_seed(0)
    dist_inputs = torch.randn(64, dist.num_inputs)
    actions, log_probs = dist.sample(dist_inputs)
    assert actions.shape == (64, *dist.action_shape)
    again, entropy = dist.log_prob_entropy(dist_inputs, actions)
    torch.testing.assert_close(log_probs, again)
    assert log_probs.shape == entropy.shape == (64,)
    for row in actions.numpy().astype(dist.action_dtype):
        assert space.contains(dist.to_env(row)), row
    batch = dist.to_env(actions.numpy().astype(dist.action_dtype))  # a vector env's step takes a batch
    assert gym.vector.utils.batch_space(space, 64).contains(batch)
    mode = dist.mode(dist_inputs)
    assert mode.shape == actions.shape


def test_categorical_actions_are_drawn_with_the_policy_s_probabilities():
    torch.manual_seed(0)
    dist = ActionDistribution.for_space(gym.spaces.Discrete(3))
    probs = torch.tensor([0.6, 0.3, 0.1])
    actions, log_probs = dist.sample(probs.log().repeat(40_000, 1))
    frequencies = torch.bincount(actions, minlength=3) / 40_000
    torch.testing.assert_close(frequencies, probs, atol=0.01, rtol=0)  # ~4 standard errors
    torch.testing.assert_close(log_probs, probs.log()[actions])


def test_multi_categorical_components_are_drawn_with_their_own_probabilities():
    generator = torch.Generator().manual_seed(0)
    dist = ActionDistribution.for_space(gym.spaces.MultiDiscrete([3, 2]))
    first, second = torch.tensor([0.6, 0.3, 0.1]), torch.tensor([0.2, 0.8])
    logits = torch.cat([first.log(), second.log()]).repeat(40_000, 1)
    actions, log_probs = dist.sample(logits, generator=generator)
    torch.testing.assert_close(torch.bincount(actions[:, 0], minlength=3) / 40_000, first, atol=0.01, rtol=0)
    torch.testing.assert_close(torch.bincount(actions[:, 1], minlength=2) / 40_000, second, atol=0.01, rtol=0)
    torch.testing.assert_close(log_probs, first.log()[actions[:, 0]] + second.log()[actions[:, 1]])


@pytest.mark.parametrize(
    "space",
    [
        gym.spaces.Discrete(3),
        gym.spaces.Box(-2.0, 3.0, (2,), np.float32),
        gym.spaces.MultiDiscrete([3, 2]),
        gym.spaces.MultiBinary(4),
    ],
)
def test_a_seeded_generator_draws_the_same_actions_and_leaves_the_global_one_alone(space):
    dist = ActionDistribution.for_space(space)
    dist_inputs = torch.randn(256, dist.num_inputs)
    global_state = torch.get_rng_state()
    draws = [dist.sample(dist_inputs, generator=torch.Generator().manual_seed(seed))[0] for seed in (7, 7, 8)]
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_a_gaussian_log_std_past_its_bound_is_bounded_but_still_learns_back():
    dist = ActionDistribution.for_space(gym.spaces.Box(-1.0, 1.0, (1,), np.float32))
    log_std = torch.tensor([2.5], requires_grad=True)  # past LOG_STD_MAX = 2
    dist_inputs = torch.cat([torch.zeros(1), log_std]).unsqueeze(0)
    log_prob, entropy = dist.log_prob_entropy(dist_inputs, torch.tensor([[0.1]]))
    torch.testing.assert_close(entropy, torch.tensor([2.0 + 0.5 + 0.5 * math.log(2 * math.pi)]))  # at the bound
    log_prob.sum().backward()
    assert log_std.grad is not None and log_std.grad.item() < -0.9  # a plain clamp gave 0: stuck for good


def test_gaussian_actions_are_clipped_only_for_the_env():
    dist = ActionDistribution.for_space(gym.spaces.Box(-1.0, 1.0, (1,), np.float32))
    assert dist.to_env(np.array([5.0], dtype=np.float32)).tolist() == [1.0]


class MatchEnv(gym.Env):
    """Dict observation names a target; a MultiDiscrete action scores by matching it.

    Reward per step: 1 if ``action[0] == target`` plus 0.5 if ``action[1] == 1``. Episodes
    last 10 steps (truncated): the best return is 15, a random policy gets about 5.8.
    """

    observation_space = gym.spaces.Dict({"target": gym.spaces.Discrete(3), "noise": gym.spaces.Box(-1, 1, (2,))})
    action_space = gym.spaces.MultiDiscrete([3, 2])

    def _obs(self):
        self.target = int(self.np_random.integers(3))
        return {"target": self.target, "noise": self.np_random.uniform(-1, 1, 2).astype(np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = float(action[0] == self.target) + 0.5 * float(action[1] == 1)
        self.t += 1
        return self._obs(), reward, False, self.t >= 10, {}


class ParityEnv(gym.Env):
    """Tuple observation of two bits; MultiBinary(2) action must copy them (1 per matching bit).

    Episodes last 10 steps: the best return is 20, a random policy gets about 10.
    """

    observation_space = gym.spaces.Tuple((gym.spaces.MultiBinary(2), gym.spaces.Discrete(2)))
    action_space = gym.spaces.MultiBinary(2)

    def _obs(self):
        self.bits = self.np_random.integers(0, 2, 2).astype(np.int8)
        return (self.bits, int(self.np_random.integers(2)))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = float((np.asarray(action) == self.bits).sum())
        self.t += 1
        return self._obs(), reward, False, self.t >= 10, {}


@pytest.mark.asyncio(loop_factories=["uvloop"])
@pytest.mark.parametrize(("env", "target"), [(MatchEnv, 14.0), (ParityEnv, 19.0)])
async def test_structured_spaces_learn(env, target):
    trainer = Trainer(env, PPO(gamma=0.9), num_workers=2, envs_per_worker=8, rollout_length=32, seed=0)
    result = await trainer.run(total_steps=150_000, target_return=target)
    assert result.reached_target, f"mean return {result.mean_return} after {result.env_steps} steps"


class SideEnv(gym.Env):
    """A 12x12 uint8 image with one bright pixel; the action must name its half (1-step episodes)."""

    observation_space = gym.spaces.Box(0, 255, (12, 12, 1), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def _obs(self):
        self.side = int(self.np_random.integers(2))
        image = np.zeros((12, 12, 1), dtype=np.uint8)
        image[self.np_random.integers(12), self.side * 6 + self.np_random.integers(6), 0] = 255
        return image

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        reward = float(action == self.side)
        return self._obs(), reward, True, False, {}


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_image_observations_get_a_cnn_that_learns():
    trainer = Trainer(SideEnv, PPO(), num_workers=2, envs_per_worker=8, rollout_length=16, return_window=100, seed=0)
    assert isinstance(trainer.policy, CNNActorCritic)
    result = await trainer.run(total_steps=60_000, target_return=0.9)
    assert result.reached_target, f"mean return {result.mean_return} after {result.env_steps} steps"


class GridSideEnv(SideEnv):
    """A 5x5x3 uint8 grid (too small for the CNN) with one bright cell; the action must name its half."""

    observation_space = gym.spaces.Box(0, 255, (5, 5, 3), np.uint8)

    def _obs(self):
        self.side = int(self.np_random.integers(2))
        grid = np.zeros((5, 5, 3), dtype=np.uint8)
        grid[self.np_random.integers(5), self.side * 3 + self.np_random.integers(2), 0] = 255
        return grid


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_grid_smaller_than_the_cnn_takes_gets_the_mlp_and_learns():
    trainer = Trainer(GridSideEnv, PPO(), num_workers=2, envs_per_worker=8, rollout_length=16, return_window=100)
    # was: RuntimeError "Kernel size can't be greater than actual input size" from building the CNN
    assert isinstance(trainer.policy, ObservationNormalizer) and isinstance(trainer.policy.policy, ActorCritic)
    result = await trainer.run(total_steps=60_000, target_return=0.9)
    assert result.reached_target, f"mean return {result.mean_return} after {result.env_steps} steps"


def test_a_recurrent_policy_reads_a_small_grid_through_its_mlp_encoder():
    trainer = Trainer(GridSideEnv, recurrent="gru")
    assert isinstance(trainer.policy.policy.encoder, torch.nn.Sequential)


def test_the_cnn_names_the_smallest_image_it_takes():
    dist = ActionDistribution.for_space(gym.spaces.Discrete(2))
    with pytest.raises(ConfigError, match=r"at least 7x7 .* got obs_shape=\(5, 5, 3\)"):
        CNNActorCritic((5, 5, 3), dist)
    assert isinstance(CNNActorCritic((7, 7, 3), dist), CNNActorCritic)


class SignEnv(gym.Env):
    """A scalar observation (a ``Box`` of shape ``()``); the action must name its sign (1-step episodes)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (), np.float32)
    action_space = gym.spaces.Discrete(2)

    def _obs(self):
        self.x = np.float32(self.np_random.uniform(-1, 1))
        return self.x

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        reward = float(action == int(self.x > 0))
        return self._obs(), reward, True, False, {}


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_scalar_observations_are_vectors_of_one_that_learn():
    trainer = Trainer(SignEnv, PPO(), num_workers=2, envs_per_worker=8, rollout_length=16, return_window=100)
    # was: a worker error ("'numpy.float32' object does not support item assignment") at the first step
    result = await trainer.run(total_steps=60_000, target_return=0.9)
    assert result.reached_target, f"mean return {result.mean_return} after {result.env_steps} steps"
    played = await trainer.evaluate(episodes=20)
    assert played.mean_return >= 0.8


def test_a_vector_env_s_batch_of_scalars_encodes_to_a_column():
    out = np.zeros((3, 1), dtype=np.float32)
    ObservationEncoder.for_space(SignEnv.observation_space).encode_batch_into(np.array([0.5, -0.25, 1.0]), out)
    assert out.tolist() == [[0.5], [-0.25], [1.0]]


@pytest.mark.parametrize(
    ("space", "batch", "entry"),
    [
        (
            gym.spaces.Dict({"pos": gym.spaces.Box(-1, 1, (2,)), "id": gym.spaces.Discrete(4)}),
            {"pos": np.zeros((2, 2), np.float32), "id": np.zeros(3, np.int64)},
            "observations\\['pos'\\] holds 2 rows for 3 sub-envs",
        ),
        (
            gym.spaces.Tuple((gym.spaces.Discrete(4), gym.spaces.MultiBinary(2))),
            (np.zeros(3, np.int64), np.zeros((4, 2), np.int8)),
            "observations\\[1\\] holds 4 rows for 3 sub-envs",
        ),
        (gym.spaces.MultiDiscrete([3, 3]), np.zeros((2, 2), np.int64), "observations holds 2 rows for 3 sub-envs"),
    ],
    ids=["dict", "tuple", "multi_discrete"],
)
def test_a_structured_batch_with_rows_missing_or_extra_is_refused_naming_the_entry(space, batch, entry):
    out = np.full((3, gym.spaces.flatdim(space)), 7.0, np.float32)
    with pytest.raises(ValueError, match=entry):  # was: a short Dict entry left its sub-env's row stale
        ObservationEncoder.for_space(space).encode_batch_into(batch, out)


def test_observation_normalizer_tracks_running_mean_and_variance():
    normalizer = ObservationNormalizer(torch.nn.Identity(), (2,))
    data = torch.randn(1000, 2) * torch.tensor([3.0, 0.5]) + torch.tensor([10.0, -2.0])
    for chunk in data.split(100):
        normalizer.observe(chunk)
    torch.testing.assert_close(normalizer.mean, data.mean(0), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(normalizer.var, data.var(0, unbiased=False), atol=1e-2, rtol=1e-3)


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_normalized_observations_reach_workers_with_the_weights():
    trainer = Trainer("Pendulum-v1", normalize_observations=True, num_workers=2, envs_per_worker=4, rollout_length=32)
    assert isinstance(trainer.policy, ObservationNormalizer)
    async with trainer:
        await trainer.run(total_steps=2_000)
        evaluation = await trainer.evaluate(episodes=1)
    assert float(trainer.policy.count) > 2_000 and float(trainer.policy.var[2]) > 1.0  # angular velocity
    assert np.isfinite(evaluation.mean_return)


BYTES = gym.spaces.Box(0, 255, (4,), np.uint8)


@pytest.mark.parametrize(
    ("space", "obs", "message"),
    [
        (gym.spaces.Box(-1, 1, (4,)), np.zeros(5, np.float32), r"shape \(5,\), but observation_space is Box"),
        (gym.spaces.Box(-1, 1, (4,)), np.zeros(1, np.float32), r"shape \(1,\)"),  # numpy would broadcast it
        (gym.spaces.Box(-1, 1, (2, 2)), np.zeros(4, np.float32), r"shape \(4,\)"),
        (gym.spaces.Discrete(3, start=1), 0, r"observation 0 is outside observation_space Discrete"),
        (gym.spaces.Discrete(3), 3, r"outside"),
        (gym.spaces.Discrete(3), 1.7, r"observation 1.7 is not a whole number, but observation_space is Discrete"),
        (gym.spaces.Discrete(3), np.array([1, 2]), r"is not a whole number"),
        # A uint8 space's observations are stored as bytes: 0.7 would reach the learner as 0, 300 as 44.
        (BYTES, np.array([0.7, 1, 2, 3]), r"dtype float64 with values other than whole numbers in \[0, 255\]"),
        (BYTES, np.array([300, 1, 2, 3]), r"max 300\), but observation_space is Box\(0, 255, \(4,\), uint8\)"),
        (BYTES, np.array([-1, 0, 0, 0]), r"min -1"),
    ],
)
def test_an_observation_outside_the_space_is_rejected_not_broadcast(space, obs, message):
    encoder = ObservationEncoder.for_space(space)
    with pytest.raises(ValueError, match=message):
        encoder.encode_into(obs, np.zeros(encoder.shape, np.float32))


POS_VEL = gym.spaces.Dict({"pos": gym.spaces.Box(-1, 1, (2,)), "vel": gym.spaces.Box(-1, 1, (2,))})


@pytest.mark.parametrize(
    ("space", "obs", "message"),
    [
        # gymnasium's flatten checks nothing: these were encoded as other observations, silently.
        (POS_VEL, {"pos": np.zeros(3), "vel": np.zeros(1)}, r"the observation\['pos'\] has shape \(3,\)"),
        (POS_VEL, {"pos": np.zeros(2)}, r"the observation is \['pos'\], expected a dict of \['pos', 'vel'\]"),
        (gym.spaces.Dict({"id": gym.spaces.Discrete(3)}), {"id": -1}, r"the observation\['id'\] -1 is outside"),
        (gym.spaces.MultiDiscrete([3, 3]), np.array([5, -1]), r"the observation array\(\[ 5, -1\]\) is outside"),
        (gym.spaces.MultiDiscrete([3, 3]), np.array([1.0, 0.0]), r"is of dtype float64, not integers"),
        (gym.spaces.MultiBinary(2), np.array([0.5, 1.0]), r"is not whole numbers"),
        (gym.spaces.MultiDiscrete([3, 3]), np.array([1, 1, 1]), r"has shape \(3,\)"),
        (gym.spaces.MultiBinary(3), np.array([7, -2, 0]), r"is outside MultiBinary\(3\)"),
        (gym.spaces.Tuple((gym.spaces.Box(-1, 1, (2, 2)),)), (np.zeros((4, 1)),), r"the observation\[0\] has shape"),
        (gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(2))), (1,), r"expected a tuple of 2"),
    ],
    ids=[
        "dict_entry_shape",
        "dict_key_missing",
        "dict_discrete",
        "multi_discrete",
        "float_indices",
        "fraction",
        "md_shape",
        "multi_binary",
        "tuple_entry_shape",
        "tuple_length",
    ],
)
def test_a_structured_observation_outside_its_space_is_rejected_naming_the_entry(space, obs, message):
    encoder = ObservationEncoder.for_space(space)
    with pytest.raises(ValueError, match=message):
        encoder.encode_into(obs, np.zeros(encoder.shape, np.float32))


def test_a_vector_env_s_batch_with_an_observation_outside_its_space_names_the_sub_env():
    space = gym.spaces.Dict({"cell": gym.spaces.MultiDiscrete([4, 4])})
    encoder = ObservationEncoder.for_space(space)
    with pytest.raises(ValueError, match=r"sub-env 1's observation\['cell'\] array\(\[4, 0\]\) is outside"):
        encoder.encode_batch_into({"cell": np.array([[0, 0], [4, 0]])}, np.zeros((2, 8), np.float32))


def test_a_uint8_space_takes_whole_numbers_of_any_dtype_and_stores_them_exactly():
    encoder = ObservationEncoder.for_space(BYTES)
    assert encoder.storage_dtype == "uint8"
    out = np.zeros(4, np.float32)
    encoder.encode_into(np.array([0.0, 1.0, 254.0, 255.0]), out)
    assert out.tolist() == [0.0, 1.0, 254.0, 255.0]
    batch = np.zeros((2, 4), np.float32)
    encoder.encode_batch_into(np.array([[0, 1, 2, 3], [4, 5, 6, 7]], np.int64), batch)
    with pytest.raises(ValueError, match=r"a batch of observations of dtype float32"):
        encoder.encode_batch_into(np.full((2, 4), 0.5, np.float32), batch)


class WrongPartShapes(gym.Env):
    """A Dict env whose entries have the wrong shapes but the right total size (4 = 3 + 1)."""

    observation_space = POS_VEL
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return {"pos": np.zeros(3, np.float32), "vel": np.zeros(1, np.float32)}, {}

    def step(self, action):
        return self.reset()[0], 1.0, False, True, {}


def test_a_trainer_refuses_an_env_whose_structured_observation_is_not_of_its_space():
    with pytest.raises(ConfigError, match=r"the observation\['pos'\] has shape \(3,\)"):  # was trained on, garbled
        Trainer(WrongPartShapes)
