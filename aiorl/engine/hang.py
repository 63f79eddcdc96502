"""The hang verdict: a pure function of when a worker was last heard from and the time (no I/O here).

A worker sends a frame at least every ``heartbeat_interval_s`` (heartbeats,
filled slots, env errors). The pool's watchdog asks :meth:`HangWatch.verdict`
every :attr:`HangWatch.check_every_s` seconds; a worker silent for longer than
its limit is hung: ``worker_timeout_s`` once it said hello, ``start_timeout_s``
before (building envs may take longer than a heartbeat). Silence of exactly the
limit is still healthy.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_CHECK_S = 1.0
"""The watchdog looks at least this often (seconds), so a hang is declared promptly."""


@dataclass(frozen=True, slots=True)
class HangVerdict:
    """What the watchdog concluded at one moment.

    Attributes:
        hung: silent for longer than ``limit_s``.
        silent_s: seconds since the worker was last heard from.
        limit_s: the silence allowed now.
        check_in_s: when to ask again (seconds from now), if not hung.
    """

    hung: bool
    silent_s: float
    limit_s: float
    check_in_s: float


@dataclass(slots=True)
class HangWatch:
    """The silence of one worker, judged against its limits.

    Attributes:
        worker_timeout_s: silence allowed once the worker said hello.
        start_timeout_s: silence allowed before (while it builds its envs).
        last_heard: the clock's reading at the worker's last frame (or its start).
    """

    worker_timeout_s: float
    start_timeout_s: float
    last_heard: float

    @property
    def check_every_s(self) -> float:
        """How often the watchdog asks: a quarter of ``worker_timeout_s``, at most :data:`MAX_CHECK_S`."""
        return min(MAX_CHECK_S, self.worker_timeout_s / 4)

    def heard(self, now: float) -> None:
        """The worker sent a frame at ``now``: its silence starts over."""
        self.last_heard = now

    def verdict(self, now: float, *, greeted: bool) -> HangVerdict:
        """Whether the worker is hung at ``now``; ``greeted``: it has said hello."""
        limit = self.worker_timeout_s if greeted else self.start_timeout_s
        silent = now - self.last_heard
        return HangVerdict(hung=silent > limit, silent_s=silent, limit_s=limit, check_in_s=self.check_every_s)
