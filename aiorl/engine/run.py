"""One ``run()``: train until the goal is met, with what happens after each update, and the result.

:class:`TrainingRun` drives the session's consumer in a supervised scope
(:meth:`aiorl.engine.session.Session.supervise`), and after every update (on the loop,
the learner idle) notes the checkpoint's counters, publishes the update's
:class:`~aiorl.records.UpdateReport` (the :class:`~aiorl.events.TrainingUpdate` event), passes
the same object to the user's ``on_update`` and starts a periodic evaluation when one is due.
:class:`TrainResult` is what it returns.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiorl.checkpoint import Checkpointer
from aiorl.engine.consumer import RunGoal, UpdateCallback
from aiorl.engine.session import Session
from aiorl.engine.stats import TrainingStats
from aiorl.errors import ConfigError
from aiorl.evaluation import EvalResult, PeriodicEvaluation
from aiorl.events import EventHub
from aiorl.numbers import is_integer, is_number
from aiorl.records import LagStats, UpdateReport


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
        env_errors: env failures during this run (each re-created the env, or ended the run).
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
        steps_per_second: env steps trained per wall-clock second of this call, the same
            definition as :attr:`~aiorl.records.UpdateReport.steps_per_s` (a resumed run's steps
            from before the interruption are not counted).
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
    steps_per_second: float = 0.0

    @property
    def learner_busy(self) -> float:
        """The share of the run's wall time the learner was updating, in [0, 1].

        Near 1 the learner sets the pace (fewer epochs or a GPU train faster); well below,
        the workers do (more workers or envs collect faster).
        """
        return min(self.learner_time / self.wall_time, 1.0) if self.wall_time > 0 else 0.0


class TrainingRun:
    """One ``run()`` on a started session.

    Args:
        session: the started engine session.
        stats: the trainer's counters.
        goal: when the run stops.
        events: the trainer's event hub.
        on_update: the user's callback after each update, if any.
        checkpointer: saves the run's state, if checkpointing.
        evaluate: plays one periodic evaluation.
        eval_interval_steps: trained steps between periodic evaluations (``None``: never).
    """

    def __init__(
        self,
        *,
        session: Session,
        stats: TrainingStats,
        goal: RunGoal,
        events: EventHub,
        on_update: UpdateCallback | None,
        checkpointer: Checkpointer | None,
        evaluate: Callable[[], Awaitable[EvalResult]],
        eval_interval_steps: int | None,
    ) -> None:
        self.session = session
        self.stats = stats
        self.goal = goal
        self.events = events
        self.on_update = on_update
        self.checkpointer = checkpointer
        self._evaluate = evaluate
        self._eval_interval = eval_interval_steps
        self._evaluation: PeriodicEvaluation | None = None
        self._episodes, self._updates = stats.episodes, stats.updates
        self._restarts, self._env_errors = stats.worker_restarts, stats.env_errors

    async def train(self) -> TrainResult:
        """Train until the goal is met (or ``stop()``); write the final checkpoint; return the result.

        Raises:
            EnvError, WorkerRestartError, WorkerError, LearnerError: as :meth:`aiorl.Trainer.run` describes.
        """
        finished = False
        try:
            await self.session.supervise(self._work, broadcast=True)
            assert self._evaluation is not None
            self._evaluation.raise_failure()  # the run's results include its last evaluation
            goal = self.goal  # a run stopped short of its goal keeps its plan: resume() goes on
            finished = not goal.stop_requested or goal.target_reached or goal.progress(self.stats) >= 1.0
        finally:
            try:  # an update a second cancellation left in the learner thread: into the final checkpoint
                await self.session.consumer.settle()
            finally:
                if self.checkpointer is not None:
                    await self.checkpointer.finish(finished=finished)
        return self._result()

    async def _work(self, tasks: asyncio.TaskGroup) -> None:
        self._evaluation = PeriodicEvaluation(self._evaluate, self._eval_interval, self.stats.steps_trained, tasks)
        await self.session.consumer.run(self.goal, self._after_update)

    def _after_update(self, report: UpdateReport) -> None:
        """After each update (on the loop, the learner idle): checkpoint, event, callback, evaluation."""
        if self.checkpointer is not None:
            self.checkpointer.after_update()
        self.events.publish(report)  # the record is the event (TrainingUpdate)
        if self.on_update is not None and inspect.isawaitable(returned := self.on_update(report)):
            if inspect.iscoroutine(returned):
                returned.close()  # never awaited: say why instead of Python's "never awaited" warning
            raise ConfigError(f"on_update={self.on_update!r} returned an awaitable: it {_NOT_ASYNC}")
        assert self._evaluation is not None
        self._evaluation.after_update(self.stats.steps_trained)

    def _result(self) -> TrainResult:
        stats, goal, consumer = self.stats, self.goal, self.session.consumer
        now = time.monotonic()
        return TrainResult(
            env_steps=stats.steps_trained - goal.trained_at_start,
            episodes=stats.episodes - self._episodes,
            mean_return=stats.mean_return if goal.final_return is None else goal.final_return,
            wall_time=now - goal.started,
            worker_restarts=stats.worker_restarts - self._restarts,
            env_errors=stats.env_errors - self._env_errors,
            reached_target=goal.target_reached or goal.reached_target(stats),
            updates=stats.updates - self._updates,
            policy_version=consumer.version,
            total_env_steps=stats.steps_trained,
            steps_collected=stats.steps_collected,
            steps_discarded=dict(stats.discarded),
            steps_pending=stats.steps_pending,
            policy_lag=consumer.lag_summary(),
            evaluations=tuple(self._evaluation.results) if self._evaluation is not None else (),
            stopped=goal.stop_requested,
            learner_time=consumer.learner_s_this_run,
            steps_per_second=goal.steps_per_s(stats, now),
        )


_NOT_ASYNC = (
    "is called on the loop after each update and must not be async: use a plain function (it may start a task), "
    "or read the same reports from `async for event in trainer.events()`"
)


def check_run_arguments(
    total_steps: object,
    target_return: object,
    checkpoint_interval_s: object,
    on_update: object = None,
    checkpoint_path: object = None,
) -> None:
    """Raise one :class:`~aiorl.errors.ConfigError` naming every bad argument of ``Trainer.run``."""
    problems = []
    if on_update is not None and not callable(on_update):
        problems.append(f"on_update={on_update!r} must be callable (it gets each update's UpdateReport)")
    elif inspect.iscoroutinefunction(on_update) or inspect.iscoroutinefunction(type(on_update).__call__):
        problems.append(f"on_update={on_update!r} {_NOT_ASYNC}")
    elif on_update is not None and not _takes_one_argument(on_update):
        problems.append(f"on_update={on_update!r} must take one argument (each update's UpdateReport)")
    if not (is_integer(total_steps) and total_steps >= 1):
        problems.append(f"total_steps={total_steps!r} must be an integer >= 1")
    if target_return is not None and not (is_number(target_return) and math.isfinite(target_return)):
        problems.append(f"target_return={target_return!r} must be a finite number or None")
    if not (is_number(checkpoint_interval_s) and checkpoint_interval_s > 0):
        problems.append(f"checkpoint_interval_s={checkpoint_interval_s!r} must be a number of seconds > 0")
    if checkpoint_path is not None and not isinstance(checkpoint_path, str | os.PathLike):
        problems.append(f"checkpoint_path={checkpoint_path!r} must be a path (str or os.PathLike) or None")
    if problems:
        raise ConfigError(problems)


def _takes_one_argument(function: object) -> bool:
    """Whether ``function`` can be called with one positional argument (``True`` where it cannot be told)."""
    try:
        inspect.signature(function).bind(None)  # type: ignore[arg-type]
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins): let the call say
        return True
    return True
