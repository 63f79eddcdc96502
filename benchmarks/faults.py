"""Fault tolerance under load: a worker that hangs every N seconds, against a clean run.

Trains PPO on CartPole-v1 (2 workers x 16 envs) for a fixed wall time twice in one
process: once clean, once with env 0 of worker 0 hanging forever (``time.sleep``)
every ``--hang-every`` seconds after its process started. Reports:

- time to detect: how long the hung worker had been silent when the watchdog
  declared it hung (``worker_timeout_s`` plus at most one check interval);
- time to replace: from that verdict to the replacement's hello (stack dump,
  SIGTERM/grace/SIGKILL, restart backoff, forkserver start, env construction);
- trained env steps per second with faults vs without, and the restarts counted.

    python benchmarks/faults.py                  # ~1 minute on 2 cores
    python benchmarks/faults.py --seconds 60 --hang-every 5 --worker-timeout 2
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import time
from typing import Any

import gymnasium as gym

import aiorl
from aiorl.errors import WorkerHung
from aiorl.testing import worker_identity


class HangEvery(gym.Wrapper):
    """CartPole whose env 0 in worker 0 hangs forever ``after_s`` seconds after it was built."""

    def __init__(self, after_s: float) -> None:
        super().__init__(gym.make("CartPole-v1"))
        worker, _, env_index = worker_identity()
        self.hang_at = time.monotonic() + after_s if (worker, env_index) == (0, 0) else None

    def step(self, action: Any) -> Any:
        if self.hang_at is not None and time.monotonic() >= self.hang_at:
            while True:
                time.sleep(3600)
        return self.env.step(action)


def make_hanging_env(after_s: float) -> gym.Env:
    return HangEvery(after_s)


class Timeline(logging.Handler):
    """Collects hang verdicts and replacement hellos from the aiorl logger."""

    def __init__(self) -> None:
        super().__init__()
        self.verdicts: list[tuple[float, float]] = []  # (when, silent_s)
        self.backs: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if args and isinstance(args[0], WorkerHung) and record.levelno == logging.ERROR:
            self.verdicts.append((record.created, args[0].silent_s))
        elif record.msg.startswith("worker %d is back"):
            self.backs.append(record.created)


async def timed_run(env: Any, seconds: float, worker_timeout_s: float) -> tuple[float, int]:
    """Train for ``seconds``; return trained env steps per second and the restarts."""
    trainer = aiorl.Trainer(
        env,
        num_workers=2,
        envs_per_worker=16,
        heartbeat_interval_s=0.25,
        worker_timeout_s=worker_timeout_s,
        restart_backoff_s=0.1,
        max_restarts=1000,
        log_interval_s=3600,
    )
    async with trainer:
        started = time.monotonic()
        trained = 0
        while time.monotonic() < started + seconds:
            trained += (await trainer.run(total_steps=20_000)).env_steps
        return trained / (time.monotonic() - started), trainer.stats.worker_restarts


async def main(args: argparse.Namespace) -> None:
    timeline = Timeline()
    logging.getLogger("aiorl").addHandler(timeline)
    logging.getLogger("aiorl").setLevel(logging.INFO)
    logging.getLogger("aiorl").propagate = False

    clean_sps, _ = await timed_run("CartPole-v1", args.seconds, args.worker_timeout)
    faulty_env = functools.partial(make_hanging_env, args.hang_every)
    faulty_sps, restarts = await timed_run(faulty_env, args.seconds, args.worker_timeout)

    detect = [silent for _, silent in timeline.verdicts]
    replace = []
    for when, _ in timeline.verdicts:
        later = [back for back in timeline.backs if back >= when]
        if later:
            replace.append(min(later) - when)

    def summary(values: list[float]) -> str:
        if not values:
            return "n/a"
        return f"{statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"

    print(f"\nCartPole-v1, 2 workers x 16 envs, PPO, {args.seconds:g} s per run, one process")
    print(f"worker 0 hangs {args.hang_every:g} s after each start; worker_timeout_s={args.worker_timeout:g}\n")
    print("| metric | value |\n|---|---|")
    print(f"| hangs detected / workers replaced | {len(timeline.verdicts)} / {restarts} |")
    print(f"| time to detect (silence at verdict) | {summary(detect)} |")
    print(f"| time to replace (verdict to hello) | {summary(replace)} |")
    print(f"| trained steps/s, clean | {clean_sps:,.0f} |")
    print(f"| trained steps/s, with hangs | {faulty_sps:,.0f} |")
    print(f"| ratio with/without | {faulty_sps / clean_sps:.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="wall time of each run")
    parser.add_argument("--hang-every", type=float, default=5.0, help="seconds after start a worker hangs")
    parser.add_argument("--worker-timeout", type=float, default=2.0, help="worker_timeout_s")
    aiorl.run(main(parser.parse_args()))
