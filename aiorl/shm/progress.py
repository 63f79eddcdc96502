"""The progress board: one int64 counter per worker, in shared memory.

A worker adds to its counter once per row of env steps it writes into a slot (one
step of each of its envs), and for the steps its envs took in a row where one failed
for good. When a worker is lost (or stopped), the trainer compares the counter with
the steps the worker reported in finished rollouts: the difference is its unfinished
rollout, counted as discarded, even after a SIGKILL. The one thing a SIGKILL (or a
hung env's kill) takes uncounted is the row in progress: steps some of its envs took
but the worker never wrote, at most one per env. (Counting each env step on the board
instead would cost the hot loop a shared-memory write per step.)
"""

from __future__ import annotations

import numpy as np

from aiorl.shm.segment import Segment


class ProgressBoard:
    """``num_workers`` step counters."""

    def __init__(self, segment: Segment, num_workers: int) -> None:
        self.segment = segment
        self.num_workers = num_workers
        self._counts = segment.ndarray(0, (num_workers,), np.int64)

    @classmethod
    def create(cls, num_workers: int) -> ProgressBoard:
        """Create the board (main process), all counters 0."""
        return cls(Segment.create(8 * num_workers, "progress"), num_workers)

    @classmethod
    def attach(cls, name: str, num_workers: int) -> ProgressBoard:
        """Attach to the board by name (worker process)."""
        return cls(Segment.attach(name), num_workers)

    def add(self, worker_id: int, steps: int) -> None:
        """Count ``steps`` more env steps for ``worker_id`` (its own process only)."""
        self._counts[worker_id] += steps

    def read(self, worker_id: int) -> int:
        """Steps counted for ``worker_id`` since its last :meth:`reset`."""
        return int(self._counts[worker_id])

    def reset(self, worker_id: int) -> None:
        """Zero a counter before starting a new worker process for that id."""
        self._counts[worker_id] = 0

    def close(self) -> None:
        """Drop the view and close (owner: unlink) the segment."""
        del self._counts
        self.segment.close()
