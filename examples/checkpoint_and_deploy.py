"""Train with checkpoints, resume from one, then act with the saved policy and no workers at all.

    python examples/checkpoint_and_deploy.py                  # 100k steps of APPO on CartPole-v1
    python examples/checkpoint_and_deploy.py --steps 20000 --dir /tmp/cartpole

1. ``trainer.run(..., checkpoint_path=...)`` saves a checkpoint every few seconds and when the
   run ends (also on Ctrl-C or a failure); each write is atomic.
2. ``Trainer.load(path)`` restores the policy, the optimiser, the counters and the random
   state: training goes on with the same step counters and policy versions.
3. ``aiorl.Policy.load(path).act(obs)`` is all a deployment needs: torch and gymnasium only.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import gymnasium as gym

import aiorl


async def train(path: Path, steps: int) -> None:
    trainer = aiorl.Trainer("CartPole-v1", aiorl.APPO(), num_workers=2, envs_per_worker=8)
    first = await trainer.run(total_steps=steps // 2, checkpoint_path=path, checkpoint_interval_s=5)
    print(f"first run: {first.total_env_steps:,} steps, policy version {first.policy_version}")

    resumed = aiorl.Trainer.load(path)  # e.g. in a new process, after a crash or a reboot
    second = await resumed.run(total_steps=steps - steps // 2, checkpoint_path=path)
    print(f"after resuming: {second.total_env_steps:,} steps, policy version {second.policy_version}")


def deploy(path: Path) -> None:
    policy = aiorl.Policy.load(path)
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy.act(obs))
        total += float(reward)
        done = terminated or truncated
    print(f"deployed policy (version {policy.policy_version}) scored {total:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100_000, help="env steps in all")
    parser.add_argument("--dir", type=Path, default=Path("runs/checkpoint-example"), help="where the checkpoint goes")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / "checkpoint.pt"
    asyncio.run(train(path, args.steps))
    deploy(path)


if __name__ == "__main__":
    main()
