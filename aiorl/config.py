"""The trainer's configuration: a frozen dataclass validated at construction.

Validation collects every problem and raises one :class:`~aiorl.errors.ConfigError`
naming each field and its value, before any process starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from aiorl.errors import ConfigError

START_METHODS = ("forkserver", "spawn")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainerConfig:
    """How the trainer collects and learns. Defaults suit a 2-core machine."""

    num_workers: int = 2
    """Worker processes; each steps ``envs_per_worker`` envs with its own policy copy."""
    envs_per_worker: int = 16
    """Envs stepped by one worker, batched through one policy forward pass per step."""
    rollout_length: int = 32
    """Steps per env in one rollout (one shared-memory slot)."""
    seed: int = 0
    """Seeds the policy initialisation, the envs and the workers' action sampling."""
    slots_per_worker: int = 2
    """Rollout slots each worker owns; a worker blocks when all of them wait (backpressure)."""
    rollouts_per_batch: int | None = None
    """Rollouts per learner update; ``None`` means ``num_workers``."""
    max_policy_lag: int | None = 4
    """Drop (and count) rollouts acted by a policy more than this many versions old;
    ``0`` is strict on-policy (workers wait for the newest weights); ``None`` keeps all."""
    return_window: int = 20
    """Finished episodes averaged into ``mean_return``."""
    device: str = "cpu"
    """Torch device of the learner (workers always act on CPU)."""
    heartbeat_interval_s: float = 1.0
    """Seconds between a worker's heartbeats."""
    start_timeout_s: float = 120.0
    """Seconds a worker may take to build its envs and say hello."""
    shutdown_grace_s: float = 5.0
    """Seconds workers get to exit after a stop frame before SIGTERM, then SIGKILL."""
    start_method: str | None = None
    """``'forkserver'`` (default where available) or ``'spawn'``; never fork."""
    log_interval_s: float = 5.0
    """Seconds between progress lines on the ``aiorl`` logger."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in ("num_workers", "envs_per_worker", "rollout_length", "slots_per_worker", "return_window"):
            value = getattr(self, name)
            if not (_is_int(value) and value >= 1):
                problems.append(f"{name}={value!r} must be an integer >= 1")
        if not _is_int(self.seed):
            problems.append(f"seed={self.seed!r} must be an integer")
        if self.rollouts_per_batch is not None and not (
            _is_int(self.rollouts_per_batch) and self.rollouts_per_batch >= 1
        ):
            problems.append(f"rollouts_per_batch={self.rollouts_per_batch!r} must be an integer >= 1 or None")
        if self.max_policy_lag is not None and not (_is_int(self.max_policy_lag) and self.max_policy_lag >= 0):
            problems.append(f"max_policy_lag={self.max_policy_lag!r} must be an integer >= 0 or None")
        for name in ("heartbeat_interval_s", "start_timeout_s", "shutdown_grace_s", "log_interval_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                problems.append(f"{name}={value!r} must be a finite number of seconds > 0")
        if self.start_method is not None and self.start_method not in START_METHODS:
            problems.append(f"start_method={self.start_method!r} must be one of {START_METHODS} or None")
        problems += self._device_problems()
        if not problems and self.max_policy_lag == 0:
            slots = self.num_workers * self.slots_per_worker
            if self.batch_rollouts > slots:
                problems.append(
                    f"rollouts_per_batch={self.batch_rollouts} exceeds the {slots} slots "
                    "(num_workers * slots_per_worker) that strict on-policy mode "
                    "(max_policy_lag=0) can hold for one batch"
                )
        if problems:
            raise ConfigError(problems)

    def _device_problems(self) -> list[str]:
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            return [f"device={self.device!r} is not a torch device ({exc})"]
        if device.type == "cuda" and not torch.cuda.is_available():
            return [f"device={self.device!r} but CUDA is not available"]
        return []

    @property
    def batch_rollouts(self) -> int:
        """Rollouts per learner update."""
        return self.rollouts_per_batch or self.num_workers

    def slots_in_use(self) -> list[int]:
        """Slots granted to each worker: all of them, or in strict on-policy mode one batch's worth.

        With ``max_policy_lag=0`` only ``batch_rollouts`` slots circulate (spread over the
        workers), each granted after the newest weights are published, so no rollout is
        ever acted by an outdated policy and none is wasted.
        """
        if self.max_policy_lag != 0:
            return [self.slots_per_worker] * self.num_workers
        share, extra = divmod(self.batch_rollouts, self.num_workers)
        return [share + (1 if i < extra else 0) for i in range(self.num_workers)]

    @property
    def batch_steps(self) -> int:
        """Env steps per learner update."""
        return self.batch_rollouts * self.envs_per_worker * self.rollout_length
