"""The main-process side: worker pool (supervisor), consumer, broadcaster, counters."""

from aiorl.engine.broadcaster import Broadcaster
from aiorl.engine.consumer import Consumer, LagStats, RunGoal, UpdateReport
from aiorl.engine.pool import ReadyRollout, WorkerPool
from aiorl.engine.stats import DISCARD_REASONS, TrainingStats

__all__ = [
    "DISCARD_REASONS",
    "Broadcaster",
    "Consumer",
    "LagStats",
    "ReadyRollout",
    "RunGoal",
    "TrainingStats",
    "UpdateReport",
    "WorkerPool",
]
