"""Recognising envs whose observations are stacked frames, so rollouts can store each frame once.

An env qualifies when gymnasium's ``FrameStackObservation`` makes its observations and nothing
after it changes them: the wrapper is in the env's wrapper chain with no
``gymnasium.ObservationWrapper`` above it, pads with the episode's first frame
(``padding_type="reset"``, its default), stacks at least 2 frames, and its observation space is
the env's. Its observations are then ``S`` frames along the first axis, each the previous
observation shifted by one frame, or ``S`` copies of an episode's first frame. Workers check
that rule on every observation they store (:mod:`aiorl.worker.frames`).

A vector env qualifies when its sub-envs do: a ``SyncVectorEnv`` whose first sub-env qualifies,
or an EnvPool env that stacks frames itself (``stack_num`` of at least 2 along the first axis:
grayscale Atari; EnvPool pads a reset's stack with its first frame). Other vector envs and
:class:`~aiorl.AsyncEnv` envs are not recognised: their observations are stored whole.
"""

from __future__ import annotations

import gymnasium as gym

FRAME_STACK_WRAPPER = gym.wrappers.FrameStackObservation


def frame_stack_size(env: object) -> int:
    """Frames per observation of ``env`` if they can be stored once (see above), else 0."""
    if isinstance(env, gym.vector.VectorEnv):
        return _vector_frame_stack_size(env)
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


def _vector_frame_stack_size(env: gym.vector.VectorEnv) -> int:
    space = env.single_observation_space
    if isinstance(env, gym.vector.SyncVectorEnv):
        size = frame_stack_size(env.envs[0])
        return size if env.envs[0].observation_space == space else 0
    config = getattr(getattr(env, "spec", None), "config", None)  # EnvPool's spec
    size = getattr(config, "stack_num", 0)
    if isinstance(size, int) and size >= 2 and isinstance(space, gym.spaces.Box) and space.shape[0] == size:
        return size
    return 0
