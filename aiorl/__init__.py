"""aiorl: asyncio-native reinforcement learning with persistent, supervised workers.

Quick start::

    import aiorl

    result = aiorl.run(aiorl.Trainer("CartPole-v1"), total_steps=200_000, target_return=475)
    print(result.mean_return)
"""

from aiorl.algos import APPO, PPO
from aiorl.config import TrainerConfig
from aiorl.engine.consumer import LagStats, UpdateReport
from aiorl.envs import AsyncEnv, ThreadedEnv
from aiorl.errors import (
    AiorlError,
    CheckpointError,
    ConfigError,
    EnvError,
    LearnerError,
    TrainerClosed,
    WorkerCrashed,
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
from aiorl.runner import run
from aiorl.trainer import Trainer, TrainResult

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
    "WorkerHung",
    "WorkerRestartError",
    "WorkerRestarted",
    "WorkerStartError",
    "__version__",
    "run",
]
