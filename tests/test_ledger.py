"""The slot ledger, checked as pure code: fake seats and slots, no workers, no event loop."""

from __future__ import annotations

import pytest

from aiorl.engine.ledger import DiscardReason, LedgerError, SlotLedger, SlotState, discarded_at_close
from aiorl.engine.stats import DISCARD_REASONS, TrainingStats

FREE, GRANTED, HELD = SlotState.FREE, SlotState.GRANTED, SlotState.HELD


def ledger() -> SlotLedger:
    """Two seats of two slots each (worker 0: slots 0, 1; worker 1: slots 2, 3), both seated."""
    book = SlotLedger([(0, 1), (2, 3)], TrainingStats(return_window=10))
    book.enter(0)
    book.enter(1)
    return book


def filled_slot(book: SlotLedger, worker_id: int, slot: int, env_steps: int, discarded_steps: int = 0) -> None:
    book.grant(worker_id, slot)
    book.filled(worker_id, slot, env_steps, discarded_steps)


def assert_balanced(book: SlotLedger) -> None:
    stats = book.stats
    assert stats.steps_collected == stats.steps_trained + sum(stats.discarded.values()) + book.pending


# ---- slots -------------------------------------------------------------------------------
def test_every_slot_starts_free_in_its_seat():
    book = ledger()
    assert book.slots(0, FREE) == [0, 1]
    assert book.slots(1, FREE) == [2, 3]
    assert book.seat_of(3) == 1


def test_a_slot_in_two_seats_is_rejected():
    with pytest.raises(LedgerError, match="slot 1"):
        SlotLedger([(0, 1), (1, 2)], TrainingStats(return_window=10))


def test_a_granted_slot_is_the_workers_until_it_reports_it_filled():
    book = ledger()
    book.grant(0, 1)
    assert book.state(1) is GRANTED
    assert book.slots(0, FREE) == [0]
    book.filled(0, 1, env_steps=8)
    assert book.state(1) is HELD


def test_a_released_slot_is_free_again_in_its_seat():
    book = ledger()
    filled_slot(book, 1, 2, env_steps=8)
    assert book.release(2) == 1
    assert book.state(2) is FREE


def test_a_slot_cannot_be_granted_twice():
    book = ledger()
    book.grant(0, 0)
    with pytest.raises(LedgerError, match="granted, not free"):
        book.grant(0, 0)


def test_a_slot_cannot_be_granted_to_another_seats_worker():
    book = ledger()
    with pytest.raises(LedgerError, match="belongs to seat 1"):
        book.grant(0, 2)


def test_a_slot_cannot_be_granted_to_an_empty_seat():
    book = SlotLedger([(0, 1)], TrainingStats(return_window=10))
    with pytest.raises(LedgerError, match="no worker"):
        book.grant(0, 0)


def test_a_slot_that_was_not_granted_cannot_be_filled():
    book = ledger()
    with pytest.raises(LedgerError, match="free, not granted"):
        book.filled(0, 0, env_steps=8)


def test_a_double_release_is_rejected():
    book = ledger()
    filled_slot(book, 0, 0, env_steps=8)
    book.release(0)
    with pytest.raises(LedgerError, match="free, not held"):
        book.release(0)


def test_a_granted_slot_cannot_be_released():
    book = ledger()
    book.grant(0, 0)
    with pytest.raises(LedgerError, match="granted, not held"):
        book.release(0)


def test_an_unknown_slot_is_rejected():
    with pytest.raises(LedgerError, match="slot 9 is in no seat"):
        ledger().release(9)


# ---- reclaiming a lost worker --------------------------------------------------------------
def test_reclaim_frees_the_lost_workers_granted_slots_only():
    book = ledger()
    filled_slot(book, 0, 0, env_steps=8)  # reported: the consumer keeps it
    book.grant(0, 1)
    book.reclaim(0, steps_taken=8, reason=DiscardReason.WORKER_LOST)
    assert book.state(0) is HELD
    assert book.state(1) is FREE


def test_reclaim_leaves_other_seats_alone():
    book = ledger()
    book.grant(1, 2)
    book.reclaim(0, steps_taken=0, reason=DiscardReason.WORKER_LOST)
    assert book.state(2) is GRANTED


def test_a_lost_workers_unreported_steps_are_collected_and_discarded_with_the_reason():
    book = ledger()
    filled_slot(book, 0, 0, env_steps=8)
    book.grant(0, 1)
    lost = book.reclaim(0, steps_taken=13, reason=DiscardReason.WORKER_LOST)
    assert lost == 5
    assert book.stats.steps_collected == 13
    assert book.stats.discarded == {"worker_lost": 5}
    assert book.pending == 8  # the reported rollout is still the consumer's


def test_a_worker_stopped_at_shutdown_counts_its_steps_as_shutdown():
    book = ledger()
    book.grant(0, 0)
    book.reclaim(0, steps_taken=3, reason=DiscardReason.SHUTDOWN)
    assert book.stats.discarded == {"shutdown": 3}


def test_a_worker_that_lost_nothing_discards_nothing():
    book = ledger()
    filled_slot(book, 0, 0, env_steps=8)
    assert book.reclaim(0, steps_taken=8, reason=DiscardReason.WORKER_LOST) == 0
    assert book.stats.discarded == {}


def test_a_double_reclaim_is_rejected_and_the_lost_steps_count_once():
    book = ledger()
    book.grant(0, 0)
    book.reclaim(0, steps_taken=6, reason=DiscardReason.WORKER_LOST)
    with pytest.raises(LedgerError, match="no worker to reclaim"):
        book.reclaim(0, steps_taken=6, reason=DiscardReason.WORKER_LOST)
    assert book.stats.discarded == {"worker_lost": 6}


def test_a_replacement_enters_only_a_reclaimed_seat():
    book = ledger()
    with pytest.raises(LedgerError, match="seat is taken"):
        book.enter(0)
    book.reclaim(0, steps_taken=0, reason=DiscardReason.WORKER_LOST)
    book.enter(0)
    assert book.seated(0)


def test_a_replacements_lost_steps_count_from_its_own_start():
    book = ledger()
    filled_slot(book, 0, 0, env_steps=8)
    book.reclaim(0, steps_taken=8, reason=DiscardReason.WORKER_LOST)
    book.enter(0)
    book.grant(0, 1)
    book.filled(0, 1, env_steps=4)
    assert book.reclaim(0, steps_taken=6, reason=DiscardReason.WORKER_LOST) == 2


def test_a_reclaimed_workers_slots_can_be_granted_to_its_replacement():
    book = ledger()
    book.grant(0, 0)
    book.reclaim(0, steps_taken=0, reason=DiscardReason.WORKER_LOST)
    book.enter(0)
    book.grant(0, 0)
    assert book.state(0) is GRANTED


# ---- step accounting ---------------------------------------------------------------------
def test_filled_steps_are_pending_until_consumed():
    book = ledger()
    filled_slot(book, 0, 0, env_steps=8)
    assert book.pending == 8
    book.consume(8)
    assert book.pending == 0
    assert book.stats.steps_trained == 8


def test_a_broken_episodes_steps_are_collected_and_discarded_as_env_error():
    book = ledger()
    filled_slot(book, 0, 0, env_steps=6, discarded_steps=2)
    assert book.stats.steps_collected == 8
    assert book.stats.discarded == {"env_error": 2}
    assert book.pending == 6


def test_discards_are_counted_by_reason():
    book = ledger()
    filled_slot(book, 0, 0, env_steps=8)
    book.discard(3, DiscardReason.POLICY_LAG)
    book.discard(5, DiscardReason.SHUTDOWN)
    assert book.stats.discarded == {"policy_lag": 3, "shutdown": 5}


def test_a_reason_must_be_a_discard_reason():
    book = ledger()
    filled_slot(book, 0, 0, env_steps=8)
    with pytest.raises(LedgerError, match="not a DiscardReason"):
        book.discard(8, "policy_lag")  # type: ignore[arg-type]


def test_more_steps_than_pending_cannot_be_discarded():
    book = ledger()
    filled_slot(book, 0, 0, env_steps=8)
    with pytest.raises(LedgerError, match="9 steps discarded"):
        book.discard(9, DiscardReason.LEARNER_ERROR)
    assert book.stats.discarded == {}


def test_more_steps_than_pending_cannot_be_consumed():
    book = ledger()
    filled_slot(book, 0, 0, env_steps=8)
    book.discard(8, DiscardReason.POLICY_LAG)
    with pytest.raises(LedgerError, match="8 steps consumed, but 0 are pending"):
        book.consume(8)


def test_collected_is_consumed_plus_discarded_plus_pending_through_a_launch():
    book = ledger()
    filled_slot(book, 0, 0, env_steps=8, discarded_steps=2)
    assert_balanced(book)
    filled_slot(book, 1, 2, env_steps=8)
    book.release(0)
    assert_balanced(book)
    book.consume(8)
    book.grant(0, 0)
    book.reclaim(0, steps_taken=23, reason=DiscardReason.WORKER_LOST)
    assert_balanced(book)
    book.discard(5, DiscardReason.POLICY_LAG)
    assert_balanced(book)
    assert (book.stats.steps_collected, book.stats.steps_trained, book.pending) == (31, 8, 3)
    assert book.stats.discarded == {"env_error": 2, "worker_lost": 13, "policy_lag": 5}


def test_pending_steps_count_as_shutdown_in_the_discards_at_close():
    book = ledger()
    filled_slot(book, 0, 0, env_steps=8)
    book.discard(3, DiscardReason.SHUTDOWN)
    book.discard(1, DiscardReason.POLICY_LAG)
    assert discarded_at_close(book.stats) == {"shutdown": 7, "policy_lag": 1}
    assert book.stats.discarded == {"shutdown": 3, "policy_lag": 1}, "the ledger itself is unchanged"


def test_the_reasons_keep_the_strings_users_see():
    assert DISCARD_REASONS == ("policy_lag", "worker_lost", "env_error", "learner_error", "shutdown", "sample_only")
    assert [reason.value for reason in DiscardReason] == list(DISCARD_REASONS)
