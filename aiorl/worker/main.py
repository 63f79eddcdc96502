"""The worker process: an event loop (uvloop where available) serving one trainer.

Lifecycle: attach shared memory, build envs, say :class:`Hello`, then forever
wait for a granted slot, pull newer weights if the store has them, fill the
slot and report :class:`SlotReady`. An env that fails for good is reported as
:class:`EnvFailed`, anything else that raises (the policy, action sampling) as
:class:`WorkerFailed`; either way the worker then exits. Heartbeats go out on a timer; env steps
are also counted on the shared progress board (once per row). The worker stops on a
:class:`Stop` frame, on EOF of its socket, or when its parent process dies
(parent sentinel), so it never outlives the trainer: its event loop notices and stops in
order, and a thread notices too, which ends the worker, its envs' children and the trainer's
shared memory if the loop has not stopped within ``PARENT_GONE_GRACE_S`` (an env call
blocked in a hung simulator). ``SIGUSR1`` dumps its
Python stack into ``spec.local.stack_path`` (the trainer asks before killing a hung
worker).

A worker process leads a session of its own (``setsid`` first thing), so the
processes its envs start (a simulator) are in its process group: the trainer
signals the whole group to end a worker, and kills what is left of it once the
worker has ended, however it ended. An env's ``close()`` (called when the worker
stops) is where it ends its children cleanly; a worker that exits sends SIGTERM to
what they left (which also covers a trainer that died first). Its own session also
keeps a terminal's Ctrl-C from its envs' children: the trainer handles Ctrl-C and
stops the workers in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import multiprocessing
import os
import pickle
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import wait

import torch

import aiorl
from aiorl import protocol
from aiorl.models import tie_to_flat
from aiorl.shm import ProgressBoard, RolloutSlots, WeightStore
from aiorl.shm.segment import unlink_for_dead_owner
from aiorl.worker.async_sampler import AsyncEnvSampler
from aiorl.worker.episodes import EnvStepError, RolloutSummary
from aiorl.worker.sampler import EnvSampler
from aiorl.worker.spec import LocalPlumbing, WorkerSpec
from aiorl.worker.vector_sampler import VectorEnvSampler

EXIT_OK = 0
EXIT_ENV_ERROR = 3
EXIT_WORKER_ERROR = 4
WORKER_ID_VARIABLE = "AIORL_WORKER_ID"
INCARNATION_VARIABLE = "AIORL_WORKER_INCARNATION"
PARENT_GONE_GRACE_S = 3.0
"""How long a worker whose trainer died may take to stop in order before its watch thread ends it."""


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop where uvloop is installed, else asyncio's default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def process_main_of_pickled(spec: bytes, sock: socket.socket) -> None:
    """Entry point of a local worker process: :func:`process_main` of the spec pickled with plain :mod:`pickle`."""
    process_main(pickle.loads(spec), sock)


def process_main(spec: WorkerSpec, sock: socket.socket) -> None:
    """Entry point of a worker process (the ``target`` of the multiprocessing Process)."""
    os.setsid()  # its own session and process group, which what its envs start joins (see below)
    local = _plumbing(spec)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ[WORKER_ID_VARIABLE] = str(spec.worker_id)
    os.environ[INCARNATION_VARIABLE] = str(spec.incarnation)
    torch.set_num_threads(1)
    torch.manual_seed(spec.torch_seed())
    _watch_parent_from_a_thread(local)
    try:
        with open(local.stack_path, "x") as stack_file:  # a fresh file, named by the trainer
            faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=True)
            loop = new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                code = loop.run_until_complete(Worker(spec, sock).serve())
            except Exception:
                if not _trainer_is_gone():
                    raise
                code = EXIT_OK  # killed while this worker started (its memory unlinked already): nobody to tell
            finally:
                loop.close()
    finally:
        _remove_files(local, trainer_gone=_trainer_is_gone())
        _end_own_group()
    sys.exit(code)


def _remove_files(local: LocalPlumbing, *, trainer_gone: bool) -> None:
    """Remove the worker's stack file and, once the trainer is gone, the trainer's shared memory.

    The trainer removes the stack file too, unless it was killed; a trainer killed with its
    resource tracker (a process-group SIGKILL) leaves its segments to the workers.
    """
    with contextlib.suppress(OSError):
        os.unlink(local.stack_path)
    if trainer_gone:
        for name in (local.slots_name, local.weights_name, local.progress_name):
            unlink_for_dead_owner(name)


def _watch_parent_from_a_thread(local: LocalPlumbing) -> None:
    """End this worker if its trainer dies and the worker has not stopped ``PARENT_GONE_GRACE_S`` later.

    The event loop watches the trainer too and stops in order, but an env call that blocks
    (a hung simulator) blocks the loop, and the worker would live, with its envs' children
    and the trainer's shared memory, as long as the call. This daemon thread waits on the
    parent's sentinel; once the trainer is gone and the grace has passed, it removes what
    :func:`process_main` would have, signals the worker's process group (its envs' children
    and itself) and exits.
    """
    parent = multiprocessing.parent_process()
    sentinel = None if parent is None else parent.sentinel
    if sentinel is None:
        return

    def watch() -> None:
        wait([sentinel])
        time.sleep(PARENT_GONE_GRACE_S)  # a worker that stops in order exits meanwhile, ending this thread
        _remove_files(local, trainer_gone=True)
        if os.getpgid(0) == os.getpid():  # its own group (see _end_own_group): the envs' children and itself
            os.killpg(0, signal.SIGTERM)
        os._exit(EXIT_OK)

    threading.Thread(target=watch, name="aiorl-trainer-watch", daemon=True).start()


def _trainer_is_gone() -> bool:
    """Whether the trainer's process has ended (the pipe it keeps open for this worker is closed)."""
    parent = multiprocessing.parent_process()
    return parent is not None and parent.sentinel is not None and not parent.is_alive()


def _end_own_group() -> None:
    """SIGTERM what this worker's envs left in its process group (their ``close()`` has run).

    The trainer kills what is left once it sees the worker end; this also covers a
    trainer that died first. The worker ignores the signal from here on: it is exiting.
    """
    if os.getpgid(0) != os.getpid():  # not the leader of its own group: the group is not its own
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)


def _first(errors: BaseExceptionGroup) -> BaseException:
    """The first exception of a (nested) exception group."""
    first: BaseException = errors
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _plumbing(spec: WorkerSpec) -> LocalPlumbing:
    """The shared memory a worker process attaches to (a spec built for the local backend has it)."""
    if spec.local is None:
        raise ValueError(f"worker {spec.worker_id}: a worker process needs a spec with local plumbing")
    return spec.local


class Worker:
    """One worker's state: its envs, its policy copy, its slots and its socket."""

    def __init__(self, spec: WorkerSpec, sock: socket.socket) -> None:
        self.spec = spec
        self.sock = sock
        self.stopping = asyncio.Event()
        self.granted: asyncio.Queue[int] = asyncio.Queue()
        self.policy = spec.policy
        self.flat = tie_to_flat(self.policy)
        self.flat_np = self.flat.numpy()
        self.version = -1
        self.sampler: EnvSampler | VectorEnvSampler | AsyncEnvSampler | None = None
        self.exit_code = EXIT_OK

    async def serve(self) -> int:
        """Run until told to stop; return the process exit code."""
        reader, self.writer = await asyncio.open_connection(sock=self.sock)
        local = _plumbing(self.spec)
        slots = RolloutSlots.attach(local.slots_name, self.spec.layout, self.spec.num_slots)
        weights = WeightStore.attach(local.weights_name, local.num_weights)
        progress = ProgressBoard.attach(local.progress_name, self.spec.num_workers)
        self._watch_parent()
        try:
            self.version = weights.read_into(self.flat_np)
            try:
                if self.spec.vector:
                    self.sampler = VectorEnvSampler(self.spec, self.policy, progress)
                elif self.spec.acting is None:
                    self.sampler = EnvSampler(self.spec, self.policy, progress)
                else:
                    sampler = AsyncEnvSampler(self.spec, self.policy, self.spec.acting, self._pull(weights), progress)
                    await sampler.start()
                    self.sampler = sampler
            except EnvStepError as error:
                self._report_fatal(error)
                return EXIT_ENV_ERROR
            except Exception as error:  # the policy or aiorl, not an env: say what, then exit
                self._send(protocol.WorkerFailed.of(error, self.version))
                return EXIT_WORKER_ERROR
            self._send(protocol.Hello(self.spec.worker_id, os.getpid(), aiorl.__file__))
            async with asyncio.TaskGroup() as tasks:
                children = [
                    tasks.create_task(self._read_control(reader)),
                    tasks.create_task(self._send_heartbeats()),
                    tasks.create_task(self._collect(slots, weights)),
                ]
                await self.stopping.wait()
                for child in children:
                    child.cancel()
            return self.exit_code
        finally:
            if isinstance(self.sampler, AsyncEnvSampler):
                await self.sampler.aclose()
            elif self.sampler is not None:
                self.sampler.close()
            await self._close_writer()
            slots.close()
            weights.close()
            progress.close()

    def _pull(self, weights: WeightStore) -> Callable[[], int]:
        """A function that copies newer weights into the policy, if any, and returns the version."""

        def pull() -> int:
            if weights.version != self.version:
                self.version = weights.read_into(self.flat_np)
            return self.version

        return pull

    async def _collect(self, slots: RolloutSlots, weights: WeightStore) -> None:
        sampler = self.sampler
        try:
            if isinstance(sampler, AsyncEnvSampler):  # lanes pull weights before every forward pass
                await sampler.run(slots, self.granted, self._report, self._send)
                return
            assert sampler is not None
            pull = self._pull(weights)
            while True:
                slot = await self.granted.get()
                version = pull()
                summary = await sampler.collect(slots[slot], version)
                self._report(slot, summary, version)
        except* EnvStepError as errors:
            first = _first(errors)
            assert isinstance(first, EnvStepError)
            self._report_fatal(first)
            self.exit_code = EXIT_ENV_ERROR
            self.stopping.set()
        except* Exception as errors:  # the policy's forward pass, action sampling: not an env's fault
            self._send(protocol.WorkerFailed.of(_first(errors), self.version))
            self.exit_code = EXIT_WORKER_ERROR
            self.stopping.set()

    def _report(self, slot: int, summary: RolloutSummary, version: int) -> None:
        for env_error in summary.env_errors:
            self._send(env_error)
        self._send(
            protocol.SlotReady(
                slot=slot,
                policy_version=version,
                env_steps=summary.env_steps,
                discarded_steps=summary.discarded_steps,
                episode_returns=summary.episode_returns,
                episode_lengths=summary.episode_lengths,
            ),
        )

    async def _read_control(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                message = await protocol.receive(reader)
            except EOFError:
                break
            if isinstance(message, protocol.Grant):
                self.granted.put_nowait(message.slot)
            elif isinstance(message, protocol.Stop):
                break
        self.stopping.set()

    async def _send_heartbeats(self) -> None:
        while True:
            steps = self.sampler.total_steps if self.sampler else 0
            self._send(protocol.Heartbeat(env_steps=steps))
            try:
                await self.writer.drain()
            except (OSError, RuntimeError):
                self.stopping.set()
                return
            await asyncio.sleep(self.spec.heartbeat_interval_s)

    def _send(self, message: protocol.Message) -> None:
        """Send to the trainer; if it is gone (closed socket), stop quietly."""
        try:
            protocol.send(self.writer, message)
        except (OSError, RuntimeError):  # uvloop raises RuntimeError on a closed transport
            self.stopping.set()

    def _watch_parent(self) -> None:
        parent = multiprocessing.parent_process()
        if parent is not None and parent.sentinel is not None:
            asyncio.get_running_loop().add_reader(parent.sentinel, self.stopping.set)

    def _report_fatal(self, error: EnvStepError) -> None:
        self._send(error.to_message(self.version))

    async def _close_writer(self) -> None:
        # OSError/TimeoutError: the trainer is gone or not reading; nothing left to tell it.
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            await asyncio.wait_for(self.writer.drain(), timeout=1.0)
        self.writer.close()
