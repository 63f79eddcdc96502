"""Event-loop lag seen by an application coroutine while aiorl trains on the same loop.

What is measured
----------------
A *ticker* coroutine on the trainer's event loop sleeps ``--interval-ms`` (1 ms)
again and again and records how late each wake-up is (wall time after the sleep
minus the time it asked to wake). That lateness is what any other coroutine of an
application embedding the trainer (a web server, a dashboard) would wait on top of
its own work. Meanwhile the loop runs the ``CartPole-v1`` preset (PPO, 2 workers x
16 envs; ``--task image``: 2 workers x 8 envs of 84x84x4 ``uint8`` frames, the
defaults, rollouts of 7 MB each) for ``--seconds`` and a consumer reads ``trainer.events()`` (every update
and every finished episode), as an embedding application would.

Phases, reported separately for asyncio's default loop and for uvloop, each run in
a fresh loop:

- ``idle``: one second with nothing else on the loop (the loop's own timer jitter);
- ``start``: ``async with trainer`` entering (shared memory, worker processes up and
  greeted; the first loop measured also starts aiorl's forkserver);
- ``train``: ``trainer.run()`` until ``trainer.stop()`` after ``--seconds``
  (the target: p99 < 5 ms);
- ``close``: leaving ``async with`` (workers stopped, memory released).

Building the ``Trainer`` (probing the env, building the policy) is synchronous user
code before any of these and is not measured.

Run it (about 40 s on 2 cores)::

    python benchmarks/loop_lag.py
    python benchmarks/loop_lag.py --seconds 30 --loops uvloop
    python benchmarks/loop_lag.py --check     # exit status 1 if a training p99 is >= 5 ms
    python benchmarks/loop_lag.py --task image --loops uvloop

Other processes busy on the machine delay the loop too: the CPU they used during
each phase (from ``/proc``, Linux) is printed in the last column.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import uvloop
from other_load import OtherLoadMeter

import aiorl

TARGET_P99_MS = 5.0
RUNNERS: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


class ThreadClock:
    """CPU time and run-queue wait of the calling thread (Linux ``/proc/.../schedstat``), in seconds."""

    def __init__(self) -> None:
        path = f"/proc/self/task/{threading.get_native_id()}/schedstat"
        self.fd = os.open(path, os.O_RDONLY) if os.path.exists(path) else None

    def read(self) -> tuple[float, float]:
        """``(on CPU, waiting on a run queue)``; NaN where unavailable."""
        if self.fd is None:
            return math.nan, math.nan
        run_ns, wait_ns = os.pread(self.fd, 128, 0).split()[:2]
        return int(run_ns) / 1e9, int(wait_ns) / 1e9

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


@dataclass(slots=True)
class Ticks:
    """What the ticker saw in one phase: per tick, its lag, the loop thread's CPU time and run-queue wait."""

    lags: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    def late_breakdown(self, late_s: float) -> tuple[int, float, float]:
        """Ticks later than ``late_s``; of their time, the share the loop thread waited for a CPU, and ran."""
        late = [i for i, lag in enumerate(self.lags) if lag > late_s]
        wall = sum(self.walls[i] for i in late)
        if not late or wall <= 0:
            return len(late), math.nan, math.nan
        return len(late), sum(self.waits[i] for i in late) / wall, sum(self.cpus[i] for i in late) / wall


class Ticker:
    """Sleeps ``interval_s`` in a loop and records how late each wake-up is (seconds)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.ticks = Ticks()

    async def run(self) -> None:
        clock = ThreadClock()  # the loop's thread
        try:
            while True:
                cpu, wait = clock.read()
                start = time.perf_counter()
                await asyncio.sleep(self.interval_s)
                end = time.perf_counter()
                cpu_end, wait_end = clock.read()
                ticks = self.ticks
                ticks.lags.append(end - start - self.interval_s)
                ticks.walls.append(end - start)
                ticks.cpus.append(cpu_end - cpu)
                ticks.waits.append(wait_end - wait)
        finally:
            clock.close()

    def take(self) -> Ticks:
        """The ticks recorded since the last call."""
        ticks, self.ticks = self.ticks, Ticks()
        return ticks


class Phases:
    """Cuts the ticker's record into named phases, with the other load during each."""

    def __init__(self, ticker: Ticker) -> None:
        self.ticker = ticker
        self.meter = OtherLoadMeter()
        self.rows: list[tuple[str, Ticks, float | None]] = []
        self._since = self.meter.snapshot()

    def restart(self) -> None:
        """Forget what was recorded since the last phase (unmeasured user code ran)."""
        self.ticker.take()
        self._since = self.meter.snapshot()

    def end(self, name: str) -> None:
        now = self.meter.snapshot()
        self.rows.append((name, self.ticker.take(), OtherLoadMeter.cores(self._since, now)))
        self._since = now


def build_trainer(task: str) -> aiorl.Trainer:
    """The trainer the loop runs: the CartPole preset, or 2 workers x 8 Atari-sized image envs with the defaults."""
    if task == "image":
        from scaling import ImageEnv  # 84x84x4 uint8 frames from a bank: rollouts of 7 MB

        return aiorl.Trainer(ImageEnv, num_workers=2, envs_per_worker=8, log_interval_s=3600)
    return aiorl.Trainer.from_preset("CartPole-v1", log_interval_s=3600)


async def measure(seconds: float, interval_s: float, task: str) -> tuple[list[tuple[str, Ticks, float | None]], str]:
    """Run the phases on the running loop; return the rows and a line about the training."""
    ticker = Ticker(interval_s)
    phases = Phases(ticker)
    events_read = 0

    async def read_events(stream: aiorl.EventStream) -> None:
        nonlocal events_read
        async for _ in stream:
            events_read += 1

    async with asyncio.TaskGroup() as tasks:
        ticking = tasks.create_task(ticker.run())
        await asyncio.sleep(1.0)
        phases.end("idle")
        trainer = build_trainer(task)
        stream = trainer.events()
        tasks.create_task(read_events(stream))
        # The tick in flight was held up by the synchronous build above: let it land before
        # forgetting it, or its lag (the whole build) counts in the start phase.
        await asyncio.sleep(10 * interval_s)
        phases.restart()
        async with trainer:
            phases.end("start")
            asyncio.get_running_loop().call_later(seconds, trainer.stop)
            result = await trainer.run(total_steps=10**9)
            phases.end("train")
        phases.end("close")
        ticking.cancel()
    summary = (
        f"trained {result.env_steps:,d} env steps in {result.wall_time:.1f} s ({result.steps_per_second:,.0f}/s), "
        f"{result.updates} updates, return {result.mean_return:.0f}; {events_read:,d} events read, "
        f"{stream.dropped} dropped"
    )
    return phases.rows, summary


def share(fraction: float) -> str:
    """A fraction as a percentage, ``-`` where there is none (no late ticks)."""
    return "-" if math.isnan(fraction) else f"{fraction:.0%}"


def percentile_ms(lags: list[float], q: float) -> float:
    return float(np.percentile(np.array(lags), q)) * 1e3 if lags else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="training time per loop kind")
    parser.add_argument("--interval-ms", type=float, default=1.0, help="the ticker's sleep")
    parser.add_argument("--loops", nargs="+", choices=sorted(RUNNERS), default=["asyncio", "uvloop"])
    parser.add_argument("--check", action="store_true", help=f"exit 1 if a training p99 >= {TARGET_P99_MS} ms")
    parser.add_argument(
        "--task", choices=["cartpole", "image"], default="cartpole", help="what the trainer learns (see build_trainer)"
    )
    args = parser.parse_args()

    print(
        "| loop | phase | ticks | p50 ms | p99 ms | max ms | ticks > 1 ms late | of their time: waiting for a CPU "
        "| loop thread running | other load (cores) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    failed = []
    for loop in args.loops:
        rows, summary = RUNNERS[loop](measure(args.seconds, args.interval_ms / 1e3, args.task))
        for phase, ticks, other in rows:
            p99 = percentile_ms(ticks.lags, 99)
            late, waiting, running = ticks.late_breakdown(1e-3)
            print(
                f"| {loop} | {phase} | {len(ticks.lags):,d} | {percentile_ms(ticks.lags, 50):.3f} | {p99:.3f} | "
                f"{max(ticks.lags, default=math.nan) * 1e3:.2f} | {late:,d} | {share(waiting)} | {share(running)} | "
                f"{'n/a' if other is None else f'{other:.2f}'} |",
                flush=True,
            )
            if phase == "train" and not p99 < TARGET_P99_MS:
                failed.append(f"{loop}: training p99 {p99:.2f} ms >= {TARGET_P99_MS} ms")
        print(f"{loop}: {summary}", file=sys.stderr, flush=True)
    for line in failed:
        print(f"MISSED {line}", file=sys.stderr)
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
