"""Fault-injecting and counting environments, picklable so they reach worker processes.

Faults are injected by schedule, never by chance: a :class:`FaultyEnv` misbehaves
on its ``at``-th call of ``step`` (or ``reset``) only in the chosen workers, env
indices and worker incarnations (a worker's incarnation is how many processes
held its id before: 0 for the first, 1 after one restart, ...). Workers expose
these to envs as the environment variables ``AIORL_WORKER_ID``,
``AIORL_WORKER_INCARNATION`` and ``AIORL_ENV_INDEX``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np

Fault = Literal["raise", "hang", "kill", "segfault", "exit", "nan", "nan_reward", "wrong_shape", "bad_flags"]
FAULTS: tuple[str, ...] = (
    "raise",
    "hang",
    "kill",
    "segfault",
    "exit",
    "nan",
    "nan_reward",
    "wrong_shape",
    "bad_flags",
)


class InjectedFault(RuntimeError):
    """The exception the fault-injecting envs raise."""


def worker_identity() -> tuple[int, int, int]:
    """``(worker_id, incarnation, env_index)`` of the env being built (-1 outside workers)."""
    return (
        int(os.environ.get("AIORL_WORKER_ID", -1)),
        int(os.environ.get("AIORL_WORKER_INCARNATION", -1)),
        int(os.environ.get("AIORL_ENV_INDEX", -1)),
    )


class FaultyEnv(gym.Wrapper):
    """``gym.make(env_id)`` that misbehaves on schedule.

    Args:
        env_id: the wrapped gymnasium env.
        fault: ``"raise"`` (:class:`InjectedFault`), ``"hang"`` (sleep forever),
            ``"kill"`` (SIGKILL its own process), ``"segfault"`` (SIGSEGV),
            ``"exit"`` (``os._exit(1)``), ``"nan"`` (return a NaN observation),
            ``"nan_reward"`` (return a NaN reward; ``step`` only), ``"wrong_shape"``
            (return an observation with one element too many), ``"bad_flags"`` (return
            ``terminated`` as an array of two flags, which has no truth value; ``step`` only).
        at: fault on this call (1-based) of ``method``, counted per env instance.
        method: ``"step"``, ``"reset"``, or ``"init"`` (the constructor; ``at`` is ignored).
        workers, env_indices, incarnations: where the fault happens (``None``: everywhere).
    """

    def __init__(
        self,
        env_id: str,
        fault: Fault,
        at: int,
        method: Literal["step", "reset", "init"] = "step",
        workers: Collection[int] | None = (0,),
        env_indices: Collection[int] | None = (0,),
        incarnations: Collection[int] | None = (0,),
        **kwargs: Any,
    ) -> None:
        if fault not in FAULTS:
            raise ValueError(f"fault={fault!r} must be one of {FAULTS}")
        super().__init__(gym.make(env_id, **kwargs))
        worker, incarnation, env_index = worker_identity()
        self.armed = (
            (workers is None or worker in workers)
            and (incarnations is None or incarnation in incarnations)
            and (env_indices is None or env_index in env_indices)
        )
        self.fault, self.at, self.method = fault, at, method
        self.calls = 0
        if method == "init":
            self.at = 1
            self._maybe_fault("init")

    def _maybe_fault(self, method: str) -> bool:
        if method != self.method:
            return False
        self.calls += 1
        if not (self.armed and self.calls == self.at):
            return False
        if self.fault == "raise":
            raise InjectedFault(f"injected fault in {method} call {self.calls}")
        if self.fault == "hang":
            while True:
                time.sleep(3600)
        if self.fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.fault == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        if self.fault == "exit":
            os._exit(1)
        return True  # "nan", "nan_reward", "wrong_shape" or "bad_flags": the caller corrupts its result

    def step(self, action: Any) -> Any:
        """Step the wrapped env, or misbehave on schedule."""
        corrupt = self._maybe_fault("step")
        obs, reward, terminated, truncated, info = self.env.step(action)
        if corrupt and self.fault == "nan":
            obs = np.full_like(obs, np.nan)
        if corrupt and self.fault == "nan_reward":
            reward = float("nan")
        if corrupt and self.fault == "wrong_shape":
            obs = np.append(obs, obs[:1])
        if corrupt and self.fault == "bad_flags":
            terminated = np.array([terminated, not terminated])
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs: Any) -> Any:
        """Reset the wrapped env, or misbehave on schedule."""
        corrupt = self._maybe_fault("reset")
        obs, info = self.env.reset(**kwargs)
        if corrupt and self.fault == "nan":
            obs = np.full_like(obs, np.nan)
        if corrupt and self.fault == "wrong_shape":
            obs = np.append(obs, obs[:1])
        return obs, info


class ChildProcessEnv(gym.Wrapper):
    """An env that starts a child process, as one driving a simulator would, and leaves it running.

    A leaky env: its ``close()`` does not end the child, which sleeps for ten minutes.
    Each env writes its child's pid into a file named ``{worker_id}.{incarnation}.{env_index}``
    in ``pid_dir`` (read them back with :func:`env_child_pids`), so a test can check the child
    is gone when its worker is. Built outside a worker (the trainer's probe env), it starts no
    child.

    Args:
        env: a gymnasium id, or a function that builds the wrapped env.
        pid_dir: an existing directory for the pid files.
    """

    def __init__(self, env: str | Callable[[], gym.Env], pid_dir: str) -> None:
        super().__init__(gym.make(env) if isinstance(env, str) else env())
        self.child: subprocess.Popen[bytes] | None = None
        worker, incarnation, env_index = worker_identity()
        if worker < 0:
            return
        self.child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], stdin=subprocess.DEVNULL)
        path = os.path.join(pid_dir, f"{worker}.{incarnation}.{env_index}")
        with open(path + ".tmp", "w") as f:
            f.write(str(self.child.pid))
        os.replace(path + ".tmp", path)  # a reader sees the whole pid or no file


def env_child_pids(pid_dir: str) -> dict[tuple[int, int, int], int]:
    """``(worker_id, incarnation, env_index)`` -> pid of the child each :class:`ChildProcessEnv` started."""
    pids = {}
    for name in os.listdir(pid_dir):
        if not name.endswith(".tmp"):
            with open(os.path.join(pid_dir, name)) as f:
                pids[tuple(int(part) for part in name.split("."))] = int(f.read())
    return pids  # type: ignore[return-value]


class StepsTakenEnv(gym.Wrapper):
    """Wraps an env; in a worker, appends one byte per ``step`` it completes to a file of its own.

    The steps the envs really took, for checking a trainer's accounting against them
    (:func:`steps_taken`). Built outside a worker (the trainer's probe env), it counts nothing.

    Args:
        directory: an existing directory for the files (one per worker, incarnation and env).
        env: a gymnasium id, or a function that builds the wrapped env.
    """

    def __init__(self, directory: str, env: str | Callable[[], gym.Env] = "CartPole-v1") -> None:
        super().__init__(gym.make(env) if isinstance(env, str) else env())
        worker, incarnation, env_index = worker_identity()
        self.path = os.path.join(directory, f"{worker}.{incarnation}.{env_index}") if worker >= 0 else None

    def step(self, action: Any) -> Any:
        """Step the wrapped env; count the step once it returned."""
        result = self.env.step(action)
        if self.path is not None:
            with open(self.path, "ab") as f:
                f.write(b"x")
        return result


def steps_taken(directory: str) -> int:
    """The steps the :class:`StepsTakenEnv` s writing into ``directory`` completed, all together."""
    return sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory))


class RaiseAtStep(FaultyEnv):
    """Raises :class:`InjectedFault` on its ``at_step``-th step, in every worker and env."""

    def __init__(self, env_id: str, at_step: int, **kwargs: Any) -> None:
        super().__init__(env_id, "raise", at_step, workers=None, env_indices=None, incarnations=None, **kwargs)


class RaiseOnCreate(gym.Env):
    """An env whose constructor always raises :class:`InjectedFault`."""

    def __init__(self) -> None:
        raise InjectedFault("injected fault in the env constructor")


COUNTING_ENV_ID = "aiorl-testing/Counting-v0"


class CountingEnv(gym.Env):
    """Observation ``[who, env_index, instance, counter]``: proves no step is duplicated or missing.

    ``who = worker_id * 1000 + incarnation``, ``env_index`` and ``instance`` (how many
    CountingEnvs this process built before this one) identify the env; ``counter``
    counts its steps since it was built (0 in the first observation). Each episode
    lasts ``episode_length`` steps (terminated); the reward is 1 per step.
    """

    observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)
    _built = 0

    def __init__(self, episode_length: int = 20) -> None:
        worker, incarnation, env_index = worker_identity()
        self.who = worker * 1000 + incarnation
        self.env_index = env_index
        self.instance = CountingEnv._built
        CountingEnv._built += 1
        self.episode_length = episode_length
        self.counter = 0
        self.episode_step = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.who, self.env_index, self.instance, self.counter], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        """Start an episode (the counter keeps counting)."""
        super().reset(seed=seed)
        self.episode_step = 0
        return self._obs(), {}

    def step(self, action: Any) -> Any:
        """Advance the counter."""
        self.counter += 1
        self.episode_step += 1
        return self._obs(), 1.0, self.episode_step >= self.episode_length, False, {}


class EndlessEnv(gym.Env):
    """An env whose episodes never end (no ``spec``, so no time limit): for testing step caps.

    The reward is 1 per step. So that a test of a missing cap fails instead of hanging,
    ``step`` raises :class:`InjectedFault` once one episode has taken ``give_up_after`` steps.
    """

    observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, give_up_after: int = 100_000) -> None:
        self.give_up_after = give_up_after
        self.episode_step = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        """Start an episode that never ends."""
        super().reset(seed=seed)
        self.episode_step = 0
        return np.zeros(4, dtype=np.float32), {}

    def step(self, action: Any) -> Any:
        """One more step of the endless episode."""
        self.episode_step += 1
        if self.episode_step >= self.give_up_after:
            raise InjectedFault(f"an episode of EndlessEnv reached {self.give_up_after} steps without a cap")
        obs = np.full(4, self.episode_step % 7, dtype=np.float32)
        return obs, 1.0, False, False, {}

    def render(self) -> np.ndarray:
        """A 4x4 RGB frame whose red channel is the episode's step count (mod 256)."""
        frame = np.zeros((4, 4, 3), dtype=np.uint8)
        frame[..., 0] = self.episode_step % 256
        return frame


if COUNTING_ENV_ID not in gym.registry:
    gym.register(COUNTING_ENV_ID, entry_point="aiorl.testing.envs:CountingEnv")


TRAINER_SIDE_MODULES = (
    "aiorl.trainer",
    "aiorl.cli",
    "aiorl.config",
    "aiorl.config_file",
    "aiorl.progress",
    "aiorl.plot",
    "aiorl.engine",
    "aiorl.algos",
    "click",
    "rich",
)
"""What a worker process has no use for (the trainer's side, the CLI's, plotting), packages included."""


def trainer_side_modules_loaded() -> list[str]:
    """The :data:`TRAINER_SIDE_MODULES` (or their submodules) this process has imported."""
    return sorted(m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in TRAINER_SIDE_MODULES))


class WorkerSideOnly(gym.Wrapper):
    """``gym.make(env_id)`` that refuses to be built in a worker process that loaded the trainer's side.

    Proves what a worker imports: inside a worker (``worker_identity()`` set) its
    constructor raises if any of :data:`TRAINER_SIDE_MODULES` is in ``sys.modules``.
    """

    def __init__(self, env_id: str = "CartPole-v1") -> None:
        if worker_identity()[0] >= 0:
            loaded = trainer_side_modules_loaded()
            if loaded:
                raise RuntimeError(f"a worker process loaded the trainer's side: {loaded}")
        super().__init__(gym.make(env_id))


class InvalidAction(InjectedFault):
    """:class:`MaskedChoiceEnv` was sent an action its mask did not allow."""


BadMask = Literal["missing", "wrong_shape", "wrong_dtype", "none_valid"]
BAD_MASKS: tuple[str, ...] = ("missing", "wrong_shape", "wrong_dtype", "none_valid")
MASKED_CHOICE_ENV_ID = "aiorl-testing/MaskedChoice-v0"


class MaskedChoiceEnv(gym.Env):
    """Choose the target among the actions valid now; an invalid action raises :class:`InvalidAction`.

    At every step each component (``Discrete(sizes[0])`` for one size, else
    ``MultiDiscrete(sizes)``) has a target action and a random set of valid actions, new
    every step, that always holds the target and each other action with probability one
    half. The mask is in ``info["action_mask"]`` after every reset and step, in gymnasium's
    convention (int8; one array per component for ``MultiDiscrete``). The observation is
    the targets' one-hot vectors, then the masks (as floats), so tests can check which mask
    belonged to which observation.

    The reward is the share of components whose action hit its target; episodes last
    ``episode_length`` steps (truncated). The best return is ``episode_length``; a policy
    that picks uniformly among the valid actions gets about 0.39 per step with 5 actions.
    Without masking, the first invalid action raises.

    Bad masks, for fault tests: ``bad_mask`` (``"missing"``, ``"wrong_shape"``,
    ``"wrong_dtype"`` (float32) or ``"none_valid"``) in the info of the ``bad_mask_at``-th
    step (0: the first reset) of the first ``bad_mask_times`` envs built at each env index of
    a process (``None``: every env, so that the failure persists when the env is re-created).
    """

    _built_at: ClassVar[dict[int, int]] = {}  # envs built per env index in this process

    def __init__(
        self,
        sizes: tuple[int, ...] = (5,),
        episode_length: int = 10,
        *,
        bad_mask: BadMask | None = None,
        bad_mask_at: int = 1,
        bad_mask_times: int | None = 1,
    ) -> None:
        if bad_mask is not None and bad_mask not in BAD_MASKS:
            raise ValueError(f"bad_mask={bad_mask!r} must be one of {BAD_MASKS}")
        self.sizes = tuple(int(n) for n in sizes)
        width = sum(self.sizes)
        self.action_space = (
            gym.spaces.Discrete(self.sizes[0]) if len(self.sizes) == 1 else gym.spaces.MultiDiscrete(self.sizes)
        )
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2 * width,), np.float32)
        self.episode_length = episode_length
        index = worker_identity()[2]
        built_here = MaskedChoiceEnv._built_at.get(index, 0)
        MaskedChoiceEnv._built_at[index] = built_here + 1
        armed = bad_mask_times is None or built_here < bad_mask_times
        self.bad_mask = bad_mask if armed else None
        self.bad_mask_at = bad_mask_at
        self.steps = 0  # since the env was built
        self.episode_step = 0
        self.targets = np.zeros(len(self.sizes), dtype=np.int64)
        self.masks = [np.zeros(n, dtype=np.int8) for n in self.sizes]

    def _draw(self) -> tuple[np.ndarray, dict[str, Any]]:
        obs_targets, obs_masks = [], []
        for c, n in enumerate(self.sizes):
            target = int(self.np_random.integers(n))
            mask = (self.np_random.random(n) < 0.5).astype(np.int8)
            mask[target] = 1
            self.targets[c], self.masks[c] = target, mask
            obs_targets.append(np.eye(n, dtype=np.float32)[target])
            obs_masks.append(mask.astype(np.float32))
        obs = np.concatenate(obs_targets + obs_masks)
        mask_info: Any = self.masks[0].copy() if len(self.sizes) == 1 else tuple(m.copy() for m in self.masks)
        return obs, {"action_mask": mask_info}

    def _corrupt(self, info: dict[str, Any]) -> dict[str, Any]:
        if self.bad_mask is None or self.steps != self.bad_mask_at:
            return info
        flat = np.concatenate(self.masks)
        if self.bad_mask == "missing":
            return {}
        if self.bad_mask == "wrong_shape":
            return {"action_mask": np.append(flat, 1).astype(np.int8)}
        if self.bad_mask == "wrong_dtype":
            return {"action_mask": flat.astype(np.float32)}
        return {"action_mask": np.zeros_like(flat)}  # "none_valid"

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        """Start an episode: new targets and masks."""
        super().reset(seed=seed)
        self.episode_step = 0
        obs, info = self._draw()
        return obs, (self._corrupt(info) if self.steps == 0 else info)

    def step(self, action: Any) -> Any:
        """Reward the components that hit their target; raise :class:`InvalidAction` on an invalid action."""
        chosen = np.atleast_1d(np.asarray(action, dtype=np.int64))
        for c, a in enumerate(chosen):
            if not (0 <= a < self.sizes[c] and self.masks[c][a]):
                raise InvalidAction(
                    f"action {action} is invalid in component {c} (mask {self.masks[c].tolist()}) "
                    f"at step {self.steps + 1}"
                )
        reward = float(np.mean(chosen == self.targets))
        self.steps += 1
        self.episode_step += 1
        obs, info = self._draw()
        return obs, reward, False, self.episode_step >= self.episode_length, self._corrupt(info)


if MASKED_CHOICE_ENV_ID not in gym.registry:
    gym.register(MASKED_CHOICE_ENV_ID, entry_point="aiorl.testing.envs:MaskedChoiceEnv")
