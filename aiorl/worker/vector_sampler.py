"""Stepping a worker's vector env (gymnasium ``VectorEnv``, EnvPool) as one batch per step.

When the env factory returns a ``gymnasium.vector.VectorEnv`` (see :mod:`aiorl.envs.vector`)
a worker builds one, of ``envs_per_worker`` sub-envs, and each step of a rollout is one
policy forward pass and one ``step`` call of the whole batch. Sub-env ``i`` fills column
``i`` of the slot. The rules of the single-env sampler (:mod:`aiorl.worker.sampler`) hold
per sub-env, kept here in arrays rather than one object per env (a fast vector env steps
a batch in microseconds):

- **Episodes.** Returns, lengths and discounted returns are kept per sub-env; an episode
  that ends is reported (return, length).
- **Autoreset.** ``NEXT_STEP`` (gymnasium's default, EnvPool's): the step after an episode's
  end is the sub-env's reset step. Its row is inert (no reward, ``truncated`` with no
  bootstrap value) and masked (``valid=False``), and it is not an env step: it is neither
  collected nor trained on nor discarded, and the worker's progress counter skips it.
  ``SAME_STEP``: the next episode starts at once; a truncated episode's final observation
  is read from ``info["final_obs"]``.
- **Bootstrapping.** A truncated (not terminated) episode's row carries V(final observation)
  in ``trunc_values``.
- **Masks.** An env with action masks has ``info["action_mask"]`` (``[num_envs, n]``) read after
  every reset and step; a sub-env's reset step acts with every action allowed (its action is
  ignored, and the mask of a final observation may allow none).
- **Faults.** A ``step`` that raises, returns non-finite rewards or observations, values of
  the wrong shape or a bad action mask breaks the whole vector env: every sub-env's
  unfinished episode is masked out of the rollout and counted as discarded (``env_error``),
  one :class:`~aiorl.protocol.EnvRecovered` (``env_index=None``) reports it, and the vector
  env is closed and re-created. Failures in a row without any sub-env finishing an episode
  are counted once for the vector env: ``env_error_limit`` of them, or a constructor that
  fails at the start, are fatal (:class:`~aiorl.worker.episodes.EnvStepError`).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv

from aiorl.envs.closing import close_env
from aiorl.envs.masks import check_no_action_mask
from aiorl.envs.vector import SEED_VARIABLE, autoreset_mode, is_vector_env, seeds_at_construction
from aiorl.rollout import SlotArrays
from aiorl.shm import ProgressBoard
from aiorl.worker.acting import ActingPolicy, act_into_row, all_finite
from aiorl.worker.episodes import ENV_INDEX_VARIABLE, EnvBookkeeping, EnvStepError, RolloutSummary
from aiorl.worker.sampler import step_rows
from aiorl.worker.spec import WorkerSpec


class VectorEnvSampler:
    """Steps one vector env of ``spec.layout.num_envs`` sub-envs with ``policy`` and fills rollout slots.

    Raises:
        EnvStepError: the vector env could not be built or reset (from the constructor),
            or it failed ``env_error_limit`` times in a row (from :meth:`collect`).
    """

    def __init__(self, spec: WorkerSpec, policy: torch.nn.Module, progress: ProgressBoard | None = None) -> None:
        self.spec = spec
        self.policy = policy
        k = spec.layout.num_envs
        self.acting = ActingPolicy(policy, spec.layout, spec.device)
        self.progress = progress
        self.dist = spec.dist
        self.encoder = spec.obs_encoder
        self.obs = np.zeros((k, *spec.layout.obs_shape), dtype=np.float32)
        self._next = np.zeros_like(self.obs)  # a step's observations, checked before they become self.obs
        self._final = np.zeros_like(self.obs)  # SAME_STEP: final observations of truncated episodes
        self.action_masks = spec.dist.action_masks if spec.layout.mask_width else None
        self.masks = np.ones((k, spec.layout.mask_width), dtype=np.bool_)  # of each sub-env's current observation
        self.resetting = np.zeros(k, dtype=np.bool_)
        """Sub-envs whose next step is a ``NEXT_STEP`` reset step (their episode ended on the last one)."""
        self.any_resetting = False
        """Whether :attr:`resetting` has any (when not, it is stale and not read)."""
        self.everyone = np.ones(k, dtype=np.bool_)
        """Every sub-env: those stepping when none resets."""
        self.returns = np.zeros(k, dtype=np.float64)
        self.steps_done = 0
        """Steps of the vector env taken (one per row, reset steps included)."""
        self.began = np.zeros(k, dtype=np.int64)
        """``steps_done`` when each sub-env's episode began: its length is the difference."""
        self.disc_returns = np.zeros(k, dtype=np.float64)
        self.start = np.zeros(k, dtype=np.int64)
        """Row of the current rollout each sub-env's episode began at (or its reset step's, masked out anyway)."""
        self.fault = EnvBookkeeping(None, None, spec.env_error_limit)
        self.total_steps = 0
        self.policy_version = -1
        self.builds = 0
        self.env: VectorEnv | None = None
        self.env, self.next_step_reset = self._make_env(seed=spec.env_seed(0))

    def _make_env(self, seed: int | None) -> tuple[VectorEnv, bool]:
        """Build and reset a vector env; return it and whether it autoresets on the next step."""
        k = self.spec.layout.num_envs
        self.builds += 1
        os.environ[ENV_INDEX_VARIABLE] = "0"
        os.environ[SEED_VARIABLE] = str(self.spec.env_seed(0, self.builds - 1))  # EnvPool's: it seeds at construction
        try:
            env = self.spec.env_factory()
            if not is_vector_env(env):
                raise TypeError(
                    f"the env factory returned {type(env).__name__}, not a gymnasium.vector.VectorEnv "
                    "(the env the trainer probed was one)"
                )
        except Exception as exc:
            raise EnvStepError(None, 0, exc) from exc
        try:
            if env.num_envs != k:
                raise ValueError(f"the vector env has num_envs={env.num_envs}, but envs_per_worker={k}")
            mode = autoreset_mode(env)
            expected = self.spec.action_space
            if expected is not None and env.single_action_space != expected:
                raise ValueError(
                    f"the vector env's single_action_space is {env.single_action_space}, "
                    f"but the trainer's is {expected}"
                )
            obs, info = env.reset() if seeds_at_construction(env) else env.reset(seed=seed)
            if self.action_masks is None:
                check_no_action_mask(info)
            else:
                self._read_masks(info, np.ones(k, dtype=np.bool_))
            self._encode(obs, self._next)
        except Exception as exc:
            close_env(env, "the vector env")
            raise EnvStepError(None, 0, exc) from exc
        self.obs[...] = self._next
        return env, mode is AutoresetMode.NEXT_STEP

    def _encode(self, obs: object, out: np.ndarray) -> None:
        self.encoder.encode_batch_into(obs, out)
        if not all_finite(out):
            bad = np.flatnonzero(~np.isfinite(out.reshape(len(out), -1)).all(axis=1))
            raise FloatingPointError(f"the vector env returned non-finite observations for envs {bad.tolist()}")

    def _read_masks(self, info: object, rows: np.ndarray) -> None:
        """Read the action masks of sub-envs ``rows`` (bool ``[K]``) from a vector env's info."""
        assert self.action_masks is not None
        self.action_masks.read_batch_info(info, rows, self.masks)

    async def collect(self, arrays: SlotArrays, policy_version: int) -> RolloutSummary:
        """Fill ``arrays`` with one rollout acted by ``policy_version``."""
        summary = RolloutSummary(env_steps=0)
        self.policy_version = policy_version
        self.start[:] = 0
        # Columns most rows leave as they are, written once here rather than every step.
        arrays["valid"][...] = True
        arrays["trunc_values"][...] = 0.0
        arrays["disc_returns"][...] = 0.0
        arrays["versions"][...] = policy_version
        self.acting.record_start(arrays)
        try:
            await step_rows(self.spec.layout.rollout_length, lambda t: self._step(arrays, t, summary))
        except EnvStepError as error:  # failed for good: the rollout's failures go with the error
            error.unreported = summary.env_errors
            raise
        self.acting.record_end(arrays, self.obs)
        summary.env_steps = int(arrays["valid"].sum())  # reset steps are no env steps
        return summary

    def _step(self, arrays: SlotArrays, t: int, summary: RolloutSummary) -> None:
        # The hot loop: a fast vector env steps a batch in microseconds, so each numpy call
        # counts. A step where no sub-env resets (most, once episodes are long) skips the masking.
        resetting = self.resetting if self.any_resetting else None
        masks = None
        if self.action_masks is not None:
            if resetting is not None:
                self.masks[resetting] = True  # a reset step's action is ignored
            masks = self.masks
        actions_np = act_into_row(self.acting, self.dist, arrays, t, self.obs, masks, self.policy_version)
        if resetting is None:
            live, stepped = self.everyone, len(self.obs)
        else:
            live = ~resetting
            arrays["valid"][t] = live
            stepped = int(np.count_nonzero(live))
        self.fault.env_steps += 1
        try:
            try:
                rewards, terminated, truncated, ended = self._step_env(actions_np, live)
            except Exception as exc:
                self._recover(exc, arrays, t, summary)
            else:
                self._record(arrays, t, summary, rewards, terminated, truncated, ended, live)
        except EnvStepError:  # the vector env failed for good: the steps it took still count
            if self.progress is not None:
                self.progress.add(self.spec.worker_id, stepped)
            raise
        self.total_steps += stepped
        if self.progress is not None:  # counted once the step's row is fully written
            self.progress.add(self.spec.worker_id, stepped)

    def _step_env(
        self, actions: np.ndarray, live: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """One ``step`` of the vector env, checked; its next observations are left in ``self._next``.

        Returns rewards, terminated, truncated and the episodes that ended (``None``: none).
        A truncated episode's final observation is in ``self._final`` (``SAME_STEP``) or
        ``self._next`` (``NEXT_STEP``).
        """
        assert self.env is not None
        k = len(live)
        obs, reward, term, trunc, info = self.env.step(self.dist.to_env(actions))
        rewards = np.asarray(reward)
        if rewards.dtype.kind != "f":  # float32 or float64 stay as they are (no copy)
            rewards = rewards.astype(np.float64)
        terminated = np.asarray(term, dtype=np.bool_)
        truncated = np.asarray(trunc, dtype=np.bool_)
        if rewards.shape != (k,) or terminated.shape != (k,) or truncated.shape != (k,):
            raise ValueError(
                f"the vector env returned rewards, terminated, truncated of shapes {rewards.shape}, "
                f"{terminated.shape}, {truncated.shape}; expected ({k},)"
            )
        if not all_finite(rewards):
            bad = np.flatnonzero(~np.isfinite(rewards))
            raise FloatingPointError(f"the vector env returned non-finite rewards for envs {bad.tolist()}")
        self._encode(obs, self._next)
        ended = terminated | truncated
        if live is not self.everyone:
            ended &= live
        if not np.count_nonzero(ended):
            ended = None
        elif not self.next_step_reset:  # SAME_STEP: truncated episodes' final observations are in the info
            for i in np.flatnonzero(ended & truncated & ~terminated):
                self.encoder.encode_into(info["final_obs"][i], self._final[i])
                if not np.isfinite(self._final[i]).all():
                    raise FloatingPointError(f"the vector env returned a non-finite final observation for env {i}")
        if self.action_masks is not None:  # NEXT_STEP: an ended episode's mask (of its final obs) is not needed
            self._read_masks(info, ~ended if self.next_step_reset and ended is not None else self.everyone)
        return rewards, terminated, truncated, ended

    def _record(
        self,
        arrays: SlotArrays,
        t: int,
        summary: RolloutSummary,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        ended: np.ndarray | None,
        live: np.ndarray,
    ) -> None:
        """Write row ``t`` of a step that succeeded (by the sub-envs ``live``) and update the episodes.

        ``valid``, ``trunc_values`` and ``disc_returns`` start the rollout at ``True``, 0 and 0
        (see :meth:`collect`): a row writes them only where they differ. With short episodes
        most steps end one and reset another: the bookkeeping of both is kept to a few calls.
        """
        self.steps_done += 1
        if ended is not None and np.count_nonzero(truncated):
            rows = np.flatnonzero(ended & truncated & ~terminated)
            if rows.size:  # bootstrap truncated episodes from V(final observation)
                final = self._next if self.next_step_reset else self._final
                arrays["trunc_values"][t, rows] = self.acting.values(final[rows], rows)
        resetting = self.resetting if self.any_resetting else None
        if resetting is not None:  # inert rows (new arrays: the env's may be read-only, a JAX env's are)
            rewards = np.where(live, rewards, 0.0)  # a resetting sub-env's running returns stay 0
            terminated = terminated & live
            truncated = truncated | resetting
        self.returns += rewards
        gamma = self.spec.reward_gamma
        if gamma is not None:
            self.disc_returns *= gamma
            self.disc_returns += rewards
            arrays["disc_returns"][t] = self.disc_returns
        arrays["rewards"][t] = rewards
        arrays["terminated"][t] = terminated
        arrays["truncated"][t] = truncated
        if ended is not None:
            summary.episode_returns.extend(self.returns[ended].tolist())
            summary.episode_lengths.extend((self.steps_done - self.began[ended]).tolist())
            self.returns[ended] = 0.0
            if gamma is not None:
                self.disc_returns[ended] = 0.0
            # The next episode's first step (NEXT_STEP: after the reset step, which is none of its steps).
            self.began[ended] = self.steps_done + self.next_step_reset
            self.start[ended] = t + 1  # NEXT_STEP: the reset step's row, which is masked out anyway
            self.fault.failures = 0  # the vector env makes progress
        recurrent = self.acting.recurrent  # only a recurrent policy reads where episodes start
        if self.next_step_reset:
            if resetting is not None and recurrent:
                self.acting.starts[resetting] = True  # the reset step is done: the episode starts next
            self.any_resetting = ended is not None
            if ended is not None:
                self.resetting = ended
        elif ended is not None and recurrent:
            self.acting.starts[ended] = True
        self.obs, self._next = self._next, self.obs  # the step's observations become the current ones

    def _recover(self, exc: Exception, arrays: SlotArrays, t: int, summary: RolloutSummary) -> None:
        """Mask every sub-env's unfinished episode, re-create the vector env, start every sub-env afresh."""
        valid = arrays["valid"]
        discarded = 0
        for i, start in enumerate(self.start.tolist()):
            episode_rows = valid[start : t + 1, i]
            discarded += int(episode_rows.sum())
            episode_rows[:] = False
        arrays["rewards"][t], arrays["terminated"][t], arrays["truncated"][t] = 0.0, False, True
        arrays["trunc_values"][t] = arrays["disc_returns"][t] = 0.0
        summary.discarded_steps += discarded
        summary.env_errors.append(self.fault.failed(exc, self.policy_version, discarded))
        if self.env is not None:
            close_env(self.env, "the vector env")
            self.env = None
        while True:
            self.fault.retry()
            try:
                self.env, self.next_step_reset = self._make_env(seed=self.spec.env_seed(0, self.builds))
                break
            except EnvStepError as error:
                self.fault.rebuild_failed(error)
        self.fault.rebuilt(t + 1)
        self.any_resetting = False
        self.returns[:], self.disc_returns[:] = 0.0, 0.0
        self.began[:] = self.steps_done
        self.start[:] = t + 1
        self.acting.starts[:] = True

    def close(self) -> None:
        """Close the vector env; an error is logged, not raised."""
        if self.env is not None:
            close_env(self.env, "the vector env")
            self.env = None
