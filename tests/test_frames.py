"""Stacked frames are stored once in rollouts, as bytes, and the learner sees exactly what the workers saw."""

from __future__ import annotations

import asyncio
import copy
import functools

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import SMALL, collect_lanes, sampler_template
from test_faults import assert_accounted

from aiorl import PPO, Trainer
from aiorl.algos.batch import BatchBuilder, stack_frames
from aiorl.distributions import ActionDistribution
from aiorl.envs.frames import frame_stack_size
from aiorl.rollout import RolloutLayout
from aiorl.shm import RolloutSlots
from aiorl.testing import stacked_noise_frames
from aiorl.worker import AsyncActing
from aiorl.worker.episodes import EnvStepError
from aiorl.worker.frames import FrameStackMismatch, ObservationWriter
from aiorl.worker.sampler import EnvSampler

STACKED = functools.partial(stacked_noise_frames, stack=4, size=12, max_episode_steps=9)


class PixelPolicy(torch.nn.Module):
    """A linear policy on every pixel: any frame in the wrong place changes its log-probabilities."""

    def __init__(self, obs_shape: tuple[int, ...], dist: ActionDistribution) -> None:
        super().__init__()
        self.actor = torch.nn.Linear(int(np.prod(obs_shape)), dist.num_inputs)
        self.critic = torch.nn.Linear(int(np.prod(obs_shape)), 1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs.flatten(1) / 255.0
        return self.actor(x) * 20.0, self.critic(x).squeeze(-1)


def replayed_logprobs(rollouts: list[dict[str, np.ndarray]], policy: torch.nn.Module, layout: RolloutLayout, dist):
    """The behaviour log-probs as the learner recomputes them from its rebuilt observations."""
    builder = BatchBuilder(layout, rollouts=len(rollouts))
    for rollout in rollouts:
        builder.add(rollout)
    batch = builder.take()
    learner = PPO().make_learner(copy.deepcopy(policy), dist, "cpu")
    obs = learner.observations(batch)
    assert obs.dtype == torch.float32 and obs.shape == (batch.rewards.size, 4, 12, 12)
    with torch.no_grad():
        dist_inputs = learner.policy(obs)[0]
    actions = torch.from_numpy(batch.actions).reshape(-1)
    return batch, dist.log_prob_entropy(dist_inputs, actions)[0].reshape(batch.rewards.shape).numpy()


def test_a_slot_stores_each_frame_once_as_bytes_and_the_learner_rebuilds_every_observation():
    template, policy = sampler_template(STACKED, envs=3, steps=11, policy_for=PixelPolicy)
    layout = template.layout
    assert (layout.frame_stack, layout.obs_dtype) == (4, "uint8")
    assert layout.fields()["obs"] == ((11, 3, 12, 12), np.dtype(np.uint8)), "one frame per step, as bytes"
    slots = RolloutSlots.create(layout, 1)
    sampler = EnvSampler(template.worker_spec(worker_id=0, incarnation=0), policy)
    try:
        rollouts = []
        for version in range(3):
            asyncio.run(sampler.collect(slots[0], policy_version=version))
            rollouts.append({name: array.copy() for name, array in slots[0].items()})
    finally:
        sampler.close()
        slots.close()
    batch, replayed = replayed_logprobs(rollouts, policy, layout, template.dist)
    assert batch.frame_starts.any(), "episodes start inside rollouts (fresh stacks)"
    assert batch.truncated.any() and batch.terminated.any()
    np.testing.assert_allclose(replayed, batch.logprobs, atol=1e-5)  # every observation, exactly


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_threaded_env_lanes_store_frames_once_and_the_learner_rebuilds_every_observation():
    template, policy = sampler_template(STACKED, envs=3, steps=10, num_slots=2, policy_for=PixelPolicy)
    spec = template.worker_spec(worker_id=0, incarnation=0)
    slots = RolloutSlots.create(template.layout, 2)
    acting = AsyncActing(env_threads=True, env_timeout_s=10.0, act_batch=3, act_wait_s=0.0)
    rollouts = await collect_lanes(spec, policy, acting, slots, rollouts=3)
    batch, replayed = replayed_logprobs(rollouts, policy, template.layout, template.dist)
    assert batch.frame_starts.any()
    np.testing.assert_allclose(replayed, batch.logprobs, atol=1e-5)


def test_stack_frames_raises_each_index_to_the_last_fresh_stack():
    frames = torch.tensor([10, 11, 12, 13, 14]).view(5, 1)  # one env, frames of one "pixel"
    history = torch.tensor([[7, 8, 9]])
    starts = torch.tensor([False, False, True, False, False]).view(5, 1)
    stacked = stack_frames(frames, history, starts)[:, 0].tolist()
    assert stacked == [
        [7, 8, 9, 10],  # the rollout's first observation: its history, then its newest frame
        [8, 9, 10, 11],
        [12, 12, 12, 12],  # a fresh stack: an episode's first observation
        [12, 12, 12, 13],
        [12, 12, 13, 14],
    ]


def test_an_observation_that_is_not_a_shifted_or_fresh_stack_ends_the_run_with_its_reason():
    layout = RolloutLayout(4, 2, (3, 2), (), "<i8", obs_dtype="uint8", frame_stack=3)
    rows = {name: np.zeros(shape, dtype) for name, (shape, dtype) in layout.fields().items()}
    writer = ObservationWriter(layout)
    first = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    writer.write(rows, 0, first)
    shifted = np.concatenate([first[:, 1:], np.full((2, 1, 2), 50.0, np.float32)], axis=1)
    shifted[1] = 60.0  # env 1 starts an episode: a fresh stack
    writer.write(rows, 1, shifted)
    assert rows["frame_starts"][1].tolist() == [False, True]
    scrambled = shifted[:, ::-1].copy()
    with pytest.raises(EnvStepError) as error:
        writer.write(rows, 2, scrambled)
    assert isinstance(error.value.original, FrameStackMismatch) and error.value.env_index == 0
    assert "row 2" in str(error.value) and "FrameStackObservation" in str(error.value)


def test_only_frame_stacks_that_can_be_stored_once_are_recognised():
    assert frame_stack_size(STACKED()) == 4
    assert frame_stack_size(gym.wrappers.RecordEpisodeStatistics(STACKED())) == 4, "wrappers that keep observations"
    assert frame_stack_size(stacked_noise_frames(padding_type="zero")) == 0, "zero padding is not a fresh stack"
    assert frame_stack_size(gym.wrappers.TransformObservation(STACKED(), lambda o: o[::-1], None)) == 0
    assert frame_stack_size(stacked_noise_frames(stack=1)) == 0
    assert frame_stack_size(gym.make("CartPole-v1")) == 0


@pytest.mark.asyncio(loop_factories=["uvloop"])
@pytest.mark.parametrize(
    "worker_device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))],
)
async def test_a_trainer_on_stacked_frames_trains_with_exact_accounting(worker_device):
    trainer = Trainer(STACKED, **{**SMALL, "envs_per_worker": 4, "rollout_length": 16}, worker_device=worker_device)
    assert trainer.spaces.frame_stack == 4
    result = await trainer.run(total_steps=1_500)
    assert result.total_env_steps >= 1_500 and result.updates >= 1
    assert_accounted(trainer, result)
