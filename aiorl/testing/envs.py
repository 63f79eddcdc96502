"""Fault-injecting environments, picklable so they reach worker processes."""

from __future__ import annotations

from typing import Any

import gymnasium as gym


class InjectedFault(RuntimeError):
    """The exception the fault-injecting envs raise."""


class RaiseAtStep(gym.Wrapper):
    """Wraps ``gym.make(env_id)`` and raises :class:`InjectedFault` on its ``at_step``-th step.

    Steps are counted per env instance, across episodes, starting at 1.
    """

    def __init__(self, env_id: str, at_step: int, **kwargs: Any) -> None:
        super().__init__(gym.make(env_id, **kwargs))
        self.at_step = at_step
        self.steps = 0

    def step(self, action: Any) -> Any:
        """Step the wrapped env, or raise on the scheduled step."""
        self.steps += 1
        if self.steps == self.at_step:
            raise InjectedFault(f"injected fault at step {self.steps}")
        return self.env.step(action)


class RaiseOnCreate(gym.Env):
    """An env whose constructor always raises :class:`InjectedFault`."""

    def __init__(self) -> None:
        raise InjectedFault("injected fault in the env constructor")
