"""The local backend: worker processes on this machine, shared memory, one socket each.

The host creates three shared-memory segments (rollout slots, the weight store,
the progress board) in the trainer's process and unlinks them when it closes.
Each worker is a persistent child process started by :mod:`aiorl.backends.local.process`
(forkserver with torch preloaded, or spawn); its link reads its frames from a
socketpair, sees its end through :mod:`aiorl.backends.local.lifetime` within a
millisecond (a pidfd, no polling; a dead forkserver is not taken for dead workers),
asks it for its Python stack with ``SIGUSR1`` and ends it, with what its envs
started, by SIGTERM, then SIGKILL to its process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess

from aiorl import protocol
from aiorl.backends.base import Backend, WorkerHost, WorkerLink, WorkerTemplate
from aiorl.backends.local.lifetime import ExitWatch, kill_group
from aiorl.backends.local.process import start_forkserver, start_worker, worker_context
from aiorl.errors import describe_exit
from aiorl.models import num_weights
from aiorl.rollout import SlotArrays
from aiorl.shm import ProgressBoard, RolloutSlots, WeightStore
from aiorl.shm.segment import ALIGN, check_room
from aiorl.shm.slots import slot_nbytes
from aiorl.worker.spec import LocalPlumbing, WorkerSpec

log = logging.getLogger("aiorl")

KILL_WAIT_S = 2.0
"""Seconds to wait for a process to go after SIGTERM or SIGKILL."""
REAP_WAIT_S = 1.0
"""Longest wait for an ended process's exit code (the forkserver writes it a moment after the end)."""
REAP_RETRY_S = 0.002
"""How often the loop retries reaping meanwhile (it never blocks on a ``join``)."""
STACK_DUMP_WAIT_S = 1.0
"""Seconds to wait for a hung worker's stack dump."""
EOF_BACKSTOP_S = 0.5
"""After a process exits, its socket reports EOF at once; this ends the reader anyway."""


class LocalBackend(Backend):
    """Workers as child processes of the trainer's process (the default)."""

    def open(self, template: WorkerTemplate) -> AbstractAsyncContextManager[WorkerHost]:
        """Create the shared memory, yield the host, unlink the shared memory on exit."""
        return _open_local(template)

    def __repr__(self) -> str:
        return "LocalBackend()"


@contextlib.asynccontextmanager
async def _open_local(template: WorkerTemplate) -> AsyncIterator[WorkerHost]:
    weights = num_weights(template.policy)
    check_room(slot_nbytes(template.layout) * template.num_slots + ALIGN + 4 * weights + 8 * template.num_workers)
    async with contextlib.AsyncExitStack() as stack:
        slots = RolloutSlots.create(template.layout, template.num_slots)
        stack.callback(slots.close)
        store = WeightStore.create(weights)
        stack.callback(store.close)
        progress = ProgressBoard.create(template.num_workers)
        stack.callback(progress.close)
        host = LocalHost(template, slots, store, progress)
        stack.push_async_callback(_shut_down_starter, host.starter)
        await asyncio.get_running_loop().run_in_executor(host.starter, start_forkserver, host.context)  # imports torch
        yield host


async def _shut_down_starter(starter: ThreadPoolExecutor) -> None:
    """End the starter thread, off the loop: a start in flight (7-30 ms, spawn: seconds) finishes first.

    Even when cancelled, this waits for it (bounded): the shared memory it may attach to
    is unlinked next.
    """
    shutdown = asyncio.ensure_future(asyncio.to_thread(starter.shutdown, wait=True, cancel_futures=True))
    try:
        await asyncio.shield(shutdown)
    except asyncio.CancelledError:
        await asyncio.wait({shutdown}, timeout=KILL_WAIT_S)
        raise


class LocalHost(WorkerHost):
    """Starts worker processes that share the host's slots, weights and progress board."""

    def __init__(
        self, template: WorkerTemplate, slots: RolloutSlots, store: WeightStore, progress: ProgressBoard
    ) -> None:
        self.template = template
        self.context: BaseContext = worker_context(template.start_method)
        self.slots = slots
        self.store = store  # the concrete store, whose segment name workers attach to
        self.weights = store
        self.progress = progress
        self.starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiorl-start")
        """Starts processes off the loop: a fork through the forkserver blocks 7-30 ms, spawn seconds."""
        self.forkserver = self.context.get_start_method() == "forkserver"
        self._forkserver_loss_told = False

    def forkserver_lost(self, worker_id: int, pid: int) -> None:
        """(A link's watch saw it.) Say once per loss that the forkserver died and what follows."""
        if not self._forkserver_loss_told:
            self._forkserver_loss_told = True
            log.warning(
                "the forkserver died (seen by worker %d, pid %d): the workers it started keep running, "
                "the next worker start runs a new one",
                worker_id,
                pid,
            )

    async def start_worker(self, worker_id: int, incarnation: int) -> WorkerLink:
        """Start a worker process; its link is connected when this returns."""
        # Only named here: the worker creates the file (a trainer killed before the process
        # existed left one it had created), and removes it when it ends.
        stack_path = os.path.join(
            tempfile.gettempdir(), f"aiorl_{os.getpid()}_w{worker_id}_{secrets.token_hex(8)}.stack"
        )
        self.progress.reset(worker_id)
        process = None
        try:
            process, sock = await self._start_off_loop(self._spec(worker_id, incarnation, stack_path))
            reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            if process is not None:  # started, but we can't talk to it: it must not live on
                _undo_start_off_loop(process, sock)
            with contextlib.suppress(OSError):
                os.unlink(stack_path)
            raise
        self._forkserver_loss_told = False  # the start ran a new forkserver if the last one had died
        return ProcessLink(worker_id, incarnation, process, reader, writer, stack_path, self)

    async def _start_off_loop(self, spec: WorkerSpec) -> tuple[BaseProcess, socket.socket]:
        """Start the process in the starter thread; if cancelled meanwhile, the thread undoes the start."""
        abandoned = threading.Event()

        def start() -> tuple[BaseProcess, socket.socket]:
            process, sock = start_worker(self.context, spec)
            if abandoned.is_set():  # nobody will take it: it must not live on
                _undo_start(process, sock)
                raise _Abandoned
            return process, sock

        started = asyncio.get_running_loop().run_in_executor(self.starter, start)
        try:
            return await asyncio.shield(started)
        except asyncio.CancelledError:
            abandoned.set()  # the thread undoes a start it finishes from now on; one it finished before:
            started.add_done_callback(_undo_finished_start)
            raise

    def _spec(self, worker_id: int, incarnation: int, stack_path: str) -> WorkerSpec:
        local = LocalPlumbing(
            slots_name=self.slots.segment.name,
            weights_name=self.store.segment.name,
            num_weights=self.store.num_weights,
            progress_name=self.progress.segment.name,
            stack_path=stack_path,
        )
        return self.template.worker_spec(worker_id, incarnation, local)


class _Abandoned(Exception):
    """A start whose caller was cancelled, undone in the starter thread."""


def _undo_start(process: BaseProcess, sock: socket.socket) -> None:
    """(In a thread.) Kill a worker nobody will take, with anything its envs started already."""
    sock.close()
    if process.pid is not None and not kill_group(process.pid, signal.SIGKILL):
        process.kill()  # not in a group of its own yet
    process.join(KILL_WAIT_S)
    if process.pid is not None:
        kill_group(process.pid, signal.SIGKILL)  # it may have made its group after the first kill


def _undo_start_off_loop(process: BaseProcess, sock: socket.socket) -> None:
    """Undo a start from the loop: in a thread of its own, since it joins the process."""
    threading.Thread(target=_undo_start, args=(process, sock), name="aiorl-undo-start", daemon=True).start()


def _undo_finished_start(started: asyncio.Future[tuple[BaseProcess, socket.socket]]) -> None:
    """(On the loop.) Undo a start that finished after its caller gave up."""
    if not started.cancelled() and started.exception() is None:
        _undo_start_off_loop(*started.result())


class ProcessLink(WorkerLink):
    """A worker process: its socket, its exit watch and its stack file."""

    def __init__(
        self,
        worker_id: int,
        incarnation: int,
        process: BaseProcess,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stack_path: str,
        host: LocalHost,
    ) -> None:
        self.worker_id = worker_id
        self.incarnation = incarnation
        self.process = process
        """Kept until the process has ended: it holds the pipe the worker watches as its parent's sentinel."""
        self.pid = process.pid or -1
        self.node = "local"
        self.reader = reader
        self.writer = writer
        self.stack_path = stack_path
        self.host = host
        self.exited = asyncio.Event()
        self.exitcode: int | None = None
        self.watch = ExitWatch(
            process,
            forkserver=host.forkserver,
            on_exit=self._on_exit,
            on_orphaned=lambda: host.forkserver_lost(worker_id, self.pid),
        )

    def _on_exit(self) -> None:
        loop = asyncio.get_running_loop()
        self._reap(loop, loop.time() + REAP_WAIT_S)

    def _reap(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Read the exit code without blocking the loop, then release the process.

        The process has ended; its exit code comes a moment later (the forkserver writes
        it after reaping; with spawn we reap it): retry every ``REAP_RETRY_S`` until
        ``deadline``. An orphaned worker's code died with its forkserver: it stays None.
        """
        try:
            self.process.join(0)
            if self.process.exitcode is None and loop.time() < deadline:
                loop.call_later(REAP_RETRY_S, self._reap, loop, deadline)
                return
            self.exitcode = None if self.watch.orphaned else self.process.exitcode
            if self.process.exitcode is not None:
                self.process.close()  # releases the sentinel fd: no fd growth across restarts
        except ValueError:  # closed already
            pass
        self.watch.close()
        self.exited.set()
        loop.call_later(EOF_BACKSTOP_S, self.reader.feed_eof)

    async def receive(self) -> protocol.Message:
        """The next frame from the worker's socket (``EOFError`` once it is closed)."""
        return await protocol.receive(self.reader)

    def arrays(self, slot: int) -> SlotArrays:
        """Views of ``slot`` in the shared rollout segment."""
        return self.host.slots[slot]

    def grant(self, slot: int) -> bool:
        """Send a grant frame."""
        return self._send(protocol.Grant(slot))

    def stop(self) -> None:
        """Send a stop frame."""
        self._send(protocol.Stop())

    def _send(self, message: protocol.Message) -> bool:
        """Send ``message`` unless the connection is already gone (then the worker is too)."""
        if self.writer.is_closing():
            return False
        try:
            protocol.send(self.writer, message)
        except (OSError, RuntimeError):  # uvloop raises RuntimeError on a closed transport
            return False
        return True

    async def end(self, grace_s: float) -> None:
        """SIGTERM, wait ``grace_s``, SIGKILL, wait: never unbounded.

        Each goes to the worker's process group: what its envs started ends with it.
        A stopped process (SIGSTOP, a debugger) cannot act on SIGTERM: it gets SIGKILL at once.
        """
        steps = ((signal.SIGTERM, grace_s), (signal.SIGKILL, KILL_WAIT_S))
        for signum, wait_s in steps[1:] if self.stopped() else steps:
            if self.exited.is_set():
                return
            with contextlib.suppress(OSError):
                self.watch.send_signal(signum)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self.exited.wait()

    def kill_now(self) -> None:
        """SIGKILL to its process group, without waiting: the exit watch reaps it on the loop."""
        if self.exited.is_set():
            return
        with contextlib.suppress(OSError):
            self.watch.send_signal(signal.SIGKILL)

    def steps_taken(self) -> int:
        """The worker's counter on the shared progress board (written after every step)."""
        return self.host.progress.read(self.worker_id)

    def stopped(self) -> bool:
        """Whether the process is stopped (state ``T``: SIGSTOP, or ``t``: traced), as ``/proc`` says."""
        stat = _read_small_file(f"/proc/{self.pid}/stat")
        return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] in ("T", "t") if ")" in stat else False

    async def dump_stack(self) -> str:
        """Ask the worker for its Python stack (faulthandler on SIGUSR1); '' if it can't say.

        A stopped process cannot answer: it is said so at once, without waiting.
        """
        if self.stopped():
            return "(the process is stopped: SIGSTOP or a debugger; no stack)"
        try:
            os.kill(self.pid, signal.SIGUSR1)
        except OSError:
            return ""
        deadline = time.monotonic() + STACK_DUMP_WAIT_S
        text, previous = "", None
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            text = _read_small_file(self.stack_path)
            if text and text == previous:
                break  # the dump stopped growing
            previous = text
        return text.strip()

    def how_it_ended(self) -> str:
        """The exit code or signal, in words."""
        if self.exitcode is None and self.watch.orphaned and self.exited.is_set():
            return (
                "ended with an unknown exit code (the forkserver that started it, which alone could read it, had died)"
            )
        return describe_exit(self.exitcode)

    def close(self) -> None:
        """Close the socket and remove the stack file."""
        self.writer.close()
        with contextlib.suppress(OSError):
            os.unlink(self.stack_path)


def _read_small_file(path: str) -> str:
    """A few kilobytes from a local file (too quick to need a thread); '' if unreadable."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
