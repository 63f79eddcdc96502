"""Sampling throughput (env steps/s, no learning) of aiorl against gymnasium's vector envs.

What is measured
----------------
Env steps per second of *sampling only* on ``CartPole-v1``, with the same policy
work per step everywhere: one batched forward pass of the policy aiorl's trainer
builds for CartPole by default (:class:`aiorl.ActorCritic`, separate 64x64 tanh
actor and critic MLPs, behind the running observation normaliser
:class:`aiorl.models.ObservationNormalizer`) over all envs of a batch, a
categorical action sampled and its log-probability computed, then one
``env.step`` per env. Nothing is learned. The forward pass is the same code in
every system: the fused form aiorl's workers act with (:mod:`aiorl.worker.fused`,
under ``torch.inference_mode``), so that the ratios measure how envs are stepped
and rollouts moved, not a faster forward pass only aiorl would get (before
2026-12-03 the baselines ran the policy's plain ``forward``: 1.1-1.5x slower).

Systems (all measured in one run, so the numbers are comparable):

- ``aiorl``: ``aiorl.Trainer`` with 2 worker processes x {8, 32} envs per worker
  (16 and 64 envs in total), ``rollout_length=64``; measured with
  ``Trainer.sample``, which frees each rollout slot as soon as it arrives. Each
  worker runs its own forward pass with ``torch.set_num_threads(1)``.
- ``SyncVectorEnv``: gymnasium's single-process vector env with 16 and 64 envs;
  the policy runs in the main process.
- ``AsyncVectorEnv``: gymnasium's one-process-per-env vector env with 16 and 64
  envs (``context="forkserver"``, shared memory, default ``NEXT_STEP``
  autoreset); the policy runs in the main process.

Native vector envs as each worker's env (one run, measured with the others; ``--vector-only``
runs just these):

- ``aiorl+envpool``: the same trainer, each worker stepping one EnvPool CartPole of 32 envs
  (``aiorl.envs.VectorEnvs(kind="envpool")``, one EnvPool thread) as one batch per step.
- ``envpool alone``: EnvPool CartPole with the same policy work in this process: 32 envs
  and 1 thread (what one worker's env steps alone; the sum over both workers is twice it),
  and 64 envs with 2 threads (the same work on the same cores in one process).
- ``aiorl+gymnasium`` and ``gymnasium alone``: the same with gymnasium's own vectorized
  CartPole (``gymnasium.make_vec(vectorization_mode="vector_entry_point")``, numpy).

Their targets: aiorl(2x32) >= 0.8x the sum of what each worker's vector env steps alone
(2 x the 32-env row), and aiorl(2x32, EnvPool) >= 0.9x EnvPool alone with 64 envs and 2
threads. EnvPool's rows are skipped when envpool is not installed (``pip install 'aiorl[envpool]'``).

The main process runs with ``torch.set_num_threads(1)``: a single process steps
its envs on one core anyway, and aiorl's workers use one thread each as well.
The forkserver has torch and gymnasium preloaded, which only makes starting the
``AsyncVectorEnv`` processes quicker; it does not change what is timed.

How
---
All six systems are started first and stay up for the whole run; each gets a
warm-up, then ``--repeats`` rounds time one window per system in turn
(round-robin), so that drifting background load hits every system alike. A
window is ``--seconds`` of wall time (or ``--steps`` env steps); the median
window is reported. Startup and teardown are never timed. A system that is not
being timed is idle: aiorl's workers block once their rollout slots are full
(a short pause before each window lets them get there), and the vector envs wait
for their next step. For aiorl a window is a number of env steps sized from its
previous rate; the rollouts its idle workers filled before the window are taken
(untimed) first, so that the window counts only what was produced during it.

The vector envs are stepped in a helper thread so the event loop, which owns
the aiorl trainers, stays responsive; it is idle while they run.

Run it (about 2-3 minutes on 2 cores; ``--quick`` takes about 20 seconds)::

    python benchmarks/throughput.py
    python benchmarks/throughput.py --quick
    python benchmarks/throughput.py --seconds 10 --repeats 5
    python benchmarks/throughput.py --check   # exit status 1 if a target ratio is missed
    python benchmarks/throughput.py --vector-only --workers 14   # native vector envs on a many-core machine

It prints a markdown table with each system's steps/s and the ratio of aiorl's
steps/s (same total number of envs) to it, then the target ratios:
aiorl(2x32) / SyncVectorEnv(64) >= 1.6 and aiorl(2x32) / AsyncVectorEnv(64) >= 5.
Other processes busy on the machine distort the numbers (aiorl, which needs
every core, more than ``SyncVectorEnv``, which needs one): on Linux the CPU that
processes outside the benchmark used during each window is measured from
``/proc`` and reported; a window during which they took more than 0.2 cores is
timed again (up to ``--busy-retries`` times) and the report warns about any
that stayed busy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import functools
import math
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from other_load import OtherLoadMeter, busy_warning, print_footer

import aiorl
from aiorl.distributions import ActionDistribution
from aiorl.envs.vector import seeds_at_construction
from aiorl.worker.fused import FusedActorCritic

ENV_ID = "CartPole-v1"
NUM_WORKERS = 2
ENVS_PER_WORKER = (8, 32)
ROLLOUT_LENGTH = 64
SEED = 0
AIORL_WARMUP_STEPS = 20_000
SETTLE_S = 0.2
"""Pause before each window, so that the previous system's leftover work is done."""
OTHER_LOAD_WARN = 0.2
"""Other processes' CPU use (cores) during a window above which it is redone and reported."""
FORKSERVER_PRELOAD = ["torch", "gymnasium"]
MAKE_DEFAULT_ENV = functools.partial(gym.make, ENV_ID)


@dataclass(frozen=True, slots=True)
class Target:
    """A required ratio aiorl(``envs``) / ``baseline``(``envs``) >= ``minimum``."""

    baseline: str
    envs: int
    minimum: float


TARGETS = (Target("SyncVectorEnv", 64, 1.6), Target("AsyncVectorEnv", 64, 5.0))
NATIVE_KINDS = ("envpool", "gymnasium")
"""Native vector envs measured as each worker's env (``envpool`` only where it is installed)."""
NATIVE_ENVS_PER_WORKER = 32
NATIVE_SUM_TARGET = 0.8
"""aiorl(2 x 32, a native vector env each) / (2 x that vector env of 32 alone) must reach this."""
ENVPOOL_ALONE_TARGET = 0.9
"""aiorl(2 x 32 EnvPool) / EnvPool alone (64 envs, 2 threads) must reach this."""


def native_kinds() -> tuple[str, ...]:
    """The native vector envs this machine can run."""
    try:
        import envpool  # noqa: F401
    except ImportError:
        return tuple(kind for kind in NATIVE_KINDS if kind != "envpool")
    return NATIVE_KINDS


def make_native(kind: str, num_envs: int, threads: int = 1) -> gym.vector.VectorEnv:
    """A native vector env of ``ENV_ID``: EnvPool's (with ``threads``) or gymnasium's own vectorized one."""
    if kind == "envpool":
        import envpool

        return envpool.make(ENV_ID, env_type="gymnasium", num_envs=num_envs, num_threads=threads, seed=SEED)
    return gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point")


@dataclass(frozen=True, slots=True)
class Budget:
    """How long each measurement runs."""

    seconds: float
    """Wall time of one timed window (ignored when ``steps`` is set)."""
    steps: int | None
    """Env steps of one timed window; ``None`` times by ``seconds``."""
    repeats: int
    """Timed windows per system; the median is reported."""
    warmup_seconds: float
    """Untimed stepping before the first window (vector envs)."""
    aiorl_warmup_steps: int
    """Untimed env steps before the first window (aiorl)."""
    busy_retries: int
    """Times a window is redone when other processes took more than ``OTHER_LOAD_WARN`` cores."""


@dataclass(slots=True)
class Measurement:
    """The timed windows of one system at one total number of envs."""

    system: str
    label: str
    envs: int
    family: str = "python"
    """``"python"`` (CartPole stepped one Python env at a time) or a native vector env's kind."""
    rates: list[float] = field(default_factory=list)
    other_load: list[float] = field(default_factory=list)
    """Per window: CPU cores used by processes outside this benchmark (empty where unknown)."""

    @property
    def median(self) -> float:
        """Median env steps per second over the windows."""
        return statistics.median(self.rates)


# ---- aiorl ---------------------------------------------------------------------------------


class AiorlSystem:
    """An ``aiorl.Trainer`` with ``NUM_WORKERS`` workers x ``envs_per_worker`` envs, sampling only."""

    system = "aiorl"
    family = "python"

    def __init__(self, trainer: aiorl.Trainer, envs_per_worker: int) -> None:
        self.trainer = trainer
        self.envs = NUM_WORKERS * envs_per_worker
        self.label = f"aiorl {NUM_WORKERS} workers x {envs_per_worker} envs"
        self.rate = 0.0

    @classmethod
    async def start_native(cls, stack: contextlib.AsyncExitStack, kind: str) -> AiorlSystem:
        """aiorl with each worker stepping one native vector env of ``NATIVE_ENVS_PER_WORKER`` envs."""
        env = aiorl.envs.VectorEnvs(ENV_ID, NATIVE_ENVS_PER_WORKER, kind)  # type: ignore[arg-type]
        system = await cls.start(stack, NATIVE_ENVS_PER_WORKER, env)
        system.system, system.family = f"aiorl+{kind}", kind
        system.label = f"aiorl {NUM_WORKERS} workers x {NATIVE_ENVS_PER_WORKER} envs, one {kind} vector env each"
        return system

    @classmethod
    async def start(
        cls,
        stack: contextlib.AsyncExitStack,
        envs_per_worker: int,
        env: aiorl.envs.EnvSource = ENV_ID,
        rollout_length: int = ROLLOUT_LENGTH,
    ) -> AiorlSystem:
        trainer = aiorl.Trainer(
            env,
            num_workers=NUM_WORKERS,
            envs_per_worker=envs_per_worker,
            rollout_length=rollout_length,
            seed=SEED,
        )
        return cls(await stack.enter_async_context(trainer), envs_per_worker)

    async def _take_filled_slots(self) -> None:
        # Idle workers have filled every slot: take those rollouts untimed first, or a
        # measurement would count up to num_workers * slots_per_worker rollouts it did not wait for.
        cfg = self.trainer.config
        await self.trainer.sample(cfg.num_workers * cfg.slots_per_worker * cfg.envs_per_worker * cfg.rollout_length)

    async def warm_up(self, budget: Budget) -> None:
        await self._take_filled_slots()
        self.rate = await self.trainer.sample(budget.aiorl_warmup_steps)

    async def window(self, budget: Budget) -> float:
        await self._take_filled_slots()
        steps = budget.steps if budget.steps is not None else max(1, int(self.rate * budget.seconds))
        self.rate = await self.trainer.sample(steps)
        return self.rate


# ---- gymnasium vector envs -------------------------------------------------------------------


@functools.cache
def trainer_policy() -> torch.nn.Module:
    """A CPU copy of the policy aiorl's trainer acts with on ``ENV_ID`` by default (its normaliser and MLP)."""
    return copy.deepcopy(aiorl.Trainer(ENV_ID, seed=SEED).policy).cpu()


class VectorSampler:
    """Steps a gymnasium vector env with the same per-step policy work as an aiorl worker.

    Thread-safe to close while a window runs in another thread: :meth:`close` stops
    the window after its current step and waits for it.
    """

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        self.venv = venv
        self.dist = ActionDistribution.for_space(venv.single_action_space)
        fused = FusedActorCritic.of(trainer_policy())
        assert fused is not None, "the trainer's default policy has a fused form"
        fused.refresh()
        self.policy = fused
        """The forward pass aiorl's workers run (:mod:`aiorl.worker.fused`)."""
        self.obs, _ = venv.reset(seed=None if seeds_at_construction(venv) else SEED)
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def step(self) -> None:
        """One batched forward pass and sample (as a worker acts), then one step of every env."""
        with torch.inference_mode():
            dist_inputs, _value = self.policy(torch.from_numpy(self.obs))
            actions, _logp = self.dist.sample(dist_inputs)
        self.obs, _rewards, _terminated, _truncated, _infos = self.venv.step(actions.numpy())

    def run(self, seconds: float | None = None, env_steps: int | None = None) -> float:
        """Step for ``seconds`` of wall time or ``env_steps`` env steps; return env steps per second."""
        if seconds is None and env_steps is None:
            raise ValueError("give seconds or env_steps")
        num_envs = self.venv.num_envs
        iterations = math.inf if env_steps is None else max(1, -(-env_steps // num_envs))
        with self._lock:
            done = 0
            started = time.perf_counter()
            deadline = math.inf if seconds is None else started + seconds
            while done < iterations and not self._stop.is_set():
                self.step()
                done += 1
                if time.perf_counter() >= deadline:
                    break
            return done * num_envs / (time.perf_counter() - started)

    def close(self) -> None:
        """Stop a running window after its current step, then close the vector env."""
        self._stop.set()
        with self._lock:
            self.venv.close()


class VectorSystem:
    """A ``SyncVectorEnv`` or ``AsyncVectorEnv`` of ``CartPole-v1`` with the policy in this process."""

    family = "python"

    def __init__(self, system: str, sampler: VectorSampler) -> None:
        self.system = system
        self.sampler = sampler
        self.envs = sampler.venv.num_envs
        self.label = f"{system} ({self.envs} envs)"

    @classmethod
    async def start_native(
        cls, stack: contextlib.AsyncExitStack, kind: str, num_envs: int, threads: int = 1
    ) -> VectorSystem:
        """A native vector env alone in this process, stepped with the same policy work."""
        venv = await asyncio.to_thread(make_native, kind, num_envs, threads)
        try:
            sampler = VectorSampler(venv)
        except BaseException:
            venv.close()
            raise
        stack.push_async_callback(asyncio.to_thread, sampler.close)
        system = cls(f"{kind} alone", sampler)
        system.family = kind
        threads_text = f", {threads} thread{'s' if threads > 1 else ''}" if kind == "envpool" else ""
        system.label = f"{kind} alone ({num_envs} envs{threads_text}), one process"
        return system

    @classmethod
    async def start(
        cls,
        stack: contextlib.AsyncExitStack,
        system: str,
        num_envs: int,
        make_env: Callable[[], gym.Env] = MAKE_DEFAULT_ENV,
    ) -> VectorSystem:
        sampler = await asyncio.to_thread(cls._make, system, num_envs, make_env)
        stack.push_async_callback(asyncio.to_thread, sampler.close)
        return cls(system, sampler)

    @staticmethod
    def _make(system: str, num_envs: int, make_env: Callable[[], gym.Env]) -> VectorSampler:
        env_fns: list[Callable[[], gym.Env]] = [make_env for _ in range(num_envs)]
        if system == "SyncVectorEnv":
            venv: gym.vector.VectorEnv = gym.vector.SyncVectorEnv(env_fns)
        elif system == "AsyncVectorEnv":
            # Never fork after torch is imported: each env process comes from the forkserver
            # (already running, with aiorl's preload, when the aiorl trainers started first).
            multiprocessing.get_context("forkserver").set_forkserver_preload(FORKSERVER_PRELOAD)
            venv = gym.vector.AsyncVectorEnv(env_fns, context="forkserver")
        else:
            raise ValueError(f"unknown vector env {system!r}")
        try:
            return VectorSampler(venv)
        except BaseException:
            venv.close()
            raise

    async def warm_up(self, budget: Budget) -> None:
        await asyncio.to_thread(self.sampler.run, seconds=budget.warmup_seconds)

    async def window(self, budget: Budget) -> float:
        if budget.steps is not None:
            return await asyncio.to_thread(self.sampler.run, env_steps=budget.steps)
        return await asyncio.to_thread(self.sampler.run, seconds=budget.seconds)


def _sampler_process(conn: multiprocessing.connection.Connection, kind: str, num_envs: int) -> None:
    """One process of :class:`ConcurrentVectorSystem`: a native vector env alone, one window per request."""
    torch.set_num_threads(1)
    sampler = VectorSampler(make_native(kind, num_envs))
    try:
        conn.send("ready")
        while (request := conn.recv()) is not None:
            seconds, env_steps = request
            conn.send(sampler.run(seconds=seconds, env_steps=env_steps))
    finally:
        sampler.close()


class ConcurrentVectorSystem:
    """``NUM_WORKERS`` processes each stepping a native vector env alone, timed at the same time.

    The same work as aiorl's workers without aiorl: what two processes running at once reach on
    this machine (the "sum of each alone" baseline times one process at a time, on an otherwise
    idle machine).
    """

    def __init__(self, kind: str, num_envs: int) -> None:
        self.system = f"{kind} alone x{NUM_WORKERS} at once"
        self.family = kind
        self.envs = NUM_WORKERS * num_envs
        self.label = f"{kind} alone ({num_envs} envs), {NUM_WORKERS} processes at once"
        self.conns: list[multiprocessing.connection.Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []

    @classmethod
    async def start(cls, stack: contextlib.AsyncExitStack, kind: str, num_envs: int) -> ConcurrentVectorSystem:
        system = cls(kind, num_envs)
        stack.push_async_callback(asyncio.to_thread, system.close)
        context = multiprocessing.get_context("forkserver")  # never fork after torch was imported
        for _ in range(NUM_WORKERS):
            ours, theirs = context.Pipe()
            process = context.Process(target=_sampler_process, args=(theirs, kind, num_envs), daemon=True)
            process.start()
            theirs.close()
            system.conns.append(ours)
            system.processes.append(process)
        for conn in system.conns:
            if await asyncio.to_thread(conn.recv) != "ready":
                raise RuntimeError(f"a {kind} sampler process did not start")
        return system

    def _run(self, seconds: float | None, env_steps: int | None) -> float:
        for conn in self.conns:
            conn.send((seconds, env_steps))
        return sum(conn.recv() for conn in self.conns)

    async def warm_up(self, budget: Budget) -> None:
        await asyncio.to_thread(self._run, budget.warmup_seconds, None)

    async def window(self, budget: Budget) -> float:
        if budget.steps is not None:
            return await asyncio.to_thread(self._run, None, max(1, budget.steps // NUM_WORKERS))
        return await asyncio.to_thread(self._run, budget.seconds, None)

    def close(self) -> None:
        """Ask each process to stop, then make sure it did."""
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(None)
            conn.close()
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()


System = AiorlSystem | VectorSystem | ConcurrentVectorSystem


async def measure_all(budget: Budget, python: bool = True, native: bool = True) -> list[Measurement]:
    """Start every system, warm each up, then time ``budget.repeats`` round-robin rounds.

    ``python``: the CartPole rows stepped one Python env at a time; ``native``: the native vector env rows.
    """
    async with contextlib.AsyncExitStack() as stack:
        systems: list[System] = []
        if python:
            # The aiorl trainers first: they start the forkserver the AsyncVectorEnv processes reuse.
            for envs_per_worker in ENVS_PER_WORKER:
                systems.append(await AiorlSystem.start(stack, envs_per_worker))
            for envs_per_worker in ENVS_PER_WORKER:
                for name in ("SyncVectorEnv", "AsyncVectorEnv"):
                    systems.append(await VectorSystem.start(stack, name, NUM_WORKERS * envs_per_worker))
            systems.sort(key=lambda s: s.envs)  # stable: aiorl, Sync, Async for each envs total
        for kind in native_kinds() if native else ():
            systems.append(await AiorlSystem.start_native(stack, kind))
            systems.append(await VectorSystem.start_native(stack, kind, NATIVE_ENVS_PER_WORKER))
            total = NUM_WORKERS * NATIVE_ENVS_PER_WORKER
            systems.append(await VectorSystem.start_native(stack, kind, total, NUM_WORKERS))
            systems.append(await ConcurrentVectorSystem.start(stack, kind, NATIVE_ENVS_PER_WORKER))
        return await time_systems(systems, budget)


async def time_systems(systems: Sequence[System], budget: Budget, name: str = "") -> list[Measurement]:
    """Warm every started system up, then time ``budget.repeats`` round-robin rounds of one window each."""
    _progress(f"{name}started {len(systems)} systems; warming up")
    for system in systems:
        await system.warm_up(budget)
    results = [Measurement(system.system, system.label, system.envs, system.family) for system in systems]
    meter = OtherLoadMeter()
    for round_ in range(1, budget.repeats + 1):
        for system, result in zip(systems, results, strict=True):
            rate, other = await _timed_window(system, budget, meter, f"{name}round {round_}/{budget.repeats}")
            result.rates.append(rate)
            if other is not None:
                result.other_load.append(other)
    return results


async def _timed_window(
    system: System, budget: Budget, meter: OtherLoadMeter, where: str
) -> tuple[float, float | None]:
    """Time one window of ``system``, again while other processes were busy; return (steps/s, other load)."""
    attempt = 0
    while True:
        await asyncio.sleep(SETTLE_S)
        before = meter.snapshot()
        rate = await system.window(budget)
        other = meter.cores(before, meter.snapshot())
        load = "" if other is None else f" (other load {other:.2f} cores)"
        _progress(f"{where}: {system.label}: {rate:,.0f} steps/s{load}")
        if other is None or other <= OTHER_LOAD_WARN or attempt >= budget.busy_retries:
            return rate, other
        attempt += 1
        _progress("  other processes were busy: timing this window again")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- report ----------------------------------------------------------------------------------


def _find(results: Sequence[Measurement], system: str, envs: int) -> Measurement | None:
    return next((m for m in results if m.system == system and m.envs == envs), None)


def _aiorl_system(family: str) -> str:
    return "aiorl" if family == "python" else f"aiorl+{family}"


def _aiorl_ratio(results: Sequence[Measurement], baseline: Measurement) -> float | None:
    ours = _find(results, _aiorl_system(baseline.family), baseline.envs)
    return None if ours is None else ours.median / baseline.median


def _config(envs: int) -> str:
    return f"{NUM_WORKERS}x{envs // NUM_WORKERS}"


def render_table(results: Sequence[Measurement]) -> str:
    """The results as a markdown table; the ratio is aiorl's steps/s at the same envs total."""
    lines = [
        "| system | envs total | steps/s (median) | min - max | aiorl ratio | other load (cores, max) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        ratio = _aiorl_ratio(results, m)
        ratio_text = "-" if ratio is None else f"{ratio:.2f}x"
        spread = f"{min(m.rates):,.0f} - {max(m.rates):,.0f}"
        other = f"{max(m.other_load):.2f}" if m.other_load else "n/a"
        lines.append(f"| {m.label} | {m.envs} | {m.median:,.0f} | {spread} | {ratio_text} | {other} |")
    return "\n".join(lines)


def render_warning(results: Sequence[Measurement]) -> str | None:
    """A warning if other processes took noticeable CPU during any window."""
    loads = [load for m in results for load in m.other_load]
    why = "aiorl (which needs every core) loses more to that than SyncVectorEnv (one core); "
    return busy_warning(loads, OTHER_LOAD_WARN, "windows", why)


def render_ratios(results: Sequence[Measurement]) -> tuple[str, bool]:
    """Target and comparison ratios as markdown bullets, and whether every target was met."""
    lines: list[str] = []
    all_met = True
    for target in TARGETS:
        ours, theirs = _find(results, "aiorl", target.envs), _find(results, target.baseline, target.envs)
        if ours is None or theirs is None:
            continue
        ratio = ours.median / theirs.median
        met = ratio >= target.minimum
        all_met = all_met and met
        lines.append(
            f"- target: aiorl({_config(target.envs)}) / {target.baseline}({target.envs}) "
            f"= **{ratio:.2f}x** (target >= {target.minimum:g}): {'met' if met else 'MISSED'}"
        )
    native_lines, native_met = _native_ratios(results)
    lines += native_lines
    all_met = all_met and native_met
    total = NUM_WORKERS * NATIVE_ENVS_PER_WORKER
    targeted = {(t.baseline, t.envs) for t in TARGETS} | {("envpool alone", total)}
    targeted |= {(f"{kind} alone x{NUM_WORKERS} at once", total) for kind in NATIVE_KINDS}
    for m in results:
        ratio = _aiorl_ratio(results, m)
        if m.system.startswith("aiorl") or (m.system, m.envs) in targeted or ratio is None:
            continue
        ours = _aiorl_system(m.family)
        lines.append(f"- {ours}({_config(m.envs)}) / {m.system}({m.envs}) = {ratio:.2f}x (no target)")
    return "\n".join(lines), all_met


def _native_ratios(results: Sequence[Measurement]) -> tuple[list[str], bool]:
    """The native vector env targets: against the sum of each worker's env alone, and EnvPool (64, 2 threads)."""
    lines, all_met = [], True
    total = NUM_WORKERS * NATIVE_ENVS_PER_WORKER
    for kind in NATIVE_KINDS:
        ours = _find(results, f"aiorl+{kind}", total)
        one = _find(results, f"{kind} alone", NATIVE_ENVS_PER_WORKER)
        if ours is None or one is None:
            continue
        one_name = f"{NUM_WORKERS} x {kind} alone({NATIVE_ENVS_PER_WORKER})"
        checks = [(one_name, NUM_WORKERS * one.median, NATIVE_SUM_TARGET)]
        together = _find(results, f"{kind} alone", total)
        if kind == "envpool" and together is not None:
            checks.append((f"envpool alone({total}, {NUM_WORKERS} threads)", together.median, ENVPOOL_ALONE_TARGET))
        for name, baseline, minimum in checks:
            ratio = ours.median / baseline
            met = ratio >= minimum
            all_met = all_met and met
            lines.append(
                f"- target: aiorl+{kind}({_config(total)}) / {name} = **{ratio:.2f}x** "
                f"(target >= {minimum:g}): {'met' if met else 'MISSED'}"
            )
        at_once = _find(results, f"{kind} alone x{NUM_WORKERS} at once", total)
        if at_once is not None:
            cost = at_once.median / (NUM_WORKERS * one.median)
            lines.append(
                f"- {NUM_WORKERS} {kind} processes at once / {one_name} = {cost:.2f}x "
                f"(what running them at once costs on this machine); aiorl+{kind}({_config(total)}) / them "
                f"= {ours.median / at_once.median:.2f}x (no target)"
            )
    return lines, all_met


def describe_setup(budget: Budget) -> str:
    """A few lines that say what produced the numbers."""
    window = f"{budget.steps:,} env steps" if budget.steps is not None else f"{budget.seconds:g} s"
    versions = (
        f"Python {platform.python_version()}, torch {torch.__version__}, gymnasium {gym.__version__}, "
        f"numpy {np.__version__}, aiorl {aiorl.__version__}"
    )
    return "\n".join(
        [
            f"- env: {ENV_ID}; policy: aiorl's default (ObservationNormalizer + ActorCritic, actor and critic "
            "MLPs 64x64 tanh) everywhere, one batched "
            "forward pass + categorical sample + log-prob per step; sampling only, no learning",
            f"- aiorl: {NUM_WORKERS} worker processes, rollout_length={ROLLOUT_LENGTH}, 1 torch thread per "
            "worker; measured with Trainer.sample",
            "- SyncVectorEnv / AsyncVectorEnv: policy in the main process with torch.set_num_threads(1); "
            "AsyncVectorEnv: context='forkserver', one process per env",
            f"- native vector envs ({', '.join(native_kinds())}): aiorl's workers each step one of "
            f"{NATIVE_ENVS_PER_WORKER} envs (EnvPool: 1 thread); alone: the same policy work in the main process",
            f"- timing: warm-up, then {budget.repeats} round(s) of one {window} window per system "
            "(round-robin); median reported",
            f"- machine: {os.cpu_count()} CPUs ({platform.machine()}); {versions}",
        ]
    )


# ---- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Sampling throughput of aiorl vs gymnasium vector envs.")
    parser.add_argument("--seconds", type=float, default=6.0, help="wall time of one timed window (default: 6)")
    parser.add_argument("--steps", type=int, help="env steps per timed window, for every system (instead of --seconds)")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows per system (default: 3)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds for vector envs (default: 2)")
    parser.add_argument("--quick", action="store_true", help="a short run: 1 round of 1.5 s windows, short warm-ups")
    parser.add_argument(
        "--busy-retries",
        type=int,
        default=2,
        help=f"redo a window up to this many times while other processes use > {OTHER_LOAD_WARN} cores (default: 2)",
    )
    parser.add_argument("--check", action="store_true", help="exit with status 1 if a target ratio is missed")
    parser.add_argument(
        "--vector-only", action="store_true", help="only the native vector env rows (EnvPool, gymnasium's vectorized)"
    )
    parser.add_argument("--no-vector", action="store_true", help="leave the native vector env rows out")
    parser.add_argument(
        "--workers",
        type=int,
        default=NUM_WORKERS,
        help="aiorl's worker processes, and the processes of the 'alone at once' rows (default: 2; "
        "the targets are for 2)",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.repeats < 1 or args.busy_retries < 0:
        parser.error("--seconds must be > 0, --warmup >= 0, --repeats >= 1 and --busy-retries >= 0")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    return args


def budget_from(args: argparse.Namespace) -> Budget:
    if args.quick:
        return Budget(
            seconds=1.5,
            steps=args.steps,
            repeats=1,
            warmup_seconds=0.5,
            aiorl_warmup_steps=10_000,
            busy_retries=args.busy_retries,
        )
    return Budget(
        seconds=args.seconds,
        steps=args.steps,
        repeats=args.repeats,
        warmup_seconds=args.warmup,
        aiorl_warmup_steps=AIORL_WARMUP_STEPS,
        busy_retries=args.busy_retries,
    )


def main(argv: Sequence[str] | None = None) -> int:
    global NUM_WORKERS
    args = parse_args(argv)
    NUM_WORKERS = args.workers  # read by every system and table below
    budget = budget_from(args)
    torch.set_num_threads(1)
    started = time.monotonic()
    try:
        results = aiorl.run(measure_all(budget, python=not args.vector_only, native=not args.no_vector))
    except KeyboardInterrupt:
        print("interrupted; every worker and env process was stopped", file=sys.stderr)
        return 130
    assert isinstance(results, list)
    ratios, all_met = render_ratios(results)
    print(f"## Sampling throughput, {ENV_ID} (env steps/s, no learning)")
    print()
    print(describe_setup(budget))
    print()
    print(render_table(results))
    print()
    print(
        "aiorl ratio = steps/s of aiorl with the same total number of envs / this row's steps/s. "
        "other load = CPU cores used by processes outside this benchmark during the row's windows."
    )
    print()
    print(ratios)
    print_footer(render_warning(results), started)
    return 1 if args.check and not all_met else 0


if __name__ == "__main__":
    sys.exit(main())
