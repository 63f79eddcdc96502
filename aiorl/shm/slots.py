"""Rollout slots: fixed-size regions of one shared segment that workers fill.

A slot holds one rollout of ``rollout_length`` steps of ``envs_per_worker`` envs.
The main process creates the segment and owns the free-slot bookkeeping; a
worker writes into a slot it was granted, then sends only the slot id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aiorl.shm.segment import Segment, align


@dataclass(frozen=True, slots=True)
class RolloutLayout:
    """The shape of one rollout and the byte layout of a slot.

    Fields of a slot (``T`` = rollout_length, ``K`` = envs_per_worker):

    ============ ================= ==================================================
    obs          [T, K, *obs]      observation the action was taken in (float32)
    actions      [T, K, *act]      sampled action (unclipped for Gaussians)
    logprobs     [T, K]            behaviour log-probability of the action
    values       [T, K]            behaviour value estimate V(obs)
    rewards      [T, K]            reward returned by ``env.step``
    terminated   [T, K]            episode ended in a terminal state (no bootstrap)
    truncated    [T, K]            episode was cut (time limit): bootstrap from trunc_values
    trunc_values [T, K]            V(final observation) where ``truncated``, else 0
    valid        [T, K]            False for steps of an episode broken by an env error
    disc_returns [T, K]            discounted sum of the episode's rewards up to the step
                                   (for reward normalisation; 0 when it is off)
    versions     [T, K]            policy version that acted at each step
    next_obs     [K, *obs]         observation after the last step (for bootstrapping)
    ============ ================= ==================================================
    """

    rollout_length: int
    num_envs: int
    obs_shape: tuple[int, ...]
    action_shape: tuple[int, ...]
    action_dtype: str

    def fields(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Name -> (shape, dtype) of every array in a slot, in layout order."""
        t, k = self.rollout_length, self.num_envs
        f32 = np.dtype(np.float32)
        return {
            "obs": ((t, k, *self.obs_shape), f32),
            "actions": ((t, k, *self.action_shape), np.dtype(self.action_dtype)),
            "logprobs": ((t, k), f32),
            "values": ((t, k), f32),
            "rewards": ((t, k), f32),
            "terminated": ((t, k), np.dtype(np.bool_)),
            "truncated": ((t, k), np.dtype(np.bool_)),
            "trunc_values": ((t, k), f32),
            "valid": ((t, k), np.dtype(np.bool_)),
            "disc_returns": ((t, k), f32),
            "versions": ((t, k), np.dtype(np.int64)),
            "next_obs": ((k, *self.obs_shape), f32),
        }

    @property
    def slot_nbytes(self) -> int:
        """Bytes taken by one slot, every field aligned to a cache line."""
        return sum(align(int(np.prod(shape)) * dtype.itemsize) for shape, dtype in self.fields().values())

    @property
    def steps(self) -> int:
        """Env steps in one rollout."""
        return self.rollout_length * self.num_envs


SlotArrays = dict[str, np.ndarray]


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
        return cls(Segment.create(layout.slot_nbytes * num_slots, "rollouts"), layout, num_slots)

    @classmethod
    def attach(cls, name: str, layout: RolloutLayout, num_slots: int) -> RolloutSlots:
        """Attach to the segment by name (worker process)."""
        return cls(Segment.attach(name), layout, num_slots)

    def _slot_views(self, slot: int) -> SlotArrays:
        offset = slot * self.layout.slot_nbytes
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
