"""Test helpers shipped with aiorl: envs that misbehave on a schedule.

Use them to check your own setup's error handling, e.g.
``Trainer(env=functools.partial(RaiseAtStep, "CartPole-v1", at_step=100))``.
"""

from aiorl.testing.envs import RaiseAtStep, RaiseOnCreate

__all__ = ["RaiseAtStep", "RaiseOnCreate"]
