"""Wall-clock time to solve a task: aiorl's presets and defaults against Stable-Baselines3 PPO with rl-zoo3's settings.

What is measured
----------------
Seconds of wall time until the mean return of the last 20 finished training
episodes first reaches the task's target, and the env steps collected by then:

- ``CartPole-v1``, target 475;
- ``Pendulum-v1``, target -250;
- ``Taxi-v4`` with its ``info["action_mask"]``, target 5 (gymnasium 1.x renamed
  ``Taxi-v3`` to ``Taxi-v4``), against sb3-contrib's ``MaskablePPO``; aiorl is
  also run with the masks stripped from the infos (``aiorl unmasked``, the preset's
  settings), for comparison;
- ``aiorl/CartPoleNoVel-v1`` (CartPole-v1 observing only the cart position and the
  pole angle, a memory task; :class:`aiorl.testing.memory.CartPoleNoVelocity`), target
  475: aiorl with ``recurrent="lstm"`` against sb3-contrib's ``RecurrentPPO`` with
  rl-zoo3's ``CartPoleNoVel-v1`` settings (``hyperparams/ppo_lstm.yml``; the zoo's
  env zeroes the velocities where this one drops them, the same information).

Per task the median over ``--seeds`` seeds (default 3) is reported for each
system, with the ratio aiorl / SB3 of the medians (the goal is <= 0.5 for the
presets and <= 1.0 for the defaults).

Systems
-------
- ``aiorl preset``: ``aiorl.Trainer.from_preset(task, seed=seed)`` (the settings in
  ``aiorl/presets.py``); ``aiorl defaults``: ``aiorl.Trainer(task, num_workers=2,
  seed=seed)``, what a user gets who never looks for a preset (``--aiorl`` picks
  either or both); then ``trainer.run(total_steps=1_000_000, target_return=target)``.
  Episodes are counted by the trainer (its ``return_window`` is 20). Note that aiorl's linear learning-rate schedule is
  spread over the ``total_steps`` given to ``run()``.
- ``SB3`` (Taxi: ``sb3_contrib.MaskablePPO``, see ``TASKS``; rl-zoo3 has no
  hyperparameters for Taxi, and MaskablePPO's defaults, one env and 2048-step rollouts
  of 10 epochs, had not reached the target after 20 minutes here, so it runs with the
  settings in ``TASKS``, its mask read by ``sb3_contrib``'s ``ActionMasker`` from
  ``Taxi.action_mask(state)``, the same mask the env puts into its info):
  ``stable_baselines3.PPO`` with the hyperparameters of rl-zoo3's
  ``hyperparams/ppo.yml`` (copied below in ``TASKS``; checked against the
  rl-zoo3 2.9.2 wheel), on ``make_vec_env(task, n_envs, seed=seed)``, i.e. a
  ``DummyVecEnv`` of ``Monitor``-wrapped envs as the zoo builds it. ``lin_X``
  values are the zoo's ``linear_schedule(X)`` (``progress_remaining * X``). A
  callback reads the ``Monitor`` episode returns after every env step and stops
  ``learn()`` (returns ``False``) as soon as the last 20 average the target.
  Everything else is left at SB3's defaults, torch's intra-op thread count
  included (``--sb3-threads N`` sets it instead: with other load on the machine
  SB3's default of one thread per core can be several times slower).
  Budget: for tasks with linear schedules the zoo's ``n_timesteps`` (the
  schedules reach 0 there, so nothing more could be learned); otherwise
  ``--sb3-budget`` (default 3) times ``n_timesteps``.

How
---
Everything runs in one process tree on the same machine, interleaved: for each
seed, each task runs aiorl's systems then SB3 (odd seed indices: the reverse), so that
drifting background load hits both systems alike. Two wall times are taken per
run with ``time.perf_counter``:

- ``time to solve`` (the headline, and the one the ratio uses): from before the
  trainer / model is built until training stops. For aiorl this includes
  building the trainer, starting the worker processes (``async with trainer``)
  and training; for SB3 building the vector env and the model, and ``learn()``.
  Shutdown after the target is reached is not counted (aiorl's is reported).
- ``training``: aiorl's ``TrainResult.wall_time`` (inside ``run()``, workers
  already up) and the wall time of SB3's ``learn()`` alone.

The learner's share of training time is reported too: for aiorl the sum of the
``update_s`` of every ``on_update`` report (updates run in a thread while the
workers keep sampling), for SB3 the time spent outside rollout collection
(``learn()`` minus the time between ``on_rollout_start`` and ``on_rollout_end``).

Other processes busy on the machine distort the numbers. On Linux the CPU that
processes outside this benchmark used during each run is measured from
``/proc`` and reported as "other load"; before each run the script waits (up to
``--quiet-wait`` seconds) for the machine to be idle, and a run during which other
processes used ``QUIET_LOAD`` cores or more is run again (``--busy-retries``, default 2;
the last attempt is kept): SB3 with torch's default thread count took 2-5x longer with
0.6-0.9 cores busy elsewhere.

Run it (about 15-25 minutes on 2 cores; ``--quick`` runs one seed)::

    python benchmarks/time_to_solve.py
    python benchmarks/time_to_solve.py --quick
    python benchmarks/time_to_solve.py --seeds 5 --tasks CartPole-v1

It needs ``stable-baselines3`` and ``sb3-contrib`` (``pip install "aiorl[bench]"``). It prints a
markdown summary table, per-seed rows and the setup to stdout; progress goes to
stderr.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from other_load import OtherLoadMeter, busy_warning, print_footer

import aiorl

try:
    import sb3_contrib
    import stable_baselines3 as sb3
    from sb3_contrib.common.wrappers import ActionMasker
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import VecNormalize
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("this benchmark needs stable-baselines3 and sb3-contrib: pip install 'aiorl[bench]'")

RETURN_WINDOW = 20
"""Finished episodes averaged for the 'solved' test, for both systems."""
AIORL_TOTAL_STEPS = 1_000_000
"""aiorl's budget (``trainer.run(total_steps=...)``)."""
QUIET_LOAD = 0.3
"""Other processes' CPU use (cores) below which the machine counts as idle."""
TARGET_RATIO = 0.5
"""Goal: aiorl's median time to solve / SB3's <= this."""


@dataclass(frozen=True, slots=True)
class Task:
    """A task, its target and rl-zoo3's PPO hyperparameters for it (``hyperparams/ppo.yml``)."""

    env: str
    target: float
    zoo: dict[str, Any]
    baseline: str = "PPO"
    """The SB3 algorithm: ``"PPO"``, or sb3-contrib's ``"MaskablePPO"`` (the env's action masks)
    or ``"RecurrentPPO"``."""
    aiorl_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Trainer options of the ``aiorl defaults`` system besides ``num_workers=2`` (``recurrent``)."""

    @property
    def masked(self) -> bool:
        """Whether the task's env gives action masks (and aiorl is also run without them)."""
        return self.baseline == "MaskablePPO"

    @property
    def scheduled(self) -> bool:
        """Whether a zoo hyperparameter is a linear schedule (``lin_X``)."""
        return any(isinstance(v, str) and v.startswith("lin_") for v in self.zoo.values())


TASKS: dict[str, Task] = {
    # rl-zoo3 2.9.2, hyperparams/ppo.yml
    "CartPole-v1": Task(
        env="CartPole-v1",
        target=475.0,
        zoo={
            "n_envs": 8,
            "n_timesteps": 100_000,
            "policy": "MlpPolicy",
            "n_steps": 32,
            "batch_size": 256,
            "gae_lambda": 0.8,
            "gamma": 0.98,
            "n_epochs": 20,
            "ent_coef": 0.0,
            "learning_rate": "lin_0.001",
            "clip_range": "lin_0.2",
        },
    ),
    "Pendulum-v1": Task(
        env="Pendulum-v1",
        target=-250.0,
        zoo={
            "n_envs": 4,
            "n_timesteps": 100_000,
            "policy": "MlpPolicy",
            "n_steps": 1024,
            "gae_lambda": 0.95,
            "gamma": 0.9,
            "n_epochs": 10,
            "ent_coef": 0.0,
            "learning_rate": 1e-3,
            "clip_range": 0.2,
            "use_sde": True,
            "sde_sample_freq": 4,
        },
    ),
    # Not in rl-zoo3: MaskablePPO's defaults (1 env, n_steps 2048, 10 epochs, lr 3e-4) took
    # over 20 minutes here; these settings (8 envs, rollouts of 128, 4 epochs at lr 1e-3) are
    # the shape of the zoo's fast discrete-action settings.
    "Taxi-v4": Task(
        env="Taxi-v4",
        target=5.0,
        zoo={
            "n_envs": 8,
            "n_timesteps": 500_000,
            "policy": "MlpPolicy",
            "n_steps": 128,
            "batch_size": 256,
            "n_epochs": 4,
            "learning_rate": 1e-3,
        },
        baseline="MaskablePPO",
    ),
    # rl-zoo3 2.9.2, hyperparams/ppo_lstm.yml (CartPoleNoVel-v1); ``normalize``: VecNormalize.
    "aiorl/CartPoleNoVel-v1": Task(
        env="aiorl/CartPoleNoVel-v1",
        target=475.0,
        zoo={
            "normalize": True,
            "n_envs": 8,
            "n_timesteps": 100_000,
            "policy": "MlpLstmPolicy",
            "n_steps": 32,
            "batch_size": 256,
            "gae_lambda": 0.8,
            "gamma": 0.98,
            "n_epochs": 20,
            "ent_coef": 0.0,
            "learning_rate": "lin_0.001",
            "clip_range": "lin_0.2",
            "policy_kwargs": {
                "ortho_init": False,
                "activation_fn": torch.nn.ReLU,
                "lstm_hidden_size": 64,
                "enable_critic_lstm": True,
                "net_arch": {"pi": [64], "vf": [64]},
            },
        },
        baseline="RecurrentPPO",
        aiorl_options={"recurrent": "lstm"},
    ),
}


@dataclass(slots=True)
class Run:
    """One training run of one system on one task and seed."""

    system: str
    task: str
    seed: int
    solved: bool = False
    solve_s: float = math.nan
    """Wall time from before the trainer/model is built until training stopped."""
    train_s: float = math.nan
    """Wall time of training alone (aiorl: ``TrainResult.wall_time``; SB3: ``learn()``)."""
    steps: int = 0
    """Env steps collected."""
    steps_trained: int | None = None
    learner_s: float = math.nan
    """Seconds in learner updates (see the module docstring)."""
    updates: int = 0
    start_s: float | None = None
    """aiorl only: building the trainer and starting its workers."""
    stop_s: float | None = None
    """aiorl only: stopping the workers after training."""
    final_return: float = math.nan
    other_load: float | None = None
    torch_threads: int = 0
    error: str | None = None

    @property
    def time_or_inf(self) -> float:
        return self.solve_s if self.solved else math.inf

    @property
    def learner_share(self) -> float:
        return self.learner_s / self.train_s if self.train_s > 0 else math.nan


# ---- other load ------------------------------------------------------------------------------


def wait_for_quiet(meter: OtherLoadMeter, max_wait_s: float) -> None:
    """Wait (up to ``max_wait_s``) until other processes use less than ``QUIET_LOAD`` cores."""
    deadline = time.monotonic() + max_wait_s
    warned = False
    while True:
        start = meter.snapshot()
        time.sleep(1.0)
        load = meter.cores(start, meter.snapshot())
        if load is None or load < QUIET_LOAD:
            return
        if time.monotonic() >= deadline:
            _progress(f"  machine still busy ({load:.2f} cores used by other processes); running anyway")
            return
        if not warned:
            _progress(f"  waiting for other processes to calm down ({load:.2f} cores busy)")
            warned = True


# ---- aiorl -----------------------------------------------------------------------------------


AIORL_SYSTEMS = {"preset": "aiorl preset", "defaults": "aiorl defaults", "unmasked": "aiorl unmasked"}
"""``--aiorl`` choice -> system name in the tables (``unmasked`` runs on masked tasks only)."""
TARGET_RATIOS: dict[str, float | None] = {"aiorl preset": TARGET_RATIO, "aiorl defaults": 1.0, "aiorl unmasked": None}
"""Goal per aiorl system: its median time to solve / SB3's <= this (``None``: for comparison only)."""


class WithoutActionMask(gym.Wrapper):
    """Drops ``info["action_mask"]``: aiorl then trains on the env unmasked."""

    def reset(self, **kwargs: Any) -> Any:
        obs, info = self.env.reset(**kwargs)
        info.pop("action_mask", None)
        return obs, info

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        info.pop("action_mask", None)
        return obs, reward, terminated, truncated, info


def unmasked_env(env_id: str) -> gym.Env:
    """``gym.make(env_id)`` without its action masks (module-level: it travels to the workers)."""
    return WithoutActionMask(gym.make(env_id))


async def aiorl_solve(task: Task, seed: int, system: str = "aiorl preset") -> Run:
    """Train ``aiorl.Trainer.from_preset(task.env)`` (or, for ``"aiorl defaults"``,
    ``aiorl.Trainer(task.env, num_workers=2)`` with every other setting at its default) until the target; time it."""
    run = Run(system, task.env, seed)
    update_s: list[float] = []
    t0 = time.perf_counter()
    if system == "aiorl defaults":
        trainer = aiorl.Trainer(task.env, num_workers=2, seed=seed, **task.aiorl_options)
    elif system == "aiorl unmasked":
        preset = aiorl.presets.get_preset(task.env)
        env = functools.partial(unmasked_env, task.env)
        trainer = aiorl.Trainer(env, preset.algo, **{**preset.options, "seed": seed})
    else:
        trainer = aiorl.Trainer.from_preset(task.env, seed=seed)
    async with trainer:
        t_started = time.perf_counter()
        run.torch_threads = trainer.learner_threads  # set in the learner's own thread
        result = await trainer.run(
            total_steps=AIORL_TOTAL_STEPS,
            target_return=task.target,
            on_update=lambda report: update_s.append(report.update_s),
        )
        t_done = time.perf_counter()
    run.stop_s = time.perf_counter() - t_done
    run.start_s = t_started - t0
    run.solved = result.reached_target
    run.solve_s = t_done - t0
    run.train_s = result.wall_time
    run.steps = result.steps_collected
    run.steps_trained = result.env_steps
    run.learner_s = sum(update_s)
    run.updates = result.updates
    run.final_return = result.mean_return
    return run


# ---- Stable-Baselines3 -----------------------------------------------------------------------


def linear_schedule(initial: float) -> Callable[[float], float]:
    """rl-zoo3's ``linear_schedule``: ``progress_remaining * initial`` (1 at the start, 0 at the end)."""

    def schedule(progress_remaining: float) -> float:
        return progress_remaining * initial

    return schedule


def zoo_kwargs(zoo: dict[str, Any]) -> dict[str, Any]:
    """``stable_baselines3.PPO`` keyword arguments from zoo hyperparameters (``lin_X`` -> schedule)."""
    kwargs: dict[str, Any] = {}
    for key, value in zoo.items():
        if key in ("n_envs", "n_timesteps", "policy", "normalize"):
            continue
        if isinstance(value, str) and value.startswith("lin_"):
            value = linear_schedule(float(value.removeprefix("lin_")))
        kwargs[key] = value
    return kwargs


class SolveCallback(BaseCallback):
    """Stops ``learn()`` once the last ``RETURN_WINDOW`` Monitor episodes average ``target``; times rollouts."""

    def __init__(self, target: float) -> None:
        super().__init__()
        self.target = target
        self.returns: collections.deque[float] = collections.deque(maxlen=RETURN_WINDOW)
        self.solved = False
        self.rollout_s = 0.0
        self.rollouts = 0
        self._rollout_start = 0.0

    def _on_rollout_start(self) -> None:
        self._rollout_start = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.rollout_s += time.perf_counter() - self._rollout_start
        self.rollouts += 1

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            episode = info.get("episode")
            if episode is not None:
                self.returns.append(float(episode["r"]))
        if len(self.returns) == RETURN_WINDOW and statistics.fmean(self.returns) >= self.target:
            self.solved = True
            self.rollout_s += time.perf_counter() - self._rollout_start  # the rollout stops here
            return False
        return True


def taxi_mask(env: gym.Env) -> np.ndarray:
    """Taxi's action mask for its current state, as ``ActionMasker`` asks for it (the env's info has the same)."""
    taxi = env.unwrapped
    return taxi.action_mask(taxi.s).astype(bool)  # type: ignore[attr-defined]


def sb3_budget(task: Task, factor: float) -> int:
    """SB3's ``total_timesteps``: the zoo's for scheduled tasks, else ``factor`` times it."""
    n_timesteps = int(task.zoo["n_timesteps"])
    return n_timesteps if task.scheduled else int(factor * n_timesteps)


def sb3_solve(task: Task, seed: int, budget: int, threads: int | None = None) -> Run:
    """Train SB3 PPO with the zoo's hyperparameters until the target or ``budget`` steps; time it.

    ``threads``: torch intra-op threads for this run (``None``: leave torch's default).
    """
    if threads is not None:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return sb3_solve(task, seed, budget)
        finally:
            torch.set_num_threads(previous)
    run = Run("SB3", task.env, seed)
    t0 = time.perf_counter()
    masker = {"wrapper_class": ActionMasker, "wrapper_kwargs": {"action_mask_fn": taxi_mask}} if task.masked else {}
    env = make_vec_env(task.env, n_envs=task.zoo["n_envs"], seed=seed, **masker)  # DummyVecEnv + Monitor
    if task.zoo.get("normalize"):
        # the zoo's ``normalize: True`` (observations and rewards), with the algorithm's gamma as the zoo passes it
        env = VecNormalize(env, gamma=task.zoo.get("gamma", 0.99))
    try:
        algorithm = {"PPO": sb3.PPO, "MaskablePPO": sb3_contrib.MaskablePPO, "RecurrentPPO": sb3_contrib.RecurrentPPO}[
            task.baseline
        ]
        model = algorithm(task.zoo["policy"], env, seed=seed, verbose=0, **zoo_kwargs(task.zoo))
        model.set_logger(Logger(folder=None, output_formats=[]))  # as verbose=0, minus an empty /tmp/SB3-* dir
        callback = SolveCallback(task.target)
        run.torch_threads = torch.get_num_threads()
        t_learn = time.perf_counter()
        model.learn(total_timesteps=budget, callback=callback)
        t_done = time.perf_counter()
    finally:
        env.close()
    run.solved = callback.solved
    run.solve_s = t_done - t0
    run.train_s = t_done - t_learn
    run.steps = model.num_timesteps
    run.learner_s = run.train_s - callback.rollout_s
    run.updates = callback.rollouts  # every completed rollout is followed by an update
    run.final_return = statistics.fmean(callback.returns) if callback.returns else math.nan
    return run


# ---- driver ----------------------------------------------------------------------------------


def timed(meter: OtherLoadMeter, system: str, task: Task, seed: int, work: Callable[[], Run]) -> Run:
    """Run ``work``, recording other processes' load; a failure becomes an unsolved run."""
    start = meter.snapshot()
    try:
        run = work()
    except Exception as exc:
        run = Run(system, task.env, seed, error=f"{type(exc).__name__}: {exc}")
    run.other_load = meter.cores(start, meter.snapshot())
    return run


def run_all(args: argparse.Namespace) -> list[Run]:
    meter = OtherLoadMeter()
    runs: list[Run] = []
    for index in range(args.seeds):
        seed = args.first_seed + index
        for name in args.tasks:
            task = TASKS[name]
            systems: list[tuple[str, Callable[[], Run]]] = [
                *(
                    (
                        AIORL_SYSTEMS[mode],
                        lambda task=task, seed=seed, mode=mode: aiorl.run(aiorl_solve(task, seed, AIORL_SYSTEMS[mode])),
                    )
                    for mode in args.aiorl
                    if mode != "unmasked" or task.masked
                ),
                (
                    "SB3",
                    lambda task=task, seed=seed: sb3_solve(
                        task, seed, sb3_budget(task, args.sb3_budget), args.sb3_threads
                    ),
                ),
            ]
            if index % 2:
                systems.reverse()
            for system, work in systems:
                for attempt in range(args.busy_retries + 1):
                    wait_for_quiet(meter, args.quiet_wait)
                    _progress(f"seed {seed} {name} {system} ...")
                    run = timed(meter, system, task, seed, work)
                    _progress("  " + describe_run(run))
                    if run.other_load is None or run.other_load < QUIET_LOAD or attempt == args.busy_retries:
                        break
                    # SB3 with torch's default threads was 2-5x slower with 0.6-0.9 cores busy elsewhere
                    _progress(f"  other processes used {run.other_load:.2f} cores during it: running it again")
                runs.append(run)
    return runs


def describe_run(run: Run) -> str:
    if run.error is not None:
        return f"failed: {run.error}"
    state = "solved" if run.solved else "NOT solved"
    load = "" if run.other_load is None else f", other load {run.other_load:.2f} cores"
    return (
        f"{state} in {run.solve_s:.1f} s ({run.steps:,} steps, training {run.train_s:.1f} s, "
        f"learner {run.learner_share:.0%}, mean return {run.final_return:.1f}{load})"
    )


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- report ----------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _seconds(value: float) -> str:
    return "not solved" if math.isinf(value) else f"{value:.1f}"


def _cell(runs: Sequence[Run]) -> str:
    solved = sum(r.solved for r in runs)
    median_s = _median([r.time_or_inf for r in runs])
    median_steps = _median([r.steps for r in runs])
    suffix = "" if solved == len(runs) else f", solved {solved}/{len(runs)}"
    return f"{_seconds(median_s)} ({median_steps:,.0f}{suffix})"


def render_summary(runs: Sequence[Run], tasks: Sequence[str], aiorl_systems: Sequence[str]) -> str:
    lines = [
        "| task | target | system | median s (steps) | SB3 (Taxi: MaskablePPO, NoVel: RecurrentPPO) median s (steps) "
        "| ratio to SB3 (target) | training-only ratio |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for name in tasks:
        theirs = [r for r in runs if r.task == name and r.system == "SB3"]
        b = _median([r.time_or_inf for r in theirs])
        b_train = _median([r.train_s if r.solved else math.inf for r in theirs])
        for system in aiorl_systems:
            ours = [r for r in runs if r.task == name and r.system == system]
            if not ours:  # "aiorl unmasked" on a task without masks
                continue
            a = _median([r.time_or_inf for r in ours])
            a_train = _median([r.train_s if r.solved else math.inf for r in ours])
            lines.append(
                f"| {name} | {TASKS[name].target:g} | {system} | {_cell(ours)} | {_cell(theirs)} "
                f"| {_ratio(a, b, target=TARGET_RATIOS[system])} | {_ratio(a_train, b_train)} |"
            )
    return "\n".join(lines)


def _ratio(ours: float, theirs: float, *, target: float | None = None) -> str:
    if math.isinf(ours) or math.isinf(theirs) or math.isnan(ours) or math.isnan(theirs):
        return "n/a"
    ratio = ours / theirs
    if target is None:
        return f"{ratio:.2f}"
    return f"**{ratio:.2f}** (<= {target:g}: {'met' if ratio <= target else 'missed'})"


def render_runs(runs: Sequence[Run]) -> str:
    lines = [
        "| task | seed | system | solved | time to solve s | training s | start / stop s | env steps "
        "| updates | learner share | final mean return | torch threads | other load (cores) |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (r.task, r.seed, r.system)):
        if r.error is not None:
            lines.append(f"| {r.task} | {r.seed} | {r.system} | error: {r.error} |||||||||")
            continue
        start_stop = "-" if r.start_s is None else f"{r.start_s:.1f} / {r.stop_s:.1f}"
        steps = f"{r.steps:,}" + ("" if r.steps_trained is None else f" ({r.steps_trained:,} trained)")
        load = "n/a" if r.other_load is None else f"{r.other_load:.2f}"
        lines.append(
            f"| {r.task} | {r.seed} | {r.system} | {'yes' if r.solved else 'NO'} | {r.solve_s:.1f} "
            f"| {r.train_s:.1f} | {start_stop} | {steps} | {r.updates} | {r.learner_share:.0%} "
            f"| {r.final_return:.1f} | {r.torch_threads} | {load} |"
        )
    return "\n".join(lines)


def describe_setup(args: argparse.Namespace) -> str:
    versions = (
        f"Python {platform.python_version()}, torch {torch.__version__}, gymnasium {gym.__version__}, "
        f"numpy {np.__version__}, aiorl {aiorl.__version__}, stable-baselines3 {sb3.__version__}, "
        f"sb3-contrib {sb3_contrib.__version__}"
    )
    threads = "torch's default (left alone)" if args.sb3_threads is None else f"{args.sb3_threads} (--sb3-threads)"
    budgets = ", ".join(f"{name} {sb3_budget(TASKS[name], args.sb3_budget):,}" for name in args.tasks)
    return "\n".join(
        [
            f"- solved: mean return of the last {RETURN_WINDOW} finished training episodes >= target",
            "- aiorl preset: Trainer.from_preset(task, seed=seed); aiorl defaults: Trainer(task, num_workers=2, "
            f"seed=seed); then run(total_steps={AIORL_TOTAL_STEPS:,}, target_return=target); time to solve "
            "includes building the trainer and starting its workers",
            "- aiorl/CartPoleNoVel-v1: SB3 is sb3-contrib RecurrentPPO with rl-zoo3's ppo_lstm.yml settings "
            "(VecNormalize); aiorl defaults: Trainer(task, num_workers=2, recurrent='lstm', seed=seed)",
            "- Taxi-v4: SB3 is sb3-contrib MaskablePPO with the settings in TASKS (ActionMasker); aiorl unmasked: "
            "the preset's settings on the env with info['action_mask'] dropped",
            "- SB3: PPO with rl-zoo3 2.9.2 hyperparams/ppo.yml, make_vec_env (DummyVecEnv + Monitor), SB3 defaults "
            f"otherwise; time to solve includes building the env and model; budget (env steps): {budgets}; "
            f"torch threads: {threads}",
            f"- seeds {args.first_seed}..{args.first_seed + args.seeds - 1}, interleaved per seed and task "
            "(aiorl first on even seed indices, SB3 first on odd); medians over seeds, unsolved runs count as infinite",
            f"- machine: {os.cpu_count()} CPUs ({platform.machine()}); {versions}",
        ]
    )


def render_warning(runs: Sequence[Run]) -> str | None:
    return busy_warning([r.other_load for r in runs if r.other_load is not None], QUIET_LOAD, "runs")


# ---- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Wall time to solve CartPole-v1 / Pendulum-v1 / Taxi-v4 / CartPoleNoVel: aiorl presets vs "
        "SB3 PPO (rl-zoo3 settings), sb3-contrib MaskablePPO (Taxi) and RecurrentPPO (CartPoleNoVel)."
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per task and system (default: 3)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed (default: 0)")
    parser.add_argument(
        "--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS), help="tasks to run (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="one seed per task and system")
    parser.add_argument(
        "--aiorl",
        nargs="+",
        choices=sorted(AIORL_SYSTEMS),
        default=list(AIORL_SYSTEMS),
        help="aiorl's systems: its presets, its defaults with 2 workers, and (masked tasks) the preset "
        "without the masks (default: all)",
    )
    parser.add_argument(
        "--sb3-budget",
        type=float,
        default=3.0,
        help="SB3's env-step budget as a multiple of the zoo's n_timesteps, for tasks without schedules (default: 3)",
    )
    parser.add_argument(
        "--sb3-threads",
        type=int,
        help="torch intra-op threads for SB3 (default: leave torch's default, what SB3 users get)",
    )
    parser.add_argument(
        "--busy-retries",
        type=int,
        default=2,
        help="runs again a run during which other processes used QUIET_LOAD cores or more, up to this "
        "many times (default: 2; 0: never)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait before each run for other processes to go idle (default: 60; 0: never wait)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = 1
    if args.seeds < 1 or args.sb3_budget <= 0 or args.quiet_wait < 0 or (args.sb3_threads or 1) < 1:
        parser.error("--seeds must be >= 1, --sb3-budget > 0, --quiet-wait >= 0 and --sb3-threads >= 1")
    if args.busy_retries < 0:
        parser.error("--busy-retries must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    try:
        runs = run_all(args)
    except KeyboardInterrupt:
        print("interrupted; every worker process was stopped", file=sys.stderr)
        return 130
    print("## Time to solve: aiorl (presets, defaults) vs Stable-Baselines3 PPO (rl-zoo3 hyperparameters)")
    print()
    print(describe_setup(args))
    print()
    print(render_summary(runs, args.tasks, [AIORL_SYSTEMS[mode] for mode in args.aiorl]))
    print()
    print(render_runs(runs))
    print()
    print(
        "time to solve = wall time from building the trainer/model to the target (the ratio uses it); "
        "training = aiorl TrainResult.wall_time / SB3 learn(); start / stop = aiorl's worker start-up (with "
        "building the trainer) and shutdown; learner share = aiorl: sum of on_update update_s (runs while "
        "workers sample) / training, SB3: learn() time outside rollout collection / training."
    )
    print_footer(render_warning(runs), started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
