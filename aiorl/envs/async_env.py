"""Coroutine environments, and an adapter that runs a blocking gymnasium env in a thread.

An :class:`AsyncEnv` is a gymnasium env whose ``reset``, ``step`` and ``close`` are
coroutines. A worker process runs all of its async envs on its own event loop, so
while one env awaits a simulator, a web service or a database, the others step:
hundreds of I/O-bound envs overlap in one process, and the policy acts on whichever
envs are ready (see :mod:`aiorl.worker.async_sampler`).

:class:`ThreadedEnv` wraps a blocking ``gymnasium.Env`` (its ``step`` waits on a
socket or a subprocess) so that each env's calls run in a thread of its own; the
trainer option ``env_threads=True`` applies it to every env.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Generic, SupportsFloat, TypeVar

import gymnasium as gym

log = logging.getLogger("aiorl")

ObsType = TypeVar("ObsType")
ActType = TypeVar("ActType")

StepResult = tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]
"""``(observation, reward, terminated, truncated, info)``, exactly as gymnasium returns it."""


class AsyncEnv(ABC, Generic[ObsType, ActType]):
    """A gymnasium-style environment whose methods are coroutines.

    Subclasses set ``observation_space`` and ``action_space`` (gymnasium spaces) in
    ``__init__`` and implement :meth:`reset` and :meth:`step`, returning exactly what
    ``gymnasium.Env.reset`` and ``gymnasium.Env.step`` return. Pass the trainer a
    picklable zero-argument factory (a class or a module-level function) that returns
    one::

        class PricingService(aiorl.AsyncEnv):
            def __init__(self):
                self.observation_space = gym.spaces.Box(-1, 1, (4,))
                self.action_space = gym.spaces.Discrete(2)

            async def reset(self, *, seed=None, options=None):
                ...

            async def step(self, action):
                reply = await self.client.post(...)
                return obs, reward, terminated, truncated, {}

    Rules:

    - The constructor must not do I/O or need a running loop: the trainer builds one
      env in its own process only to read the spaces. Open connections in the first
      :meth:`reset` (it runs on the worker's loop) and release them in :meth:`close`.
    - A ``step`` or ``reset`` that takes longer than the trainer's ``env_timeout_s`` is
      cancelled and handled like an exception: the env's unfinished episode is
      discarded (counted) and the env is closed and re-created.
    - ``step`` must await (or return) rather than block the thread: a CPU-bound step
      is fine, but a blocking call stalls every env of the worker (use
      :class:`ThreadedEnv` or ``env_threads=True`` for blocking envs).
    - An env with action masks (``info["action_mask"]`` on every reset and step, see
      :mod:`aiorl.envs.masks`) sets the class attribute ``action_masks = True``: the
      trainer does not reset an async env to find out.
    """

    observation_space: gym.Space[ObsType]
    action_space: gym.Space[ActType]
    action_masks: ClassVar[bool] = False
    """Whether ``reset`` and ``step`` put ``info["action_mask"]`` (set True in such a subclass)."""

    @abstractmethod
    async def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[ObsType, dict]:
        """Start an episode; return ``(observation, info)``."""

    @abstractmethod
    async def step(self, action: ActType) -> StepResult:
        """Apply ``action``; return ``(observation, reward, terminated, truncated, info)``."""

    async def close(self) -> None:
        """Release what the env holds (connections, subprocesses). The default does nothing."""


class ThreadedEnv(AsyncEnv[Any, Any]):
    """A blocking ``gymnasium.Env`` whose calls run in a daemon thread of its own.

    Use it for envs whose ``step`` blocks on I/O: a worker then overlaps all of them
    as if they were :class:`AsyncEnv`. Each env has its own thread (the default
    executor of ``asyncio.to_thread`` has only a handful of threads, too few to
    overlap hundreds of envs). The thread is a daemon: an env whose call never
    returns is abandoned after ``env_timeout_s`` and cannot keep the worker alive.

    Args:
        env: the wrapped env (built in the worker, by the factory).
    """

    def __init__(self, env: gym.Env | None = None) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any] | None] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._serve, name="aiorl-env", daemon=True)
        self._thread.start()
        if env is not None:
            self._attach(env)

    def _attach(self, env: gym.Env) -> None:
        self.env = env
        self.observation_space = env.observation_space
        self.action_space = env.action_space

    @classmethod
    async def build(cls, factory: Callable[[], gym.Env]) -> ThreadedEnv:
        """Construct the env with ``factory`` in its own thread (its constructor may block too)."""
        threaded = cls()
        try:
            threaded._attach(await threaded._call(factory))
        except BaseException:
            threaded.abandon()
            raise
        return threaded

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            fn, future = call
            if future is None:  # nobody waits (see abandon)
                fn()
                continue
            try:
                result = fn()
            except StopIteration as exc:  # a future cannot hold it (asyncio raises TypeError, the call never ends)
                error = RuntimeError(f"the env raised StopIteration: {exc}")
                error.__cause__ = exc
                _resolve(future, None, error)
            except BaseException as exc:
                _resolve(future, None, exc)
            else:
                _resolve(future, result, None)

    async def _call(self, fn: Callable[[], Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls.put((fn, future))
        return await future

    async def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Reset the wrapped env in its thread."""
        return await self._call(lambda: self.env.reset(seed=seed, options=options))

    async def step(self, action: Any) -> StepResult:
        """Step the wrapped env in its thread."""
        return await self._call(lambda: self.env.step(action))

    async def close(self) -> None:
        """Close the wrapped env in its thread, then let the thread end."""
        try:
            await self._call(self.env.close)
        finally:
            self._calls.put(None)

    def abandon(self) -> None:
        """Give up on an env whose call never returned: if the call ever does, its thread closes the env and ends.

        (A simulator the env started would otherwise run until the worker exits, one more
        for every timeout.)
        """
        if hasattr(self, "env"):
            self._calls.put((self._close_abandoned, None))
        self._calls.put(None)

    def _close_abandoned(self) -> None:
        try:
            self.env.close()
        except Exception as exc:
            log.warning("closing an env abandoned after a timeout raised %s: %s", type(exc).__name__, exc)


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Complete ``future`` from another thread (its loop may be closed: then nobody waits)."""

    def settle() -> None:
        if future.done():  # the awaiting coroutine was cancelled (env timeout)
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    with contextlib.suppress(RuntimeError):  # the loop is closed
        future.get_loop().call_soon_threadsafe(settle)
