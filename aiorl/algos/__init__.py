"""Learning algorithms: pure torch, no asyncio, readable against their papers."""

from aiorl.algos.advantages import gae
from aiorl.algos.batch import BatchBuilder, RolloutBatch
from aiorl.algos.learner import Algorithm, Learner
from aiorl.algos.ppo import PPO, PPOLearner

__all__ = ["PPO", "Algorithm", "BatchBuilder", "Learner", "PPOLearner", "RolloutBatch", "gae"]
