"""The restart decision, checked against a fake clock."""

from __future__ import annotations

from aiorl.engine.restarts import RestartBudget


def budget(**overrides) -> RestartBudget:
    options = {"max_restarts": 3, "window_s": 60.0, "backoff_s": 0.5, "backoff_max_s": 4.0}
    return RestartBudget(**{**options, **overrides})


def test_backoff_doubles_per_recent_failure_of_the_same_worker():
    b = budget(max_restarts=10)
    assert [b.next_delay(0, now=t) for t in (0, 1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_other_workers_do_not_lengthen_a_workers_backoff():
    b = budget()
    assert b.next_delay(0, now=0.0) == 0.5
    assert b.next_delay(1, now=1.0) == 0.5


def test_more_than_max_restarts_within_the_window_escalates():
    b = budget()
    assert all(b.next_delay(w, now=t) is not None for w, t in [(0, 0.0), (1, 10.0), (0, 20.0)])
    assert b.next_delay(1, now=30.0) is None


def test_restarts_older_than_the_window_are_forgiven():
    b = budget()
    for t in (0.0, 10.0, 20.0):
        b.next_delay(0, now=t)
    assert b.recent(now=61.0) == 2
    assert b.next_delay(0, now=61.0) == 2.0  # two recent failures of worker 0 remain
