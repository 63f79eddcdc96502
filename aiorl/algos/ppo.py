"""Proximal Policy Optimization (Schulman et al., 2017) on asynchronously collected data.

Read it against the paper (and CleanRL's ``ppo.py``):

1. Recompute V(s) for the batch with the *current* network (the data may be a few
   versions old) and compute GAE advantages and returns.
2. For ``update_epochs`` epochs over shuffled minibatches:
   ``ratio = pi_theta(a|s) / pi_behaviour(a|s)`` where ``pi_behaviour`` is the policy
   that acted (its log-prob was recorded by the worker), so a lag between acting and
   learning is corrected by the same clipped ratio;
   ``L_clip = E[max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))]``;
   value loss ``0.5 * (V - R)^2`` (optionally clipped around the old value);
   ``loss = L_clip - c_ent * entropy + c_v * L_value``; clip the gradient norm; step.
   (Step 2 lives in :mod:`aiorl.algos.surrogate`, shared with APPO.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from aiorl.algos.advantages import gae
from aiorl.algos.batch import RolloutBatch
from aiorl.algos.optim import set_learning_rate
from aiorl.algos.surrogate import (
    SurrogateLearner,
    Targets,
    config_problems,
    explained_variance,
    finite_number,
)
from aiorl.distributions import ActionDistribution
from aiorl.errors import ConfigError, suggest_unknown_options
from aiorl.numbers import plain_numbers


@suggest_unknown_options
@dataclass(frozen=True, kw_only=True, slots=True)
class PPO:
    """PPO hyperparameters. Every field is validated at construction."""

    learning_rate: float = 2e-3
    """Adam step size (at the start of a run when ``lr_schedule='linear'``)."""
    lr_schedule: Literal["constant", "linear"] = "linear"
    """``'linear'`` anneals the learning rate to 0 over each ``run()``'s ``total_steps``."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_coef: float = 0.2
    """Clipping range epsilon of the probability ratio."""
    clip_value_loss: bool = True
    """Clip the value prediction around the pre-update value, as in PPO2/CleanRL."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    update_epochs: int = 4
    """Passes over each batch. (Fewer than the paper's 10: aiorl collects data faster than a
    learner can reuse it, so fresh samples beat more passes over old ones; see ``benchmarks/README.md``.)"""
    num_minibatches: int = 2
    """Minibatches per epoch. The batch grows with the workers (``rollouts_per_batch`` defaults to
    ``num_workers``), so minibatches grow with it while the gradient steps per update stay fixed."""
    normalize_advantages: bool = True
    """Normalise advantages per minibatch to zero mean, unit std."""
    compile: bool | None = None
    """Run each minibatch's loss and its backward pass compiled by ``torch.compile``; ``None``
    compiles on CUDA only (on CPU compiling takes longer than short runs gain from it)."""
    target_kl: float | None = None
    """Stop the epochs of an update early once the approximate KL exceeds this."""

    def __post_init__(self) -> None:
        plain_numbers(self)
        problems = config_problems(self, positive=(), unit=("gamma", "gae_lambda"))
        if self.target_kl is not None and not (finite_number(self.target_kl) and self.target_kl > 0):
            problems.append(f"PPO.target_kl={self.target_kl!r} must be > 0 or None")
        if problems:
            raise ConfigError(problems)

    def make_learner(self, policy: nn.Module, dist: ActionDistribution, device: str) -> PPOLearner:
        """Build the learner that trains ``policy`` (moved to ``device``)."""
        return PPOLearner(self, policy, dist, device)


class PPOLearner(SurrogateLearner):
    """Runs PPO updates on :class:`RolloutBatch` es. Pure torch; no asyncio here."""

    def __init__(self, config: PPO, policy: nn.Module, dist: ActionDistribution, device: str) -> None:
        super().__init__(config, policy, dist, device)
        self.config = config

    def learn(self, batch: RolloutBatch, progress: float) -> dict[str, float]:
        """One PPO update on ``batch``; ``progress`` in [0, 1] drives the lr schedule.

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

        # 1. GAE with the critic as it is now (the data may be a few versions old).
        steps, envs = batch.rewards.shape
        obs = self.observations(batch)
        b_values, next_value, sequences = self.values(batch, obs)
        values = b_values.reshape(steps, envs)
        values_np = values.cpu().numpy()
        advantages, returns = gae(
            batch.rewards,
            values_np,
            next_value.cpu().numpy(),
            batch.terminated,
            batch.truncated,
            batch.trunc_values,
            cfg.gamma,
            cfg.gae_lambda,
        )

        # 2. The clipped surrogate against the behaviour policy's recorded log-probs.
        targets = Targets.masked(
            valid,
            all_valid=bool(batch.valid.all()),
            sequences=sequences,
            obs=obs,
            actions=self._tensor(batch.actions).reshape(steps * envs, *batch.actions.shape[2:]),
            behaviour_logprobs=self._tensor(batch.logprobs).reshape(-1),
            old_values=values.reshape(-1),
            advantages=self._tensor(advantages).reshape(-1),
            returns=self._tensor(returns).reshape(-1),
            action_masks=self._masks(batch),
        )
        report = self.optimise(targets, cfg.target_kl)
        # Running observation statistics (ObservationNormalizer) take the batch in after the
        # update, which scored it as the workers saw it (CleanRL's order: an on-policy batch
        # starts at ratio 1); the next version acts with the new statistics.
        observe = getattr(self.policy, "observe", None)
        if observe is not None:
            observe(obs[valid])
        report.update(learning_rate=lr, explained_variance=explained_variance(returns, values_np, batch.valid))
        return report
