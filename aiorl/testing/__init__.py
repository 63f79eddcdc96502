"""Test helpers shipped with aiorl: envs that misbehave on a schedule, a counting env, buggy policies.

Use them to check your own setup's fault handling, e.g.
``Trainer(env=functools.partial(FaultyEnv, "CartPole-v1", "hang", at=100))``.
"""

from aiorl.testing.async_envs import AsyncCountingEnv
from aiorl.testing.envs import (
    BAD_MASKS,
    COUNTING_ENV_ID,
    FAULTS,
    MASKED_CHOICE_ENV_ID,
    ChildProcessEnv,
    CountingEnv,
    EndlessEnv,
    FaultyEnv,
    InjectedFault,
    InvalidAction,
    MaskedChoiceEnv,
    RaiseAtStep,
    RaiseOnCreate,
    StepsTakenEnv,
    WorkerSideOnly,
    env_child_pids,
    steps_taken,
    worker_identity,
)
from aiorl.testing.frames import NoiseFramesEnv, stacked_noise_frames
from aiorl.testing.policies import NanMeanOnRealObservations, OneRowForBigBatches, RaisesOnRealObservations

__all__ = [
    "BAD_MASKS",
    "COUNTING_ENV_ID",
    "MASKED_CHOICE_ENV_ID",
    "AsyncCountingEnv",
    "FAULTS",
    "ChildProcessEnv",
    "CountingEnv",
    "EndlessEnv",
    "FaultyEnv",
    "InjectedFault",
    "InvalidAction",
    "MaskedChoiceEnv",
    "NanMeanOnRealObservations",
    "OneRowForBigBatches",
    "RaisesOnRealObservations",
    "NoiseFramesEnv",
    "RaiseAtStep",
    "RaiseOnCreate",
    "StepsTakenEnv",
    "WorkerSideOnly",
    "env_child_pids",
    "stacked_noise_frames",
    "steps_taken",
    "worker_identity",
]
