"""Typed training events and the fan-out that delivers them: ``async for event in trainer.events()``.

Events are frozen dataclasses published on the trainer's event loop as things
happen (an update, a finished episode, a worker restart, an evaluation, a
checkpoint). Any number of consumers may subscribe at once; each subscription
has its own bounded buffer. Publishing never waits: when a consumer falls behind,
its buffer drops its *oldest* events and counts them (:attr:`EventStream.dropped`),
and the consumer reads an :class:`EventsDropped` marker where the gap is. The
learner is never slowed down by a slow consumer.

A stream ends (``async for`` finishes) once the trainer closes, after the events
already buffered have been read.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from aiorl.errors import ConfigError
from aiorl.numbers import is_integer, plain_number
from aiorl.records import UpdateReport

if TYPE_CHECKING:  # runtime imports would make this leaf module depend on the engine
    from aiorl.errors import AiorlError
    from aiorl.evaluation import EvalResult

DEFAULT_BUFFER = 1024
"""Events a subscription holds before it drops the oldest."""


TrainingUpdate = UpdateReport
"""The learner applied an update: the update's :class:`~aiorl.records.UpdateReport` itself.

The event and the object ``run(on_update=...)`` receives are one record (the same class and,
for one update, the same instance): ``policy_version``, ``env_steps``, ``batch_steps``,
``learner`` (losses and diagnostics), ``lag``, ``steps_per_s``, ``mean_return``, ``update_s``
and the trainer's counters after the update (see :class:`~aiorl.records.UpdateReport`).
"""


@dataclass(frozen=True, slots=True)
class EpisodeFinished:
    """An episode ended in a worker (reported with the rollout it ended in).

    Attributes:
        worker_id: the worker whose env played it.
        episode_return: the sum of its rewards.
        length: its number of steps.
        policy_version: the policy version the rollout was collected with.
    """

    worker_id: int
    episode_return: float
    length: int
    policy_version: int


@dataclass(frozen=True, slots=True)
class WorkerRestarted:
    """A lost worker (crashed, hung) is being replaced by a new process.

    Attributes:
        worker_id: the seat being restarted.
        cause: why the previous process was lost (``WorkerCrashed``, ``WorkerHung``, ...).
        restarts: how many times this worker id has been restarted so far, this one included.
    """

    worker_id: int
    cause: AiorlError
    restarts: int


@dataclass(frozen=True, slots=True)
class EvaluationFinished:
    """``trainer.evaluate()`` finished; ``result`` holds its episodes' returns and lengths."""

    result: EvalResult


@dataclass(frozen=True, slots=True)
class CheckpointSaved:
    """A checkpoint was written.

    Attributes:
        path: where it was written.
        env_steps: env steps trained on when it was taken.
        policy_version: the policy version it holds.
    """

    path: str
    env_steps: int
    policy_version: int


@dataclass(frozen=True, slots=True)
class EventsDropped:
    """Marks a gap: the subscription fell behind and lost ``count`` events just before this point."""

    count: int


Event = TrainingUpdate | EpisodeFinished | WorkerRestarted | EvaluationFinished | CheckpointSaved | EventsDropped
"""Every event type a stream yields."""


class EventStream:
    """One subscriber's view of the trainer's events: an async iterator with its own buffer.

    Get one with ``trainer.events()``; it receives every event published from then on.
    Iterate it with ``async for``; leave early with ``break`` (the subscription goes
    away with the object) or call :meth:`close`, or use it as ``async with``.

    Resource handling:
        The buffer holds at most ``maxsize`` events. Publishing never waits: when the
        buffer is full the oldest event is dropped and counted in :attr:`dropped`,
        and the next read yields an :class:`EventsDropped` with the number lost there.
    """

    def __init__(self, hub: EventHub, maxsize: int) -> None:
        self.maxsize = maxsize
        self.dropped = 0
        """Events this subscription lost because its buffer was full (total)."""
        self._hub = hub
        self._buffer: deque[Event] = deque()
        self._unreported = 0
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether the stream ends once its buffer is read (the trainer closed, or :meth:`close`)."""
        return self._closed

    def close(self) -> None:
        """Unsubscribe now: the iteration ends after the events already buffered."""
        self._hub._streams.discard(self)
        self._end()

    def _end(self) -> None:
        self._closed = True
        self._wake()

    def _put(self, event: Event) -> None:
        if self._closed:
            return
        if len(self._buffer) >= self.maxsize:
            self._buffer.popleft()
            self.dropped += 1
            self._unreported += 1
        self._buffer.append(event)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            if self._waiter is not None:  # a second reader would take the first one's wake-up
                raise RuntimeError(
                    "another task is already reading this EventStream: call trainer.events() once per reader"
                )
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._unreported:
            count, self._unreported = self._unreported, 0
            return EventsDropped(count)
        return self._buffer.popleft()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventHub:
    """Fans events out to every live :class:`EventStream`; one per trainer.

    All methods run on the trainer's event loop. Subscriptions are held weakly, so a
    stream its consumer abandoned (``break`` out of ``async for``) stops receiving.
    """

    def __init__(self) -> None:
        self._streams: weakref.WeakSet[EventStream] = weakref.WeakSet()

    def subscribe(self, maxsize: int = DEFAULT_BUFFER) -> EventStream:
        """A new stream receiving every event published from now on."""
        maxsize = plain_number(maxsize)
        if not (is_integer(maxsize) and maxsize >= 1):
            raise ConfigError(f"maxsize={maxsize!r} must be an integer >= 1")
        stream = EventStream(self, maxsize)
        self._streams.add(stream)
        return stream

    @property
    def subscribed(self) -> bool:
        """Whether any stream is listening (publishers may skip building events otherwise)."""
        return len(self._streams) > 0

    def publish(self, event: Event) -> None:
        """Hand ``event`` to every stream; never waits."""
        for stream in list(self._streams):
            stream._put(event)

    def end_streams(self) -> None:
        """End every current stream (the trainer closed); later subscriptions start afresh."""
        streams = list(self._streams)
        self._streams = weakref.WeakSet()
        for stream in streams:
            stream._end()
