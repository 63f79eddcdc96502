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
from typing import Protocol

import numpy as np

from aiorl import protocol
from aiorl.rollout import SlotArrays
from aiorl.worker.spec import WorkerTemplate


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
