"""Registers a gymnasium id when imported.

``env="registered_envs:RegisteredCartPole-v0"`` makes every process (the trainer's, each
worker's) import this module before it makes the env.
"""

import gymnasium as gym

gym.register("RegisteredCartPole-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv", max_episode_steps=50)
