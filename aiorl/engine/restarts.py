"""The restart decision: a pure function of past restarts and the time (no I/O here).

Like an OTP supervisor, aiorl allows a restart *intensity* — at most
``max_restarts`` restarts within any ``window_s`` seconds across the pool — and
escalates when it is exceeded: the run stops with a ``WorkerRestartError``.
A worker that keeps failing waits longer before each replacement: the backoff
starts at ``backoff_s`` and doubles per recent failure of that worker, up to
``backoff_max_s``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class RestartBudget:
    """Decides whether, and after how long, a lost worker is replaced.

    Attributes:
        max_restarts: restarts allowed within ``window_s`` (the pool as a whole).
        window_s: the sliding window, in seconds.
        backoff_s: delay before the first replacement of a worker.
        backoff_max_s: upper bound of the doubling delay.
    """

    max_restarts: int
    window_s: float
    backoff_s: float
    backoff_max_s: float
    _restarts: deque[tuple[float, int]] = field(default_factory=deque)

    def _forget_before(self, now: float) -> None:
        while self._restarts and self._restarts[0][0] <= now - self.window_s:
            self._restarts.popleft()

    def next_delay(self, worker_id: int, now: float) -> float | None:
        """Record a loss of ``worker_id`` at ``now``; return the delay before its replacement.

        Returns ``None`` when the budget is spent (the caller escalates).
        """
        self._forget_before(now)
        if len(self._restarts) >= self.max_restarts:
            return None
        recent = sum(1 for _, wid in self._restarts if wid == worker_id)
        self._restarts.append((now, worker_id))
        return min(self.backoff_s * 2.0**recent, self.backoff_max_s)

    def recent(self, now: float) -> int:
        """Restarts within the window ending at ``now``."""
        self._forget_before(now)
        return len(self._restarts)
