"""What a worker process needs to know, in one picklable object.

A :class:`WorkerTemplate` holds what every worker of one trainer shares (written once, by the
trainer); a :class:`WorkerSpec` is that template plus one worker's identity and, for a local
worker process, the shared memory it attaches to (:class:`LocalPlumbing`). Both backends build
their specs with :meth:`WorkerTemplate.worker_spec`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import gymnasium as gym
from torch import nn

from aiorl.distributions import ActionDistribution
from aiorl.envs import EnvFactory, ObservationEncoder
from aiorl.rollout import RolloutLayout

REBUILD_SEED_STRIDE = 1_000_003
"""How much further on an env re-created after an error is seeded, per re-creation (a prime)."""


@dataclass(frozen=True, slots=True)
class AsyncActing:
    """How a worker steps async envs (the ``env_*`` and ``act_*`` trainer options)."""

    env_threads: bool
    """Wrap each gymnasium env in a :class:`~aiorl.envs.ThreadedEnv`."""
    env_timeout_s: float
    act_batch: int
    act_wait_s: float


@dataclass(frozen=True, slots=True)
class WorkerTemplate:
    """What every worker of one trainer is built from, whatever backend runs it.

    The trainer builds one per start; a backend turns it into one :class:`WorkerSpec` per
    worker with :meth:`worker_spec`. Every field travels to the worker (keep them picklable
    and small: the policy is a CPU template whose weights are replaced by published ones).

    Attributes:
        env_factory: builds each of a worker's ``layout.num_envs`` envs.
        seed: base seed of the run (see :meth:`WorkerSpec.env_seed` and :meth:`WorkerSpec.torch_seed`).
        layout: shape of one rollout slot.
        num_workers: workers (seats) of the trainer.
        num_slots: rollout slots over all seats (slot ids are ``0 .. num_slots - 1``).
        policy: a CPU template of the policy; workers replace its weights with published ones.
        dist: the action distribution.
        obs_encoder: turns raw observations into float32 arrays.
        heartbeat_interval_s: seconds between a worker's heartbeats.
        env_error_limit: consecutive failures of one env that are fatal.
        start_method: multiprocessing start method of local workers (``None``: forkserver).
        reward_gamma: discount of the running returns recorded for reward normalisation
            (``None``: normalisation is off, nothing is recorded).
        acting: how to step async envs (an :class:`~aiorl.AsyncEnv` factory or
            ``env_threads=True``); ``None`` steps gymnasium envs inline, in lockstep.
            Local workers only.
        action_space: the trainer's action space; a worker's env with another one is an
            env error (``None``: not checked).
        vector: the env factory returns a ``gymnasium.vector.VectorEnv`` of ``layout.num_envs``
            sub-envs: each worker builds one and steps it as one batch
            (:mod:`aiorl.worker.vector_sampler`).
        device: torch device on which the worker acts (a copy of the policy there; ``"cpu"``:
            the template itself).
    """

    env_factory: EnvFactory
    seed: int
    layout: RolloutLayout
    num_workers: int
    num_slots: int
    policy: nn.Module
    dist: ActionDistribution
    obs_encoder: ObservationEncoder
    heartbeat_interval_s: float
    env_error_limit: int
    start_method: str | None = None
    reward_gamma: float | None = None
    acting: AsyncActing | None = None
    action_space: gym.Space | None = None
    vector: bool = False
    device: str = "cpu"

    def worker_spec(self, worker_id: int, incarnation: int, local: LocalPlumbing | None = None) -> WorkerSpec:
        """The spec of one worker: this template, who the worker is, and (local backend) what it attaches to."""
        shared = {f.name: getattr(self, f.name) for f in fields(WorkerTemplate)}
        return WorkerSpec(**shared, worker_id=worker_id, incarnation=incarnation, local=local)


@dataclass(frozen=True, slots=True)
class LocalPlumbing:
    """What a worker process of the local backend attaches to (a Ray actor has none of it).

    Attributes:
        slots_name: the shared rollout segment (``num_slots`` slots of the spec's layout).
        weights_name, num_weights: the shared seqlock weight store.
        progress_name: the shared progress board (steps per worker).
        stack_path: file the worker's Python stack is dumped into on SIGUSR1.
    """

    slots_name: str
    weights_name: str
    num_weights: int
    progress_name: str
    stack_path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSpec(WorkerTemplate):
    """Everything a worker is started with: its trainer's :class:`WorkerTemplate`, plus who it is.

    Built by :meth:`WorkerTemplate.worker_spec`; the template's fields are read directly
    (``spec.layout``, ``spec.env_factory``, ...).

    Attributes:
        worker_id: index of the worker in the pool (stable across restarts).
        incarnation: how many processes held this ``worker_id`` before this one.
        local: the shared memory and stack file of a local worker process (``None`` for a
            Ray actor, whose rollouts come back as values).
    """

    worker_id: int
    incarnation: int
    local: LocalPlumbing | None = None

    def env_seed(self, env_index: int, rebuild: int = 0) -> int:
        """Seed of the first reset of env ``env_index``: distinct per env, worker and incarnation.

        ``rebuild``: of the env's ``rebuild``-th re-creation after env errors (so that a run
        that hits env errors is as reproducible as one that does not).
        """
        first = self.seed + (self.incarnation * self.num_workers + self.worker_id) * self.layout.num_envs + env_index
        return first + rebuild * REBUILD_SEED_STRIDE

    def torch_seed(self) -> int:
        """Seed of this worker process's action sampling."""
        return (self.seed * 1_000_003 + self.incarnation * 10_007 + self.worker_id + 1) % 2**63
