"""Episode and fault bookkeeping of one env, shared by the synchronous and the async sampler.

Both samplers keep, per env, the running episode (return, length, discounted return for
reward normalisation, the row of the current rollout segment it began at) and the fault
state (steps since the env was built, failures in a row). The rules live here, once:

- **Episodes.** Every step adds its reward; an episode that ends is reported (return,
  length), its discounted return restarts at 0 and the env's failure streak is over.
- **Faults.** An env that breaks (raises, returns non-finite values, times out) loses
  the unfinished episode: its rows in the current segment, from the episode's start
  (or from ``mask_from``) to the failing row, are masked out (``valid=False``) and
  counted as discarded, and an :class:`~aiorl.protocol.EnvRecovered` report says so.
  The env is then re-created; each attempt counts as a failure, and ``env_error_limit``
  failures in a row without a finished episode are fatal (:class:`EnvStepError`).

How an env is stepped, closed and re-created (inline or awaited) stays with each sampler.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field

import numpy as np

from aiorl import protocol

ENV_INDEX_VARIABLE = "AIORL_ENV_INDEX"
"""Environment variable holding the index of the env being constructed (read by env factories)."""


class EnvStepError(Exception):
    """An env failed for good; carries where it happened.

    ``step`` is the failing env's own step count (1 for its first ``step`` call; 0 for
    its constructor or first ``reset``). ``unreported`` holds the failures of the rollout
    in progress (the last one is this failure's), which its summary would have reported:
    they go with the fatal report (``EnvFailed.earlier``), so the trainer counts them.
    """

    def __init__(self, env_index: int | None, step: int, original: BaseException, reason: str = "") -> None:
        super().__init__(f"{type(original).__name__}: {original}")
        self.env_index = env_index
        self.step = step
        self.original = original
        self.reason = reason
        self.unreported: list[protocol.EnvRecovered] = []

    def to_message(self, policy_version: int | None) -> protocol.EnvFailed:
        """The :class:`~aiorl.protocol.EnvFailed` report of this failure, with its traceback."""
        original = self.original
        return protocol.EnvFailed(
            env_index=self.env_index,
            step=self.step,
            policy_version=policy_version,
            error_type=type(original).__name__,
            message=f"{original} ({self.reason})" if self.reason else str(original),
            traceback="".join(traceback.format_exception(original)),
            earlier=tuple(self.unreported),
        )


@dataclass(slots=True)
class RolloutSummary:
    """What the trainer needs to know about a rollout besides its arrays."""

    env_steps: int
    discarded_steps: int = 0
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    env_errors: list[protocol.EnvRecovered] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Breakage:
    """What an env failure costs the current segment: rows ``start..end-1`` are masked."""

    start: int
    end: int
    report: protocol.EnvRecovered

    @property
    def discarded(self) -> int:
        """Steps of the broken episode thrown away (rows masked out)."""
        return self.report.discarded_steps


@dataclass(slots=True)
class EnvBookkeeping:
    """One env's running episode and fault state; the samplers call it as they step the env.

    Args:
        index: the env's index in its worker (``None``: a worker's vector env as a whole,
            whose fault state is kept once, see :mod:`aiorl.worker.vector_sampler`).
        gamma: discount of the running return kept for reward normalisation (``None``: off,
            the discounted return stays 0).
        error_limit: failures in a row (without a finished episode) that are fatal.
    """

    index: int | None
    gamma: float | None
    error_limit: int
    episode_return: float = field(default=0.0, init=False)
    episode_length: int = field(default=0, init=False)
    disc_return: float = field(default=0.0, init=False)
    """Running discounted return of the episode."""
    start: int = field(default=0, init=False)
    """Row of the current segment (rollout or trajectory) the episode began at."""
    env_steps: int = field(default=0, init=False)
    """Steps since the env was built (counted as each step is attempted)."""
    failures: int = field(default=0, init=False)
    """Consecutive failures without an episode end."""
    rebuilds: int = field(default=0, init=False)
    """Re-creations attempted since the worker started (the seed of the next one follows it)."""
    error: Exception | None = field(default=None, init=False)
    """The failure being recovered from."""

    def rewarded(self, reward: float) -> float:
        """Count one completed step; return the episode's discounted return so far (0 when off)."""
        self.episode_return += reward
        self.episode_length += 1
        if self.gamma is None:
            return 0.0
        self.disc_return = self.disc_return * self.gamma + reward
        return self.disc_return

    def finished(self, next_row: int) -> tuple[float, int]:
        """The episode ended at the row before ``next_row``: return its (return, length) and start anew."""
        ended = (self.episode_return, self.episode_length)
        self.episode_return, self.episode_length, self.disc_return = 0.0, 0, 0.0
        self.start = next_row
        self.failures = 0
        return ended

    def broke(self, exc: Exception, row: int, policy_version: int, mask_from: int | None = None) -> Breakage:
        """The env broke at segment row ``row``: which rows to mask, and the report of the failure.

        The masked rows are the unfinished episode's (or those from ``mask_from`` on, when
        the episode had ended and the reset after it failed) up to ``row``.
        """
        start = self.start if mask_from is None else mask_from
        report = self.failed(exc, policy_version, discarded=max(row + 1 - start, 0))
        return Breakage(start, row + 1, report)

    def failed(self, exc: Exception, policy_version: int, discarded: int) -> protocol.EnvRecovered:
        """The env broke, costing ``discarded`` steps: the report of the failure (:meth:`retry` follows)."""
        self.error = exc
        return protocol.EnvRecovered(
            env_index=self.index,
            policy_version=policy_version,
            step=self.env_steps,
            error_type=type(exc).__name__,
            message=str(exc),
            traceback="".join(traceback.format_exception(exc)),
            discarded_steps=discarded,
        )

    def retry(self) -> None:
        """Count one more attempt to re-create the env; raise :class:`EnvStepError` at the limit."""
        assert self.error is not None, "retry() follows broke()"
        self.failures += 1
        self.rebuilds += 1
        if self.failures >= self.error_limit:
            reason = (
                f"failed {self.failures} times in a row without finishing an episode "
                f"(env_error_limit={self.error_limit})"
            )
            raise EnvStepError(self.index, self.env_steps, self.error, reason) from self.error

    def rebuild_failed(self, error: EnvStepError) -> None:
        """Re-creating the env failed: the next :meth:`retry` reports this failure."""
        if isinstance(error.original, Exception):
            self.error = error.original

    def rebuilt(self, next_row: int) -> None:
        """The env was re-created: a fresh episode starts at segment row ``next_row``."""
        self.env_steps = 0
        self.episode_return, self.episode_length, self.disc_return = 0.0, 0, 0.0
        self.start = next_row
        self.error = None


STEP_FIELDS = ("observation", "reward", "terminated", "truncated", "info")


def bad_step_result(result: object, i: int) -> Exception:
    """The error for env ``i``'s ``step()`` result that could not be read as gymnasium's five values.

    Called once unpacking it, ``float(reward)`` or ``bool(terminated)`` failed: the message
    names the field and its value (those calls' own errors named neither: "only 0-dimensional
    arrays can be converted to Python scalars").
    """
    if not (isinstance(result, tuple) and len(result) == len(STEP_FIELDS)):
        size = f"{len(result)} values" if isinstance(result, tuple) else type(result).__name__
        return ValueError(
            f"env {i}'s step() returned {size}, expected a tuple of 5 ({', '.join(STEP_FIELDS)}) as in "
            "gymnasium's API (an old gym env returns 4)"
        )
    _obs, reward, terminated, truncated, _info = result
    for name, value, convert, wanted in (
        ("reward", reward, float, "a number"),
        ("terminated", terminated, bool, "a bool"),
        ("truncated", truncated, bool, "a bool"),
    ):
        try:
            convert(value)
        except (TypeError, ValueError):
            shape = f" of shape {np.shape(value)}" if isinstance(value, np.ndarray) else ""
            return TypeError(f"env {i}'s step() returned {name} {_brief(value)}{shape}, expected {wanted}")
    return ValueError(f"env {i}'s step() returned {_brief(result)}, which could not be read")


def _brief(value: object) -> str:
    """``repr(value)``, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
