"""The hang verdict, checked against a fake clock."""

from __future__ import annotations

from dataclasses import dataclass

from aiorl.engine.hang import HangWatch


@dataclass
class FakeClock:
    """Seconds that pass only when a test says so."""

    now: float = 100.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def watch(clock: FakeClock, worker_timeout_s: float = 10.0, start_timeout_s: float = 30.0) -> HangWatch:
    return HangWatch(worker_timeout_s=worker_timeout_s, start_timeout_s=start_timeout_s, last_heard=clock.now)


def test_a_worker_silent_for_less_than_the_timeout_is_healthy():
    clock = FakeClock()
    w = watch(clock)
    verdict = w.verdict(clock.advance(9.5), greeted=True)
    assert not verdict.hung
    assert verdict.silent_s == 9.5


def test_a_worker_silent_for_exactly_the_timeout_is_still_healthy():
    clock = FakeClock()
    w = watch(clock)
    assert not w.verdict(clock.advance(10.0), greeted=True).hung


def test_a_worker_silent_for_longer_than_the_timeout_is_hung():
    clock = FakeClock()
    w = watch(clock)
    verdict = w.verdict(clock.advance(10.5), greeted=True)
    assert verdict.hung
    assert (verdict.silent_s, verdict.limit_s) == (10.5, 10.0)


def test_a_frame_starts_the_silence_over():
    clock = FakeClock()
    w = watch(clock)
    w.heard(clock.advance(8.0))
    verdict = w.verdict(clock.advance(8.0), greeted=True)
    assert not verdict.hung
    assert verdict.silent_s == 8.0


def test_before_hello_the_start_timeout_applies():
    clock = FakeClock()
    w = watch(clock, worker_timeout_s=10.0, start_timeout_s=30.0)
    assert not w.verdict(clock.advance(25.0), greeted=False).hung
    assert w.verdict(clock.now, greeted=True).hung


def test_a_worker_that_never_says_hello_is_hung_after_the_start_timeout():
    clock = FakeClock()
    w = watch(clock, worker_timeout_s=10.0, start_timeout_s=30.0)
    verdict = w.verdict(clock.advance(31.0), greeted=False)
    assert verdict.hung
    assert verdict.limit_s == 30.0


def test_the_watchdog_checks_four_times_per_timeout():
    clock = FakeClock()
    assert watch(clock, worker_timeout_s=2.0).verdict(clock.now, greeted=True).check_in_s == 0.5


def test_the_watchdog_checks_at_least_every_second():
    clock = FakeClock()
    assert watch(clock, worker_timeout_s=60.0).verdict(clock.now, greeted=True).check_in_s == 1.0
