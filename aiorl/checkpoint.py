"""Checkpoint files: written atomically, read back with a clear error, saved during a run.

A checkpoint is one file (``torch.save`` of a dict, see :data:`FORMAT`) holding everything
needed to continue training exactly where it stopped, or to act with the policy:

- the env recipe and its spaces, the algorithm config and the trainer's config;
- the policy's architecture (the module object) and its trained weights, including the
  observation normaliser's running statistics when ``normalize_observations`` is on;
- the optimiser's state (Adam's moments and step counts);
- the counters (steps collected, trained and discarded by reason, episodes, updates,
  restarts, env errors, the recent returns behind ``mean_return``), the policy version and
  the seconds trained so far;
- the state of the trainer's own random-number generator (the learner's, which orders the
  minibatches) and its device kind: loaded onto another kind (a GPU run resumed on a CPU),
  the generator is seeded from the saved state instead, as the two kinds' states differ;
  the process's global generators are not the trainer's to save or restore;
- the run in progress (its step budget, target and where it started), so
  :meth:`aiorl.Trainer.resume` can continue it with the same learning-rate schedule.

Files are written to a temporary file beside the target, flushed to disk (``fsync``) and
renamed over the target, so a crash or a kill at any moment leaves either the previous
checkpoint or the new one, never a torn file.

Checkpoints are Python pickles (like ``torch.save(model)``): load only files you trust.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import glob
import io
import logging
import os
import secrets
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aiorl.errors import CheckpointError

log = logging.getLogger("aiorl")

FORMAT = "aiorl.checkpoint"
"""The value of a checkpoint's ``"format"`` key."""
FORMAT_VERSION = 2
"""The layout version written into ``"format_version"``; readers refuse newer ones.
Version 2 saves the learner's generator (``rng["learner"]``) where version 1 saved the
process's global generators."""
CONTENTS = (
    "env",
    "observation_space",
    "action_space",
    "algo",
    "config",
    "policy_module",
    "learner",
    "policy_version",
    "stats",
    "rng",
    "launches",
    "train_time_s",
)
"""The keys every checkpoint holds besides its format marks (``run`` and ``reward_normalizer`` may be missing)."""
CHECKPOINT_NAME = "checkpoint.pt"
"""The file name used inside a log directory."""
WRITE_CHUNK = 1 << 20
WRITE_WAIT_S = 60.0
"""How long the end of a cancelled run waits for a checkpoint write in progress."""


@dataclass(frozen=True, slots=True)
class RunPlan:
    """The ``run()`` a checkpoint was taken in: what :meth:`aiorl.Trainer.resume` continues.

    Attributes:
        total_steps: the run's step budget.
        target_return: the run's target mean return, if any.
        trained_at_start: the trainer's ``steps_trained`` when the run began.
    """

    total_steps: int
    target_return: float | None
    trained_at_start: int

    def remaining(self, steps_trained: int) -> int:
        """Env steps left in the budget once ``steps_trained`` steps are trained."""
        return max(self.total_steps - (steps_trained - self.trained_at_start), 0)


DIRECTORY_ENDINGS = tuple(sep for sep in (os.sep, os.altsep, "/") if sep)
"""How a ``str`` path that names a directory ends (``Path`` drops the separator)."""


def names_a_directory(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a ``str`` ending in a path separator (``"runs/new/"``): a directory, existing or not."""
    return isinstance(path, str) and path.endswith(DIRECTORY_ENDINGS)


def checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """``path`` itself, or ``path/checkpoint.pt`` when ``path`` is a directory (a log directory).

    A ``str`` ending in a path separator names a directory even before it exists.
    """
    resolved = Path(path)
    if names_a_directory(path):
        return resolved / CHECKPOINT_NAME
    try:
        is_dir = resolved.is_dir()
    except OSError:  # a name too long, say: not a directory, and writing there says why
        is_dir = False
    return resolved / CHECKPOINT_NAME if is_dir else resolved


def prepare_checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """Make sure checkpoints can be written to ``path``; return it.

    Creates the directory (and its parents) and really writes and removes the
    temporary file that :func:`write_checkpoint` writes through, so that a read-only
    directory, a full disk or a path under a regular file is found before a run starts
    rather than at its first save (a permission check alone would say yes to root).
    Temporary files that killed writers left beside ``path`` are removed
    (:func:`remove_abandoned_temporaries`).

    Raises:
        CheckpointError: the file cannot be written there, or ``path`` is a directory (or a
            ``str`` ending in a path separator); the message names the path and the reason.
    """
    if names_a_directory(path):  # Path() would drop the separator and write a file of that name
        raise CheckpointError(f"checkpoint path {str(path)!r} names a directory; name a file such as {CHECKPOINT_NAME}")
    target = Path(path)
    temporary = _temporary_beside(target)
    try:
        if target.is_dir():
            raise CheckpointError(
                f"checkpoint path {str(target)!r} is a directory; name a file such as {CHECKPOINT_NAME}"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned_temporaries(target)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, FORMAT.encode())
        finally:
            os.close(fd)
            temporary.unlink()
    except OSError as exc:
        reason = f"{str(exc.filename)!r} is not a directory" if isinstance(exc, FileExistsError) else str(exc)
        raise CheckpointError(f"checkpoints cannot be written to {str(target)!r}: {reason}") from exc
    return target


def copy_tensors(state: Any) -> Any:
    """``state`` with each tensor cloned on its own (dicts, lists and tuples rebuilt, other values kept).

    ``copy.deepcopy`` of a learner's state copied the whole flat storage behind every view
    of its weights, at 2-14 ms for the default MLP; this takes 0.15-0.6 ms. Values other
    than tensors are kept as they are: what changes during training (the counters) is
    copied where it is taken.
    """
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {key: copy_tensors(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(copy_tensors(value) for value in state)
    return state


def write_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically and durably; return the path.

    The bytes go to a temporary file of its own in the same directory (``.NAME.<unique>.tmp``:
    two writers to one path never write into the same file, the last rename wins and the
    file is always whole), are flushed with ``fsync``, then the file is renamed over ``path``
    and the directory is flushed too.

    Error handling:
        An ``OSError`` (disk full, permissions) propagates; ``path`` keeps its
        previous content and the temporary file is removed.
    """
    target = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    temporary = _temporary_beside(target)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            _write_all(fd, buffer.getbuffer())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _fsync_directory(target.parent)
    return target


ABANDONED_AFTER_S = 600.0
"""A temporary checkpoint file untouched this long, whose writer's pid is not running here, is removed."""


def remove_abandoned_temporaries(target: Path) -> list[Path]:
    """Remove the temporary files that writers killed mid-save left beside ``target``; return them.

    A writer killed between creating its temporary file and renaming it (SIGKILL, a power
    cut) leaves a checkpoint-sized hidden file, ``.NAME.<pid>-<token>.tmp``. One is taken for
    abandoned when no process with that pid runs on this machine and the file has not been
    modified for ``ABANDONED_AFTER_S`` (a writer on another machine sharing the directory
    writes into its file all along). Files that cannot be removed are left.
    """
    abandoned = []
    for temporary in target.parent.glob(f".{glob.escape(target.name)}.*-*.tmp"):
        pid_text = temporary.name[len(target.name) + 2 :].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == 0 or _running(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            if time.time() - temporary.stat().st_mtime >= ABANDONED_AFTER_S:
                temporary.unlink()
                abandoned.append(temporary)
    if abandoned:
        log.info("removed %d temporary checkpoint file(s) of killed writers: %s", len(abandoned), abandoned)
    return abandoned


def _running(pid: int) -> bool:
    """Whether a process with ``pid`` runs on this machine (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True


def _temporary_beside(target: Path) -> Path:
    """A fresh hidden file name in ``target``'s directory, for this write alone."""
    return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _write_all(fd: int, data: memoryview) -> None:
    offset = 0
    while offset < len(data):
        offset += os.write(fd, data[offset : offset + WRITE_CHUNK])


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (directories cannot be opened for this on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platform without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint file (or ``DIR/checkpoint.pt``) onto the CPU.

    Raises:
        CheckpointError: the file is missing, is not a readable checkpoint (truncated,
            bytes that fail their checksums, not a torch file), or was written by a newer
            aiorl; the message names the path.
    """
    target = checkpoint_path(path)
    if not target.is_file():
        raise CheckpointError(f"checkpoint {str(target)!r} does not exist")
    _check_archive(target)
    try:
        state = torch.load(target, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {str(target)!r} could not be read ({type(exc).__name__}: {exc})") from exc
    return check_state(state, repr(str(target)))


def check_state(state: object, where: str = "the state") -> dict[str, Any]:
    """``state`` if it is a whole aiorl checkpoint of a format this aiorl reads.

    Raises:
        CheckpointError: it is not one (``where`` names it: the file, or ``"the state"``
            for a mapping given to :meth:`aiorl.Trainer.load`), is of a newer format, or
            lacks part of :data:`CONTENTS`.
    """
    if not (isinstance(state, dict) and state.get("format") == FORMAT):
        raise CheckpointError(f"{where} is not an aiorl checkpoint")
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {where} has format_version={version!r}; this aiorl reads up to {FORMAT_VERSION}"
        )
    missing = [key for key in CONTENTS if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {where} lacks {', '.join(missing)}: it is not a complete aiorl checkpoint")
    return state


def _check_archive(target: Path) -> None:
    """Raise if ``target`` is a torch zip archive that is cut short or fails its checksums.

    ``torch.load`` reads the entries without checking their CRCs: flipped bytes in the
    weights would load as other weights. A file that is no zip archive at all is left to
    ``torch.load`` (and the format check) to name.

    Raises:
        CheckpointError: truncated, or an entry's checksum does not match.
    """
    try:
        with zipfile.ZipFile(target) as archive:
            corrupt = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError):
        with open(target, "rb") as file:
            zipped = file.read(4) == b"PK\x03\x04"  # begins as one: its end (the index) is missing
        if zipped:
            raise CheckpointError(f"checkpoint {str(target)!r} is truncated or corrupt (no zip index)") from None
        return
    if corrupt is not None:
        raise CheckpointError(f"checkpoint {str(target)!r} is corrupt: {corrupt} fails its checksum")


class Checkpointer:
    """Saves a trainer's state to one file during a run: periodically, and when the run ends.

    :meth:`after_update` is called on the event loop after every learner update, when the
    learner is idle: it notes the cheap part of the state (``mark``: counters, versions)
    and, after the run's first update (so that a run killed early can be resumed) and then
    every ``interval_s``, takes a full snapshot (``capture``), has its tensors copied
    (:func:`copy_tensors`, so it stays consistent while training goes on) and hands it to a
    writer thread; the learner's state is copied only then, and in ``copy_in`` where given:
    the learner's own executor, whose one thread copies before it starts the next update,
    so a big model's copy (~25 ms for 2M parameters) does not hold up the event loop.
    :meth:`finish` writes the state when the run ends, whichever way: normally, cancelled
    (Ctrl-C) or failed, with the counters as they are then (the steps collected since the
    last update included, as discarded) and the learner as it is then (after a learner
    failure, restored to the last good update). If the learner is still busy then (a run cancelled three times: after a
    second cancellation the run still waits for the update, see ``Consumer.settle``), the
    file keeps the last snapshot written.

    Args:
        path: the checkpoint file.
        capture: builds the state to save from the counters ``mark`` returned after the
            last update (``None`` before the first), on the loop; raises ``RuntimeError``
            when no consistent state can be taken now. Its tensors may be the live ones:
            they are copied before the learner's next update.
        mark: notes the cheap part of the state after an update.
        interval_s: seconds between periodic writes.
        clock: the time source.
        on_saved: called on the loop with the path and the state after each write.
        copy_in: where the tensors of a snapshot (periodic or final) are copied: the
            learner's executor (one thread, first in first out); ``None`` (or shut
            down): on the loop.

    Resource handling:
        One writer thread, ended by :meth:`finish`, which waits for a write in progress
        even when the run is cancelled meanwhile (up to ``WRITE_WAIT_S``; a second
        cancellation stops waiting, and the write then completes on its own: the rename
        is atomic either way).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        capture: Callable[[Any], dict[str, Any]],
        *,
        mark: Callable[[], Any] = lambda: None,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_saved: Callable[[Path, dict[str, Any]], None] | None = None,
        copy_in: Executor | None = None,
    ) -> None:
        self.path = Path(path)
        self._on_saved = on_saved
        self.interval_s = interval_s
        self._capture = capture
        self._copy_in = copy_in
        self._mark = mark
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiorl-checkpoint")
        self._pending: Future[tuple[Path, dict[str, Any]]] | None = None
        self._marked: Any = None
        self._updated = False  # an update happened since the last snapshot was written
        self._failed = False  # the first write failed: the run ends with a CheckpointError
        self._last_write = clock()
        self.saved = 0
        """Checkpoints written so far."""
        self.snapshots = 0
        """Full snapshots taken so far (each copies the learner's state)."""

    def after_update(self) -> None:
        """Note the counters; snapshot and write when ``interval_s`` has passed and no write is in flight.

        Raises:
            CheckpointError: the run's first write failed (the path names where): a run
                that cannot save stops early instead of training for nothing. A later
                write that fails (a full disk) is logged, and tried again ``interval_s``
                later; the file keeps the last state written.
        """
        self._check_last_write()
        self._marked = self._mark()
        self._updated = True
        due = self.snapshots == 0 or self._clock() - self._last_write >= self.interval_s
        if due and (self._pending is None or self._pending.done()):
            self._submit(self._snapshot(copy_in=self._copy_in))

    def _check_last_write(self) -> None:
        """Raise if the first write failed; log a later failed write (once)."""
        write = self._pending
        if write is None or not write.done():
            return
        self._pending = None
        error = None if write.cancelled() else write.exception()
        if error is None:
            return
        if self.saved == 0:
            self._failed = True
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} could not be written ({type(error).__name__}: {error})"
            ) from error
        log.error(
            "could not write the checkpoint %s (%s: %s); trying again later", self.path, type(error).__name__, error
        )

    def _snapshot(self, *, finished: bool = False, copy_in: Executor | None = None) -> Future[dict[str, Any]]:
        """Capture the state now (on the loop) and copy its tensors in ``copy_in`` (or now)."""
        state = self._capture(self._marked)
        self.snapshots += 1
        self._updated = False
        if finished:
            state["run"] = None
        if copy_in is not None:
            with contextlib.suppress(RuntimeError):  # shut down (the trainer is closing): copy here
                return copy_in.submit(copy_tensors, state)
        copied: Future[dict[str, Any]] = Future()
        copied.set_result(copy_tensors(state))
        return copied

    def _submit(self, copied: Future[dict[str, Any]]) -> Future[tuple[Path, dict[str, Any]]]:
        self._last_write = self._clock()
        self._pending = self._executor.submit(self._write, copied)
        if self._on_saved is not None:
            self._pending.add_done_callback(functools.partial(self._saved, asyncio.get_running_loop()))
        return self._pending

    def _saved(self, loop: asyncio.AbstractEventLoop, write: Future[tuple[Path, dict[str, Any]]]) -> None:
        """In the writer thread: tell ``on_saved`` (on the loop) about a successful write."""
        if write.cancelled() or write.exception() is not None or self._on_saved is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody listens any more
            loop.call_soon_threadsafe(self._on_saved, *write.result())

    def _write(self, copied: Future[dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
        """In the writer thread: wait for the copy (made in ``copy_in``), write it."""
        state = copied.result()
        path = write_checkpoint(state, self.path)
        self.saved += 1
        log.debug("checkpoint %s: policy version %d", path, state["policy_version"])
        return path, state

    async def finish(self, *, finished: bool) -> None:
        """Write the final state (marked finished when the run ended normally); end the thread.

        Raises:
            CheckpointError: the final write of a run that ended normally failed. After
                a failed or cancelled run a failed write is only logged, so the run's own
                exception is the one that propagates; after the first write failed (the
                run's error then says why), no final write is tried.
        """
        try:
            if self._pending is not None:
                with contextlib.suppress(Exception):
                    await self._written(self._pending)
            if self._failed or not (finished or self._updated):
                return
            self._marked = self._mark()  # the counters now: with the steps collected since the last update
            try:  # the run is over: the learner's thread is idle, and copies
                copied = self._snapshot(finished=finished, copy_in=self._copy_in)
            except RuntimeError as exc:
                log.warning("no final checkpoint (%s); %s keeps the last one", exc, self.path)
                return
            try:
                await self._written(self._submit(copied))
            except Exception as exc:
                message = f"checkpoint {str(self.path)!r} could not be written ({type(exc).__name__}: {exc})"
                if finished:
                    raise CheckpointError(message) from exc
                log.error("%s; the run's last checkpoint is the one written before", message)
        finally:
            self._executor.shutdown(wait=False)

    @staticmethod
    async def _written(write: Future[Any]) -> Any:
        """Wait for ``write``; cancelled meanwhile, wait for it still (at most ``WRITE_WAIT_S``), then re-raise.

        So the writer thread has finished when the run ends: nothing writes the file after
        the application moved on. A second cancellation stops waiting.
        """
        try:
            return await asyncio.shield(asyncio.wrap_future(write))
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(write)), WRITE_WAIT_S)
            raise
