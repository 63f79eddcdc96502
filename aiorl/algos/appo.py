"""Asynchronous PPO: PPO's clipped surrogate on V-trace advantages (IMPALA's off-policy correction).

Read it against Espeholt et al. (2018, "IMPALA") and Schulman et al. (2017, "PPO"):

1. With the *current* network ``pi`` (the data may be a few versions old), compute
   V(x) and the target log-probs ``log pi(a|x)`` of the batch, then the V-trace
   targets ``vs`` and policy-gradient advantages
   ``A_t = min(rho_bar, pi / mu) * (r_t + gamma * vs_{t+1} - V(x_t))``
   (:mod:`aiorl.algos.vtrace`), where ``mu`` is the policy that acted (its log-prob
   was recorded by the worker).
2. For ``update_epochs`` epochs over shuffled minibatches, exactly as PPO:
   ``ratio = pi_theta(a|x) / mu(a|x)``;
   ``L_clip = E[max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))]``;
   value loss ``0.5 * (V - vs)^2`` (optionally clipped around the old value);
   ``loss = L_clip - c_ent * entropy + c_v * L_value``; clip the gradient norm; step.

The ratio is taken against ``mu``, as in :class:`~aiorl.algos.ppo.PPO` and Sample
Factory's APPO, so the trust region is measured from the policy that acted. (Taking it
against ``pi`` as it was at the start of the update instead collapsed the policy's
entropy within ten updates on CartPole when samples were 2-3 versions old.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from aiorl.algos.batch import RolloutBatch
from aiorl.algos.optim import set_learning_rate
from aiorl.algos.surrogate import (
    SurrogateLearner,
    Targets,
    config_problems,
    explained_variance,
)
from aiorl.algos.vtrace import vtrace
from aiorl.distributions import ActionDistribution
from aiorl.errors import ConfigError, suggest_unknown_options
from aiorl.numbers import plain_numbers


@suggest_unknown_options
@dataclass(frozen=True, kw_only=True, slots=True)
class APPO:
    """APPO hyperparameters. Every field is validated at construction.

    With the trainer's defaults (2 workers x 16 envs x 32 steps, ``max_policy_lag=4``,
    automatic normalisation) the defaults reach CartPole's 475 in about 33k env steps and
    Pendulum's -250 in about 190k.
    """

    learning_rate: float = 2e-3
    """Adam step size (at the start of a run when ``lr_schedule='linear'``)."""
    lr_schedule: Literal["constant", "linear"] = "linear"
    """``'linear'`` anneals the learning rate to 0 over each ``run()``'s ``total_steps``."""
    gamma: float = 0.99
    """Discount factor."""
    rho_bar: float = 1.0
    """V-trace's clip of the importance weight pi/mu (in the targets and the advantages)."""
    c_bar: float = 1.0
    """V-trace's clip of the trace coefficient pi/mu (how far back a correction flows)."""
    clip_coef: float = 0.2
    """Clipping range epsilon of the probability ratio."""
    clip_value_loss: bool = False
    """Clip the value prediction around the pre-update value, as in PPO2/CleanRL (off by
    default: it about doubled the steps CartPole took, whose returns are in the hundreds)."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    update_epochs: int = 4
    """Passes over each batch (few: see :class:`~aiorl.algos.ppo.PPO`)."""
    num_minibatches: int = 2
    """Minibatches per epoch; they grow with the batch, which grows with the workers."""
    normalize_advantages: bool = True
    """Normalise advantages per minibatch to zero mean, unit std."""
    compile: bool | None = None
    """Run each minibatch's loss and its backward pass compiled by ``torch.compile``; ``None``
    compiles on CUDA only (on CPU compiling takes longer than short runs gain from it)."""

    def __post_init__(self) -> None:
        plain_numbers(self)
        problems = config_problems(self, positive=("rho_bar", "c_bar"), unit=("gamma",))
        if problems:
            raise ConfigError(problems)

    def make_learner(self, policy: nn.Module, dist: ActionDistribution, device: str) -> APPOLearner:
        """Build the learner that trains ``policy`` (moved to ``device``)."""
        return APPOLearner(self, policy, dist, device)


class APPOLearner(SurrogateLearner):
    """Runs APPO updates on :class:`RolloutBatch` es. Pure torch; no asyncio here."""

    def __init__(self, config: APPO, policy: nn.Module, dist: ActionDistribution, device: str) -> None:
        super().__init__(config, policy, dist, device)
        self.config = config

    def learn(self, batch: RolloutBatch, progress: float) -> dict[str, float]:
        """One APPO update on ``batch``; ``progress`` in [0, 1] drives the lr schedule.

        Returns the losses and diagnostics of the update. Called through :meth:`update`,
        which puts the policy and the optimiser back if it raises.

        Raises:
            LearnerError: a loss became NaN or infinite.
        """
        cfg = self.config
        lr = set_learning_rate(self.optimizer, cfg, progress)

        # Steps of an episode broken by an env error are masked out of the loss.
        valid = self._tensor(batch.valid).reshape(-1)
        if not batch.valid.any():
            return {"learning_rate": lr}

        # 1. V-trace with the network as it is now: the target policy pi and V.
        steps, envs = batch.rewards.shape
        obs = self.observations(batch)
        b_actions = self._tensor(batch.actions).reshape(steps * envs, *batch.actions.shape[2:])
        b_masks = self._masks(batch)
        dist_inputs, b_values, next_value, sequences = self.evaluate_batch(batch, obs)
        with torch.no_grad():
            b_target_logprobs = self.dist.log_prob_entropy(dist_inputs, b_actions, b_masks)[0]
        values = b_values.reshape(steps, envs).cpu().numpy()
        target_logprobs = b_target_logprobs.reshape(steps, envs).cpu().numpy()
        # Masked steps form episodes of their own that end truncated with no value, so
        # the trace never carries them into valid steps.
        vs, pg_advantages = vtrace(
            batch.logprobs,
            target_logprobs,
            batch.rewards,
            values,
            next_value.cpu().numpy(),
            batch.terminated,
            batch.truncated,
            batch.trunc_values,
            cfg.gamma,
            cfg.rho_bar,
            cfg.c_bar,
        )
        # 2. PPO's clipped surrogate against the behaviour policy, on V-trace's advantages.
        targets = Targets.masked(
            valid,
            all_valid=bool(batch.valid.all()),
            sequences=sequences,
            obs=obs,
            actions=b_actions,
            behaviour_logprobs=self._tensor(batch.logprobs).reshape(-1),
            old_values=b_values,
            advantages=self._tensor(pg_advantages).reshape(-1),
            returns=self._tensor(vs).reshape(-1),
            action_masks=b_masks,
        )
        report = self.optimise(targets, name="APPO")
        # Running observation statistics (ObservationNormalizer) take the batch in after the
        # update, which scored it as the workers saw it (CleanRL's order: an on-policy batch
        # starts at ratio 1); the next version acts with the new statistics.
        observe = getattr(self.policy, "observe", None)
        if observe is not None:
            observe(obs[valid])
        log_ratios = target_logprobs[batch.valid] - batch.logprobs[batch.valid]
        report.update(
            learning_rate=lr,
            explained_variance=explained_variance(vs, values, batch.valid),
            rho_mean=float(np.mean(np.exp(np.minimum(log_ratios, math.log(cfg.rho_bar))))),
        )
        return report
