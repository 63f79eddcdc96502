"""Action masks: envs that put ``info["action_mask"]`` are masked from the workers to the learner to deployment.

The masked test env (:class:`~aiorl.testing.MaskedChoiceEnv`) raises on any action its
current mask forbids, and its mask changes every step: a single unmasked action anywhere
(a worker, an async lane, a restarted worker, an evaluation) is an env error.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import SMALL, sampler_template

from aiorl import APPO, PPO, AsyncEnv, ConfigError, EnvError, Policy, Trainer
from aiorl.distributions import MASKED_LOGIT, ActionDistribution
from aiorl.envs import ActionMasks, EnvFactory, EnvSpaces, InvalidActionMask, ObservationEncoder
from aiorl.models import ActorCritic
from aiorl.shm import RolloutSlots
from aiorl.testing import MASKED_CHOICE_ENV_ID, FaultyEnv, InvalidAction, MaskedChoiceEnv
from aiorl.worker import AsyncActing, WorkerTemplate
from aiorl.worker.async_sampler import AsyncEnvSampler
from aiorl.worker.episodes import EnvStepError
from aiorl.worker.sampler import EnvSampler

QUICK_PPO = PPO(update_epochs=2, num_minibatches=2)
FAST = {**SMALL, "heartbeat_interval_s": 0.2, "worker_timeout_s": 5.0, "restart_backoff_s": 0.05}


# ---- the distribution --------------------------------------------------------------------------


def test_a_masked_categorical_is_the_categorical_renormalised_over_the_valid_actions():
    torch.manual_seed(0)
    dist = ActionDistribution.for_space(gym.spaces.Discrete(5))
    logits = torch.randn(64, 5)
    mask = torch.rand(64, 5) < 0.5
    mask[torch.arange(64), torch.randint(0, 5, (64,))] = True  # at least one valid action per row
    actions = torch.multinomial(mask.float(), 1).squeeze(-1)  # valid actions
    log_prob, entropy = dist.log_prob_entropy(logits, actions, mask)
    for row in range(64):
        valid = mask[row].nonzero().squeeze(-1)
        renormalised = torch.distributions.Categorical(logits=logits[row, valid])
        position = (valid == actions[row]).nonzero().item()
        assert log_prob[row].item() == pytest.approx(renormalised.log_prob(torch.tensor(position)).item(), abs=1e-5)
        assert entropy[row].item() == pytest.approx(renormalised.entropy().item(), abs=1e-5)
    assert torch.isfinite(entropy).all()


def test_a_masked_multi_categorical_adds_up_the_renormalised_components():
    torch.manual_seed(1)
    dist = ActionDistribution.for_space(gym.spaces.MultiDiscrete([3, 4]))
    logits = torch.randn(8, 7)
    mask = torch.tensor([[True, False, True, False, True, True, False]] * 8)
    actions = torch.tensor([[2, 1]] * 8)  # component 0: action 2 of {0, 2}; component 1: action 1 of {1, 2}
    log_prob, entropy = dist.log_prob_entropy(logits, actions, mask)
    first = torch.distributions.Categorical(logits=logits[:, [0, 2]])
    second = torch.distributions.Categorical(logits=logits[:, [4, 5]])
    expected = first.log_prob(torch.ones(8)) + second.log_prob(torch.zeros(8))
    torch.testing.assert_close(log_prob, expected)
    torch.testing.assert_close(entropy, first.entropy() + second.entropy())


def test_sampling_and_the_mode_never_choose_a_masked_action():
    torch.manual_seed(2)
    dist = ActionDistribution.for_space(gym.spaces.Discrete(4))
    logits = torch.tensor([[10.0, 0.0, 0.0, 0.0]]).repeat(2_000, 1)  # action 0 is by far the most likely
    mask = torch.tensor([[False, True, False, True]]).repeat(2_000, 1)
    actions, log_probs = dist.sample(logits, mask)
    assert set(actions.tolist()) == {1, 3}
    torch.testing.assert_close(log_probs, torch.full((2_000,), -np.log(2.0)))
    assert (dist.mode(logits, mask) == 1).all()
    assert (dist.mode(logits) == 0).all()


def test_a_masked_logit_is_large_and_finite():
    dist = ActionDistribution.for_space(gym.spaces.Discrete(3))
    masked = dist.masked(torch.zeros(1, 3), torch.tensor([[True, False, True]]))
    assert masked.tolist() == [[0.0, MASKED_LOGIT, 0.0]]


# ---- reading masks -----------------------------------------------------------------------------


def read(masks: ActionMasks, raw: Any) -> list[bool]:
    return masks.from_raw(raw).tolist()


def test_masks_are_read_in_gymnasiums_formats():
    discrete = ActionMasks.for_space(gym.spaces.Discrete(3))
    assert read(discrete, np.array([1, 0, 1], dtype=np.int8)) == [True, False, True]
    assert read(discrete, np.array([False, True, False])) == [False, True, False]
    assert read(discrete, [0, 0, 1]) == [False, False, True]
    multi = ActionMasks.for_space(gym.spaces.MultiDiscrete([2, 3]))
    expected = [True, False, False, True, True]
    assert read(multi, (np.array([1, 0], np.int8), np.array([0, 1, 1], np.int8))) == expected
    assert read(multi, np.array([1, 0, 0, 1, 1], np.int8)) == expected


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (np.array([1, 0], np.int8), r"shape \(2,\).*expected an integer or bool array of shape \(3,\)"),
        (np.array([1.0, 0.0, 1.0], np.float32), r"dtype float32"),
        (np.zeros(3, np.int8), r"allows no action"),
        (None, r"NoneType"),
    ],
)
def test_a_malformed_mask_or_one_without_a_valid_action_is_rejected(raw, problem):
    with pytest.raises(InvalidActionMask, match=problem):
        ActionMasks.for_space(gym.spaces.Discrete(3)).from_raw(raw)


def test_a_multi_discrete_mask_needs_a_valid_action_in_every_component():
    masks = ActionMasks.for_space(gym.spaces.MultiDiscrete([2, 3]))
    with pytest.raises(InvalidActionMask, match=r"no action in component 1"):
        masks.from_raw((np.array([1, 0], np.int8), np.zeros(3, np.int8)))
    with pytest.raises(InvalidActionMask, match=r"action_mask'\]\[0\] is an array of shape \(3,\)"):
        masks.from_raw((np.ones(3, np.int8), np.ones(3, np.int8)))


def test_a_mask_of_another_number_of_parts_names_the_form_expected():
    masks = ActionMasks.for_space(gym.spaces.MultiDiscrete([3, 2, 2]))
    with pytest.raises(InvalidActionMask, match=r"is a tuple of 2 parts; expected 3 integer or bool arrays"):
        masks.from_raw((np.ones(3, np.int8), np.ones(2, np.int8)))  # was numpy's "inhomogeneous shape" error


# ---- detecting masks ---------------------------------------------------------------------------


def test_the_trainer_detects_masks_on_the_reset_of_its_probe_env():
    assert EnvSpaces.probe(EnvFactory.from_user("Taxi-v4")).action_masks == ActionMasks((6,))
    assert EnvSpaces.probe(EnvFactory.from_user(MASKED_CHOICE_ENV_ID)).action_masks == ActionMasks((5,))
    assert EnvSpaces.probe(EnvFactory.from_user("CartPole-v1")).action_masks is None


class MaskedBoxEnv(gym.Env):
    """A continuous-action env that (wrongly) puts an action mask into its info."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        return np.zeros(2, np.float32), {"action_mask": np.ones(2, np.int8)}

    def step(self, action: Any) -> Any:
        return np.zeros(2, np.float32), 0.0, False, False, {"action_mask": np.ones(2, np.int8)}


def test_masks_on_a_box_action_space_are_a_config_error_naming_the_space():
    with pytest.raises(ConfigError, match=r"action_space=Box\(-1.0, 1.0, \(2,\), float32\) cannot be masked"):
        Trainer(MaskedBoxEnv)


# ---- workers -----------------------------------------------------------------------------------


def template(env: Any, *, envs: int, steps: int, num_slots: int = 1) -> tuple[WorkerTemplate, RolloutSlots]:
    spec, _ = sampler_template(env, envs=envs, steps=steps, num_slots=num_slots)
    assert spec.layout.mask_width > 0
    MaskedChoiceEnv._built_at.clear()  # the probe env was built here too: count the sampler's envs from 0
    return spec, RolloutSlots.create(spec.layout, num_slots)


def assert_rows_were_acted_under_their_masks(arrays: dict[str, np.ndarray], sizes: tuple[int, ...]) -> None:
    """Every valid row's stored mask is the mask of its observation, and its action is valid under it."""
    valid = arrays["valid"]
    masks = arrays["action_masks"][valid]
    np.testing.assert_array_equal(masks, arrays["obs"][valid][:, sum(sizes) :] > 0.5)  # the env shows its mask
    actions = arrays["actions"][valid].reshape(len(masks), len(sizes))
    for component, start in enumerate(np.cumsum([0, *sizes[:-1]])):
        assert masks[np.arange(len(masks)), start + actions[:, component]].all(), "an action outside its mask"


@pytest.mark.parametrize("sizes", [(5,), (3, 4)])
def test_the_sampler_stores_each_steps_mask_and_acts_only_within_it(sizes):
    spec, slots = template(functools.partial(MaskedChoiceEnv, sizes, episode_length=7), envs=3, steps=40)
    sampler = EnvSampler(spec.worker_spec(0, 0), spec.policy)
    try:
        summary = asyncio.run(sampler.collect(slots[0], policy_version=0))
        assert summary.env_errors == [] and summary.env_steps == 120
        assert_rows_were_acted_under_their_masks(slots[0], sizes)
        assert len(set(map(bytes, slots[0]["action_masks"].reshape(120, -1)))) > 4, "the mask changes"
    finally:
        sampler.close()
        slots.close()


class AsyncMaskedChoiceEnv(AsyncEnv[np.ndarray, Any]):
    """:class:`MaskedChoiceEnv` as an :class:`~aiorl.AsyncEnv` that declares its masks."""

    action_masks = True

    def __init__(self, **options: Any) -> None:
        self.env = MaskedChoiceEnv(**options)
        self.observation_space = self.env.observation_space
        self.action_space = self.env.action_space

    async def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        return self.env.reset(seed=seed)

    async def step(self, action: Any) -> Any:
        await asyncio.sleep(0.0005 * (1 + self.env.steps % 3))  # lanes progress at different speeds
        return self.env.step(action)


async def collect_async(sampler: AsyncEnvSampler, slots: RolloutSlots, count: int) -> tuple[list[dict], list]:
    """Run the async sampler until ``count`` slots are reported; copies of them and the env errors."""
    await sampler.start()
    granted: asyncio.Queue[int] = asyncio.Queue()
    for slot in range(slots.num_slots):
        granted.put_nowait(slot)
    reported: asyncio.Queue[int] = asyncio.Queue()
    errors: list = []
    running = asyncio.create_task(
        sampler.run(slots, granted, lambda slot, _summary, _version: reported.put_nowait(slot), errors.append)
    )
    out = []
    try:
        async with asyncio.timeout(60):
            while len(out) < count:
                slot = await reported.get()
                out.append({name: array.copy() for name, array in slots[slot].items()})
                granted.put_nowait(slot)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await sampler.aclose()
    return out, errors


@pytest.mark.asyncio(loop_factories=["asyncio"])
@pytest.mark.parametrize("env_threads", [False, True])
async def test_async_lanes_store_each_steps_mask_and_act_only_within_it(env_threads):
    env = MaskedChoiceEnv if env_threads else AsyncMaskedChoiceEnv
    spec, slots = template(functools.partial(env, episode_length=6), envs=4, steps=12, num_slots=2)
    acting = AsyncActing(env_threads=env_threads, env_timeout_s=10.0, act_batch=4, act_wait_s=0.0)
    sampler = AsyncEnvSampler(spec.worker_spec(0, 0), spec.policy, acting, lambda: 0)
    try:
        rollouts, errors = await collect_async(sampler, slots, count=4)
    finally:
        slots.close()
    assert errors == []
    for arrays in rollouts:
        assert arrays["valid"].all()
        assert_rows_were_acted_under_their_masks(arrays, (5,))


@pytest.mark.parametrize("bad_mask", ["missing", "wrong_shape", "wrong_dtype", "none_valid"])
def test_a_bad_mask_is_an_env_error_naming_the_env_and_the_step(bad_mask):
    env = functools.partial(MaskedChoiceEnv, episode_length=50, bad_mask=bad_mask, bad_mask_at=4)
    spec, slots = template(env, envs=2, steps=10)
    sampler = EnvSampler(spec.worker_spec(0, 0), spec.policy)
    try:
        summary = asyncio.run(sampler.collect(slots[0], policy_version=3))
    finally:
        sampler.close()
        slots.close()
    assert [(e.env_index, e.step, e.error_type) for e in summary.env_errors] == [
        (0, 4, "InvalidActionMask"),
        (1, 4, "InvalidActionMask"),
    ]
    assert summary.discarded_steps == 8, "the broken episodes' 4 steps in each env"
    assert "action_mask" in summary.env_errors[0].message


@pytest.mark.parametrize(
    ("bad_mask", "problem"),
    [("wrong_shape", r"is an array of shape \(6,\)"), ("none_valid", r"allows no action")],
)
def test_a_bad_mask_at_the_first_reset_is_a_config_error_before_any_process_starts(bad_mask, problem):
    env = functools.partial(MaskedChoiceEnv, bad_mask=bad_mask, bad_mask_at=0, bad_mask_times=None)
    with pytest.raises(
        ConfigError, match=r"env=.*MaskedChoiceEnv.*: on its first reset, info\['action_mask'\] " + problem
    ):
        Trainer(env, QUICK_PPO, **FAST)  # the probe reads the mask as workers would


def vector_env_whose_second_env_has(bad_mask: str) -> gym.vector.SyncVectorEnv:
    bad = functools.partial(MaskedChoiceEnv, bad_mask=bad_mask, bad_mask_at=0, bad_mask_times=None)
    return gym.vector.SyncVectorEnv([MaskedChoiceEnv, bad])


@pytest.mark.parametrize(
    ("bad_mask", "problem"),
    [
        ("none_valid", r"sub-env 1: info\['action_mask'\] allows no action"),
        ("missing", r"sub-env 1 put no 'action_mask' into its info \(the vector env filled zeros in\)"),
    ],
)
def test_a_bad_first_mask_of_a_vector_env_is_a_config_error_naming_the_sub_env(bad_mask, problem):
    env = functools.partial(vector_env_whose_second_env_has, bad_mask)
    with pytest.raises(ConfigError, match=r"on its first reset, " + problem):
        Trainer(env, QUICK_PPO, **{**FAST, "envs_per_worker": 2})  # was: workers started, then an EnvError


def test_a_mask_that_stays_bad_is_fatal_after_env_error_limit_failures():
    env = functools.partial(
        MaskedChoiceEnv, episode_length=50, bad_mask="none_valid", bad_mask_at=2, bad_mask_times=None
    )
    spec, slots = template(env, envs=1, steps=20)
    sampler = EnvSampler(spec.worker_spec(0, 0), spec.policy)
    try:
        with pytest.raises(EnvStepError, match=r"allows no action") as caught:
            asyncio.run(sampler.collect(slots[0], policy_version=0))
    finally:
        sampler.close()
        slots.close()
    assert caught.value.env_index == 0 and caught.value.step == 2
    assert "env_error_limit=3" in caught.value.reason


# ---- training, restarts, evaluation ------------------------------------------------------------


@pytest.mark.asyncio(loop_factories=["uvloop"])
@pytest.mark.parametrize(
    ("algo", "recurrent"), [(PPO(), None), (APPO(), None), (PPO(), "lstm")], ids=["PPO", "APPO", "PPO-lstm"]
)
async def test_a_masked_env_that_raises_on_invalid_actions_trains_without_env_errors(algo, recurrent):
    options = {"num_workers": 2, "envs_per_worker": 8, "rollout_length": 16, "seed": 0, "recurrent": recurrent}
    trainer = Trainer(MaskedChoiceEnv, algo, recurrent_size=32, **options)
    result = await trainer.run(total_steps=60_000, target_return=9.0)
    assert result.reached_target, f"mean return {result.mean_return} after {result.env_steps} steps"
    assert trainer.stats.env_errors == 0


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_restarted_worker_acts_within_the_masks_from_its_first_step():
    env = functools.partial(FaultyEnv, MASKED_CHOICE_ENV_ID, "kill", at=30)
    async with Trainer(env, QUICK_PPO, **FAST) as trainer:
        async with asyncio.timeout(60):
            while trainer.stats.worker_restarts < 1:
                await trainer.run(total_steps=500)
        await trainer.run(total_steps=1_000)
        assert trainer.stats.worker_restarts == 1
        assert trainer.stats.env_errors == 0


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_mask_that_stays_bad_ends_the_run_with_an_env_error_and_no_restarts():
    env = functools.partial(MaskedChoiceEnv, bad_mask="none_valid", bad_mask_at=3, bad_mask_times=None)
    trainer = Trainer(env, QUICK_PPO, **FAST)
    with pytest.raises(EnvError, match=r"env \d, step 3.*InvalidActionMask: info\['action_mask'\] allows no action"):
        await trainer.run(total_steps=5_000)  # starts the workers: the error may come while they start
    assert trainer.stats.worker_restarts == 0


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_evaluation_plays_only_valid_actions():
    trainer = Trainer(MaskedChoiceEnv, QUICK_PPO, **SMALL)  # untrained: its favourite action is often invalid
    result = await trainer.evaluate(episodes=5)
    assert result.lengths == (10,) * 5
    stochastic = await trainer.evaluate(episodes=5, deterministic=False)
    assert stochastic.lengths == (10,) * 5


def untrained_policy(env: gym.Env) -> Policy:
    torch.manual_seed(3)
    encoder = ObservationEncoder.for_space(env.observation_space)
    dist = ActionDistribution.for_space(env.action_space)
    return Policy(ActorCritic(encoder.shape, dist), encoder, dist)


def test_policy_act_chooses_within_the_mask_it_is_given():
    env = MaskedChoiceEnv()
    policy = untrained_policy(env)
    obs, info = env.reset(seed=0)
    unmasked_invalid = 0
    for _ in range(200):
        mask = info["action_mask"]
        unmasked_invalid += not mask[policy.act(obs)]
        assert mask[policy.act(obs, action_mask=mask)]
        assert mask[policy.act(obs, deterministic=False, action_mask=mask)]
        obs, _, _, _, info = env.step(policy.act(obs, action_mask=mask))
    assert unmasked_invalid > 0, "the test needs a policy that would choose invalid actions unmasked"


def test_policy_play_passes_the_envs_masks():
    env = MaskedChoiceEnv(episode_length=20)
    result = untrained_policy(env).play(episodes=3, env=env)
    assert result.lengths == (20, 20, 20)


@pytest.mark.parametrize(
    ("bad_mask", "problem"),
    [
        ("missing", r"the info has no 'action_mask', but the env's first reset had one"),
        ("none_valid", r"info\['action_mask'\] allows no action"),
    ],
)
def test_policy_play_names_the_episode_and_step_of_a_missing_or_bad_mask(bad_mask, problem):
    env = MaskedChoiceEnv(bad_mask=bad_mask, bad_mask_at=3, bad_mask_times=None)
    with pytest.raises(InvalidActionMask, match=r"env 'MaskedChoiceEnv', episode 1, step 3: " + problem):
        untrained_policy(env).play(episodes=2, env=env)  # was: acted unmasked (the env raised InvalidAction)


def test_an_unmasked_policy_act_reaches_the_env_that_raises():
    env = MaskedChoiceEnv()
    policy = untrained_policy(env)
    obs, _ = env.reset(seed=0)
    with pytest.raises(InvalidAction):
        for _ in range(200):
            obs, *_ = env.step(policy.act(obs))


def test_policy_act_with_a_mask_for_a_box_action_space_is_a_config_error():
    env = gym.make("Pendulum-v1")
    with pytest.raises(ConfigError, match=r"action_mask was given, but gaussian actions cannot be masked"):
        untrained_policy(env).act(env.reset(seed=0)[0], action_mask=np.ones(1, np.int8))
