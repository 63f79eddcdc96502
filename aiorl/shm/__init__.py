"""Shared memory: rollout slots and the weight store, both created by the main process."""

from aiorl.shm.progress import ProgressBoard
from aiorl.shm.segment import PREFIX, Segment
from aiorl.shm.slots import RolloutLayout, RolloutSlots, SlotArrays
from aiorl.shm.weights import WeightStore

__all__ = ["PREFIX", "ProgressBoard", "RolloutLayout", "RolloutSlots", "Segment", "SlotArrays", "WeightStore"]
