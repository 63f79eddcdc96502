"""The consumer: turns ready rollouts into learner updates, off the event loop.

It takes ready rollouts from the pool's queue, drops those older than
``max_policy_lag`` (counted as discarded; with async envs, whose columns may span
several versions, the steps older than that), copies the rest into the batch (in a
thread when they are big, as images are) and frees their slots at once, runs the
learner update in an executor thread (an update inline would freeze the loop for the
whole update), hands the new weights to the broadcaster and reports the update.

With ``max_policy_lag=0`` (strict on-policy PPO) slots are freed only after the
new weights are published, so every worker acts with the newest policy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiorl.algos.batch import BatchBuilder, RolloutBatch
from aiorl.algos.learner import Learner
from aiorl.algos.reward_scaling import RewardNormalizer
from aiorl.engine.broadcaster import Broadcaster
from aiorl.engine.ledger import DiscardReason
from aiorl.engine.pool import ReadyRollout, WorkerPool
from aiorl.engine.stats import TrainingStats
from aiorl.errors import LearnerError
from aiorl.records import LagStats, UpdateReport, steps_per_second
from aiorl.shm import RolloutLayout

log = logging.getLogger("aiorl")

CANCELLED_UPDATE_WAIT_S = 60.0
"""How long a cancelled run waits for the update already running in the learner thread."""
THREAD_COPY_BYTES = 1 << 20
"""Rollouts of more bytes than this are copied into the batch in a thread, not on the loop."""


UpdateCallback = Callable[[UpdateReport], Any]


@dataclass(slots=True)
class RunGoal:
    """When the current ``run()`` stops."""

    total_steps: int
    target_return: float | None
    trained_at_start: int
    """``steps_trained`` when the run began (for a resumed run: when the interrupted run began)."""
    trained_at_call: int
    """``steps_trained`` when this ``run()`` call began."""
    train_time_at_start: float = 0.0
    """The trainer's ``train_time_s`` when this call began."""
    started: float = field(default_factory=time.monotonic)
    """Monotonic time this call began."""
    stop_requested: bool = False
    """Set by ``trainer.stop()``: end after the update in progress."""
    target_reached: bool = False
    """Latched once a full window of episodes averaged ``target_return``."""
    final_return: float | None = None
    """The mean return when :meth:`done` first said stop (rollouts that arrive while the run
    winds down still add episodes to the trainer's statistics, not to this)."""

    def steps_per_s(self, stats: TrainingStats, now: float) -> float:
        """Env steps trained per second since this call began (:func:`~aiorl.records.steps_per_second`)."""
        return steps_per_second(stats.steps_trained - self.trained_at_call, now - self.started)

    def wall_time_s(self, now: float) -> float:
        """The trainer's ``train_time_s`` at ``now``."""
        return self.train_time_at_start + (now - self.started)

    def progress(self, stats: TrainingStats) -> float:
        """Fraction of ``total_steps`` trained in this run, in [0, 1]."""
        return min((stats.steps_trained - self.trained_at_start) / self.total_steps, 1.0)

    def reached_target(self, stats: TrainingStats) -> bool:
        """Whether a full window of episodes averages at least ``target_return``."""
        return self.target_return is not None and stats.window_full and stats.mean_return >= self.target_return

    def done(self, stats: TrainingStats) -> bool:
        """Whether the run should stop now (the first yes latches the target and the return)."""
        self.target_reached = self.target_reached or self.reached_target(stats)
        done = self.stop_requested or self.progress(stats) >= 1.0 or self.target_reached
        if done and self.final_return is None:
            self.final_return = stats.mean_return
        return done


@dataclass(frozen=True, slots=True)
class AbandonedUpdate:
    """An update still running in the learner thread when its run was cancelled (see :meth:`Consumer.settle`)."""

    future: asyncio.Future[tuple[dict[str, float], np.ndarray]]
    batch: RolloutBatch
    rollouts: list[ReadyRollout]
    started: float
    goal: RunGoal
    on_update: UpdateCallback | None


class Consumer:
    """Feeds the learner. One instance per started trainer (``async with``); ``run`` once per ``run()``."""

    def __init__(
        self,
        *,
        pool: WorkerPool,
        layout: RolloutLayout,
        learner: Learner,
        weights: np.ndarray,
        broadcaster: Broadcaster,
        executor: Executor,
        stats: TrainingStats,
        rollouts_per_batch: int,
        max_policy_lag: int | None,
        log_interval_s: float,
        reward_normalizer: RewardNormalizer | None = None,
        pin_memory: bool = False,
    ) -> None:
        self.pool = pool
        self.ledger = pool.ledger
        self.learner = learner
        self.broadcaster = broadcaster
        self.executor = executor
        self.stats = stats
        self.max_policy_lag = max_policy_lag
        self.log_interval_s = log_interval_s
        self.reward_normalizer = reward_normalizer
        self.builder = BatchBuilder(layout, rollouts_per_batch, pin_memory=pin_memory)
        self.in_batch: list[ReadyRollout] = []
        self.in_flight = 0  # env steps of the batch the learner thread is working on
        self.version = 0
        self.learner_s = 0.0
        """Seconds the learner spent in finished updates over the trainer's life."""
        self._learner_s_at_run_start = 0.0
        self.last_weights = weights
        """The weights of the last good update (the learner's ``weights()`` at the start)."""
        self.lag_min: int | None = None
        self.lag_max: int | None = None
        self._lag_sum = 0.0
        self._lag_count = 0
        self._last_log = time.monotonic()
        self._goal: RunGoal | None = None
        self._waiting: asyncio.Timeout | None = None  # expires to interrupt the wait for a rollout
        self._abandoned: AbandonedUpdate | None = None  # an update a cancelled run has not settled yet

    @property
    def strict(self) -> bool:
        """Strict on-policy mode: slots are freed only after new weights are published."""
        return self.max_policy_lag == 0

    @property
    def learner_s_this_run(self) -> float:
        """Seconds the learner spent in updates finished since the current (or last) :meth:`run` began."""
        return self.learner_s - self._learner_s_at_run_start

    async def run(self, goal: RunGoal, on_update: UpdateCallback | None) -> None:
        """Train until ``goal`` is met or :meth:`stop` is called."""
        self._goal = goal
        self._learner_s_at_run_start = self.learner_s
        if self.builder.full and not goal.done(self.stats):  # a run cancelled after the copy that filled it
            await self._update(self.builder.take(), goal, on_update)
        while not goal.done(self.stats):
            rollout = await self._next_rollout(goal)
            if rollout is None:
                return
            lag = self.version - rollout.policy_version
            if self.max_policy_lag is not None and lag > self.max_policy_lag:
                self.ledger.discard(rollout.env_steps, DiscardReason.POLICY_LAG)
                self.pool.release(rollout)
                continue
            await self._copy(rollout)
            if self.builder.full:
                await self._update(self.builder.take(), goal, on_update)

    async def _copy(self, rollout: ReadyRollout) -> None:
        """Copy ``rollout`` into the batch and free its slot (:meth:`_took`).

        A big rollout (images) is copied in a thread: on the loop its copy took 3-40 ms.
        That copy always finishes before this returns, and a cancellation meanwhile is
        raised only after it (the batch and the rollouts counted in it must agree).
        """
        if self.builder.slot_bytes <= THREAD_COPY_BYTES:
            self._took(rollout, self.builder.add(rollout.arrays))
            return
        copy = asyncio.get_running_loop().run_in_executor(None, self.builder.add, rollout.arrays)
        cancelled: asyncio.CancelledError | None = None
        while not copy.done():
            try:
                await asyncio.shield(copy)
            except asyncio.CancelledError as exc:
                cancelled = exc
        self._took(rollout, copy.result())
        if cancelled is not None:
            raise cancelled

    def _took(self, rollout: ReadyRollout, columns: slice) -> None:
        """Keep the rollout just copied into ``columns`` with the batch, its stale steps masked, and free its slot."""
        if self.max_policy_lag is not None:  # async envs: a slot's columns may span versions
            stale = self.builder.mask_older_than(columns, self.version - self.max_policy_lag)
            if stale:
                self.ledger.discard(stale, DiscardReason.POLICY_LAG)
                rollout = dataclasses.replace(rollout, env_steps=rollout.env_steps - stale)
        self.in_batch.append(rollout)
        if not self.strict:
            self.pool.release(rollout)

    def stop(self) -> None:
        """End :meth:`run` gracefully: after the update in progress, or at once if it waits for rollouts."""
        if self._goal is not None:
            self._goal.stop_requested = True
        if self._waiting is not None and not self._waiting.expired():
            self._waiting.reschedule(asyncio.get_running_loop().time())

    async def _next_rollout(self, goal: RunGoal) -> ReadyRollout | None:
        """The next ready rollout, or ``None`` once :meth:`stop` is called (the rollout stays queued)."""
        try:
            async with asyncio.timeout(None) as self._waiting:
                rollout = await self.pool.ready.get()
        except TimeoutError:
            return None
        finally:
            self._waiting = None
        if goal.stop_requested:  # stop() and the rollout's arrival raced: leave it for the next run
            self.pool.ready.put_nowait(rollout)
            return None
        return rollout

    async def drain(self, total_steps: int) -> int:
        """Take ready rollouts without learning until ``total_steps`` arrived; return the count.

        Used to measure sampling throughput; the steps are counted as discarded
        (reason ``sample_only``).
        """
        taken = 0
        while taken < total_steps:
            rollout = await self.pool.ready.get()
            self.ledger.discard(rollout.env_steps, DiscardReason.SAMPLE_ONLY)
            self.pool.release(rollout)
            taken += rollout.env_steps
        return taken

    async def _update(self, batch: RolloutBatch, goal: RunGoal, on_update: UpdateCallback | None) -> None:
        rollouts, self.in_batch = self.in_batch, []
        started = time.monotonic()
        future = asyncio.get_running_loop().run_in_executor(
            self.executor, self._learn, batch, goal.progress(self.stats)
        )
        self.in_flight = batch.env_steps
        try:
            try:
                metrics, weights = await asyncio.shield(future)
            except asyncio.CancelledError:
                # The update goes on in its thread whatever happens here: let it finish
                # (bounded) so the learner and the published version agree, then give in.
                # A second cancellation interrupts this wait: settle() then finishes it.
                self._abandoned = AbandonedUpdate(future, batch, rollouts, started, goal, on_update)
                await self.settle()
                raise
            except Exception as exc:
                self.in_flight = 0
                error = self._learner_failed(batch, exc)
                if error is exc:
                    raise
                raise error from exc
            self.in_flight = 0
            lag = self._apply(batch, weights)
        finally:
            if self.strict:  # after the new weights are out (or the update failed): free the slots
                for rollout in rollouts:
                    self.pool.release(rollout)
        self._record(self._report(goal, batch, rollouts, lag, metrics, time.monotonic() - started), goal, on_update)

    async def settle(self) -> None:
        """Finish the update a cancelled run left in the learner thread, if any.

        Waits for it (at most ``CANCELLED_UPDATE_WAIT_S``): one that succeeded is applied and
        recorded like any other (it goes into the final checkpoint), one that failed is undone
        and its batch counted as discarded, so that the learner, the published version and the
        step counts agree. A run cancelled while it waited for the update (a second Ctrl-C)
        calls this again before its final checkpoint.
        """
        abandoned = self._abandoned
        if abandoned is None:
            return
        future, batch = abandoned.future, abandoned.batch
        done, _ = await asyncio.wait({future}, timeout=CANCELLED_UPDATE_WAIT_S)
        self._abandoned = None
        self.in_flight = 0
        if future not in done:  # the thread may still read the batch's arrays
            self.builder.forget_spare()
        if future in done and not future.cancelled() and future.exception() is None:
            metrics, weights = future.result()
            lag = self._apply(batch, weights)
            # It was applied (and goes into the final checkpoint): it gets its record too.
            update_s = time.monotonic() - abandoned.started
            report = self._report(abandoned.goal, batch, abandoned.rollouts, lag, metrics, update_s)
            self._record_cancelled(report, abandoned.goal, abandoned.on_update)
        else:
            self.ledger.discard(batch.env_steps, DiscardReason.SHUTDOWN)
            if future in done:  # it failed: undo whatever it changed
                self.learner.load_weights(self.last_weights)

    def _record(self, report: UpdateReport, goal: RunGoal, on_update: UpdateCallback | None) -> None:
        """Count the learner's time, log progress and hand the update's report to ``on_update``."""
        self.learner_s += report.update_s
        self._log_progress(report, goal)
        if on_update is not None:
            on_update(report)

    def _record_cancelled(self, report: UpdateReport, goal: RunGoal, on_update: UpdateCallback | None) -> None:
        """:meth:`_record` for an update that finished after its run was cancelled.

        The cancellation goes on whatever the callback does: an exception from it is logged.
        """
        try:
            self._record(report, goal, on_update)
        except Exception:
            log.exception("on_update raised for the update that finished while the run was cancelled")

    def _report(
        self,
        goal: RunGoal,
        batch: RolloutBatch,
        rollouts: list[ReadyRollout],
        lag: LagStats,
        metrics: dict[str, float],
        update_s: float,
    ) -> UpdateReport:
        """The one record of the update that just finished."""
        now, stats = time.monotonic(), self.stats
        return UpdateReport(
            policy_version=self.version,
            env_steps=stats.steps_trained,
            batch_steps=batch.env_steps,
            lag=lag,
            rollouts=tuple((r.worker_id, r.pid, r.policy_version) for r in rollouts),
            learner=metrics,
            mean_return=stats.mean_return,
            update_s=update_s,
            steps_per_s=goal.steps_per_s(stats, now),
            wall_time_s=goal.wall_time_s(now),
            time=time.time(),
            steps_collected=stats.steps_collected,
            steps_discarded=stats.steps_discarded,
            episodes=stats.episodes,
            worker_restarts=stats.worker_restarts,
            env_errors=stats.env_errors,
            workers_alive=len(self.pool.pids),
            num_workers=len(self.pool.seats),
        )

    def _apply(self, batch: RolloutBatch, weights: np.ndarray) -> LagStats:
        """Count a finished update and hand its weights to the broadcaster."""
        trained = batch.versions[batch.valid]  # not the steps masked as too old or broken
        lag = LagStats.of(self.version, trained if trained.size else batch.versions)
        self._record_lag(lag, batch)
        self.version += 1
        self.ledger.consume(batch.env_steps)
        self.stats.updates += 1
        self.last_weights = weights
        self.broadcaster.submit(weights, self.version)
        if self.strict:  # workers get their next slot only once these weights are readable
            self.broadcaster.flush()
        return lag

    def _learner_failed(self, batch: RolloutBatch, exc: Exception) -> LearnerError:
        """Count the batch as discarded, restore the last good weights, describe the failure."""
        self.ledger.discard(batch.env_steps, DiscardReason.LEARNER_ERROR)
        self.learner.load_weights(self.last_weights)
        if isinstance(exc, LearnerError):
            return exc
        return LearnerError(
            f"the learner raised {type(exc).__name__}: {exc}; the policy was restored to "
            f"version {self.version}, the last good one"
        )

    def _learn(self, batch: RolloutBatch, progress: float) -> tuple[dict[str, float], np.ndarray]:
        """Runs in the executor thread: one update, then a copy of the new weights."""
        normalizer = self.reward_normalizer
        before = None if normalizer is None else normalizer.state_dict()
        try:
            scale = None if normalizer is None else normalizer.normalize(batch)
            metrics = self.learner.update(batch, progress)
        except BaseException:  # a failed update leaves no trace: the weights are restored by the caller
            if normalizer is not None and before is not None:
                normalizer.load_state_dict(before)
            raise
        if scale is not None:
            metrics["reward_scale"] = scale
        return metrics, self.learner.weights()

    def _record_lag(self, lag: LagStats, batch: RolloutBatch) -> None:
        self.lag_min = lag.min if self.lag_min is None else min(self.lag_min, lag.min)
        self.lag_max = lag.max if self.lag_max is None else max(self.lag_max, lag.max)
        self._lag_sum += lag.mean * batch.env_steps
        self._lag_count += batch.env_steps

    def lag_summary(self) -> LagStats | None:
        """Lag over every sample trained on so far (``None`` before the first update)."""
        if self.lag_min is None or self.lag_max is None:
            return None
        return LagStats(self.lag_min, self._lag_sum / self._lag_count, self.lag_max)

    def discard_pending(self, reason: DiscardReason) -> None:
        """Count the rollouts of the unfinished batch as discarded (at shutdown).

        An update still in the learner thread is left to :meth:`settle`, which counts its
        batch as trained or discarded once the thread is done.
        """
        if self.in_flight and self._abandoned is None:
            self.ledger.discard(self.in_flight, reason)
            self.in_flight = 0
        for rollout in self.in_batch:
            self.ledger.discard(rollout.env_steps, reason)
        self.in_batch = []
        self.builder.count = 0

    def _log_progress(self, report: UpdateReport, goal: RunGoal) -> None:
        now = time.monotonic()
        if now - self._last_log < self.log_interval_s:
            return
        self._last_log = now
        elapsed = now - goal.started
        log.info(
            "update %d | steps %d | %.0f steps/s | learner busy %.0f%% | return %.1f (%d episodes) | "
            "lag %d/%.2f/%d | policy loss %.4f | value loss %.4f | entropy %.3f",
            report.policy_version,
            report.env_steps,
            report.steps_per_s,
            100 * self.learner_s_this_run / max(elapsed, 1e-9),
            report.mean_return,
            report.episodes,
            report.lag.min,
            report.lag.mean,
            report.lag.max,
            report.learner.get("policy_loss", float("nan")),
            report.learner.get("value_loss", float("nan")),
            report.learner.get("entropy", float("nan")),
        )
