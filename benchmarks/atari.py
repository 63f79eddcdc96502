"""Atari Pong on this machine: aiorl's preset against a CleanRL-style single-process PPO with EnvPool.

What is measured
----------------
Env steps and frames per second (frames = env steps x 4, the frame skip of both systems) of
*sampling* (acting only, no learning) and of *training* (env steps trained on per second of
wall time, steady state), for two systems, in one run on one machine:

- **aiorl**: ``aiorl.Trainer.from_preset("ALE/Pong-v5", seed=...)``, i.e. APPO (V-trace, 4
  epochs x 4 minibatches, lr 2.5e-4) with 2 worker processes x 4 envs x 128 steps per rollout
  (1,024 env steps per update), aiorl's default CNN, each env an ale-py game behind gymnasium's
  ``AtariPreprocessing`` and ``FrameStackObservation(4)`` (:class:`aiorl.envs.atari.AtariEnv`,
  sticky actions 0.25), the learner in a thread of this process with the cores the workers
  leave (1 torch thread on 2 cores). Sampling: ``Trainer.sample``; training: ``Trainer.run``.
- **CleanRL-style PPO**: a single-process replica of CleanRL's ``ppo_atari_envpool.py``: the
  Nature CNN (3 convolutions, 512 hidden units, observations / 255), Adam (eps 1e-5) at lr
  2.5e-4 annealed over 10M steps, 8 EnvPool envs (``envpool.make("Pong-v5", env_type="gymnasium",
  num_envs=8, episodic_life=True, reward_clip=True)``, EnvPool's default threads) x 128 steps,
  GAE (0.99, 0.95), 4 epochs x 4 minibatches, clip 0.1 with the clipped value loss, entropy
  0.01, value 0.5, gradient norm 0.5, normalised advantages, float32 rollout storage, its
  per-step episode bookkeeping; no TensorBoard writer or printing. It uses torch's default
  number of threads (one per core), as a user running CleanRL would (``--baseline-threads``
  changes it). Sampling: the rollout phase of its loop alone (128 steps of policy forward pass,
  storage writes and ``envs.step``), repeated; training: the whole loop (rollout, GAE, update).

The two are not the same algorithm, network or env implementation (see the README), only the
same recipe (batch of 1,024 env steps, 4 x 4 passes): the comparison is of what a user gets.

How
---
Both systems are started first and stay up; each is warmed up; then ``--repeats`` rounds time
one window of ``--seconds`` per phase and system, in turn (aiorl sampling, CleanRL sampling,
aiorl training, CleanRL training), so that drifting background load hits both alike. The rate
of a row is its env steps over all its windows divided by their total time. Steady state only:

- aiorl sampling: the rollouts its idle workers filled before a window are taken (untimed)
  first, then ``Trainer.sample(n)`` with ``n`` sized from the previous rate.
- aiorl training: a window is timed from the end of its second learner update to the end of
  the first update at least ``--seconds`` later: the first two updates of a window train on
  rollouts that the idle workers filled while the other system ran (2 workers x 2 slots), and
  they are the warm-up of the first window, so worker start and the first update are never timed.
- CleanRL: whole loop iterations (rollout only, or rollout and update) until ``--seconds`` have
  passed; the warm-up runs one full iteration.

The CleanRL loop runs in a helper thread (with its own torch thread count) so that the event
loop that owns aiorl's trainer stays responsive; the trainer is idle meanwhile (its workers block
once their rollout slots are full). The CPU that processes outside this benchmark used during
each window is measured from ``/proc`` and reported: run it on an idle machine.

Run it (needs ``pip install 'aiorl[atari]' envpool``)::

    python benchmarks/atari.py                # ~4 minutes on 2 cores: 2 rounds of 20 s windows
    python benchmarks/atari.py --quick        # ~1-1.5 minutes: 1 round of 6 s windows
    python benchmarks/atari.py --seconds 30 --repeats 3 --seed 1
    python benchmarks/atari.py --aiorl-network nature   # aiorl trains CleanRL's Nature CNN instead
    python benchmarks/atari.py --option learner_threads=2 --baseline-threads 1   # other thread counts

It prints a markdown table (sampling and trained env steps/s and frames/s per system, the
ratios aiorl / CleanRL) and where each system's training time went. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from other_load import OtherLoadMeter, busy_warning, print_footer
from torch import nn
from trained_throughput import parse_option

import aiorl
from aiorl.config import usable_cores

PRESET = "ALE/Pong-v5"
ENVPOOL_TASK = "Pong-v5"
PONG_ACTIONS = 6
"""Pong's minimal action set, in both systems (``--aiorl-network nature`` builds its policy for it)."""
FRAME_SKIP = 4
"""ALE frames per env step, for both systems (AtariEnv and EnvPool's Atari default)."""
DEFAULT_TORCH_THREADS = torch.get_num_threads()
"""torch's default intra-op threads here (one per core), read before anything changes it."""
OTHER_LOAD_WARN = 0.2
"""Other processes' CPU use (cores) during a window above which the report warns."""
AIORL_SAMPLE_WARMUP_STEPS = 2_048
AIORL_SKIPPED_UPDATES = 2
"""Learner updates at the start of a training window that are not timed (pre-filled rollouts)."""

# CleanRL ppo_atari_envpool.py's defaults.
NUM_ENVS = 8
NUM_STEPS = 128
BATCH_SIZE = NUM_ENVS * NUM_STEPS
NUM_MINIBATCHES = 4
MINIBATCH_SIZE = BATCH_SIZE // NUM_MINIBATCHES
UPDATE_EPOCHS = 4
LEARNING_RATE = 2.5e-4
ANNEAL_UPDATES = 10_000_000 // BATCH_SIZE
"""CleanRL anneals the learning rate to 0 over its 10M-step default run."""
GAMMA = 0.99
GAE_LAMBDA = 0.95
CLIP_COEF = 0.1
ENT_COEF = 0.01
VF_COEF = 0.5
MAX_GRAD_NORM = 0.5


# ---- the networks ----------------------------------------------------------------------------


def _init(layer: nn.Module, std: float = float(np.sqrt(2.0))) -> nn.Module:
    """Orthogonal weights with gain ``std``, zero biases (CleanRL's ``layer_init``)."""
    assert isinstance(layer, nn.Conv2d | nn.Linear)
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, 0.0)
    return layer


def nature_trunk(channels: int = 4) -> nn.Sequential:
    """The Nature DQN CNN as CleanRL's Atari agents use it: 3 convolutions, then 512 ReLU units."""
    return nn.Sequential(
        _init(nn.Conv2d(channels, 32, 8, stride=4)),
        nn.ReLU(),
        _init(nn.Conv2d(32, 64, 4, stride=2)),
        nn.ReLU(),
        _init(nn.Conv2d(64, 64, 3, stride=1)),
        nn.ReLU(),
        nn.Flatten(),
        _init(nn.Linear(64 * 7 * 7, 512)),
        nn.ReLU(),
    )


class CleanRLAgent(nn.Module):
    """CleanRL's Atari ``Agent``: the Nature CNN with an actor head (gain 0.01) and a critic head (gain 1)."""

    def __init__(self, num_actions: int) -> None:
        super().__init__()
        self.network = nature_trunk()
        self.actor = _init(nn.Linear(512, num_actions), std=0.01)
        self.critic = _init(nn.Linear(512, 1), std=1.0)

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(self.network(x / 255.0))

    def get_action_and_value(
        self, x: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.network(x / 255.0)
        probs = torch.distributions.Categorical(logits=self.actor(hidden))
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden)


class NatureActorCritic(nn.Module):
    """The same network behind aiorl's policy interface (``--aiorl-network nature``):
    ``forward(obs) -> (logits, value)`` on ``[B, 4, 84, 84]`` observations of 0..255."""

    def __init__(self, num_actions: int) -> None:
        super().__init__()
        self.network = nature_trunk()
        self.actor = _init(nn.Linear(512, num_actions), std=0.01)
        self.critic = _init(nn.Linear(512, 1), std=1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.network(obs / 255.0)
        return self.actor(hidden), self.critic(hidden).squeeze(-1)


# ---- measurements ----------------------------------------------------------------------------


@dataclass(slots=True)
class Series:
    """The timed windows of one system in one phase."""

    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    other_load: list[float] = field(default_factory=list)

    def add(self, steps: int, seconds: float, other: float | None) -> float:
        self.steps.append(steps)
        self.seconds.append(seconds)
        if other is not None:
            self.other_load.append(other)
        return steps / seconds

    @property
    def rate(self) -> float:
        """Env steps per second over all windows."""
        return sum(self.steps) / sum(self.seconds)

    @property
    def spread(self) -> str:
        rates = [s / t for s, t in zip(self.steps, self.seconds, strict=True)]
        return f"{min(rates):,.0f} - {max(rates):,.0f}"


@dataclass(slots=True)
class Results:
    """Everything one run measured."""

    aiorl_sampling: Series = field(default_factory=Series)
    aiorl_training: Series = field(default_factory=Series)
    cleanrl_sampling: Series = field(default_factory=Series)
    cleanrl_training: Series = field(default_factory=Series)
    aiorl_update_s: list[float] = field(default_factory=list)
    """The learner's seconds per update (``UpdateReport.update_s``) in timed training windows."""
    aiorl_batch_steps: int = 0
    cleanrl_rollout_s: list[float] = field(default_factory=list)
    cleanrl_update_s: list[float] = field(default_factory=list)
    """CleanRL's rollout phase and GAE + update phase, per iteration of its timed training windows."""
    cleanrl_threads: int = 0
    aiorl_learner_threads: int | None = None
    aiorl_label: str = ""


# ---- aiorl -----------------------------------------------------------------------------------


class AiorlSide:
    """The preset's trainer, started once; sampled and trained in turns."""

    def __init__(self, trainer: aiorl.Trainer) -> None:
        self.trainer = trainer
        self.sample_rate = 0.0

    async def _take_filled_slots(self) -> None:
        # Idle workers have filled every slot: take those rollouts untimed first, or a window
        # would count up to num_workers * slots_per_worker rollouts it did not wait for.
        cfg = self.trainer.config
        await self.trainer.sample(cfg.num_workers * cfg.slots_per_worker * cfg.envs_per_worker * cfg.rollout_length)

    async def warm_up_sampling(self) -> None:
        await self._take_filled_slots()
        self.sample_rate = await self.trainer.sample(AIORL_SAMPLE_WARMUP_STEPS)

    async def sample_window(self, seconds: float) -> tuple[int, float]:
        """``(env steps, seconds)`` of one sampling window of about ``seconds``."""
        await self._take_filled_slots()
        steps = max(1, int(self.sample_rate * seconds))
        self.sample_rate = await self.trainer.sample(steps)
        return steps, steps / self.sample_rate

    async def train_window(self, seconds: float, intervals: int) -> tuple[int, float, list[float]]:
        """One training window: ``(env steps, seconds, update_s of the timed updates)``.

        Trains until at least ``intervals`` updates have ended after the ``AIORL_SKIPPED_UPDATES``-th
        and at least ``seconds`` have passed since it; the window runs from the end of that update.
        """
        marks: list[tuple[float, int, float]] = []  # (time, env steps trained, update_s) per update

        def on_update(report: Any) -> None:
            marks.append((time.perf_counter(), report.env_steps, report.update_s))
            timed = marks[AIORL_SKIPPED_UPDATES - 1 :]
            if len(timed) > intervals and timed[-1][0] - timed[0][0] >= seconds:
                self.trainer.stop()

        await self.trainer.run(total_steps=10**12, on_update=on_update)
        timed = marks[AIORL_SKIPPED_UPDATES - 1 :]
        (t0, s0, _), (t1, s1, _) = timed[0], timed[-1]
        return s1 - s0, t1 - t0, [update_s for _, _, update_s in timed[1:]]


# ---- CleanRL-style PPO -----------------------------------------------------------------------


class CleanRLPPO:
    """A single-process replica of CleanRL's ``ppo_atari_envpool.py`` loop (see the module docstring).

    ``rollout()`` is the loop's collection phase, ``update()`` its GAE and optimisation phase;
    one training iteration is one of each. Call both from the same thread as ``set_threads``.
    """

    def __init__(self, seed: int, threads: int) -> None:
        import envpool

        self.threads = threads
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.envs = envpool.make(
            ENVPOOL_TASK, env_type="gymnasium", num_envs=NUM_ENVS, episodic_life=True, reward_clip=True, seed=seed
        )
        obs_shape = self.envs.observation_space.shape
        self.obs_shape = obs_shape
        self.agent = CleanRLAgent(int(self.envs.action_space.n))
        self.optimizer = torch.optim.Adam(self.agent.parameters(), lr=LEARNING_RATE, eps=1e-5)
        self.obs = torch.zeros((NUM_STEPS, NUM_ENVS, *obs_shape))
        self.actions = torch.zeros((NUM_STEPS, NUM_ENVS))
        self.logprobs = torch.zeros((NUM_STEPS, NUM_ENVS))
        self.rewards = torch.zeros((NUM_STEPS, NUM_ENVS))
        self.dones = torch.zeros((NUM_STEPS, NUM_ENVS))
        self.values = torch.zeros((NUM_STEPS, NUM_ENVS))
        # CleanRL's RecordEpisodeStatistics: returns of whole games (all lives), from the unclipped rewards.
        self.episode_returns = np.zeros(NUM_ENVS, dtype=np.float32)
        self.returned_episode_returns = np.zeros(NUM_ENVS, dtype=np.float32)
        self.avg_returns: deque[float] = deque(maxlen=20)
        self.global_step = 0
        self.update_index = 0
        obs, _info = self.envs.reset()
        self.next_obs = torch.Tensor(obs)
        self.next_done = torch.zeros(NUM_ENVS)

    def set_threads(self) -> int:
        """Give the calling thread this baseline's torch thread count; return the count in effect."""
        torch.set_num_threads(self.threads)
        return torch.get_num_threads()

    def rollout(self) -> None:
        """``NUM_STEPS`` steps of every env: forward pass, sample, storage writes, ``envs.step``."""
        for step in range(NUM_STEPS):
            self.global_step += NUM_ENVS
            self.obs[step] = self.next_obs
            self.dones[step] = self.next_done
            with torch.no_grad():
                action, logprob, _, value = self.agent.get_action_and_value(self.next_obs)
                self.values[step] = value.flatten()
            self.actions[step] = action
            self.logprobs[step] = logprob
            next_obs, reward, terminated, truncated, info = self.envs.step(action.cpu().numpy())
            done = np.logical_or(terminated, truncated)
            self.rewards[step] = torch.tensor(reward).view(-1)
            self.next_obs, self.next_done = torch.Tensor(next_obs), torch.Tensor(done)
            self._record_episodes(done, info)

    def _record_episodes(self, done: np.ndarray, info: dict[str, Any]) -> None:
        self.episode_returns += info["reward"]
        self.returned_episode_returns[:] = self.episode_returns
        self.episode_returns *= 1 - (info["lives"] == 0)
        for idx, d in enumerate(done):
            if d and info["lives"][idx] == 0:
                self.avg_returns.append(float(self.returned_episode_returns[idx]))

    def update(self) -> None:
        """Learning-rate annealing, GAE, then ``UPDATE_EPOCHS`` epochs of ``NUM_MINIBATCHES`` minibatches."""
        self.update_index += 1
        frac = 1.0 - (self.update_index - 1.0) / ANNEAL_UPDATES
        self.optimizer.param_groups[0]["lr"] = frac * LEARNING_RATE
        with torch.no_grad():
            next_value = self.agent.get_value(self.next_obs).reshape(1, -1)
            advantages = torch.zeros_like(self.rewards)
            lastgaelam: torch.Tensor | float = 0.0
            for t in reversed(range(NUM_STEPS)):
                if t == NUM_STEPS - 1:
                    nextnonterminal = 1.0 - self.next_done
                    nextvalues = next_value
                else:
                    nextnonterminal = 1.0 - self.dones[t + 1]
                    nextvalues = self.values[t + 1]
                delta = self.rewards[t] + GAMMA * nextvalues * nextnonterminal - self.values[t]
                advantages[t] = lastgaelam = delta + GAMMA * GAE_LAMBDA * nextnonterminal * lastgaelam
            returns = advantages + self.values
        b_obs = self.obs.reshape((-1, *self.obs_shape))
        b_logprobs = self.logprobs.reshape(-1)
        b_actions = self.actions.reshape(-1)
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = self.values.reshape(-1)
        b_inds = np.arange(BATCH_SIZE)
        clipfracs = []
        for _epoch in range(UPDATE_EPOCHS):
            np.random.shuffle(b_inds)
            for start in range(0, BATCH_SIZE, MINIBATCH_SIZE):
                mb_inds = b_inds[start : start + MINIBATCH_SIZE]
                _, newlogprob, entropy, newvalue = self.agent.get_action_and_value(
                    b_obs[mb_inds], b_actions.long()[mb_inds]
                )
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()
                with torch.no_grad():
                    clipfracs.append(((ratio - 1.0).abs() > CLIP_COEF).float().mean().item())
                mb_advantages = b_advantages[mb_inds]
                mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
                pg_loss = torch.max(
                    -mb_advantages * ratio, -mb_advantages * torch.clamp(ratio, 1 - CLIP_COEF, 1 + CLIP_COEF)
                ).mean()
                newvalue = newvalue.view(-1)
                v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                v_clipped = b_values[mb_inds] + torch.clamp(newvalue - b_values[mb_inds], -CLIP_COEF, CLIP_COEF)
                v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                loss = pg_loss - ENT_COEF * entropy.mean() + v_loss * VF_COEF
                self.optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.agent.parameters(), MAX_GRAD_NORM)
                self.optimizer.step()
        # CleanRL logs these after every update (to TensorBoard; here they are only computed).
        y_pred, y_true = b_values.numpy(), b_returns.numpy()
        var_y = np.var(y_true)
        _explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
        _logged = (v_loss.item(), pg_loss.item(), float(np.mean(clipfracs)))

    def sample_window(self, seconds: float) -> tuple[int, float]:
        """Rollout phases back to back until ``seconds`` have passed: ``(env steps, seconds)``."""
        self.set_threads()
        started = time.perf_counter()
        iterations = 0
        while True:
            self.rollout()
            iterations += 1
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                return iterations * BATCH_SIZE, elapsed

    def train_window(self, seconds: float, iterations_min: int) -> tuple[int, float, list[float], list[float]]:
        """Whole iterations until ``seconds`` have passed (at least ``iterations_min``):
        ``(env steps, seconds, rollout seconds, update seconds)``, the last two per iteration."""
        self.set_threads()
        rollout_s: list[float] = []
        update_s: list[float] = []
        started = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            self.rollout()
            t1 = time.perf_counter()
            self.update()
            t2 = time.perf_counter()
            rollout_s.append(t1 - t0)
            update_s.append(t2 - t1)
            elapsed = t2 - started
            if elapsed >= seconds and len(rollout_s) >= iterations_min:
                return len(rollout_s) * BATCH_SIZE, elapsed, rollout_s, update_s

    def warm_up(self) -> int:
        """One full iteration; return the torch threads in effect."""
        threads = self.set_threads()
        self.rollout()
        self.update()
        return threads

    def close(self) -> None:
        self.envs.close()


# ---- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Budget:
    seconds: float
    repeats: int
    min_intervals: int
    """Fewest timed learner updates (aiorl) or iterations (CleanRL) in a training window."""


def make_trainer(seed: int, network: str, options: dict[str, Any]) -> aiorl.Trainer:
    """The preset's trainer, with CleanRL's network as its policy for ``network="nature"``."""
    if network == "nature":
        torch.manual_seed(seed)
        options = {"policy": NatureActorCritic(PONG_ACTIONS), **options}
    return aiorl.Trainer.from_preset(PRESET, seed=seed, **options)


async def measure(budget: Budget, args: argparse.Namespace) -> Results:
    results = Results()
    meter = OtherLoadMeter()
    _progress(f"starting aiorl's {PRESET} preset (2 worker processes) and the CleanRL-style PPO (EnvPool) ...")
    options = dict(parse_option(text) for text in args.option)
    trainer = make_trainer(args.seed, args.aiorl_network, options)
    cfg = trainer.config
    results.aiorl_learner_threads = trainer.learner_threads  # set in the learner's own thread
    results.aiorl_batch_steps = cfg.num_workers * cfg.envs_per_worker * cfg.rollout_length
    net = "CleanRL's Nature CNN" if args.aiorl_network == "nature" else "default CNN"
    extra = "".join(f", {text}" for text in args.option)
    results.aiorl_label = (
        f"aiorl preset ({type(trainer.algo).__name__}, {cfg.num_workers} workers x {cfg.envs_per_worker} envs "
        f"x {cfg.rollout_length} steps, {net}{extra})"
    )
    baseline = await asyncio.to_thread(CleanRLPPO, args.seed, args.baseline_threads)
    try:
        async with trainer:
            side = AiorlSide(trainer)
            _progress("warming up: aiorl sampling ...")
            await side.warm_up_sampling()
            _progress("warming up: CleanRL (one iteration) ...")
            results.cleanrl_threads = await asyncio.to_thread(baseline.warm_up)
            for round_ in range(1, budget.repeats + 1):
                where = f"round {round_}/{budget.repeats}"
                window = side.sample_window(budget.seconds)
                await timed(meter, results.aiorl_sampling, f"{where}: aiorl sampling", window)
                window = asyncio.to_thread(baseline.sample_window, budget.seconds)
                await timed(meter, results.cleanrl_sampling, f"{where}: CleanRL sampling", window)
                window = side.train_window(budget.seconds, budget.min_intervals)
                out = await timed(meter, results.aiorl_training, f"{where}: aiorl training", window)
                results.aiorl_update_s += out[2]
                window = asyncio.to_thread(baseline.train_window, budget.seconds, budget.min_intervals)
                out = await timed(meter, results.cleanrl_training, f"{where}: CleanRL training", window)
                results.cleanrl_rollout_s += out[2]
                results.cleanrl_update_s += out[3]
    finally:
        await asyncio.to_thread(baseline.close)
    return results


async def timed(meter: OtherLoadMeter, series: Series, what: str, window: Awaitable[Any]) -> Any:
    """Await one window (it returns ``(env steps, seconds, ...)``), record it in ``series`` and report it."""
    before = meter.snapshot()
    out = await window
    other = meter.cores(before, meter.snapshot())
    rate = series.add(out[0], out[1], other)
    load = "" if other is None else f" (other load {other:.2f} cores)"
    _progress(f"{what}: {rate:,.1f} env steps/s, {rate * FRAME_SKIP:,.0f} frames/s{load}")
    return out


# ---- report ----------------------------------------------------------------------------------


def _load(*series: Series) -> str:
    loads = [load for s in series for load in s.other_load]
    return f"{max(loads):.2f}" if loads else "n/a"


def render_table(results: Results) -> str:
    a_s, a_t = results.aiorl_sampling, results.aiorl_training
    c_s, c_t = results.cleanrl_sampling, results.cleanrl_training
    threads = f"{results.cleanrl_threads} torch thread{'s' if results.cleanrl_threads > 1 else ''}"
    cleanrl_label = f"CleanRL-style PPO + EnvPool (1 process, {NUM_ENVS} envs, {threads})"
    lines = [
        "| system | sampling env steps/s | sampling frames/s | trained env steps/s | trained frames/s "
        "| windows (sampling; training) | other load (cores, max) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, sampling, training in ((results.aiorl_label, a_s, a_t), (cleanrl_label, c_s, c_t)):
        load = _load(sampling, training)
        lines.append(
            f"| {label} | {sampling.rate:,.0f} | {sampling.rate * FRAME_SKIP:,.0f} | {training.rate:,.0f} "
            f"| {training.rate * FRAME_SKIP:,.0f} | {sampling.spread}; {training.spread} | {load} |"
        )
    sampling_ratio, training_ratio = a_s.rate / c_s.rate, a_t.rate / c_t.rate
    lines.append(
        f"| **ratio aiorl / CleanRL** | **{sampling_ratio:.2f}x** | **{sampling_ratio:.2f}x** "
        f"| **{training_ratio:.2f}x** | **{training_ratio:.2f}x** | | |"
    )
    return "\n".join(lines)


def render_breakdown(results: Results) -> str:
    """Where each system's training time went."""
    lines = []
    if results.aiorl_update_s:
        update = float(np.median(results.aiorl_update_s))
        batch = results.aiorl_batch_steps
        trained = results.aiorl_training.rate
        threads = results.aiorl_learner_threads
        lines.append(
            f"- aiorl training: a median {update:.2f} s per learner update of {batch:,} env steps ({threads} torch "
            f"thread{'s' if threads != 1 else ''}; the workers sample on the same cores meanwhile) caps training at "
            f"{batch / update:,.0f} env steps/s; it trained {trained:,.0f}: the learner was busy "
            f"~{min(1.0, trained * update / batch):.0%} of the time; {len(results.aiorl_update_s)} timed updates"
        )
    if results.cleanrl_rollout_s:
        rollout = float(np.median(results.cleanrl_rollout_s))
        update = float(np.median(results.cleanrl_update_s))
        lines.append(
            f"- CleanRL training: per iteration of {BATCH_SIZE:,} env steps a median {rollout:.2f} s of rollout "
            f"({BATCH_SIZE / rollout:,.0f} env steps/s while collecting) and {update:.2f} s of GAE + update "
            f"({update / (rollout + update):.0%} of the loop); {len(results.cleanrl_rollout_s)} timed iterations"
        )
    return "\n".join(lines)


def describe_setup(budget: Budget, seed: int) -> str:
    versions = (
        f"Python {platform.python_version()}, torch {torch.__version__}, gymnasium {gym.__version__}, "
        f"aiorl {aiorl.__version__}, envpool {_version('envpool')}, ale-py {_version('ale_py')}"
    )
    return "\n".join(
        [
            f"- frames = env steps x {FRAME_SKIP} (frame skip); seed {seed}; {budget.repeats} round(s) of one "
            f"~{budget.seconds:g} s window per system and phase, after warm-ups; rate = env steps of all windows "
            "/ their total time",
            f"- aiorl: Trainer.from_preset({PRESET!r}); env AtariEnv (gymnasium AtariPreprocessing + "
            "FrameStackObservation(4), sticky actions 0.25); sampling: Trainer.sample; training: Trainer.run, "
            "timed from the end of the second update of each window",
            f"- CleanRL-style: ppo_atari_envpool.py's loop, network and defaults; envpool.make({ENVPOOL_TASK!r}, "
            f"num_envs={NUM_ENVS}, episodic_life=True, reward_clip=True); sampling: its rollout phase alone",
            f"- machine: {usable_cores()} CPUs ({platform.machine()}), load average {_loadavg()} at the end; "
            f"{versions}",
        ]
    )


def _version(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except Exception:
        return "?"


def _loadavg() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=None, help="wall time of each timed window (default 20; --quick 6)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="rounds of windows (default 2; --quick 1)")
    parser.add_argument("--quick", action="store_true", help="1-1.5 minutes: 1 round of 6 s windows")
    parser.add_argument("--seed", type=int, default=0, help="seed of both systems (default 0)")
    parser.add_argument(
        "--baseline-threads",
        type=int,
        default=DEFAULT_TORCH_THREADS,
        help=f"torch threads of the CleanRL-style loop (default: torch's default here, {DEFAULT_TORCH_THREADS})",
    )
    parser.add_argument(
        "--aiorl-network",
        choices=("preset", "nature"),
        default="preset",
        help="aiorl's policy: the preset's default CNN, or CleanRL's Nature CNN (default: preset)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        help="extra aiorl Trainer option name=value, e.g. learner_threads=2 (repeatable)",
    )
    args = parser.parse_args(argv)
    args.seconds = args.seconds if args.seconds is not None else (6.0 if args.quick else 20.0)
    args.repeats = args.repeats if args.repeats is not None else (1 if args.quick else 2)
    if args.seconds <= 0 or args.repeats < 1 or args.baseline_threads < 1:
        parser.error("--seconds must be > 0, --repeats >= 1 and --baseline-threads >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import ale_py  # noqa: F401
        import envpool  # noqa: F401
    except ImportError as exc:
        print(f"needs ale-py, opencv and envpool: pip install 'aiorl[atari]' envpool ({exc})", file=sys.stderr)
        return 2
    budget = Budget(args.seconds, args.repeats, min_intervals=1 if args.quick else 2)
    started = time.monotonic()
    try:
        results = asyncio.run(measure(budget, args))
    except KeyboardInterrupt:
        print("interrupted; every worker process was stopped", file=sys.stderr)
        return 130
    print(f"## Atari {PRESET}: sampling and training throughput, aiorl against CleanRL-style PPO + EnvPool")
    print()
    print(describe_setup(budget, args.seed))
    print()
    print(render_table(results))
    print()
    print(render_breakdown(results))
    loads = [
        load
        for s in (results.aiorl_sampling, results.aiorl_training, results.cleanrl_sampling, results.cleanrl_training)
        for load in s.other_load
    ]
    why = "aiorl (2 worker processes and a learner thread) needs every core; "
    print_footer(busy_warning(loads, OTHER_LOAD_WARN, "windows", why), started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
