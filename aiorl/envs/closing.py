"""Closing envs that may be broken: an error of ``close`` is logged, never raised.

An env is closed after it failed (to replace it), when a worker stops, or after the
trainer probed its spaces. Its ``close`` may fail too (a broken connection, a dead
simulator); that must not take a worker down, but it must not vanish either.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time

import gymnasium as gym

from aiorl.envs.async_env import AsyncEnv

log = logging.getLogger("aiorl")

CLOSE_TIMEOUT_S = 10.0
"""How long an :class:`~aiorl.AsyncEnv`'s ``close`` may take before it is given up on."""
CLOSE_AT_EXIT_S = 10.0
"""How long the interpreter's exit waits for envs still being closed in the background."""
_CLOSER_NAME = "aiorl-env-close"


def close_env(env: gym.Env, what: str) -> None:
    """``env.close()``; an exception is logged as a warning naming ``what`` (e.g. ``"env 3"``)."""
    try:
        env.close()
    except Exception as exc:
        _log_failure(what, exc)


async def aclose_env(env: AsyncEnv, what: str, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """``await env.close()`` within ``timeout_s``; an exception or the timeout is logged, not raised."""
    try:
        async with asyncio.timeout(timeout_s):
            await env.close()
    except TimeoutError:
        log.warning("closing %s gave up after %g s", what, timeout_s)
    except asyncio.CancelledError as exc:
        if cancelled_from_outside():
            raise
        _log_failure(what, exc)  # the env's own (a future it awaited was cancelled)
    except Exception as exc:
        _log_failure(what, exc)


def cancelled_from_outside() -> bool:
    """Whether the current task is being cancelled (``Task.cancel``).

    As opposed to a ``CancelledError`` that an env raised on its own (say, from awaiting a
    future that its connection's teardown cancelled).
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _log_failure(what: str, exc: BaseException) -> None:
    log.warning("closing %s failed (ignored): %s: %s", what, type(exc).__name__, exc)


def close_in_background(env: gym.Env | AsyncEnv, what: str) -> None:
    """Close ``env`` in a daemon thread and return at once (errors and timeouts are logged).

    For an env built only to read its spaces: ``Trainer()`` (often called on an event
    loop) must not wait for a slow ``close``; an :class:`~aiorl.AsyncEnv` is closed on a
    private loop of that thread. The interpreter's exit waits for such closes, up to
    ``CLOSE_AT_EXIT_S`` in all: a script whose ``Trainer()`` raised and that exits at once
    would otherwise leave what the env started (a simulator) running.
    """

    def run() -> None:
        if isinstance(env, AsyncEnv):
            asyncio.run(aclose_env(env, what))
        else:
            close_env(env, what)

    threading.Thread(target=run, name=_CLOSER_NAME, daemon=True).start()


@atexit.register
def _wait_for_closes_at_exit() -> None:
    """At the interpreter's exit: give the envs still closing up to ``CLOSE_AT_EXIT_S`` to finish."""
    deadline = time.monotonic() + CLOSE_AT_EXIT_S
    pending = [thread for thread in threading.enumerate() if thread.name == _CLOSER_NAME]
    for thread in pending:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in pending):
        log.warning("an env built to read its spaces was still closing after %g s; exiting anyway", CLOSE_AT_EXIT_S)
