"""The worker pool: persistent workers supervised from the trainer's loop, whatever runs them.

Every worker id has a *seat* that outlives its workers. The workers themselves
come from a :class:`~aiorl.backends.WorkerHost` (local processes, Ray actors):
the pool sees each one through a :class:`~aiorl.backends.WorkerLink` and owns
two tasks per worker: a supervisor that reads its messages (hello, heartbeats,
slot ready, env errors) and a watchdog that declares it hung when it goes
silent for ``worker_timeout_s``. Its death ends the link's messages at once
(a pidfd, ``RayActorError``), without polling.

When a worker is lost (killed, crashed, hung) its granted slots are reclaimed,
its unfinished rollout is counted as discarded (``worker_lost``; the link says
how many steps it had taken), and a replacement starts in the same seat after
a backoff, with the current weights. Completed rollouts it already reported
stay queued: nothing handed to the trainer is lost. More losses than the
restart budget allows, or an env that fails for good, become the pool's
:attr:`WorkerPool.failure`, which the running training loop raises.

Slots belong to seats; a slot goes back to its seat's worker (a grant) when
the consumer is done with it, so a worker whose slots all wait blocks: that
backpressure bounds policy lag.

The decisions are pure code the pool does the I/O around: the
:class:`~aiorl.engine.ledger.SlotLedger` (slot grants, releases, reclaims and
every counted step), the :class:`~aiorl.engine.hang.HangWatch` (the watchdog's
verdict) and the :class:`~aiorl.engine.restarts.RestartBudget`.

Teardown (:meth:`WorkerPool.close`) never waits without a deadline:
stop -> grace -> terminate -> kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiorl
from aiorl import protocol
from aiorl.backends.base import WorkerHost, WorkerLink
from aiorl.engine.hang import HangWatch
from aiorl.engine.ledger import DiscardReason, SlotLedger, SlotState
from aiorl.engine.restarts import RestartBudget
from aiorl.engine.stats import TrainingStats
from aiorl.errors import (
    AiorlError,
    EnvError,
    RemoteTraceback,
    WorkerCrashed,
    WorkerError,
    WorkerHung,
    WorkerRestartError,
    WorkerStartError,
)
from aiorl.events import EpisodeFinished, EventHub, WorkerRestarted
from aiorl.shm import SlotArrays

log = logging.getLogger("aiorl")

KILL_WAIT_S = 2.0
"""Seconds to wait for a worker to go after it is told to, or ended by force."""


@dataclass(frozen=True, slots=True)
class ReadyRollout:
    """A filled slot waiting for the consumer; ``arrays`` are its rollout (valid until it is released)."""

    worker_id: int
    pid: int
    slot: int
    policy_version: int
    env_steps: int
    arrays: SlotArrays = field(repr=False, compare=False)


@dataclass(slots=True)
class WorkerHandle:
    """The pool's view of one worker (one incarnation of a seat)."""

    link: WorkerLink
    watch: HangWatch
    hello: asyncio.Event = field(default_factory=asyncio.Event)
    fatal: EnvError | WorkerError | None = None
    """An env that failed for good, or the worker's own code that raised (it then exits)."""
    hang: WorkerHung | None = None

    @property
    def worker_id(self) -> int:
        """The seat."""
        return self.link.worker_id

    @property
    def incarnation(self) -> int:
        """Workers that held the seat before this one."""
        return self.link.incarnation

    @property
    def pid(self) -> int:
        """The worker's process id (on its own machine)."""
        return self.link.pid

    @property
    def exited(self) -> asyncio.Event:
        """Set once the worker is gone."""
        return self.link.exited

    def cause_of_death(self) -> AiorlError:
        """The error to report for this worker's end: what it reported as fatal, a hang, or how it died."""
        if self.fatal is not None:
            return self.fatal
        if self.hang is not None:
            return self.hang
        return WorkerCrashed(self.worker_id, self.pid, self.link.how_it_ended())


@dataclass(slots=True)
class Seat:
    """A worker id and the worker currently holding it (its slots are in the pool's ledger)."""

    worker_id: int
    handle: WorkerHandle | None = None
    incarnation: int = 0

    def live(self) -> WorkerHandle | None:
        """The current worker if it has said hello and not exited."""
        handle = self.handle
        if handle is None or handle.exited.is_set() or not handle.hello.is_set():
            return None
        return handle


class WorkerPool:
    """Starts, supervises, replaces and stops the workers.

    Args:
        host: starts the workers (local processes, Ray actors).
        seat_slots: the slot ids of each seat (worker id = index).
        stats: where arriving and discarded steps are counted (through :attr:`ledger`).
        tasks: the task group that owns the pool's tasks.
        budget: the restart budget.
        worker_timeout_s: silence after which a worker is declared hung.
        start_timeout_s: how long a worker may take to say hello.
    """

    def __init__(
        self,
        *,
        host: WorkerHost,
        seat_slots: list[tuple[int, ...]],
        stats: TrainingStats,
        tasks: asyncio.TaskGroup,
        budget: RestartBudget,
        worker_timeout_s: float,
        start_timeout_s: float,
    ) -> None:
        self.host = host
        self.stats = stats
        self.tasks = tasks
        self.budget = budget
        self.worker_timeout_s = worker_timeout_s
        self.start_timeout_s = start_timeout_s
        self.seats = {wid: Seat(wid) for wid in range(len(seat_slots))}
        self.ledger = SlotLedger(seat_slots, stats)
        """Which slot is where, and every collected, consumed and discarded step."""
        self.ready: asyncio.Queue[ReadyRollout] = asyncio.Queue()
        self.failure: asyncio.Future[AiorlError] = asyncio.get_running_loop().create_future()
        self.last_env_error: EnvError | None = None
        self.started = False
        self.closing = False
        self._supervisors: set[asyncio.Task[None]] = set()
        self._restarts: set[asyncio.Task[None]] = set()
        self.events: EventHub | None = None
        """Receives an event for each finished episode and each restart (the trainer's event hub)."""

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Start every worker and wait until each has said hello.

        Raises:
            EnvError: a worker's env failed while it was being built.
            WorkerStartError: a worker died or stayed silent past ``start_timeout_s``.
        """
        for seat in self.seats.values():
            await self._launch(seat)
        greeted = asyncio.ensure_future(self._all_said_hello())
        outcomes: list[asyncio.Future[Any]] = [greeted, self.failure]
        try:
            async with asyncio.timeout(self.start_timeout_s):
                await asyncio.wait(outcomes, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            silent = [s.worker_id for s in self.seats.values() if s.handle and not s.handle.hello.is_set()]
            raise WorkerStartError(
                f"workers {silent} did not start within start_timeout_s={self.start_timeout_s}"
            ) from None
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
        self.started = True

    async def _all_said_hello(self) -> None:
        for seat in self.seats.values():
            assert seat.handle is not None
            await seat.handle.hello.wait()

    async def _launch(self, seat: Seat) -> None:
        link = await self.host.start_worker(seat.worker_id, seat.incarnation)
        handle = WorkerHandle(link, HangWatch(self.worker_timeout_s, self.start_timeout_s, time.monotonic()))
        seat.handle = handle
        self.ledger.enter(seat.worker_id)
        name = f"aiorl-worker-{seat.worker_id}.{seat.incarnation}"
        supervisor = self.tasks.create_task(self._supervise(seat, handle), name=f"{name}-supervisor")
        self._supervisors.add(supervisor)
        supervisor.add_done_callback(self._supervisors.discard)
        self.tasks.create_task(self._watch(handle), name=f"{name}-watchdog")

    async def _supervise(self, seat: Seat, handle: WorkerHandle) -> None:
        try:
            await self._read_frames(seat, handle)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_WAIT_S):
                    await handle.exited.wait()
            if not handle.exited.is_set():  # EOF but still running: not ours to keep
                await handle.link.end(grace_s=0.0)
        finally:
            handle.link.close()
            self._account_lost_steps(seat, handle)  # also when cancelled (a teardown cut short)
        if self.closing:
            return
        self._after_loss(seat, handle)

    async def _read_frames(self, seat: Seat, handle: WorkerHandle) -> None:
        while True:
            try:
                message = await handle.link.receive()
            except EOFError:
                return
            handle.watch.heard(time.monotonic())
            if isinstance(message, protocol.SlotReady):
                self._on_slot_ready(seat, handle, message)
            elif isinstance(message, protocol.Hello):
                if message.aiorl_file and message.aiorl_file != aiorl.__file__:
                    self.fail(
                        WorkerStartError(
                            f"worker {handle.worker_id} imported aiorl from {message.aiorl_file}, "
                            f"the trainer from {aiorl.__file__}: a forkserver started with another "
                            "sys.path preloaded another copy; restart the interpreter"
                        )
                    )
                for slot in self.ledger.slots(seat.worker_id, SlotState.FREE):
                    if handle.link.grant(slot):
                        self.ledger.grant(seat.worker_id, slot)
                handle.hello.set()
                if handle.incarnation:
                    log.info("worker %d is back (pid %d, restart %d)", handle.worker_id, handle.pid, handle.incarnation)
            elif isinstance(message, protocol.EnvRecovered):
                self._on_env_recovered(handle, message)
            elif isinstance(message, protocol.EnvFailed):
                for i, earlier in enumerate(message.earlier, 1):  # the rollout's failures, the last one fatal
                    self._on_env_recovered(handle, earlier, fatal=i == len(message.earlier))
                if not message.earlier:  # a constructor (or first reset) that failed: no rollout had begun
                    self.stats.env_errors += 1
                handle.fatal = self.last_env_error = _env_error(handle.worker_id, message)
            elif isinstance(message, protocol.WorkerFailed):
                handle.fatal = _worker_error(handle.worker_id, message)

    def _on_slot_ready(self, seat: Seat, handle: WorkerHandle, message: protocol.SlotReady) -> None:
        self.ledger.filled(seat.worker_id, message.slot, message.env_steps, message.discarded_steps)
        self.stats.episodes_finished(message.episode_returns)
        if self.events is not None and self.events.subscribed:  # a rollout may end a hundred episodes
            for ret, length in zip(message.episode_returns, message.episode_lengths, strict=False):
                self.events.publish(EpisodeFinished(handle.worker_id, ret, length, message.policy_version))
        self.ready.put_nowait(
            ReadyRollout(
                worker_id=handle.worker_id,
                pid=handle.pid,
                slot=message.slot,
                policy_version=message.policy_version,
                env_steps=message.env_steps,
                arrays=handle.link.arrays(message.slot),
            )
        )

    def _on_env_recovered(self, handle: WorkerHandle, message: protocol.EnvRecovered, *, fatal: bool = False) -> None:
        """Count an env failure and log it (``fatal``: the failure after which the env could not go on)."""
        error = _env_error(handle.worker_id, message)
        self.last_env_error = error
        self.stats.env_errors += 1
        outcome = "" if fatal else "env re-created, "
        log.warning("%s (%s%d steps discarded)\n%s", error, outcome, message.discarded_steps, message.traceback)

    def _account_lost_steps(self, seat: Seat, handle: WorkerHandle) -> None:
        """Count the steps the worker took but never reported, and take back its slots.

        They are discarded as ``env_error`` when an env failed for good (its rollout is what
        the failure cost), ``shutdown`` when the trainer stopped the worker, and
        ``worker_lost`` otherwise.
        """
        if self.closing:
            reason = DiscardReason.SHUTDOWN
        elif isinstance(handle.fatal, EnvError):
            reason = DiscardReason.ENV_ERROR
        else:
            reason = DiscardReason.WORKER_LOST
        self.ledger.reclaim(seat.worker_id, handle.link.steps_taken(), reason)

    def _after_loss(self, seat: Seat, handle: WorkerHandle) -> None:
        cause = handle.cause_of_death()
        if isinstance(cause, EnvError | WorkerError) or not (self.started or handle.hello.is_set()):
            # An env that fails for good, the worker's own code that raised, or a first start
            # that fails would fail again: stop.
            log.error("%s", cause)
            self.fail(cause)
            return
        delay = self.budget.next_delay(seat.worker_id, time.monotonic())
        if delay is None:
            error = WorkerRestartError(
                seat.worker_id,
                self.budget.max_restarts,
                self.budget.window_s,
                cause,
                self.last_env_error,
            )
            error.__cause__ = cause
            log.error("%s", error)
            self.fail(error)
            return
        # A hung worker's stack was logged when it was found hung: its first line says enough here.
        shown = str(cause).split("\n", 1)[0] if isinstance(cause, WorkerHung) else cause
        log.warning("%s; replacing it in %.2f s", shown, delay)
        restart = self.tasks.create_task(self._restart(seat, delay, cause), name=f"aiorl-restart-{seat.worker_id}")
        self._restarts.add(restart)
        restart.add_done_callback(self._restarts.discard)

    async def _restart(self, seat: Seat, delay_s: float, cause: AiorlError) -> None:
        await asyncio.sleep(delay_s)
        if self.closing:
            return
        seat.incarnation += 1
        self.stats.worker_restarts += 1
        if self.events is not None:
            self.events.publish(WorkerRestarted(seat.worker_id, cause, seat.incarnation))
        try:
            await self._launch(seat)
        except Exception as exc:  # e.g. EMFILE, fork failure: end the run with a named error
            error = WorkerStartError(f"worker {seat.worker_id} could not be restarted: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            log.error("%s", error)
            self.fail(error)

    async def _watch(self, handle: WorkerHandle) -> None:
        """The watchdog: declare the worker hung when it stays silent too long."""
        check_s = handle.watch.check_every_s
        while not handle.exited.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(check_s):
                    await handle.exited.wait()
            if self.closing:
                return  # close() ends every worker itself
            if handle.exited.is_set():
                return
            verdict = handle.watch.verdict(time.monotonic(), greeted=handle.hello.is_set())
            if not verdict.hung:
                continue
            handle.hang = WorkerHung(handle.worker_id, handle.pid, verdict.silent_s, await handle.link.dump_stack())
            log.error("%s", handle.hang)
            await handle.link.end(grace_s=KILL_WAIT_S)
            return

    def fail(self, error: AiorlError) -> None:
        """End the current run with ``error`` (the first failure wins)."""
        if not self.failure.done():
            self.failure.set_result(error)

    # ---- slots ---------------------------------------------------------------------------
    def release(self, rollout: ReadyRollout) -> None:
        """Give ``rollout``'s slot back to its seat (the consumer is done with it).

        It is granted again to the seat's worker if that one is alive; otherwise it
        stays free for the next worker in the seat.
        """
        seat = self.seats[self.ledger.release(rollout.slot)]
        handle = seat.live()
        if handle is not None and not self.closing and handle.link.grant(rollout.slot):
            self.ledger.grant(seat.worker_id, rollout.slot)

    @property
    def pids(self) -> dict[int, int]:
        """Worker id -> process id of the live workers (a Ray actor's once it said hello)."""
        return {h.worker_id: h.pid for h in self.alive() if h.pid > 0}

    @property
    def nodes(self) -> dict[int, str]:
        """Worker id -> where the workers that said hello run (``"local"``, or a Ray node id)."""
        live = (seat.live() for seat in self.seats.values())
        return {h.worker_id: h.link.node for h in live if h is not None}

    def alive(self) -> list[WorkerHandle]:
        """Current workers that have not exited."""
        handles = (seat.handle for seat in self.seats.values())
        return [h for h in handles if h is not None and not h.exited.is_set()]

    # ---- teardown --------------------------------------------------------------------------
    async def close(self, grace_s: float) -> None:
        """Stop every worker: stop, ``grace_s``, then terminate and kill. Bounded."""
        self.closing = True
        for restart in list(self._restarts):
            restart.cancel()
        for handle in self.alive():
            handle.link.stop()
        if not await self._all_exited(grace_s):
            await asyncio.gather(*(h.link.end(grace_s=KILL_WAIT_S) for h in self.alive()))
        if self._supervisors:  # let them count the unfinished steps of the stopped workers
            await asyncio.wait(list(self._supervisors), timeout=KILL_WAIT_S)
        self.kill_now()

    async def _all_exited(self, timeout_s: float) -> bool:
        waiting = [h.exited.wait() for h in self.alive()]
        if waiting:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await asyncio.gather(*waiting)
        return not self.alive()

    def kill_now(self) -> None:
        """Synchronous last resort (used on every exit path): kill whatever is left."""
        self.closing = True
        for handle in self.alive():
            handle.link.kill_now()


def _env_error(worker_id: int, message: protocol.EnvFailed | protocol.EnvRecovered) -> EnvError:
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


def _worker_error(worker_id: int, message: protocol.WorkerFailed) -> WorkerError:
    error = WorkerError(
        f"{message.error_type}: {message.message} "
        "(raised in the worker outside its env calls: by the policy, action sampling or the worker itself)",
        worker_id=worker_id,
        policy_version=message.policy_version,
        remote_traceback=message.traceback,
    )
    error.__cause__ = RemoteTraceback(message.traceback)
    return error
