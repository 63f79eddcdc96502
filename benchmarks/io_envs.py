"""Sampling throughput with I/O-bound and variable-cost envs: aiorl against lockstep vector envs.

What is measured
----------------
Env steps per second of sampling only (the same policy forward pass per batch
everywhere, as in ``throughput.py``), for the two envs of ``latency_envs.py``:

- ``io``: each step *waits* a lognormal time, median 1 ms, p99 20 ms (a simulator
  or a service behind a socket);
- ``cpu``: each step *spins* a lognormal time, median 100 us, p99 2 ms;

both with episodes of 10-500 steps. Systems, all in one run:

- ``aiorl`` with 2 worker processes x 16 and x 128 envs (32 and 256 envs). For the
  ``io`` env, the env is an :class:`aiorl.AsyncEnv` that awaits its wait, so each
  worker overlaps all of its envs; for the ``cpu`` env, plain gymnasium envs
  stepped inline (what overlapping cannot speed up, a process per core does).
- ``AsyncVectorEnv`` with 64 envs (one process per env, lockstep: each step waits
  for the slowest env) and ``SyncVectorEnv`` with 64 envs (one process).

Targets: ``io``: aiorl(256) >= 4x AsyncVectorEnv(64). ``cpu``: aiorl >= 0.9x the
2-core limit (2 / mean step cost, the cost measured in this run) and >= 1.5x
AsyncVectorEnv(64).

How: all systems of an env kind are started, warmed up, then timed round-robin,
``--repeats`` windows of ``--seconds`` each; medians are reported. Other
processes' CPU use during each window is measured and a busy window is redone
(see ``throughput.py``).

Run it (about 3 minutes on 2 cores; ``--quick`` about 40 s)::

    python benchmarks/io_envs.py
    python benchmarks/io_envs.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import platform
import sys
import time
from collections.abc import Sequence

import torch
from latency_envs import MEDIAN_S, SIGMA, AsyncLatencyEnv, Kind, LatencyEnv, mean_step_cost
from throughput import AiorlSystem, Budget, Measurement, System, VectorSystem, time_systems

import aiorl

NUM_WORKERS = 2
AIORL_ENVS_PER_WORKER = (16, 128)
VECTOR_ENVS = 64
ROLLOUT_LENGTH = 32
CORES = 2


async def measure_kind(kind: Kind, budget: Budget) -> list[Measurement]:
    """Start every system for one env kind, warm each up, time ``budget.repeats`` rounds."""
    async with contextlib.AsyncExitStack() as stack:
        systems: list[System] = []
        env_cls = AsyncLatencyEnv if kind == "io" else LatencyEnv
        for envs_per_worker in AIORL_ENVS_PER_WORKER:
            env = functools.partial(env_cls, kind)
            systems.append(await AiorlSystem.start(stack, envs_per_worker, env, ROLLOUT_LENGTH))
        for name in ("AsyncVectorEnv", "SyncVectorEnv"):
            systems.append(await VectorSystem.start(stack, name, VECTOR_ENVS, functools.partial(LatencyEnv, kind)))
        return await time_systems(systems, budget, f"{kind}: ")


def _find(results: Sequence[Measurement], system: str, envs: int) -> Measurement:
    return next(m for m in results if m.system == system and m.envs == envs)


def report(kind: Kind, results: Sequence[Measurement], step_cost_s: float | None) -> list[str]:
    """A markdown table of one env kind and its target lines."""
    lines = [
        f"### {kind} env: step {'waits' if kind == 'io' else 'spins'} lognormal(median "
        f"{MEDIAN_S[kind] * 1e6:,.0f} us, p99 20x median)",
        "",
        "| system | envs | steps/s (median) | min - max | other load (cores, max) |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in results:
        other = f"{max(m.other_load):.2f}" if m.other_load else "n/a"
        spread = f"{min(m.rates):,.0f} - {max(m.rates):,.0f}"
        lines.append(f"| {m.label} | {m.envs} | {m.median:,.0f} | {spread} | {other} |")
    lines.append("")
    vector = _find(results, "AsyncVectorEnv", VECTOR_ENVS).median
    big = _find(results, "aiorl", NUM_WORKERS * AIORL_ENVS_PER_WORKER[-1]).median
    small = _find(results, "aiorl", NUM_WORKERS * AIORL_ENVS_PER_WORKER[0]).median
    if kind == "io":
        lines.append(_target(f"aiorl(256) / AsyncVectorEnv({VECTOR_ENVS})", big / vector, 4.0))
        lines.append(f"- aiorl(32) / AsyncVectorEnv({VECTOR_ENVS}) = {small / vector:.2f}x (no target)")
    else:
        assert step_cost_s is not None
        limit = CORES / step_cost_s
        best = max(big, small)
        lines.append(f"- mean step cost {step_cost_s * 1e6:,.0f} us: the {CORES}-core limit is {limit:,.0f} steps/s")
        lines.append(_target("best aiorl / 2-core limit", best / limit, 0.9))
        lines.append(_target(f"best aiorl / AsyncVectorEnv({VECTOR_ENVS})", best / vector, 1.5))
    return lines


def _target(name: str, ratio: float, minimum: float) -> str:
    return f"- target: {name} = **{ratio:.2f}x** (target >= {minimum:g}): {'met' if ratio >= minimum else 'MISSED'}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Throughput with I/O-bound and variable-cost envs.")
    parser.add_argument("--seconds", type=float, default=5.0, help="wall time of one timed window (default: 5)")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows per system (default: 3)")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s windows")
    parser.add_argument("--kinds", nargs="+", default=["io", "cpu"], choices=["io", "cpu"])
    args = parser.parse_args(argv)
    seconds, repeats = (2.0, 1) if args.quick else (args.seconds, args.repeats)
    budget = Budget(seconds, None, repeats, warmup_seconds=1.0, aiorl_warmup_steps=20_000, busy_retries=1)
    torch.set_num_threads(1)
    started = time.monotonic()
    lines = [f"## Sampling throughput with I/O-bound and variable-cost envs (env steps/s, lognormal sigma {SIGMA:.2f})"]
    try:
        for kind in args.kinds:
            cost = mean_step_cost("cpu") if kind == "cpu" else None
            results = aiorl.run(measure_kind(kind, budget))
            assert isinstance(results, list)
            lines += ["", *report(kind, results, cost)]
    except KeyboardInterrupt:
        print("interrupted; every worker and env process was stopped", file=sys.stderr)
        return 130
    lines += [
        "",
        f"- aiorl: {NUM_WORKERS} workers, rollout_length={ROLLOUT_LENGTH}; io env as aiorl.AsyncEnv, cpu env "
        "stepped inline; vector envs: policy in the main process, AsyncVectorEnv one process per env",
        f"- {seconds:g} s windows, {repeats} round(s), medians; machine: {os.cpu_count()} CPUs "
        f"({platform.machine()}), Python {platform.python_version()}, torch {torch.__version__}; "
        f"took {time.monotonic() - started:.0f} s",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
