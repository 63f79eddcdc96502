"""The engine session: everything one started trainer runs, wired together and torn down in order.

A :class:`Session` exists between ``Trainer.__aenter__`` and ``Trainer.aclose``. It opens
the backend's worker host, publishes the initial weights, starts the learner's executor
thread, the worker pool (whose supervisors and restarts live in the session's task group
until it closes) and the consumer. Each ``run()`` (or ``sample()``) is a child scope,
:meth:`Session.supervise`: one :class:`asyncio.TaskGroup` owns that run's tasks (the
consumer's work, the failure watch, the broadcaster and the periodic evaluations), so
cancelling the run or a failure of any of them cancels the others before it returns.

Teardown (:meth:`Session.close`) runs in reverse order of creation and every step is
bounded: workers get a stop frame, then SIGTERM, then SIGKILL; the learner thread is
given a bounded time to finish its update (which is then settled, if a cancelled run left
it there); the host unlinks its shared memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from aiorl.algos.learner import Learner
from aiorl.algos.reward_scaling import RewardNormalizer
from aiorl.backends import WorkerHost, WorkerTemplate, resolve_backend
from aiorl.config import TrainerConfig
from aiorl.distributions import ActionDistribution
from aiorl.engine.broadcaster import Broadcaster
from aiorl.engine.consumer import Consumer
from aiorl.engine.ledger import DiscardReason
from aiorl.engine.pool import WorkerPool
from aiorl.engine.restarts import RestartBudget
from aiorl.engine.stats import TrainingStats
from aiorl.envs import ActionMasks, EnvFactory, ObservationEncoder
from aiorl.errors import AiorlError
from aiorl.events import EventHub
from aiorl.recurrent import state_size
from aiorl.rollout import RolloutLayout
from aiorl.worker import AsyncActing

T = TypeVar("T")

EXECUTOR_SHUTDOWN_S = 60.0
"""How long closing waits for an update still running in the learner thread."""


class Session:
    """The running parts of one started trainer: host, broadcaster, learner thread, pool, consumer.

    Build it with :meth:`open` and end it with :meth:`close`; a session is used once.

    Attributes:
        host: the backend's worker host (processes or Ray actors, and the weight store).
        pool: the supervised workers.
        consumer: feeds the learner from the pool's ready rollouts.
        broadcaster: publishes new weights to the workers.
    """

    def __init__(
        self,
        stack: contextlib.AsyncExitStack,
        host: WorkerHost,
        pool: WorkerPool,
        consumer: Consumer,
        broadcaster: Broadcaster,
    ) -> None:
        self._stack = stack
        self.host = host
        self.pool = pool
        self.consumer = consumer
        self.broadcaster = broadcaster

    @classmethod
    async def open(
        cls,
        *,
        config: TrainerConfig,
        template: WorkerTemplate,
        learner: Learner,
        learner_threads: int,
        version: int,
        stats: TrainingStats,
        reward_normalizer: RewardNormalizer | None,
        events: EventHub,
    ) -> Session:
        """Start everything a trainer runs and wait until every worker said hello.

        On any failure whatever was started is torn down before the error propagates.
        """
        stack = contextlib.AsyncExitStack()
        try:
            host = await stack.enter_async_context(resolve_backend(config.backend).open(template))
            broadcaster = Broadcaster(host.weights)
            weights = await asyncio.to_thread(learner.weights)  # gathered once, off the loop (a big model's: ms)
            broadcaster.publish_now(weights, version)  # on the loop: the store must not close under a thread
            executor = learner_executor(learner_threads)
            stack.push_async_callback(_shutdown_executor, executor)
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            pool = WorkerPool(
                host=host,
                seat_slots=config.seat_slots(),
                stats=stats,
                tasks=tasks,
                budget=RestartBudget(
                    max_restarts=config.max_restarts,
                    window_s=config.restart_window_s,
                    backoff_s=config.restart_backoff_s,
                    backoff_max_s=config.restart_backoff_max_s,
                ),
                worker_timeout_s=config.worker_timeout_s,
                start_timeout_s=config.start_timeout_s,
            )
            pool.events = events
            consumer = Consumer(
                pool=pool,
                layout=template.layout,
                learner=learner,
                weights=weights,
                broadcaster=broadcaster,
                executor=executor,
                stats=stats,
                rollouts_per_batch=config.batch_rollouts,
                max_policy_lag=config.max_policy_lag,
                log_interval_s=config.log_interval_s,
                reward_normalizer=reward_normalizer,
                pin_memory=torch.device(config.device).type == "cuda",
            )
            consumer.version = version
            stack.push_async_callback(_close_learner, executor, consumer)
            stack.push_async_callback(_close_pool, pool, consumer, stats, config.shutdown_grace_s)
            await pool.start()
        except BaseException:
            await stack.aclose()
            raise
        return cls(stack, host, pool, consumer, broadcaster)

    async def close(self) -> None:
        """Stop the workers, end the learner thread and release the host, in that order (bounded)."""
        await self._stack.aclose()  # every step is bounded; the pool's last is a SIGKILL

    def fail(self, error: AiorlError) -> None:
        """End the run in progress with ``error`` (the first failure wins)."""
        self.pool.fail(error)

    @property
    def failure(self) -> AiorlError | None:
        """The error that ended a run because the workers failed (``None``: they did not).

        It ends every later run too (the failed seat is not refilled): a session that
        failed takes no more runs; the trainer starts a new one.
        """
        return self.pool.failure.result() if self.pool.failure.done() else None

    async def supervise(
        self,
        work: Callable[[asyncio.TaskGroup], Coroutine[Any, Any, T]],
        *,
        broadcast: bool,
    ) -> T:
        """Run ``work(tasks)`` in a task group with the failure watch (and the broadcaster).

        ``work`` may start more tasks in ``tasks`` (periodic evaluations); the group waits
        for them when ``work`` returns, and cancels them when anything fails or the caller
        is cancelled. A worker's death or env error cancels ``work`` and is raised as
        itself, not wrapped in an exception group; a remote traceback stays its
        ``__cause__``.
        """
        try:
            async with asyncio.TaskGroup() as tasks:
                helpers = [tasks.create_task(_raise_failure(self.pool), name="aiorl-failure-watch")]
                if broadcast:
                    helpers.append(tasks.create_task(self.broadcaster.run(), name="aiorl-broadcaster"))
                result = await work(tasks)
                for helper in helpers:
                    helper.cancel()
            return result
        except BaseExceptionGroup as group:
            error = single(group)
            raise error from error.__cause__
        finally:
            self.broadcaster.flush()


def learner_executor(threads: int) -> ThreadPoolExecutor:
    """The learner's one thread, with ``threads`` torch intra-op threads for its own work.

    The thread count is set inside the learner thread, where this torch build keeps it
    per thread (OpenMP), so the caller's threads and other trainers in the process keep
    theirs. Threads that torch starts later take the last count set in the process as
    their default.
    """
    return ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="aiorl-learner", initializer=torch.set_num_threads, initargs=(threads,)
    )


def single(group: BaseExceptionGroup) -> BaseException:
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


async def _raise_failure(pool: WorkerPool) -> None:
    raise await asyncio.shield(pool.failure)


async def _close_pool(pool: WorkerPool, consumer: Consumer, stats: TrainingStats, grace_s: float) -> None:
    """Stop the workers; count what was collected and never trained as discarded (``shutdown``)."""
    try:
        await pool.close(grace_s)
    finally:
        pool.kill_now()
        while not pool.ready.empty():
            pool.ledger.discard(pool.ready.get_nowait().env_steps, DiscardReason.SHUTDOWN)
        consumer.discard_pending(DiscardReason.SHUTDOWN)


async def _close_learner(executor: ThreadPoolExecutor, consumer: Consumer) -> None:
    """End the learner thread, then settle an update that a run cancelled three times left in it.

    Once the thread is done, that update either finished (it is applied and its steps count
    as trained) or failed (undone, its batch discarded): the closed trainer's policy, version
    and counts agree. (Two cancellations are settled by the run itself.)
    """
    await _shutdown_executor(executor)
    await consumer.settle()


async def _shutdown_executor(executor: ThreadPoolExecutor) -> None:
    """Let an in-flight update finish (bounded), then end the learner thread."""
    executor.shutdown(wait=False, cancel_futures=True)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(EXECUTOR_SHUTDOWN_S):
            await asyncio.to_thread(executor.shutdown, wait=True)


def published(session: Session | None, learner: Learner, version: int) -> tuple[np.ndarray, int]:
    """The newest published weights and their version (the learner's own when no session runs)."""
    if session is not None:  # the learner may be mid-update: use the published weights
        return session.consumer.last_weights, session.consumer.version
    return learner.weights(), version


def worker_template(
    config: TrainerConfig,
    *,
    env_factory: EnvFactory,
    is_async: bool,
    obs_encoder: ObservationEncoder,
    dist: ActionDistribution,
    policy: nn.Module,
    algo: object,
    seed: int,
    action_space: gym.Space | None = None,
    action_masks: ActionMasks | None = None,
    vector: bool = False,
    frame_stack: int = 0,
) -> WorkerTemplate:
    """What every worker of a trainer is built from, for its backend to turn into specs.

    ``action_masks``: the env's action masks, if it gives any (the rollouts then carry them).
    ``vector``: the env factory returns a vector env of ``config.envs_per_worker`` sub-envs.
    ``frame_stack``: frames per observation when the rollouts store each frame once (0: whole).
    """
    layout = RolloutLayout(
        rollout_length=config.rollout_length,
        num_envs=config.envs_per_worker,
        obs_shape=obs_encoder.shape,
        action_shape=dist.action_shape,
        action_dtype=dist.action_dtype.str,
        state_size=state_size(policy),
        mask_width=0 if action_masks is None else action_masks.width,
        obs_dtype=obs_encoder.storage_dtype,
        frame_stack=frame_stack,
    )
    acting = None  # gymnasium envs are stepped inline
    if is_async or config.env_threads:
        acting = AsyncActing(
            env_threads=config.env_threads,
            env_timeout_s=config.env_timeout_s,
            act_batch=config.act_batch or config.envs_per_worker,
            act_wait_s=config.act_wait_s,
        )
    return WorkerTemplate(
        env_factory=env_factory,
        seed=seed,
        layout=layout,
        num_workers=config.num_workers,
        num_slots=config.num_workers * config.slots_per_worker,
        policy=policy,
        dist=dist,
        obs_encoder=obs_encoder,
        heartbeat_interval_s=config.heartbeat_interval_s,
        env_error_limit=config.env_error_limit,
        start_method=config.start_method,
        reward_gamma=getattr(algo, "gamma", None) if config.normalize_rewards else None,
        acting=acting,
        action_space=action_space,
        vector=vector,
        device=config.worker_device,
    )
