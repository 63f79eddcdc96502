"""Learning algorithms: pure torch, no asyncio, readable against their papers."""

from aiorl.algos.advantages import gae
from aiorl.algos.appo import APPO, APPOLearner
from aiorl.algos.batch import BatchBuilder, RolloutBatch
from aiorl.algos.learner import Algorithm, Learner
from aiorl.algos.ppo import PPO, PPOLearner
from aiorl.algos.vtrace import vtrace

__all__ = [
    "APPO",
    "PPO",
    "APPOLearner",
    "Algorithm",
    "BatchBuilder",
    "Learner",
    "PPOLearner",
    "RolloutBatch",
    "gae",
    "vtrace",
]
