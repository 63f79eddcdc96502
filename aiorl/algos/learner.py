"""The learner interface the engine drives (pure torch; no asyncio)."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from torch import nn

from aiorl.algos.batch import RolloutBatch
from aiorl.distributions import ActionDistribution


class Learner(Protocol):
    """What an algorithm's ``make_learner`` returns.

    The engine calls :meth:`update` and :meth:`weights` in its learner thread, one call
    at a time, and :meth:`load_weights` on the event loop only while no update runs.

    Checkpoints also save the optimiser when the learner has ``state_dict()`` and
    ``load_state_dict(state)`` (as PPO's and APPO's do); without them only the policy's
    weights are saved.

    A learner that draws random numbers should own a ``generator`` (a ``torch.Generator``
    on its device, as PPO's and APPO's do): the trainer seeds it from its ``seed`` and
    saves its state in checkpoints, leaving the process's global generators alone.
    """

    policy: nn.Module

    def update(self, batch: RolloutBatch, progress: float) -> dict[str, float]:
        """Learn from ``batch``; ``progress`` in [0, 1] is the fraction of the run done."""
        ...

    def weights(self) -> np.ndarray:
        """The current weights as one flat float32 CPU array."""
        ...

    def load_weights(self, weights: np.ndarray) -> None:
        """Overwrite the weights with a flat array from :meth:`weights`."""
        ...


class Algorithm(Protocol):
    """An algorithm config (``aiorl.PPO()``, ...): it builds the learner for a policy."""

    def make_learner(self, policy: nn.Module, dist: ActionDistribution, device: str) -> Learner:
        """Build the learner that trains ``policy`` on ``device``."""
        ...
