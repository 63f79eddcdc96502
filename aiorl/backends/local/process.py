"""Starting worker processes: aiorl's own multiprocessing context, never fork.

Forking after torch started its threads or after an event loop runs is unsafe,
so workers start through a forkserver that has torch and gymnasium preloaded
(measured per worker: 8 MiB private memory and 0.02 s to start, against
146 MiB and 1.9 s with spawn); where forkserver is missing, spawn. The context
is aiorl's own object: the process-wide default start method is left alone. CPython
keeps one forkserver process per interpreter, though: if the application started
it before aiorl did, aiorl's preload list is not applied (workers then import torch
themselves, slower but correct), and a worker that imported aiorl from another
path than the trainer is refused at hello.

Why not ``aiomultiprocess.Process``: it always uses aiomultiprocess's module-global
context (changing it changes it for the whole application) and its constructor
starts a ``multiprocessing.Manager`` server process on first use that lives until
the interpreter exits, an extra child left behind after the trainer closes. The
child side it provides (make a loop with ``loop_initializer``, run the coroutine)
is what :func:`aiorl.worker.main.process_main` does in a dozen lines.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import pickle
import socket
from collections.abc import Iterator
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess

from aiorl import WORKER_SIDE_VARIABLE
from aiorl.worker.main import process_main_of_pickled
from aiorl.worker.spec import WorkerSpec

PRELOAD = ["aiorl", "torch", "gymnasium", "aiorl.worker.main"]
"""What the forkserver imports before it serves: ``aiorl`` first, which ignores Ctrl-C there
(see :mod:`aiorl`) before the seconds of torch's import."""


def worker_context(start_method: str | None = None) -> BaseContext:
    """The multiprocessing context workers start from (forkserver with preload, else spawn)."""
    if start_method is None:
        methods = multiprocessing.get_all_start_methods()
        start_method = "forkserver" if "forkserver" in methods else "spawn"
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        context.set_forkserver_preload(PRELOAD)  # type: ignore[attr-defined]
    return context


def start_forkserver(context: BaseContext) -> None:
    """Start the forkserver now if ``context`` uses one (blocking: it imports the preload first).

    The first start in an interpreter takes 1.5-2.7 s while torch is imported; the trainer
    calls this in a thread so its event loop is not held up (later worker starts take
    milliseconds).
    """
    if context.get_start_method() == "forkserver":
        with _worker_side_environment():  # the forkserver imports aiorl as a worker would
            multiprocessing.forkserver.ensure_running()


@contextlib.contextmanager
def _worker_side_environment() -> Iterator[None]:
    """Processes started meanwhile get ``AIORL_WORKER_SIDE=1``: their ``import aiorl`` stays lazy.

    (Set in this process's environment for the duration of the start, which happens in
    the backend's starter thread; a process another thread starts meanwhile inherits it,
    which only makes its ``import aiorl`` lazy.)
    """
    previous = os.environ.get(WORKER_SIDE_VARIABLE)
    os.environ[WORKER_SIDE_VARIABLE] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(WORKER_SIDE_VARIABLE, None)
        else:
            os.environ[WORKER_SIDE_VARIABLE] = previous


def start_worker(context: BaseContext, spec: WorkerSpec) -> tuple[BaseProcess, socket.socket]:
    """Start one worker process; return it and the trainer's end of its socketpair."""
    ours, theirs = socket.socketpair()
    try:
        process = context.Process(  # type: ignore[attr-defined]
            target=process_main_of_pickled,
            # The spec as plain pickle bytes: multiprocessing's own pickler has torch move the
            # policy template's tensors into shared memory, each held open by this process (15
            # file descriptors of /dev/shm/torch_* per trainer, for as long as it lived).
            args=(pickle.dumps(spec), theirs),
            name=f"aiorl-worker-{spec.worker_id}",
            daemon=True,
        )
        with _worker_side_environment():  # spawn: the new interpreter imports aiorl as a worker
            process.start()
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()  # the child has its own copy; ours must go for EOF to work
    return process, ours
