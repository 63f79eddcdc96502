"""Train on an I/O-bound environment: 256 envs whose steps await a slow service, in 2 processes.

    python examples/async_env.py                  # 2 workers x 128 envs, median latency 1 ms
    python examples/async_env.py --envs-per-worker 32 --median-latency-ms 5

Each env is CartPole whose physics run behind a simulated remote service: every
``reset`` and ``step`` awaits a reply whose latency is lognormal (median 1 ms, a
long tail of slow replies). The env is an :class:`aiorl.AsyncEnv`, so a worker
process overlaps all of its envs on its event loop: while some wait for replies,
the policy acts, in one batched forward pass, on whichever envs are ready. A slow
reply holds back only its own env. A lockstep vector env would instead wait for
the slowest of its envs at every step.

Documented target: a mean return of 475 over the last 20 episodes (CartPole
solved), reached in about 120k-180k env steps (6-7 s on an idle 2-core machine).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import time
from typing import Any

import gymnasium as gym
import numpy as np

import aiorl


class ServiceCartPole(aiorl.AsyncEnv):
    """CartPole-v1 behind a simulated service with lognormal reply latency.

    Args:
        median_latency_s: median seconds a reply takes.
        sigma: spread of the latency's log (0.5: p99 is 3.2x the median).
    """

    def __init__(self, median_latency_s: float = 0.001, sigma: float = 0.5) -> None:
        self.sim = gym.make("CartPole-v1")
        self.observation_space = self.sim.observation_space
        self.action_space = self.sim.action_space
        self.log_median = math.log(median_latency_s)
        self.sigma = sigma
        self.rng = np.random.default_rng()

    async def _reply(self) -> None:
        await asyncio.sleep(self.rng.lognormal(self.log_median, self.sigma))

    async def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Start an episode on the service."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        await self._reply()
        return self.sim.reset(seed=seed, options=options)

    async def step(self, action: Any) -> Any:
        """Send the action, await the service's reply."""
        await self._reply()
        return self.sim.step(action)

    async def close(self) -> None:
        """Close the simulator."""
        self.sim.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1_000_000, help="env-step budget")
    parser.add_argument("--target", type=float, default=475.0, help="stop at this mean return")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--envs-per-worker", type=int, default=128, help="async envs overlapped by each worker")
    parser.add_argument("--median-latency-ms", type=float, default=1.0, help="median service latency")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    trainer = aiorl.Trainer(
        functools.partial(ServiceCartPole, args.median_latency_ms / 1000),  # picklable, unlike a lambda
        aiorl.APPO(),
        num_workers=args.workers,
        envs_per_worker=args.envs_per_worker,
        rollout_length=16,
        rollouts_per_batch=1,
        seed=args.seed,
    )
    last_print = 0.0

    def progress(update: aiorl.UpdateReport) -> None:
        nonlocal last_print
        if time.monotonic() - last_print < 1.0:
            return
        last_print = time.monotonic()
        print(
            f"update {update.policy_version:4d}  steps {update.env_steps:8,d}  "
            f"return {update.mean_return:6.1f}  lag {update.lag.mean:4.2f}",
            flush=True,
        )

    result = aiorl.run(trainer, total_steps=args.steps, target_return=args.target, on_update=progress)
    outcome = "reached" if result.reached_target else "did not reach"
    print(
        f"{outcome} a mean return of {args.target:g}: {result.mean_return:.1f} after "
        f"{result.env_steps:,d} steps, {result.episodes:,d} episodes, {result.wall_time:.1f} s "
        f"({result.steps_per_second:,.0f} steps/s); discarded steps by reason: {dict(result.steps_discarded)}"
    )


if __name__ == "__main__":
    main()
