"""Writing the observations envs acted on into rollouts: whole, or stacked frames stored once.

With ``layout.frame_stack = S`` (the env's observations are its last ``S`` frames, see
:class:`aiorl.rollout.RolloutLayout`), a row stores only the observation's newest frame. The
older frames of a rollout's first observation go into ``frame_history``, and a row whose
observation is a fresh stack (``S`` copies of one frame: an episode's first with gymnasium's
"reset" padding) is flagged in ``frame_starts``. Every other observation must be the previous
one shifted by one frame; :class:`ObservationWriter` checks that as it writes, so the learner's
reconstruction (:func:`aiorl.algos.batch.stack_frames`) is exactly what the policy saw.
"""

from __future__ import annotations

import numpy as np

from aiorl.rollout import RolloutLayout, SlotArrays
from aiorl.worker.episodes import EnvStepError


class FrameStackMismatch(ValueError):
    """An observation is neither the env's previous one shifted by one frame nor a fresh stack."""


class ObservationWriter:
    """Writes each step's observations into a rollout, as :class:`~aiorl.rollout.RolloutLayout` stores them.

    Keeps each env's previous observation (with stacked frames) to check the next one against.
    """

    def __init__(self, layout: RolloutLayout) -> None:
        self.stack = layout.frame_stack
        self.obs_ndim = len(layout.obs_shape)
        frame_size = int(np.prod(layout.frame_shape))
        self._last = np.zeros((layout.num_envs, self.stack, frame_size), dtype=np.float32) if self.stack else None

    def write(
        self, rows: SlotArrays, t: int, obs: np.ndarray, env: int | None = None, history: np.ndarray | None = None
    ) -> None:
        """Write ``obs`` as row ``t`` of ``rows``.

        ``rows`` are a slot's arrays (``[T, K, ...]``) and ``obs`` every env's observation
        (``[K, *obs]``); or, with ``env``, one env's trajectory (``[T, ...]``), that env's
        observation (``[*obs]``) and ``history``, the trajectory's ``frame_history`` (a slot's
        own is used otherwise).

        Raises:
            EnvStepError: with stacked frames, an observation broke the rule above (a
                :class:`FrameStackMismatch` naming the env and the row): the env's observations
                cannot be stored once per frame, which ends the run.
        """
        if self._last is None:
            rows["obs"][t] = obs
            return
        lead = obs.ndim - self.obs_ndim  # 1: a row of envs, 0: one env
        stacks = obs.reshape(*obs.shape[:lead], self.stack, -1)
        last = self._last if env is None else self._last[env]
        if t == 0:  # the rollout's first observation: its older frames are the history
            target = rows["frame_history"] if history is None else history
            target[...] = stacks[..., :-1, :].reshape(target.shape)
            starts: np.ndarray | bool = False
        else:
            continues = (stacks[..., :-1, :] == last[..., 1:, :]).all(axis=(-2, -1))
            if not np.all(continues):
                fresh = (stacks[..., :-1, :] == stacks[..., -1:, :]).all(axis=(-2, -1))
                broken = ~(continues | fresh)
                if np.any(broken):
                    self._mismatch(env if env is not None else int(np.flatnonzero(broken)[0]), t)
            starts = ~continues
        rows["frame_starts"][t] = starts
        rows["obs"][t] = stacks[..., -1, :].reshape(rows["obs"][t].shape)
        last[...] = stacks

    def _mismatch(self, env: int, t: int) -> None:
        mismatch = FrameStackMismatch(
            f"env {env}'s observation at row {t} of a rollout is neither its previous observation shifted "
            f"by one frame nor a fresh stack of one frame, but its env was probed as stacking {self.stack} "
            "frames with gymnasium's FrameStackObservation (padding 'reset'), so aiorl stores each frame "
            "once; make FrameStackObservation the outermost wrapper that changes observations"
        )
        raise EnvStepError(env, t, mismatch)
