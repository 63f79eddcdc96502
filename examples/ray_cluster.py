"""Train the CartPole-v1 preset with its workers as Ray actors, on this machine or a cluster.

    python examples/ray_cluster.py                       # starts a local Ray instance
    python examples/ray_cluster.py --workers 4 --address auto   # joins a running cluster

A cluster, started by hand (on a private network: Ray's ports must not be reachable
from anywhere else; Ray >= 2.59 enables token auth, so give every process the same
RAY_AUTH_MODE, and RAY_AUTH_TOKEN if you use tokens):

    ray start --head --num-cpus=2                         # on the head machine
    ray start --address=HEAD_IP:6379 --num-cpus=2         # on each other machine
    python examples/ray_cluster.py --address auto --workers 4   # on the head machine
    ray stop                                              # on every machine, when done

What changes against examples/cartpole.py: only ``backend=RayBackend(...)``. Each
worker is an async Ray actor stepping its envs with a CPU copy of the policy;
rollouts come back through Ray's object store, weights go out once per version
with ``ray.put``, and the trainer's event loop supervises the actors as it would
local processes: a lost or hung actor is replaced, within the restart budget.
"""

from __future__ import annotations

import argparse
import time

import aiorl
from aiorl.backends import RayBackend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance")
    parser.add_argument("--steps", type=int, default=500_000, help="env-step budget")
    parser.add_argument("--target", type=float, default=475.0, help="stop at this mean return")
    parser.add_argument("--workers", type=int, default=2, help="worker actors (one CPU each)")
    parser.add_argument("--envs-per-worker", type=int, default=16, help="envs stepped by each worker")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    init_options = {} if args.num_cpus is None else {"num_cpus": args.num_cpus}
    backend = RayBackend(address=args.address, init_options=init_options)
    trainer = aiorl.Trainer.from_preset(
        "CartPole-v1",
        backend=backend,
        num_workers=args.workers,
        envs_per_worker=args.envs_per_worker,
        seed=args.seed,
    )
    aiorl.run(train(trainer, args.steps, args.target))


async def train(trainer: aiorl.Trainer, steps: int, target: float) -> None:
    async with trainer:
        for worker, node in sorted(trainer.worker_nodes.items()):
            print(f"worker {worker}: pid {trainer.worker_pids[worker]} on node {node[:12]}", flush=True)
        last_print = 0.0

        def progress(update: aiorl.UpdateReport) -> None:
            nonlocal last_print
            if time.monotonic() - last_print >= 1.0:
                last_print = time.monotonic()
                print(
                    f"update {update.policy_version:4d}  steps {update.env_steps:8,d}  return {update.mean_return:6.1f}"
                )

        result = await trainer.run(total_steps=steps, target_return=target, on_update=progress)
    outcome = "reached" if result.reached_target else "did not reach"
    print(
        f"{outcome} a mean return of {target:g}: {result.mean_return:.1f} after {result.env_steps:,d} steps, "
        f"{result.wall_time:.1f} s ({result.steps_per_second:,.0f} steps/s), {result.worker_restarts} restarts"
    )


if __name__ == "__main__":
    main()
