"""TOML experiment files map 1:1 onto the config dataclasses; every bad key or value is named."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from aiorl import APPO, ConfigError, TrainerConfig
from aiorl.config_file import build_experiment, load_experiment, resolve_env
from aiorl.presets import PRESETS


def write(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_tables_set_the_fields_of_their_dataclasses(tmp_path):
    path = write(
        tmp_path,
        """
        [run]
        env = "Pendulum-v1"
        algo = "appo"
        total_steps = 5000
        [env_kwargs]
        g = 9.81
        [trainer]
        num_workers = 3
        max_policy_lag = "none"
        [algo]
        rho_bar = 0.9
        """,
    )
    experiment = load_experiment(path)
    assert experiment.run.env == "Pendulum-v1" and experiment.run.total_steps == 5000
    assert experiment.env_kwargs == {"g": 9.81}
    assert experiment.trainer == TrainerConfig(num_workers=3, max_policy_lag=None)
    assert experiment.algo == APPO(rho_bar=0.9)


def test_every_unknown_key_and_bad_value_is_named(tmp_path):
    path = write(
        tmp_path,
        """
        [run]
        env = "CartPole-v1"
        [trainer]
        num_wrokers = 3
        seed = "zero"
        [algo]
        rho_bar = 0.9
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    assert caught.value.problems == [
        "algo.rho_bar: unknown key (PPO has no such field)",
        "trainer.num_wrokers: unknown key; did you mean 'num_workers'?",
        "trainer.seed='zero' must be an integer",
    ]


def test_an_unknown_table_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"\[trainr\] is not a config table; did you mean 'trainer'\?"):
        load_experiment(write(tmp_path, '[run]\nenv = "CartPole-v1"\n[trainr]\nnum_workers = 2\n'))


def test_bad_tables_keys_and_values_of_every_table_are_named_in_one_error(tmp_path):
    path = write(
        tmp_path,
        """
        [run]
        env = "CartPole-v1"
        total_step = 100
        checkpoint_interval_s = 0
        [trainr]
        num_workers = 2
        [trainer]
        num_workers = 0
        seeed = 1
        [algo]
        gamma = 2.0
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    problems = caught.value.problems
    assert problems[:3] == [
        "[trainr] is not a config table; did you mean 'trainer'?; tables: run, env_kwargs, trainer, algo",
        "run.total_step: unknown key; did you mean 'total_steps'?",
        "trainer.seeed: unknown key; did you mean 'seed'?",
    ]
    assert problems[3:] == [
        "run.checkpoint_interval_s=0 must be > 0",
        "algo.gamma=2.0 must be in [0, 1]",
        "trainer.num_workers=0 must be an integer >= 1",
    ]


def test_values_are_validated_by_the_dataclasses(tmp_path):
    with pytest.raises(ConfigError, match="num_workers=0 must be an integer >= 1"):
        load_experiment(write(tmp_path, '[run]\nenv = "CartPole-v1"\n[trainer]\nnum_workers = 0\n'))
    with pytest.raises(ConfigError, match=r"run\.algo='sac' must be one of \['appo', 'ppo'\]"):
        load_experiment(write(tmp_path, '[run]\nenv = "CartPole-v1"\nalgo = "sac"\n'))


def test_a_preset_is_the_base_that_the_file_and_the_flags_override():
    preset = PRESETS["Pendulum-v1"]
    experiment = build_experiment(
        {"run": {"preset": "Pendulum-v1"}, "algo": {"update_epochs": 3}, "trainer": {"seed": 4}},
        overrides={"trainer": {"seed": 7}},
    )
    assert experiment.run.env == "Pendulum-v1" and experiment.run.target_return == preset.target_return
    assert experiment.algo == dataclasses.replace(preset.algo, update_epochs=3)
    assert experiment.trainer.rollout_length == preset.options["rollout_length"]
    assert experiment.trainer.seed == 7


def test_a_preset_run_on_another_env_does_not_take_the_preset_s_target():
    experiment = build_experiment({"run": {"env": "CartPole-v1", "preset": "Pendulum-v1"}})
    assert experiment.run.env == "CartPole-v1" and experiment.run.target_return is None  # was Pendulum's -250
    assert experiment.algo == PRESETS["Pendulum-v1"].algo  # its settings still apply


def test_the_written_file_reads_back_to_the_same_experiment(tmp_path):
    experiment = build_experiment(
        {"run": {"env": "Acrobot-v1", "algo": "appo", "target_return": -100.0}, "trainer": {"max_policy_lag": "none"}}
    )
    assert load_experiment(write(tmp_path, experiment.to_toml())) == experiment


def test_an_env_is_required():
    with pytest.raises(ConfigError, match=r"run\.env is not set"):
        build_experiment({"trainer": {"seed": 1}})


@pytest.mark.parametrize(
    ("run", "problem"), [({"preset": "nosuch"}, "preset='nosuch' is unknown"), ({"env": 5}, "run.env=5 must be")]
)
def test_an_env_or_preset_given_but_bad_is_the_one_problem_named(run, problem):
    with pytest.raises(ConfigError) as caught:
        build_experiment({"run": run})
    assert len(caught.value.problems) == 1 and problem in caught.value.problems[0]  # was also "run.env is not set"


def test_differences_from_a_checkpoints_run_name_each_field_with_both_values():
    experiment = build_experiment({"run": {"env": "CartPole-v1"}, "trainer": {"num_workers": 3}})
    settled = dataclasses.replace(experiment.trainer, normalize_observations=True)  # automatic (None) here
    same = {"env": "CartPole-v1", "env_kwargs": {}, "algo": experiment.algo}
    assert experiment.differences(**same, trainer=settled) == []
    assert experiment.differences(
        env="Acrobot-v1",
        env_kwargs={"g": 9.8},
        algo=dataclasses.replace(experiment.algo, gamma=0.9),
        trainer=dataclasses.replace(settled, num_workers=2),
    ) == [
        "run.env = 'CartPole-v1' in config.toml, 'Acrobot-v1' in the checkpoint",
        "env_kwargs = {} in config.toml, {'g': 9.8} in the checkpoint",
        "algo.gamma = 0.99 in config.toml, 0.9 in the checkpoint",
        "trainer.num_workers = 3 in config.toml, 2 in the checkpoint",
    ]
    assert experiment.differences(**{**same, "algo": APPO()}, trainer=settled) == [
        "run.algo = 'ppo' in config.toml, 'appo' in the checkpoint"
    ]


@pytest.mark.parametrize(
    ("source", "env", "message"),
    [
        ("raise RuntimeError('no licence server')", "broken_env_module:make", r"RuntimeError: no licence server"),
        ("def make(:\n", "broken_env_module:make", r"SyntaxError"),
        ("", ":make", r"cannot import module ''"),
    ],
)
def test_an_env_module_that_fails_to_import_is_a_config_error(tmp_path, monkeypatch, source, env, message):
    (tmp_path / "broken_env_module.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "broken_env_module", raising=False)
    with pytest.raises(ConfigError, match=message):  # was the module's traceback, exit 1
        resolve_env(env)


def test_none_in_config_toml_differs_from_a_checkpoint_s_value_unless_the_trainer_chose_it():
    experiment = build_experiment({"run": {"env": "CartPole-v1"}, "trainer": {"max_policy_lag": "none"}})
    checkpoint = dataclasses.replace(experiment.trainer, max_policy_lag=4, normalize_observations=True)
    differences = experiment.differences(env="CartPole-v1", env_kwargs={}, algo=experiment.algo, trainer=checkpoint)
    # None is "no limit" for max_policy_lag (was skipped: the edit went unnoticed), "automatic" for
    # normalize_observations (the trainer chose True: no difference).
    assert differences == ["trainer.max_policy_lag = None in config.toml, 4 in the checkpoint"]
