"""aiorl.Policy: a checkpoint's policy acts in this process, with no worker and no shared memory."""

from __future__ import annotations

import concurrent.futures

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import SMALL, leftover_workers, our_segments

from aiorl import APPO, ConfigError, Policy, Trainer
from aiorl.checkpoint import write_checkpoint
from aiorl.envs import EnvFactory
from aiorl.models import evaluate
from aiorl.testing import MASKED_CHOICE_ENV_ID


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_trained_policy_acts_without_worker_processes(tmp_path):
    path = tmp_path / "checkpoint.pt"
    trainer = Trainer("CartPole-v1", APPO(), **SMALL)
    await trainer.run(total_steps=1024, checkpoint_path=path)

    policy = Policy.load(path)
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    actions = []
    for _ in range(20):
        action = policy.act(obs)
        assert env.action_space.contains(action)
        with torch.no_grad():
            logits, _ = evaluate(trainer.policy, torch.as_tensor(obs, dtype=torch.float32)[None])
        actions.append((int(action), int(logits.argmax())))
        assert leftover_workers() == set() and our_segments() == []
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
    assert all(mine == trainers for mine, trainers in actions)  # the same network as the trainer's
    assert policy.policy_version == trainer.policy_version


def test_normalised_observations_and_box_actions_act_like_the_trainer_policy(tmp_path):
    trainer = Trainer("Pendulum-v1", normalize_observations=True, **SMALL)
    trainer.policy.observe(torch.randn(64, 3) * 3 + 1)  # running statistics away from the defaults
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(trainer.state_dict(), path)
    policy = Policy.load(path)
    space = gym.make("Pendulum-v1").observation_space

    for obs in (space.sample() for _ in range(10)):
        with torch.no_grad():
            dist_inputs, _ = evaluate(trainer.policy, torch.as_tensor(obs)[None])
        expected = np.clip(dist_inputs[0, :1].numpy(), -2.0, 2.0)
        np.testing.assert_allclose(policy.act(obs), expected, rtol=1e-5, atol=1e-7)  # layouts differ
        sampled = policy.act(obs, deterministic=False)
        assert sampled.shape == (1,) and -2.0 <= sampled[0] <= 2.0


def test_stochastic_play_with_one_seed_plays_the_same_episodes_and_leaves_the_global_generator_alone(tmp_path):
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(Trainer("CartPole-v1", **SMALL).state_dict(), path)
    policy = Policy.load(path)
    global_state = torch.get_rng_state()
    first = policy.play(4, seed=3, deterministic=False)
    assert torch.equal(torch.get_rng_state(), global_state)  # was: drawn from, from the caller's thread
    assert policy.play(4, seed=3, deterministic=False) == first  # was: other episodes every time
    assert policy.play(4, seed=4, deterministic=False) != first
    assert policy.play(np.int64(4), seed=np.int64(3), deterministic=False) == first  # numpy's numbers: Python's


@pytest.mark.parametrize("seed", [-1, "a", True])
def test_a_bad_play_seed_is_a_config_error_naming_it(tmp_path, seed):
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(Trainer("CartPole-v1", **SMALL).state_dict(), path)
    with pytest.raises(ConfigError, match=r"seed=.* must be an integer >= 0"):  # not torch's manual_seed error
        Policy.load(path).play(1, seed=seed, deterministic=False)


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_trainers_stochastic_evaluation_with_one_seed_plays_the_same_episodes():
    trainer = Trainer("CartPole-v1", **SMALL)
    global_state = torch.get_rng_state()
    first = await trainer.evaluate(episodes=4, deterministic=False, seed=3)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert await trainer.evaluate(episodes=4, deterministic=False, seed=3) == first


def test_play_runs_whole_episodes_and_hands_over_the_first_episodes_frames(tmp_path):
    from cli_envs import DrawnCartPole

    path = tmp_path / "checkpoint.pt"
    write_checkpoint(Trainer(DrawnCartPole, **SMALL).state_dict(), path)
    policy = Policy.load(path)
    frames = []

    result = policy.play(3, seed=5, on_frame=frames.append, env=policy.make_env("rgb_array"))

    assert result.episodes == 3 and all(length >= 1 for length in result.lengths)
    assert len(frames) == result.lengths[0] + 1  # the reset frame, then one per step
    assert frames[0].shape == (40, 96, 3)


def test_an_env_that_cannot_render_is_named(tmp_path):
    from cli_envs import plain_cartpole

    path = tmp_path / "checkpoint.pt"
    write_checkpoint(Trainer(plain_cartpole, **SMALL).state_dict(), path)
    with pytest.raises(ConfigError, match="plain_cartpole' does not render in that mode"):
        Policy.load(path).make_env("rgb_array")


def test_play_cuts_an_episode_that_never_ends_at_max_episode_steps():
    from aiorl.distributions import ActionDistribution
    from aiorl.envs import ObservationEncoder
    from aiorl.models import ActorCritic
    from aiorl.testing import EndlessEnv

    env = EndlessEnv(give_up_after=10_000)
    encoder = ObservationEncoder.for_space(env.observation_space)
    dist = ActionDistribution.for_space(env.action_space)
    policy = Policy(ActorCritic(encoder.shape, dist), encoder, dist, policy_version=4)
    frames: list[np.ndarray] = []

    result = policy.play(2, env=env, max_episode_steps=25, on_frame=frames.append)

    assert result.lengths == (25, 25) and result.returns == (25.0, 25.0)
    assert result.capped == 2 and result.policy_version == 4
    assert [int(frame[0, 0, 0]) for frame in frames] == list(range(26))  # the reset's frame, then each step's


def test_play_makes_a_registered_env_whose_constructor_takes_no_render_mode(tmp_path):
    trainer = Trainer(MASKED_CHOICE_ENV_ID, **SMALL)  # MaskedChoiceEnv(): no render_mode argument
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(trainer.state_dict(), path)
    result = Policy.load(path).play(episodes=2)  # was: TypeError, unexpected keyword 'render_mode'
    assert result.episodes == 2


class ThreeActionCartPole(gym.Wrapper):
    def __init__(self) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.action_space = gym.spaces.Discrete(3)


def test_play_refuses_an_env_whose_actions_are_not_the_policy_s(tmp_path):
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(Trainer("CartPole-v1", **SMALL).state_dict(), path)
    with pytest.raises(ConfigError, match=r"env's action_space is Discrete\(3\), but the policy's is Discrete\(2\)"):
        Policy.load(path).play(episodes=1, env=ThreeActionCartPole())  # played actions 0 and 1 only, in silence


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"env": "CartPole-v1"}, r"env='CartPole-v1' must be a gymnasium env .* make it first"),  # was: 'str' .close
        ({"on_frame": 5}, r"on_frame=5 must be callable"),  # was: 'int' object is not callable, mid-episode
    ],
)
def test_play_names_an_env_or_on_frame_it_cannot_use(tmp_path, arguments, problem):
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(Trainer("CartPole-v1", **SMALL).state_dict(), path)
    with pytest.raises(ConfigError, match=problem):
        Policy.load(path).play(episodes=1, **arguments)


def test_make_env_names_an_env_it_cannot_make_here():
    trainer = Trainer("CartPole-v1", **SMALL)
    gone = EnvFactory(env_id="mypackage/Registered-By-An-Import-v0")  # registered in the training process only
    policy = Policy(trainer.policy, trainer.obs_encoder, trainer.dist, env_factory=gone)
    with pytest.raises(ConfigError, match=r"env='mypackage/Registered-By-An-Import-v0' could not be made here: "):
        policy.make_env()  # was gymnasium's NamespaceNotFound (aiorl eval: a traceback, exit 1)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("gpu", r"device='gpu' is not a torch device"),
        ("meta", r"device='meta' must be a 'cpu' or 'cuda' device"),  # was: loaded, then failed in play()
        pytest.param(
            "cuda",
            r"device='cuda' but CUDA is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here"),
        ),
    ],
)
def test_policy_load_names_a_device_it_cannot_use(tmp_path, device, message):
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(Trainer("CartPole-v1", **SMALL).state_dict(), path)
    with pytest.raises(ConfigError, match=message):  # was torch's RuntimeError or AssertionError
        Policy.load(path, device=device)


def test_act_from_several_threads_at_once_gives_each_call_its_own_observation_s_action(tmp_path):
    # A server acts in handlers run in threads; the policy shared one input buffer, which
    # another call overwrote while torch (GIL released) read it: 8-60 of 4,000 actions were another's.
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(Trainer("CartPole-v1", **SMALL).state_dict(), path)
    policy = Policy.load(path)
    observations = np.random.default_rng(0).uniform(-2, 2, size=(4_000, 4)).astype(np.float32)
    expected = [policy.act(obs) for obs in observations]
    assert len(set(np.asarray(expected).tolist())) == 2  # both actions occur: a mix-up would show
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert list(pool.map(policy.act, observations)) == expected
