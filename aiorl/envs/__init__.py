"""Environments: factories that travel to workers and adapters for their spaces."""

from aiorl.envs import registry as registry  # registers aiorl's env ids
from aiorl.envs.async_env import AsyncEnv, ThreadedEnv
from aiorl.envs.atari import AtariEnv
from aiorl.envs.factory import EnvFactory, EnvSource, EnvSpaces
from aiorl.envs.masks import ActionMasks, InvalidActionMask
from aiorl.envs.spaces import ObservationEncoder, check_action_space
from aiorl.envs.vector import FirstSubEnv, VectorEnvs

__all__ = [
    "ActionMasks",
    "AtariEnv",
    "InvalidActionMask",
    "AsyncEnv",
    "ThreadedEnv",
    "EnvFactory",
    "EnvSource",
    "EnvSpaces",
    "ObservationEncoder",
    "check_action_space",
    "FirstSubEnv",
    "VectorEnvs",
]
