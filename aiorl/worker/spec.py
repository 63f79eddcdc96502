"""What a worker process needs to know, in one picklable object."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from aiorl.distributions import ActionDistribution
from aiorl.envs import EnvFactory, ObservationEncoder
from aiorl.rollout import RolloutLayout


@dataclass(frozen=True, slots=True)
class AsyncActing:
    """How a worker steps async envs (the ``env_*`` and ``act_*`` trainer options)."""

    env_threads: bool
    """Wrap each gymnasium env in a :class:`~aiorl.envs.ThreadedEnv`."""
    env_timeout_s: float
    act_batch: int
    act_wait_s: float


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker is started with.

    Attributes:
        worker_id: index of the worker in the pool (stable across restarts).
        incarnation: how many processes held this ``worker_id`` before this one.
        env_factory: builds each of the worker's ``layout.num_envs`` envs.
        seed: base seed of the run (see :meth:`env_seed` and :meth:`torch_seed`).
        layout: shape of a rollout slot.
        slots_name, num_slots: the shared rollout segment and its slot count.
        weights_name, num_weights: the shared weight store.
        policy: a CPU template of the policy; its weights are replaced by the store's.
        dist: the action distribution.
        obs_encoder: turns raw observations into float32 arrays.
        heartbeat_interval_s: seconds between heartbeat frames.
        progress_name, num_workers: the shared progress board (steps per worker).
        stack_path: file the worker's Python stack is dumped into on SIGUSR1.
        env_error_limit: consecutive failures of one env that are fatal.
        reward_gamma: discount of the running returns recorded for reward normalisation
            (``None``: normalisation is off, nothing is recorded).
        acting: how to step async envs (an :class:`~aiorl.AsyncEnv` factory or
            ``env_threads=True``); ``None`` steps gymnasium envs inline, in lockstep.
    """

    worker_id: int
    incarnation: int
    env_factory: EnvFactory
    seed: int
    layout: RolloutLayout
    slots_name: str
    num_slots: int
    weights_name: str
    num_weights: int
    policy: nn.Module
    dist: ActionDistribution
    obs_encoder: ObservationEncoder
    heartbeat_interval_s: float
    progress_name: str
    num_workers: int
    stack_path: str
    env_error_limit: int
    reward_gamma: float | None = None
    acting: AsyncActing | None = None

    def env_seed(self, env_index: int) -> int:
        """Seed of the first reset of env ``env_index``: distinct per env, worker and incarnation."""
        return self.seed + (self.incarnation * self.num_workers + self.worker_id) * self.layout.num_envs + env_index

    def torch_seed(self) -> int:
        """Seed of this worker process's action sampling."""
        return (self.seed * 1_000_003 + self.incarnation * 10_007 + self.worker_id + 1) % 2**63
