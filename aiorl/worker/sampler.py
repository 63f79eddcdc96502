"""Stepping a worker's envs with its local policy copy and writing rollouts.

The sampler is synchronous per step (one batched policy forward pass, then one
``env.step`` per env) and yields to the worker's event loop between steps so
heartbeats and control frames keep flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from aiorl.models import evaluate
from aiorl.shm import SlotArrays
from aiorl.worker.spec import WorkerSpec


class EnvStepError(Exception):
    """An env raised in ``reset`` or ``step``; carries where it happened.

    ``step`` is the failing env's own step count (1 for its first ``step`` call; 0 for
    its constructor or first ``reset``).
    """

    def __init__(self, env_index: int | None, step: int, original: BaseException) -> None:
        super().__init__(f"{type(original).__name__}: {original}")
        self.env_index = env_index
        self.step = step
        self.original = original


@dataclass(slots=True)
class RolloutSummary:
    """What the trainer needs to know about a rollout besides its arrays."""

    env_steps: int
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)


class EnvSampler:
    """Steps ``spec.layout.num_envs`` envs with ``policy`` and fills rollout slots."""

    def __init__(self, spec: WorkerSpec, policy: torch.nn.Module) -> None:
        self.spec = spec
        self.policy = policy
        self.dist = spec.dist
        self.encoder = spec.obs_encoder
        k = spec.layout.num_envs
        self.envs: list[gym.Env] = []
        self.obs = np.zeros((k, *spec.layout.obs_shape), dtype=np.float32)
        self.episode_return = np.zeros(k, dtype=np.float64)
        self.episode_length = np.zeros(k, dtype=np.int64)
        self.env_steps = np.zeros(k, dtype=np.int64)  # steps per env since it was built
        self.total_steps = 0
        self.unfinished_steps = 0
        for i in range(k):
            try:
                env = spec.env_factory()
                self.envs.append(env)
                obs, _ = env.reset(seed=spec.seed + spec.worker_id * k + i)
            except Exception as exc:
                raise EnvStepError(i, 0, exc) from exc
            self.encoder.encode_into(obs, self.obs[i])

    async def collect(self, arrays: SlotArrays, policy_version: int) -> RolloutSummary:
        """Fill ``arrays`` with one rollout acted by ``policy_version``."""
        summary = RolloutSummary(env_steps=self.spec.layout.steps)
        for t in range(self.spec.layout.rollout_length):
            self._step(arrays, t, policy_version, summary)
            self.unfinished_steps += len(self.envs)
            await asyncio.sleep(0)
        arrays["next_obs"][:] = self.obs
        self.unfinished_steps = 0
        return summary

    def _step(self, arrays: SlotArrays, t: int, policy_version: int, summary: RolloutSummary) -> None:
        arrays["obs"][t] = self.obs
        with torch.no_grad():
            dist_inputs, values = evaluate(self.policy, torch.from_numpy(self.obs))
            actions, logprobs = self.dist.sample(dist_inputs)
        actions_np = actions.numpy()
        arrays["actions"][t] = actions_np
        arrays["logprobs"][t] = logprobs.numpy()
        arrays["values"][t] = values.numpy()
        arrays["versions"][t] = policy_version
        rewards, terminated, truncated = arrays["rewards"][t], arrays["terminated"][t], arrays["truncated"][t]
        final_obs: list[tuple[int, object]] = []
        for i, env in enumerate(self.envs):
            self.env_steps[i] += 1
            try:
                obs, reward, term, trunc, _ = env.step(self.dist.to_env(actions_np[i]))
            except Exception as exc:
                raise EnvStepError(i, int(self.env_steps[i]), exc) from exc
            self.episode_return[i] += float(reward)
            self.episode_length[i] += 1
            rewards[i], terminated[i], truncated[i] = reward, term, trunc
            if term or trunc:
                summary.episode_returns.append(float(self.episode_return[i]))
                summary.episode_lengths.append(int(self.episode_length[i]))
                self.episode_return[i], self.episode_length[i] = 0.0, 0
                if trunc and not term:
                    final_obs.append((i, obs))
                try:
                    obs, _ = env.reset()
                except Exception as exc:
                    raise EnvStepError(i, int(self.env_steps[i]), exc) from exc
            self.encoder.encode_into(obs, self.obs[i])
        self.total_steps += len(self.envs)
        arrays["trunc_values"][t] = 0.0
        if final_obs:
            arrays["trunc_values"][t, [i for i, _ in final_obs]] = self._values_of([o for _, o in final_obs])

    def _values_of(self, raw_obs: list[object]) -> np.ndarray:
        batch = np.zeros((len(raw_obs), *self.spec.layout.obs_shape), dtype=np.float32)
        for row, obs in enumerate(raw_obs):
            self.encoder.encode_into(obs, batch[row])
        with torch.no_grad():
            return evaluate(self.policy, torch.from_numpy(batch))[1].numpy()

    def close(self) -> None:
        """Close every env, ignoring errors from envs that are already broken."""
        for env in self.envs:
            with contextlib.suppress(Exception):
                env.close()
        self.envs = []
