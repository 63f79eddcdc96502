"""Sampling throughput (env steps/s, no learning) of aiorl against gymnasium's vector envs.

What is measured
----------------
Env steps per second of *sampling only* on ``CartPole-v1``, with the same policy
work per step everywhere: one batched forward pass of :class:`aiorl.ActorCritic`
(separate 64x64 tanh actor and critic MLPs) over all envs of a batch, a
categorical action sampled and its log-probability computed, then one
``env.step`` per env. Nothing is learned.

Systems (all measured in one run, so the numbers are comparable):

- ``aiorl``: ``aiorl.Trainer`` with 2 worker processes x {8, 32} envs per worker
  (16 and 64 envs in total), ``rollout_length=64``; measured with
  ``Trainer.sample``, which frees each rollout slot as soon as it arrives. Each
  worker runs its own forward pass with ``torch.set_num_threads(1)``.
- ``SyncVectorEnv``: gymnasium's single-process vector env with 16 and 64 envs;
  the policy runs in the same process.
- ``AsyncVectorEnv``: gymnasium's one-process-per-env vector env with 16 and 64
  envs (``context="forkserver"``, shared memory, default ``NEXT_STEP``
  autoreset); the policy runs in the main process.

The main process runs with ``torch.set_num_threads(1)``: a single process steps
its envs on one core anyway, and aiorl's workers use one thread each as well.
The forkserver has torch and gymnasium preloaded, which only makes starting the
``AsyncVectorEnv`` processes quicker; it does not change what is timed.

Each measurement starts with a warm-up, then times ``--repeats`` windows of
``--seconds`` wall time each (or ``--steps`` env steps each) and reports the
median. Startup and teardown are never timed. For aiorl a window is a number of
env steps sized from the previous window's rate; ``Trainer.sample`` counts whole
rollouts, and up to ``num_workers * slots_per_worker`` rollouts may already be
waiting when a window starts (under 1% of a default window).

Run it (about 2-3 minutes on 2 cores; ``--quick`` takes about 30 seconds)::

    python benchmarks/throughput.py
    python benchmarks/throughput.py --quick
    python benchmarks/throughput.py --seconds 10 --repeats 5
    python benchmarks/throughput.py --check   # exit status 1 if a target ratio is missed

It prints a markdown table with each system's steps/s and the ratio of aiorl's
steps/s (same total number of envs) to it, then the target ratios:
aiorl(2x32) / SyncVectorEnv(64) >= 1.6 and aiorl(2x32) / AsyncVectorEnv(64) >= 5.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

import aiorl
from aiorl.distributions import ActionDistribution

ENV_ID = "CartPole-v1"
NUM_WORKERS = 2
ENVS_PER_WORKER = (8, 32)
ROLLOUT_LENGTH = 64
SEED = 0
AIORL_WARMUP_STEPS = 20_000
FORKSERVER_PRELOAD = ["torch", "gymnasium"]


@dataclass(frozen=True, slots=True)
class Target:
    """A required ratio aiorl(``envs``) / ``baseline``(``envs``) >= ``minimum``."""

    baseline: str
    envs: int
    minimum: float


TARGETS = (Target("SyncVectorEnv", 64, 1.6), Target("AsyncVectorEnv", 64, 5.0))


@dataclass(frozen=True, slots=True)
class Budget:
    """How long each measurement runs."""

    seconds: float
    """Wall time of one timed window (ignored when ``steps`` is set)."""
    steps: int | None
    """Env steps of one timed window; ``None`` times by ``seconds``."""
    repeats: int
    """Timed windows per measurement; the median is reported."""
    warmup_seconds: float
    """Untimed stepping before the first window (vector envs)."""
    aiorl_warmup_steps: int
    """Untimed env steps before the first window (aiorl)."""


@dataclass(frozen=True, slots=True)
class Measurement:
    """The timed windows of one system at one total number of envs."""

    system: str
    label: str
    envs: int
    rates: tuple[float, ...]

    @property
    def median(self) -> float:
        """Median env steps per second over the windows."""
        return statistics.median(self.rates)


# ---- aiorl ---------------------------------------------------------------------------------


async def _measure_aiorl(envs_per_worker: int, budget: Budget) -> list[float]:
    """Env steps/s of ``Trainer.sample`` in each timed window."""
    async with aiorl.Trainer(
        ENV_ID,
        num_workers=NUM_WORKERS,
        envs_per_worker=envs_per_worker,
        rollout_length=ROLLOUT_LENGTH,
        seed=SEED,
    ) as trainer:
        rate = await trainer.sample(budget.aiorl_warmup_steps)
        rates: list[float] = []
        for _ in range(budget.repeats):
            steps = budget.steps if budget.steps is not None else max(1, int(rate * budget.seconds))
            rate = await trainer.sample(steps)
            rates.append(rate)
        return rates


def measure_aiorl(envs_per_worker: int, budget: Budget) -> Measurement:
    """Measure aiorl with ``NUM_WORKERS`` workers x ``envs_per_worker`` envs."""
    rates = aiorl.run(_measure_aiorl(envs_per_worker, budget))
    assert isinstance(rates, list)
    return Measurement(
        system="aiorl",
        label=f"aiorl {NUM_WORKERS} workers x {envs_per_worker} envs",
        envs=NUM_WORKERS * envs_per_worker,
        rates=tuple(rates),
    )


# ---- gymnasium vector envs -------------------------------------------------------------------


class VectorSampler:
    """Steps a gymnasium vector env with the same per-step policy work as an aiorl worker."""

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        self.venv = venv
        self.dist = ActionDistribution.for_space(venv.single_action_space)
        obs_shape = venv.single_observation_space.shape
        assert obs_shape is not None
        torch.manual_seed(SEED)
        self.policy = aiorl.ActorCritic(obs_shape, self.dist)
        self.obs, _ = venv.reset(seed=SEED)

    def step(self) -> None:
        """One batched forward pass and sample, then one step of every env."""
        with torch.no_grad():
            dist_inputs, _value = self.policy(torch.from_numpy(np.asarray(self.obs, dtype=np.float32)))
            actions, _logp = self.dist.sample(dist_inputs)
        self.obs, _rewards, _terminated, _truncated, _infos = self.venv.step(actions.numpy())

    def run_for(self, seconds: float) -> float:
        """Step for ``seconds`` of wall time; return env steps per second."""
        iterations = 0
        started = time.perf_counter()
        deadline = started + seconds
        while True:
            self.step()
            iterations += 1
            now = time.perf_counter()
            if now >= deadline:
                return iterations * self.venv.num_envs / (now - started)

    def run_steps(self, env_steps: int) -> float:
        """Step until at least ``env_steps`` env steps are done; return env steps per second."""
        iterations = max(1, -(-env_steps // self.venv.num_envs))
        started = time.perf_counter()
        for _ in range(iterations):
            self.step()
        return iterations * self.venv.num_envs / (time.perf_counter() - started)


def make_vector_env(system: str, num_envs: int) -> gym.vector.VectorEnv:
    """A ``SyncVectorEnv`` or ``AsyncVectorEnv`` of ``num_envs`` ``CartPole-v1`` envs."""
    env_fns: list[Callable[[], gym.Env]] = [functools.partial(gym.make, ENV_ID) for _ in range(num_envs)]
    if system == "SyncVectorEnv":
        return gym.vector.SyncVectorEnv(env_fns)
    if system == "AsyncVectorEnv":
        # Never fork after torch is imported: each env process comes from the forkserver.
        multiprocessing.get_context("forkserver").set_forkserver_preload(FORKSERVER_PRELOAD)
        return gym.vector.AsyncVectorEnv(env_fns, context="forkserver")
    raise ValueError(f"unknown vector env {system!r}")


def measure_vector(system: str, num_envs: int, budget: Budget) -> Measurement:
    """Measure a gymnasium vector env with the policy in this process."""
    venv = make_vector_env(system, num_envs)
    try:
        sampler = VectorSampler(venv)
        sampler.run_for(budget.warmup_seconds)
        rates = [
            sampler.run_steps(budget.steps) if budget.steps is not None else sampler.run_for(budget.seconds)
            for _ in range(budget.repeats)
        ]
    finally:
        venv.close()
    return Measurement(system=system, label=f"{system} ({num_envs} envs)", envs=num_envs, rates=tuple(rates))


# ---- report ----------------------------------------------------------------------------------


def _aiorl_at(results: Sequence[Measurement], envs: int) -> Measurement | None:
    return next((m for m in results if m.system == "aiorl" and m.envs == envs), None)


def _baseline_at(results: Sequence[Measurement], system: str, envs: int) -> Measurement | None:
    return next((m for m in results if m.system == system and m.envs == envs), None)


def _ratio(results: Sequence[Measurement], baseline: Measurement) -> float | None:
    ours = _aiorl_at(results, baseline.envs)
    return None if ours is None else ours.median / baseline.median


def render_table(results: Sequence[Measurement]) -> str:
    """The results as a markdown table; the ratio is aiorl's steps/s at the same envs total."""
    lines = [
        "| system | envs total | steps/s (median) | min - max | aiorl ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in results:
        ratio = _ratio(results, m)
        ratio_text = "-" if ratio is None else f"{ratio:.2f}x"
        spread = f"{min(m.rates):,.0f} - {max(m.rates):,.0f}"
        lines.append(f"| {m.label} | {m.envs} | {m.median:,.0f} | {spread} | {ratio_text} |")
    return "\n".join(lines)


def render_ratios(results: Sequence[Measurement]) -> tuple[str, bool]:
    """Target and comparison ratios as markdown bullets, and whether every target was met."""
    lines: list[str] = []
    all_met = True
    for target in TARGETS:
        ours, theirs = _aiorl_at(results, target.envs), _baseline_at(results, target.baseline, target.envs)
        if ours is None or theirs is None:
            continue
        ratio = ours.median / theirs.median
        met = ratio >= target.minimum
        all_met = all_met and met
        lines.append(
            f"- target: aiorl({NUM_WORKERS}x{target.envs // NUM_WORKERS}) / {target.baseline}({target.envs}) "
            f"= **{ratio:.2f}x** (target >= {target.minimum:g}): {'met' if met else 'MISSED'}"
        )
    targeted = {(t.baseline, t.envs) for t in TARGETS}
    for m in results:
        if m.system == "aiorl" or (m.system, m.envs) in targeted:
            continue
        ours = _aiorl_at(results, m.envs)
        if ours is not None:
            lines.append(
                f"- aiorl({NUM_WORKERS}x{m.envs // NUM_WORKERS}) / {m.system}({m.envs}) "
                f"= {ours.median / m.median:.2f}x (no target)"
            )
    return "\n".join(lines), all_met


def describe_setup(budget: Budget) -> str:
    """A few lines that say what produced the numbers."""
    window = f"{budget.steps:,} env steps" if budget.steps is not None else f"{budget.seconds:g} s"
    return "\n".join(
        [
            f"- env: {ENV_ID}; policy: aiorl.ActorCritic (actor + critic MLPs 64x64 tanh), "
            "one batched forward pass + categorical sample + log-prob per step; sampling only, no learning",
            f"- aiorl: {NUM_WORKERS} workers, rollout_length={ROLLOUT_LENGTH}, 1 torch thread per worker; "
            "measured with Trainer.sample",
            "- SyncVectorEnv / AsyncVectorEnv: policy in the main process with torch.set_num_threads(1); "
            "AsyncVectorEnv uses context='forkserver', one process per env",
            f"- timing: {budget.repeats} window(s) of {window} after a warm-up; median reported",
            f"- machine: {os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}, "
            f"torch {torch.__version__}, gymnasium {gym.__version__}, numpy {np.__version__}, aiorl {aiorl.__version__}",
        ]
    )


# ---- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=6.0, help="wall time of one timed window (default 6)")
    parser.add_argument(
        "--steps", type=int, default=None, help="env steps per timed window instead of --seconds (same for all)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed windows per measurement (default 3)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds for vector envs (default 2)")
    parser.add_argument(
        "--quick", action="store_true", help="a short run: 1 window of 1.5 s, 0.5 s warm-up, 10,000 aiorl warm-up steps"
    )
    parser.add_argument("--check", action="store_true", help="exit with status 1 if a target ratio is missed")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.repeats < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--seconds must be > 0, --warmup >= 0, --repeats >= 1 and --steps >= 1")
    return args


def budget_from(args: argparse.Namespace) -> Budget:
    if args.quick:
        return Budget(seconds=1.5, steps=args.steps, repeats=1, warmup_seconds=0.5, aiorl_warmup_steps=10_000)
    return Budget(
        seconds=args.seconds,
        steps=args.steps,
        repeats=args.repeats,
        warmup_seconds=args.warmup,
        aiorl_warmup_steps=AIORL_WARMUP_STEPS,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    budget = budget_from(args)
    torch.set_num_threads(1)
    started = time.monotonic()
    results: list[Measurement] = []
    for envs_per_worker in ENVS_PER_WORKER:
        envs = NUM_WORKERS * envs_per_worker
        steps: list[Callable[[], Measurement]] = [
            functools.partial(measure_aiorl, envs_per_worker, budget),
            functools.partial(measure_vector, "SyncVectorEnv", envs, budget),
            functools.partial(measure_vector, "AsyncVectorEnv", envs, budget),
        ]
        for step in steps:
            result = step()
            results.append(result)
            print(f"measured {result.label}: {result.median:,.0f} steps/s", file=sys.stderr, flush=True)

    ratios, all_met = render_ratios(results)
    print()
    print(f"## Sampling throughput, {ENV_ID} (env steps/s, no learning)")
    print()
    print(describe_setup(budget))
    print()
    print(render_table(results))
    print()
    print("aiorl ratio = aiorl steps/s with the same total number of envs / this row's steps/s.")
    print()
    print(ratios)
    print()
    print(f"total wall time: {time.monotonic() - started:.0f} s")
    return 1 if args.check and not all_met else 0


if __name__ == "__main__":
    sys.exit(main())
