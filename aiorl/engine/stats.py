"""Counters of the run: steps collected, trained and discarded (with reasons), episodes."""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field

DISCARD_REASONS = ("policy_lag", "worker_lost", "env_error", "learner_error", "shutdown", "sample_only")
"""Why collected steps were not trained on. ``sample_only``: collected by ``Trainer.sample``."""


@dataclass(slots=True)
class TrainingStats:
    """Running totals over the trainer's life.

    The accounting identity ``steps_collected == steps_trained + steps_discarded +
    steps_pending`` holds at every moment; ``steps_pending`` counts rollouts that
    were collected but not yet trained or discarded (in the queue or in a batch
    being built). Once the trainer is closed, ``steps_pending`` is 0.
    """

    return_window: int
    steps_collected: int = 0
    steps_trained: int = 0
    discarded: Counter[str] = field(default_factory=Counter)
    episodes: int = 0
    updates: int = 0
    worker_restarts: int = 0
    env_errors: int = 0
    recent_returns: deque[float] = field(init=False)

    def __post_init__(self) -> None:
        self.recent_returns = deque(maxlen=self.return_window)

    def collected(self, env_steps: int, episode_returns: list[float]) -> None:
        """Count a rollout that arrived and the episodes that ended in it."""
        self.steps_collected += env_steps
        self.episodes += len(episode_returns)
        self.recent_returns.extend(episode_returns)

    def discard(self, env_steps: int, reason: str) -> None:
        """Count ``env_steps`` collected steps that will not be trained on."""
        assert reason in DISCARD_REASONS, reason
        self.discarded[reason] += env_steps

    @property
    def steps_discarded(self) -> int:
        """All discarded steps, whatever the reason."""
        return sum(self.discarded.values())

    @property
    def steps_pending(self) -> int:
        """Steps collected but neither trained nor discarded yet."""
        return self.steps_collected - self.steps_trained - self.steps_discarded

    @property
    def mean_return(self) -> float:
        """Mean return of the last ``return_window`` finished episodes (NaN before any)."""
        if not self.recent_returns:
            return math.nan
        return sum(self.recent_returns) / len(self.recent_returns)

    @property
    def window_full(self) -> bool:
        """Whether ``return_window`` episodes have finished."""
        return len(self.recent_returns) == self.return_window
