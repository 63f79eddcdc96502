"""Trained env steps/s with the defaults against what one process can merely *sample*.

What
----
The figure a user feels is how many env steps per second end up *trained on*, not
how fast workers collect. This script measures, in one run on one machine:

- **aiorl**: ``aiorl.Trainer("CartPole-v1", num_workers=2, envs_per_worker=32)`` with
  every other setting at its default (algorithm, learner, normalisation), training;
  the rate is env steps trained per second in steady state: from the second to the
  last learner update of a window (the batches that idle workers filled while the other
  systems ran, one per rollout slot of a worker, are trained first and left out).
- **SyncVectorEnv(32)**: gymnasium's lockstep vector env in this process, *sampling
  only* with the same MLP (one batched forward pass of ``aiorl.ActorCritic`` in the fused
  form aiorl's workers act with, a categorical sample, one ``step`` of every env), i.e.
  the speed ceiling of the simplest single-process training loop before it learns
  anything. Issue 11's target is defined against this row.
- **SyncVectorEnv(64)**: the same with as many envs as aiorl's two workers step (a
  lockstep vector env samples faster per env with more envs): for reference.

The windows alternate (aiorl, then SyncVectorEnv, ``--repeats`` times), so drifts of
the machine's speed hit both alike; medians are reported, with the ratio and the
target ``aiorl / SyncVectorEnv >= 0.65`` (issue 11). The CPU that other processes
used during each window is measured from ``/proc``: run it on an idle machine.

Run it::

    python benchmarks/trained_throughput.py              # ~1 minute on 2 cores
    python benchmarks/trained_throughput.py --quick      # ~20 s
    python benchmarks/trained_throughput.py --seconds 10 --repeats 5
    python benchmarks/trained_throughput.py --option 'algo=APPO(update_epochs=4)'   # another setting (repeatable)
    python benchmarks/trained_throughput.py --workers 14 --device cuda              # a big machine

The target ratio is defined for the defaults on 2 cores (2 workers x 32 envs); with
``--workers``/``--device`` the table still shows the ratio to one SyncVectorEnv(32) process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import torch
from other_load import OtherLoadMeter, busy_warning
from throughput import Measurement, VectorSampler

import aiorl

ENV_ID = "CartPole-v1"
NUM_WORKERS = 2
ENVS_PER_WORKER = 32
VECTOR_ENVS = (32, 64)
"""The SyncVectorEnv baselines; the target is against the first."""
TARGET_RATIO = 0.65
SKIPPED_UPDATES = 2
"""Updates at the start of a window left out: their batches were filled before it (2 slots per worker)."""
BUSY_LOAD = 0.2
"""Other processes' cores during a window above which the result is flagged (as throughput.py does)."""
SETTLE_S = 0.2
"""Pause before a SyncVectorEnv window: the trainer's workers fill their freed slots and go idle."""


async def aiorl_window(trainer: aiorl.Trainer, seconds: float) -> float:
    """Train for about ``seconds``; return env steps trained per second between the first and last update."""
    marks: list[tuple[float, int]] = []
    loop = asyncio.get_running_loop()
    stop = loop.call_later(seconds, trainer.stop)
    try:
        await trainer.run(total_steps=10**9, on_update=lambda r: marks.append((time.perf_counter(), r.env_steps)))
    finally:
        stop.cancel()
    if len(marks) < SKIPPED_UPDATES + 2:
        raise RuntimeError(f"only {len(marks)} updates in {seconds} s: give the windows more --seconds")
    (t0, s0), (t1, s1) = marks[SKIPPED_UPDATES - 1], marks[-1]
    return (s1 - s0) / (t1 - t0)


async def warm_up(trainer: aiorl.Trainer, seconds: float) -> None:
    """Train for ``seconds`` and at least two updates (a compiled learner's first one compiles: 10-15 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    updates = 0

    def on_update(_report: Any) -> None:
        nonlocal updates
        updates += 1
        if updates >= 2 and loop.time() >= deadline:
            trainer.stop()

    stop = loop.call_later(seconds, lambda: updates >= 2 and trainer.stop())
    try:
        await trainer.run(total_steps=10**9, on_update=on_update)
    finally:
        stop.cancel()


def sample_one_thread(sampler: VectorSampler, seconds: float) -> float:
    """One window of the vector env, run in a fresh thread with one torch thread (a single
    process steps its envs on one core, as aiorl's workers each do)."""
    torch.set_num_threads(1)  # the thread count is per thread here: set in the thread that runs
    return sampler.run(seconds=seconds)


def parse_option(text: str) -> tuple[str, Any]:
    """``name=value`` with a Python literal value, or ``algo=PPO(...)`` / ``algo=APPO(...)``."""
    name, _, value = text.partition("=")
    if name == "algo":
        return name, eval(value, {"PPO": aiorl.PPO, "APPO": aiorl.APPO}, {})
    try:
        return name, eval(value, {}, {})  # literals only: numbers, True/False/None, strings
    except Exception:
        return name, value


async def measure(args: argparse.Namespace) -> tuple[Measurement, list[Measurement]]:
    meter = OtherLoadMeter()
    options = dict(parse_option(o) for o in args.option)
    trainer = aiorl.Trainer(ENV_ID, num_workers=args.workers, envs_per_worker=args.envs, device=args.device, **options)
    samplers = [
        VectorSampler(gym.vector.SyncVectorEnv([lambda: gym.make(ENV_ID) for _ in range(n)])) for n in VECTOR_ENVS
    ]
    label = f"aiorl {args.workers} workers x {args.envs} envs, training (defaults, learner on {args.device})"
    ours = Measurement("aiorl", label, args.workers * args.envs)
    theirs = [Measurement("SyncVectorEnv", f"SyncVectorEnv({n}), sampling only, same MLP", n) for n in VECTOR_ENVS]
    try:
        async with trainer:
            _progress(f"warming up ({args.warmup} s of training) ...")
            await warm_up(trainer, args.warmup)
            for sampler in samplers:
                await asyncio.to_thread(sample_one_thread, sampler, args.warmup)
            for index in range(args.repeats):
                start = meter.snapshot()
                ours.rates.append(await aiorl_window(trainer, args.seconds))
                _record_load(ours, meter, start)
                for sampler, series in zip(samplers, theirs, strict=True):
                    await asyncio.sleep(SETTLE_S)
                    start = meter.snapshot()
                    series.rates.append(await asyncio.to_thread(sample_one_thread, sampler, args.seconds))
                    _record_load(series, meter, start)
                rates = ", ".join(f"{m.label.split(',')[0]} {m.rates[-1]:,.0f}" for m in (ours, *theirs))
                _progress(f"round {index + 1}: {rates} steps/s")
    finally:
        for sampler in samplers:
            sampler.close()
    return ours, theirs


def _record_load(series: Measurement, meter: OtherLoadMeter, start: Any) -> None:
    load = meter.cores(start, meter.snapshot())
    if load is not None:
        series.other_load.append(load)


def render(ours: Measurement, theirs: list[Measurement], args: argparse.Namespace) -> tuple[str, bool]:
    ratios = [ours.median / series.median for series in theirs]
    met = ratios[0] >= TARGET_RATIO
    lines = [
        f"- machine: {_cores()} CPUs ({platform.machine()}); Python {platform.python_version()}, "
        f"torch {torch.__version__}, gymnasium {gym.__version__}, aiorl {aiorl.__version__}",
        f"- {args.repeats} alternating windows of {args.seconds:g} s each after {args.warmup:g} s of warm-up; "
        f"extra trainer options: {', '.join(args.option) or 'none'}",
        "",
        "| system | env steps/s (median) | min - max | other load (cores, max) |",
        "|---|---:|---:|---:|",
    ]
    for series in (ours, *theirs):
        load = f"{max(series.other_load):.2f}" if series.other_load else "-"
        lines.append(
            f"| {series.label} | {series.median:,.0f} | {min(series.rates):,.0f} - {max(series.rates):,.0f} | {load} |"
        )
    verdict = f"target >= {TARGET_RATIO}: {'met' if met else 'MISSED'}"
    lines += [""] + [
        f"ratio aiorl / SyncVectorEnv({series.envs}) = {ratio:.2f}" + (f" ({verdict})" if i == 0 else " (reference)")
        for i, (series, ratio) in enumerate(zip(theirs, ratios, strict=True))
    ]
    loads = [load for series in (ours, *theirs) for load in series.other_load]
    warning = busy_warning(loads, BUSY_LOAD, "windows")
    if warning is not None:
        lines += ["", warning]
    return "\n".join(lines), met


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 windows of 3 s")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per window (default 6; --quick 3)")
    parser.add_argument("--repeats", type=int, default=None, help="windows per system (default 5; --quick 3)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (at least 2 updates)")
    parser.add_argument("--option", action="append", default=[], help="extra Trainer option name=value")
    parser.add_argument("--workers", type=int, default=NUM_WORKERS, help=f"aiorl workers (default {NUM_WORKERS})")
    parser.add_argument(
        "--envs", type=int, default=ENVS_PER_WORKER, help=f"envs per worker (default {ENVS_PER_WORKER})"
    )
    parser.add_argument("--device", default="cpu", help="the learner's torch device (default cpu)")
    parser.add_argument("--check", action="store_true", help="exit status 1 if the target ratio is missed")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (3.0 if args.quick else 6.0)
    args.repeats = args.repeats or (3 if args.quick else 5)
    if args.seconds <= 0 or args.repeats < 1 or args.warmup <= 0:
        parser.error("--seconds and --warmup must be > 0 and --repeats >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ours, theirs = asyncio.run(measure(args))
    table, met = render(ours, theirs, args)
    print(table)
    return 0 if met or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
