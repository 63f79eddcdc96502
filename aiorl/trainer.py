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
import functools
import logging
import math
import os
import random
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import aiorl
from aiorl.algos import PPO, Algorithm
from aiorl.algos.reward_scaling import RewardNormalizer
from aiorl.backends import LocalBackend, WorkerHost, WorkerTemplate, resolve_backend
from aiorl.checkpoint import FORMAT, FORMAT_VERSION, Checkpointer, RunPlan, read_checkpoint, write_checkpoint
from aiorl.config import TrainerConfig
from aiorl.distributions import ActionDistribution
from aiorl.engine.broadcaster import Broadcaster
from aiorl.engine.consumer import Consumer, LagStats, RunGoal, UpdateCallback, UpdateReport
from aiorl.engine.ledger import DiscardReason, discarded_at_close
from aiorl.engine.pool import WorkerPool
from aiorl.engine.restarts import RestartBudget
from aiorl.engine.stats import TrainingStats
from aiorl.envs import EnvFactory, EnvSource, EnvSpaces, ObservationEncoder
from aiorl.errors import AiorlError, ConfigError, TrainerClosed
from aiorl.evaluation import EvalResult, play_episodes
from aiorl.events import (
    DEFAULT_BUFFER,
    CheckpointSaved,
    EvaluationFinished,
    EventHub,
    EventStream,
    TrainingUpdate,
)
from aiorl.models import ObservationNormalizer, assign_flat, default_policy, validate_policy
from aiorl.presets import PRESETS, get_preset
from aiorl.shm import RolloutLayout
from aiorl.worker import AsyncActing

log = logging.getLogger("aiorl")
T = TypeVar("T")

EXECUTOR_SHUTDOWN_S = 60.0
RUN_STOP_WAIT_S = 60.0
EVAL_SEED_OFFSET = 1_000_000_007
LAUNCH_SEED_STRIDE = 10_000_019
"""Worker seeds move by this much each time the trainer starts its workers again (and on
resume from a checkpoint), so a restarted trainer never replays the same env episodes."""


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What one ``run()`` did.

    Attributes:
        env_steps: env steps trained on during this run.
        episodes: episodes that finished during this run.
        mean_return: mean return of the last ``return_window`` finished episodes when the run
            decided to stop.
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
        evaluations: the periodic evaluations of this run (``eval_interval_steps``), oldest first.
        stopped: whether the run ended because ``trainer.stop()`` was called.
        learner_time: seconds the learner spent in updates during this run (see ``learner_busy``).
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
    evaluations: tuple[EvalResult, ...] = ()
    stopped: bool = False
    learner_time: float = 0.0

    @property
    def steps_per_second(self) -> float:
        """Env steps trained per wall-clock second in this run."""
        return self.env_steps / self.wall_time if self.wall_time > 0 else 0.0

    @property
    def learner_busy(self) -> float:
        """The share of the run's wall time the learner was updating, in [0, 1].

        Near 1 the learner sets the pace (fewer epochs or a GPU train faster); well below,
        the workers do (more workers or envs collect faster).
        """
        return min(self.learner_time / self.wall_time, 1.0) if self.wall_time > 0 else 0.0


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
        has_discount = isinstance(getattr(self.algo, "gamma", None), float)
        if self.config.normalize_rewards and not has_discount:
            raise ConfigError(
                f"normalize_rewards=True needs the algorithm's discount, but algo={self.algo!r} has no float `gamma`"
            )
        self.env_factory = EnvFactory.from_user(env, env_kwargs)
        self.spaces = EnvSpaces.probe(self.env_factory)
        self.config = replace(
            self.config,
            normalize_observations=_choose(self.config.normalize_observations, _is_flat_float_box(self.spaces)),
            normalize_rewards=_choose(self.config.normalize_rewards, has_discount),
        )
        if self.spaces.is_async and self.config.env_threads:
            raise ConfigError(
                f"env_threads=True runs blocking gymnasium envs in threads, but env={self.env_factory.describe()!r} "
                "returns an aiorl.AsyncEnv already"
            )
        if (self.spaces.is_async or self.config.env_threads) and not isinstance(
            resolve_backend(self.config.backend), LocalBackend
        ):
            raise ConfigError(
                f"backend={self.config.backend!r} steps gymnasium envs inline only; async envs (an aiorl.AsyncEnv "
                "or env_threads=True) run on the local backend for now"
            )
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
        self.reward_normalizer = RewardNormalizer() if self.config.normalize_rewards else None
        """Running statistics of the reward scaling (``normalize_rewards=True``), else ``None``."""
        self._version = 0
        self._running: _Running | None = None
        self._run_lock = asyncio.Lock()
        self._events = EventHub()
        self._stop_requested = False
        self._launches = 0  # times the workers were started and stopped (moves their seeds)
        self._train_time_s = 0.0  # seconds spent in finished run() calls (and before a resume)
        self._run_started: float | None = None
        self._resume_plan: RunPlan | None = None
        self.preset: str | None = None
        """The name of the preset this trainer was built from (:meth:`from_preset`), else ``None``."""
        self.unfinished_run: RunPlan | None = None
        """The run a loaded checkpoint was taken in, if it had not finished (see :meth:`resume`)."""

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Trainer:
        """A trainer with the tuned settings of :data:`aiorl.presets.PRESETS` ``[name]``.

        ``overrides`` replace trainer options (``seed=1``) or the algorithm (``algo=...``).
        """
        preset = get_preset(name)
        algo = overrides.pop("algo", preset.algo)
        trainer = cls(preset.env, algo, **{**preset.options, **overrides})
        trainer.preset = name
        return trainer

    @classmethod
    def load(cls, path: str | os.PathLike[str], **options: Any) -> Trainer:
        """A trainer restored from a checkpoint file (or a log directory holding ``checkpoint.pt``).

        The policy, the optimiser, the counters (steps, episodes, updates, the policy
        version), the recent returns, the seconds trained and the random-number generator
        states of this process are restored, so training continues with the same step
        counters; :meth:`resume` continues an interrupted run with its learning-rate
        schedule. ``options`` override saved trainer options (``num_workers=4``,
        ``device="cpu"``). Checkpoints are pickles: load only files you trust.

        Raises:
            CheckpointError: the file is missing, unreadable or not an aiorl checkpoint.
            ConfigError: an override is invalid.
        """
        state = read_checkpoint(path)
        factory = state["env"]
        env: EnvSource = factory.env_id if factory.env_id is not None else factory.make_fn
        saved = {k: v for k, v in state["config"].items() if k in TrainerConfig.__dataclass_fields__}
        trainer = cls(
            env,
            state["algo"],
            env_kwargs=dict(factory.kwargs) or None,
            policy=state["policy_module"],
            **{**saved, **options},
        )
        trainer.load_state_dict(state)
        return trainer

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
    def train_time_s(self) -> float:
        """Seconds spent in ``run()`` over the trainer's life (carried over by checkpoints)."""
        running = 0.0 if self._run_started is None else time.monotonic() - self._run_started
        return self._train_time_s + running

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
            torch.set_num_threads(cfg.learner_threads or max(1, usable_cores() - cfg.num_workers))
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
            pool.on_event = self._events.publish
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
                reward_normalizer=self.reward_normalizer,
                pin_memory=torch.device(cfg.device).type == "cuda",
            )
            consumer.version = self._version
            stack.push_async_callback(self._close_pool, pool, consumer)
            await pool.start()
            self._running = _Running(stack, host, pool, consumer, broadcaster)
        except BaseException:
            try:
                await stack.aclose()
            finally:
                self._events.end_streams()
            raise
        log.info(
            "started %d workers x %d envs of %s (pids %s)",
            cfg.num_workers,
            cfg.envs_per_worker,
            self.env_factory.describe(),
            list(pool.pids.values()),
        )
        if self.preset is not None:
            log.info("settings: the tuned preset %r (aiorl.presets.PRESETS)", self.preset)
        elif self.env_factory.env_id in PRESETS:
            log.info(
                "a tuned preset exists for %s: Trainer.from_preset(%r) (CLI: --preset %s); training with the "
                "defaults and your options instead",
                self.env_factory.env_id,
                self.env_factory.env_id,
                self.env_factory.env_id,
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
        self._launches += 1
        try:
            await running.stack.aclose()  # every step is bounded; the pool's last is a SIGKILL
        finally:
            self._events.end_streams()

    def _worker_template(self, layout: RolloutLayout) -> WorkerTemplate:
        cfg = self.config
        return WorkerTemplate(
            env_factory=self.env_factory,
            seed=cfg.seed + self._launches * LAUNCH_SEED_STRIDE,
            layout=layout,
            num_workers=cfg.num_workers,
            num_slots=cfg.num_workers * cfg.slots_per_worker,
            policy=self._policy_template,
            dist=self.dist,
            obs_encoder=self.obs_encoder,
            heartbeat_interval_s=cfg.heartbeat_interval_s,
            env_error_limit=cfg.env_error_limit,
            start_method=cfg.start_method,
            reward_gamma=getattr(self.algo, "gamma", None) if cfg.normalize_rewards else None,
            acting=self._acting(),
        )

    def _acting(self) -> AsyncActing | None:
        """How workers step async envs, or ``None`` to step gymnasium envs inline."""
        cfg = self.config
        if not (self.spaces.is_async or cfg.env_threads):
            return None
        return AsyncActing(
            env_threads=cfg.env_threads,
            env_timeout_s=cfg.env_timeout_s,
            act_batch=cfg.act_batch or cfg.envs_per_worker,
            act_wait_s=cfg.act_wait_s,
        )

    async def _close_pool(self, pool: WorkerPool, consumer: Consumer) -> None:
        try:
            await pool.close(self.config.shutdown_grace_s)
        finally:
            pool.kill_now()
            while not pool.ready.empty():
                pool.ledger.discard(pool.ready.get_nowait().env_steps, DiscardReason.SHUTDOWN)
            consumer.discard_pending(DiscardReason.SHUTDOWN)

    # ---- training ------------------------------------------------------------------------
    async def run(
        self,
        total_steps: int = 1_000_000,
        target_return: float | None = None,
        *,
        on_update: UpdateCallback | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        checkpoint_interval_s: float = 60.0,
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
                (:meth:`events` streams the same news to any number of consumers.)

        :meth:`stop` ends it early and gracefully (the result says ``stopped``);
        cancelling the task running it tears everything it started down at once.
            checkpoint_path: save checkpoints to this file (see :mod:`aiorl.checkpoint`):
                every ``checkpoint_interval_s`` and when the run ends, normally, cancelled
                (Ctrl-C) or failed; each write is atomic. After a learner failure the file
                holds the state after the last good update.
            checkpoint_interval_s: seconds between periodic checkpoints.

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
        if not (isinstance(checkpoint_interval_s, int | float) and checkpoint_interval_s > 0):
            problems.append(f"checkpoint_interval_s={checkpoint_interval_s!r} must be a number of seconds > 0")
        if problems:
            raise ConfigError(problems)
        checkpointing = (checkpoint_path, checkpoint_interval_s)
        if self._running is None:
            async with self:
                return await self.run(
                    total_steps,
                    target_return,
                    on_update=on_update,
                    checkpoint_path=checkpoint_path,
                    checkpoint_interval_s=checkpoint_interval_s,
                )
        if self._run_lock.locked():
            raise RuntimeError("run() is already in progress on this Trainer")
        async with self._run_lock:
            return await self._run(self._running, total_steps, target_return, on_update, checkpointing)

    async def _run(
        self,
        running: _Running,
        total_steps: int,
        target_return: float | None,
        on_update: UpdateCallback | None,
        checkpointing: tuple[str | os.PathLike[str] | None, float] = (None, 60.0),
    ) -> TrainResult:
        stats = self.stats
        plan, self._resume_plan = self._resume_plan, None
        start = stats.steps_trained if plan is None else plan.trained_at_start
        goal = RunGoal(
            total_steps=total_steps,
            target_return=target_return,
            trained_at_start=start,
            stop_requested=self._stop_requested,
        )
        episodes_at_start, updates_at_start = stats.episodes, stats.updates
        learner_s_at_start = running.consumer.learner_s
        restarts_at_start, env_errors_at_start = stats.worker_restarts, stats.env_errors
        started = self._run_started = time.monotonic()
        checkpointer = self._checkpointer(checkpointing, RunPlan(total_steps, target_return, start))
        evaluation = _PeriodicEvaluation(self, self.config.eval_interval_steps)
        after_update = functools.partial(self._after_update, goal, on_update, checkpointer, evaluation)
        finished = False
        try:
            await _supervised(running, running.consumer.run(goal, after_update), broadcast=True)
            await evaluation.finish()  # the run's results include its last evaluation
            finished = True
        finally:
            await evaluation.cancel()
            running.broadcaster.flush()
            self._stop_requested = False
            self._train_time_s += time.monotonic() - started
            self._run_started = None
            if checkpointer is not None:
                await checkpointer.finish(finished=finished)
        self.unfinished_run = None
        return TrainResult(
            env_steps=stats.steps_trained - goal.trained_at_start,
            episodes=stats.episodes - episodes_at_start,
            mean_return=stats.mean_return if goal.final_return is None else goal.final_return,
            wall_time=time.monotonic() - started,
            worker_restarts=stats.worker_restarts - restarts_at_start,
            env_errors=stats.env_errors - env_errors_at_start,
            reached_target=goal.target_reached or goal.reached_target(stats),
            updates=stats.updates - updates_at_start,
            policy_version=running.consumer.version,
            total_env_steps=stats.steps_trained,
            steps_collected=stats.steps_collected,
            steps_discarded=dict(stats.discarded),
            steps_pending=stats.steps_pending,
            policy_lag=running.consumer.lag_summary(),
            evaluations=tuple(evaluation.results),
            stopped=goal.stop_requested,
            learner_time=running.consumer.learner_s - learner_s_at_start,
        )

    def _after_update(
        self,
        goal: RunGoal,
        on_update: UpdateCallback | None,
        checkpointer: Checkpointer | None,
        evaluation: _PeriodicEvaluation,
        report: UpdateReport,
    ) -> None:
        """After each update (on the loop, the learner idle): checkpoint snapshot, event, callback, evaluation.

        Snapshots the state for the checkpointer, publishes a :class:`~aiorl.events.TrainingUpdate`,
        calls ``on_update`` and starts an evaluation if one is due.
        """
        if checkpointer is not None:
            checkpointer.after_update()
        if self._events.subscribed:
            elapsed = time.monotonic() - goal.started
            self._events.publish(
                TrainingUpdate(
                    policy_version=report.version,
                    env_steps=report.env_steps,
                    batch_steps=report.batch_steps,
                    losses=report.metrics,
                    lag=report.lag,
                    steps_per_s=(report.env_steps - goal.trained_at_start) / elapsed if elapsed > 0 else 0.0,
                    mean_return=report.mean_return,
                    update_s=report.update_s,
                )
            )
        if on_update is not None:
            on_update(report)
        evaluation.after_update(self.stats.steps_trained)

    # ---- embedding -------------------------------------------------------------------------
    def events(self, maxsize: int = DEFAULT_BUFFER) -> EventStream:
        """Subscribe to the trainer's events: ``async for event in trainer.events(): ...``.

        The stream receives every event published from this call on (subscribe before
        or during ``run()``): :class:`~aiorl.events.TrainingUpdate`,
        :class:`~aiorl.events.EpisodeFinished`, :class:`~aiorl.events.WorkerRestarted`,
        :class:`~aiorl.events.EvaluationFinished`, :class:`~aiorl.events.CheckpointSaved`.
        It ends once the trainer closes (the end of ``async with``, or of a ``run()``
        called outside one), after the events already buffered.

        Any number of streams may be open; none slows training down. A stream holds at
        most ``maxsize`` events: when its consumer falls behind, the oldest are dropped,
        counted in ``stream.dropped``, and an :class:`~aiorl.events.EventsDropped` marks
        the gap. Iterate on the trainer's event loop.
        """
        return self._events.subscribe(maxsize)

    def stop(self) -> None:
        """Ask ``run()`` to end gracefully: it finishes the update in progress and returns its result.

        The result has ``stopped=True``; rollouts already collected stay for the next run
        (or are counted as discarded at close). If no ``run()`` is in progress, the next one
        returns at once: a stop that races with the start of a run is not lost. Call it on
        the trainer's event loop (from another thread: ``loop.call_soon_threadsafe(trainer.stop)``).
        To tear down at once instead, cancel the task running ``run()``.
        """
        self._stop_requested = True
        if self._running is not None:
            self._running.consumer.stop()

    def _checkpointer(
        self, checkpointing: tuple[str | os.PathLike[str] | None, float], plan: RunPlan
    ) -> Checkpointer | None:
        path, interval_s = checkpointing
        if path is None:
            return None
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return Checkpointer(
            path, functools.partial(self._snapshot, plan), interval_s=interval_s, on_saved=self._checkpoint_saved
        )

    def _checkpoint_saved(self, path: Path, state: dict[str, Any]) -> None:
        self._events.publish(CheckpointSaved(str(path), state["stats"]["steps_trained"], state["policy_version"]))

    def _snapshot(self, plan: RunPlan) -> dict[str, Any]:
        state = self.state_dict()
        state["run"] = asdict(plan)
        return state

    async def resume(
        self,
        *,
        on_update: UpdateCallback | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        checkpoint_interval_s: float = 60.0,
    ) -> TrainResult:
        """Continue the run a loaded checkpoint interrupted, as if it had never stopped.

        The run keeps its step budget (counted from where it originally started), its
        target return and its learning-rate schedule; the result's ``env_steps`` counts
        the whole run. Arguments are those of :meth:`run`.

        Raises:
            RuntimeError: :attr:`unfinished_run` is ``None`` (the checkpoint was taken after
                its run finished, or the trainer was not loaded from a checkpoint); call
                :meth:`run` to train more.
        """
        plan = self.unfinished_run
        if plan is None:
            raise RuntimeError("there is no unfinished run to resume; call run() to train more")
        remaining = plan.remaining(self.stats.steps_trained)
        if remaining == 0:
            raise RuntimeError("the unfinished run has no steps left; call run() to train more")
        self._resume_plan = plan
        try:
            return await self.run(
                plan.total_steps,
                plan.target_return,
                on_update=on_update,
                checkpoint_path=checkpoint_path,
                checkpoint_interval_s=checkpoint_interval_s,
            )
        finally:
            self._resume_plan = None

    async def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a checkpoint of the current state to ``path`` (atomically, in a thread); return the path.

        Call it while no ``run()`` is in progress; during a run use ``run(checkpoint_path=...)``,
        which saves between updates.
        """
        if self._run_lock.locked():
            raise RuntimeError("save() while run() is in progress; pass checkpoint_path= to run() instead")
        state = self.state_dict()
        return await asyncio.to_thread(write_checkpoint, state, path)

    def state_dict(self) -> dict[str, Any]:
        """A copy of everything a checkpoint holds (layout in :mod:`aiorl.checkpoint`).

        Call it between updates: while no ``run()`` is in progress, or from an
        ``on_update`` callback. Steps collected but not trained yet are counted as
        discarded (``shutdown``) in the copy, as they would be if the trainer closed now.
        """
        if self._running is not None and self._running.consumer.in_flight:
            raise RuntimeError("state_dict() during a learner update; call it from on_update or between runs")
        learner_state = getattr(self._learner, "state_dict", None)
        learner = learner_state() if learner_state is not None else {"policy": self._learner.policy.state_dict()}
        template = self._policy_template
        stats = self.stats
        discarded = discarded_at_close(stats)
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "aiorl_version": aiorl.__version__,
            "env": self.env_factory,
            "observation_space": self.spaces.observation_space,
            "action_space": self.spaces.action_space,
            "algo": self.algo,
            "config": asdict(self.config),
            "policy_module": template.policy if isinstance(template, ObservationNormalizer) else template,
            "learner": copy.deepcopy(learner),
            "policy_version": self.policy_version,
            "stats": {
                "steps_collected": stats.steps_collected,
                "steps_trained": stats.steps_trained,
                "discarded": discarded,
                "episodes": stats.episodes,
                "updates": stats.updates,
                "worker_restarts": stats.worker_restarts,
                "env_errors": stats.env_errors,
                "recent_returns": list(stats.recent_returns),
            },
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            "launches": self._launches + (1 if self._running is not None else 0),
            "train_time_s": self.train_time_s,
            "run": None,
            "reward_normalizer": None if self.reward_normalizer is None else self.reward_normalizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned into this (not started) trainer."""
        if self._running is not None:
            raise RuntimeError("load_state_dict() needs a trainer that is not started")
        load = getattr(self._learner, "load_state_dict", None)
        if load is not None and "optimizer" in state["learner"]:
            load(state["learner"])
        else:
            self._learner.policy.load_state_dict(state["learner"]["policy"])
        self._version = state["policy_version"]
        saved = state["stats"]
        stats = self.stats
        for name in ("steps_collected", "steps_trained", "episodes", "updates", "worker_restarts", "env_errors"):
            setattr(stats, name, saved[name])
        stats.discarded.clear()
        stats.discarded.update(saved["discarded"])
        stats.recent_returns.clear()
        stats.recent_returns.extend(saved["recent_returns"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        self._launches = state["launches"]
        self._train_time_s = state["train_time_s"]
        run = state.get("run")
        self.unfinished_run = RunPlan(**run) if run else None
        if self.reward_normalizer is not None and state.get("reward_normalizer") is not None:
            self.reward_normalizer.load_state_dict(state["reward_normalizer"])

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
        result = await asyncio.to_thread(
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
        self._events.publish(EvaluationFinished(result))
        return result


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


class _PeriodicEvaluation:
    """Starts ``trainer.evaluate()`` every ``interval`` trained steps during a run, one at a time.

    Owned by the run: it waits for the last evaluation (:meth:`finish`) or cancels it
    (:meth:`cancel`) before returning.
    """

    def __init__(self, trainer: Trainer, interval: int | None) -> None:
        self.trainer = trainer
        self.interval = interval
        self.next_at = trainer.stats.steps_trained + (interval or 0)
        self.results: list[EvalResult] = []
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None  # of an earlier evaluation that failed

    def after_update(self, steps_trained: int) -> None:
        """Start an evaluation if one is due and none is running."""
        if self.interval is None or steps_trained < self.next_at or not (self._task is None or self._task.done()):
            return
        self.next_at = steps_trained + self.interval
        if self._task is not None and self._error is None:
            self._error = self._task.exception()  # raised when the run finishes
        self._task = asyncio.get_running_loop().create_task(self._evaluate(), name="aiorl-evaluation")

    async def _evaluate(self) -> None:
        result = await self.trainer.evaluate(self.trainer.config.eval_episodes)
        self.results.append(result)
        log.info(
            "evaluation of version %d: mean return %.1f +- %.1f over %d episodes",
            result.policy_version,
            result.mean_return,
            result.std_return,
            result.episodes,
        )

    async def finish(self) -> None:
        """Wait for the evaluation in progress, if any; raise what a failed evaluation raised."""
        if self._task is not None:
            await self._task
        if self._error is not None:
            raise self._error

    async def cancel(self) -> None:
        """Cancel the evaluation in progress, if any, and wait until it is gone."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under ``taskset``), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


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


def _choose(option: bool | None, automatic: bool) -> bool:
    """An option the user set, or its automatic value where they left it ``None``."""
    return automatic if option is None else option


def _is_flat_float_box(spaces: EnvSpaces) -> bool:
    """Whether observations are a flat float vector (where running normalisation helps)."""
    space = spaces.observation_space
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 1 and np.issubdtype(space.dtype, np.floating)


async def _shutdown_executor(executor: ThreadPoolExecutor) -> None:
    """Let an in-flight update finish (bounded), then end the learner thread."""
    executor.shutdown(wait=False, cancel_futures=True)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(EXECUTOR_SHUTDOWN_S):
            await asyncio.to_thread(executor.shutdown, wait=True)
