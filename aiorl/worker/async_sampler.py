"""Stepping async envs independently: each env on its own lane, actions batched across lanes.

Used for :class:`~aiorl.AsyncEnv` envs and for blocking gymnasium envs run in threads
(``env_threads=True``). Every env runs in a *lane*, a task of the worker's event loop
that loops: wait for an action, ``await env.step(action)``, record the step. Envs
never wait for each other:

- **Acting.** A lane that needs an action joins the :class:`ActionBatcher`. One policy
  forward pass serves every waiting env, as soon as ``act_batch`` envs wait, or
  ``act_wait_s`` after the first one (``0``: at the end of the current turn of the
  event loop, which batches all the envs whose steps completed together).
- **Rollouts.** Each lane fills a trajectory segment of its own, ``rollout_length``
  consecutive steps of its env. A full segment becomes one *column* of the worker's
  oldest open rollout slot, whichever column is free next; the slot is reported when
  all of its ``envs_per_worker`` columns are in. A slow env therefore contributes
  fewer columns instead of holding back a slot, and each column is still a contiguous
  trajectory with its own bootstrap observation (``next_obs``).
- **Backpressure and lag.** A lane starts a segment only when the granted slots have
  a free column for it (:class:`ColumnAllocator`), so, as with the synchronous
  sampler, no step is acted before there is room for it, and in strict on-policy
  mode (``max_policy_lag=0``, slots granted only once the newest weights are out)
  every step is acted by the newest policy. Rows record the version that acted
  them; the consumer drops rows older than ``max_policy_lag``.
- **Masks.** An env with action masks has its ``info["action_mask"]`` read after every
  reset and step, into its row of the batcher's masks: the forward pass samples only
  valid actions, and the lane stores the mask in the row of the step it applied to.
- **Faults.** A step or reset that raises, returns a bad action mask, returns non-finite values or takes longer
  than ``env_timeout_s`` (it is cancelled) is handled as in the synchronous sampler
  (both keep their episodes and faults with :mod:`aiorl.worker.episodes`):
  the unfinished episode's rows in the current segment are masked and counted as
  discarded, and the env is closed and re-created; ``env_error_limit`` failures in a
  row end the run.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import math
import os
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import gymnasium as gym
import numpy as np
import torch

from aiorl import protocol
from aiorl.envs import AsyncEnv, ThreadedEnv
from aiorl.envs.closing import aclose_env, cancelled_from_outside
from aiorl.envs.masks import check_no_action_mask
from aiorl.envs.spaces import check_same_action_space
from aiorl.rollout import PER_ENV_FIELDS
from aiorl.shm import ProgressBoard, RolloutSlots
from aiorl.worker.acting import ActingPolicy, check_sampled
from aiorl.worker.episodes import (
    ENV_INDEX_VARIABLE,
    EnvBookkeeping,
    EnvStepError,
    RolloutSummary,
    bad_step_result,
)
from aiorl.worker.spec import AsyncActing, WorkerSpec

T = TypeVar("T")

_CONSTRUCTING = threading.Lock()
"""Held while a thread constructs a blocking env (the env index is a process-wide variable)."""
CLOSE_TIMEOUT_S = 5.0
"""Longest wait for a failed or finished env's ``close``."""

SlotReport = Callable[[int, RolloutSummary, int], None]
"""``(slot, summary, newest policy version in the slot) -> None``."""
EnvErrorReport = Callable[[protocol.EnvRecovered], None]


class EnvCancelledError(RuntimeError):
    """An env call raised ``CancelledError`` while nobody cancelled the worker: an env error like any other."""


class EnvCallTimeout(TimeoutError):
    """An env's ``step``, ``reset`` or constructor took longer than ``env_timeout_s`` (and was cancelled)."""


class ActionBatcher:
    """Collects the envs waiting for an action and serves them with one forward pass."""

    def __init__(
        self,
        policy: torch.nn.Module,
        spec: WorkerSpec,
        obs: np.ndarray,
        pull_weights: Callable[[], int],
        acting: AsyncActing,
    ) -> None:
        self.acting = ActingPolicy(policy, spec.layout, spec.device)
        self.dist = spec.dist
        self.obs = obs  # [K, *obs]: each lane keeps its env's current observation in its row
        self.pull_weights = pull_weights
        self.act_batch = acting.act_batch
        self.act_wait_s = acting.act_wait_s
        k = spec.layout.num_envs
        self.masks = np.ones((k, spec.layout.mask_width), dtype=np.bool_)  # each lane's current action mask
        self.masked = spec.layout.mask_width > 0
        self.actions = np.zeros((k, *spec.layout.action_shape), dtype=spec.layout.action_dtype)
        self.logprobs = np.zeros(k, dtype=np.float32)
        self.version = -1
        self.forward_passes = 0
        self.actions_taken = 0
        self._waiting: list[int] = []
        self._served: asyncio.Future[int] | None = None
        self._timer: asyncio.Handle | None = None

    async def act(self, i: int) -> int:
        """Wait until env ``i`` has an action (in ``self.actions[i]`` etc.); return the acting version."""
        loop = asyncio.get_running_loop()
        self._waiting.append(i)
        if self._served is None:
            self._served = loop.create_future()
        served = self._served
        if len(self._waiting) >= self.act_batch:
            self.flush()
        elif self._timer is None:
            if self.act_wait_s > 0:
                self._timer = loop.call_later(self.act_wait_s, self.flush)
            else:
                self._timer = loop.call_soon(self.flush)
        return await served

    def flush(self) -> None:
        """Act for every waiting env now (one forward pass with the newest weights)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, served = self._waiting, self._served
        self._waiting, self._served = [], None
        if not waiting or served is None:
            return
        try:
            self.version = self.pull_weights()
            rows = np.asarray(waiting)
            dist_inputs = self.acting.act(self.obs[rows], rows, self.version)
            with torch.inference_mode():
                mask = torch.from_numpy(self.masks[rows]) if self.masked else None
                actions, logprobs = self.dist.sample(dist_inputs, mask)
            check_sampled(logprobs.numpy(), self.version, len(rows))
        except Exception as exc:  # e.g. NaN logits: the waiting lanes raise it (the worker fails, as it
            if not served.done():  # would with the synchronous sampler), rather than wait forever
                served.set_exception(exc)
            return
        self.actions[rows] = actions.numpy()
        self.logprobs[rows] = logprobs.numpy()
        self.forward_passes += 1
        self.actions_taken += len(waiting)
        if not served.done():
            served.set_result(self.version)

    def value(self, i: int, obs: np.ndarray) -> float:
        """V of env ``i``'s encoded observation ``obs`` that continues its episode (a truncated one's final one)."""
        return float(self.acting.values(obs[None], [i])[0])


class Trajectory:
    """One env's segment of ``rollout_length`` consecutive steps, filled row by row."""

    def __init__(self, spec: WorkerSpec) -> None:
        fields = spec.layout.fields()
        self.arrays = {
            name: np.zeros((shape[0], *shape[2:]), dtype=dtype)
            for name, (shape, dtype) in fields.items()
            if name not in PER_ENV_FIELDS
        }
        self.initial_state = np.zeros(spec.layout.state_size, dtype=np.float32)
        """The env's recurrent state before the segment's first step (recurrent policies)."""
        history = fields.get("frame_history")
        self.frame_history = None if history is None else np.zeros(history[0][1:], dtype=history[1])
        """The older frames of the segment's first observation (stacked frames stored once)."""
        self.length = spec.layout.rollout_length
        self.rows = 0

    @property
    def full(self) -> bool:
        """Whether all ``rollout_length`` rows are filled."""
        return self.rows == self.length


class ColumnAllocator:
    """Admits trajectories while granted slots have room, and reports each slot once all columns are in.

    Every granted slot adds ``envs_per_worker`` units of capacity. A lane takes a unit
    before its trajectory's first step (so no step is acted before there is room for
    it: the acting policy is as fresh as the synchronous sampler's) and its full
    trajectory goes into the next free column of the oldest open slot. A slow env
    holds one unit, never a particular slot, so it cannot hold back the others.
    """

    def __init__(self, slots: RolloutSlots, report: Callable[[int], None]) -> None:
        self.slots = slots
        self.report = report
        self.num_columns = slots.layout.num_envs
        self.capacity = asyncio.Semaphore(0)
        self._open: collections.deque[int] = collections.deque()  # granted slots with free columns
        self._filled: dict[int, int] = {}

    async def admit_grants(self, granted: asyncio.Queue[int]) -> None:
        """Open every slot the trainer grants (runs until cancelled)."""
        while True:
            slot = await granted.get()
            self._open.append(slot)
            self._filled[slot] = 0
            for _ in range(self.num_columns):
                self.capacity.release()

    def fill(self, trajectory: Trajectory, next_obs: np.ndarray, next_start: bool) -> None:
        """Copy a full trajectory (admitted through ``capacity``) into the next free column.

        ``next_start``: ``next_obs`` begins a new episode (recorded for recurrent policies).
        """
        slot = self._open[0]
        column = self._filled[slot]
        arrays = self.slots[slot]
        for name, rows in trajectory.arrays.items():
            arrays[name][:, column] = rows
        arrays["next_obs"][column] = next_obs
        if trajectory.frame_history is not None:
            arrays["frame_history"][column] = trajectory.frame_history
        if "initial_state" in arrays:
            arrays["initial_state"][column] = trajectory.initial_state
            arrays["next_starts"][column] = next_start
        self._filled[slot] = column + 1
        if column + 1 == self.num_columns:
            self._open.popleft()
            del self._filled[slot]
            self.report(slot)


class AsyncEnvSampler:
    """Steps ``spec.layout.num_envs`` async envs independently and fills rollout slots."""

    def __init__(
        self,
        spec: WorkerSpec,
        policy: torch.nn.Module,
        acting: AsyncActing,
        pull_weights: Callable[[], int],
        progress: ProgressBoard | None = None,
    ) -> None:
        self.spec = spec
        self.acting = acting
        self.progress = progress
        self.encoder = spec.obs_encoder
        self.to_env = spec.dist.to_env
        k = spec.layout.num_envs
        self.obs = np.zeros((k, *spec.layout.obs_shape), dtype=np.float32)
        self.batcher = ActionBatcher(policy, spec, self.obs, pull_weights, acting)
        self.action_masks = spec.dist.action_masks if spec.layout.mask_width else None
        self.masks = self.batcher.masks
        self.envs: list[AsyncEnv | None] = [None] * k
        self.trajectories = [Trajectory(spec) for _ in range(k)]
        self.episodes = [EnvBookkeeping(i, spec.reward_gamma, spec.env_error_limit) for i in range(k)]
        self.total_steps = 0
        self._final = np.zeros(spec.layout.obs_shape, dtype=np.float32)
        self._returns: list[float] = []  # episodes finished since the last report
        self._lengths: list[int] = []

    async def start(self) -> None:
        """Build and reset every env (concurrently); a failure here is fatal (:class:`EnvStepError`)."""
        seeds = [self.spec.env_seed(i) for i in range(len(self.envs))]
        results = await asyncio.gather(
            *(self._make_env(i, seed) for i, seed in enumerate(seeds)), return_exceptions=True
        )
        for i, result in enumerate(results):  # keep every env that was built, so a failure closes them all
            if not isinstance(result, BaseException):
                self.envs[i], obs = result
                self.encoder.encode_into(obs, self.obs[i])
        failure = next((result for result in results if isinstance(result, BaseException)), None)
        if failure is not None:
            await self.aclose()
            raise failure

    async def _make_env(self, index: int, seed: int | None) -> tuple[AsyncEnv, object]:
        try:
            if self.acting.env_threads:  # a blocking constructor, too, runs in the env's own thread
                build = ThreadedEnv.build(functools.partial(self._blocking_env, index))
                env: AsyncEnv = await self._timed(build, "constructor")
            else:
                os.environ[ENV_INDEX_VARIABLE] = str(index)  # read by the env's constructor, which runs now
                made = self.spec.env_factory()
                if not isinstance(made, AsyncEnv):
                    raise TypeError(f"the env factory returned {type(made).__name__}, not an aiorl.AsyncEnv")
                env = made
        except Exception as exc:
            raise EnvStepError(index, 0, exc) from exc
        try:
            check_same_action_space(env, self.spec.action_space)
            obs, info = await self._timed(env.reset(seed=seed), "reset")
            if self.action_masks is None:
                check_no_action_mask(info)
            else:
                self.action_masks.read_info(info, self.masks[index])
            probe = np.zeros(self.spec.layout.obs_shape, dtype=np.float32)
            self.encoder.encode_into(obs, probe)
            if not np.isfinite(probe).all():
                raise FloatingPointError(f"env {index} returned a non-finite observation from reset")
        except Exception as exc:
            await aclose_env(env, f"env {index}", CLOSE_TIMEOUT_S)
            raise EnvStepError(index, 0, exc) from exc
        return env, obs

    def _blocking_env(self, index: int) -> gym.Env:
        """Runs in the env's thread; constructors take turns, each seeing its own ``AIORL_ENV_INDEX``."""
        with _CONSTRUCTING:
            os.environ[ENV_INDEX_VARIABLE] = str(index)
            made = self.spec.env_factory()
        if not isinstance(made, gym.Env):
            raise TypeError(f"env_threads=True needs a factory of gymnasium envs, got {type(made).__name__}")
        return made

    async def _timed(self, call: Awaitable[T], what: str) -> T:
        scope = asyncio.timeout(self.acting.env_timeout_s)
        try:
            async with scope:
                return await call
        except TimeoutError:
            if not scope.expired():  # the env's own timeout (a socket's, say): an ordinary env error
                raise
            limit = self.acting.env_timeout_s
            raise EnvCallTimeout(f"env {what} did not return within env_timeout_s={limit}") from None
        except asyncio.CancelledError as exc:
            if cancelled_from_outside():  # the worker is stopping
                raise
            # The env's own: it awaited something that was cancelled (a request whose connection
            # dropped). Left alone, it would end the env's lane without a word (a task group
            # ignores a child that ends cancelled) and the worker would wait forever.
            raise EnvCancelledError(f"env {what} raised CancelledError without being cancelled") from exc

    async def run(
        self, slots: RolloutSlots, granted: asyncio.Queue[int], report: SlotReport, on_env_error: EnvErrorReport
    ) -> None:
        """Step every env until cancelled, reporting each filled slot; raises :class:`EnvStepError`."""
        self._on_env_error = on_env_error
        self.columns = ColumnAllocator(slots, lambda slot: self._report(slots, slot, report))
        async with asyncio.TaskGroup() as lanes:
            lanes.create_task(self.columns.admit_grants(granted), name="aiorl-grants")
            for i in range(len(self.envs)):
                lanes.create_task(self._lane(i), name=f"aiorl-env-{i}")

    def _report(self, slots: RolloutSlots, slot: int, report: SlotReport) -> None:
        arrays = slots[slot]
        valid = int(arrays["valid"].sum())
        summary = RolloutSummary(
            env_steps=valid,
            discarded_steps=self.spec.layout.steps - valid,
            episode_returns=self._returns,
            episode_lengths=self._lengths,
        )
        self._returns, self._lengths = [], []
        report(slot, summary, int(arrays["versions"].max()))

    async def _lane(self, i: int) -> None:
        trajectory = self.trajectories[i]
        rows = trajectory.arrays
        batcher = self.batcher
        acting = batcher.acting
        while True:
            t = trajectory.rows
            if t == 0:
                await self.columns.capacity.acquire()
                if acting.state is not None:  # the learner replays the segment from here
                    trajectory.initial_state[:] = acting.state[i].numpy()
            if acting.recurrent:
                rows["episode_starts"][t] = acting.starts[i]
            version = await batcher.act(i)
            acting.observations.write(rows, t, self.obs[i], i, trajectory.frame_history)
            if self.action_masks is not None:
                rows["action_masks"][t] = self.masks[i]
            rows["actions"][t] = batcher.actions[i]
            rows["logprobs"][t] = batcher.logprobs[i]
            rows["versions"][t] = version
            rows["valid"][t] = True
            rows["trunc_values"][t] = 0.0
            try:
                obs = await self._step(i, t)
                error = self._encode(i, obs)
                if error is not None:  # e.g. a reset that returned NaN, an observation of the wrong shape
                    obs = await self._recover(i, error, t)
                    if not rows["valid"][t]:  # the row belongs to the broken episode
                        self._make_inert(trajectory, t)
                    self.encoder.encode_into(obs, self.obs[i])
            except asyncio.CancelledError:  # the worker stops: the env was asked to step (a threaded
                if self.progress is not None:  # env's thread finishes the call), so the step counts
                    self.progress.add(self.spec.worker_id, 1)
                raise
            trajectory.rows += 1
            self.total_steps += 1
            if self.progress is not None:  # counted once the row is fully written
                self.progress.add(self.spec.worker_id, 1)
            if trajectory.full:
                self.columns.fill(trajectory, self.obs[i], bool(acting.starts[i]))
                trajectory.rows = self.episodes[i].start = 0

    def _encode(self, i: int, obs: object) -> Exception | None:
        """Encode env ``i``'s next observation; return why it is not a valid one, if it is not."""
        try:
            self.encoder.encode_into(obs, self.obs[i])
        except Exception as exc:
            return exc
        if not np.isfinite(self.obs[i]).all():
            return FloatingPointError(f"env {i} returned a non-finite observation")
        return None

    async def _step(self, i: int, t: int) -> object:
        """Step env ``i`` with its action, record row ``t``, reset on episode end; return the next obs."""
        trajectory = self.trajectories[i]
        rows = trajectory.arrays
        env = self.envs[i]
        assert env is not None
        episode = self.episodes[i]
        episode.env_steps += 1
        try:
            result = await self._timed(env.step(self.to_env(self.batcher.actions[i])), "step")
            try:
                obs, reward, term, trunc, info = result
                reward, term, trunc = float(reward), bool(term), bool(trunc)
            except (TypeError, ValueError) as exc:
                raise bad_step_result(result, i) from exc
            if not math.isfinite(reward):
                raise FloatingPointError(f"env {i} returned a non-finite reward ({reward})")
            if self.action_masks is not None and not (term or trunc):  # the mask of the next observation
                self.action_masks.read_info(info, self.masks[i])
            if trunc and not term:  # bootstrap from V(final observation)
                self.encoder.encode_into(obs, self._final)
                if not np.isfinite(self._final).all():
                    raise FloatingPointError(f"env {i} returned a non-finite observation")
                rows["trunc_values"][t] = self.batcher.value(i, self._final)
        except Exception as exc:
            obs = await self._recover(i, exc, t)
            self._make_inert(trajectory, t)
            return obs
        rows["rewards"][t], rows["terminated"][t], rows["truncated"][t] = reward, bool(term), bool(trunc)
        rows["disc_returns"][t] = episode.rewarded(reward)
        if term or trunc:
            self.batcher.acting.episode_started(i)
            episode_return, episode_length = episode.finished(t + 1)
            self._returns.append(episode_return)
            self._lengths.append(episode_length)
            try:
                obs, info = await self._timed(env.reset(), "reset")
                if self.action_masks is not None:
                    self.action_masks.read_info(info, self.masks[i])
            except Exception as exc:
                obs = await self._recover(i, exc, t, mask_from=t + 1)
        return obs

    @staticmethod
    def _make_inert(trajectory: Trajectory, t: int) -> None:
        """Row ``t`` belongs to a broken episode: no reward, no bootstrap (it is masked anyway)."""
        rows = trajectory.arrays
        rows["rewards"][t], rows["terminated"][t], rows["truncated"][t] = 0.0, False, True
        rows["trunc_values"][t] = rows["disc_returns"][t] = 0.0

    async def _recover(self, i: int, exc: Exception, t: int, mask_from: int | None = None) -> object:
        """Mask env ``i``'s broken episode in its segment, re-create the env, return its first observation."""
        episode = self.episodes[i]
        broken = episode.broke(exc, t, self.batcher.version, mask_from)
        self.trajectories[i].arrays["valid"][broken.start : broken.end] = False
        self._on_env_error(broken.report)
        broken_env, self.envs[i] = self.envs[i], None
        if isinstance(broken_env, ThreadedEnv) and isinstance(exc, EnvCallTimeout):
            broken_env.abandon()  # its thread is stuck in the call: a close would queue behind it
        elif broken_env is not None:
            await aclose_env(broken_env, f"env {i}", CLOSE_TIMEOUT_S)
        while True:
            episode.retry()
            try:
                env, obs = await self._make_env(i, seed=self.spec.env_seed(i, episode.rebuilds))
                break
            except EnvStepError as error:
                episode.rebuild_failed(error)
        self.envs[i] = env
        episode.rebuilt(t + 1)
        self.batcher.acting.episode_started(i)
        return obs

    async def aclose(self) -> None:
        """Close every env concurrently; errors and envs that do not close in time are logged."""
        envs = [(i, env) for i, env in enumerate(self.envs) if env is not None]
        self.envs = [None] * len(self.envs)
        await asyncio.gather(*(aclose_env(env, f"env {i}", CLOSE_TIMEOUT_S) for i, env in envs))
