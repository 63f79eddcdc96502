"""Stepping a worker's envs with its local policy copy and writing rollouts.

The sampler is synchronous per step (one batched policy forward pass, then one
``env.step`` per env) and yields to the worker's event loop between steps so
heartbeats and control frames keep flowing.

An env with action masks (``spec.layout.mask_width > 0``) has its ``info["action_mask"]``
read after every reset and step: the mask is stored in the row of the step it applies to
and only valid actions are sampled. A mask that is missing, malformed or leaves no valid
action is an env error (:mod:`aiorl.envs.masks`).

An env that raises is closed and re-created; the steps of its broken episode
that are still in the current rollout are masked out (``valid=False``) and
reported as discarded. An env that fails ``env_error_limit`` times in a row
without finishing an episode, or whose constructor raises, is fatal. These episode and
fault rules are shared with the async sampler (:mod:`aiorl.worker.episodes`).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from aiorl.envs.closing import close_env
from aiorl.envs.masks import check_no_action_mask
from aiorl.envs.spaces import check_same_action_space
from aiorl.rollout import SlotArrays
from aiorl.shm import ProgressBoard
from aiorl.worker.acting import ActingPolicy, act_into_row, all_finite
from aiorl.worker.episodes import (
    ENV_INDEX_VARIABLE,
    EnvBookkeeping,
    EnvStepError,
    RolloutSummary,
    bad_step_result,
)
from aiorl.worker.spec import WorkerSpec

YIELD_INTERVAL_S = 0.005
"""The sampler yields to the worker's event loop at least this often (and after each rollout)."""


async def step_rows(rows: int, step: Callable[[int], None]) -> None:
    """Call ``step(t)`` for each of a rollout's ``rows``, yielding to the worker's loop in between.

    It yields at least every :data:`YIELD_INTERVAL_S`, so heartbeats and control frames keep flowing.
    """
    yielded = time.monotonic()
    for t in range(rows):
        step(t)
        if time.monotonic() - yielded > YIELD_INTERVAL_S:
            await asyncio.sleep(0)
            yielded = time.monotonic()


class EnvSampler:
    """Steps ``spec.layout.num_envs`` envs with ``policy`` and fills rollout slots."""

    def __init__(self, spec: WorkerSpec, policy: torch.nn.Module, progress: ProgressBoard | None = None) -> None:
        self.spec = spec
        self.policy = policy
        self.acting = ActingPolicy(policy, spec.layout, spec.device)
        self.progress = progress
        self.dist = spec.dist
        self.encoder = spec.obs_encoder
        k = spec.layout.num_envs
        self.envs: list[gym.Env] = []
        self.obs = np.zeros((k, *spec.layout.obs_shape), dtype=np.float32)
        self.final_obs = np.zeros_like(self.obs)  # encoded final observations of truncated episodes
        self.probe = np.zeros(spec.layout.obs_shape, dtype=np.float32)  # checks a fresh env's first obs
        self.stack_observations = (  # a scalar Box's (1,) rows would let (1,)-shaped observations pass unchecked
            self.encoder.kind == "box" and not self.encoder.bytes and self.encoder.space.shape == spec.layout.obs_shape
        )
        """Whether a step's observations may be written as one array (see :meth:`_encode_observations`)."""
        self.episodes = [EnvBookkeeping(i, spec.reward_gamma, spec.env_error_limit) for i in range(k)]
        self.total_steps = 0
        self.policy_version = -1  # the version acting in the rollout being collected
        self.action_masks = spec.dist.action_masks if spec.layout.mask_width else None
        self.masks = np.ones((k, spec.layout.mask_width), dtype=np.bool_)  # of each env's current observation
        for i in range(k):
            env, obs = self._make_env(i, seed=spec.env_seed(i))
            self.envs.append(env)
            self.encoder.encode_into(obs, self.obs[i])

    def _make_env(self, index: int, seed: int | None) -> tuple[gym.Env, object]:
        os.environ[ENV_INDEX_VARIABLE] = str(index)
        try:
            env = self.spec.env_factory()
            if not isinstance(env, gym.Env):  # the trainer sends AsyncEnv factories to the async sampler
                raise TypeError(f"the env factory returned {type(env).__name__}, not a gymnasium.Env")
        except Exception as exc:
            raise EnvStepError(index, 0, exc) from exc
        try:
            check_same_action_space(env, self.spec.action_space)
            obs, info = env.reset(seed=seed)
            if self.action_masks is None:
                check_no_action_mask(info)
            else:
                self.action_masks.read_info(info, self.masks[index])
            self.encoder.encode_into(obs, self.probe)
            if not np.isfinite(self.probe).all():
                raise FloatingPointError(f"env {index} returned a non-finite observation from reset")
        except Exception as exc:
            close_env(env, f"env {index}")
            raise EnvStepError(index, 0, exc) from exc
        return env, obs

    async def collect(self, arrays: SlotArrays, policy_version: int) -> RolloutSummary:
        """Fill ``arrays`` with one rollout acted by ``policy_version``."""
        summary = RolloutSummary(env_steps=0)
        self.policy_version = policy_version
        for episode in self.episodes:
            episode.start = 0
        # Columns a row changes only where an env breaks or is truncated: set once here.
        arrays["versions"][...] = policy_version
        arrays["valid"][...] = True
        arrays["trunc_values"][...] = 0.0
        self.acting.record_start(arrays)
        try:
            await step_rows(self.spec.layout.rollout_length, lambda t: self._step(arrays, t, policy_version, summary))
        except EnvStepError as error:  # failed for good: the rollout's failures go with the error
            error.unreported = summary.env_errors
            raise
        self.acting.record_end(arrays, self.obs)
        summary.env_steps = self.spec.layout.steps - summary.discarded_steps
        return summary

    def _step(self, arrays: SlotArrays, t: int, policy_version: int, summary: RolloutSummary) -> None:
        # This is the hot loop: per env only the env call and list updates; arrays are
        # written once per step.
        acting = self.acting
        masks = self.action_masks
        actions_np = act_into_row(
            acting, self.dist, arrays, t, self.obs, None if masks is None else self.masks, policy_version
        )
        k = len(self.envs)
        rewards, terminated, truncated = [0.0] * k, [False] * k, [False] * k
        disc_returns = [0.0] * k  # stay 0 without reward normalisation (gamma None)
        final_rows: list[int] = []  # envs truncated this step; their final obs are in self.final_obs
        next_obs: list[object] = [None] * k  # each env's next observation, encoded after the loop
        to_env, encode = self.dist.to_env, self.encoder.encode_into
        episodes = self.episodes
        i, looped = -1, False
        try:
            for i, env in enumerate(self.envs):
                episode = episodes[i]
                episode.env_steps += 1
                try:
                    result = env.step(to_env(actions_np[i]))
                    try:
                        obs, reward, term, trunc, info = result
                        reward, term, trunc = float(reward), bool(term), bool(trunc)
                    except (TypeError, ValueError) as exc:
                        raise bad_step_result(result, i) from exc
                    if not math.isfinite(reward):
                        raise FloatingPointError(f"env {i} returned a non-finite reward ({reward})")
                    if masks is not None and not (term or trunc):  # the mask of the next observation
                        masks.read_info(info, self.masks[i])
                    if trunc and not term:  # bootstrap from V(final observation), checked here
                        final = self.final_obs[len(final_rows)]
                        encode(obs, final)
                        if not np.isfinite(final).all():
                            raise FloatingPointError(f"env {i} returned a non-finite observation")
                except Exception as exc:
                    next_obs[i] = self._recover(i, exc, arrays, t, summary)
                    truncated[i] = True  # an inert, masked row: no reward, no bootstrap
                    continue
                rewards[i], terminated[i], truncated[i] = reward, term, trunc
                disc_returns[i] = episode.rewarded(reward)
                if term or trunc:
                    acting.episode_started(i)
                    episode_return, episode_length = episode.finished(t + 1)
                    summary.episode_returns.append(episode_return)
                    summary.episode_lengths.append(episode_length)
                    if trunc and not term:
                        final_rows.append(i)
                    try:
                        obs, info = env.reset()
                        if masks is not None:
                            masks.read_info(info, self.masks[i])
                    except Exception as exc:
                        obs = self._recover(i, exc, arrays, t, summary, mask_from=t + 1)
                next_obs[i] = obs
            looped = True
            not_encodable = self._encode_observations(next_obs)
            arrays["rewards"][t] = rewards
            arrays["terminated"][t] = terminated
            arrays["truncated"][t] = truncated
            arrays["disc_returns"][t] = disc_returns  # written either way: a Ray actor's arrays start uninitialised
            for j, exc in not_encodable:  # e.g. an observation of the wrong shape: the env is broken
                self._fail_step(j, exc, arrays, t, summary)
            if not all_finite(self.obs):  # e.g. a reset that returned NaN
                self._recover_non_finite(arrays, t, summary)
        except EnvStepError:  # an env failed for good mid-row: the steps its envs took still count
            if self.progress is not None:
                self.progress.add(self.spec.worker_id, k if looped else i + 1)
            raise
        self.total_steps += k
        if self.progress is not None:  # counted once the step's row is fully written
            self.progress.add(self.spec.worker_id, k)
        if final_rows:
            arrays["trunc_values"][t, final_rows] = acting.values(self.final_obs[: len(final_rows)], final_rows)

    def _encode_observations(self, observations: list[object]) -> list[tuple[int, Exception]]:
        """Write each env's next observation into ``self.obs``; return the envs whose observation is not of their space.

        A float Box's observations go in as one array when they stack to exactly the
        expected shape (one numpy call instead of one per env); anything else, or a batch
        that does not stack, is encoded env by env, which names the env at fault.
        """
        if self.stack_observations:
            try:
                stacked = np.asarray(observations, dtype=np.float32)
            except Exception:  # ragged, or some env's observation does not convert: find which, below
                stacked = None
            if stacked is not None and stacked.shape == self.obs.shape:
                self.obs[...] = stacked
                return []
        not_encodable = []
        for i, obs in enumerate(observations):
            try:
                self.encoder.encode_into(obs, self.obs[i])
            except Exception as exc:  # handled once the row is written, as a non-finite one is
                not_encodable.append((i, exc))
        return not_encodable

    def _recover(
        self,
        i: int,
        exc: Exception,
        arrays: SlotArrays,
        t: int,
        summary: RolloutSummary,
        mask_from: int | None = None,
    ) -> object:
        """Mask env ``i``'s broken episode, re-create the env, and return its first observation."""
        episode = self.episodes[i]
        broken = episode.broke(exc, t, self.policy_version, mask_from)
        arrays["valid"][broken.start : broken.end, i] = False
        summary.discarded_steps += broken.discarded
        summary.env_errors.append(broken.report)
        close_env(self.envs[i], f"env {i}")
        while True:
            episode.retry()
            try:
                env, obs = self._make_env(i, seed=self.spec.env_seed(i, episode.rebuilds))
                break
            except EnvStepError as error:
                episode.rebuild_failed(error)
        self.envs[i] = env
        episode.rebuilt(t + 1)
        self.acting.episode_started(i)
        return obs

    def _recover_non_finite(self, arrays: SlotArrays, t: int, summary: RolloutSummary) -> None:
        """Treat an env whose next observation is NaN/inf like one that raised."""
        bad = ~np.isfinite(self.obs.reshape(len(self.envs), -1)).all(axis=1)
        for i in np.flatnonzero(bad):
            error = FloatingPointError(f"env {i} returned a non-finite observation")
            self._fail_step(int(i), error, arrays, t, summary)

    def _fail_step(self, i: int, exc: Exception, arrays: SlotArrays, t: int, summary: RolloutSummary) -> None:
        """Env ``i`` broke during step ``t`` (seen after the row was written): start it afresh."""
        obs = self._recover(i, exc, arrays, t, summary)
        if not arrays["valid"][t, i]:  # the row is part of the broken episode: make it inert
            arrays["rewards"][t, i], arrays["terminated"][t, i], arrays["truncated"][t, i] = 0.0, False, True
        self.encoder.encode_into(obs, self.obs[i])

    def close(self) -> None:
        """Close every env; errors (from envs that are already broken, say) are logged, not raised."""
        for i, env in enumerate(self.envs):
            close_env(env, f"env {i}")
        self.envs = []
