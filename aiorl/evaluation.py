"""Evaluation: play whole episodes with a snapshot of the policy, apart from the workers.

Evaluation builds its own envs (seeded apart from the training envs) and runs in a
thread of the trainer's process, so collection and learning carry on undisturbed.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from aiorl.distributions import ActionDistribution
from aiorl.envs import EnvFactory, ObservationEncoder
from aiorl.models import evaluate


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Returns and lengths of evaluation episodes, played by one policy version.

    Attributes:
        policy_version: the version that played.
        returns: the return of each episode.
        lengths: the length of each episode.
    """

    policy_version: int
    returns: tuple[float, ...]
    lengths: tuple[int, ...]

    @property
    def episodes(self) -> int:
        """How many episodes were played."""
        return len(self.returns)

    @property
    def mean_return(self) -> float:
        """Mean episode return."""
        return statistics.fmean(self.returns)

    @property
    def std_return(self) -> float:
        """Population standard deviation of the episode returns."""
        return statistics.pstdev(self.returns)


def play_episodes(
    env_factory: EnvFactory,
    encoder: ObservationEncoder,
    dist: ActionDistribution,
    policy: nn.Module,
    *,
    episodes: int,
    deterministic: bool,
    seed: int,
    policy_version: int,
) -> EvalResult:
    """Play ``episodes`` episodes, one env at a time, and return what they scored (blocking)."""
    returns, lengths = [], []
    obs_buffer = np.zeros((1, *encoder.shape), dtype=np.float32)
    env = env_factory()
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            total, length, done = 0.0, 0, False
            while not done:
                encoder.encode_into(obs, obs_buffer[0])
                with torch.no_grad():
                    dist_inputs, _ = evaluate(policy, torch.from_numpy(obs_buffer))
                    action = dist.mode(dist_inputs) if deterministic else dist.sample(dist_inputs)[0]
                obs, reward, terminated, truncated, _ = env.step(dist.to_env(action.numpy()[0]))
                total += float(reward)
                length += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(length)
    finally:
        env.close()
    return EvalResult(policy_version, tuple(returns), tuple(lengths))
