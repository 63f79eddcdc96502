"""Gymnasium ids of the envs aiorl ships, registered when :mod:`aiorl.envs` is imported.

Registering costs nothing (the entry points are strings, imported by ``gymnasium.make``), and
every process that steps envs imports :mod:`aiorl.envs`, workers included, so the ids work
wherever a gymnasium id does: ``Trainer("aiorl/CartPoleNoVel-v1")``, presets, the CLI.
"""

from __future__ import annotations

import gymnasium as gym

CARTPOLE_NO_VELOCITY_ID = "aiorl/CartPoleNoVel-v1"
"""CartPole-v1 observing only the cart position and pole angle (:class:`~aiorl.testing.memory.CartPoleNoVelocity`)."""
CUE_RECALL_ID = "aiorl/CueRecall-v0"
"""A cue shown once and recalled later (:class:`~aiorl.testing.memory.CueRecallEnv`)."""

_ENTRY_POINTS = {
    CARTPOLE_NO_VELOCITY_ID: "aiorl.testing.memory:CartPoleNoVelocity",
    CUE_RECALL_ID: "aiorl.testing.memory:CueRecallEnv",
}

for _env_id, _entry_point in _ENTRY_POINTS.items():
    if _env_id not in gym.registry:
        gym.register(_env_id, entry_point=_entry_point)
