"""Recognising envs whose observations are stacked frames, so rollouts can store each frame once.

An env qualifies when gymnasium's ``FrameStackObservation`` makes its observations and nothing
after it changes them: the wrapper is in the env's wrapper chain with no
``gymnasium.ObservationWrapper`` above it, pads with the episode's first frame
(``padding_type="reset"``, its default), stacks at least 2 frames, and its observation space is
the env's. Its observations are then ``S`` frames along the first axis, each the previous
observation shifted by one frame, or ``S`` copies of an episode's first frame. Workers check
that rule on every observation they store (:mod:`aiorl.worker.frames`).

Vector envs and :class:`~aiorl.AsyncEnv` envs are not recognised: their observations are stored whole.
"""

from __future__ import annotations

import gymnasium as gym

FRAME_STACK_WRAPPER = gym.wrappers.FrameStackObservation


def frame_stack_size(env: object) -> int:
    """Frames per observation of ``env`` if they can be stored once (see above), else 0."""
    space = getattr(env, "observation_space", None)
    layer = env
    while isinstance(layer, gym.Wrapper):
        if isinstance(layer, FRAME_STACK_WRAPPER):
            size = int(layer.stack_size)
            qualifies = (
                layer.padding_type == "reset"
                and size >= 2
                and layer.observation_space == space
                and isinstance(space, gym.spaces.Box)
                and space.shape[0] == size
            )
            return size if qualifies else 0
        if isinstance(layer, gym.ObservationWrapper):
            return 0
        layer = layer.env
    return 0
