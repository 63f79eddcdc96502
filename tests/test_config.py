"""Bad input raises a clear ValueError naming the field and value, before any process starts."""

from __future__ import annotations

import subprocess
import sys
import threading

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import leftover_workers, our_segments
from torch import nn

import aiorl
from aiorl import PPO, ConfigError, Trainer
from aiorl.distributions import ActionDistribution
from aiorl.models import ObservationNormalizer
from aiorl.testing import stacked_noise_frames


@pytest.fixture(autouse=True)
def starts_nothing():
    before = leftover_workers()
    yield
    assert leftover_workers() == before
    assert our_segments() == []


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"num_workers": 0}, "num_workers=0"),
        ({"envs_per_worker": -3}, "envs_per_worker=-3"),
        ({"rollout_length": 2.5}, "rollout_length=2.5"),
        ({"max_policy_lag": -1}, "max_policy_lag=-1"),
        ({"start_method": "fork"}, "start_method='fork'"),
        ({"heartbeat_interval_s": float("nan")}, "heartbeat_interval_s=nan"),
        ({"device": "tpu:banana"}, "device='tpu:banana'"),
        ({"worker_device": "tpu:banana"}, "worker_device='tpu:banana' is not a torch device"),
        ({"worker_device": "meta"}, "worker_device='meta' must be a 'cpu' or 'cuda' device"),
        ({"device": "mps"}, "device='mps' must be a 'cpu' or 'cuda' device"),  # was torch's RuntimeError
        ({"device": "xpu"}, "device='xpu' must be a 'cpu' or 'cuda' device"),  # was an AssertionError
        ({"worker_device": "cuda", "backend": "ray"}, "worker_device='cuda' needs local workers (backend='local')"),
        pytest.param(
            {"worker_device": "cuda"},
            "worker_device='cuda' but CUDA is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here"),
        ),
        ({"num_wokers": 2}, "num_wokers=2 is not a Trainer option"),
        ({"act_wait_s": True}, "act_wait_s=True must be a finite number of seconds >= 0"),  # was taken as 1 s
        ({"env_timeout_s": True}, "env_timeout_s=True must be a finite number of seconds > 0"),
        ({"seed": -1}, "seed=-1 must be an integer in [0, 2**63)"),  # gymnasium refused it in the workers
        ({"seed": 2**70}, "must be an integer in [0, 2**63)"),  # torch could not take it
    ],
)
def test_bad_trainer_option_names_field_and_value(options, needle):
    with pytest.raises(ValueError, match=None) as info:
        Trainer("CartPole-v1", **options)
    assert isinstance(info.value, ConfigError)
    assert needle in str(info.value)


def test_numpy_numbers_are_taken_as_pythons_own_and_still_checked():
    # Sweeps often pass seeds and sizes from numpy (for seed in np.arange(3)).
    algo = PPO(update_epochs=np.int64(2), learning_rate=np.float64(1e-3), normalize_advantages=np.bool_(False))
    trainer = Trainer("CartPole-v1", seed=np.int64(3), num_workers=np.int32(1), algo=algo)
    assert type(trainer.config.seed) is int and trainer.config.seed == 3
    assert type(trainer.config.num_workers) is int and type(algo.update_epochs) is int
    assert type(algo.learning_rate) is float and algo.normalize_advantages is False
    with pytest.raises(ConfigError, match=r"seed=-1 must be an integer in \[0, 2\*\*63\)"):
        Trainer("CartPole-v1", seed=np.int64(-1))


def test_a_mistyped_option_names_the_close_match_along_with_the_other_problems():
    with pytest.raises(ConfigError) as info:
        Trainer("CartPole-v1", num_worker=2, envs_per_worker=0, colour="red")
    assert info.value.problems == [
        "colour='red' is not a Trainer option",
        "num_worker=2 is not a Trainer option; did you mean 'num_workers'?",
        "envs_per_worker=0 must be an integer >= 1",
    ]


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as info:
        Trainer("CartPole-v1", num_workers=0, envs_per_worker=0)
    assert "num_workers=0" in str(info.value) and "envs_per_worker=0" in str(info.value)
    assert len(info.value.problems) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [("learning_rate", -0.001), ("gamma", 1.5), ("update_epochs", 0), ("clip_coef", 0.0), ("lr_schedule", "cosine")],
)
def test_bad_ppo_hyperparameter(field, value):
    with pytest.raises(ValueError, match=rf"PPO\.{field}={value!r}"):
        PPO(**{field: value})


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"normalize_advantages": "False"}, "PPO.normalize_advantages='False' must be True or False"),  # truthy
        ({"clip_value_loss": "no"}, "PPO.clip_value_loss='no' must be True or False"),
        ({"target_kl": "0.1"}, "PPO.target_kl='0.1' must be > 0 or None"),
        ({"target_kl": True}, "PPO.target_kl=True must be > 0 or None"),
    ],
)
def test_ppo_options_of_the_wrong_type_are_config_errors(options, needle):
    with pytest.raises(ConfigError) as info:
        PPO(**options)
    assert needle in str(info.value)


def test_minibatches_of_one_sample_are_refused_as_they_would_learn_nothing():
    small = {"num_workers": 1, "envs_per_worker": 4, "rollout_length": 8}  # batches of 32 steps
    with pytest.raises(ConfigError, match=r"algo.num_minibatches=64 splits the batch of 32 env steps .* at most 16"):
        Trainer("CartPole-v1", PPO(num_minibatches=64), **small)  # trained with every advantage 0
    assert Trainer("CartPole-v1", PPO(num_minibatches=16), **small).config.batch_steps == 32


def test_an_integer_discount_is_a_discount():
    assert Trainer("CartPole-v1", PPO(gamma=1)).config.normalize_rewards is True  # as with gamma=1.0


def test_unknown_env_id_suggests_close_names():
    with pytest.raises(ValueError, match=r"env='CartPole-v2' is not a registered gymnasium id.*CartPole-v1"):
        Trainer("CartPole-v2")


def test_unpicklable_env_factory():
    with pytest.raises(ValueError, match=r"cannot be pickled"):
        Trainer(lambda: gym.make("CartPole-v1"))


class TextActionEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    action_space = gym.spaces.Text(max_length=4)


def test_unsupported_action_space():
    with pytest.raises(ValueError, match=r"action_space=Text.* is not supported"):
        Trainer(TextActionEnv)


class IntegerBoxActionEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    action_space = gym.spaces.Box(0, 10, (2,), np.int64)


def async_vector_cartpole() -> gym.vector.VectorEnv:
    return gym.make_vec("CartPole-v1", 2, vectorization_mode="async")


def wrapped_async_vector_cartpole() -> gym.vector.VectorEnv:
    return gym.wrappers.vector.RecordEpisodeStatistics(async_vector_cartpole())


@pytest.mark.parametrize("factory", [async_vector_cartpole, wrapped_async_vector_cartpole], ids=["bare", "wrapped"])
def test_a_gymnasium_async_vector_env_is_refused_before_workers_fail_to_start_it(factory):
    with pytest.raises(ConfigError, match=r"returned a gymnasium AsyncVectorEnv, whose env processes a worker"):
        Trainer(factory)  # wrapped, it was accepted, and failed in the workers ("daemonic processes ...")


class NoSubEnvs(gym.vector.VectorEnv):
    """A vector env of no sub-envs."""

    def __init__(self) -> None:
        self.num_envs = 0
        self.single_observation_space = gym.spaces.Box(-1, 1, (2,))
        self.single_action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, 0)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, 0)


def test_a_vector_env_of_no_sub_envs_is_refused_naming_num_envs():
    with pytest.raises(ConfigError, match=r"returned a vector env with num_envs=0: it must step at least one"):
        Trainer(NoSubEnvs)  # was: "algo.num_minibatches=2 splits the batch of 0 env steps ..."


def test_a_policy_that_cannot_be_pickled_is_refused_before_workers_start():
    policy = aiorl.ActorCritic((4,), ActionDistribution.for_space(gym.spaces.Discrete(2)))
    policy.squash = lambda x: x  # a lambda cannot travel to a worker process
    with pytest.raises(ConfigError, match=r"policy=ActorCritic\(...\) cannot be pickled .*lambda"):
        Trainer("CartPole-v1", policy=policy)  # was: multiprocessing's AttributeError when run() started workers


class NoParameters(torch.nn.Module):
    """A policy with nothing to train: fixed logits and value."""

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(len(obs), 2), torch.zeros(len(obs))


@pytest.mark.parametrize("normalize_observations", [True, False])
def test_a_policy_without_parameters_is_named_not_aiorl_s_wrapper(normalize_observations):
    with pytest.raises(
        ConfigError, match=r"policy=NoParameters has no parameters to train"
    ):  # was ObservationNormalizer
        Trainer("CartPole-v1", policy=NoParameters(), normalize_observations=normalize_observations)


def test_an_integer_box_action_space_is_rejected_not_given_float_actions():
    with pytest.raises(ConfigError, match=r"a Box of int64 would get Gaussian \(float\) actions.*MultiDiscrete"):
        Trainer(IntegerBoxActionEnv)


def test_an_ale_id_points_to_the_preset_and_atari_env(monkeypatch):
    unregistered = {name: spec for name, spec in gym.registry.items() if not name.startswith("ALE/")}
    monkeypatch.setattr(gym, "registry", unregistered)  # as before ale-py is imported (another test may have)
    with pytest.raises(ConfigError, match=r"Trainer.from_preset\('ALE/Pong-v5'\).*AtariEnv"):
        Trainer("ALE/Pong-v5")


def test_a_mistyped_preset_name_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"preset='CartPole-v2' is unknown; did you mean 'CartPole-v1'\?"):
        Trainer.from_preset("CartPole-v2")


class OldGymResetEnv(gym.Env):
    """Returns the observation alone from ``reset`` (the gym < 0.26 API)."""

    observation_space = gym.spaces.Box(-1, 1, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return np.zeros(4, np.float32)


class WrongShapeResetEnv(OldGymResetEnv):
    def reset(self, *, seed=None, options=None):
        return np.zeros(5, np.float32), {}


class FloatFramesInABytesSpaceEnv(OldGymResetEnv):
    """Declares uint8 observations, returns frames scaled to [0, 1]: they would be stored as all zeros."""

    observation_space = gym.spaces.Box(0, 255, (4,), np.uint8)

    def reset(self, *, seed=None, options=None):
        return np.full(4, 0.5, np.float32), {}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            OldGymResetEnv,
            r"reset\(\) returned ndarray array\(\[0., 0., 0., 0.\].*\), expected a tuple \(observation, info",
        ),
        (WrongShapeResetEnv, r"reset\(\) returned an observation that does not fit .*shape \(5,\)"),
        (FloatFramesInABytesSpaceEnv, r"does not fit .*float32 with values other than whole numbers in \[0, 255\]"),
    ],
)
def test_what_the_probe_env_s_reset_returns_is_checked_before_any_worker_starts(env, message):
    with pytest.raises(ConfigError, match=message):
        Trainer(env)
    assert not leftover_workers()


class WrongHeadPolicy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 3)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.layer(obs), obs.sum(-1)


def test_policy_output_shape_must_match_action_space():
    with pytest.raises(ValueError, match=r"dist_inputs of shape \(2, 3\), expected \(2, 2\)"):
        Trainer("CartPole-v1", policy=WrongHeadPolicy())


class IntegerLogitsPolicy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.critic = nn.Linear(4, 1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros((len(obs), 2), dtype=torch.int64), self.critic(obs).squeeze(-1)


class BatchNormPolicy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
        self.actor, self.critic = nn.Linear(8, 2), nn.Linear(8, 1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.body(obs)
        return self.actor(hidden), self.critic(hidden).squeeze(-1)


def test_policy_outputs_must_be_floating_point_tensors():
    with pytest.raises(
        ValueError, match=r"policy=IntegerLogitsPolicy returned dist_inputs as a tensor of dtype torch.int64"
    ):
        Trainer("CartPole-v1", policy=IntegerLogitsPolicy())


def test_a_policy_must_also_run_on_one_observation_as_workers_do():
    with pytest.raises(
        ValueError, match=r"policy=BatchNormPolicy failed on a dummy observation batch of shape \(1, 4\)"
    ):
        Trainer("CartPole-v1", policy=BatchNormPolicy())


def test_algo_must_be_an_algorithm_config():
    with pytest.raises(ValueError, match=r"algo="):
        Trainer("CartPole-v1", algo={"learning_rate": 1e-3})


def test_an_algorithm_class_is_refused_with_the_instance_to_pass():
    with pytest.raises(ConfigError, match=r"algo=PPO is a class: pass an instance, such as PPO\(\)"):
        Trainer("CartPole-v1", PPO)  # was: "make_learner() missing 1 required positional argument"


@pytest.mark.parametrize("env_kwargs", [[1, 2], "abc", {1: "x"}])
def test_env_kwargs_that_are_no_keyword_arguments_are_named(env_kwargs):
    with pytest.raises(ConfigError, match=r"env_kwargs=.* must be a dict of keyword arguments"):
        Trainer("CartPole-v1", env_kwargs=env_kwargs)  # was: dict()'s TypeError or ValueError


def test_a_preset_name_that_is_no_string_is_named():
    with pytest.raises(ConfigError, match=r"preset=None must be a preset's name \(a str\): one of .*CartPole-v1"):
        Trainer.from_preset(None)  # type: ignore[arg-type]  # was: difflib's TypeError


def test_an_unknown_trainer_config_field_is_named_with_the_closest_one():
    with pytest.raises(ConfigError, match=r"num_workerz=1 is not a TrainerConfig option; did you mean 'num_workers'"):
        aiorl.TrainerConfig(num_workerz=1)  # type: ignore[call-arg]  # was: dataclass's plain TypeError


def test_strict_on_policy_batch_must_fit_in_slots():
    with pytest.raises(ValueError, match=r"rollouts_per_batch=5 exceeds the 4 slots"):
        Trainer("CartPole-v1", max_policy_lag=0, rollouts_per_batch=5)


def test_strict_on_policy_batch_must_use_every_worker():
    with pytest.raises(ValueError, match=r"rollouts_per_batch=1 with num_workers=3 .* 2 worker\(s\) would never"):
        Trainer("CartPole-v1", max_policy_lag=0, rollouts_per_batch=1, num_workers=3)


@pytest.mark.asyncio(loop_factories=["asyncio"])
@pytest.mark.parametrize("total_steps", [0, -5, 1.5])
async def test_bad_total_steps(total_steps):
    trainer = Trainer("CartPole-v1")
    with pytest.raises(ValueError, match=rf"total_steps={total_steps!r}"):
        await trainer.run(total_steps=total_steps)


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_numpy_run_and_sample_arguments_are_taken_as_pythons_own():
    async with Trainer("CartPole-v1", num_workers=1, envs_per_worker=4, seed=1) as trainer:
        taken = await trainer.sample(np.int64(256))  # was refused: an np.int64 is no int
        result = await trainer.run(
            total_steps=np.int64(512), target_return=np.float32(1e9), checkpoint_interval_s=np.float32(60)
        )
    assert taken > 0 and result.env_steps >= 512
    with pytest.raises(ConfigError, match=r"total_steps=0 must be an integer >= 1"):
        await trainer.run(total_steps=np.int64(0))


@pytest.mark.asyncio(loop_factories=["asyncio"])
@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"target_return": True}, "target_return=True must be a finite number or None"),  # was: a target of 1
        ({"checkpoint_interval_s": True}, "checkpoint_interval_s=True must be a number of seconds > 0"),
        ({"checkpoint_path": 123}, "checkpoint_path=123 must be a path"),  # was: pathlib's TypeError
    ],
)
async def test_bad_run_arguments_are_named_before_anything_starts(arguments, problem):
    trainer = Trainer("CartPole-v1", num_workers=1)
    with pytest.raises(ConfigError, match=problem):
        await trainer.run(total_steps=1_000, **arguments)
    assert trainer.stats.steps_collected == 0


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_checkpoint_name_too_long_for_the_file_system_is_a_checkpoint_error(tmp_path):
    trainer = Trainer("CartPole-v1", num_workers=1)
    too_long = tmp_path / ("c" * 300 + ".pt")
    with pytest.raises(aiorl.CheckpointError, match=r"checkpoints cannot be written to .*File name too long"):
        await trainer.run(total_steps=1_000, checkpoint_path=too_long)  # was: a raw OSError
    with pytest.raises(aiorl.CheckpointError, match=r"checkpoints cannot be written to .*File name too long"):
        await trainer.save(too_long)
    with pytest.raises(ConfigError, match="path=123 must be a path"):
        await trainer.save(123)  # type: ignore[arg-type]


async def report_later(report):
    return report


@pytest.mark.asyncio(loop_factories=["asyncio"])
@pytest.mark.parametrize(
    ("on_update", "problem"),
    [
        (report_later, r"on_update=<function report_later .*> is called on the loop .* must not be async"),
        ("print", r"on_update='print' must be callable"),
        (lambda: None, r"on_update=<function <lambda> .*> must take one argument"),  # was: a TypeError after an update
    ],
)
async def test_an_async_or_uncallable_on_update_is_refused_before_anything_starts(on_update, problem):
    trainer = Trainer("CartPole-v1", num_workers=1)
    with pytest.raises(ConfigError, match=problem):  # was: never awaited (async), or a TypeError after an update
        await trainer.run(total_steps=1_000, on_update=on_update)
    assert trainer.stats.steps_collected == 0


class Reporter:
    """A callable object whose call returns a coroutine: not seen as async before it is called."""

    def __call__(self, report):
        return report_later(report)


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_an_on_update_that_returns_an_awaitable_ends_the_run_saying_why(recwarn):
    trainer = Trainer("CartPole-v1", num_workers=1, envs_per_worker=4, rollout_length=16)
    with pytest.raises(ConfigError, match=r"on_update=.*Reporter.* returned an awaitable: it is called on the loop"):
        await trainer.run(total_steps=10_000, on_update=Reporter())
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


def test_defaults_build_a_ppo_trainer():
    trainer = aiorl.Trainer("CartPole-v1")
    assert isinstance(trainer.algo, PPO)
    assert trainer.config.num_workers >= 1


@pytest.mark.parametrize(
    ("env", "observations"),
    [("CartPole-v1", True), ("Pendulum-v1", True), ("FrozenLake-v1", False)],
)
def test_normalisation_is_chosen_for_the_env_when_left_automatic(env, observations):
    trainer = Trainer(env)
    assert trainer.config.normalize_observations is observations  # flat float Box observations only
    assert trainer.config.normalize_rewards is True  # PPO has a discount
    assert isinstance(trainer.policy, ObservationNormalizer) is observations


def test_normalisation_set_by_the_user_is_kept():
    trainer = Trainer("CartPole-v1", normalize_observations=False, normalize_rewards=False)
    assert trainer.config.normalize_observations is False and trainer.config.normalize_rewards is False
    assert trainer.reward_normalizer is None


def test_the_learner_gets_every_core_for_images_on_the_cpu_and_fewer_otherwise():
    cores = aiorl.config.usable_cores()
    assert Trainer(stacked_noise_frames, num_workers=2).learner_threads == cores  # a CNN's update parallelises
    assert Trainer("CartPole-v1", num_workers=2).learner_threads == 1  # a small MLP: see below
    assert Trainer(stacked_noise_frames, num_workers=2, learner_threads=1).learner_threads == 1  # given: kept
    assert Trainer(stacked_noise_frames, num_workers=2).config.learner_threads is None  # chosen where it runs


def test_aiorl_s_small_mlp_learns_on_one_thread_and_other_policies_on_the_cores_the_workers_leave(monkeypatch):
    monkeypatch.setattr(aiorl.config, "usable_cores", lambda: 16)
    # aiorl's 64x64 MLP: one thread whatever the batch (see aiorl.config.SMALL_MLP_UNITS).
    assert Trainer("CartPole-v1", num_workers=2).learner_threads == 1
    assert Trainer("CartPole-v1", num_workers=2, envs_per_worker=512).learner_threads == 1  # 16,384-row minibatches
    assert Trainer("CartPole-v1", num_workers=2, normalize_observations=True).learner_threads == 1  # normalised
    # Wider layers and other policies: the cores the workers leave; images: every core.
    wide = aiorl.ActorCritic((4,), ActionDistribution.for_space(gym.spaces.Discrete(2)), hidden_sizes=(256, 256))
    assert Trainer("CartPole-v1", num_workers=2, policy=wide).learner_threads == 14
    assert Trainer("CartPole-v1", num_workers=2, policy=WideMLP()).learner_threads == 14
    assert Trainer(stacked_noise_frames, num_workers=2).learner_threads == 16
    assert Trainer("CartPole-v1", num_workers=2, learner_threads=3).learner_threads == 3  # given: kept


class WideMLP(nn.Module):
    """A user's policy for CartPole: one 256-unit layer, logits and value from one head."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 256), nn.Tanh(), nn.Linear(256, 3))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(obs)
        return out[:, :2], out[:, 2]


def test_an_algorithm_without_a_discount_gets_no_reward_normalisation():
    class NoDiscount:
        def make_learner(self, policy, dist, device):
            return PPO().make_learner(policy, dist, device)

    assert Trainer("CartPole-v1", NoDiscount()).config.normalize_rewards is False
    with pytest.raises(ConfigError, match=r"normalize_rewards=True needs the algorithm's discount"):
        Trainer("CartPole-v1", NoDiscount(), normalize_rewards=True)


@pytest.mark.parametrize("value", [1, "yes"])
def test_normalisation_must_be_a_bool_or_none(value):
    with pytest.raises(ConfigError, match=rf"normalize_observations={value!r} must be True, False or None"):
        Trainer("CartPole-v1", normalize_observations=value)


CLOSING, RELEASE, CLOSED = threading.Event(), threading.Event(), threading.Event()


class SlowToClose(gym.Wrapper):
    """CartPole whose ``close`` waits until the test releases it (as a simulator's shutdown might)."""

    def __init__(self) -> None:
        super().__init__(gym.make("CartPole-v1"))

    def close(self) -> None:
        CLOSING.set()
        RELEASE.wait(timeout=30)
        CLOSED.set()
        super().close()


def test_building_a_trainer_does_not_wait_for_the_probed_env_to_close():
    try:
        Trainer(SlowToClose)  # probes one env for its spaces, then closes it
        assert CLOSING.wait(timeout=30), "the probed env was never closed"
        assert not CLOSED.is_set(), "Trainer() waited for the probed env's close"
    finally:
        RELEASE.set()
    assert CLOSED.wait(timeout=30)


FAILS_TO_RESET_AND_CLOSES_SLOWLY = """
import sys, time
import gymnasium as gym
import aiorl

class Broken(gym.Wrapper):
    def __init__(self):
        super().__init__(gym.make("CartPole-v1"))

    def reset(self, **kwargs):
        return "not an observation", {}

    def close(self):  # as a simulator's shutdown might: slow, and it must happen
        time.sleep(1.0)
        open(sys.argv[1], "w").close()

if __name__ == "__main__":
    aiorl.Trainer(Broken)  # the probe's reset is refused: ConfigError, and the script exits at once
"""


def test_a_script_that_exits_right_after_trainer_raised_still_closes_the_probed_env(tmp_path):
    script, closed = tmp_path / "broken.py", tmp_path / "closed"
    script.write_text(FAILS_TO_RESET_AND_CLOSES_SLOWLY)
    done = subprocess.run([sys.executable, str(script), str(closed)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "ConfigError" in done.stderr, done.stderr
    assert closed.exists(), "the interpreter exited while the probed env was still closing"


def test_more_local_workers_than_the_machine_can_run_is_rejected_before_any_process_starts():
    with pytest.raises(ValueError, match=r"num_workers=10000 local worker processes on \d+ usable cores: at most"):
        Trainer("CartPole-v1", num_workers=10_000)


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_shared_memory_that_cannot_fit_in_dev_shm_is_a_config_error_at_start():
    trainer = Trainer("CartPole-v1", envs_per_worker=10**7)  # 32 steps x 10M envs x ~50 bytes: tens of GB per slot
    with pytest.raises(ConfigError, match=r"needs [\d,]+ bytes but /dev/shm has [\d,]+ free"):
        await trainer.run(total_steps=1_000)
    assert trainer.worker_pids == {}


@pytest.mark.parametrize("algo", [PPO, aiorl.APPO])
def test_a_mistyped_algorithm_option_is_a_config_error_naming_the_closest_field(algo):
    with pytest.raises(ConfigError) as caught:
        algo(learnig_rate=1e-3, gama=0.9, clip_coef=0.1)
    assert caught.value.problems == [
        f"gama=0.9 is not a {algo.__name__} option; did you mean 'gamma'?",
        f"learnig_rate=0.001 is not a {algo.__name__} option; did you mean 'learning_rate'?",
    ]
    assert algo(learning_rate=1e-3).learning_rate == 1e-3
