"""The Trainer: the public entry point, an async context manager owning every resource.

``async with Trainer(...) as trainer`` creates the shared memory, the learner and
its executor thread, starts the worker pool, and guarantees teardown in reverse
order on exit, on an exception and on cancellation. ``await trainer.run(...)``
runs on the caller's event loop; workers persist between runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import os
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import torch
from torch import nn

from aiorl.algos import PPO, Algorithm
from aiorl.backends import WorkerHost, WorkerTemplate, resolve_backend
from aiorl.config import TrainerConfig
from aiorl.distributions import ActionDistribution
from aiorl.engine.broadcaster import Broadcaster
from aiorl.engine.consumer import Consumer, LagStats, RunGoal, UpdateCallback
from aiorl.engine.pool import WorkerPool
from aiorl.engine.restarts import RestartBudget
from aiorl.engine.stats import TrainingStats
from aiorl.envs import EnvFactory, EnvSource, EnvSpaces, ObservationEncoder
from aiorl.errors import AiorlError, ConfigError, TrainerClosed
from aiorl.evaluation import EvalResult, play_episodes
from aiorl.models import ObservationNormalizer, assign_flat, default_policy, validate_policy
from aiorl.presets import get_preset
from aiorl.shm import RolloutLayout

log = logging.getLogger("aiorl")
T = TypeVar("T")

EXECUTOR_SHUTDOWN_S = 60.0
RUN_STOP_WAIT_S = 60.0
EVAL_SEED_OFFSET = 1_000_000_007


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What one ``run()`` did.

    Attributes:
        env_steps: env steps trained on during this run.
        episodes: episodes that finished during this run.
        mean_return: mean return of the last ``return_window`` finished episodes.
        wall_time: seconds this run took.
        worker_restarts: workers replaced during this run.
        env_errors: env exceptions recovered from during this run (env re-created).
        reached_target: whether the run stopped because ``target_return`` was reached.
        updates: learner updates during this run.
        policy_version: the policy version at the end of the run.
        total_env_steps: env steps trained on over the trainer's life.
        steps_collected: env steps collected over the trainer's life.
        steps_discarded: discarded env steps over the trainer's life, by reason.
        steps_pending: collected steps not yet trained or discarded (kept for the next run).
        policy_lag: lag of the samples trained on over the trainer's life.
    """

    env_steps: int
    episodes: int
    mean_return: float
    wall_time: float
    worker_restarts: int
    env_errors: int
    reached_target: bool
    updates: int
    policy_version: int
    total_env_steps: int
    steps_collected: int
    steps_discarded: dict[str, int] = field(default_factory=dict)
    steps_pending: int = 0
    policy_lag: LagStats | None = None

    @property
    def steps_per_second(self) -> float:
        """Env steps trained per wall-clock second in this run."""
        return self.env_steps / self.wall_time if self.wall_time > 0 else 0.0


@dataclass(slots=True)
class _Running:
    """Resources that exist between ``__aenter__`` and ``__aexit__``."""

    stack: contextlib.AsyncExitStack
    host: WorkerHost
    pool: WorkerPool
    consumer: Consumer
    broadcaster: Broadcaster


class Trainer:
    """Trains a policy on ``env`` with persistent, supervised worker processes.

    Args:
        env: a gymnasium id, or a picklable zero-argument callable returning a
            ``gymnasium.Env`` (a module-level function, a class, ``functools.partial``).
        algo: the algorithm and its hyperparameters; defaults to ``PPO()``.
        env_kwargs: keyword arguments for ``gymnasium.make`` (with an id only).
        policy: a ``torch.nn.Module`` following the policy interface of
            :mod:`aiorl.models`; defaults to :class:`~aiorl.models.ActorCritic`.
        **options: any field of :class:`~aiorl.config.TrainerConfig`
            (``num_workers``, ``envs_per_worker``, ``rollout_length``, ``seed``,
            ``backend="ray"``, ...).

    Raises:
        ConfigError: (a ``ValueError``) for any invalid value, naming the field and
            the value: before any process starts.

    Resource handling:
        Processes, shared memory and the learner thread exist only inside
        ``async with trainer`` (or during a ``run()`` called outside one). On every
        exit path workers get a stop frame, then SIGTERM, then SIGKILL, and every
        ``aiorl_`` shared-memory segment is unlinked.
    """

    def __init__(
        self,
        env: EnvSource,
        algo: Algorithm | None = None,
        *,
        env_kwargs: dict[str, Any] | None = None,
        policy: nn.Module | None = None,
        **options: Any,
    ) -> None:
        unknown = sorted(set(options) - set(TrainerConfig.__dataclass_fields__))
        if unknown:
            raise ConfigError([f"{name}={options[name]!r} is not a Trainer option" for name in unknown])
        self.config = TrainerConfig(**options)
        self.algo: Algorithm = PPO() if algo is None else algo
        if not callable(getattr(self.algo, "make_learner", None)):
            raise ConfigError(f"algo={self.algo!r} must be an algorithm config such as aiorl.PPO()")
        self.env_factory = EnvFactory.from_user(env, env_kwargs)
        self.spaces = EnvSpaces.probe(self.env_factory)
        self.obs_encoder = ObservationEncoder.for_space(self.spaces.observation_space)
        self.dist = ActionDistribution.for_space(self.spaces.action_space)
        if policy is None:
            torch.manual_seed(self.config.seed)
            policy = default_policy(self.spaces.observation_space, self.obs_encoder.shape, self.dist)
        validate_policy(policy, self.obs_encoder.shape, self.dist)
        if self.config.normalize_observations:
            policy = ObservationNormalizer(policy, self.obs_encoder.shape)
        self.stats = TrainingStats(return_window=self.config.return_window)
        self._policy_template = copy.deepcopy(policy).cpu()
        self._learner = self.algo.make_learner(copy.deepcopy(policy), self.dist, self.config.device)
        self._version = 0
        self._running: _Running | None = None
        self._run_lock = asyncio.Lock()

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Trainer:
        """A trainer with the tuned settings of :data:`aiorl.presets.PRESETS` ``[name]``.

        ``overrides`` replace trainer options (``seed=1``) or the algorithm (``algo=...``).
        """
        preset = get_preset(name)
        algo = overrides.pop("algo", preset.algo)
        return cls(preset.env, algo, **{**preset.options, **overrides})

    # ---- public state --------------------------------------------------------------------
    @property
    def policy(self) -> nn.Module:
        """The learner's policy (do not modify it while ``run()`` is in progress)."""
        return self._learner.policy

    @property
    def policy_version(self) -> int:
        """Updates applied so far (the version workers act with, once published)."""
        return self._running.consumer.version if self._running else self._version

    @property
    def worker_pids(self) -> dict[int, int]:
        """Worker id -> pid of the live workers (empty when not started); a remote worker's pid is on its node."""
        return self._running.pool.pids if self._running else {}

    @property
    def worker_nodes(self) -> dict[int, str]:
        """Worker id -> where each running worker is: ``"local"``, or its Ray node id (empty when not started)."""
        return self._running.pool.nodes if self._running else {}

    # ---- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Trainer:
        """Create shared memory, the learner thread and the worker pool; start the workers."""
        if self._running is not None:
            raise RuntimeError("this Trainer is already started")
        cfg = self.config
        stack = contextlib.AsyncExitStack()
        try:
            layout = RolloutLayout(
                rollout_length=cfg.rollout_length,
                num_envs=cfg.envs_per_worker,
                obs_shape=self.obs_encoder.shape,
                action_shape=self.dist.action_shape,
                action_dtype=self.dist.action_dtype.str,
            )
            host = await stack.enter_async_context(resolve_backend(cfg.backend).open(self._worker_template(layout)))
            broadcaster = Broadcaster(host.weights)
            broadcaster.publish_now(self._learner.weights(), self._version)

            stack.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(cfg.learner_threads or max(1, (os.cpu_count() or 1) - cfg.num_workers))
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiorl-learner")
            stack.push_async_callback(_shutdown_executor, executor)

            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            pool = WorkerPool(
                host=host,
                seat_slots=cfg.seat_slots(),
                stats=self.stats,
                tasks=tasks,
                budget=RestartBudget(
                    max_restarts=cfg.max_restarts,
                    window_s=cfg.restart_window_s,
                    backoff_s=cfg.restart_backoff_s,
                    backoff_max_s=cfg.restart_backoff_max_s,
                ),
                worker_timeout_s=cfg.worker_timeout_s,
                start_timeout_s=cfg.start_timeout_s,
            )
            consumer = Consumer(
                pool=pool,
                layout=layout,
                learner=self._learner,
                broadcaster=broadcaster,
                executor=executor,
                stats=self.stats,
                rollouts_per_batch=cfg.batch_rollouts,
                max_policy_lag=cfg.max_policy_lag,
                log_interval_s=cfg.log_interval_s,
            )
            consumer.version = self._version
            stack.push_async_callback(self._close_pool, pool, consumer)
            await pool.start()
            self._running = _Running(stack, host, pool, consumer, broadcaster)
        except BaseException:
            await stack.aclose()
            raise
        log.info(
            "started %d workers x %d envs of %s (pids %s)",
            cfg.num_workers,
            cfg.envs_per_worker,
            self.env_factory.describe(),
            list(pool.pids.values()),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the workers and release every resource, whatever the exit path."""
        await self.aclose()

    async def aclose(self) -> None:
        """Tear everything down (idempotent); ``async with`` calls this for you.

        A ``run()`` still in progress in another task ends with :class:`TrainerClosed`.
        """
        running = self._running
        if running is None:
            return
        if self._run_lock.locked():
            running.pool.fail(TrainerClosed("the trainer was closed while run() was in progress"))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RUN_STOP_WAIT_S), self._run_lock:
                    pass
        self._running = None
        self._version = running.consumer.version
        await running.stack.aclose()  # every step is bounded; the pool's last is a SIGKILL

    def _worker_template(self, layout: RolloutLayout) -> WorkerTemplate:
        cfg = self.config
        return WorkerTemplate(
            env_factory=self.env_factory,
            seed=cfg.seed,
            layout=layout,
            num_workers=cfg.num_workers,
            num_slots=cfg.num_workers * cfg.slots_per_worker,
            policy=self._policy_template,
            dist=self.dist,
            obs_encoder=self.obs_encoder,
            heartbeat_interval_s=cfg.heartbeat_interval_s,
            env_error_limit=cfg.env_error_limit,
            start_method=cfg.start_method,
        )

    async def _close_pool(self, pool: WorkerPool, consumer: Consumer) -> None:
        try:
            await pool.close(self.config.shutdown_grace_s)
        finally:
            pool.kill_now()
            while not pool.ready.empty():
                self.stats.discard(pool.ready.get_nowait().env_steps, "shutdown")
            consumer.discard_pending("shutdown")

    # ---- training ------------------------------------------------------------------------
    async def run(
        self,
        total_steps: int = 1_000_000,
        target_return: float | None = None,
        *,
        on_update: UpdateCallback | None = None,
    ) -> TrainResult:
        """Train until ``total_steps`` more env steps are trained on, or ``target_return`` is reached.

        Runs on the caller's event loop. Outside ``async with trainer`` it starts the
        workers itself and stops them before returning.

        Args:
            total_steps: env steps to train on in this call.
            target_return: stop as soon as the mean return of the last
                ``return_window`` finished episodes is at least this.
            on_update: called on the loop after every learner update with an
                :class:`~aiorl.engine.consumer.UpdateReport`; keep it quick.

        Raises:
            ConfigError: invalid ``total_steps`` or ``target_return``.
            EnvError: an env raised inside a worker.
            WorkerCrashed: a worker process died.
            LearnerError: the update raised or produced a non-finite loss.
        """
        problems = []
        if not (isinstance(total_steps, int) and not isinstance(total_steps, bool) and total_steps >= 1):
            problems.append(f"total_steps={total_steps!r} must be an integer >= 1")
        if target_return is not None and not (isinstance(target_return, int | float) and math.isfinite(target_return)):
            problems.append(f"target_return={target_return!r} must be a finite number or None")
        if problems:
            raise ConfigError(problems)
        if self._running is None:
            async with self:
                return await self.run(total_steps, target_return, on_update=on_update)
        if self._run_lock.locked():
            raise RuntimeError("run() is already in progress on this Trainer")
        async with self._run_lock:
            return await self._run(self._running, total_steps, target_return, on_update)

    async def _run(
        self, running: _Running, total_steps: int, target_return: float | None, on_update: UpdateCallback | None
    ) -> TrainResult:
        stats = self.stats
        goal = RunGoal(total_steps=total_steps, target_return=target_return, trained_at_start=stats.steps_trained)
        episodes_at_start, updates_at_start = stats.episodes, stats.updates
        restarts_at_start, env_errors_at_start = stats.worker_restarts, stats.env_errors
        started = time.monotonic()
        try:
            await _supervised(running, running.consumer.run(goal, on_update), broadcast=True)
        finally:
            running.broadcaster.flush()
        return TrainResult(
            env_steps=stats.steps_trained - goal.trained_at_start,
            episodes=stats.episodes - episodes_at_start,
            mean_return=stats.mean_return,
            wall_time=time.monotonic() - started,
            worker_restarts=stats.worker_restarts - restarts_at_start,
            env_errors=stats.env_errors - env_errors_at_start,
            reached_target=goal.reached_target(stats),
            updates=stats.updates - updates_at_start,
            policy_version=running.consumer.version,
            total_env_steps=stats.steps_trained,
            steps_collected=stats.steps_collected,
            steps_discarded=dict(stats.discarded),
            steps_pending=stats.steps_pending,
            policy_lag=running.consumer.lag_summary(),
        )

    async def sample(self, total_steps: int) -> float:
        """Collect ``total_steps`` env steps without learning; return env steps per second.

        Workers act with the current policy and their slots are freed as soon as a
        rollout arrives; the steps are counted as discarded with reason ``sample_only``.
        This measures the sampling side alone (``benchmarks/throughput.py`` uses it).
        Requires a started trainer (``async with``).
        """
        if not (isinstance(total_steps, int) and total_steps >= 1):
            raise ConfigError(f"total_steps={total_steps!r} must be an integer >= 1")
        if self._running is None:
            raise RuntimeError("sample() needs a started trainer: use `async with trainer:`")
        running = self._running
        async with self._run_lock:
            started = time.monotonic()
            taken = await _supervised(running, running.consumer.drain(total_steps), broadcast=False)
            return taken / (time.monotonic() - started)

    async def evaluate(self, episodes: int = 10, *, deterministic: bool = True, seed: int | None = None) -> EvalResult:
        """Play ``episodes`` episodes with the newest published policy, on separate envs.

        Runs in a thread of this process, with a snapshot of the policy, so collection and
        learning go on meanwhile (it may be called while ``run()`` is in progress, from
        another task). ``deterministic`` plays the most likely action; otherwise actions are
        sampled. Evaluation envs are seeded from ``seed`` (default: the trainer's seed plus
        a large offset, apart from the training envs).
        """
        if not (isinstance(episodes, int) and not isinstance(episodes, bool) and episodes >= 1):
            raise ConfigError(f"episodes={episodes!r} must be an integer >= 1")
        if self._running is not None:  # the learner may be mid-update: use the published weights
            weights, version = self._running.consumer.last_weights, self._running.consumer.version
        else:
            weights, version = self._learner.weights(), self._version
        policy = copy.deepcopy(self._policy_template)
        assign_flat(policy, weights)
        return await asyncio.to_thread(
            play_episodes,
            self.env_factory,
            self.obs_encoder,
            self.dist,
            policy,
            episodes=episodes,
            deterministic=deterministic,
            seed=self.config.seed + EVAL_SEED_OFFSET if seed is None else seed,
            policy_version=version,
        )


async def _supervised(running: _Running, work: Coroutine[Any, Any, T], *, broadcast: bool) -> T:
    """Await ``work`` while watching the pool for failures (and broadcasting weights).

    A worker's death or env error cancels ``work`` and is raised as itself, not
    wrapped in an exception group; a remote traceback stays its ``__cause__``.
    """
    try:
        async with asyncio.TaskGroup() as tasks:
            helpers = [tasks.create_task(_raise_failure(running.pool), name="aiorl-failure-watch")]
            if broadcast:
                helpers.append(tasks.create_task(running.broadcaster.run(), name="aiorl-broadcaster"))
            result = await work
            for helper in helpers:
                helper.cancel()
        return result
    except BaseExceptionGroup as group:
        error = _single(group)
        raise error from error.__cause__


async def _raise_failure(pool: WorkerPool) -> None:
    raise await asyncio.shield(pool.failure)


def _single(group: BaseExceptionGroup) -> BaseException:
    """The one meaningful exception of a task group's failure (aiorl errors first)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for leaf in leaves:
        if isinstance(leaf, AiorlError):
            return leaf
    return leaves[0] if leaves else group


async def _shutdown_executor(executor: ThreadPoolExecutor) -> None:
    """Let an in-flight update finish (bounded), then end the learner thread."""
    executor.shutdown(wait=False, cancel_futures=True)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(EXECUTOR_SHUTDOWN_S):
            await asyncio.to_thread(executor.shutdown, wait=True)
