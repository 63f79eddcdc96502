"""The main-process side: worker pool (supervisor), consumer, broadcaster, counters, slot ledger."""

from aiorl.engine.broadcaster import Broadcaster
from aiorl.engine.consumer import Consumer, RunGoal
from aiorl.engine.hang import HangVerdict, HangWatch
from aiorl.engine.ledger import LedgerError, SlotLedger, SlotState
from aiorl.engine.pool import ReadyRollout, WorkerPool
from aiorl.engine.stats import DISCARD_REASONS, DiscardReason, TrainingStats

__all__ = [
    "DISCARD_REASONS",
    "Broadcaster",
    "Consumer",
    "DiscardReason",
    "HangVerdict",
    "HangWatch",
    "LedgerError",
    "ReadyRollout",
    "RunGoal",
    "SlotLedger",
    "SlotState",
    "TrainingStats",
    "WorkerPool",
]
