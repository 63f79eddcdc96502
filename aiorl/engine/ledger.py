"""The slot ledger: who holds each slot, and where every collected env step went (no I/O here).

Every slot belongs to one seat (a worker id) for the whole launch and is, at
any moment, in one of three states:

- ``FREE``: with its seat, waiting to be granted to the seat's worker;
- ``GRANTED``: the seat's current worker may fill it;
- ``HELD``: filled and reported; the consumer has it (queued or being copied).

The pool does the I/O (a grant is a message to the worker) and records each
transition here; a transition the states forbid (a double release, a fill of a
slot that was not granted, a second reclaim of the same worker) is a bug in the
caller and raises :class:`LedgerError` instead of corrupting the counts.

The ledger is also the one place where env steps are counted: collected when a
rollout arrives (or when a lost worker's unreported steps are reclaimed),
consumed when the learner trained on them, discarded with a
:class:`~aiorl.engine.stats.DiscardReason`. The identity
``collected == consumed + discarded + pending`` holds after every call, and
nothing is consumed or discarded that was not pending.
"""

from __future__ import annotations

from enum import Enum

from aiorl.engine.stats import DiscardReason, TrainingStats

__all__ = ["DiscardReason", "LedgerError", "SlotLedger", "SlotState", "discarded_at_close"]


class LedgerError(RuntimeError):
    """A slot transition or a step count that the ledger's states forbid (a bug in the caller)."""


class SlotState(Enum):
    """Where a slot is."""

    FREE = "free"
    GRANTED = "granted"
    HELD = "held"


class SlotLedger:
    """Slots of every seat and the step accounting of one launch of the workers.

    Args:
        seat_slots: the slot ids of each seat (worker id = index); every slot starts ``FREE``.
        stats: the trainer's counters, which the ledger alone writes steps into.
    """

    def __init__(self, seat_slots: list[tuple[int, ...]], stats: TrainingStats) -> None:
        self.stats = stats
        self._seat: dict[int, int] = {}
        for worker_id, slots in enumerate(seat_slots):
            for slot in slots:
                if slot in self._seat:
                    raise LedgerError(f"slot {slot} is in seats {self._seat[slot]} and {worker_id}")
                self._seat[slot] = worker_id
        self._state = dict.fromkeys(self._seat, SlotState.FREE)
        self._reported: dict[int, int] = {}  # worker id -> steps its current worker reported

    # ---- slots ---------------------------------------------------------------------------
    def state(self, slot: int) -> SlotState:
        """Where ``slot`` is now."""
        return self._state[self._known(slot)]

    def seat_of(self, slot: int) -> int:
        """The worker id whose seat ``slot`` belongs to."""
        return self._seat[self._known(slot)]

    def slots(self, worker_id: int, state: SlotState) -> list[int]:
        """The slots of ``worker_id``'s seat in ``state``, in ascending order."""
        return sorted(s for s, w in self._seat.items() if w == worker_id and self._state[s] is state)

    def seated(self, worker_id: int) -> bool:
        """Whether a worker holds the seat (entered and not reclaimed yet)."""
        return worker_id in self._reported

    def enter(self, worker_id: int) -> None:
        """A new worker takes ``worker_id``'s seat (its first, or the replacement of a reclaimed one)."""
        if self.seated(worker_id):
            raise LedgerError(f"worker {worker_id}'s seat is taken; reclaim its worker first")
        self._reported[worker_id] = 0

    def grant(self, worker_id: int, slot: int) -> None:
        """Record that the seat's worker got ``slot`` (``FREE`` -> ``GRANTED``)."""
        self._require(slot, worker_id, SlotState.FREE)
        if not self.seated(worker_id):
            raise LedgerError(f"slot {slot} granted to seat {worker_id}, which has no worker")
        self._state[slot] = SlotState.GRANTED

    def filled(self, worker_id: int, slot: int, env_steps: int, discarded_steps: int = 0) -> None:
        """The worker reported ``slot`` filled (``GRANTED`` -> ``HELD``).

        ``env_steps`` are trainable and stay pending until consumed or discarded;
        ``discarded_steps`` (a broken episode masked out of the rollout) are
        collected and discarded at once (``env_error``).
        """
        self._require(slot, worker_id, SlotState.GRANTED)
        self._state[slot] = SlotState.HELD
        self._reported[worker_id] += env_steps + discarded_steps
        self.stats.steps_collected += env_steps + discarded_steps
        if discarded_steps:
            self.discard(discarded_steps, DiscardReason.ENV_ERROR)

    def release(self, slot: int) -> int:
        """The consumer is done with ``slot`` (``HELD`` -> ``FREE``); return its seat's worker id.

        The caller then grants it again to the seat's worker if that one is alive.
        """
        self._require(slot, self.seat_of(slot), SlotState.HELD)
        self._state[slot] = SlotState.FREE
        return self._seat[slot]

    def reclaim(self, worker_id: int, steps_taken: int, reason: DiscardReason) -> int:
        """The seat's worker is gone: take back its granted slots and count its unreported steps.

        ``steps_taken`` is what the worker took as far as the trainer knows; the
        steps beyond those it reported are collected and discarded with
        ``reason`` (``worker_lost``, or ``shutdown`` when the pool stopped it).
        Slots it reported stay ``HELD``: nothing handed to the consumer is lost.
        Returns the steps counted as lost.
        """
        if not self.seated(worker_id):
            raise LedgerError(f"seat {worker_id} has no worker to reclaim")
        lost = max(steps_taken - self._reported.pop(worker_id), 0)
        for slot in self.slots(worker_id, SlotState.GRANTED):
            self._state[slot] = SlotState.FREE
        if lost:
            self.stats.steps_collected += lost
            self.discard(lost, reason)
        return lost

    # ---- steps ---------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Steps collected but neither consumed nor discarded yet."""
        return self.stats.steps_pending

    def consume(self, env_steps: int) -> None:
        """The learner trained on ``env_steps`` pending steps."""
        self._take_pending(env_steps, "consumed")
        self.stats.steps_trained += env_steps

    def discard(self, env_steps: int, reason: DiscardReason) -> None:
        """``env_steps`` pending steps will not be trained on, because of ``reason``."""
        if not isinstance(reason, DiscardReason):
            raise LedgerError(f"{reason!r} is not a DiscardReason")
        self._take_pending(env_steps, f"discarded ({reason.value})")
        self.stats.discarded[reason.value] += env_steps

    # ---- checks --------------------------------------------------------------------------
    def _take_pending(self, env_steps: int, what: str) -> None:
        if env_steps < 0 or env_steps > self.pending:
            raise LedgerError(f"{env_steps} steps {what}, but {self.pending} are pending")

    def _known(self, slot: int) -> int:
        if slot not in self._seat:
            raise LedgerError(f"slot {slot} is in no seat")
        return slot

    def _require(self, slot: int, worker_id: int, state: SlotState) -> None:
        if self.seat_of(slot) != worker_id:
            raise LedgerError(f"slot {slot} belongs to seat {self._seat[slot]}, not {worker_id}")
        if self._state[slot] is not state:
            raise LedgerError(f"slot {slot} is {self._state[slot].value}, not {state.value}")


def discarded_at_close(stats: TrainingStats) -> dict[str, int]:
    """Discarded steps by reason as they would be if the trainer closed now (pending ones: ``shutdown``)."""
    discarded = dict(stats.discarded)
    if stats.steps_pending:
        discarded[DiscardReason.SHUTDOWN.value] = discarded.get(DiscardReason.SHUTDOWN.value, 0) + stats.steps_pending
    return discarded
