"""``aiorl.run``: run a coroutine or a trainer from a script, on uvloop where available."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiorl.trainer import Trainer, TrainResult

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T] | Trainer, /, **run_kwargs: Any) -> T | TrainResult:
    """Run ``main`` to completion in a new event loop and return its result.

    ``main`` is a coroutine (``aiorl.run(my_main())``) or a :class:`Trainer`, in
    which case ``trainer.run(**run_kwargs)`` is run and its result returned. Uses
    ``uvloop.run`` where uvloop is installed (without installing a global loop
    policy), else ``asyncio.run``. Ctrl-C cancels the main task, so the trainer
    tears down its workers before ``KeyboardInterrupt`` propagates.
    """
    if not isinstance(main, Trainer | Coroutine):
        hint = f": call it, aiorl.run({main.__name__}())" if inspect.iscoroutinefunction(main) else ""
        raise TypeError(f"aiorl.run() takes a coroutine or a Trainer, not {main!r}{hint}")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # no loop runs in this thread: the usual case
    else:
        if not isinstance(main, Trainer):
            main.close()  # never to be awaited: closed, so Python does not warn about it as well
        raise RuntimeError(
            "aiorl.run() starts an event loop, but one is running in this thread: await the coroutine "
            "(or `await trainer.run(...)`) there instead"
        )
    if isinstance(main, Trainer):
        coro: Coroutine[Any, Any, Any] = main.run(**run_kwargs)
    elif run_kwargs:
        main.close()  # never to be awaited
        raise TypeError(f"keyword arguments {sorted(run_kwargs)} only apply when main is a Trainer")
    else:
        coro = main
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run(coro)
    return uvloop.run(coro)
