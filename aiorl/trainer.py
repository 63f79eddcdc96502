"""The Trainer: the public entry point, an async context manager owning every resource.

``async with Trainer(...) as trainer`` starts an engine session (shared memory, the
learner's thread, the supervised worker pool: :mod:`aiorl.engine.session`) and guarantees
teardown in reverse order on exit, on an exception and on cancellation.
``await trainer.run(...)`` runs on the caller's event loop; workers persist between runs.

This module is the facade: the public methods and their contracts. Where the work is done:
the wiring and a run's tasks in :mod:`aiorl.engine.session` and :mod:`aiorl.engine.run`,
the checkpoint format in :mod:`aiorl.checkpoint_state`, periodic evaluation in
:mod:`aiorl.evaluation`, cross-field option checks in :meth:`aiorl.config.TrainerConfig.settled`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
import os
import pickle
import threading
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from aiorl.algos import PPO, Algorithm
from aiorl.algos.reward_scaling import RewardNormalizer
from aiorl.checkpoint import (
    RunPlan,
    check_state,
    checkpoint_path,
    prepare_checkpoint_path,
    read_checkpoint,
    write_checkpoint,
)
from aiorl.checkpoint_state import (
    BEFORE_THE_OPTION,
    current_algo,
    learner_generator,
    load_trainer_state,
    run_checkpointer,
    trainer_state,
)
from aiorl.config import SMALL_MLP_UNITS, TrainerConfig
from aiorl.distributions import ActionDistribution
from aiorl.engine.consumer import RunGoal, UpdateCallback
from aiorl.engine.run import TrainingRun, TrainResult, check_run_arguments
from aiorl.engine.session import Session, published, worker_template
from aiorl.engine.stats import TrainingStats
from aiorl.envs import AtariEnv, EnvFactory, EnvSource, EnvSpaces, ObservationEncoder
from aiorl.envs.factory import check_env_kwargs
from aiorl.errors import CheckpointError, ConfigError, TrainerClosed, did_you_mean
from aiorl.evaluation import EvalResult, play_episodes
from aiorl.events import DEFAULT_BUFFER, EvaluationFinished, EventHub, EventStream
from aiorl.models import (
    ActorCritic,
    ObservationNormalizer,
    assign_flat,
    default_policy,
    is_image_space,
    validate_policy,
)
from aiorl.numbers import is_integer, plain_number
from aiorl.presets import describe_settings, get_preset
from aiorl.recurrent import default_recurrent_policy, state_size, validate_recurrent_policy

__all__ = ["TrainResult", "Trainer"]

log = logging.getLogger("aiorl")

RUN_STOP_WAIT_S = 60.0
EVAL_SEED_OFFSET = 1_000_000_007
EVALUATION_STOP_WAIT_S = 5.0
"""How long a cancelled ``evaluate()`` waits for its thread to stop after the env call in progress."""
LAUNCH_SEED_STRIDE = 10_000_019
"""Worker seeds move by this much each time the trainer starts its workers again (and on
resume from a checkpoint), so a restarted trainer never replays the same env episodes."""


CHECKPOINT_FIXES = frozenset(
    {"env", "env_kwargs", "algo", "policy", "recurrent", "recurrent_size", "normalize_observations"}
)
"""Trainer options a checkpoint fixes: :meth:`Trainer.load` refuses overrides of them."""


class Trainer:
    """Trains a policy on ``env`` with persistent, supervised worker processes.

    Args:
        env: a gymnasium id, or a picklable zero-argument callable returning a
            ``gymnasium.Env`` (a module-level function, a class, ``functools.partial``),
            an :class:`~aiorl.AsyncEnv`, or a ``gymnasium.vector.VectorEnv`` (EnvPool's
            included: each worker steps one as a batch, ``envs_per_worker`` is its
            ``num_envs``; see :mod:`aiorl.envs.vector`).
        algo: the algorithm and its hyperparameters; defaults to ``PPO()``.
        env_kwargs: keyword arguments for ``gymnasium.make`` (with an id only).
        policy: a ``torch.nn.Module`` following the policy interface of
            :mod:`aiorl.models`; defaults to :class:`~aiorl.models.ActorCritic`.
        **options: any field of :class:`~aiorl.config.TrainerConfig`
            (``num_workers``, ``envs_per_worker``, ``rollout_length``, ``seed``,
            ``backend="ray"``, ...).

    Raises:
        ConfigError: (a ``ValueError``) for any invalid value, naming the field and
            the value, and for an unknown option, with the closest option's name
            (``num_worker=2 is not a Trainer option; did you mean 'num_workers'?``);
            every problem in one error, before any process starts.

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
        config = _trainer_config(options)
        self.algo: Algorithm = PPO() if algo is None else algo
        if isinstance(self.algo, type):
            raise ConfigError(f"algo={self.algo.__name__} is a class: pass an instance, such as {self.algo.__name__}()")
        if not callable(getattr(self.algo, "make_learner", None)):
            raise ConfigError(f"algo={self.algo!r} must be an algorithm config such as aiorl.PPO()")
        self.env_factory = EnvFactory.from_user(env, env_kwargs)
        self.spaces = EnvSpaces.probe(self.env_factory)
        self.config = config.settled(
            algo=self.algo,
            numeric_observations=_is_numeric_box(self.spaces),
            async_env=self.spaces.is_async,
            env=self.env_factory.describe(),
            vector_envs=self.spaces.num_envs,
            envs_per_worker_given="envs_per_worker" in options,
        )
        self.obs_encoder = ObservationEncoder.for_space(self.spaces.observation_space)
        self.dist = ActionDistribution.for_space(self.spaces.action_space)
        given = policy is not None
        if policy is None:
            with torch.random.fork_rng(devices=[]):  # seeded, and the caller's generator left as it was
                torch.manual_seed(self.config.seed)
                policy = self._default_policy()
        if state_size(policy):
            validate_recurrent_policy(policy, self.obs_encoder.shape, self.dist)
        elif self.config.recurrent is not None:
            raise ConfigError(
                f"recurrent={self.config.recurrent!r} but policy={type(policy).__name__} is not recurrent "
                "(no state_size; see aiorl.recurrent): pass a recurrent policy, or no policy"
            )
        else:
            validate_policy(policy, self.obs_encoder.shape, self.dist)
        if given:  # after the checks of its outputs, which say more
            _check_picklable_policy(policy)
        self.learner_threads = self.config.learner_thread_count(
            images=is_image_space(self.spaces.observation_space),
            small_mlp=_is_small_mlp(policy),
        )
        """Torch threads of the learner's thread: ``learner_threads``, or its automatic value here."""
        if self.config.normalize_observations:
            policy = ObservationNormalizer(policy, self.obs_encoder.shape)
        self.stats = TrainingStats(return_window=self.config.return_window)
        self._policy_template = copy.deepcopy(policy).cpu()
        self._learner = self.algo.make_learner(copy.deepcopy(policy), self.dist, self.config.device)
        generator = learner_generator(self._learner)
        if generator is not None:
            generator.manual_seed(self.config.seed)
        self.reward_normalizer = RewardNormalizer() if self.config.normalize_rewards else None
        """Running statistics of the reward scaling (``normalize_rewards=True``), else ``None``."""
        self._version = 0
        self._session: Session | None = None
        self._opening = False
        self._close_requested = False  # aclose() while starting: the start tears down and raises
        self._opened: asyncio.Event | None = None  # set when the start in progress is over
        self._closing: asyncio.Future[None] | None = None  # the aclose() in progress, which others await
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._holder = "run()"  # which of run(), sample() and save() holds the lock (for messages)
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

    def _default_policy(self) -> nn.Module:
        space, shape, cfg = self.spaces.observation_space, self.obs_encoder.shape, self.config
        if cfg.recurrent is None:
            return default_policy(space, shape, self.dist)
        try:
            return default_recurrent_policy(space, shape, self.dist, cfg.recurrent, cfg.recurrent_size)
        except (MemoryError, RuntimeError) as exc:  # torch's allocator says RuntimeError
            if not isinstance(exc, MemoryError) and "allocate memory" not in str(exc):
                raise
            raise ConfigError(
                f"recurrent_size={cfg.recurrent_size!r} is too large: the {cfg.recurrent} policy's weights "
                f"cannot be allocated ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            ) from None

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Trainer:
        """A trainer with the tuned settings of :data:`aiorl.presets.PRESETS` ``[name]``.

        ``overrides`` replace trainer options (``seed=1``) or the algorithm (``algo=...``).
        The env is the preset's ``env_factory`` where it has one (Atari's preprocessing, whose
        options ``env_kwargs`` then sets: ``env_kwargs={"repeat_action_probability": 0.0}``),
        else its id.

        Raises:
            ConfigError: an unknown preset, ``env`` among ``overrides`` (the preset names its env),
                or a bad override.
        """
        preset = get_preset(name)
        if "env" in overrides:
            raise ConfigError(
                f"env={overrides['env']!r}: Trainer.from_preset({name!r}) trains the preset's env; "
                "for another one, Trainer(env, algo, **settings)"
            )
        algo = overrides.pop("algo", preset.algo)
        source = preset.env_source
        if isinstance(source, AtariEnv):
            check_env_kwargs(overrides.get("env_kwargs"))
            source = source.with_options(overrides.pop("env_kwargs", None) or {})
        trainer = cls(source, algo, **{**preset.options, **overrides})
        trainer.preset = name
        return trainer

    @classmethod
    def load(cls, path: str | os.PathLike[str] | Mapping[str, Any], **options: Any) -> Trainer:
        """A trainer restored from a checkpoint file (or a log directory holding ``checkpoint.pt``).

        ``path`` may also be a checkpoint already in memory: what :func:`aiorl.checkpoint.read_checkpoint`
        or :meth:`state_dict` returned.

        The policy, the optimiser, the counters (steps, episodes, updates, the policy
        version), the recent returns, the seconds trained and the state of the learner's
        random-number generator are restored (the process's global generators are left
        alone), so training continues with the same step counters; :meth:`resume` continues
        an interrupted run with its learning-rate schedule. ``options`` override saved trainer
        options (``num_workers=4``, ``device="cpu"``). Checkpoints are pickles: load only files you trust.

        Raises:
            CheckpointError: the file is missing, unreadable or not an aiorl checkpoint.
            ConfigError: an override is invalid, or is one of what the checkpoint fixes (``env``,
                ``env_kwargs``, ``algo``, ``policy``, ``recurrent``, ``recurrent_size``,
                ``normalize_observations``: the observation normaliser is part of the policy).
        """
        fixed = sorted(set(options) & CHECKPOINT_FIXES)
        if fixed:
            raise ConfigError(
                f"{', '.join(fixed)} cannot be overridden when loading a checkpoint: its env, algorithm "
                "and policy (architecture and observation normaliser included) are what it continues; "
                "start a new Trainer for others"
            )
        state = check_state(dict(path)) if isinstance(path, Mapping) else read_checkpoint(path)
        factory = state["env"]
        env: EnvSource = factory.env_id if factory.env_id is not None else factory.make_fn
        saved = {k: v for k, v in state["config"].items() if k in TrainerConfig.__dataclass_fields__}
        saved = {**{k: v for k, v in BEFORE_THE_OPTION.items() if k not in state["config"]}, **saved}
        trainer = cls(
            env,
            current_algo(state["algo"]),
            env_kwargs=dict(factory.kwargs) or None,
            policy=state["policy_module"],
            **{**saved, **options},
        )
        trainer.load_state_dict(state)
        return trainer

    @property
    def _run_lock(self) -> asyncio.Lock:
        """The lock held by ``run()``, ``sample()`` and ``save()``: one per event loop the trainer is used in.

        An ``asyncio.Lock`` belongs to the first loop that waits on it; a trainer used in one
        ``asyncio.run()`` after another gets a new one while no run holds the old.
        """
        loop = asyncio.get_running_loop()
        if self._lock_loop is not loop and not self._lock.locked():
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    @contextlib.asynccontextmanager
    async def _exclusive(self, name: str) -> AsyncIterator[None]:
        """Hold the run lock as ``name`` (``"run()"``, ``"sample()"`` or ``"save()"``); raise if it is held."""
        lock = self._run_lock
        if lock.locked():
            raise RuntimeError(f"{name} while {self._holder} is in progress on this Trainer; await it first")
        async with lock:
            self._holder = name
            yield

    def _check_workers(self, name: str) -> None:
        """Raise if an earlier run ended because the workers failed: they take no more runs."""
        failure = None if self._session is None else self._session.failure
        if failure is not None:
            raise RuntimeError(
                f"{name} on a trainer whose workers failed in an earlier run ({type(failure).__name__}: "
                f"{failure}); close it (the end of `async with`, or aclose()) and start it again for new workers"
            ) from failure

    # ---- public state --------------------------------------------------------------------
    @property
    def policy(self) -> nn.Module:
        """The learner's policy (do not modify it while ``run()`` is in progress)."""
        return self._learner.policy

    @property
    def policy_version(self) -> int:
        """Updates applied so far (the version workers act with, once published)."""
        return self._session.consumer.version if self._session else self._version

    @property
    def train_time_s(self) -> float:
        """Seconds spent in ``run()`` over the trainer's life (carried over by checkpoints)."""
        running = 0.0 if self._run_started is None else time.monotonic() - self._run_started
        return self._train_time_s + running

    @property
    def worker_pids(self) -> dict[int, int]:
        """Worker id -> pid of the live workers (empty when not started); a remote worker's pid is on its node."""
        return self._session.pool.pids if self._session else {}

    @property
    def worker_nodes(self) -> dict[int, str]:
        """Worker id -> where each running worker is: ``"local"``, or its Ray node id (empty when not started)."""
        return self._session.pool.nodes if self._session else {}

    # ---- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Trainer:
        """Create shared memory, the learner thread and the worker pool; start the workers.

        Raises:
            TrainerClosed: :meth:`aclose` was called (from another task) while it started.
        """
        self._check_loop()
        if self._session is not None or self._opening:
            raise RuntimeError("this Trainer is already started (or starting in another task)")
        cfg = self.config
        self._opening = True  # set before the first await: a concurrent start fails at once
        self._close_requested = False
        self._opened = opened = asyncio.Event()
        try:
            self._session = await Session.open(
                config=cfg,
                template=worker_template(
                    cfg,
                    env_factory=self.env_factory,
                    is_async=self.spaces.is_async,
                    obs_encoder=self.obs_encoder,
                    dist=self.dist,
                    policy=self._policy_template,
                    algo=self.algo,
                    seed=cfg.seed + self._launches * LAUNCH_SEED_STRIDE,
                    action_space=self.spaces.action_space,
                    action_masks=self.spaces.action_masks,
                    vector=self.spaces.num_envs is not None,
                    frame_stack=self.spaces.frame_stack,
                ),
                learner=self._learner,
                learner_threads=self.learner_threads,
                version=self._version,
                stats=self.stats,
                reward_normalizer=self.reward_normalizer,
                events=self._events,
            )
            self._session_loop = asyncio.get_running_loop()
        except BaseException:
            self._events.end_streams()
            raise
        finally:
            self._opening = False
            opened.set()
        if self._close_requested:  # aclose() came while the workers started: it waits for this
            await self.aclose()
            raise TrainerClosed("the trainer was closed while it was starting")
        log.info(
            "started %d workers x %d envs of %s (pids %s)",
            cfg.num_workers,
            cfg.envs_per_worker,
            self.env_factory.describe(),
            list(self._session.pool.pids.values()),
        )
        log.info(describe_settings(self.env_factory.env_id, self.preset))
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

        A ``run()`` still in progress in another task ends with :class:`TrainerClosed`; so
        does a start in progress (``async with`` or ``run()`` in another task), once its
        workers are up. Concurrent calls close once; each returns when the trainer is closed.
        """
        if self._opening and self._opened is not None:
            self._close_requested = True
            await self._opened.wait()  # the start sees the request, and closes
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        session = self._session
        if session is None:
            return
        self._check_loop()
        self._closing = closing = asyncio.get_running_loop().create_future()
        try:
            if self._run_lock.locked():
                session.fail(TrainerClosed(f"the trainer was closed while {self._holder} was in progress"))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RUN_STOP_WAIT_S), self._run_lock:
                        pass
            self._session = None
            self._session_loop = None
            self._version = session.consumer.version
            self._launches += 1
            try:
                await session.close()
            finally:
                self._version = session.consumer.version  # an update settled in the close counts
                self._events.end_streams()
        finally:
            self._closing = None
            closing.set_result(None)

    def _check_loop(self) -> None:
        """Raise ``RuntimeError`` when the trainer's workers were started in another event loop.

        Its pipes, tasks and (once that loop closed) shared memory belong to that loop: used
        from this one they would fail, or crash the process.
        """
        if self._session is not None and self._session_loop is not asyncio.get_running_loop():
            raise RuntimeError(
                "this Trainer was started in another event loop (an earlier asyncio.run(), say): use it "
                "there, and close it there (`async with`) before using it in another loop"
            )

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
        workers itself and stops them before returning. :meth:`stop` ends it early and
        gracefully (the result says ``stopped``); cancelling the task running it tears
        everything it started down at once.

        Args:
            total_steps: env steps to train on in this call.
            target_return: stop as soon as the mean return of the last
                ``return_window`` finished episodes is at least this.
            on_update: a plain function called on the loop after every learner update with
                an :class:`~aiorl.records.UpdateReport`; keep it quick (an ``async def`` is refused:
                it may start a task, or read :meth:`events` instead).
                (:meth:`events` publishes the same object, a
                :class:`~aiorl.events.TrainingUpdate`, to any number of consumers.)
            checkpoint_path: save checkpoints to this file, not a directory (see :mod:`aiorl.checkpoint`):
                every ``checkpoint_interval_s`` and when the run ends, normally, cancelled
                (Ctrl-C) or failed; each write is atomic. After a learner failure the file
                holds the state after the last good update. Its directory is created, and
                a file is written and removed there before anything starts.
            checkpoint_interval_s: seconds between periodic checkpoints.

        Raises:
            ConfigError: invalid ``total_steps``, ``target_return`` or ``on_update``.
            CheckpointError: no file can be written at ``checkpoint_path`` (raised before
                any process starts), or the run's first checkpoint could not be written.
            EnvError: an env kept failing: ``env_error_limit`` failures in a row of one env
                (a single failure re-creates the env and the run goes on).
            WorkerRestartError: a worker was lost once more after ``max_restarts`` restarts
                within ``restart_window_s`` (a lost worker is otherwise replaced); the last
                loss (:class:`WorkerCrashed`, :class:`WorkerHung`) is its ``__cause__``.
            WorkerStartError: a worker failed while starting, or did not start within
                ``start_timeout_s``.
            WorkerError: the policy raised in a worker, or gave non-finite action-distribution
                inputs (the worker's traceback is the ``__cause__``; no restart).
            LearnerError: the update raised or produced a non-finite loss.
            RuntimeError: another ``run()`` or a ``sample()`` is in progress on this trainer;
                or, in ``async with``, an earlier run ended because the workers failed
                (one of the errors above but ``LearnerError``): leave ``async with`` and
                enter it again for new workers.
        """
        total_steps, target_return, checkpoint_interval_s = (  # numpy numbers from a sweep are taken
            plain_number(total_steps),
            plain_number(target_return),
            plain_number(checkpoint_interval_s),
        )
        check_run_arguments(total_steps, target_return, checkpoint_interval_s, on_update, checkpoint_path)
        self._check_loop()
        if checkpoint_path is not None:  # before any process starts
            await asyncio.to_thread(prepare_checkpoint_path, checkpoint_path)
        if self._session is None:
            try:
                async with self:
                    return await self.run(
                        total_steps,
                        target_return,
                        on_update=on_update,
                        checkpoint_path=checkpoint_path,
                        checkpoint_interval_s=checkpoint_interval_s,
                    )
            finally:  # a stop() during the teardown was for this run, not the next
                self._stop_requested = False
        async with self._exclusive("run()"):
            self._check_workers("run()")
            session = self._session
            plan, self._resume_plan = self._resume_plan, None
            start = self.stats.steps_trained if plan is None else plan.trained_at_start
            goal = RunGoal(
                total_steps,
                target_return,
                start,
                trained_at_call=self.stats.steps_trained,
                train_time_at_start=self._train_time_s,
                stop_requested=self._stop_requested,
            )
            checkpointer = None
            if checkpoint_path is not None:
                checkpointer = run_checkpointer(
                    self, checkpoint_path, checkpoint_interval_s, RunPlan(total_steps, target_return, start)
                )
            training = TrainingRun(
                session=session,
                stats=self.stats,
                goal=goal,
                events=self._events,
                on_update=on_update,
                checkpointer=checkpointer,
                evaluate=functools.partial(self.evaluate, self.config.eval_episodes),
                eval_interval_steps=self.config.eval_interval_steps,
            )
            self._run_started = goal.started
            try:
                result = await training.train()
            finally:
                self._stop_requested = False
                self._train_time_s = goal.wall_time_s(time.monotonic())
                self._run_started = None
            self.unfinished_run = None
            return result

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
        (or are counted as discarded at close). The run's final checkpoint keeps its plan
        (short of its budget and target), so :meth:`resume` of the loaded file goes on.
        If no ``run()`` is in progress, the next one returns without an update (once its
        workers are up, if it starts them): a stop that races with the start of a run is
        not lost. Call it on
        the trainer's event loop (from another thread: ``loop.call_soon_threadsafe(trainer.stop)``).
        To tear down at once instead, cancel the task running ``run()``.
        """
        self._stop_requested = True
        if self._session is not None:
            self._session.consumer.stop()

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
        which saves between updates. A directory (one that exists, or a ``str`` ending in a
        path separator: ``"runs/new/"``) gets its ``checkpoint.pt`` (what :meth:`load` reads
        there); missing directories are created.

        Raises:
            CheckpointError: the file cannot be written there (the message names the path).
        """
        if not isinstance(path, str | os.PathLike):
            raise ConfigError(f"path={path!r} must be a path (str or os.PathLike)")
        if self._run_lock.locked():
            hint = "; pass checkpoint_path= to run() instead" if self._holder == "run()" else ""
            raise RuntimeError(f"save() while {self._holder} is in progress{hint}")
        async with self._exclusive("save()"):  # nothing trains meanwhile: the state's tensors can be the live ones
            self._check_learner_idle("save()")
            state = trainer_state(self, copy_learner=False)  # copied only as torch.save writes them, in its thread
            target = checkpoint_path(path)
            await asyncio.to_thread(prepare_checkpoint_path, target)
            try:
                return await asyncio.to_thread(write_checkpoint, state, target)
            except OSError as exc:  # a full disk since the check
                raise CheckpointError(
                    f"checkpoint {str(target)!r} could not be written ({type(exc).__name__}: {exc})"
                ) from exc

    def state_dict(self) -> dict[str, Any]:
        """A copy of everything a checkpoint holds (layout in :mod:`aiorl.checkpoint`).

        Call it between updates: while no ``run()`` is in progress, or from an
        ``on_update`` callback. Steps collected but not trained yet are counted as
        discarded (``shutdown``) in the copy, as they would be if the trainer closed now.
        """
        self._check_learner_idle("state_dict()")
        return trainer_state(self)

    def _check_learner_idle(self, name: str) -> None:
        """Raise if an update is in the learner (left running by a run cancelled twice, say)."""
        if self._session is not None and self._session.consumer.in_flight:
            raise RuntimeError(f"{name} during a learner update; call it from on_update or between runs")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned into this (not started) trainer.

        Raises:
            CheckpointError: ``state`` is not a whole aiorl checkpoint, or its policy does
                not fit this trainer's.
        """
        if self._session is not None:
            raise RuntimeError("load_state_dict() needs a trainer that is not started")
        load_trainer_state(self, check_state(dict(state) if isinstance(state, Mapping) else state))

    async def sample(self, total_steps: int) -> float:
        """Collect ``total_steps`` env steps without learning; return env steps per second.

        Workers act with the current policy and their slots are freed as soon as a
        rollout arrives; the steps are counted as discarded with reason ``sample_only``.
        This measures the sampling side alone (``benchmarks/throughput.py`` uses it).
        Requires a started trainer (``async with``).

        Raises:
            RuntimeError: a ``run()`` or another ``sample()`` is in progress on this trainer,
                or an earlier run ended because the workers failed (see :meth:`run`).
        """
        total_steps = plain_number(total_steps)
        if not (is_integer(total_steps) and total_steps >= 1):
            raise ConfigError(f"total_steps={total_steps!r} must be an integer >= 1")
        self._check_loop()
        session = self._session
        if session is None:
            raise RuntimeError("sample() needs a started trainer: use `async with trainer:`")
        async with self._exclusive("sample()"):
            self._check_workers("sample()")
            started = time.monotonic()
            taken = await session.supervise(lambda _tasks: session.consumer.drain(total_steps), broadcast=False)
            return taken / (time.monotonic() - started)

    async def evaluate(
        self,
        episodes: int = 10,
        *,
        deterministic: bool = True,
        seed: int | None = None,
        max_episode_steps: int | None = None,
        timeout_s: float | None = None,
    ) -> EvalResult:
        """Play ``episodes`` episodes with the newest published policy, on separate envs.

        Runs in a thread of this process, with a snapshot of the policy, so collection and
        learning go on meanwhile (it may be called while ``run()`` is in progress, from
        another task). ``deterministic`` plays the most likely action; otherwise actions are
        sampled, in both cases only among the valid actions when the env gives action masks.
        Evaluation envs and sampled actions are seeded from ``seed`` (default: the trainer's
        seed plus a large offset, apart from the training envs): the same policy and seed play
        the same episodes, and the process's global generators are left alone.

        Episodes are bounded: one that has not ended after ``max_episode_steps`` steps
        (default: ``eval_max_episode_steps``, else the env's ``spec.max_episode_steps``, else
        100,000) is cut there and counted in ``EvalResult.capped``; ``timeout_s`` (default:
        ``eval_timeout_s``) limits the wall-clock time of all the episodes.

        An :class:`~aiorl.AsyncEnv`'s calls are also bounded by ``env_timeout_s``. Cancelling
        the call stops the episodes after the env call in progress.

        Raises:
            EvaluationTimeout: ``timeout_s`` passed, or an async env's call took longer than
                ``env_timeout_s`` (the message names the env and the limit).
        """
        episodes, seed, max_episode_steps, timeout_s = map(plain_number, (episodes, seed, max_episode_steps, timeout_s))
        if not (is_integer(episodes) and episodes >= 1):
            raise ConfigError(f"episodes={episodes!r} must be an integer >= 1")
        weights, version = published(self._session, self._learner, self._version)
        stop = threading.Event()  # a cancelled evaluation ends its thread after the current env call
        cap = self.config.eval_max_episode_steps if max_episode_steps is None else max_episode_steps
        playing = asyncio.ensure_future(
            asyncio.to_thread(
                _play_snapshot,
                self._policy_template,
                weights,
                self.env_factory,
                self.obs_encoder,
                self.dist,
                episodes=episodes,
                deterministic=deterministic,
                seed=self.config.seed + EVAL_SEED_OFFSET if seed is None else seed,
                policy_version=version,
                max_episode_steps=cap,
                timeout_s=self.config.eval_timeout_s if timeout_s is None else timeout_s,
                call_timeout_s=self.config.env_timeout_s,
                stop=stop,
            )
        )
        try:
            result = await asyncio.shield(playing)
        except asyncio.CancelledError:
            stop.set()
            # Nobody reads its outcome (EvaluationStopped, or what it raised meanwhile): retrieve it,
            # so asyncio does not log "exception was never retrieved".
            playing.add_done_callback(lambda done: done.cancelled() or done.exception())
            await asyncio.wait({playing}, timeout=EVALUATION_STOP_WAIT_S)
            raise
        self._events.publish(EvaluationFinished(result))
        return result


def _play_snapshot(template: nn.Module, weights: np.ndarray, *args: Any, **kwargs: Any) -> EvalResult:
    """:func:`play_episodes` with a copy of ``template`` holding ``weights`` (flat, as published).

    In the evaluation's thread: a big model's copy took ~80 ms, too long for the event loop.
    """
    policy = copy.deepcopy(template)
    assign_flat(policy, weights)
    return play_episodes(*args, policy, **kwargs)


def _is_numeric_box(spaces: EnvSpaces) -> bool:
    """Whether observations are a ``Box`` of quantities, not images (where running normalisation helps)."""
    space = spaces.observation_space
    return isinstance(space, gym.spaces.Box) and not is_image_space(space) and space.dtype != np.bool_


def _trainer_config(options: dict[str, Any]) -> TrainerConfig:
    """The :class:`TrainerConfig` of ``Trainer``'s keyword options; one error names every unknown and bad one."""
    known = TrainerConfig.__dataclass_fields__
    problems = [
        f"{name}={value!r} is not a Trainer option{did_you_mean(name, known)}"
        for name, value in sorted(options.items())
        if name not in known
    ]
    try:
        config = TrainerConfig(**{name: value for name, value in options.items() if name in known})
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return config


def _check_picklable_policy(policy: nn.Module) -> None:
    """A copy of the policy travels to every worker process, pickled: refuse one that cannot be.

    Raises:
        ConfigError: naming the policy and why (a lambda or a local function in it, say),
            before any process starts.
    """
    try:
        pickle.dumps(policy)
    except Exception as exc:
        raise ConfigError(
            f"policy={type(policy).__name__}(...) cannot be pickled to reach worker processes "
            f"({type(exc).__name__}: {exc}); keep lambdas, local functions and open handles out of it"
        ) from exc


def _is_small_mlp(policy: nn.Module) -> bool:
    """Whether ``policy`` is aiorl's MLP with no layer wider than ``SMALL_MLP_UNITS`` (it learns on one thread)."""
    return type(policy) is ActorCritic and all(
        max(m.in_features, m.out_features) <= SMALL_MLP_UNITS for m in policy.modules() if isinstance(m, nn.Linear)
    )
