"""Reward normalisation: rewards divided by a running standard deviation of the discounted return.

This is the scheme of gymnasium's ``NormalizeReward`` and SB3's ``VecNormalize``
(Engstrom et al. 2020, "Implementation Matters in Deep RL"): each env keeps the
discounted sum of its episode's rewards so far, ``G_t = r_t + gamma * G_{t-1}``
(reset at episode ends); rewards are divided by the standard deviation of ``G``
over everything seen (not centred), then clipped. The worker computes ``G`` (it
sees each env's episode whole, even across rollouts); the learner side keeps the
statistics and scales each batch before the update, so the critic learns values
of the scaled rewards. The statistics are saved with checkpoints
(:meth:`state_dict`).
"""

from __future__ import annotations

import numpy as np

from aiorl.algos.batch import RolloutBatch


class RewardNormalizer:
    """Running variance of discounted returns; scales batches' rewards by its inverse square root.

    Args:
        clip: scaled rewards are clipped to ``[-clip, clip]``.
        epsilon: added to the variance before the square root.
    """

    def __init__(self, clip: float = 10.0, epsilon: float = 1e-8) -> None:
        self.clip = clip
        self.epsilon = epsilon
        self.mean = 0.0
        self.var = 1.0
        self.count = 1e-4

    def observe(self, returns: np.ndarray) -> None:
        """Fold a sample of discounted returns into the running mean and variance (Chan et al.)."""
        if returns.size == 0:
            return
        batch_mean, batch_var, batch_count = float(returns.mean()), float(returns.var()), returns.size
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean += delta * batch_count / total
        self.var = (
            self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        ) / total
        self.count = total

    @property
    def scale(self) -> float:
        """What rewards are divided by."""
        return float(np.sqrt(self.var + self.epsilon))

    def normalize(self, batch: RolloutBatch) -> float:
        """Update the statistics with the batch's valid steps, then scale its rewards in place; return the scale."""
        self.observe(batch.disc_returns[batch.valid])
        scale = self.scale
        np.clip(batch.rewards / scale, -self.clip, self.clip, out=batch.rewards)
        return scale

    def state_dict(self) -> dict[str, float]:
        """The statistics, for a checkpoint."""
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore statistics saved by :meth:`state_dict`."""
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])
