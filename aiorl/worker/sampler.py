"""Stepping a worker's envs with its local policy copy and writing rollouts.

The sampler is synchronous per step (one batched policy forward pass, then one
``env.step`` per env) and yields to the worker's event loop between steps so
heartbeats and control frames keep flowing.

An env that raises is closed and re-created; the steps of its broken episode
that are still in the current rollout are masked out (``valid=False``) and
reported as discarded. An env that fails ``env_error_limit`` times in a row
without finishing an episode, or whose constructor raises, is fatal.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import traceback
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from aiorl import protocol
from aiorl.envs.closing import close_env
from aiorl.models import evaluate
from aiorl.rollout import SlotArrays
from aiorl.shm import ProgressBoard
from aiorl.worker.spec import WorkerSpec

ENV_INDEX_VARIABLE = "AIORL_ENV_INDEX"
YIELD_INTERVAL_S = 0.005
"""The sampler yields to the worker's event loop at least this often (and after each rollout)."""


class EnvStepError(Exception):
    """An env failed for good; carries where it happened.

    ``step`` is the failing env's own step count (1 for its first ``step`` call; 0 for
    its constructor or first ``reset``).
    """

    def __init__(self, env_index: int | None, step: int, original: BaseException, reason: str = "") -> None:
        super().__init__(f"{type(original).__name__}: {original}")
        self.env_index = env_index
        self.step = step
        self.original = original
        self.reason = reason

    def to_message(self, policy_version: int | None) -> protocol.EnvFailed:
        """The :class:`~aiorl.protocol.EnvFailed` report of this failure, with its traceback."""
        original = self.original
        return protocol.EnvFailed(
            env_index=self.env_index,
            step=self.step,
            policy_version=policy_version,
            error_type=type(original).__name__,
            message=f"{original} ({self.reason})" if self.reason else str(original),
            traceback="".join(traceback.format_exception(original)),
        )


def env_recovered(i: int, exc: Exception, policy_version: int, step: int, discarded: int) -> protocol.EnvRecovered:
    """The report of env ``i``'s failure, after which it is re-created."""
    return protocol.EnvRecovered(
        env_index=i,
        policy_version=policy_version,
        step=step,
        error_type=type(exc).__name__,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
        discarded_steps=discarded,
    )


def check_failure_limit(i: int, failures: int, limit: int, step: int, exc: Exception) -> None:
    """Raise :class:`EnvStepError` once env ``i`` has failed ``limit`` times in a row."""
    if failures >= limit:
        reason = f"failed {failures} times in a row without finishing an episode (env_error_limit={limit})"
        raise EnvStepError(i, step, exc, reason) from exc


@dataclass(slots=True)
class RolloutSummary:
    """What the trainer needs to know about a rollout besides its arrays."""

    env_steps: int
    discarded_steps: int = 0
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    env_errors: list[protocol.EnvRecovered] = field(default_factory=list)


class EnvSampler:
    """Steps ``spec.layout.num_envs`` envs with ``policy`` and fills rollout slots."""

    def __init__(self, spec: WorkerSpec, policy: torch.nn.Module, progress: ProgressBoard | None = None) -> None:
        self.spec = spec
        self.policy = policy
        self.progress = progress
        self.dist = spec.dist
        self.encoder = spec.obs_encoder
        k = spec.layout.num_envs
        self.envs: list[gym.Env] = []
        self.obs = np.zeros((k, *spec.layout.obs_shape), dtype=np.float32)
        self.final_obs = np.zeros_like(self.obs)  # encoded final observations of truncated episodes
        self.probe = np.zeros(spec.layout.obs_shape, dtype=np.float32)  # checks a fresh env's first obs
        # Per-env state as plain lists: the hot loop touches them once per env and step.
        self.episode_return = [0.0] * k
        self.episode_length = [0] * k
        self.episode_start = [0] * k  # row of the current rollout the episode began at
        self.env_steps = [0] * k  # steps per env since it was built
        self.failures = [0] * k  # consecutive failures without an episode end
        self.gamma = spec.reward_gamma
        self.disc_return = [0.0] * k  # running discounted return of each env's episode
        self.total_steps = 0
        self.policy_version = -1  # the version acting in the rollout being collected
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
            obs, _ = env.reset(seed=seed)
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
        self.episode_start = [0] * len(self.envs)
        yielded = time.monotonic()
        for t in range(self.spec.layout.rollout_length):
            self._step(arrays, t, policy_version, summary)
            if time.monotonic() - yielded > YIELD_INTERVAL_S:
                await asyncio.sleep(0)  # let heartbeats and control frames through
                yielded = time.monotonic()
        arrays["next_obs"][:] = self.obs
        summary.env_steps = self.spec.layout.steps - summary.discarded_steps
        return summary

    def _step(self, arrays: SlotArrays, t: int, policy_version: int, summary: RolloutSummary) -> None:
        # This is the hot loop: per env only the env call and list updates; arrays are
        # written once per step.
        arrays["obs"][t] = self.obs
        with torch.no_grad():
            dist_inputs, values = evaluate(self.policy, torch.from_numpy(self.obs))
            actions, logprobs = self.dist.sample(dist_inputs)
        actions_np = actions.numpy()
        arrays["actions"][t] = actions_np
        arrays["logprobs"][t] = logprobs.numpy()
        arrays["values"][t] = values.numpy()
        arrays["versions"][t] = policy_version
        arrays["valid"][t] = True
        arrays["trunc_values"][t] = 0.0
        k = len(self.envs)
        rewards, terminated, truncated = [0.0] * k, [False] * k, [False] * k
        gamma = self.gamma
        disc_returns = [0.0] * k  # stay 0 without reward normalisation (gamma None)
        final_rows: list[int] = []  # envs truncated this step; their final obs are in self.final_obs
        to_env, encode = self.dist.to_env, self.encoder.encode_into
        for i, env in enumerate(self.envs):
            self.env_steps[i] += 1
            try:
                obs, reward, term, trunc, _ = env.step(to_env(actions_np[i]))
                reward = float(reward)
                if not math.isfinite(reward):
                    raise FloatingPointError(f"env {i} returned a non-finite reward ({reward})")
                if trunc and not term:  # bootstrap from V(final observation), checked here
                    final = self.final_obs[len(final_rows)]
                    encode(obs, final)
                    if not np.isfinite(final).all():
                        raise FloatingPointError(f"env {i} returned a non-finite observation")
            except Exception as exc:
                obs = self._recover(i, exc, arrays, t, summary)
                truncated[i] = True  # an inert, masked row: no reward, no bootstrap
                encode(obs, self.obs[i])
                continue
            self.episode_return[i] += reward
            self.episode_length[i] += 1
            rewards[i], terminated[i], truncated[i] = reward, term, trunc
            if gamma is not None:
                disc_returns[i] = self.disc_return[i] = self.disc_return[i] * gamma + reward
            if term or trunc:
                self.disc_return[i] = 0.0
                summary.episode_returns.append(float(self.episode_return[i]))
                summary.episode_lengths.append(self.episode_length[i])
                self.episode_return[i], self.episode_length[i] = 0.0, 0
                self.episode_start[i] = t + 1
                self.failures[i] = 0
                if trunc and not term:
                    final_rows.append(i)
                try:
                    obs, _ = env.reset()
                except Exception as exc:
                    obs = self._recover(i, exc, arrays, t, summary, mask_from=t + 1)
            encode(obs, self.obs[i])
        arrays["rewards"][t] = rewards
        arrays["terminated"][t] = terminated
        arrays["truncated"][t] = truncated
        arrays["disc_returns"][t] = disc_returns  # written either way: a Ray actor's arrays start uninitialised
        if not np.isfinite(self.obs).all():  # e.g. a reset that returned NaN
            self._recover_non_finite(arrays, t, summary)
        self.total_steps += k
        if self.progress is not None:  # counted once the step's row is fully written
            self.progress.add(self.spec.worker_id, k)
        if final_rows:
            with torch.no_grad():
                final_values = evaluate(self.policy, torch.from_numpy(self.final_obs[: len(final_rows)]))[1]
            arrays["trunc_values"][t, final_rows] = final_values.numpy()

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
        start = self.episode_start[i] if mask_from is None else mask_from
        discarded = max(t + 1 - start, 0)
        arrays["valid"][start : t + 1, i] = False
        summary.discarded_steps += discarded
        summary.env_errors.append(env_recovered(i, exc, self.policy_version, self.env_steps[i], discarded))
        close_env(self.envs[i], f"env {i}")
        while True:
            self.failures[i] += 1
            check_failure_limit(i, self.failures[i], self.spec.env_error_limit, self.env_steps[i], exc)
            try:
                env, obs = self._make_env(i, seed=None)
                break
            except EnvStepError as error:
                if isinstance(error.original, Exception):
                    exc = error.original
        self.envs[i] = env
        self.env_steps[i] = 0
        self.episode_return[i], self.episode_length[i], self.disc_return[i] = 0.0, 0, 0.0
        self.episode_start[i] = t + 1
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
