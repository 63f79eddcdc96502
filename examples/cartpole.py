"""Train PPO on CartPole-v1 until the mean return of the last 20 episodes reaches 475.

    python examples/cartpole.py                 # defaults: 2 workers x 16 envs
    python examples/cartpole.py --workers 4 --steps 500000 --seed 1

What happens: two persistent worker processes each step 16 CartPole envs with a
CPU copy of the policy and write 32-step rollouts into shared memory; the
trainer's event loop hands finished rollouts to PPO (in a learner thread, so
the loop never blocks) and publishes each new policy version to the workers.
"""

from __future__ import annotations

import argparse
import time

import aiorl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500_000, help="env-step budget")
    parser.add_argument("--target", type=float, default=475.0, help="stop at this mean return")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--envs-per-worker", type=int, default=16, help="envs stepped by each worker")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    trainer = aiorl.Trainer(
        "CartPole-v1",
        aiorl.PPO(),
        num_workers=args.workers,
        envs_per_worker=args.envs_per_worker,
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
            f"return {update.mean_return:6.1f}  lag {update.lag.mean:4.2f}  "
            f"entropy {update.learner['entropy']:.3f}",
            flush=True,
        )

    result = aiorl.run(trainer, total_steps=args.steps, target_return=args.target, on_update=progress)
    outcome = "reached" if result.reached_target else "did not reach"
    print(
        f"{outcome} a mean return of {args.target:g}: {result.mean_return:.1f} after "
        f"{result.env_steps:,d} steps, {result.episodes:,d} episodes, {result.wall_time:.1f} s "
        f"({result.steps_per_second:,.0f} steps/s)"
    )


if __name__ == "__main__":
    main()
