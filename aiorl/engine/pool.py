"""The worker pool: persistent worker processes supervised from the trainer's loop.

For each worker the pool owns one supervising task that reads its frames
(hello, heartbeats, slot-ready, env errors), and a process-sentinel reader that
notices its death within a millisecond, without polling. Ready rollouts go into
:attr:`WorkerPool.ready`; a death or an env error becomes the pool's
:attr:`failure`, which the running training loop raises. Slots are owned per
worker; a slot goes back to its worker (a ``Grant`` frame) when the consumer is
done with it, so a worker whose slots are all waiting blocks: that is the
backpressure that bounds policy lag.

Teardown (:meth:`WorkerPool.close`) never waits without a deadline:
stop frame -> grace -> SIGTERM -> SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess

from aiorl import protocol
from aiorl.engine.process import start_worker
from aiorl.engine.stats import TrainingStats
from aiorl.errors import (
    AiorlError,
    EnvError,
    RemoteTraceback,
    WorkerCrashed,
    WorkerStartError,
    describe_exit,
)
from aiorl.worker.spec import WorkerSpec

log = logging.getLogger("aiorl")

KILL_WAIT_S = 2.0


@dataclass(frozen=True, slots=True)
class ReadyRollout:
    """A filled slot waiting for the consumer."""

    worker_id: int
    pid: int
    slot: int
    policy_version: int
    env_steps: int


@dataclass(slots=True)
class WorkerHandle:
    """The trainer's view of one worker process."""

    worker_id: int
    slots: tuple[int, ...]
    process: BaseProcess
    pid: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    exitcode: int | None = None
    hello: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    last_heartbeat: float = field(default_factory=time.monotonic)
    env_steps: int = 0
    env_error: EnvError | None = None

    def cause_of_death(self) -> AiorlError:
        """The error to report for this worker's end: its env error, else how it died."""
        if self.env_error is not None:
            return self.env_error
        return WorkerCrashed(self.worker_id, self.pid, describe_exit(self.exitcode))


class WorkerPool:
    """Starts, supervises and stops ``len(specs)`` worker processes.

    Args:
        context: the multiprocessing context to start workers from.
        specs: one :class:`WorkerSpec` per worker.
        slots_per_worker: slots each worker owns, ``spec.worker_id * slots_per_worker`` on.
        slots_in_use: how many of its slots each worker is granted (``None``: all). Strict
            on-policy mode keeps exactly one batch's worth of slots in circulation, so
            no rollout is ever acted by an old policy.
        stats: where arriving rollouts are counted.
        tasks: the task group that owns the pool's supervising tasks.
    """

    def __init__(
        self,
        context: BaseContext,
        specs: list[WorkerSpec],
        slots_per_worker: int,
        stats: TrainingStats,
        tasks: asyncio.TaskGroup,
        slots_in_use: list[int] | None = None,
    ) -> None:
        self.context = context
        self.specs = specs
        self.slots_per_worker = slots_per_worker
        self.slots_in_use = slots_in_use or [slots_per_worker] * len(specs)
        self.stats = stats
        self.tasks = tasks
        self.ready: asyncio.Queue[ReadyRollout] = asyncio.Queue()
        self.failure: asyncio.Future[AiorlError] = asyncio.get_running_loop().create_future()
        self.workers: dict[int, WorkerHandle] = {}
        self.closing = False
        self._supervisors: list[asyncio.Task[None]] = []

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self, timeout_s: float) -> None:
        """Start every worker and wait until each has said hello.

        Raises:
            EnvError: a worker's env failed while it was being built.
            WorkerStartError: a worker died or stayed silent past ``timeout_s``.
        """
        for spec in self.specs:
            await self._launch(spec)
        greeted = asyncio.ensure_future(self._all_said_hello())
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.wait([greeted, self.failure], return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            silent = [w.worker_id for w in self.workers.values() if not w.hello.is_set()]
            raise WorkerStartError(f"workers {silent} did not start within start_timeout_s={timeout_s}") from None
        finally:
            greeted.cancel()
        if self.failure.done():
            error = self.failure.result()
            if isinstance(error, WorkerCrashed):
                raise WorkerStartError(
                    f"a worker died while starting: {error}. Its traceback is on stderr; if it "
                    "re-ran your script, guard the script's entry point with "
                    "`if __name__ == '__main__':` (workers import __main__, as with any "
                    "multiprocessing start method but fork)"
                ) from error
            raise error

    async def _all_said_hello(self) -> None:
        for handle in self.workers.values():
            await handle.hello.wait()

    async def _launch(self, spec: WorkerSpec) -> None:
        process, sock = start_worker(self.context, spec)
        reader, writer = await asyncio.open_connection(sock=sock)
        first = spec.worker_id * self.slots_per_worker
        handle = WorkerHandle(
            worker_id=spec.worker_id,
            slots=tuple(range(first, first + self.slots_in_use[spec.worker_id])),
            process=process,
            pid=process.pid or -1,
            reader=reader,
            writer=writer,
        )
        self.workers[spec.worker_id] = handle
        asyncio.get_running_loop().add_reader(process.sentinel, self._on_exit, handle)
        self.tasks.create_task(self._supervise(handle), name=f"aiorl-supervise-{spec.worker_id}")

    async def _supervise(self, handle: WorkerHandle) -> None:
        try:
            await self._read_frames(handle)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_WAIT_S):
                    await handle.exited.wait()
            if not handle.exited.is_set():  # EOF but still running: not ours to keep
                handle.process.kill()
                await handle.exited.wait()
        finally:
            handle.writer.close()
        if not self.closing:
            error = handle.cause_of_death()
            log.error("%s", error)
            self._fail(error)

    def _on_exit(self, handle: WorkerHandle) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(handle.process.sentinel)
        handle.process.join(0)  # reap it and read the exit code
        handle.exitcode = handle.process.exitcode
        handle.process.close()  # releases the sentinel fd: no fd growth across restarts
        handle.exited.set()
        # Backstop: the socket reports EOF at once on exit; make sure the reader ends anyway.
        loop.call_later(0.5, handle.reader.feed_eof)

    async def _read_frames(self, handle: WorkerHandle) -> None:
        while True:
            try:
                message = await protocol.receive(handle.reader)
            except EOFError:
                return
            if isinstance(message, protocol.SlotReady):
                self.stats.collected(message.env_steps, message.episode_returns)
                handle.env_steps += message.env_steps
                self.ready.put_nowait(
                    ReadyRollout(
                        worker_id=handle.worker_id,
                        pid=handle.pid,
                        slot=message.slot,
                        policy_version=message.policy_version,
                        env_steps=message.env_steps,
                    )
                )
            elif isinstance(message, protocol.Heartbeat):
                handle.last_heartbeat = time.monotonic()
            elif isinstance(message, protocol.Hello):
                for slot in handle.slots:
                    protocol.send(handle.writer, protocol.Grant(slot))
                handle.hello.set()
            elif isinstance(message, protocol.Goodbye):
                self.stats.collected(message.unfinished_steps, [])
                self.stats.discard(message.unfinished_steps, "shutdown")
            elif isinstance(message, protocol.EnvFailed):
                handle.env_error = _env_error(handle.worker_id, message)

    def _fail(self, error: AiorlError) -> None:
        if not self.failure.done():
            self.failure.set_result(error)

    # ---- slots ---------------------------------------------------------------------------
    def release(self, rollout: ReadyRollout) -> None:
        """Give ``rollout``'s slot back to its worker (the consumer is done with it)."""
        handle = self.workers.get(rollout.worker_id)
        if handle is not None and not handle.exited.is_set() and not self.closing:
            protocol.send(handle.writer, protocol.Grant(rollout.slot))

    @property
    def pids(self) -> dict[int, int]:
        """Worker id -> process id of the current processes."""
        return {wid: h.pid for wid, h in self.workers.items()}

    def alive(self) -> list[WorkerHandle]:
        """Workers whose process has not exited."""
        return [h for h in self.workers.values() if not h.exited.is_set()]

    # ---- teardown --------------------------------------------------------------------------
    async def close(self, grace_s: float) -> None:
        """Stop every worker: stop frame, ``grace_s``, SIGTERM, then SIGKILL. Bounded."""
        self.closing = True
        for handle in self.alive():
            with contextlib.suppress(OSError, RuntimeError):
                protocol.send(handle.writer, protocol.Stop())
        for signal_step, wait_s in (("stop", grace_s), ("terminate", KILL_WAIT_S), ("kill", KILL_WAIT_S)):
            if signal_step == "terminate":
                for handle in self.alive():
                    handle.process.terminate()
            elif signal_step == "kill":
                for handle in self.alive():
                    handle.process.kill()
            if await self._all_exited(wait_s):
                break
        self.kill_now()

    async def _all_exited(self, timeout_s: float) -> bool:
        waiting = [h.exited.wait() for h in self.alive()]
        if not waiting:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*waiting)
        return not self.alive()

    def kill_now(self) -> None:
        """Synchronous last resort (used on every exit path): SIGKILL whatever is left."""
        self.closing = True
        for handle in self.alive():
            with contextlib.suppress(ValueError, OSError):
                handle.process.kill()
                handle.process.join(KILL_WAIT_S)


def _env_error(worker_id: int, message: protocol.EnvFailed) -> EnvError:
    error = EnvError(
        f"{message.error_type}: {message.message}",
        worker_id=worker_id,
        env_index=message.env_index,
        step=message.step,
        policy_version=message.policy_version,
        remote_traceback=message.traceback,
    )
    error.__cause__ = RemoteTraceback(message.traceback)
    return error
