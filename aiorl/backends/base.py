"""The backend boundary: where workers run, behind one small interface.

The worker pool (:mod:`aiorl.engine.pool`) supervises workers without knowing
what runs them. A :class:`Backend` is what the user picks (local processes, a
Ray cluster); opened for one started trainer it gives a :class:`WorkerHost`
that starts workers and publishes weights. Each started worker is a
:class:`WorkerLink`: the pool receives its messages (the vocabulary of
:mod:`aiorl.protocol`: hello, heartbeat, slot ready, env errors), grants it
rollout slots, stops it, and ends it when it hangs. Restart budget, backoff,
hang verdicts and step accounting stay in the pool, the same for every backend.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from torch import nn

from aiorl import protocol
from aiorl.distributions import ActionDistribution
from aiorl.envs import EnvFactory, ObservationEncoder
from aiorl.rollout import RolloutLayout, SlotArrays
from aiorl.worker.spec import AsyncActing, WorkerSpec


@dataclass(frozen=True, slots=True)
class WorkerTemplate:
    """What every worker of one trainer is built from, whatever runs it.

    Attributes:
        env_factory: builds each of a worker's ``layout.num_envs`` envs.
        seed: base seed of the run.
        layout: shape of one rollout.
        num_workers: workers (seats) of the trainer.
        num_slots: rollout slots over all seats (slot ids are ``0 .. num_slots - 1``).
        policy: a CPU template of the policy; workers replace its weights with published ones.
        dist: the action distribution.
        obs_encoder: turns raw observations into float32 arrays.
        heartbeat_interval_s: seconds between a worker's heartbeats.
        env_error_limit: consecutive failures of one env that are fatal.
        start_method: multiprocessing start method of local workers (``None``: forkserver).
        reward_gamma: discount of the returns workers record for reward normalisation (``None``: off).
        acting: how to step async envs (``None``: gymnasium envs, inline); local workers only.
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
    start_method: str | None
    reward_gamma: float | None = None
    acting: AsyncActing | None = None

    def worker_spec(self, worker_id: int, incarnation: int, **plumbing: Any) -> WorkerSpec:
        """The spec of one worker: this template plus the backend's ``plumbing``.

        ``plumbing`` holds shared-memory names and the stack file (left empty where the
        backend has none) and, for local workers, ``acting``.
        """
        defaults = dict(slots_name="", num_slots=0, weights_name="", num_weights=0, progress_name="", stack_path="")
        return WorkerSpec(
            worker_id=worker_id,
            incarnation=incarnation,
            env_factory=self.env_factory,
            seed=self.seed,
            layout=self.layout,
            policy=self.policy,
            dist=self.dist,
            obs_encoder=self.obs_encoder,
            heartbeat_interval_s=self.heartbeat_interval_s,
            num_workers=self.num_workers,
            env_error_limit=self.env_error_limit,
            reward_gamma=self.reward_gamma,
            **{**defaults, **plumbing},
        )


class WeightPublisher(Protocol):
    """Where the broadcaster writes each new policy version, once for all workers."""

    @property
    def version(self) -> int:
        """The version workers can read now."""
        ...

    def publish(self, weights: np.ndarray, version: int) -> None:
        """Make ``weights`` readable by every worker as ``version``."""
        ...


class WorkerLink(ABC):
    """One running worker (one incarnation of a seat) as the pool sees it.

    Attributes:
        worker_id: the seat.
        incarnation: how many workers held the seat before this one.
        pid: the worker's process id (on its own machine for a remote worker).
        node: where it runs (``"local"``, or a Ray node id).
        exited: set once the worker is gone (died, stopped or killed).
    """

    worker_id: int
    incarnation: int
    pid: int
    node: str
    exited: asyncio.Event

    @abstractmethod
    async def receive(self) -> protocol.Message:
        """The worker's next message.

        Raises:
            EOFError: the worker is gone and every message it sent was received.
        """

    @abstractmethod
    def arrays(self, slot: int) -> SlotArrays:
        """The arrays of the rollout just reported in ``slot`` (valid until the slot is granted again)."""

    @abstractmethod
    def grant(self, slot: int) -> bool:
        """Let the worker fill ``slot``; ``False`` if the worker is already gone."""

    @abstractmethod
    def stop(self) -> None:
        """Ask the worker to finish its current step, close its envs and exit."""

    @abstractmethod
    async def end(self, grace_s: float) -> None:
        """End the worker by force: terminate, wait ``grace_s``, kill. Bounded."""

    @abstractmethod
    def kill_now(self) -> None:
        """Synchronous last resort: kill the worker if it is still there."""

    @abstractmethod
    def steps_taken(self) -> int:
        """Env steps the worker took (reported or not) as far as the trainer can know."""

    @abstractmethod
    async def dump_stack(self) -> str:
        """The worker's Python stack, if it can be had ('' otherwise); asked before ending a hung worker."""

    @abstractmethod
    def how_it_ended(self) -> str:
        """How the worker ended, for the user ("killed by SIGKILL (signal 9)", "actor died: ...")."""

    @abstractmethod
    def close(self) -> None:
        """Release the trainer-side resources of the link (connections, files)."""


class WorkerHost(ABC):
    """Where the workers of one started trainer run: starts them and holds the published weights.

    Attributes:
        weights: the publisher the broadcaster writes to.
    """

    weights: WeightPublisher

    @abstractmethod
    async def start_worker(self, worker_id: int, incarnation: int) -> WorkerLink:
        """Start a worker for seat ``worker_id``; it says hello through its link when it is ready.

        Raises:
            OSError: (and other exceptions) the worker could not be started at all.
        """


class Backend(ABC):
    """What runs the workers: :class:`~aiorl.backends.LocalBackend` or :class:`~aiorl.backends.RayBackend`."""

    @abstractmethod
    def open(self, template: WorkerTemplate) -> AbstractAsyncContextManager[WorkerHost]:
        """The host of one started trainer; leaving the context releases everything the host made."""
