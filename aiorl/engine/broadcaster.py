"""The broadcaster: publishes each new policy version once, for every worker.

The consumer hands over new weights without waiting; the broadcaster writes
the latest to the backend's weight publisher (the shared weight store, seqlock,
version++; or one ``ray.put`` per version) in a thread, so a big model's copy
(~10 ms for 8M parameters) does not hold up the event loop. If several versions
arrive before it runs, only the newest is written. Workers pull at their next
rollout boundary.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from aiorl.backends.base import WeightPublisher


class Broadcaster:
    """Owns the writer side of the backend's :class:`~aiorl.backends.WeightPublisher`."""

    def __init__(self, store: WeightPublisher) -> None:
        self.store = store
        self._latest: tuple[np.ndarray, int] | None = None
        self._submitted = asyncio.Event()
        self._writing = threading.Lock()  # the store has one writer at a time: run()'s thread or flush()

    @property
    def published_version(self) -> int:
        """The version workers can read now."""
        return self.store.version

    def submit(self, weights: np.ndarray, version: int) -> None:
        """Hand over ``weights`` as ``version`` for publication; never blocks."""
        self._latest = (weights, version)
        self._submitted.set()

    def publish_now(self, weights: np.ndarray, version: int) -> None:
        """Write ``weights`` synchronously (initial weights, before workers start)."""
        self._publish(weights, version)

    def flush(self) -> None:
        """Publish the newest submitted version now, if any (end of a run; strict on-policy mode).

        Synchronous: if :meth:`run`'s thread is writing an older version, this waits for it.
        """
        if (latest := self._take_latest()) is not None:
            self._publish(*latest)

    async def run(self) -> None:
        """Publish submitted weights in a thread until cancelled; versions submitted meanwhile coalesce."""
        while True:
            await self._submitted.wait()
            if (latest := self._take_latest()) is not None:
                # Cancelled meanwhile, the thread still finishes the write (flush() waits for it).
                await asyncio.to_thread(self._publish, *latest)

    def _take_latest(self) -> tuple[np.ndarray, int] | None:
        """The newest submitted weights and version not published yet, if any (taken: none after)."""
        self._submitted.clear()
        latest, self._latest = self._latest, None
        return latest

    def _publish(self, weights: np.ndarray, version: int) -> None:
        with self._writing:
            if version >= self.store.version:  # a thread's older version never overwrites what flush() wrote
                self.store.publish(weights, version)
