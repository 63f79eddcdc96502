"""Rollout slots: fixed-size regions of one shared segment that workers fill.

A slot holds one rollout of ``rollout_length`` steps of ``envs_per_worker`` envs.
The main process creates the segment and owns the free-slot bookkeeping; a
worker writes into a slot it was granted, then sends only the slot id.
"""

from __future__ import annotations

import numpy as np

from aiorl.rollout import RolloutLayout, SlotArrays
from aiorl.shm.segment import Segment, align


def slot_nbytes(layout: RolloutLayout) -> int:
    """Bytes taken by one slot of ``layout``, every field aligned to a cache line."""
    return sum(align(int(np.prod(shape)) * dtype.itemsize) for shape, dtype in layout.fields().values())


class RolloutSlots:
    """``num_slots`` slots in one segment, with per-slot numpy views."""

    def __init__(self, segment: Segment, layout: RolloutLayout, num_slots: int) -> None:
        self.segment = segment
        self.layout = layout
        self.num_slots = num_slots
        self._views = [self._slot_views(i) for i in range(num_slots)]

    @classmethod
    def create(cls, layout: RolloutLayout, num_slots: int) -> RolloutSlots:
        """Create the segment (main process)."""
        return cls(Segment.create(slot_nbytes(layout) * num_slots, "rollouts"), layout, num_slots)

    @classmethod
    def attach(cls, name: str, layout: RolloutLayout, num_slots: int) -> RolloutSlots:
        """Attach to the segment by name (worker process)."""
        return cls(Segment.attach(name), layout, num_slots)

    def _slot_views(self, slot: int) -> SlotArrays:
        offset = slot * slot_nbytes(self.layout)
        views: SlotArrays = {}
        for name, (shape, dtype) in self.layout.fields().items():
            views[name] = self.segment.ndarray(offset, shape, dtype)
            offset += align(int(np.prod(shape)) * dtype.itemsize)
        return views

    def __getitem__(self, slot: int) -> SlotArrays:
        """The arrays of slot ``slot`` (views, not copies)."""
        return self._views[slot]

    def close(self) -> None:
        """Drop the views and close (owner: unlink) the segment."""
        self._views = []
        self.segment.close()
