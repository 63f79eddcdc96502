"""Scaling with the number of worker processes: trained env steps/s, time to target and the learner's busy share.

What is measured
----------------
For each worker count ``w`` in 1, 2, 4, 8, ... up to ``os.cpu_count() - 2`` (and
that count itself; 1 and 2 always; ``--max-workers`` caps it, ``--workers`` lists
the counts instead), on the learner device ``--device`` (default ``cpu``):

- ``cartpole``: the ``CartPole-v1`` preset as a user scales it,
  ``aiorl.Trainer.from_preset("CartPole-v1", num_workers=w, seed=s)`` (PPO, 16
  envs per worker, rollouts of 32 steps since 2026-11-30, APPO before; the setup lines
  print the preset), with one rollout per worker in each batch, so the batch grows with
  ``w`` (``--rollouts-per-batch`` fixes it instead), then
  ``await trainer.run(total_steps=--total-steps, target_return=475)``. Reported
  per run: whether and when the target was reached (training wall time,
  ``TrainResult.wall_time``; and with building the trainer and starting its
  workers), env steps trained by then, trained steps/s (``env_steps /
  wall_time``), and the learner's busy share (the sum of ``UpdateReport.update_s``
  over the run / its wall time: near 100% the learner is the bottleneck and more
  workers cannot help). Medians over ``--seeds`` seeds per worker count.
- ``image``: an Atari-sized env defined here (:class:`ImageEnv`: ``Box(0, 255,
  (84, 84, 4), uint8)`` frames from a fixed bank of random images, ``Discrete(6)``,
  reward 1 when the action matches the frame's label, 200-step episodes; a step
  is an index update and a 28 KB copy), trained with ``aiorl.PPO()``
  defaults and the default policy for images (:class:`aiorl.CNNActorCritic`),
  ``--image-envs`` envs per worker, for ``--seconds`` of training wall time
  (``trainer.stop()`` then ends the run after the update in progress). No target:
  trained steps/s over the whole run, and in the steady state (from the first
  update's end to the last one's, which leaves out filling the first batch), with
  the learner's busy share in both.
- ``pong`` (only when asked for: ``--tasks pong``; needs ``aiorl[atari]`` or ``aiorl[envpool]``):
  the ``ALE/Pong-v5`` preset's algorithm and settings with ``w`` workers x ``--atari-envs``
  envs, its games from EnvPool (``AtariEnv.vector``, ``--atari envpool``, the default) or
  ale-py with gymnasium's wrappers (``--atari ale``), for ``--seconds`` of training as for
  ``image``; reported also in frames/s (4 per env step) and with the mean return of the last
  20 episodes when the run ended (Pong's score, from -21 to 21).

How
---
Runs are sequential in one process (per seed: each worker count in turn, the
``cartpole`` task then ``image``). Before the first run the script starts aiorl's
forkserver (which preloads torch) and builds one trainer per task, so no run's
start-up time includes the first-time costs of a process. The trainer's learner
uses its default torch thread count (one for the ``cartpole`` task's 64x64 MLP,
every core for the ``image`` task's CNN on the CPU, see ``learner_threads``). The
CPU used by other processes during each run is measured from ``/proc`` and the
script waits (up to ``--quiet-wait`` s) for an idle machine before each run. With
more workers than free cores, workers and learner share cores: the busy share then
says who waits.

Run it (about 5 minutes on 2 cores, where the worker counts are 1 and 2;
``--quick`` about 40 s)::

    python benchmarks/scaling.py
    python benchmarks/scaling.py --quick
    python benchmarks/scaling.py --tasks cartpole --seeds 5 --max-workers 8
    python benchmarks/scaling.py --tasks image --seconds 60 --device cuda
    python benchmarks/scaling.py --tasks image --workers 2 14 --device cuda --worker-device cuda  # acting on the GPU
    python benchmarks/scaling.py --tasks pong --workers 14 --seconds 300 --device cuda --seeds 1
    python benchmarks/scaling.py --tasks image --workers 14 --learner-threads 2   # not the automatic count

It prints markdown tables and the setup to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from other_load import OtherLoadMeter, busy_warning, print_footer

import aiorl
from aiorl.backends.local.process import start_forkserver, worker_context
from aiorl.envs import AtariEnv
from aiorl.presets import get_preset

CARTPOLE = "CartPole-v1"
PONG = "ALE/Pong-v5"
FRAMES_PER_STEP = {"pong": 4}
"""Emulator frames per env step (Atari's frame skip); 1 for the other tasks."""
CARTPOLE_TARGET = 475.0
QUIET_LOAD = 0.3
"""Other processes' CPU use (cores) below which the machine counts as idle."""
IMAGE_SHAPE = (84, 84, 4)
IMAGE_ACTIONS = 6
IMAGE_BANK = 32
"""Distinct frames per env."""
IMAGE_EPISODE_STEPS = 200
NO_BUDGET = 10**12
"""``total_steps`` for the timed image runs: ``trainer.stop()`` ends them."""


class ImageEnv(gym.Env):
    """Atari-sized observations at almost no cost: a bank of random frames, ``Discrete(6)`` actions.

    Frame ``i`` has the label ``i % 6``; the reward is 1 when the action equals the label of
    the frame shown, and the next frame depends on the action. Episodes are truncated after
    ``IMAGE_EPISODE_STEPS`` steps. Module-level, so it pickles into worker processes.
    """

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0, 255, IMAGE_SHAPE, np.uint8)
        self.action_space = gym.spaces.Discrete(IMAGE_ACTIONS)
        self._frames: np.ndarray | None = None
        self._frame = 0
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if self._frames is None or seed is not None:
            self._frames = self.np_random.integers(0, 256, (IMAGE_BANK, *IMAGE_SHAPE), dtype=np.uint8)
        self._frame = int(self.np_random.integers(IMAGE_BANK))
        self._t = 0
        return self._frames[self._frame].copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        assert self._frames is not None, "call reset() first"
        reward = 1.0 if int(action) == self._frame % IMAGE_ACTIONS else 0.0
        self._frame = (self._frame * 5 + int(action) + 1) % IMAGE_BANK
        self._t += 1
        return self._frames[self._frame].copy(), reward, False, self._t >= IMAGE_EPISODE_STEPS, {}


# ---- runs --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """One training run of one task with one worker count and seed."""

    task: str
    workers: int
    seed: int
    start_s: float = math.nan
    """Building the trainer and starting its workers."""
    train_s: float = math.nan
    """``TrainResult.wall_time``."""
    steps: int = 0
    """Env steps trained on in the run."""
    collected: int = 0
    updates: int = 0
    batch_steps: int = 0
    update_s: list[float] = field(default_factory=list)
    report_times: list[float] = field(default_factory=list)
    """``perf_counter`` when each update's report arrived."""
    report_steps: list[int] = field(default_factory=list)
    """Env steps trained (trainer's life) at each report."""
    solved: bool = False
    mean_return: float = math.nan
    learner_threads: int = 0
    other_load: float | None = None
    error: str | None = None

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.train_s if self.train_s > 0 else math.nan

    @property
    def busy_share(self) -> float:
        return sum(self.update_s) / self.train_s if self.train_s > 0 else math.nan

    @property
    def steady_s(self) -> float:
        """From the end of the first update to the end of the last one."""
        return self.report_times[-1] - self.report_times[0] if len(self.report_times) > 1 else math.nan

    @property
    def steady_steps_per_s(self) -> float:
        span = self.steady_s
        return (self.report_steps[-1] - self.report_steps[0]) / span if span > 0 else math.nan

    @property
    def steady_busy_share(self) -> float:
        span = self.steady_s
        return sum(self.update_s[1:]) / span if span > 0 else math.nan

    @property
    def time_to_target(self) -> float:
        return self.train_s if self.solved else math.inf

    def record(self, report: aiorl.UpdateReport) -> None:
        """``on_update`` callback."""
        self.report_times.append(time.perf_counter())
        self.report_steps.append(report.env_steps)
        self.update_s.append(report.update_s)
        self.batch_steps = max(self.batch_steps, report.batch_steps)


async def train(
    run: Run, make_trainer: Callable[[], aiorl.Trainer], *, stop_after_s: float | None = None, **run_kwargs: Any
) -> Run:
    """Build a trainer, start it, ``run(**run_kwargs)`` it (``stop_after_s``: ``stop()`` it then), fill ``run``."""
    t0 = time.perf_counter()
    trainer = make_trainer()
    async with trainer:
        run.start_s = time.perf_counter() - t0
        run.learner_threads = trainer.learner_threads  # set in the learner's own thread
        stopper = None
        if stop_after_s is not None:
            stopper = asyncio.get_running_loop().call_later(stop_after_s, trainer.stop)
        try:
            result = await trainer.run(on_update=run.record, **run_kwargs)
        finally:
            if stopper is not None:
                stopper.cancel()
    run.train_s = result.wall_time
    run.steps = result.env_steps
    run.collected = result.steps_collected
    run.updates = result.updates
    run.solved = result.reached_target
    run.mean_return = result.mean_return
    return run


def cartpole_run(workers: int, seed: int, args: argparse.Namespace) -> Run:
    options: dict[str, Any] = {"num_workers": workers, "seed": seed, "device": args.device, **trainer_options(args)}
    if args.rollouts_per_batch is not None:
        options["rollouts_per_batch"] = args.rollouts_per_batch
    if args.no_compile:
        options["algo"] = dataclasses.replace(get_preset(CARTPOLE).algo, compile=False)
    run = Run("cartpole", workers, seed)
    return asyncio.run(
        train(
            run,
            lambda: aiorl.Trainer.from_preset(CARTPOLE, **options),
            total_steps=args.total_steps,
            target_return=CARTPOLE_TARGET,
        )
    )


def image_run(workers: int, seed: int, args: argparse.Namespace) -> Run:
    run = Run("image", workers, seed)
    return asyncio.run(
        train(
            run,
            lambda: aiorl.Trainer(
                ImageEnv,
                aiorl.PPO(),
                num_workers=workers,
                envs_per_worker=args.image_envs,
                seed=seed,
                device=args.device,
                **trainer_options(args),
            ),
            total_steps=NO_BUDGET,
            stop_after_s=args.seconds,
        )
    )


def pong_trainer(workers: int, seed: int, args: argparse.Namespace) -> aiorl.Trainer:
    """The Pong preset's algorithm and options with ``workers`` workers of ``--atari-envs`` games each."""
    preset = get_preset(PONG)
    game = AtariEnv(PONG)
    env = game.vector(args.atari_envs) if args.atari == "envpool" else game
    options = {**preset.options, "num_workers": workers, "envs_per_worker": args.atari_envs}
    return aiorl.Trainer(env, preset.algo, **options, **trainer_options(args), seed=seed, device=args.device)


def trainer_options(args: argparse.Namespace) -> dict[str, Any]:
    """``worker_device``, and ``learner_threads`` when ``--learner-threads`` is given (else the automatic choice)."""
    options: dict[str, Any] = {"worker_device": args.worker_device}
    if args.learner_threads is not None:
        options["learner_threads"] = args.learner_threads
    return options


def pong_run(workers: int, seed: int, args: argparse.Namespace) -> Run:
    run = Run("pong", workers, seed)
    return asyncio.run(
        train(run, lambda: pong_trainer(workers, seed, args), total_steps=NO_BUDGET, stop_after_s=args.seconds)
    )


TASKS: dict[str, Callable[[int, int, argparse.Namespace], Run]] = {
    "cartpole": cartpole_run,
    "image": image_run,
    "pong": pong_run,
}
DEFAULT_TASKS = ["cartpole", "image"]
WARM_UP: dict[str, Callable[[argparse.Namespace], aiorl.Trainer]] = {
    # The first trainer built in a process takes ~2 s more (lazy imports, torch's first use).
    "cartpole": lambda args: aiorl.Trainer.from_preset(CARTPOLE, num_workers=1, device=args.device),
    "image": lambda args: aiorl.Trainer(ImageEnv, aiorl.PPO(), num_workers=1, device=args.device),
    "pong": lambda args: pong_trainer(1, 0, args),
}


# ---- driver ------------------------------------------------------------------------------------


def worker_counts(limit: int) -> list[int]:
    """1, 2, 4, ... up to ``limit``, and ``limit`` itself (1 and 2 always)."""
    counts = [1, 2]
    while counts[-1] * 2 <= limit:
        counts.append(counts[-1] * 2)
    if limit > counts[-1]:
        counts.append(limit)
    return counts


def wait_for_quiet(meter: OtherLoadMeter, max_wait_s: float) -> None:
    """Wait (up to ``max_wait_s``) until other processes use less than ``QUIET_LOAD`` cores."""
    deadline = time.monotonic() + max_wait_s
    warned = False
    while max_wait_s > 0:
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


def warm_up_forkserver() -> None:
    """Start aiorl's forkserver and wait until it has imported its preload (torch, gymnasium).

    ``start_forkserver`` returns once the server process is launched; the first process
    forked from it waits for the imports, so one throwaway process takes that wait here.
    """
    context = worker_context()
    start_forkserver(context)
    process = context.Process(target=os.getpid, name="aiorl-benchmark-warm-up")  # type: ignore[attr-defined]
    process.start()
    process.join()


def run_all(args: argparse.Namespace) -> list[Run]:
    meter = OtherLoadMeter()
    runs: list[Run] = []
    for index in range(args.seeds):
        seed = args.first_seed + index
        for workers in args.workers:
            for task in args.tasks:
                wait_for_quiet(meter, args.quiet_wait)
                _progress(f"seed {seed} {task} {workers} worker(s) ...")
                start = meter.snapshot()
                try:
                    run = TASKS[task](workers, seed, args)
                except Exception as exc:
                    run = Run(task, workers, seed, error=f"{type(exc).__name__}: {exc}")
                run.other_load = meter.cores(start, meter.snapshot())
                runs.append(run)
                _progress("  " + describe_run(run))
    return runs


def describe_run(run: Run) -> str:
    if run.error is not None:
        return f"failed: {run.error}"
    load = "" if run.other_load is None else f", other load {run.other_load:.2f} cores"
    outcome = ""
    if run.task == "cartpole":
        outcome = f"{'solved' if run.solved else 'NOT solved'}, mean return {run.mean_return:.1f}; "
    elif run.task == "pong":
        outcome = f"mean return {run.mean_return:.1f}; "
    return (
        f"{outcome}{run.steps:,} steps trained in {run.train_s:.1f} s ({run.steps_per_s:,.0f}/s, "
        f"{run.updates} updates of {run.batch_steps:,}, learner busy {run.busy_share:.0%}; "
        f"start {run.start_s:.1f} s{load})"
    )


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- report ------------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def _num(value: float, fmt: str = ",.0f") -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "not reached"
    return format(value, fmt)


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.0%}"


def render_cartpole(runs: Sequence[Run], counts: Sequence[int]) -> str:
    lines = [
        "| workers | batch | reached 475 | time to target s (median) | with start s | env steps trained "
        "| trained steps/s | learner busy | speed-up vs 1 worker |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = math.nan
    for workers in counts:
        done = [r for r in runs if r.task == "cartpole" and r.workers == workers and r.error is None]
        if not done:
            continue
        time_s = _median([r.time_to_target for r in done])
        with_start = _median([r.time_to_target + r.start_s for r in done])
        rate = _median([r.steps_per_s for r in done])
        if workers == counts[0]:
            base = rate
        speedup = rate / base if base > 0 else math.nan
        lines.append(
            f"| {workers} | {_median([r.batch_steps for r in done]):,.0f} | {sum(r.solved for r in done)}/{len(done)} "
            f"| {_num(time_s, '.1f')} | {_num(with_start, '.1f')} | {_num(_median([r.steps for r in done]))} "
            f"| {_num(rate)} | {_pct(_median([r.busy_share for r in done]))} | {_num(speedup, '.2f')}x |"
        )
    return "\n".join(lines)


def render_timed(runs: Sequence[Run], counts: Sequence[int], task: str) -> str:
    """The table of a task trained for a fixed time (``image``, ``pong``: with frames/s and the return reached)."""
    frames = FRAMES_PER_STEP.get(task)
    extra = " steady trained frames/s | mean return at the end |" if frames else ""
    lines = [
        "| workers | batch | updates | trained steps/s | learner busy | steady trained steps/s | steady learner busy "
        f"| speed-up vs {counts[0]} worker(s) (steady) |{extra}",
        "|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if frames else ""),
    ]
    base = math.nan
    for workers in counts:
        done = [r for r in runs if r.task == task and r.workers == workers and r.error is None]
        if not done:
            continue
        steady = _median([r.steady_steps_per_s for r in done])
        if workers == counts[0]:
            base = steady
        speedup = steady / base if base > 0 else math.nan
        row = (
            f"| {workers} | {_median([r.batch_steps for r in done]):,.0f} | {_median([r.updates for r in done]):.0f} "
            f"| {_num(_median([r.steps_per_s for r in done]))} | {_pct(_median([r.busy_share for r in done]))} "
            f"| {_num(steady)} | {_pct(_median([r.steady_busy_share for r in done]))} | {_num(speedup, '.2f')}x |"
        )
        if frames:
            row += f" {_num(steady * frames)} | {_num(_median([r.mean_return for r in done]), '.1f')} |"
        lines.append(row)
    return "\n".join(lines)


def render_runs(runs: Sequence[Run]) -> str:
    lines = [
        "| task | workers | seed | reached target | training s | start s | env steps trained (collected) "
        "| updates | trained steps/s | learner busy | learner threads | other load (cores) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (r.task, r.workers, r.seed)):
        if r.error is not None:
            lines.append(f"| {r.task} | {r.workers} | {r.seed} | error: {r.error} |||||||||")
            continue
        reached = ("yes" if r.solved else "NO") if r.task == "cartpole" else "-"
        load = "n/a" if r.other_load is None else f"{r.other_load:.2f}"
        lines.append(
            f"| {r.task} | {r.workers} | {r.seed} | {reached} | {r.train_s:.1f} | {r.start_s:.1f} "
            f"| {r.steps:,} ({r.collected:,}) | {r.updates} | {_num(r.steps_per_s)} | {_pct(r.busy_share)} "
            f"| {r.learner_threads} | {load} |"
        )
    return "\n".join(lines)


def describe_setup(args: argparse.Namespace) -> str:
    versions = (
        f"Python {platform.python_version()}, torch {torch.__version__}, gymnasium {gym.__version__}, "
        f"numpy {np.__version__}, aiorl {aiorl.__version__}"
    )
    batch = "num_workers (the preset's)" if args.rollouts_per_batch is None else str(args.rollouts_per_batch)
    preset = get_preset(CARTPOLE)
    return "\n".join(
        [
            f"- cartpole: Trainer.from_preset({CARTPOLE!r}, num_workers=w, seed=s, device={args.device!r}"
            + (", algo=PPO(compile=False)), " if args.no_compile else "), ")
            + f"rollouts per batch {batch}; run(total_steps={args.total_steps:,}, target_return={CARTPOLE_TARGET:g})",
            f"- the preset: {preset.algo!r}, {preset.options}",
            f"- image: Trainer(ImageEnv, PPO(), num_workers=w, envs_per_worker={args.image_envs}, seed=s, "
            f"device={args.device!r}) (CNNActorCritic), stopped after {args.seconds:g} s of training",
            f"- pong: the {PONG} preset's {get_preset(PONG).algo!r} and options with num_workers=w, "
            f"envs_per_worker={args.atari_envs}, games from {args.atari}, device={args.device!r}, stopped after "
            f"{args.seconds:g} s of training",
            f"- workers act on {args.worker_device!r} (worker_device)",
            f"- worker counts {', '.join(map(str, args.workers))}; seeds {args.first_seed}..."
            f"{args.first_seed + args.seeds - 1}; medians over seeds",
            f"- machine: {os.cpu_count()} CPUs ({platform.machine()}); {versions}",
        ]
    )


def render_warning(runs: Sequence[Run]) -> str | None:
    return busy_warning([r.other_load for r in runs if r.other_load is not None], QUIET_LOAD, "runs")


# ---- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Trained env steps/s, time to target and learner busy share against the number of workers."
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, workers 1 and 2, short budgets")
    parser.add_argument(
        "--tasks", nargs="+", choices=sorted(TASKS), default=DEFAULT_TASKS, help="default: cartpole image"
    )
    parser.add_argument(
        "--max-workers", type=int, help="the largest worker count (default: os.cpu_count() - 2, at least 2)"
    )
    parser.add_argument("--workers", type=int, nargs="+", help="worker counts to run (instead of 1, 2, 4, ...)")
    parser.add_argument("--seeds", type=int, help="seeds per worker count (default: 3; --quick: 1)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed (default: 0)")
    parser.add_argument("--device", default="cpu", help="the learner's torch device (default: cpu)")
    parser.add_argument(
        "--worker-device", default="cpu", help="the device the workers act on (worker_device; default: cpu)"
    )
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="cartpole: PPO(compile=False) (a CUDA learner otherwise compiles for ~14 s at its first update)",
    )
    parser.add_argument(
        "--total-steps",
        type=int,
        help="cartpole: env-step budget per run (default: 1,000,000; --quick: 300,000)",
    )
    parser.add_argument(
        "--rollouts-per-batch", type=int, help="cartpole: rollouts per update (default: the preset's, num_workers)"
    )
    parser.add_argument("--seconds", type=float, help="image: training wall time per run (default: 30; --quick: 10)")
    parser.add_argument("--image-envs", type=int, help="image: envs per worker (default: 8; --quick: 4)")
    parser.add_argument("--atari-envs", type=int, default=8, help="pong: games per worker (default: 8)")
    parser.add_argument(
        "--learner-threads", type=int, help="the learner's torch threads (default: the trainer's automatic choice)"
    )
    parser.add_argument(
        "--atari",
        choices=["envpool", "ale"],
        default="envpool",
        help="pong: EnvPool's Atari or ale-py's (default: envpool)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="seconds to wait before each run for other processes to go idle (default: 30; 0: never wait)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    limit = max(2, (os.cpu_count() or 1) - 2) if args.max_workers is None else args.max_workers
    defaults = {
        "workers": [w for w in worker_counts(2 if quick else limit) if w <= limit],
        "seeds": 1 if quick else 3,
        "total_steps": 300_000 if quick else 1_000_000,
        "seconds": 10.0 if quick else 30.0,
        "image_envs": 4 if quick else 8,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.workers = sorted(set(args.workers))
    problems = []
    if not args.workers or min(args.workers) < 1:
        problems.append("worker counts must be >= 1")
    if (
        min(args.seeds, args.total_steps, args.image_envs, args.atari_envs) < 1
        or args.seconds <= 0
        or args.quiet_wait < 0
    ):
        problems.append("--seeds, --total-steps and --image-envs must be >= 1, --seconds > 0, --quiet-wait >= 0")
    if args.rollouts_per_batch is not None and args.rollouts_per_batch < 1:
        problems.append("--rollouts-per-batch must be >= 1")
    for flag, device in (("--device", args.device), ("--worker-device", args.worker_device)):
        if device.startswith("cuda") and not torch.cuda.is_available():
            problems.append(f"{flag} {device}: no CUDA here")
    if problems:
        parser.error("; ".join(problems))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    _progress("warming up: aiorl's forkserver and one trainer per task (not started), so that no run pays for it")
    warm_up_forkserver()
    for task in args.tasks:
        WARM_UP[task](args)
    try:
        runs = run_all(args)
    except KeyboardInterrupt:
        print("interrupted; every worker process was stopped", file=sys.stderr)
        return 130
    print(f"## Scaling with the number of workers (learner on {args.device})")
    print()
    print(describe_setup(args))
    if "cartpole" in args.tasks:
        print()
        print(f"### {CARTPOLE} preset to a mean return of {CARTPOLE_TARGET:g}")
        print()
        print(render_cartpole(runs, args.workers))
    if "image" in args.tasks:
        print()
        print(f"### ImageEnv (84x84x4 uint8, Discrete(6)), {args.seconds:g} s of training per run")
        print()
        print(render_timed(runs, args.workers, "image"))
    if "pong" in args.tasks:
        print()
        print(f"### {PONG} ({args.atari}), {args.seconds:g} s of training per run")
        print()
        print(render_timed(runs, args.workers, "pong"))
    print()
    print(render_runs(runs))
    print()
    print(
        "time to target = training wall time (TrainResult.wall_time) until the mean return of the last 20 "
        "episodes reached the target; with start = plus building the trainer and starting its workers; "
        "trained steps/s = env steps trained / training wall time; learner busy = sum of UpdateReport.update_s "
        "/ training wall time; steady = from the end of the first update to the end of the last; batch = env "
        "steps per update."
    )
    print_footer(render_warning(runs), started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
