"""The trainer's configuration: a frozen dataclass validated at construction.

Validation collects every problem and raises one :class:`~aiorl.errors.ConfigError`
naming each field and its value, before any process starts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import torch

from aiorl.backends.base import Backend  # at runtime: config files read the field types
from aiorl.errors import ConfigError, suggest_unknown_options
from aiorl.numbers import is_integer, is_number, plain_numbers
from aiorl.recurrent import RECURRENT_KINDS

START_METHODS = ("forkserver", "spawn")
WORKERS_PER_CORE = 8
MIN_WORKER_LIMIT = 64


SMALL_MLP_UNITS = 64
"""aiorl's :class:`~aiorl.ActorCritic` learns on one torch thread when no layer is wider (inputs and outputs included).

In a trainer the learner runs in a thread beside the main thread, and the main thread has
its own OpenMP pool as soon as it ran one parallel torch op with several threads (building
a policy does: ``orthogonal_`` initialisation runs a QR factorisation). With more OpenMP
threads in the process than CPUs, libgomp stops spin-waiting between parallel regions, so
the learner's extra threads are woken through the kernel for every op; a 64-wide MLP's ops
are too short for that. Measured on 2 cores (``benchmarks/learner_threads.py``, PPO's
update, 2 threads against 1 in the learner thread): 64x64 MLP on CartPole-like data,
minibatches of 512 to 7,168 rows, 0.46-0.93x with the main thread's pool and 0.91-1.38x
without it; 256x256 MLP 0.92-1.36x with it; the default CNN 1.26x with it (1.36x without).
Wider inputs or outputs (a one-hot observation of 500 values) were not measured: such
policies keep the general rule. On 16 cores (CPU learner, the CartPole preset with 1 to 8
workers) updates of 512 to 4,096 samples took 51-73 ms with 8-15 threads, against 17-59 ms
for one thread on the 2-core machine.
"""


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under ``taskset``), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def local_worker_limit() -> int:
    """The most worker processes the local backend starts: ``max(64, 8 x usable cores)``."""
    return max(MIN_WORKER_LIMIT, WORKERS_PER_CORE * usable_cores())


@suggest_unknown_options
@dataclass(frozen=True, kw_only=True, slots=True)
class TrainerConfig:
    """How the trainer collects and learns. Defaults suit a 2-core machine."""

    num_workers: int = 2
    """Worker processes; each steps ``envs_per_worker`` envs with its own policy copy. The local
    backend starts at most ``max(64, 8 x usable cores)``."""
    envs_per_worker: int = 16
    """Envs stepped by one worker, batched through one policy forward pass per step."""
    rollout_length: int = 32
    """Steps per env in one rollout (one shared-memory slot)."""
    seed: int = 0
    """Seeds the policy initialisation, the envs and the workers' action sampling."""
    slots_per_worker: int = 2
    """Rollout slots each worker owns; a worker blocks when all of them wait (backpressure)."""
    rollouts_per_batch: int | None = None
    """Rollouts per learner update; ``None`` means ``num_workers``."""
    max_policy_lag: int | None = 4
    """Drop (and count) rollouts acted by a policy more than this many versions old;
    ``0`` is strict on-policy (workers wait for the newest weights); ``None`` keeps all."""
    normalize_observations: bool | None = None
    """Normalise observations by a running mean/std, kept with the policy's weights
    (:class:`~aiorl.models.ObservationNormalizer`). ``None`` (automatic): on for ``Box``
    observations of quantities (vectors, matrices, grids smaller than the default CNN's 7x7; as
    in CleanRL's continuous-action PPO), off for images and encoded discrete observations. The
    trainer's ``config`` holds the outcome."""
    normalize_rewards: bool | None = None
    """Divide rewards by a running standard deviation of the discounted return before each update
    (gymnasium's ``NormalizeReward``; :class:`~aiorl.algos.reward_scaling.RewardNormalizer`). Returns
    reported to you stay unscaled. ``None`` (automatic): on whenever the algorithm has a discount
    ``gamma`` (PPO and APPO do). The trainer's ``config`` holds the outcome."""
    recurrent: str | None = None
    """``"lstm"`` or ``"gru"``: the default policy is :class:`~aiorl.recurrent.RecurrentActorCritic`
    of that kind; workers carry each env's state across steps and the learner replays rollouts
    from the states the workers had (:mod:`aiorl.recurrent`). ``None``: a feed-forward policy
    (unless the ``policy`` given is recurrent)."""
    recurrent_size: int = 128
    """Width of the default recurrent policy's hidden state."""
    return_window: int = 20
    """Finished episodes averaged into ``mean_return``."""
    learner_threads: int | None = None
    """Torch intra-op threads of the learner's thread (set in that thread only, so the
    application's threads and other trainers keep their own counts). ``None`` (automatic): for
    image observations with the learner on the CPU, every usable core (its convolutions
    parallelise, and the workers mostly wait on full slots during its long updates: on 2 cores
    with 2 workers, 2 threads trained images 1.4-1.6x faster than 1); otherwise the cores the
    workers leave, at least 1 (for small MLPs more threads than free cores slowed training
    1.1-1.3x on 2 cores), and 1 for aiorl's MLP with no layer wider than 64 units, inputs
    and outputs included (``aiorl.config.SMALL_MLP_UNITS``: its ops are too short for
    threads woken through the kernel, as a learner thread's are once the main thread has its
    own OpenMP pool; a second thread made its updates 0.46-0.93x as fast on 2 cores).
    :attr:`Trainer.learner_threads` holds the outcome."""
    device: str = "cpu"
    """Torch device of the learner."""
    worker_device: str = "cpu"
    """Torch device on which workers act: ``"cpu"``, or ``"cuda"`` (``"cuda:N"``) for policies too
    large for one CPU thread per worker (the default CNN: a forward pass over 8 frames takes
    ~5 ms there); each worker then keeps a copy of the policy on that GPU, re-read when new
    weights arrive, and acts with it (action sampling and everything else stay on the CPU).
    Each worker process opens its own CUDA context (a few hundred MB of GPU memory each).
    Local workers only; aiorl's default MLP still acts fused on the CPU."""
    heartbeat_interval_s: float = 1.0
    """Seconds between a worker's heartbeats."""
    worker_timeout_s: float = 30.0
    """A worker that sends no heartbeat for this long is declared hung: its Python stack is
    dumped, then it gets SIGTERM, a grace period, SIGKILL, and a replacement."""
    max_restarts: int = 5
    """Worker replacements allowed within ``restart_window_s``; one more ends the run with
    ``WorkerRestartError``."""
    restart_window_s: float = 60.0
    """The sliding window of the restart budget."""
    restart_backoff_s: float = 0.5
    """Delay before replacing a lost worker; doubles per recent loss of that worker."""
    restart_backoff_max_s: float = 30.0
    """Upper bound of the restart delay."""
    env_error_limit: int = 3
    """An env that raises this many times in a row without finishing an episode ends the run
    (instead of being re-created forever)."""
    env_threads: bool = False
    """Step each gymnasium env in a thread of its own (:class:`~aiorl.envs.ThreadedEnv`), so one
    worker overlaps many envs whose ``step`` blocks on I/O. Leave it off for CPU-bound envs
    (stepped inline, which is faster); :class:`~aiorl.AsyncEnv` envs never need it."""
    env_timeout_s: float = 60.0
    """Async envs (an :class:`~aiorl.AsyncEnv` or ``env_threads=True``): a ``step`` or ``reset``
    that takes longer is cancelled and handled like an env error (the unfinished episode is
    discarded and counted, the env re-created). Blocking envs are covered by
    ``worker_timeout_s`` instead."""
    act_batch: int | None = None
    """Async envs: act as soon as this many envs wait for an action (one batched forward
    pass); ``None`` means all of the worker's envs."""
    act_wait_s: float = 0.0
    """Async envs: the longest a ready env waits for others to join its forward pass;
    ``0`` acts on the envs that became ready in the same turn of the worker's event loop."""
    start_timeout_s: float = 120.0
    """Seconds a worker may take to build its envs and say hello."""
    shutdown_grace_s: float = 5.0
    """Seconds workers get to exit after a stop frame before SIGTERM, then SIGKILL."""
    start_method: str | None = None
    """``'forkserver'`` (default where available) or ``'spawn'``; never fork."""
    log_interval_s: float = 5.0
    """Seconds between progress lines on the ``aiorl`` logger."""
    eval_interval_steps: int | None = None
    """During ``run()``, evaluate the policy every this many trained env steps (``None``: never),
    on separate envs and without pausing training; results go to ``TrainResult.evaluations``
    and the log."""
    eval_episodes: int = 10
    """Episodes per periodic evaluation (deterministic actions)."""
    eval_max_episode_steps: int | None = None
    """Evaluation (periodic and ``Trainer.evaluate``) cuts an episode that has not ended after
    this many steps, so an env that never ends one cannot hang it (``EvalResult.capped`` counts
    them); ``None``: the env's ``spec.max_episode_steps``, else 100,000."""
    eval_timeout_s: float | None = None
    """Wall-clock limit of one evaluation (all its episodes; ``None``: none); when it passes,
    the evaluation raises ``EvaluationTimeout`` (a periodic one's error is raised after the run)."""
    backend: str | Backend = "local"
    """What runs the workers: ``"local"`` (processes on this machine), ``"ray"`` (Ray actors,
    :class:`~aiorl.backends.RayBackend` with its defaults), or a backend object such as
    ``RayBackend(address="auto")``."""

    def __post_init__(self) -> None:
        plain_numbers(self)
        problems: list[str] = []
        positive_ints = (
            "num_workers",
            "envs_per_worker",
            "rollout_length",
            "slots_per_worker",
            "return_window",
            "env_error_limit",
            "eval_episodes",
            "recurrent_size",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if not (is_integer(value) and value >= 1):
                problems.append(f"{name}={value!r} must be an integer >= 1")
        if not (is_integer(self.seed) and 0 <= self.seed < 2**63):
            problems.append(f"seed={self.seed!r} must be an integer in [0, 2**63)")
        if self.rollouts_per_batch is not None and not (
            is_integer(self.rollouts_per_batch) and self.rollouts_per_batch >= 1
        ):
            problems.append(f"rollouts_per_batch={self.rollouts_per_batch!r} must be an integer >= 1 or None")
        if self.eval_interval_steps is not None and not (
            is_integer(self.eval_interval_steps) and self.eval_interval_steps >= 1
        ):
            problems.append(f"eval_interval_steps={self.eval_interval_steps!r} must be an integer >= 1 or None")
        if self.eval_max_episode_steps is not None and not (
            is_integer(self.eval_max_episode_steps) and self.eval_max_episode_steps >= 1
        ):
            problems.append(f"eval_max_episode_steps={self.eval_max_episode_steps!r} must be an integer >= 1 or None")
        if self.eval_timeout_s is not None and not (
            is_number(self.eval_timeout_s) and math.isfinite(self.eval_timeout_s) and self.eval_timeout_s > 0
        ):
            problems.append(f"eval_timeout_s={self.eval_timeout_s!r} must be a finite number of seconds > 0 or None")
        if self.learner_threads is not None and not (is_integer(self.learner_threads) and self.learner_threads >= 1):
            problems.append(f"learner_threads={self.learner_threads!r} must be an integer >= 1 or None")
        if self.max_policy_lag is not None and not (is_integer(self.max_policy_lag) and self.max_policy_lag >= 0):
            problems.append(f"max_policy_lag={self.max_policy_lag!r} must be an integer >= 0 or None")
        if self.act_batch is not None and not (is_integer(self.act_batch) and self.act_batch >= 1):
            problems.append(f"act_batch={self.act_batch!r} must be an integer >= 1 or None")
        elif self.act_batch is not None and is_integer(self.envs_per_worker) and self.act_batch > self.envs_per_worker:
            problems.append(
                f"act_batch={self.act_batch!r} exceeds envs_per_worker={self.envs_per_worker!r}: "
                "no worker ever has that many envs waiting"
            )
        if not (is_number(self.act_wait_s) and math.isfinite(self.act_wait_s) and self.act_wait_s >= 0):
            problems.append(f"act_wait_s={self.act_wait_s!r} must be a finite number of seconds >= 0")
        if self.recurrent is not None and self.recurrent not in RECURRENT_KINDS:
            problems.append(f"recurrent={self.recurrent!r} must be one of {RECURRENT_KINDS} or None")
        if not isinstance(self.env_threads, bool):
            problems.append(f"env_threads={self.env_threads!r} must be True or False")
        for name in ("normalize_observations", "normalize_rewards"):
            if not isinstance(getattr(self, name), bool | None):
                problems.append(f"{name}={getattr(self, name)!r} must be True, False or None (automatic)")
        if not (is_integer(self.max_restarts) and self.max_restarts >= 0):
            problems.append(f"max_restarts={self.max_restarts!r} must be an integer >= 0")
        durations = (
            "heartbeat_interval_s",
            "worker_timeout_s",
            "restart_window_s",
            "restart_backoff_s",
            "restart_backoff_max_s",
            "start_timeout_s",
            "env_timeout_s",
            "shutdown_grace_s",
            "log_interval_s",
        )
        for name in durations:
            value = getattr(self, name)
            if not (is_number(value) and math.isfinite(value) and value > 0):
                problems.append(f"{name}={value!r} must be a finite number of seconds > 0")
        if self.start_method is not None and self.start_method not in START_METHODS:
            problems.append(f"start_method={self.start_method!r} must be one of {START_METHODS} or None")
        problems += self._device_problems()
        problems += self._backend_problems()
        if not problems and self.num_workers > local_worker_limit() and self._local_backend():
            problems.append(
                f"num_workers={self.num_workers} local worker processes on {usable_cores()} usable cores: at most "
                f"{local_worker_limit()} (max({MIN_WORKER_LIMIT}, {WORKERS_PER_CORE} x cores)); more only compete "
                "for the CPUs. Use more envs_per_worker, async envs for I/O-bound envs, or backend='ray'"
            )
        if not problems and self.worker_timeout_s <= 2 * self.heartbeat_interval_s:
            problems.append(
                f"worker_timeout_s={self.worker_timeout_s!r} must exceed twice "
                f"heartbeat_interval_s={self.heartbeat_interval_s!r}, or healthy workers look hung"
            )
        if not problems and self.max_policy_lag == 0:
            slots = self.num_workers * self.slots_per_worker
            if self.batch_rollouts > slots:
                problems.append(
                    f"rollouts_per_batch={self.batch_rollouts} exceeds the {slots} slots "
                    "(num_workers * slots_per_worker) that strict on-policy mode "
                    "(max_policy_lag=0) can hold for one batch"
                )
            elif self.batch_rollouts < self.num_workers:
                idle = self.num_workers - self.batch_rollouts
                problems.append(
                    f"rollouts_per_batch={self.batch_rollouts} with num_workers={self.num_workers} in strict "
                    f"on-policy mode (max_policy_lag=0): only {self.batch_rollouts} rollout(s) circulate per "
                    f"update, so {idle} worker(s) would never be granted a slot and sit idle; use "
                    f"rollouts_per_batch >= num_workers or num_workers={self.batch_rollouts}"
                )
        if problems:
            raise ConfigError(problems)

    def _backend_problems(self) -> list[str]:
        from aiorl.backends import BACKEND_NAMES, Backend, LocalBackend
        from aiorl.backends.ray import ray_available

        problems = []
        if not isinstance(self.backend, Backend):
            if not (isinstance(self.backend, str) and self.backend in BACKEND_NAMES):
                return [f"backend={self.backend!r} must be one of {BACKEND_NAMES} or a Backend object"]
            if self.backend == "ray" and not ray_available():
                problems.append("backend='ray' needs ray, which is not installed: pip install 'aiorl[ray]'")
        # Not _local_backend(): it builds the backend, and RayBackend() raises where ray is missing.
        local = self.backend == "local" or isinstance(self.backend, LocalBackend)
        if not local and not str(self.worker_device).startswith("cpu"):
            problems.append(f"worker_device={self.worker_device!r} needs local workers (backend='local')")
        return problems

    def _device_problems(self) -> list[str]:
        problems = [device_problem("device", self.device), device_problem("worker_device", self.worker_device)]
        return [problem for problem in problems if problem]

    def settled(
        self,
        *,
        algo: object,
        numeric_observations: bool,
        async_env: bool,
        env: str,
        vector_envs: int | None = None,
        envs_per_worker_given: bool = True,
    ) -> TrainerConfig:
        """The config checked against the algorithm and the env, with its automatic choices made.

        Args:
            algo: the algorithm config; reward scaling needs its discount ``gamma``.
            numeric_observations: observations are a ``Box`` of quantities that the default
                MLP reads, not images (where running observation normalisation helps).
            async_env: the env is an :class:`~aiorl.AsyncEnv`.
            env: the env's description, for messages.
            vector_envs: the env factory returns vector envs of this many sub-envs (``None``:
                single envs). ``envs_per_worker`` becomes it when it was not given
                (``envs_per_worker_given=False``); one given that differs is a problem.
            envs_per_worker_given: the user set ``envs_per_worker``.

        Raises:
            ConfigError: the options contradict the algorithm or the env.
        """
        problems: list[str] = []
        has_discount = is_number(getattr(algo, "gamma", None))  # PPO(gamma=1) has one too
        if self.normalize_rewards and not has_discount:
            problems.append(
                f"normalize_rewards=True needs the algorithm's discount, but algo={algo!r} has no numeric `gamma`"
            )
        if async_env and self.env_threads:
            problems.append(
                f"env_threads=True runs blocking gymnasium envs in threads, but env={env!r} "
                "returns an aiorl.AsyncEnv already"
            )
        elif (async_env or self.env_threads) and not self._local_backend():
            problems.append(
                f"backend={self.backend!r} steps gymnasium envs inline only; async envs (an aiorl.AsyncEnv "
                "or env_threads=True) run on the local backend for now"
            )
        if vector_envs is None and not (async_env or self.env_threads):
            problems += [
                f"{name}={value!r} batches the actions of async envs (an aiorl.AsyncEnv or env_threads=True), "
                f"but env={env!r} steps gymnasium envs inline, acting for all of a worker's envs at once"
                for name, value in (("act_batch", self.act_batch), ("act_wait_s", self.act_wait_s))
                if value not in (None, 0)
            ]
        envs_per_worker = self.envs_per_worker
        if vector_envs is not None:
            if envs_per_worker_given and self.envs_per_worker != vector_envs:
                problems.append(
                    f"envs_per_worker={self.envs_per_worker!r}, but env={env!r} returns vector envs of "
                    f"num_envs={vector_envs}: each worker steps one, so leave envs_per_worker out or make them equal"
                )
            if self.env_threads:
                problems.append(
                    f"env_threads=True runs single gymnasium envs in threads, but env={env!r} returns vector envs"
                )
            problems += [
                f"{name}={value!r} batches async envs, but env={env!r} returns vector envs, which act as one batch"
                for name, value in (("act_batch", self.act_batch), ("act_wait_s", self.act_wait_s))
                if value not in (None, 0)
            ]
            envs_per_worker = vector_envs
        problems += self._minibatch_problems(algo, envs_per_worker)
        if problems:
            raise ConfigError(problems)
        return replace(
            self,
            envs_per_worker=envs_per_worker,
            normalize_observations=_choose(self.normalize_observations, numeric_observations),
            normalize_rewards=_choose(self.normalize_rewards, has_discount),
        )

    def _minibatch_problems(self, algo: object, envs_per_worker: int) -> list[str]:
        """A feed-forward batch split into minibatches of one sample, whose normalised advantage is 0.

        (The learner would clamp the split to one sample per minibatch and learn nothing from
        the policy loss, without a word. A recurrent policy's minibatches are whole
        trajectories, never one sample.)
        """
        minibatches = getattr(algo, "num_minibatches", None)
        if (
            self.recurrent is not None
            or not is_integer(minibatches)
            or not getattr(algo, "normalize_advantages", False)
        ):
            return []
        batch = self.batch_rollouts * envs_per_worker * self.rollout_length  # batch_steps, settled envs_per_worker
        if batch // minibatches >= 2:
            return []
        return [
            f"algo.num_minibatches={minibatches} splits the batch of {batch} env steps (rollouts_per_batch x "
            f"envs_per_worker x rollout_length) into minibatches of fewer than 2 samples, whose normalised "
            f"advantages are all 0: use at most {batch // 2}"
        ]

    def _local_backend(self) -> bool:
        from aiorl.backends import LocalBackend, resolve_backend

        return isinstance(resolve_backend(self.backend), LocalBackend)

    @property
    def batch_rollouts(self) -> int:
        """Rollouts per learner update."""
        return self.rollouts_per_batch or self.num_workers

    def seat_slots(self) -> list[tuple[int, ...]]:
        """The slot ids each worker is granted: all of its own, or in strict mode one batch's worth.

        Worker ``w`` owns slots ``w * slots_per_worker`` onwards. With ``max_policy_lag=0``
        only ``batch_rollouts`` slots circulate (spread over the workers), each granted
        after the newest weights are published, so no rollout is ever acted by an
        outdated policy and none is wasted.
        """
        if self.max_policy_lag == 0:
            share, extra = divmod(self.batch_rollouts, self.num_workers)
            counts = [share + (1 if w < extra else 0) for w in range(self.num_workers)]
        else:
            counts = [self.slots_per_worker] * self.num_workers
        return [tuple(range(w * self.slots_per_worker, w * self.slots_per_worker + n)) for w, n in enumerate(counts)]

    @property
    def batch_steps(self) -> int:
        """Env steps per learner update."""
        return self.batch_rollouts * self.envs_per_worker * self.rollout_length

    def learner_thread_count(self, *, images: bool, small_mlp: bool = False) -> int:
        """Torch threads of the learner: ``learner_threads``, or its automatic value (see the option).

        Args:
            images: the observations are images (the default policy is a CNN).
            small_mlp: the policy is aiorl's MLP with layers of at most :data:`SMALL_MLP_UNITS`
                units: one thread (measured on the default MLP only).
        """
        if self.learner_threads is not None:
            return self.learner_threads
        if images and torch.device(self.device).type == "cpu":
            return usable_cores()
        return 1 if small_mlp else max(1, usable_cores() - self.num_workers)


SETTLED_FIELDS = ("normalize_observations", "normalize_rewards")
"""The fields :meth:`TrainerConfig.settled` turns from ``None`` (automatic) into the trainer's choice."""

RUNTIME_FIELDS = (
    "num_workers",
    "slots_per_worker",
    "learner_threads",
    "device",
    "worker_device",
    "heartbeat_interval_s",
    "worker_timeout_s",
    "max_restarts",
    "restart_window_s",
    "restart_backoff_s",
    "restart_backoff_max_s",
    "env_error_limit",
    "env_threads",
    "env_timeout_s",
    "act_batch",
    "act_wait_s",
    "start_timeout_s",
    "shutdown_grace_s",
    "start_method",
    "log_interval_s",
    "eval_interval_steps",
    "eval_episodes",
    "eval_max_episode_steps",
    "eval_timeout_s",
    "backend",
)
"""The trainer fields about where and how a run executes (processes, devices, supervision,
logging, evaluation) rather than what it learns from: ``aiorl resume`` takes them from
``config.toml`` (and ``--workers``/``--device``), not from the checkpoint, so a run can go on
on another machine. ``num_workers`` changes the batch only where ``rollouts_per_batch`` is
automatic (one rollout per worker)."""


def device_problem(name: str, value: object) -> str:
    """Why ``value`` (option ``name``) is not a torch device usable on this machine; ``""`` if it is."""
    try:
        device = torch.device(value)  # type: ignore[call-overload]
    except (RuntimeError, TypeError) as exc:
        return f"{name}={value!r} is not a torch device ({exc})"
    if device.type not in ("cpu", "cuda"):  # mps, xpu, meta, ...: untested, and failing deep inside torch
        return f"{name}={value!r} must be a 'cpu' or 'cuda' device"
    if device.type == "cuda" and not torch.cuda.is_available():
        return f"{name}={value!r} but CUDA is not available"
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        return f"{name}={value!r} but this machine has {torch.cuda.device_count()} CUDA device(s)"
    return ""


def _choose(option: bool | None, automatic: bool) -> bool:
    """An option the user set, or its automatic value where they left it ``None``."""
    return automatic if option is None else option
