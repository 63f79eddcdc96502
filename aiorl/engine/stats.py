"""Counters of the run: steps collected, trained and discarded (with reasons), episodes."""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import StrEnum


class DiscardReason(StrEnum):
    """Why collected steps were not trained on (the keys of :attr:`TrainingStats.discarded`)."""

    POLICY_LAG = "policy_lag"
    """Older than ``max_policy_lag`` when the consumer took them."""
    WORKER_LOST = "worker_lost"
    """Taken by a worker that died or hung before reporting them."""
    ENV_ERROR = "env_error"
    """The broken episode of an env that raised (masked out of its rollout), or the rollout of
    an env that failed for good."""
    LEARNER_ERROR = "learner_error"
    """In the batch of a learner update that failed."""
    SHUTDOWN = "shutdown"
    """Collected but not trained on when the trainer stopped its workers."""
    SAMPLE_ONLY = "sample_only"
    """Collected by ``Trainer.sample``, which measures sampling without learning."""


DISCARD_REASONS = tuple(reason.value for reason in DiscardReason)
"""The reasons' strings, as they appear in ``TrainResult.steps_discarded`` and checkpoints."""


@dataclass(slots=True)
class TrainingStats:
    """Running totals over the trainer's life.

    The accounting identity ``steps_collected == steps_trained + steps_discarded +
    steps_pending`` holds at every moment; ``steps_pending`` counts rollouts that
    were collected but not yet trained or discarded (in the queue or in a batch
    being built). Once the trainer is closed, ``steps_pending`` is 0. The step
    counters are written by the run's :class:`~aiorl.engine.ledger.SlotLedger`
    alone (and restored from a checkpoint).
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

    def episodes_finished(self, episode_returns: list[float]) -> None:
        """Count the episodes that ended in an arrived rollout, with their returns."""
        self.episodes += len(episode_returns)
        self.recent_returns.extend(episode_returns)

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
