"""What a worker process needs to know, in one picklable object."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from aiorl.distributions import ActionDistribution
from aiorl.envs import EnvFactory, ObservationEncoder
from aiorl.shm import RolloutLayout


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker is started with.

    Attributes:
        worker_id: index of the worker in the pool (stable across restarts).
        env_factory: builds each of the worker's ``layout.num_envs`` envs.
        seed: base seed; env ``i`` of worker ``w`` is first reset with
            ``seed + w * num_envs + i``.
        layout: shape of a rollout slot.
        slots_name, num_slots: the shared rollout segment and its slot count.
        weights_name, num_weights: the shared weight store.
        policy: a CPU template of the policy; its weights are replaced by the store's.
        dist: the action distribution.
        obs_encoder: turns raw observations into float32 arrays.
        heartbeat_interval_s: seconds between heartbeat frames.
    """

    worker_id: int
    env_factory: EnvFactory
    seed: int
    layout: RolloutLayout
    slots_name: str
    num_slots: int
    weights_name: str
    num_weights: int
    policy: nn.Module
    dist: ActionDistribution
    obs_encoder: ObservationEncoder
    heartbeat_interval_s: float
