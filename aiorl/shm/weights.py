"""The shared weight store: one flat float32 buffer and a seqlock version.

One writer (the trainer's broadcaster) and many readers (workers). There is no
reader lock, because a worker may be SIGKILLed at any instant and must never
leave a lock held. The sequence number is odd while a write is in progress;
a reader retries when it sees an odd or changed sequence. The published policy
version is ``sequence // 2``.

Memory ordering: there are no explicit fences. The writer stores the odd sequence,
then the data, then the even sequence, each in its own C call (so no compiler can
reorder them); a reader loads the sequence, the data, the sequence again. This is
correct on x86-64, whose total store order keeps stores in program order and loads
in program order as other cores see them. On weakly ordered CPUs (ARM, POWER) the
hardware may reorder them, and a reader could accept a torn snapshot: aiorl is
developed and tested on x86-64 Linux only; a port needs release/acquire fences here
(or a checksum of the data checked by the reader).
"""

from __future__ import annotations

import time

import numpy as np

from aiorl.shm.segment import ALIGN, Segment

READ_DEADLINE_S = 5.0


class TornRead(RuntimeError):
    """The writer kept the store busy past the read deadline."""


class WeightStore:
    """A seqlock-protected flat weight vector in shared memory."""

    def __init__(self, segment: Segment, num_weights: int) -> None:
        self.segment = segment
        self.num_weights = num_weights
        self._seq = segment.ndarray(0, (1,), np.int64)
        self._data = segment.ndarray(ALIGN, (num_weights,), np.float32)

    @classmethod
    def create(cls, num_weights: int) -> WeightStore:
        """Create the store (main process); version 0, all zeros until first publish."""
        return cls(Segment.create(ALIGN + 4 * num_weights, "weights"), num_weights)

    @classmethod
    def attach(cls, name: str, num_weights: int) -> WeightStore:
        """Attach to the store by name (worker process)."""
        return cls(Segment.attach(name), num_weights)

    @property
    def version(self) -> int:
        """The last fully published version (a cheap read, no copy)."""
        return int(self._seq[0]) // 2

    def publish(self, weights: np.ndarray, version: int) -> None:
        """Write ``weights`` as ``version`` (single writer only)."""
        if weights.shape != (self.num_weights,):
            raise ValueError(f"weights.shape={weights.shape} != ({self.num_weights},)")
        self._seq[0] = 2 * version - 1  # odd: write in progress
        np.copyto(self._data, weights, casting="same_kind")
        self._seq[0] = 2 * version

    def read_into(self, out: np.ndarray) -> int:
        """Copy a consistent snapshot into ``out`` and return its version."""
        deadline = time.monotonic() + READ_DEADLINE_S
        while True:
            before = int(self._seq[0])
            if before % 2 == 0:
                np.copyto(out, self._data)
                if int(self._seq[0]) == before:
                    return before // 2
            if time.monotonic() > deadline:
                raise TornRead(f"weight store stayed busy for {READ_DEADLINE_S} s")
            time.sleep(0)

    def close(self) -> None:
        """Drop the views and close (owner: unlink) the segment."""
        del self._seq, self._data
        self.segment.close()
