"""Learner throughput on a fixed batch: aiorl's PPO and APPO updates against Stable-Baselines3's ``PPO.train()``.

What is measured
----------------
Samples per second of one learner update (``T * N`` samples of a batch shaped
``[T, N]``, divided by the median seconds of an update), with no env, no worker
and no event loop involved: the same batch is trained on again and again.

- nets: ``mlp`` (CartPole-like: observations ``(4,)`` float32, ``Discrete(2)``,
  :class:`aiorl.ActorCritic`, separate 64x64 tanh actor and critic) and ``cnn``
  (``84x84x4`` images with values 0..255 stored as float32, ``Discrete(6)``,
  :class:`aiorl.CNNActorCritic` with ``scale=1/255``);
- batch sizes ``T * N`` with ``T = 32`` steps: for the MLP 1,024, 2,048 and 14,336
  by default (2x16x32, 2x32x32 and 14x32x32 as workers x envs x rollout length),
  for the CNN 128 and 256, as its updates are slow on a CPU (``--mlp-batches``,
  ``--cnn-batches``);
- devices: ``cpu``, and ``cuda`` when ``torch.cuda.is_available()`` (a
  ``skipped: no CUDA`` row otherwise).

Systems
-------
- ``aiorl PPO`` / ``aiorl APPO``: ``aiorl.PPO()`` / ``aiorl.APPO()`` with their
  default configs (both 4 epochs x 2 minibatches at the time of writing; the
  table shows what each used), learner from ``algo.make_learner(policy, dist,
  device)``, timed as ``learner.update(batch, progress=0.0)``. An update does all
  of its algorithm's work: the batch's copy to the device, a forward pass over the
  whole batch to recompute the values (APPO: and the target log-probs), GAE (APPO:
  V-trace) on the CPU, then the epochs of minibatch gradient steps.
- ``aiorl PPO (compile)`` / ``aiorl APPO (compile)``: the same with the config's
  ``compile=True``; the plain rows ask for ``compile=False``. A compiled learner's first update includes the
  compilation (the ``first update s`` column, shown for every row); the
  ``compiled`` column says whether the learner really ran compiled (aiorl falls
  back to eager when compiling fails). On CUDA the batch's arrays are in
  page-locked memory, as the trainer's are for a CUDA learner.
- ``... (compile, CUDA graphs)`` (CUDA only): compiled with ``torch.compile``'s
  ``mode="reduce-overhead"``, which replays the loss's forward and backward as CUDA
  graphs (an experiment: the trainer does not use it yet).
- ``... (written-out step, compile)`` (CUDA only, MLP): the default MLP's gradient written
  out without autograd (``aiorl/algos/mlp_step.py``, the CPU learner's step) compiled as one
  graph on the GPU (an experiment: the trainer writes it out on a CPU only).
- ``SB3 PPO`` (MLP only): ``stable_baselines3.PPO("MlpPolicy")`` with
  ``net_arch=dict(pi=[64, 64], vf=[64, 64])`` and tanh (the same network as
  aiorl's), the PPO config's epochs and minibatches (``n_epochs=update_epochs``,
  ``batch_size = T * N / num_minibatches``), the same learning rate, clip range, value clipping
  (``clip_range_vf``), gamma, lambda, value and gradient-norm coefficients, on the
  same device. Its rollout buffer is
  filled with the same data before every update (not timed, and neither is its
  ``compute_returns_and_advantage``, which SB3 runs during collection), then
  ``model.train()`` is timed. So SB3's timed work is the epochs alone, while
  aiorl's also holds the value pass and GAE: the comparison slightly favours SB3.
  SB3 builds its minibatches in numpy and copies each to the device; aiorl copies
  the batch once.

Only PPO is compared with SB3 (``ratio to SB3`` = aiorl samples/s / SB3 samples/s
at the same net, batch and device); APPO has its own config and an extra pass, and
is shown for reference. There is no SB3 row for the CNN: SB3's ``CnnPolicy`` is a
different network (NatureCNN).

The batch
---------
Built by hand as a :class:`aiorl.algos.batch.RolloutBatch` (the fields of
:class:`aiorl.shm.RolloutLayout`): observations drawn at random (MLP: normal with
CartPole-like scales; CNN: integers 0..255), actions sampled from a fresh policy
and their log-probabilities from it (aiorl's learners start from that
policy's weights, so the data is on-policy at their first update), rewards 1
(MLP) or 1 with probability 0.1 (CNN), terminations with probability 1/50 per
step, truncations with probability 1/500, every step valid. Training on the same
batch again and again moves the policy away from it, but no update stops early
(``target_kl`` is off), so every update does the same work.

How
---
All systems run in one process. Per (device, net, batch) every system is built and
makes ``--warmup`` updates (the first one timed on its own: compilation), then the
systems take turns, one timed update each, for ``--repeats`` rounds, so drifts of the
machine's speed hit every row alike; the table shows the median and the range.
``torch.set_num_threads(--threads)`` (default: all usable cores) holds for every
row, SB3's included. On CUDA each timing ends with ``torch.cuda.synchronize()``. ``--quick``
measures compiled learners for the MLP only (compiling the CNN's loss on a CPU
takes a while). The CPU that other processes used during each row is measured from
``/proc`` (``other load``): run it on an idle machine. With several torch threads
and another process busy on one of the cores, an update can be many times slower;
``--threads 1`` is far less sensitive to that.

Run it (about 3 minutes on 2 cores, more with compiled learners; ``--quick``
about 15 s, 30-40 s with them)::

    python benchmarks/learner.py
    python benchmarks/learner.py --quick
    python benchmarks/learner.py --devices cuda --no-compile
    python benchmarks/learner.py --threads 1 --devices cpu --repeats 9
    python benchmarks/learner.py --mlp-batches 1024 4096 --cnn-batches 128

It needs ``stable-baselines3`` (``pip install stable-baselines3``). It prints a
markdown table and the setup to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from other_load import OtherLoadMeter, busy_warning, print_footer
from torch import nn

import aiorl
from aiorl.algos.batch import RolloutBatch
from aiorl.algos.mlp_step import Coefficients, WrittenOutStep, written_out_policy
from aiorl.distributions import ActionDistribution

try:
    import stable_baselines3 as sb3
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import DummyVecEnv
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("this benchmark needs stable-baselines3: pip install stable-baselines3")

ROLLOUT_LENGTH = 32
"""T: steps per env in the batch (the trainer's default rollout length)."""
SEED = 0
MLP_BATCHES = (1024, 2048, 14336)
CNN_BATCHES = (128, 256)
QUICK_MLP_BATCHES = (1024,)
QUICK_CNN_BATCHES = (64,)
TERMINATION_RATE = 1 / 50
TRUNCATION_RATE = 1 / 500


# ---- nets and batches --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Net:
    """An observation and action space and the aiorl policy for them."""

    name: str
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Discrete
    reward_rate: float
    """Probability that a step's reward is 1 (else 0)."""

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return tuple(self.observation_space.shape)

    def make_policy(self, dist: ActionDistribution) -> nn.Module:
        """A fresh aiorl policy, always with the same initial weights."""
        torch.manual_seed(SEED)
        if self.name == "cnn":
            return aiorl.CNNActorCritic(self.obs_shape, dist, scale=1.0 / 255.0)
        return aiorl.ActorCritic(self.obs_shape, dist)

    def random_obs(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        if self.name == "cnn":
            return rng.integers(0, 256, (*shape, *self.obs_shape)).astype(np.float32)
        scale = np.array([1.0, 0.5, 0.1, 0.5], dtype=np.float32)  # CartPole's typical magnitudes
        return (rng.standard_normal((*shape, *self.obs_shape)) * scale).astype(np.float32)


NETS = {
    "mlp": Net("mlp", gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2), reward_rate=1.0),
    "cnn": Net("cnn", gym.spaces.Box(0, 255, (84, 84, 4), np.uint8), gym.spaces.Discrete(6), reward_rate=0.1),
}


@dataclass(slots=True)
class Data:
    """One batch, and what SB3's buffer needs besides it."""

    batch: RolloutBatch
    values: np.ndarray
    """V(obs) of the acting policy, ``[T, N]``: SB3's buffer holds them (aiorl's learners recompute them)."""
    next_values: np.ndarray
    """V(next_obs), ``[N]``: SB3's ``last_values``."""

    @property
    def samples(self) -> int:
        return int(self.batch.rewards.size)


def make_data(net: Net, steps: int, envs: int, gamma: float) -> Data:
    """A ``[steps, envs]`` batch acted by a fresh policy (see the module docstring)."""
    rng = np.random.default_rng(SEED)
    dist = ActionDistribution.for_space(net.action_space)
    policy = net.make_policy(dist)
    obs = net.random_obs(rng, (steps, envs))
    next_obs = net.random_obs(rng, (envs,))
    with torch.no_grad():
        flat = torch.from_numpy(obs).reshape(steps * envs, *net.obs_shape)
        dist_inputs, values = policy(flat)
        actions, logprobs = dist.sample(dist_inputs)
        next_values = policy(torch.from_numpy(next_obs))[1]
    values_np = values.reshape(steps, envs).numpy()
    rewards = (rng.random((steps, envs)) < net.reward_rate).astype(np.float32)
    terminated = rng.random((steps, envs)) < TERMINATION_RATE
    truncated = (rng.random((steps, envs)) < TRUNCATION_RATE) & ~terminated
    batch = RolloutBatch(
        obs=obs,
        actions=actions.reshape(steps, envs).numpy().astype(dist.action_dtype),
        logprobs=logprobs.reshape(steps, envs).numpy().astype(np.float32),
        rewards=rewards,
        terminated=terminated,
        truncated=truncated,
        trunc_values=np.where(truncated, values_np, 0.0).astype(np.float32),
        valid=np.ones((steps, envs), dtype=bool),
        disc_returns=np.zeros((steps, envs), dtype=np.float32),
        versions=np.zeros((steps, envs), dtype=np.int64),
        next_obs=next_obs,
    )
    values = values_np.astype(np.float32)
    return Data(batch=batch, values=values, next_values=next_values.numpy().astype(np.float32))


# ---- timing ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One system on one (device, net, batch)."""

    system: str
    net: str
    device: str
    steps: int = 0
    envs: int = 0
    epochs: int = 0
    minibatches: int = 0
    first_s: float = math.nan
    """The first warm-up update (with compilation, for a compiled learner)."""
    times: list[float] = field(default_factory=list)
    other_load: float | None = None
    threads: int = 0
    compiled: str = "-"
    """Whether the learner ran compiled (``-``: aiorl cannot compile it, or SB3)."""
    note: str = ""
    """Why the row has no numbers (skipped or failed)."""

    @property
    def samples(self) -> int:
        return self.steps * self.envs

    @property
    def median_s(self) -> float:
        return statistics.median(self.times) if self.times else math.nan

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.median_s if self.times else math.nan


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


@dataclass
class Timed:
    """A system ready to be timed: its row, one update, and what to do untimed before each update."""

    row: Row
    update: Callable[[], Any]
    prepare: Callable[[], Any] | None = None
    cleanup: Callable[[], Any] | None = None

    def once(self) -> float:
        """One update's wall time (after ``prepare``, untimed)."""
        if self.prepare is not None:
            self.prepare()
        _sync(self.row.device)
        t0 = time.perf_counter()
        self.update()
        _sync(self.row.device)
        return time.perf_counter() - t0


def time_round_robin(systems: Sequence[Timed], warmup: int, repeats: int) -> None:
    """Finish each system's warm-up (its first update was made and timed when it was built), then
    time one update of each in turn, ``repeats`` rounds.

    Interleaving puts slow drifts of the machine (clock speed, neighbours) on every
    system alike, so the ratios between rows hold even when absolute times wander.
    """
    for system in systems:
        for _ in range(warmup - 1):
            system.once()
    for _ in range(repeats):
        for system in systems:
            system.row.times.append(system.once())


def make_learner(algo: Any, policy: nn.Module, dist: ActionDistribution, device: str, compile: bool) -> Any:
    """``algo``'s learner, compiled or not (``compile`` is a field of PPO's and APPO's configs)."""
    return replace(algo, compile=compile).make_learner(policy, dist, device)


def pinned(data: Data) -> Data:
    """A copy of ``data`` whose batch arrays are in page-locked memory (for a CUDA learner)."""
    arrays = {f.name: torch.from_numpy(getattr(data.batch, f.name)).pin_memory().numpy() for f in fields(data.batch)}
    return Data(batch=RolloutBatch(**arrays), values=data.values, next_values=data.next_values)


def aiorl_system(name: str, algo: Any, net: Net, data: Data, device: str, *, compile: bool | str = False) -> Timed:
    """``learner.update`` of ``algo`` on ``data``, ready to time.

    ``compile`` a string: compiled with that ``torch.compile`` mode (``"reduce-overhead"``:
    CUDA graphs), through :meth:`~aiorl.algos.surrogate.SurrogateLearner.compile_loss`;
    ``"written-out"``: the default MLP's written-out step (:mod:`aiorl.algos.mlp_step`, which
    the trainer uses on a CPU only) compiled, on whatever device.
    """
    row = Row(name, net.name, device, epochs=algo.update_epochs, minibatches=algo.num_minibatches)
    row.steps, row.envs = data.batch.rewards.shape
    dist = ActionDistribution.for_space(net.action_space)
    learner = make_learner(algo, net.make_policy(dist), dist, device, compile is True)
    if compile == "written-out":
        model = written_out_policy(learner.policy)
        assert model is not None, f"the {net.name} policy has no written-out step"
        learner.written_out = WrittenOutStep(model, dist, Coefficients.of(algo))
        learner.compile_loss()
    elif isinstance(compile, str):
        learner.compile_loss(mode=compile)

    def update() -> None:
        learner.update(data.batch, progress=0.0)
        # ``learner.compiled`` turns False when compiling failed and the learner went on eager.
        row.compiled = "yes" if learner.compiled else ("no (compiling failed)" if compile else "no")

    return Timed(row, update)


class _SpacesEnv(gym.Env):
    """An env that only carries spaces, for SB3's constructor; it is never stepped."""

    def __init__(self, net: Net) -> None:
        self.observation_space = net.observation_space
        self.action_space = net.action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(self.observation_space.shape, dtype=self.observation_space.dtype), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        raise NotImplementedError("the learner benchmark never steps SB3's env")


def fill_sb3_buffer(model: Any, data: Data, gamma: float) -> None:
    """Put ``data`` into ``model.rollout_buffer`` as ``collect_rollouts`` would, then compute GAE."""
    batch = data.batch
    buffer = model.rollout_buffer
    buffer.reset()
    done = batch.terminated | batch.truncated
    buffer.observations[:] = batch.obs
    buffer.actions[:] = batch.actions.reshape(*batch.actions.shape[:2], -1)
    # SB3 bootstraps a truncated episode by adding gamma * V(final obs) to its last reward.
    buffer.rewards[:] = batch.rewards + gamma * batch.trunc_values
    buffer.episode_starts[1:] = done[:-1]
    buffer.values[:] = data.values
    buffer.log_probs[:] = batch.logprobs
    buffer.pos, buffer.full = batch.rewards.shape[0], True
    buffer.compute_returns_and_advantage(last_values=torch.from_numpy(data.next_values), dones=done[-1])


def sb3_system(ppo: aiorl.PPO, net: Net, data: Data, device: str) -> Timed:
    """SB3's ``PPO.train()`` on ``data`` with ``ppo``'s epochs, minibatches and coefficients, ready to time."""
    row = Row("SB3 PPO", net.name, device, epochs=ppo.update_epochs, minibatches=ppo.num_minibatches)
    row.steps, row.envs = data.batch.rewards.shape
    venv = DummyVecEnv([lambda: _SpacesEnv(net)] * row.envs)
    model = sb3.PPO(
        "MlpPolicy",
        venv,
        learning_rate=ppo.learning_rate,
        n_steps=row.steps,
        batch_size=row.samples // ppo.num_minibatches,
        n_epochs=ppo.update_epochs,
        gamma=ppo.gamma,
        gae_lambda=ppo.gae_lambda,
        clip_range=ppo.clip_coef,
        clip_range_vf=ppo.clip_coef if ppo.clip_value_loss else None,
        normalize_advantage=ppo.normalize_advantages,
        ent_coef=ppo.ent_coef,
        vf_coef=ppo.vf_coef,
        max_grad_norm=ppo.max_grad_norm,
        target_kl=ppo.target_kl,
        policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": nn.Tanh},
        device=device,
        seed=SEED,
        verbose=0,
    )
    model.set_logger(Logger(folder=None, output_formats=[]))  # records, writes nothing
    return Timed(row, model.train, prepare=lambda: fill_sb3_buffer(model, data, ppo.gamma), cleanup=venv.close)


# ---- driver ------------------------------------------------------------------------------------


def systems_for(
    net: Net, compile_nets: Sequence[str], device: str, algos: Sequence[str] = ("ppo", "appo")
) -> list[tuple[str, Any, bool | str]]:
    """``(name, algo config or None for SB3, compile)`` in the order they run."""
    systems: list[tuple[str, Any, bool | str]] = []
    for name, algo in (("aiorl PPO", aiorl.PPO()), ("aiorl APPO", aiorl.APPO())):
        if name.split()[-1].lower() not in algos:
            continue
        systems.append((name, algo, False))
        if net.name in compile_nets:
            systems.append((f"{name} (compile)", algo, True))
            if device.startswith("cuda"):
                systems.append((f"{name} (compile, CUDA graphs)", algo, "reduce-overhead"))
                if net.name == "mlp":
                    systems.append((f"{name} (written-out step, compile)", algo, "written-out"))
    if net.name == "mlp":
        systems.append(("SB3 PPO", None, False))
    return systems


def measure(args: argparse.Namespace) -> list[Row]:
    meter = OtherLoadMeter()
    rows: list[Row] = []
    ppo = aiorl.PPO()
    for device in args.devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            rows.append(Row("all", "-", device, note="skipped: no CUDA"))
            _progress("cuda: skipped, no CUDA")
            continue
        for net_name, sizes in (("mlp", args.mlp_batches), ("cnn", args.cnn_batches)):
            net = NETS[net_name]
            for size in sizes:
                data = make_data(net, ROLLOUT_LENGTH, size // ROLLOUT_LENGTH, ppo.gamma)
                if device.startswith("cuda"):  # as the trainer's batches are for a CUDA learner
                    data = pinned(data)
                _progress(f"{device} {net_name} batch {size:,}: building and warming up ...")
                start = meter.snapshot()
                timed: list[Timed] = []
                for name, algo, compile in systems_for(net, args.compile_nets, device, args.algos):
                    try:
                        if algo is None:
                            system = sb3_system(ppo, net, data, device)
                        else:
                            system = aiorl_system(name, algo, net, data, device, compile=compile)
                        system.row.first_s = system.once()  # compiles; fails here, not in the rounds
                        timed.append(system)
                    except Exception as exc:
                        row = Row(name, net_name, device, ROLLOUT_LENGTH, size // ROLLOUT_LENGTH)
                        row.note = f"failed: {type(exc).__name__}: {exc}"
                        rows.append(row)
                _progress(f"{device} {net_name} batch {size:,}: {len(timed)} systems, {args.repeats} rounds ...")
                time_round_robin(timed, args.warmup, args.repeats)
                load = meter.cores(start, meter.snapshot())
                for system in timed:
                    system.row.other_load = load
                    system.row.threads = torch.get_num_threads()
                    if system.cleanup is not None:
                        system.cleanup()
                    rows.append(system.row)
                    _progress("  " + describe_row(system.row))
    return rows


def describe_row(row: Row) -> str:
    if row.note:
        return row.note
    load = "" if row.other_load is None else f", other load {row.other_load:.2f} cores"
    return (
        f"{row.median_s * 1e3:,.1f} ms per update, {row.samples_per_s:,.0f} samples/s "
        f"(first update {row.first_s:.2f} s{load})"
    )


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- report ------------------------------------------------------------------------------------


def _sb3_reference(rows: Sequence[Row], row: Row) -> Row | None:
    for other in rows:
        if other.system == "SB3 PPO" and (other.net, other.device, other.samples) == (
            row.net,
            row.device,
            row.samples,
        ):
            return other if other.times else None
    return None


def render_table(rows: Sequence[Row]) -> str:
    lines = [
        "| system | net | batch (T x N) | epochs x minibatches | device | compiled | first update s "
        "| update ms (median) | min - max ms | samples/s | ratio to SB3 | other load (cores) |",
        "|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.note and not row.samples:
            lines.append(f"| {row.system} | {row.net} | - | - | {row.device} | {row.note} |||||||")
            continue
        batch = f"{row.samples:,} ({row.steps}x{row.envs})"
        config = f"{row.epochs} x {row.minibatches}" if row.epochs else "-"
        if row.note:
            lines.append(f"| {row.system} | {row.net} | {batch} | {config} | {row.device} | {row.note} |||||||")
            continue
        reference = _sb3_reference(rows, row) if row.system.startswith("aiorl PPO") else None
        ratio = f"{row.samples_per_s / reference.samples_per_s:.2f}" if reference is not None else "-"
        load = "n/a" if row.other_load is None else f"{row.other_load:.2f}"
        lines.append(
            f"| {row.system} | {row.net} | {batch} | {config} | {row.device} | {row.compiled} | {row.first_s:.2f} "
            f"| {row.median_s * 1e3:,.1f} | {min(row.times) * 1e3:,.1f} - {max(row.times) * 1e3:,.1f} "
            f"| {row.samples_per_s:,.0f} | {ratio} | {load} |"
        )
    return "\n".join(lines)


def describe_setup(args: argparse.Namespace) -> str:
    ppo, appo = aiorl.PPO(), aiorl.APPO()
    compile_note = "rows '(compile)' use the config's compile=True, the others compile=False"
    versions = (
        f"Python {platform.python_version()}, torch {torch.__version__}, gymnasium {gym.__version__}, "
        f"numpy {np.__version__}, aiorl {aiorl.__version__}, stable-baselines3 {sb3.__version__}"
    )
    gpu = f"; GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    shown = ("learning_rate", "clip_coef", "clip_value_loss", "max_grad_norm", "update_epochs", "num_minibatches")
    return "\n".join(
        [
            f"- aiorl PPO config: {', '.join(f'{k}={getattr(ppo, k)}' for k in shown)}; "
            f"APPO: {', '.join(f'{k}={getattr(appo, k)}' for k in shown)}",
            "- SB3 PPO: MlpPolicy, net_arch pi=[64, 64] vf=[64, 64], tanh; PPO's epochs, batch_size = batch / "
            "minibatches and coefficients; timed: model.train() (its buffer refilled and GAE computed untimed)",
            f"- compile support: {compile_note}",
            f"- {args.warmup} warm-up update(s) (the first is 'first update s'), then the median of {args.repeats} "
            f"timed updates; samples/s = batch / median; torch threads {args.threads} for every row",
            f"- machine: {os.cpu_count()} CPUs ({platform.machine()}){gpu}; {versions}",
        ]
    )


def render_warning(rows: Sequence[Row]) -> str | None:
    return busy_warning([row.other_load for row in rows if row.other_load is not None], 0.3, "rows")


# ---- main --------------------------------------------------------------------------------------


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Learner samples/s on a fixed batch: aiorl PPO / APPO updates vs SB3 PPO.train()."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="MLP batch 1,024, CNN batch 64, 1 warm-up, 2 repeats, compiled learners for the MLP only",
    )
    parser.add_argument("--no-compile", action="store_true", help="no compiled-learner rows")
    parser.add_argument(
        "--algos", nargs="+", choices=["ppo", "appo"], default=["ppo", "appo"], help="aiorl's rows (default: both)"
    )
    parser.add_argument("--threads", type=int, help="torch threads for every row (default: all usable cores)")
    parser.add_argument(
        "--devices", default="cpu,cuda", help="comma-separated devices (default: cpu,cuda; cuda skipped if absent)"
    )
    parser.add_argument("--repeats", type=int, help="timed updates per row (default: 5; --quick: 2)")
    parser.add_argument("--warmup", type=int, help="warm-up updates per row, >= 1 (default: 2; --quick: 1)")
    parser.add_argument(
        "--mlp-batches",
        type=int,
        nargs="*",
        help=f"MLP batch sizes, multiples of {ROLLOUT_LENGTH} (default: {' '.join(map(str, MLP_BATCHES))})",
    )
    parser.add_argument(
        "--cnn-batches",
        type=int,
        nargs="*",
        help=f"CNN batch sizes, multiples of {ROLLOUT_LENGTH} (default: {' '.join(map(str, CNN_BATCHES))})",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "repeats": 2 if quick else 5,
        "warmup": 1 if quick else 2,
        "mlp_batches": list(QUICK_MLP_BATCHES if quick else MLP_BATCHES),
        "cnn_batches": list(QUICK_CNN_BATCHES if quick else CNN_BATCHES),
        "threads": _usable_cores(),
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    args.compile_nets = [] if args.no_compile else ["mlp"] if quick else ["mlp", "cnn"]
    problems = []
    if args.repeats < 1 or args.warmup < 1 or args.threads < 1:
        problems.append("--repeats, --warmup and --threads must be >= 1")
    bad = [b for b in [*args.mlp_batches, *args.cnn_batches] if b < ROLLOUT_LENGTH or b % ROLLOUT_LENGTH]
    if bad:
        problems.append(f"batch sizes must be positive multiples of {ROLLOUT_LENGTH}: {bad}")
    unknown = [d for d in args.devices if d not in ("cpu", "cuda") and not d.startswith("cuda:")]
    if unknown or not args.devices:
        problems.append(f"--devices takes cpu and/or cuda, got {args.devices}")
    if problems:
        parser.error("; ".join(problems))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    torch.set_num_threads(args.threads)
    try:
        rows = measure(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print("## Learner throughput on a fixed batch: aiorl PPO / APPO vs Stable-Baselines3 PPO.train()")
    print()
    print(describe_setup(args))
    print()
    print(render_table(rows))
    print()
    print(
        "batch = T x N samples; update ms = median wall time of one learner.update(batch) (aiorl: value pass, "
        "GAE / V-trace and the epochs) or model.train() (SB3: the epochs); samples/s = batch / median; ratio to "
        "SB3 = aiorl PPO samples/s / SB3 PPO samples/s at the same net, batch and device (APPO is not compared: "
        "its update does more work); other load = CPU used by other processes during the row."
    )
    print_footer(render_warning(rows), started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
