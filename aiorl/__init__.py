"""aiorl: asyncio-native reinforcement learning with persistent, supervised workers.

Quick start::

    import aiorl

    result = aiorl.run(aiorl.Trainer("CartPole-v1"), total_steps=200_000, target_return=475)
    print(result.mean_return)

In your process ``import aiorl`` loads the whole public API at once, so that
nothing heavy (torch, the trainer, the ``torch._dynamo`` that torch's optimisers import)
is imported later inside your event loop. In
aiorl's worker processes (started with ``AIORL_WORKER_SIDE=1`` in their environment)
the public names load on first use instead (PEP 562): a worker, which imports
``aiorl.worker.main``, loads only the worker side. There ``import aiorl`` comes before
torch and ignores Ctrl-C (SIGINT): a starting worker or forkserver shares the
terminal's process group, and a Ctrl-C that reached it while it imported torch printed
a second traceback beside the trainer's orderly stop (the trainer handles Ctrl-C).
"""

import importlib
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at runtime the names load lazily
    from aiorl.algos import APPO, PPO
    from aiorl.config import TrainerConfig
    from aiorl.envs import AsyncEnv, ThreadedEnv
    from aiorl.errors import (
        AiorlError,
        CheckpointError,
        ConfigError,
        EnvError,
        EvaluationTimeout,
        LearnerError,
        TrainerClosed,
        WorkerCrashed,
        WorkerError,
        WorkerHung,
        WorkerRestartError,
        WorkerStartError,
    )
    from aiorl.evaluation import EvalResult
    from aiorl.events import (
        CheckpointSaved,
        EpisodeFinished,
        EvaluationFinished,
        Event,
        EventsDropped,
        EventStream,
        TrainingUpdate,
        WorkerRestarted,
    )
    from aiorl.models import ActorCritic, CNNActorCritic
    from aiorl.policy import Policy
    from aiorl.records import LagStats, UpdateReport
    from aiorl.runner import run
    from aiorl.trainer import Trainer, TrainResult

_EXPORTS: dict[str, str] = {
    "ActorCritic": "aiorl.models",
    "AiorlError": "aiorl.errors",
    "APPO": "aiorl.algos",
    "AsyncEnv": "aiorl.envs",
    "CheckpointError": "aiorl.errors",
    "CheckpointSaved": "aiorl.events",
    "CNNActorCritic": "aiorl.models",
    "ConfigError": "aiorl.errors",
    "EnvError": "aiorl.errors",
    "EpisodeFinished": "aiorl.events",
    "EvalResult": "aiorl.evaluation",
    "EvaluationFinished": "aiorl.events",
    "EvaluationTimeout": "aiorl.errors",
    "Event": "aiorl.events",
    "EventsDropped": "aiorl.events",
    "EventStream": "aiorl.events",
    "LagStats": "aiorl.records",
    "LearnerError": "aiorl.errors",
    "Policy": "aiorl.policy",
    "PPO": "aiorl.algos",
    "run": "aiorl.runner",
    "ThreadedEnv": "aiorl.envs",
    "Trainer": "aiorl.trainer",
    "TrainerClosed": "aiorl.errors",
    "TrainerConfig": "aiorl.config",
    "TrainingUpdate": "aiorl.events",
    "TrainResult": "aiorl.trainer",
    "UpdateReport": "aiorl.records",
    "WorkerCrashed": "aiorl.errors",
    "WorkerError": "aiorl.errors",
    "WorkerHung": "aiorl.errors",
    "WorkerRestarted": "aiorl.events",
    "WorkerRestartError": "aiorl.errors",
    "WorkerStartError": "aiorl.errors",
}
"""Public name -> the module that defines it (imported on first use: see ``__getattr__``)."""

__version__ = "0.1.0"

__all__ = [
    "APPO",
    "PPO",
    "ActorCritic",
    "AiorlError",
    "AsyncEnv",
    "CNNActorCritic",
    "CheckpointSaved",
    "CheckpointError",
    "ConfigError",
    "EnvError",
    "EpisodeFinished",
    "EvalResult",
    "EvaluationFinished",
    "EvaluationTimeout",
    "Event",
    "EventStream",
    "EventsDropped",
    "LagStats",
    "LearnerError",
    "ThreadedEnv",
    "Policy",
    "TrainResult",
    "TrainingUpdate",
    "TrainerClosed",
    "Trainer",
    "TrainerConfig",
    "UpdateReport",
    "WorkerCrashed",
    "WorkerError",
    "WorkerHung",
    "WorkerRestartError",
    "WorkerRestarted",
    "WorkerStartError",
    "__version__",
    "run",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines the public ``name`` on first use, and keep it here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aiorl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


WORKER_SIDE_VARIABLE = "AIORL_WORKER_SIDE"
"""Set in the environment of aiorl's worker processes (and their forkserver): load lazily there."""

if os.environ.get(WORKER_SIDE_VARIABLE):
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
else:
    for _name in _EXPORTS:
        __getattr__(_name)
    # The first torch optimizer imports torch._dynamo (and sympy: ~800 modules, seconds): here,
    # not inside the application's event loop when it builds its first Trainer.
    importlib.import_module("torch._dynamo")
