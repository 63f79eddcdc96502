"""The training batch: rollouts from several slots side by side, time first."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from aiorl.rollout import PER_ENV_FIELDS, RolloutLayout, SlotArrays


@dataclass(slots=True)
class RolloutBatch:
    """Arrays shaped ``[T, N, ...]`` (``T`` steps, ``N`` env trajectories).

    Field meanings are those of :class:`aiorl.rollout.RolloutLayout`; ``next_obs`` is
    ``[N, *obs]``. The recurrent fields are ``None`` for a feed-forward policy; ``action_masks``
    is ``None`` when the env gives no action masks. With stacked frames stored once ``obs`` is
    ``[T, N, *frame]`` and ``frame_history``/``frame_starts`` rebuild the observations
    (:func:`stack_frames`); otherwise they are ``None``.
    """

    obs: np.ndarray
    actions: np.ndarray
    logprobs: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    trunc_values: np.ndarray
    valid: np.ndarray
    disc_returns: np.ndarray
    versions: np.ndarray
    next_obs: np.ndarray
    episode_starts: np.ndarray | None = None
    """``[T, N]`` bool: an episode starts at the step (recurrent policies)."""
    initial_state: np.ndarray | None = None
    """``[N, S]``: each trajectory's recurrent state before its first step."""
    next_starts: np.ndarray | None = None
    """``[N]`` bool: ``next_obs`` starts a new episode."""
    action_masks: np.ndarray | None = None
    """``[T, N, mask]`` bool: the valid actions at each step."""
    frame_history: np.ndarray | None = None
    """``[N, S - 1, *frame]``: the older frames of each trajectory's first observation."""
    frame_starts: np.ndarray | None = None
    """``[T, N]`` bool: the step's observation is a fresh stack of its frame."""

    @property
    def env_steps(self) -> int:
        """Env steps to train on: those not broken by an env error."""
        return int(self.valid.sum())


class BatchBuilder:
    """Copies slots into preallocated batch arrays, ``rollouts`` slots per batch.

    The copy is the only time the consumer touches a slot, so the slot can be
    freed as soon as :meth:`add` returns. With ``pin_memory`` (a CUDA learner) the
    arrays live in page-locked memory, so the learner copies them to the GPU
    without waiting.
    """

    def __init__(self, layout: RolloutLayout, rollouts: int, *, pin_memory: bool = False) -> None:
        self.layout = layout
        self.rollouts = rollouts
        self.pin_memory = pin_memory
        self.count = 0
        self.slot_bytes = sum(
            int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in layout.fields().values()
        )
        """The bytes :meth:`add` copies per slot."""
        self._arrays = self._allocate()
        self._spare: dict[str, np.ndarray] | None = None  # the arrays of the batch handed out before

    def _allocate(self) -> dict[str, np.ndarray]:
        t, n = self.layout.rollout_length, self.layout.num_envs * self.rollouts
        arrays = {}
        for name, (shape, dtype) in self.layout.fields().items():
            full_shape = (n, *shape[1:]) if name in PER_ENV_FIELDS else (t, n, *shape[2:])
            arrays[name] = self._zeros(full_shape, dtype)
        return arrays

    def _zeros(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        if not self.pin_memory:
            return np.zeros(shape, dtype=dtype)
        torch_dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
        return torch.zeros(shape, dtype=torch_dtype, pin_memory=True).numpy()

    @property
    def full(self) -> bool:
        """Whether the batch holds ``rollouts`` rollouts."""
        return self.count == self.rollouts

    def add(self, slot: SlotArrays) -> slice:
        """Copy one slot into the next free columns of the batch; return those columns."""
        k = self.layout.num_envs
        cols = slice(self.count * k, (self.count + 1) * k)
        for name, array in self._arrays.items():
            if name in PER_ENV_FIELDS:
                array[cols] = slot[name]
            else:
                array[:, cols] = slot[name]
        self.count += 1
        return cols

    def mask_older_than(self, cols: slice, oldest_version: int) -> int:
        """Mask the steps in ``cols`` acted by a version before ``oldest_version``; return how many were valid."""
        stale = self._arrays["versions"][:, cols] < oldest_version
        valid = self._arrays["valid"][:, cols]
        dropped = int((stale & valid).sum())
        valid[stale] = False
        return dropped

    def take(self) -> RolloutBatch:
        """Hand out the full batch and start the next one.

        Arrays are recycled: a batch stays intact until the second ``take()`` after the
        one that returned it (the consumer trains on one batch at a time), unless
        :meth:`forget_spare` says it is still in use.
        """
        batch = RolloutBatch(**self._arrays)
        self._arrays, self._spare = (self._spare or self._allocate()), self._arrays
        self.count = 0
        return batch

    def forget_spare(self) -> None:
        """The last batch handed out may still be read (an abandoned update): never refill its arrays."""
        self._spare = None


def stack_frames(frames: torch.Tensor, history: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """Rebuild stacked observations ``[T, N, S, *frame]`` from frames stored once.

    ``frames`` ``[T, N, *frame]`` are the observations' newest frames, ``history``
    ``[N, S - 1, *frame]`` the older frames of each trajectory's first observation and
    ``starts`` ``[T, N]`` (bool) flag fresh stacks. Observation ``t`` is frames
    ``t - S + 1 .. t`` of the sequence ``history, frames``, each index raised to the last fresh
    stack at or before ``t`` (so an episode's first observation is ``S`` copies of its frame,
    as gymnasium's ``FrameStackObservation`` pads). See :class:`aiorl.rollout.RolloutLayout`.
    """
    steps, envs = starts.shape
    older = history.shape[1]  # S - 1
    sequence = torch.cat([history.transpose(0, 1), frames])  # [S - 1 + T, N, *frame]; row t + S - 1 is step t
    t = torch.arange(steps, device=frames.device)
    fresh_at = torch.where(starts, t.unsqueeze(1), -older)  # -older: the history, before the first step
    last_fresh = torch.cummax(fresh_at, dim=0).values  # [T, N]
    offsets = torch.arange(-older, 1, device=frames.device)  # [S]: -(S - 1) .. 0
    index = torch.maximum(t.view(steps, 1, 1) + offsets, last_fresh.unsqueeze(-1)) + older  # [T, N, S]
    return sequence[index, torch.arange(envs, device=frames.device).view(1, envs, 1)]
