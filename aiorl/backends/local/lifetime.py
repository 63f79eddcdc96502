"""Seeing a worker process end, and ending it with whatever its envs started.

**Its end** is judged by the process itself: a pidfd (Linux 5.3+) becomes readable when
the process has ended, whoever its parent is by then. The multiprocessing sentinel alone
is not enough with forkserver: it is a pipe from the forkserver, which writes the exit
code into it, so it also reports end of file when the *forkserver* dies while the worker
runs on. Such a worker is *orphaned*: it keeps working (the pipe it watches as its
parent's sentinel is the trainer's, which stays open), the next start runs a new
forkserver, and its exit code, which only the dead forkserver could have read, will be
unknown. Where there is no pidfd, the sentinel is watched and, once it says the
forkserver is gone, the pid is polled every ``ORPHAN_POLL_S``.

**Its process group**: every worker makes itself the leader of a new session at start
(:func:`aiorl.worker.main.process_main`), so what its envs start (a simulator) shares
its process group. Ending a worker signals the whole group, and once a worker has
ended, however it ended, what is left of its group is killed (SIGKILL): an env's
``close()`` is its chance to end its children cleanly, the group kill ends the rest.
A process that left the group (its own ``setsid``) is not reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
from collections.abc import Callable
from multiprocessing.process import BaseProcess

ORPHAN_POLL_S = 0.1
"""Without a pidfd: how often an orphaned worker's pid is checked (the loop only polls)."""


def kill_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to process group ``pgid``; False if there is no such group (any more)."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:  # the group id is someone else's now: not ours to signal
        return False
    return True


class ExitWatch:
    """Calls ``on_exit`` once, on the loop, when one worker process has ended.

    Args:
        process: the started worker.
        forkserver: whether it came from a forkserver (its sentinel then also reports the
            forkserver's death).
        on_exit: called once the process has ended.
        on_orphaned: called if the forkserver dies while the process runs on.
    """

    def __init__(
        self,
        process: BaseProcess,
        *,
        forkserver: bool,
        on_exit: Callable[[], None],
        on_orphaned: Callable[[], None],
    ) -> None:
        self.pid = process.pid or -1
        self.sentinel = process.sentinel
        self.forkserver = forkserver
        self.on_exit = on_exit
        self.on_orphaned = on_orphaned
        self.orphaned = False
        """The forkserver died while the process ran: its exit code is unknown."""
        self.ended = False
        self.pidfd = _open_pidfd(self.pid)
        self._loop = asyncio.get_running_loop()
        self._watched: set[int] = set()
        if self.pidfd is not None:
            self._watch(self.pidfd, self._end)
        if self.pidfd is None or forkserver:
            self._watch(self.sentinel, self._on_sentinel)

    def running(self) -> bool:
        """Whether the process has not ended (asked of the process, not of its forkserver)."""
        if self.ended:
            return False
        if self.pidfd is not None:
            return not _readable(self.pidfd)
        return _pid_running(self.pid)

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the process's group: it and what its envs started.

        Before it has a group of its own, to it alone; once it has ended, to nothing.
        """
        if not self.running() or kill_group(self.pid, signum):
            return
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signum)
            else:
                os.kill(self.pid, signum)

    def close(self) -> None:
        """Stop watching and release the pidfd (once the process has ended)."""
        for fd in list(self._watched):
            self._unwatch(fd)
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def _watch(self, fd: int, callback: Callable[[], None]) -> None:
        self._loop.add_reader(fd, callback)
        self._watched.add(fd)

    def _unwatch(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        self._watched.discard(fd)

    def _on_sentinel(self) -> None:
        self._unwatch(self.sentinel)
        if not self.forkserver or not self.running():
            self._end()
            return
        self.orphaned = True  # end of file from the forkserver, while the worker runs on
        self.on_orphaned()
        if self.pidfd is None:
            self._loop.call_later(ORPHAN_POLL_S, self._poll)

    def _poll(self) -> None:
        if self.ended:
            return
        if _pid_running(self.pid):
            self._loop.call_later(ORPHAN_POLL_S, self._poll)
        else:
            self._end()

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        for fd in list(self._watched):
            self._unwatch(fd)
        kill_group(self.pid, signal.SIGKILL)  # what its envs left behind goes with it
        self.on_exit()


def _open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``, or None where the platform has none (not Linux, or Linux < 5.3)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None or pid <= 0:
        return None
    try:
        return pidfd_open(pid)
    except ProcessLookupError:  # ended (and reaped) already
        return None
    except OSError:  # ENOSYS: an older kernel
        return None


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _pid_running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (without a pidfd; pid reuse within a poll aside)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return True  # no /proc: the kill above is all we know
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] not in ("Z", "X")
