"""Policies with a bug that the trainer's build-time check cannot see: they fail in the workers.

``Trainer`` checks a policy on all-zero observations; these two misbehave only on real
(non-zero) ones, so the failure happens where a user's bug would: in a worker's forward
pass, mid-run.
"""

from __future__ import annotations

import torch
from torch import nn


class RaisesOnRealObservations(nn.Module):
    """A discrete-action policy whose forward pass raises ``IndexError`` on any non-zero observation."""

    def __init__(self, obs_size: int = 4, num_actions: int = 2) -> None:
        super().__init__()
        self.actor, self.critic = nn.Linear(obs_size, num_actions), nn.Linear(obs_size, 1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and values; raises on a batch holding any non-zero observation."""
        if bool((obs != 0).any()):
            raise IndexError("a bug in the user's forward pass")
        return self.actor(obs), self.critic(obs).squeeze(-1)


class NanMeanOnRealObservations(nn.Module):
    """A one-dimensional Gaussian policy whose mean is NaN on any non-zero observation."""

    def __init__(self, obs_size: int = 3) -> None:
        super().__init__()
        self.actor, self.critic = nn.Linear(obs_size, 1), nn.Linear(obs_size, 1)
        self.log_std = nn.Parameter(torch.zeros(1))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[mean, log_std]`` and values; the mean is NaN on a batch holding any non-zero observation."""
        mean = self.actor(obs) * (float("nan") if bool((obs != 0).any()) else 1.0)
        return torch.cat([mean, self.log_std.expand_as(mean)], -1), self.critic(obs).squeeze(-1)


class OneRowForBigBatches(nn.Module):
    """A discrete-action policy that answers a batch of more than ``up_to`` observations with one row.

    A bug that validation on batches of 1 and 2 does not see: its outputs have the batch's
    first dimension only for small batches.
    """

    def __init__(self, obs_size: int = 4, num_actions: int = 2, up_to: int = 2) -> None:
        super().__init__()
        self.actor, self.critic = nn.Linear(obs_size, num_actions), nn.Linear(obs_size, 1)
        self.up_to = up_to

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and values, of the first observation only when the batch is larger than ``up_to``."""
        if len(obs) > self.up_to:
            obs = obs[:1]
        return self.actor(obs), self.critic(obs).squeeze(-1)
