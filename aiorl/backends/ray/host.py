"""The Ray backend: workers as async Ray actors on a cluster, supervised by the trainer's loop.

Each worker is a :class:`~aiorl.backends.ray.actor.RolloutActor` (the same
:class:`~aiorl.worker.sampler.EnvSampler` as a local worker) created with
``max_restarts=0, max_task_retries=0``: Ray's own restart takes ~2 s and
silently re-runs tasks, a fresh actor ~0.3 s, so aiorl's pool replaces lost
actors itself, with its restart budget, backoff and step accounting.

The link of an actor turns Ray calls into the pool's messages:

- a slot grant is one ``rollout`` call; its result (numpy arrays, through the
  object store) is awaited on the loop as an asyncio future, no polling, and
  becomes a slot-ready message. Two grants mean two queued calls, so the actor
  starts the next rollout without waiting for a round trip;
- every ``heartbeat_interval_s`` a ``heartbeat`` call (answered between env
  steps) becomes a heartbeat message: an actor that stops answering is hung, and
  the pool's watchdog ends it (``ray.kill``: a hung actor cannot be cancelled);
- a dead actor fails its pending calls with ``RayActorError`` within
  milliseconds: the link ends and the pool replaces it. A method that raises
  (``RayTaskError``) is a crash with the remote traceback.

Weights are ``ray.put`` once per version; calls carry the reference and actors
fetch it only when their copy is older. Unreported steps of a lost actor are
known up to its last answer (heartbeat or rollout).

``ray`` is imported only when a trainer with this backend starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import numpy as np

from aiorl import protocol
from aiorl.backends.base import Backend, WorkerHost, WorkerLink, WorkerTemplate
from aiorl.backends.ray.actor import ActorRollout, Failed, RolloutActor
from aiorl.errors import ConfigError
from aiorl.rollout import SlotArrays
from aiorl.worker.spec import WorkerSpec

_START, _PING, _CLOSE = "start", "heartbeat", "close"
MAX_DEATH_TEXT = 400
"""Characters of Ray's explanation kept in a crash message."""


def ray_available() -> bool:
    """Whether ``ray`` can be imported (without importing it)."""
    return importlib.util.find_spec("ray") is not None


class RayBackend(Backend):
    """Run the workers as Ray actors.

    Args:
        address: the cluster to connect to (``"auto"``, ``"ray://host:10001"``,
            ``"127.0.0.1:6379"``); ``None`` connects to ``RAY_ADDRESS`` if set,
            else starts a local Ray instance. Ignored when Ray is already
            initialised in this process (``ray.init`` called by the application).
        num_cpus_per_worker: CPUs Ray reserves for each worker actor.
        init_options: more keyword arguments for ``ray.init`` (``num_cpus``,
            ``runtime_env``, ...), used only when the trainer initialises Ray.
        actor_options: more options for each actor (``resources``,
            ``scheduling_strategy``, ...).

    Resource handling:
        If Ray is not initialised when the trainer starts, the trainer calls
        ``ray.init`` and ``ray.shutdown`` when it closes; otherwise it leaves the
        connection as it found it. Every actor it created is killed on close.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus_per_worker: float = 1.0,
        init_options: Mapping[str, Any] | None = None,
        actor_options: Mapping[str, Any] | None = None,
    ) -> None:
        problems = []
        if address is not None and not (isinstance(address, str) and address):
            problems.append(f"address={address!r} must be a non-empty string or None")
        if isinstance(num_cpus_per_worker, bool) or not (
            isinstance(num_cpus_per_worker, int | float) and num_cpus_per_worker >= 0
        ):
            problems.append(f"num_cpus_per_worker={num_cpus_per_worker!r} must be a number >= 0")
        reserved = {"max_restarts", "max_task_retries", "num_cpus"} & set(actor_options or {})
        if reserved:
            problems.append(f"actor_options may not set {sorted(reserved)}: aiorl replaces lost actors itself")
        if not ray_available():
            problems.append("the Ray backend needs ray: pip install 'aiorl[ray]'")
        if problems:
            raise ConfigError(problems)
        self.address = address
        self.num_cpus_per_worker = num_cpus_per_worker
        self.init_options = dict(init_options or {})
        self.actor_options = dict(actor_options or {})

    def open(self, template: WorkerTemplate) -> AbstractAsyncContextManager[WorkerHost]:
        """Connect to (or start) Ray, yield the host, kill its actors (and shut Ray down if we started it)."""
        return _open_ray(self, template)

    def __repr__(self) -> str:
        return f"RayBackend(address={self.address!r}, num_cpus_per_worker={self.num_cpus_per_worker!r})"


@contextlib.asynccontextmanager
async def _open_ray(backend: RayBackend, template: WorkerTemplate) -> AsyncIterator[WorkerHost]:
    import ray

    owned = not ray.is_initialized()
    if owned:  # ray.init takes seconds: not on the loop
        init = asyncio.ensure_future(asyncio.to_thread(ray.init, address=backend.address, **backend.init_options))
        try:
            await asyncio.shield(init)
        except asyncio.CancelledError:  # the thread goes on: let it finish, then undo it
            with contextlib.suppress(Exception):
                await init
            await asyncio.to_thread(ray.shutdown)
            raise
    host = RayHost(ray, backend, template)
    try:
        yield host
    finally:
        host.kill_all()
        if owned:
            await asyncio.to_thread(ray.shutdown)


class RayWeights:
    """The published weights: one ``ray.put`` per version, referenced by every rollout call."""

    def __init__(self, ray: Any) -> None:
        self.ray = ray
        self.ref: Any = None
        self._version = 0

    @property
    def version(self) -> int:
        """The version whose reference rollout calls carry now."""
        return self._version

    def publish(self, weights: np.ndarray, version: int) -> None:
        """Put ``weights`` into the object store once; older versions are freed when unused."""
        self.ref = self.ray.put(weights)
        self._version = version


class RayHost(WorkerHost):
    """Creates the worker actors of one started trainer."""

    def __init__(self, ray: Any, backend: RayBackend, template: WorkerTemplate) -> None:
        self.ray = ray
        self.backend = backend
        self.template = template  # config refuses async envs on Ray: actors step gymnasium envs inline
        self.ray_weights = RayWeights(ray)  # the concrete publisher the actor links read
        self.weights = self.ray_weights
        self.actor_class = ray.remote(RolloutActor)
        self.links: list[ActorLink] = []

    async def start_worker(self, worker_id: int, incarnation: int) -> WorkerLink:
        """Create the actor (asynchronous in Ray); it says hello once its envs are built."""
        options = {
            "num_cpus": self.backend.num_cpus_per_worker,
            "max_restarts": 0,
            "max_task_retries": 0,
            **self.backend.actor_options,
        }
        actor = self.actor_class.options(**options).remote(self._spec(worker_id, incarnation))
        link = ActorLink(self.ray, actor, worker_id, incarnation, self.ray_weights, self.template.heartbeat_interval_s)
        self.links = [other for other in self.links if not other.exited.is_set()] + [link]
        return link

    def _spec(self, worker_id: int, incarnation: int) -> WorkerSpec:
        return self.template.worker_spec(worker_id, incarnation)  # no local plumbing: rollouts come back as values

    def kill_all(self) -> None:
        """Kill every actor still alive (the pool has normally stopped them already)."""
        for link in self.links:
            link.kill_now()
        self.links = []


class ActorLink(WorkerLink):
    """One worker actor: its pending calls, turned into the pool's messages."""

    def __init__(
        self,
        ray: Any,
        actor: Any,
        worker_id: int,
        incarnation: int,
        weights: RayWeights,
        heartbeat_interval_s: float,
    ) -> None:
        self.ray = ray
        self.actor = actor
        self.worker_id = worker_id
        self.incarnation = incarnation
        self.pid = -1
        self.node = ""
        self.exited = asyncio.Event()
        self.weights = weights
        self.heartbeat_interval_s = heartbeat_interval_s
        self._loop = asyncio.get_running_loop()
        self._calls: dict[asyncio.Future[Any], str | int] = {}  # pending call -> what (or the slot)
        self._messages: deque[protocol.Message] = deque()
        self._arrays: dict[int, SlotArrays] = {}
        self._steps = 0
        self._ending: str | None = None  # how it ended, once it has
        self._next_heartbeat = self._loop.time() + heartbeat_interval_s
        self._wakeup: asyncio.Future[None] | None = None
        self._call(_START, actor.start.remote([weights.ref], weights.version))

    # ---- calls ----------------------------------------------------------------------------
    def _call(self, what: str | int, ref: Any) -> None:
        self._calls[asyncio.wrap_future(ref.future())] = what
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def receive(self) -> protocol.Message:
        """The next message; ``EOFError`` once the actor is gone and everything it sent was read."""
        while not self._messages:
            if self.exited.is_set():
                raise EOFError(f"worker {self.worker_id} ended: {self._ending}")
            timeout = None
            if _PING not in self._calls.values():
                timeout = self._next_heartbeat - self._loop.time()
                if timeout <= 0:
                    self._call(_PING, self.actor.heartbeat.remote())
                    continue
            self._wakeup = self._loop.create_future()
            await asyncio.wait([*self._calls, self._wakeup], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            self._wakeup.cancel()
            for future, what in list(self._calls.items()):  # in call order
                if future.done():
                    del self._calls[future]
                    self._settle(future, what)
            if self._ending is not None:
                self._finish(self._ending)
        return self._messages.popleft()

    def _settle(self, future: asyncio.Future[Any], what: str | int) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            if self._ending is None:
                self._ending = _describe_failure(self.ray, error)
            return
        result = future.result()
        if what == _PING:
            self._steps = max(self._steps, result)
            self._next_heartbeat = self._loop.time() + self.heartbeat_interval_s
            self._messages.append(protocol.Heartbeat(env_steps=result))
        elif what == _START:
            message, self.node = result
            if isinstance(message, protocol.Hello):
                self.pid = message.pid
            else:
                self._ending = _failed(message)
            self._messages.append(message)
        elif what == _CLOSE:
            self._steps = max(self._steps, result)
            self._ending = "stopped"
        elif isinstance(what, int) and result is not None:
            self._on_rollout(what, result)

    def _on_rollout(self, slot: int, result: ActorRollout | Failed) -> None:
        if isinstance(result, Failed):
            self._messages.append(result)
            self._ending = _failed(result)
            return
        summary = result.summary
        self._steps = max(self._steps, result.total_steps)
        self._messages.extend(summary.env_errors)
        self._arrays[slot] = result.arrays
        self._messages.append(
            protocol.SlotReady(
                slot=slot,
                policy_version=result.policy_version,
                env_steps=summary.env_steps,
                discarded_steps=summary.discarded_steps,
                episode_returns=summary.episode_returns,
                episode_lengths=summary.episode_lengths,
            )
        )

    def _finish(self, how: str) -> None:
        """The actor is gone (or must go): kill it, forget its pending calls."""
        if self.exited.is_set():
            return
        self._ending = how
        self.kill_now()

    # ---- the pool's side ------------------------------------------------------------------
    def arrays(self, slot: int) -> SlotArrays:
        """The arrays of the rollout just reported in ``slot``."""
        return self._arrays.pop(slot)

    def grant(self, slot: int) -> bool:
        """Queue one rollout call for ``slot`` with the newest published weights."""
        if self.exited.is_set() or self._ending is not None:
            return False
        self._call(slot, self.actor.rollout.remote([self.weights.ref], self.weights.version))
        return True

    def stop(self) -> None:
        """Ask the actor to stop after its current env step and close its envs; then it is killed."""
        if not self.exited.is_set() and _CLOSE not in self._calls.values():
            self._call(_CLOSE, self.actor.close.remote())

    async def end(self, grace_s: float) -> None:
        """Kill the actor now: a hung actor cannot be asked anything (``grace_s`` is not needed)."""
        self._finish("killed by the trainer")

    def kill_now(self) -> None:
        """``ray.kill`` the actor (once) and mark the link ended."""
        if self.exited.is_set():
            return
        if self._ending is None:
            self._ending = "killed by the trainer"
        with contextlib.suppress(Exception):  # already dead, or Ray already shut down
            self.ray.kill(self.actor, no_restart=True)
        for future in self._calls:
            future.cancel()
        self._calls.clear()
        self.exited.set()
        self._wake()

    def steps_taken(self) -> int:
        """Env steps as of the actor's last answer (its memory is gone with it)."""
        return self._steps

    async def dump_stack(self) -> str:
        """Not available for an actor: its loop is blocked, and it may be on another machine."""
        return ""

    def how_it_ended(self) -> str:
        """Ray's explanation, or what the trainer did."""
        return self._ending or "still running"

    def close(self) -> None:
        """Drop any arrays still held."""
        self._arrays.clear()


def _describe_failure(ray: Any, error: BaseException) -> str:
    """How a failed call says the actor ended, in one line (a crash's traceback is kept in full)."""
    if isinstance(error, ray.exceptions.RayTaskError):
        return f"its method raised:\n{error}"
    text = " ".join(str(error).split())
    if len(text) > MAX_DEATH_TEXT:
        text = text[:MAX_DEATH_TEXT] + " ..."
    return f"the Ray actor died ({type(error).__name__}: {text})"


def _failed(message: Failed) -> str:
    """How an actor that reported ``message`` ended."""
    return "exited after an env error" if isinstance(message, protocol.EnvFailed) else "exited after an error"
