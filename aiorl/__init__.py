"""aiorl: asyncio-native reinforcement learning with persistent, supervised workers.

Quick start::

    import aiorl

    result = aiorl.run(aiorl.Trainer("CartPole-v1"), total_steps=200_000, target_return=475)
    print(result.mean_return)
"""

from aiorl.algos import APPO, PPO
from aiorl.config import TrainerConfig
from aiorl.engine.consumer import LagStats, UpdateReport
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
    "CNNActorCritic",
    "CheckpointError",
    "ConfigError",
    "EnvError",
    "EvalResult",
    "LagStats",
    "LearnerError",
    "Policy",
    "TrainResult",
    "TrainerClosed",
    "Trainer",
    "TrainerConfig",
    "UpdateReport",
    "WorkerCrashed",
    "WorkerHung",
    "WorkerRestartError",
    "WorkerStartError",
    "__version__",
    "run",
]
