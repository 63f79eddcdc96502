"""Recurrent policies: workers carry each env's state, the learner replays it, and memory is learned."""

from __future__ import annotations

import asyncio
import copy
import functools
import os
import signal

import numpy as np
import pytest
import torch
from conftest import SMALL, collect_lanes, sampler_template
from test_faults import FAST, assert_accounted

from aiorl import APPO, PPO, ConfigError, Policy, Trainer
from aiorl.algos.batch import BatchBuilder
from aiorl.distributions import ActionDistribution
from aiorl.recurrent import RecurrentActorCritic, unroll
from aiorl.shm import RolloutSlots
from aiorl.testing import AsyncCountingEnv
from aiorl.testing.memory import CartPoleNoVelocity, CueRecallEnv
from aiorl.worker import AsyncActing
from aiorl.worker.sampler import EnvSampler

MEMORY = {**SMALL, "envs_per_worker": 8, "recurrent_size": 32}


class StepsSinceReset(torch.nn.Module):
    """A recurrent policy whose state counts the steps since its episode started (exactly)."""

    state_size = 1

    def __init__(self, obs_shape: tuple[int, ...], dist: ActionDistribution) -> None:
        super().__init__()
        self.logits = torch.nn.Linear(1, dist.num_inputs)

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, 1)

    def forward(self, obs, state, episode_start):
        counts = []
        for t in range(obs.shape[0]):
            state = state * (1.0 - episode_start[t]).unsqueeze(-1) + 1.0
            counts.append(state)
        counted = torch.stack(counts)
        return self.logits(counted), counted.squeeze(-1), state


def template(env, policy_for, *, envs: int, steps: int, num_slots: int = 1):
    template, policy = sampler_template(env, envs=envs, steps=steps, num_slots=num_slots, policy_for=policy_for)
    return template.worker_spec(worker_id=0, incarnation=0), policy, RolloutSlots.create(template.layout, num_slots)


def collect_sync(env, policy_for, *, envs: int, steps: int, rollouts: int):
    """Rollouts of a synchronous sampler (copies), and its policy."""
    spec, policy, slots = template(env, policy_for, envs=envs, steps=steps)
    sampler = EnvSampler(spec, policy)
    try:
        collected = []
        for version in range(rollouts):
            asyncio.run(sampler.collect(slots[0], policy_version=version))
            collected.append({name: array.copy() for name, array in slots[0].items()})
        return collected, policy, spec
    finally:
        sampler.close()
        slots.close()


def lstm(obs_shape, dist):
    return RecurrentActorCritic(obs_shape, dist, "lstm", hidden_size=16)


def test_workers_reset_the_state_at_episode_starts_and_carry_it_across_rollouts():
    rollouts, _, _ = collect_sync(
        functools.partial(CueRecallEnv, delay=4), StepsSinceReset, envs=2, steps=7, rollouts=2
    )
    first, second = rollouts  # episodes last 5 steps: they start at steps 0, 5, 10
    assert first["episode_starts"][:, 0].tolist() == [True, False, False, False, False, True, False]
    assert (first["initial_state"] == 0).all(), "every env starts from the initial state"
    assert (second["initial_state"] == 2).all(), "the second rollout goes on 2 steps into an episode"
    assert second["episode_starts"][:, 0].tolist() == [False, False, False, True, False, False, False]
    assert first["next_starts"].tolist() == [False, False] and second["next_starts"].tolist() == [False, False]


def test_the_learner_replays_the_state_each_worker_had():
    rollouts, policy, spec = collect_sync(CartPoleNoVelocity, lstm, envs=3, steps=20, rollouts=3)
    builder = BatchBuilder(spec.layout, rollouts=3)
    for rollout in rollouts:
        builder.add(rollout)
    batch = builder.take()
    assert batch.episode_starts.any() and (batch.initial_state != 0).any(), "episodes and states span rollouts"
    learner = PPO().make_learner(copy.deepcopy(policy), spec.dist, "cpu")
    steps, envs = batch.rewards.shape
    obs = torch.from_numpy(batch.obs).reshape(steps * envs, -1)
    dist_inputs, _, _, sequences = learner.evaluate_batch(batch, obs)
    assert sequences is not None
    actions = torch.from_numpy(batch.actions).reshape(-1)
    replayed = spec.dist.log_prob_entropy(dist_inputs, actions)[0].reshape(steps, envs).numpy()
    np.testing.assert_allclose(replayed, batch.logprobs, atol=1e-5)  # the worker's states, step by step


@pytest.mark.parametrize("algo", [PPO, APPO])
def test_a_trajectory_with_no_valid_step_makes_no_minibatch_of_its_own(algo):
    # Minibatches are whole trajectories: one masked throughout (too old, or broken by an
    # env error) would be a minibatch of no data whose optimiser step still moved the
    # weights on Adam's momentum.
    rollouts, policy, spec = collect_sync(CartPoleNoVelocity, lstm, envs=2, steps=16, rollouts=1)
    builder = BatchBuilder(spec.layout, rollouts=1)
    builder.add(rollouts[0])
    batch = builder.take()
    batch.valid[:, 1] = False
    learner = algo(update_epochs=3, num_minibatches=2).make_learner(copy.deepcopy(policy), spec.dist, "cpu")
    report = learner.update(batch, progress=0.0)
    (state,) = learner.optimizer.state.values()
    assert int(state["step"]) == 3  # one step per epoch: the valid trajectory's
    assert report["grad_norm"] > 0 and report["entropy"] > 0.5  # means over real steps only (2 actions: ln 2 at most)


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_async_env_lanes_keep_one_state_per_env_and_the_learner_replays_it():
    env = functools.partial(AsyncCountingEnv, episode_length=6, latency_s=0.001, slow_envs=(1,), slow_latency_s=0.004)
    spec, policy, slots = template(env, lstm, envs=3, steps=8, num_slots=2)
    acting = AsyncActing(env_threads=False, env_timeout_s=10.0, act_batch=3, act_wait_s=0.0)
    rollouts = await collect_lanes(spec, policy, acting, slots, rollouts=4)
    for rollout in rollouts:
        dist_inputs, _ = unroll(
            policy,
            torch.from_numpy(rollout["obs"]),
            torch.from_numpy(rollout["initial_state"]),
            torch.from_numpy(rollout["episode_starts"]),
        )
        actions = torch.from_numpy(rollout["actions"]).reshape(-1)
        replayed = spec.dist.log_prob_entropy(dist_inputs, actions)[0].reshape(8, 3).detach().numpy()
        np.testing.assert_allclose(replayed, rollout["logprobs"], atol=1e-5)
    assert any((r["initial_state"] != 0).any() for r in rollouts[1:]), "states carry over between segments"


@pytest.mark.asyncio(loop_factories=["uvloop"])
@pytest.mark.parametrize(("algo", "kind"), [(PPO(), "lstm"), (APPO(), "gru")], ids=["ppo-lstm", "appo-gru"])
async def test_a_recurrent_policy_learns_to_recall_a_cue(algo, kind):
    async with Trainer(CueRecallEnv, algo, recurrent=kind, **MEMORY) as trainer:
        await trainer.run(total_steps=20_000, target_return=0.98)
        remembered = await trainer.evaluate(episodes=50)
    assert remembered.mean_return > 0.9, remembered


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_feed_forward_policy_cannot_beat_chance_on_the_recall_task():
    async with Trainer(CueRecallEnv, **MEMORY) as trainer:
        await trainer.run(total_steps=5_000)
        memoryless = await trainer.evaluate(episodes=50)
    assert abs(memoryless.mean_return) < 0.6, memoryless  # the answer is a coin flip: mean 0, std 0.14


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_recurrent_policy_round_trips_through_a_checkpoint(tmp_path):
    async with Trainer(CueRecallEnv, recurrent="lstm", **MEMORY) as trainer:
        await trainer.run(total_steps=2_000)
        path = await trainer.save(tmp_path / "checkpoint.pt")
    live = Policy(copy.deepcopy(trainer.policy), trainer.obs_encoder, trainer.dist, env_factory=trainer.env_factory)
    policy = Policy.load(path)
    assert policy.recurrent
    assert policy.play(10, seed=3).returns == live.play(10, seed=3).returns
    env = CueRecallEnv()
    obs, _ = env.reset(seed=0)
    state = None
    for _ in range(5):
        action, state = policy.act(obs, state)
        assert tuple(state.shape) == (1, trainer.policy.state_size)
        obs, _, terminated, _, _ = env.step(action)
        if terminated:
            break
    assert terminated
    restored = Trainer.load(path)
    torch.testing.assert_close(restored.policy.state_dict(), trainer.policy.state_dict())
    async with restored:
        result = await restored.run(total_steps=1_000)
    assert result.total_env_steps >= 1_000


def test_a_feed_forward_policy_takes_no_state():
    trainer = Trainer("CartPole-v1")
    policy = Policy(trainer.policy, trainer.obs_encoder, trainer.dist)
    with pytest.raises(ConfigError, match="not recurrent"):
        policy.act(np.zeros(4, dtype=np.float32), torch.zeros(1, 8))


@pytest.mark.parametrize("state", [torch.zeros(1, 3), torch.zeros(4), np.zeros((1, 256), np.float32)])
def test_a_recurrent_policy_names_a_state_that_is_not_the_one_it_returned(state):
    trainer = Trainer("CartPole-v1", recurrent="lstm")  # state_size 256: h and c of 128
    policy = Policy(trainer.policy, trainer.obs_encoder, trainer.dist)
    _, returned = policy.act(np.zeros(4, dtype=np.float32))
    assert tuple(returned.shape) == (1, 256)
    with pytest.raises(ConfigError, match=r"pass back the state act\(\) returned \(a tensor of shape \(1, 256\)\)"):
        policy.act(np.zeros(4, dtype=np.float32), state)  # was an IndexError or AttributeError from inside


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_killed_worker_is_replaced_and_a_recurrent_run_stays_accounted():
    async with Trainer(CartPoleNoVelocity, PPO(update_epochs=1, num_minibatches=1), recurrent="gru", **FAST) as trainer:
        first_pids = dict(trainer.worker_pids)

        def kill_once(report):
            if report.policy_version == 2:
                os.kill(first_pids[1], signal.SIGKILL)

        result = await trainer.run(total_steps=6_000, on_update=kill_once)
        assert result.worker_restarts == 1
        assert_accounted(trainer, result)  # its unfinished rollout, if any, is discarded as worker_lost


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_async_envs_train_a_recurrent_policy_with_exact_accounting():
    env = functools.partial(AsyncCountingEnv, episode_length=8, latency_s=0.001, slow_envs=(0,), slow_latency_s=0.003)
    async with Trainer(env, PPO(update_epochs=1, num_minibatches=1), recurrent="gru", **MEMORY) as trainer:
        result = await trainer.run(total_steps=3_000)
        assert result.env_steps >= 3_000 and result.episodes > 0
        assert_accounted(trainer, result)


def test_recurrent_options_and_policies_are_checked_before_anything_starts():
    with pytest.raises(ConfigError, match="recurrent='rnn'"):
        Trainer("CartPole-v1", recurrent="rnn")
    with pytest.raises(ConfigError, match="recurrent_size=0"):
        Trainer("CartPole-v1", recurrent="lstm", recurrent_size=0)
    # 160 PB of LSTM weights: beyond any address space, so the allocation fails whatever the overcommit policy
    with pytest.raises(ConfigError, match=r"recurrent_size=100000000 is too large.*cannot be allocated"):
        Trainer("CartPole-v1", recurrent="lstm", recurrent_size=10**8)
    with pytest.raises(ConfigError, match="is not recurrent"):
        Trainer("CartPole-v1", recurrent="lstm", policy=Trainer("CartPole-v1").policy)

    class WrongState(StepsSinceReset):
        def initial_state(self, batch: int) -> torch.Tensor:
            return torch.zeros(batch, 3)

    with pytest.raises(ConfigError, match=r"initial_state\(2\) returned \(2, 3\), expected \(2, 1\)"):
        Trainer("CartPole-v1", policy=WrongState((4,), ActionDistribution.for_space(CueRecallEnv.action_space)))

    class IntegerLogits(StepsSinceReset):  # was accepted, then failed in every worker
        def forward(self, obs, state, episode_start):
            dist_inputs, value, new_state = super().forward(obs, state, episode_start)
            return dist_inputs.long(), value, new_state

    dist = ActionDistribution.for_space(CueRecallEnv.action_space)
    with pytest.raises(
        ConfigError, match=r"returned dist_inputs as a tensor of dtype torch.int64; expected a floating"
    ):
        Trainer("CartPole-v1", policy=IntegerLogits((4,), dist))
    with pytest.raises(ConfigError, match=r"has non-float32 weights"):
        Trainer("CartPole-v1", policy=StepsSinceReset((4,), dist).double())


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_the_fused_and_the_stepwise_replay_of_the_built_in_policy_agree(kind):
    torch.manual_seed(0)
    policy = RecurrentActorCritic((3,), ActionDistribution.for_space(CueRecallEnv.action_space), kind, 8)
    obs, state = torch.randn(12, 4, 3), torch.randn(4, policy.state_size)
    starts = torch.zeros(12, 4)
    starts[[0, 5, 9], [1, 2, 0]] = 1.0
    features = policy.encoder(obs.reshape(48, 3)).reshape(12, 4, -1)
    keep = (1.0 - starts).unsqueeze(-1)
    fused_hidden, fused_state = policy._segments(features, state, keep, [0, 5, 9, 12])
    step_hidden, step_state = policy._steps(features, state, keep)
    torch.testing.assert_close(fused_hidden, step_hidden)
    torch.testing.assert_close(fused_state, step_state)
