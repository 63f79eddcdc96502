"""How many learner updates a target takes against the batch size: the half of scaling that any machine can measure.

Why
---
With more workers each update trains on a bigger batch (one rollout per worker; README, "The
learner"). Whether more workers then reach a target sooner depends on two things: how long an
update of that batch takes (flat on a GPU, where a small network's update is kernel launches;
growing with the batch on a CPU), and how many sequential updates the target takes at that
batch size. This script measures the second on any machine, so a batch-size rule (learning
rate, clipping, rollout length as the batch grows) can be chosen on 2 cores and its wall time
confirmed on a big one (``scaling.py``).

What is measured
----------------
For each ``w`` of ``--batch-of`` (default 2, 4, 8, 14): the ``CartPole-v1`` preset trained with
``--num-workers`` workers (default 2) whose ``envs_per_worker`` give the batch of ``w`` workers
of the preset (``w * 16`` envs in all, ``--rollout-length`` steps each, default the preset's
32): ``aiorl.Trainer.from_preset("CartPole-v1", num_workers=2, envs_per_worker=8 * w, ...)``,
then ``run(total_steps=--total-steps, target_return=475)``. The learner sees the batches ``w``
workers would send it. Reported per ``w`` (medians over ``--seeds`` seeds): runs that reached
the target, learner updates until then, env steps trained, seconds per update on this machine,
and training wall time (on this machine; with 2 workers stepping ``8 * w`` envs each, not a
prediction of ``w`` workers' time). ``--algo-option KEY=VALUE`` (repeatable) replaces fields of
the preset's ``PPO`` (``learning_rate=8e-3``, ``clip_coef=0.3``) to compare rules in one run.

Reading it: an episode of CartPole lasts up to 500 steps and the target needs the last 20
finished episodes to average 475, so a good policy must have acted for about 500 steps per env
before the target can be seen: ``500 / rollout_length`` updates (16 at 32 steps) that no batch
size removes. That is the "episode floor" column; bigger batches can only shorten the learning
before it.

Run it (about 4 minutes on 2 cores)::

    python benchmarks/batch_size.py
    python benchmarks/batch_size.py --batch-of 2 14 --algo-option learning_rate=8e-3 --algo-option clip_coef=0.3
    python benchmarks/batch_size.py --batch-of 2 14 --rollout-length 64

It prints the setup and a markdown table to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import dataclasses
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from other_load import OtherLoadMeter, print_footer
from scaling import (
    CARTPOLE,
    CARTPOLE_TARGET,
    Run,
    _median,
    _num,
    _progress,
    render_warning,
    train,
    wait_for_quiet,
    warm_up_forkserver,
)

import aiorl
from aiorl.presets import get_preset

EPISODE_STEPS = 500
"""CartPole-v1's longest episode."""


def preset_envs_per_worker() -> int:
    """Envs per worker in the ``CartPole-v1`` preset."""
    return int(get_preset(CARTPOLE).options["envs_per_worker"])


def parse_algo_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with a Python literal value (``learning_rate=8e-3``), checked against PPO's fields."""
    key, sep, value = text.partition("=")
    names = {f.name for f in dataclasses.fields(aiorl.PPO)}
    if not sep or key not in names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE with KEY one of PPO's fields")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def batch_run(batch_of: int, seed: int, args: argparse.Namespace) -> Run:
    """One run of the preset with the batch of ``batch_of`` workers, from ``args.num_workers`` workers."""
    preset = get_preset(CARTPOLE)
    algo = dataclasses.replace(preset.algo, **dict(args.algo_option))
    envs = batch_of * preset_envs_per_worker() // args.num_workers
    options = {"num_workers": args.num_workers, "envs_per_worker": envs, "rollout_length": args.rollout_length}
    run = Run("cartpole", batch_of, seed)
    return asyncio.run(
        train(
            run,
            lambda: aiorl.Trainer.from_preset(CARTPOLE, algo=algo, seed=seed, device=args.device, **options),
            total_steps=args.total_steps,
            target_return=CARTPOLE_TARGET,
        )
    )


def run_all(args: argparse.Namespace) -> list[Run]:
    """Every (seed, batch size) run, seeds outermost, each after waiting for a quiet machine."""
    meter = OtherLoadMeter()
    runs = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for batch_of in args.batch_of:
            wait_for_quiet(meter, args.quiet_wait)
            _progress(f"seed {seed}, the batch of {batch_of} workers ...")
            start = meter.snapshot()
            try:
                run = batch_run(batch_of, seed, args)
            except Exception as exc:
                run = Run("cartpole", batch_of, seed, error=f"{type(exc).__name__}: {exc}")
            run.other_load = meter.cores(start, meter.snapshot())
            runs.append(run)
            if run.error is not None:
                _progress(f"  failed: {run.error}")
            else:
                _progress(
                    f"  {'solved' if run.solved else 'NOT solved'} after {run.updates} updates of "
                    f"{run.batch_steps:,} ({run.steps:,} env steps, {run.train_s:.1f} s)"
                )
    return runs


def render_table(runs: Sequence[Run], args: argparse.Namespace) -> str:
    """One row per batch size: runs solved, updates and env steps to the target, time per update."""
    lines = [
        "| batch of workers | batch | reached 475 | updates to target (median, range) | episode floor (updates) "
        "| env steps trained (median) | s per update (this machine) | training s (this machine) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    floor = math.ceil(EPISODE_STEPS / args.rollout_length)
    for batch_of in args.batch_of:
        done = [r for r in runs if r.workers == batch_of and r.error is None]
        if not done:
            continue
        solved = [r for r in done if r.solved]
        updates = sorted(r.updates for r in solved)
        spread = f"{_num(_median(updates))} ({updates[0]}-{updates[-1]})" if updates else "not reached"
        batch = batch_of * preset_envs_per_worker() * args.rollout_length
        per_update = _median([sum(r.update_s) / len(r.update_s) for r in done if r.update_s])
        lines.append(
            f"| {batch_of} | {batch:,} | {len(solved)}/{len(done)} | {spread} | {floor} "
            f"| {_num(_median([r.steps for r in solved]))} | {_num(per_update, '.3f')} "
            f"| {_num(_median([r.time_to_target for r in done]), '.1f')} |"
        )
    return "\n".join(lines)


def describe_setup(args: argparse.Namespace) -> str:
    """The configuration and the machine, as bullet points."""
    preset = get_preset(CARTPOLE)
    algo = dataclasses.replace(preset.algo, **dict(args.algo_option))
    versions = (
        f"Python {platform.python_version()}, torch {torch.__version__}, gymnasium {gym.__version__}, "
        f"numpy {np.__version__}, aiorl {aiorl.__version__}"
    )
    return "\n".join(
        [
            f"- Trainer.from_preset({CARTPOLE!r}, num_workers={args.num_workers}, envs_per_worker="
            f"{preset_envs_per_worker()} * w / {args.num_workers}, rollout_length={args.rollout_length}, "
            f"device={args.device!r}), one rollout per worker per update: the batch of w workers of the preset",
            f"- algorithm: {algo!r}" + (f" (changed: {dict(args.algo_option)})" if args.algo_option else ""),
            f"- run(total_steps={args.total_steps:,}, target_return={CARTPOLE_TARGET:g}); seeds {args.first_seed}..."
            f"{args.first_seed + args.seeds - 1}; medians over seeds (updates and steps over the solved runs)",
            f"- machine: {os.cpu_count()} CPUs ({platform.machine()}); {versions}",
        ]
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, checked."""
    parser = argparse.ArgumentParser(description="Learner updates to CartPole's target against the batch size.")
    parser.add_argument(
        "--batch-of", type=int, nargs="+", default=[2, 4, 8, 14], help="worker counts whose batch to train on"
    )
    parser.add_argument("--num-workers", type=int, default=2, help="worker processes that collect it (default: 2)")
    parser.add_argument("--rollout-length", type=int, help="steps per env per rollout (default: the preset's)")
    parser.add_argument(
        "--algo-option", type=parse_algo_option, action="append", default=[], help="KEY=VALUE: a PPO field"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per batch size (default: 3)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed (default: 0)")
    parser.add_argument(
        "--total-steps", type=int, default=1_000_000, help="env-step budget per run (default: 1,000,000)"
    )
    parser.add_argument("--device", default="cpu", help="the learner's torch device (default: cpu)")
    parser.add_argument(
        "--quiet-wait", type=float, default=30.0, help="seconds to wait before each run for an idle machine"
    )
    args = parser.parse_args(argv)
    if args.rollout_length is None:
        args.rollout_length = int(get_preset(CARTPOLE).options["rollout_length"])
    problems = []
    if min(args.batch_of) < 1 or args.num_workers < 1 or args.rollout_length < 1:
        problems.append("--batch-of, --num-workers and --rollout-length must be >= 1")
    uneven = [w for w in args.batch_of if w * preset_envs_per_worker() % args.num_workers]
    if uneven:
        problems.append(f"--batch-of {uneven}: their envs do not divide among {args.num_workers} workers")
    if args.seeds < 1 or args.total_steps < 1 or args.quiet_wait < 0:
        problems.append("--seeds and --total-steps must be >= 1, --quiet-wait >= 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        problems.append(f"--device {args.device}: no CUDA here")
    if problems:
        parser.error("; ".join(problems))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every batch size and seed, then print the setup and the table."""
    args = parse_args(argv)
    started = time.monotonic()
    warm_up_forkserver()
    try:
        runs = run_all(args)
    except KeyboardInterrupt:
        print("interrupted; every worker process was stopped", file=sys.stderr)
        return 130
    print(f"## Learner updates to {CARTPOLE}'s target ({CARTPOLE_TARGET:g}) against the batch size")
    print()
    print(describe_setup(args))
    print()
    print(render_table(runs, args))
    print()
    print(
        "batch = env steps per update; updates to target = learner updates until the mean return of the last 20 "
        f"episodes reached {CARTPOLE_TARGET:g}; episode floor = {EPISODE_STEPS} / rollout length, the updates "
        "that one full episode of a good policy spans; s per update and training s are this machine's, with "
        f"{args.num_workers} workers collecting every batch."
    )
    print_footer(render_warning(runs), started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
