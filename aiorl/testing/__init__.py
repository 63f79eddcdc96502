"""Test helpers shipped with aiorl: envs that misbehave on a schedule, and a counting env.

Use them to check your own setup's fault handling, e.g.
``Trainer(env=functools.partial(FaultyEnv, "CartPole-v1", "hang", at=100))``.
"""

from aiorl.testing.async_envs import AsyncCountingEnv
from aiorl.testing.envs import (
    COUNTING_ENV_ID,
    FAULTS,
    ChildProcessEnv,
    CountingEnv,
    EndlessEnv,
    FaultyEnv,
    InjectedFault,
    RaiseAtStep,
    RaiseOnCreate,
    WorkerSideOnly,
    env_child_pids,
    worker_identity,
)

__all__ = [
    "COUNTING_ENV_ID",
    "AsyncCountingEnv",
    "FAULTS",
    "ChildProcessEnv",
    "CountingEnv",
    "EndlessEnv",
    "FaultyEnv",
    "InjectedFault",
    "RaiseAtStep",
    "RaiseOnCreate",
    "WorkerSideOnly",
    "env_child_pids",
    "worker_identity",
]
