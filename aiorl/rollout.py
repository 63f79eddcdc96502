"""The rollout layout: what one rollout holds, shared by workers, backends, shared memory and the learner.

A leaf module (numpy only): everything that fills or reads rollouts agrees on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class RolloutLayout:
    """The shape of one rollout: the arrays a worker fills and the learner reads.

    Fields of a slot (``T`` = rollout_length, ``K`` = envs_per_worker):

    ============ ================= ==================================================
    obs          [T, K, *obs]      observation the action was taken in (``obs_dtype``; with
                                   ``frame_stack``: only its newest frame, see below)
    actions      [T, K, *act]      sampled action (unclipped for Gaussians)
    logprobs     [T, K]            behaviour log-probability of the action
    rewards      [T, K]            reward returned by ``env.step``
    terminated   [T, K]            episode ended in a terminal state (no bootstrap)
    truncated    [T, K]            episode was cut (time limit): bootstrap from trunc_values
    trunc_values [T, K]            V(final observation) where ``truncated``, else 0
    valid        [T, K]            False for steps of an episode broken by an env error
    disc_returns [T, K]            discounted sum of the episode's rewards up to the step
                                   (for reward normalisation; 0 when it is off)
    versions     [T, K]            policy version that acted at each step
    next_obs     [K, *obs]         observation after the last step (for bootstrapping), whole
    action_masks [T, K, mask]      valid actions in the step's observation (bool); only
                                   when ``mask_width > 0`` (the env gives action masks)
    ============ ================= ==================================================

    With a recurrent policy (``state_size > 0``, see :mod:`aiorl.recurrent`) a slot also has:

    ============== ========== ===============================================================
    episode_starts [T, K]     step ``t`` is the first of an episode (the state was reset before it)
    initial_state  [K, S]     each env's recurrent state before the rollout's first step
    next_starts    [K]        ``next_obs`` begins a new episode (for replaying the bootstrap step)
    ============== ========== ===============================================================

    With stacked frames (``frame_stack = S > 0``: each observation is the env's last ``S``
    frames along its first axis, as gymnasium's ``FrameStackObservation`` makes them), a step
    stores only its newest frame, so a slot holds each frame once instead of ``S`` times:

    ============= =================== ===========================================================
    obs           [T, K, *frame]      the newest frame of the step's observation (``obs[t][-1]``)
    frame_history [K, S - 1, *frame]  the older frames of the rollout's first observation
    frame_starts  [T, K]              the step's observation is a fresh stack: ``S`` copies of
                                      its frame (an episode's first, "reset" padding)
    ============= =================== ===========================================================

    Observation ``t`` is then frames ``t - S + 1 .. t`` of the env's sequence (history first),
    each index raised to the last fresh stack at or before ``t``
    (:func:`aiorl.algos.batch.stack_frames`). Workers check every observation against that
    rule as they write it, so the learner sees exactly what the worker's policy saw.

    Fields listed in :data:`PER_ENV_FIELDS` have no time axis.
    """

    rollout_length: int
    num_envs: int
    obs_shape: tuple[int, ...]
    action_shape: tuple[int, ...]
    action_dtype: str
    state_size: int = 0
    """Width of a recurrent policy's state (``S``); 0 for feed-forward policies."""
    mask_width: int = 0
    """Entries of one action mask (the action distribution's logits); 0: the env gives no masks."""
    obs_dtype: str = "float32"
    """How observations are stored: ``"uint8"`` for ``uint8`` images (4x smaller), else ``"float32"``.
    The learner turns them into float32 before the policy sees them."""
    frame_stack: int = 0
    """Frames per observation (``S``) when observations are stacked frames stored once; 0: whole."""

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """The shape of one stored observation row: a frame with ``frame_stack``, else the observation."""
        return self.obs_shape[1:] if self.frame_stack else self.obs_shape

    def fields(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Name -> (shape, dtype) of every array in a slot, in layout order."""
        t, k = self.rollout_length, self.num_envs
        f32 = np.dtype(np.float32)
        obs = np.dtype(self.obs_dtype)
        fields = {
            "obs": ((t, k, *self.frame_shape), obs),
            "actions": ((t, k, *self.action_shape), np.dtype(self.action_dtype)),
            "logprobs": ((t, k), f32),
            "rewards": ((t, k), f32),
            "terminated": ((t, k), np.dtype(np.bool_)),
            "truncated": ((t, k), np.dtype(np.bool_)),
            "trunc_values": ((t, k), f32),
            "valid": ((t, k), np.dtype(np.bool_)),
            "disc_returns": ((t, k), f32),
            "versions": ((t, k), np.dtype(np.int64)),
            "next_obs": ((k, *self.obs_shape), obs),
        }
        if self.frame_stack:
            fields["frame_history"] = ((k, self.frame_stack - 1, *self.frame_shape), obs)
            fields["frame_starts"] = ((t, k), np.dtype(np.bool_))
        if self.state_size:
            fields["episode_starts"] = ((t, k), np.dtype(np.bool_))
            fields["initial_state"] = ((k, self.state_size), f32)
            fields["next_starts"] = ((k,), np.dtype(np.bool_))
        if self.mask_width:
            fields["action_masks"] = ((t, k, self.mask_width), np.dtype(np.bool_))
        return fields

    @property
    def steps(self) -> int:
        """Env steps in one rollout."""
        return self.rollout_length * self.num_envs


PER_ENV_FIELDS = frozenset({"next_obs", "initial_state", "next_starts", "frame_history"})
"""Fields of a rollout shaped ``[K, ...]`` (one row per env, no time axis)."""

SlotArrays = dict[str, np.ndarray]
"""One rollout's arrays by field name (views of a shared-memory slot, or a Ray actor's own arrays)."""
