"""Named shared-memory segments, created and unlinked by the main process.

On Python < 3.13 the multiprocessing resource tracker may unlink a segment that
another process still uses, so only the trainer's process creates and unlinks;
workers attach by name and merely close their mapping. The one exception is a
trainer that died without unlinking (SIGKILL to its whole process group kills its
resource tracker too): its workers, which live in sessions of their own, unlink its
segments on their way out (:func:`unlink_for_dead_owner`). Every name starts with
``aiorl_`` so leaks are easy to spot in ``/dev/shm``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from multiprocessing import resource_tracker, shared_memory

import numpy as np

from aiorl.errors import ConfigError

PREFIX = "aiorl_"
ALIGN = 64


def align(nbytes: int) -> int:
    """Round ``nbytes`` up to a cache-line multiple."""
    return -(-nbytes // ALIGN) * ALIGN


SHM_DIR = "/dev/shm"
"""Where POSIX shared memory lives on Linux (a tmpfs; Docker's default is 64 MiB: ``--shm-size``)."""


def check_room(nbytes: int, directory: str = SHM_DIR) -> None:
    """Raise :class:`~aiorl.errors.ConfigError` if ``directory`` has less than ``nbytes`` free.

    Segments are created sparse (``ftruncate``) and filled later: without this check a
    full ``/dev/shm`` shows up only as SIGBUS in a worker writing its first rollout.
    """
    try:
        stat = os.statvfs(directory)
    except OSError:  # no such tmpfs here (not Linux): nothing to check
        return
    free = stat.f_bavail * stat.f_frsize
    if nbytes > free:
        raise ConfigError(
            f"the trainer's shared memory needs {nbytes:,} bytes but {directory} has {free:,} free: lower "
            "envs_per_worker, rollout_length or slots_per_worker, or give the machine more shared memory "
            "(Docker: --shm-size)"
        )


class Segment:
    """One shared-memory segment and typed numpy views into it.

    Create with :meth:`create` (main process) or :meth:`attach` (workers).
    """

    def __init__(self, shm: shared_memory.SharedMemory, owner: bool) -> None:
        self._shm = shm
        self.owner = owner
        self.name: str = shm.name

    @classmethod
    def create(cls, nbytes: int, purpose: str) -> Segment:
        """Create a new zero-filled segment named ``aiorl_<pid>_<random>_<purpose>``."""
        name = f"{PREFIX}{os.getpid()}_{secrets.token_hex(4)}_{purpose}"
        # The tracker unlinks the segment if this process is killed; starting it takes ~50 ms,
        # which SharedMemory would otherwise spend after creating the segment, unprotected.
        resource_tracker.ensure_running()
        return cls(shared_memory.SharedMemory(name=name, create=True, size=max(nbytes, 1)), True)

    @classmethod
    def attach(cls, name: str) -> Segment:
        """Map an existing segment by name (never unlinks it)."""
        if sys.version_info >= (3, 13):
            shm = shared_memory.SharedMemory(name=name, track=False)
        else:  # registering twice with the shared tracker is a no-op (it keeps a set)
            shm = shared_memory.SharedMemory(name=name)
        return cls(shm, False)

    def ndarray(self, offset: int, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """A numpy view of ``shape``/``dtype`` starting ``offset`` bytes into the segment."""
        buf = self._shm.buf
        assert buf is not None, "segment is closed"
        return np.ndarray(shape, dtype=dtype, buffer=buf, offset=offset)

    def close(self) -> None:
        """Unmap (and, in the owning process, unlink) the segment. Idempotent."""
        if self.owner:
            with contextlib.suppress(FileNotFoundError):
                self._shm.unlink()
            self.owner = False
        # BufferError: numpy views are still alive somewhere; the mapping goes with
        # them, and the name is already unlinked, so nothing outlives the process.
        with contextlib.suppress(BufferError):
            self._shm.close()


def unlink_for_dead_owner(name: str) -> None:
    """Unlink segment ``name`` because the process that created it is dead (idempotent).

    Only for a worker whose trainer is gone: nobody else will unlink it. Mappings that
    are still open stay valid until they are closed.
    """
    try:
        segment = Segment.attach(name)
    except FileNotFoundError:  # unlinked already (by the trainer's tracker or another worker)
        return
    with contextlib.suppress(FileNotFoundError):
        segment._shm.unlink()  # also unregisters it from the resource tracker (Python < 3.13)
    segment.close()
