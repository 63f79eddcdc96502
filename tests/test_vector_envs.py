"""A vector env as a worker's env: gymnasium's vector envs and EnvPool, stepped as one batch per step.

The sampler tests fill one slot in this process; the trainer tests run real worker processes.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import sampler_template
from gymnasium.vector import AutoresetMode
from test_action_masks import assert_rows_were_acted_under_their_masks
from test_cli import command_env
from test_faults import FAST, QUICK_PPO, assert_accounted, assert_failures_counted

from aiorl import EnvError, Policy, Trainer
from aiorl.checkpoint import write_checkpoint
from aiorl.config_file import build_experiment, load_experiment
from aiorl.distributions import ActionDistribution
from aiorl.envs import EnvFactory, EnvSpaces, VectorEnvs
from aiorl.envs.vector import FirstSubEnv
from aiorl.errors import ConfigError
from aiorl.models import evaluate
from aiorl.recurrent import RecurrentActorCritic
from aiorl.shm import RolloutSlots
from aiorl.testing import FaultyEnv, InjectedFault, MaskedChoiceEnv
from aiorl.worker.vector_sampler import VectorEnvSampler

AIORL = [sys.executable, "-m", "aiorl"]
HAS_ENVPOOL = importlib.util.find_spec("envpool") is not None
needs_envpool = pytest.mark.skipif(not HAS_ENVPOOL, reason="envpool is not installed (pip install 'aiorl[envpool]')")
# EnvPool's CartPole spaces come with float64 bounds, which gymnasium's Box warns about.
envpool_warnings = pytest.mark.filterwarnings("ignore:.*precision lowered by casting to float32:UserWarning")


def cartpole_vector(num_envs: int, max_episode_steps: int, mode: AutoresetMode = AutoresetMode.NEXT_STEP) -> Any:
    """Gymnasium's SyncVectorEnv of CartPole with a short time limit."""
    return gym.make_vec(
        "CartPole-v1",
        num_envs=num_envs,
        vectorization_mode="sync",
        max_episode_steps=max_episode_steps,
        vector_kwargs={"autoreset_mode": mode},
    )


def envpool_cartpole(num_envs: int, max_episode_steps: int) -> Any:
    import envpool

    return envpool.make(
        "CartPole-v1", env_type="gymnasium", num_envs=num_envs, num_threads=1, max_episode_steps=max_episode_steps
    )


def sampler_for(make_env: Any, steps: int, recurrent: bool = False) -> tuple[VectorEnvSampler, RolloutSlots]:
    num_envs = EnvSpaces.probe(EnvFactory.from_user(make_env)).num_envs
    assert num_envs is not None

    def lstm(obs_shape: tuple[int, ...], dist: ActionDistribution) -> torch.nn.Module:
        return RecurrentActorCritic(obs_shape, dist, "lstm", 8)

    template, policy = sampler_template(
        make_env, envs=num_envs, steps=steps, policy_for=lstm if recurrent else None, vector=True
    )
    spec = template.worker_spec(worker_id=0, incarnation=0)
    return VectorEnvSampler(spec, policy), RolloutSlots.create(template.layout, 1)


def values_of(sampler: VectorEnvSampler, obs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return evaluate(sampler.policy, torch.from_numpy(obs))[1].numpy()


def assert_next_step_slot(sampler: VectorEnvSampler, slots: RolloutSlots) -> None:
    """A NEXT_STEP vector env with a time limit of 5, over 12 rows: rows 5 and 11 are reset steps."""
    slot = slots[0]
    summary = asyncio.run(sampler.collect(slot, policy_version=3))
    envs = slot["valid"].shape[1]
    reset_rows, last_rows = [5, 11], [4, 10]
    assert not slot["valid"][reset_rows].any() and slot["valid"].sum() == 10 * envs, "reset steps are masked out"
    assert (slot["rewards"][reset_rows] == 0).all() and (slot["trunc_values"][reset_rows] == 0).all()
    assert slot["truncated"][reset_rows].all(), "a reset row is inert: it cuts the advantage there"
    assert slot["truncated"][last_rows].all() and not slot["terminated"].any()
    assert (slot["rewards"][slot["valid"]] == 1).all()
    # A truncated step is bootstrapped from its final observation, which the reset step was acted on.
    final = slot["obs"][reset_rows].reshape(-1, 4)
    np.testing.assert_allclose(slot["trunc_values"][last_rows].reshape(-1), values_of(sampler, final), rtol=1e-5)
    assert (slot["trunc_values"][[0, 1, 2, 3, 6, 7, 8, 9]] == 0).all()
    assert summary.episode_lengths == [5] * (2 * envs) and summary.episode_returns == [5.0] * (2 * envs)
    assert summary.env_steps == 10 * envs and summary.discarded_steps == 0
    assert sampler.total_steps == 10 * envs, "a reset step is no env step: not counted as collected"
    assert (slot["versions"] == 3).all()


def test_a_next_step_vector_env_fills_a_slot_whose_reset_steps_are_never_trained_on():
    sampler, slots = sampler_for(functools.partial(cartpole_vector, 3, 5), steps=12)
    try:
        assert sampler.next_step_reset
        assert_next_step_slot(sampler, slots)
    finally:
        sampler.close()
        slots.close()


class ReadOnlyResults(gym.vector.VectorWrapper):
    """Returns its observations, rewards and flags as read-only arrays, as ``np.asarray`` of a JAX env's are."""

    def step(self, actions: Any) -> Any:
        results = self.env.step(actions)
        for array in results[:4]:
            array.setflags(write=False)
        return results


def read_only_cartpole_vector(num_envs: int, max_episode_steps: int) -> Any:
    return ReadOnlyResults(cartpole_vector(num_envs, max_episode_steps))


def test_a_vector_env_whose_results_are_read_only_arrays_fills_a_slot_just_the_same():
    sampler, slots = sampler_for(functools.partial(read_only_cartpole_vector, 3, 5), steps=12)
    try:
        assert_next_step_slot(sampler, slots)
    finally:
        sampler.close()
        slots.close()


class RaisesOnStep(gym.vector.VectorWrapper):
    """Raises on its ``at``-th ``step`` call."""

    def __init__(self, env: gym.vector.VectorEnv, at: int) -> None:
        super().__init__(env)
        self.at, self.calls = at, 0

    def step(self, actions: Any) -> Any:
        self.calls += 1
        if self.calls == self.at:
            raise InjectedFault(f"step {self.calls}")
        return self.env.step(actions)


def raising_cartpole_vector(num_envs: int, max_episode_steps: int, at: int) -> Any:
    return RaisesOnStep(cartpole_vector(num_envs, max_episode_steps), at)


def test_a_vector_env_failing_after_a_reset_step_across_rollouts_discards_just_the_new_episodes_steps():
    # Episodes of 5 steps and rollouts of 5 rows: the second rollout opens with the reset
    # step, its episode begins on row 1, and the env raises on its 8th step (row 2).
    sampler, slots = sampler_for(functools.partial(raising_cartpole_vector, 2, 5, 8), steps=5)
    try:
        slot = slots[0]
        first = asyncio.run(sampler.collect(slot, policy_version=0))
        assert first.env_steps == 10 and first.episode_lengths == [5, 5] and not first.env_errors
        second = asyncio.run(sampler.collect(slot, policy_version=1))
        assert len(second.env_errors) == 1 and second.env_errors[0].discarded_steps == 4
        assert second.discarded_steps == 4, "rows 1 and 2 of both sub-envs: the episode that broke"
        np.testing.assert_array_equal(slot["valid"][:, 0], [False, False, False, True, True])
        np.testing.assert_array_equal(slot["valid"], slot["valid"][:, :1].repeat(2, axis=1))
        assert second.env_steps == 4 and second.episode_lengths == []
        third = asyncio.run(sampler.collect(slot, policy_version=2))  # the fresh env's episodes: 5 steps each
        assert third.episode_lengths == [5, 5] and not third.env_errors
    finally:
        sampler.close()
        slots.close()


@needs_envpool
@envpool_warnings
def test_envpool_autoresets_on_the_next_step_and_fills_a_slot_as_gymnasium_does():
    sampler, slots = sampler_for(functools.partial(envpool_cartpole, 3, 5), steps=12)
    try:
        assert sampler.next_step_reset
        assert_next_step_slot(sampler, slots)
    finally:
        sampler.close()
        slots.close()


def test_a_same_step_vector_env_bootstraps_truncated_episodes_from_the_final_obs_in_the_info():
    sampler, slots = sampler_for(functools.partial(cartpole_vector, 3, 5, AutoresetMode.SAME_STEP), steps=12)
    try:
        slot = slots[0]
        summary = asyncio.run(sampler.collect(slot, policy_version=0))
        assert not sampler.next_step_reset
        assert slot["valid"].all() and summary.env_steps == 36 and sampler.total_steps == 36
        assert slot["truncated"][[4, 9]].all() and slot["truncated"].sum() == 6 and not slot["terminated"].any()
        # The step after an episode's end is the next episode's first: its observation is a fresh reset's.
        assert (np.abs(slot["obs"][[5, 10]]) <= 0.05).all()
        assert (slot["trunc_values"][[4, 9]] != 0).all() and (slot["trunc_values"][~slot["truncated"]] == 0).all()
        assert summary.episode_lengths == [5] * 6 and summary.episode_returns == [5.0] * 6
    finally:
        sampler.close()
        slots.close()


def test_a_recurrent_policys_episodes_start_on_the_row_after_a_reset_step():
    sampler, slots = sampler_for(functools.partial(cartpole_vector, 2, 5), steps=12, recurrent=True)
    try:
        slot = slots[0]
        asyncio.run(sampler.collect(slot, policy_version=0))
        starts = slot["episode_starts"][:, 0]
        assert starts.nonzero()[0].tolist() == [0, 6], "row 5 is the reset step; the next episode begins at row 6"
        assert slot["next_starts"].all(), "row 11 is a reset step: next_obs begins an episode"
        np.testing.assert_array_equal(slot["initial_state"], 0.0)
    finally:
        sampler.close()
        slots.close()


def masked_vector(num_envs: int, sizes: tuple[int, ...] = (5,)) -> Any:
    return gym.vector.SyncVectorEnv([functools.partial(MaskedChoiceEnv, sizes, 4)] * num_envs)


def test_a_vector_envs_action_masks_are_read_per_sub_env_and_acted_within():
    sampler, slots = sampler_for(functools.partial(masked_vector, 3), steps=20)
    try:
        summary = asyncio.run(sampler.collect(slots[0], policy_version=0))
        assert summary.env_errors == [] and summary.env_steps == 48, "4 reset steps per sub-env"
        assert_rows_were_acted_under_their_masks(slots[0], (5,))
    finally:
        sampler.close()
        slots.close()


@pytest.mark.parametrize("sizes", [(5,), (3, 4)], ids=["discrete", "multi_discrete"])
@pytest.mark.parametrize("deterministic", [True, False])
def test_evaluating_a_masked_vector_env_gives_every_sub_env_an_action_its_mask_allows(deterministic, sizes):
    # Evaluation plays sub-env 0; the others were stepped with sub-env 0's action, which their
    # masks may forbid (MaskedChoiceEnv raises InvalidAction on one; MultiDiscrete per component).
    trainer = Trainer(functools.partial(masked_vector, 4, sizes), num_workers=1, seed=2)
    result = asyncio.run(trainer.evaluate(episodes=3, deterministic=deterministic))
    assert result.episodes == 3 and all(length >= 1 for length in result.lengths)


# ---- the trainer ----------------------------------------------------------------------------


def test_envs_per_worker_follows_the_vector_envs_num_envs_when_not_given():
    trainer = Trainer(functools.partial(cartpole_vector, 6, 500), num_workers=2)
    assert trainer.config.envs_per_worker == 6 and trainer.config.batch_steps == 2 * 6 * 32


def test_numpy_sizes_of_vector_envs_are_taken_as_pythons_own():
    factory = VectorEnvs("CartPole-v1", num_envs=np.int64(4), num_threads=np.int32(1))
    assert factory == VectorEnvs("CartPole-v1", num_envs=4) and type(factory.num_envs) is int
    with pytest.raises(ConfigError, match=r"num_envs=0 must be an integer >= 1"):
        VectorEnvs("CartPole-v1", num_envs=np.int64(0))


def test_an_envs_per_worker_other_than_the_vector_envs_num_envs_is_a_config_error_naming_both():
    with pytest.raises(ConfigError, match=r"envs_per_worker=4, but env=.* num_envs=6"):
        Trainer(functools.partial(cartpole_vector, 6, 500), envs_per_worker=4)


@pytest.mark.parametrize("options", [{"act_batch": 4}, {"act_wait_s": 0.5}])
def test_async_acting_options_for_vector_envs_are_refused_not_ignored(options):
    (name,) = options
    with pytest.raises(ConfigError, match=f"{name}=.* returns vector envs, which act as one batch"):
        Trainer(functools.partial(cartpole_vector, 6, 500), **options)  # act_wait_s was accepted, and ignored


def test_a_vector_env_that_does_not_reset_its_sub_envs_is_a_config_error():
    with pytest.raises(ConfigError, match="autoreset_mode is DISABLED"):
        Trainer(functools.partial(cartpole_vector, 2, 500, AutoresetMode.DISABLED))


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_training_cartpole_with_a_vector_env_per_worker_reaches_a_modest_return():
    trainer = Trainer(VectorEnvs("CartPole-v1", 16), num_workers=2, seed=1)
    result = await asyncio.wait_for(trainer.run(total_steps=200_000, target_return=150), timeout=120)
    assert result.mean_return >= 150
    assert_accounted(trainer, result)


@needs_envpool
@envpool_warnings
@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_training_cartpole_with_envpool_per_worker_reaches_a_modest_return():
    trainer = Trainer(VectorEnvs("CartPole-v1", 16, kind="envpool"), num_workers=2, seed=1)
    result = await asyncio.wait_for(trainer.run(total_steps=200_000, target_return=150), timeout=120)
    assert result.mean_return >= 150
    assert_accounted(trainer, result)
    evaluation = await trainer.evaluate(episodes=2)  # played in sub-env 0 of a vector env
    assert len(evaluation.returns) == 2 and min(evaluation.returns) > 0


_vector_envs_built = 0


def vector_that_raises_once() -> Any:
    """Worker 0's first vector env raises on its 20th step; every other one is plain CartPole."""
    global _vector_envs_built
    _vector_envs_built += 1
    first = _vector_envs_built == 1
    sub_env = functools.partial(FaultyEnv, "CartPole-v1", "raise", 20, env_indices=None) if first else None
    return gym.vector.SyncVectorEnv([sub_env or functools.partial(gym.make, "CartPole-v1")] * 4)


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_vector_env_that_raises_is_recreated_and_its_unfinished_steps_are_discarded():
    async with Trainer(vector_that_raises_once, QUICK_PPO, **FAST) as trainer:
        async with asyncio.timeout(60):  # short runs until worker 0 has reached its failing step
            while trainer.stats.env_errors == 0:
                result = await trainer.run(total_steps=2_000)
            result = await trainer.run(total_steps=2_000)  # and trains on
        assert trainer.stats.env_errors == 1 and trainer.stats.worker_restarts == 0
        # Worker 0's four sub-envs lose their unfinished episodes: at most 20 steps each, the failed one included.
        assert 0 < result.steps_discarded["env_error"] <= 4 * 20
        assert_accounted(trainer, result)


def vector_that_always_raises() -> Any:
    """Sub-env 0 of every vector env raises on its first step."""
    return gym.vector.SyncVectorEnv(
        [functools.partial(FaultyEnv, "CartPole-v1", "raise", 1, workers=None, incarnations=None)]
        + [functools.partial(gym.make, "CartPole-v1")] * 3
    )


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_vector_env_that_keeps_failing_ends_the_run_with_env_error_after_the_limit():
    trainer = Trainer(vector_that_always_raises, QUICK_PPO, **FAST)
    with pytest.raises(EnvError, match=r"InjectedFault.*failed 3 times in a row"):
        await asyncio.wait_for(trainer.run(total_steps=10**9), timeout=60)
    assert trainer.stats.worker_restarts == 0
    assert_failures_counted(trainer)


# ---- the command line -----------------------------------------------------------------------


def test_run_vector_builds_a_vector_env_factory_of_envs_per_worker_sub_envs():
    experiment = build_experiment(
        {"run": {"env": "CartPole-v1", "vector": "gymnasium"}, "env_kwargs": {"max_episode_steps": 50}},
        overrides={"trainer": {"envs_per_worker": 8}},
    )
    assert experiment.env_source() == VectorEnvs("CartPole-v1", 8, "gymnasium", kwargs={"max_episode_steps": 50})
    assert experiment.trainer_env_kwargs() is None


def test_run_vector_with_a_module_factory_a_preset_factory_or_an_unknown_kind_is_a_config_error():
    with pytest.raises(ConfigError, match=r"run.vector='gymnasium' builds vector envs of an env id"):
        build_experiment({"run": {"env": "cli_envs:DrawnCartPole", "vector": "gymnasium"}})
    with pytest.raises(ConfigError, match=r"run.env='ALE/Pong-v5' is built by its preset's factory.*'envpool'"):
        build_experiment({"run": {"env": "ALE/Pong-v5", "vector": "gymnasium"}})
    with pytest.raises(ConfigError, match=r"run.vector='jax' must be one of"):
        build_experiment({"run": {"env": "CartPole-v1", "vector": "jax"}})


def test_aiorl_train_with_vector_gymnasium_trains_and_records_it_in_config_toml(tmp_path: Path):
    flags = ["--vector", "gymnasium", "--workers", "1", "--envs-per-worker", "8", "--steps", "1024"]
    done = subprocess.run(
        [*AIORL, "train", "CartPole-v1", *flags, "--progress", "plain", "--logdir", "run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env=command_env(),
    )
    assert done.returncode == 0, done.stderr
    assert "finished: mean return" in done.stdout  # (reset steps are not trained on: a little over 1,024 steps)
    experiment = load_experiment(tmp_path / "run" / "config.toml")
    assert experiment.run.vector == "gymnasium" and experiment.trainer.envs_per_worker == 8


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_the_first_sub_env_resets_mid_episode_without_a_seed_into_a_fresh_episode(mode):
    vector = gym.make_vec("CartPole-v1", 2, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode})
    env = FirstSubEnv(vector)
    try:
        env.reset(seed=0)
        for _ in range(5):
            env.step(1)
        obs, _ = env.reset()  # was: AttributeError '_next_obs' (or, SAME_STEP, an old episode's first obs)
        assert np.abs(obs).max() <= 0.05  # CartPole's reset draws every value in [-0.05, 0.05]
        after, *_ = env.step(1)
        assert after[0] == pytest.approx(obs[0] + 0.02 * obs[1])  # the step continues from that observation
    finally:
        env.close()


def test_a_policy_trained_on_vector_envs_plays_in_a_sub_env_made_to_render(tmp_path):
    trainer = Trainer(VectorEnvs("CartPole-v1", 2), num_workers=1)
    write_checkpoint(trainer.state_dict(), tmp_path / "c.pt")
    env = Policy.load(tmp_path / "c.pt").make_env("rgb_array")  # was: "does not render in that mode"
    try:
        assert isinstance(env, FirstSubEnv) and env.render_mode == "rgb_array"
    finally:
        env.close()


def test_a_policy_plays_in_the_first_sub_env_of_a_vector_env_it_is_given(tmp_path):
    write_checkpoint(Trainer(VectorEnvs("CartPole-v1", 2), num_workers=1).state_dict(), tmp_path / "c.pt")
    policy = Policy.load(tmp_path / "c.pt")
    result = policy.play(2, env=gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync"))
    assert result.episodes == 2  # was: "env's action_space is MultiDiscrete([2 2]), but the policy's is Discrete(2)"


def test_a_vector_env_re_created_after_an_error_is_seeded_so_the_run_repeats():
    rows_after_recovery = []
    for _ in range(2):
        sampler, slots = sampler_for(functools.partial(raising_cartpole_vector, 2, 50, 3), steps=5)
        try:
            summary = asyncio.run(sampler.collect(slots[0], policy_version=0))
            assert len(summary.env_errors) == 1
            rows_after_recovery.append(slots[0]["obs"][3:].copy())  # the re-created env's first observations
        finally:
            sampler.close()
            slots.close()
    np.testing.assert_array_equal(*rows_after_recovery)
