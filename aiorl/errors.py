"""One exception tree for everything aiorl raises on purpose.

Every error derives from :class:`AiorlError`. Configuration problems are also
``ValueError`` so that ``except ValueError`` in user code keeps working.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Iterable
from typing import Any, TypeVar


class AiorlError(Exception):
    """Base class of every error aiorl raises on purpose."""


class ConfigError(AiorlError, ValueError):
    """A configuration value is invalid.

    Raised at construction time, before any process starts. The message names
    every offending field and its value: the problems joined by ``"; "``, each one
    on its own in :attr:`problems` (the CLI prints one per line).
    """

    def __init__(self, problems: list[str] | str) -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.problems: list[str] = list(problems)
        super().__init__("; ".join(self.problems))


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` naming the closest of ``known`` to a mistyped ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


Config = TypeVar("Config", bound=type)


def suggest_unknown_options(cls: Config) -> Config:
    """Make ``cls(...)`` (a keyword-only dataclass) reject unknown options with a :class:`ConfigError`.

    ``PPO(learnig_rate=1e-3)`` then says ``learnig_rate=0.001 is not a PPO option; did you
    mean 'learning_rate'?``, as ``Trainer`` does for its options, instead of Python's plain
    ``TypeError``. Apply it on top of ``@dataclass`` (the algorithm configs, ``TrainerConfig``).
    """
    init = cls.__init__
    known = tuple(f.name for f in dataclasses.fields(cls))

    @functools.wraps(init)
    def __init__(self: Any, **options: Any) -> None:
        unknown = sorted(name for name in options if name not in known)
        if unknown:
            raise ConfigError(
                [
                    f"{name}={options[name]!r} is not a {cls.__name__} option{did_you_mean(name, known)}"
                    for name in unknown
                ]
            )
        init(self, **options)

    cls.__init__ = __init__  # type: ignore[misc]
    return cls


class EnvError(AiorlError):
    """An environment raised inside a worker.

    The remote traceback is kept as text in :attr:`remote_traceback` and as the
    ``__cause__`` of this exception.
    """

    def __init__(
        self,
        message: str,
        *,
        worker_id: int,
        env_index: int | None = None,
        step: int | None = None,
        policy_version: int | None = None,
        remote_traceback: str = "",
    ) -> None:
        self.worker_id = worker_id
        self.env_index = env_index
        self.step = step
        self.policy_version = policy_version
        self.remote_traceback = remote_traceback
        where = f"worker {worker_id}"
        if env_index is not None:
            where += f", env {env_index}"
        if step is not None:
            where += f", step {step}"
        if policy_version is not None:
            where += f", policy version {policy_version}"
        super().__init__(f"{where}: {message}")


class WorkerError(AiorlError):
    """A worker's own code raised outside its envs: the policy's forward pass, action sampling.

    The run stops (a replacement worker would run the same code on the same weights). The
    remote traceback is kept as text in :attr:`remote_traceback` and as the ``__cause__``.
    """

    def __init__(
        self, message: str, *, worker_id: int, policy_version: int | None = None, remote_traceback: str = ""
    ) -> None:
        self.worker_id = worker_id
        self.policy_version = policy_version
        self.remote_traceback = remote_traceback
        version = "" if policy_version is None else f", policy version {policy_version}"
        super().__init__(f"worker {worker_id}{version}: {message}")


class RemoteTraceback(Exception):
    """Carries a traceback formatted in another process (used as ``__cause__``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)

    def __str__(self) -> str:
        return "\n" + str(self.args[0])


class WorkerCrashed(AiorlError):
    """A worker process died: killed by a signal, a non-zero exit, or a broken pipe."""

    def __init__(self, worker_id: int, pid: int | None, cause: str) -> None:
        self.worker_id = worker_id
        self.pid = pid
        self.cause = cause
        super().__init__(f"worker {worker_id} (pid {pid}) died: {cause}")


class WorkerHung(AiorlError):
    """A worker sent no heartbeat for ``worker_timeout_s``; :attr:`stack` is where it hung."""

    def __init__(self, worker_id: int, pid: int | None, silent_s: float, stack: str) -> None:
        self.worker_id = worker_id
        self.pid = pid
        self.silent_s = silent_s
        self.stack = stack
        where = f"\nits Python stack when it was stopped:\n{stack}" if stack else ""
        super().__init__(f"worker {worker_id} (pid {pid}) hung: no heartbeat for {silent_s:.1f} s{where}")


class WorkerRestartError(AiorlError):
    """Workers were lost more than ``max_restarts`` times within ``restart_window_s``.

    :attr:`last_cause` (also the ``__cause__``) says how the last worker was lost;
    :attr:`last_env_error` is the last env error any worker reported, if any.
    """

    def __init__(
        self,
        worker_id: int,
        max_restarts: int,
        window_s: float,
        last_cause: AiorlError,
        last_env_error: EnvError | None,
    ) -> None:
        self.worker_id = worker_id
        self.last_cause = last_cause
        self.last_env_error = last_env_error
        message = (
            f"worker {worker_id} lost once more after {max_restarts} restart{'' if max_restarts == 1 else 's'} "
            f"within {window_s:g} s "
            f"(max_restarts={max_restarts}, restart_window_s={window_s:g}); last cause: {last_cause}"
        )
        if last_env_error is not None:
            message += f"; last env error: {last_env_error}"
        super().__init__(message)


class WorkerStartError(AiorlError):
    """A worker did not say hello within the start deadline, or failed while starting."""


class TrainerClosed(AiorlError):
    """The trainer was closed (``aclose``/``async with`` exit) while ``run()`` was in progress."""


class LearnerError(AiorlError):
    """The learner raised, or produced a non-finite loss; the run stops."""


class EvaluationTimeout(AiorlError, TimeoutError):
    """Evaluation episodes took longer than their wall-clock limit (``timeout_s``).

    The message names the env, the limit and how far evaluation got.
    """


class CheckpointError(AiorlError):
    """A checkpoint file is missing, unreadable, or not an aiorl checkpoint (the message says which)."""


def describe_exit(exitcode: int | None) -> str:
    """Describe a process exit code the way a user wants to read it."""
    import signal

    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (possibly out of memory)" if -exitcode == signal.SIGKILL else ""
        return f"killed by {name} (signal {-exitcode}){hint}"
    return f"exited with code {exitcode}"
