"""PPO's clipped surrogate optimisation, shared by PPO (on GAE) and APPO (on V-trace).

Given advantages and value targets computed by the algorithm, for ``update_epochs``
epochs over shuffled minibatches of the valid samples:

- ``ratio = pi_theta(a|s) / mu(a|s)`` where ``mu`` is the behaviour policy that acted
  (its log-prob was recorded by the worker), so the lag between acting and learning is
  corrected by the same clip;
- ``L_clip = E[max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))]``;
- value loss ``0.5 * (V - R)^2`` (optionally clipped around the pre-update value);
- ``loss = L_clip - c_ent * entropy + c_v * L_value``; clip the gradient norm; step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from aiorl.distributions import ActionDistribution
from aiorl.errors import LearnerError
from aiorl.models import assign_flat, evaluate, flat_weights


class SurrogateConfig(Protocol):
    """The hyperparameters the clipped surrogate reads (PPO and APPO have them all)."""

    @property
    def learning_rate(self) -> float: ...  # noqa: D102

    @property
    def lr_schedule(self) -> str: ...  # noqa: D102

    @property
    def clip_coef(self) -> float: ...  # noqa: D102

    @property
    def clip_value_loss(self) -> bool: ...  # noqa: D102

    @property
    def ent_coef(self) -> float: ...  # noqa: D102

    @property
    def vf_coef(self) -> float: ...  # noqa: D102

    @property
    def max_grad_norm(self) -> float: ...  # noqa: D102

    @property
    def update_epochs(self) -> int: ...  # noqa: D102

    @property
    def num_minibatches(self) -> int: ...  # noqa: D102

    @property
    def normalize_advantages(self) -> bool: ...  # noqa: D102


@dataclass(frozen=True, slots=True)
class Targets:
    """Flat ``[T * N, ...]`` tensors of one batch, ready for the epochs.

    ``trainable`` holds the indices of valid samples (steps of an episode broken by an
    env error are left out); ``old_values`` are V(s) before the update.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    behaviour_logprobs: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    trainable: torch.Tensor


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def config_problems(cfg: object, *, positive: tuple[str, ...], unit: tuple[str, ...]) -> list[str]:
    """Check an algorithm config's fields; return one message per bad field, naming it and its value.

    ``positive`` fields must be finite numbers > 0, ``unit`` fields numbers in [0, 1];
    the surrogate's own fields (coefficients, epochs, minibatches, schedule) are always checked.
    """
    kind = type(cfg).__name__
    problems = []
    for name in ("learning_rate", "clip_coef", "max_grad_norm", *positive):
        value = getattr(cfg, name)
        if not (_number(value) and value > 0):
            problems.append(f"{kind}.{name}={value!r} must be a finite number > 0")
    for name in unit:
        value = getattr(cfg, name)
        if not (_number(value) and 0.0 <= value <= 1.0):
            problems.append(f"{kind}.{name}={value!r} must be in [0, 1]")
    for name in ("ent_coef", "vf_coef"):
        value = getattr(cfg, name)
        if not (_number(value) and value >= 0):
            problems.append(f"{kind}.{name}={value!r} must be a finite number >= 0")
    for name in ("update_epochs", "num_minibatches"):
        value = getattr(cfg, name)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            problems.append(f"{kind}.{name}={value!r} must be an integer >= 1")
    schedule = getattr(cfg, "lr_schedule")  # noqa: B009 - any config object
    if schedule not in ("constant", "linear"):
        problems.append(f"{kind}.lr_schedule={schedule!r} must be 'constant' or 'linear'")
    return problems


def set_learning_rate(optimizer: torch.optim.Optimizer, cfg: SurrogateConfig, progress: float) -> float:
    """Apply the schedule (``'linear'`` anneals to 0 over the run) and return the rate."""
    lr = cfg.learning_rate * (1.0 - progress if cfg.lr_schedule == "linear" else 1.0)
    for group in optimizer.param_groups:
        group["lr"] = max(lr, 0.0)
    return lr


def explained_variance(returns: np.ndarray, values: np.ndarray, valid: np.ndarray) -> float:
    """``1 - Var(R - V) / Var(R)`` over valid samples (NaN when the returns are constant)."""
    var_returns = float(np.var(returns[valid]))
    return float("nan") if var_returns == 0 else 1.0 - float(np.var(returns[valid] - values[valid])) / var_returns


def optimise_clipped_surrogate(
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    dist: ActionDistribution,
    cfg: SurrogateConfig,
    targets: Targets,
    target_kl: float | None = None,
    name: str = "PPO",
) -> dict[str, float]:
    """Run the epochs; return the mean losses and diagnostics.

    Raises:
        LearnerError: a loss became NaN or infinite (``name`` says whose); the weights
            are left as they were before the failing minibatch.
    """
    size = int(targets.trainable.numel())
    stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")}
    for _epoch in range(cfg.update_epochs):
        order = targets.trainable[torch.randperm(size, device=targets.trainable.device)]
        for mb in torch.tensor_split(order, min(cfg.num_minibatches, size)):
            dist_inputs, new_value = evaluate(policy, targets.obs[mb])
            new_logprob, entropy = dist.log_prob_entropy(dist_inputs, targets.actions[mb])
            log_ratio = new_logprob - targets.behaviour_logprobs[mb]
            ratio = log_ratio.exp()
            with torch.no_grad():
                approx_kl = ((ratio - 1) - log_ratio).mean()
                clipfrac = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()

            mb_adv = targets.advantages[mb]
            if cfg.normalize_advantages and mb_adv.numel() > 1:
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)

            pg_loss = torch.max(
                -mb_adv * ratio,
                -mb_adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef),
            ).mean()

            returns, old_values = targets.returns[mb], targets.old_values[mb]
            if cfg.clip_value_loss:
                v_clipped = old_values + (new_value - old_values).clamp(-cfg.clip_coef, cfg.clip_coef)
                v_loss = 0.5 * torch.max((new_value - returns) ** 2, (v_clipped - returns) ** 2).mean()
            else:
                v_loss = 0.5 * ((new_value - returns) ** 2).mean()

            entropy_loss = entropy.mean()
            loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss
            if not torch.isfinite(loss):
                source = "the observations" if not torch.isfinite(targets.obs[mb]).all() else "the model"
                raise LearnerError(
                    f"non-finite {name} loss (policy {pg_loss.item()}, value {v_loss.item()}, "
                    f"entropy {entropy_loss.item()}) coming from {source}; the update was abandoned"
                )

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            optimizer.step()

            stats["policy_loss"].append(pg_loss.item())
            stats["value_loss"].append(v_loss.item())
            stats["entropy"].append(entropy_loss.item())
            stats["approx_kl"].append(approx_kl.item())
            stats["clipfrac"].append(clipfrac.item())
        if target_kl is not None and stats["approx_kl"][-1] > target_kl:
            break
    return {key: float(np.mean(values)) for key, values in stats.items()}


class SurrogateLearner:
    """What PPO's and APPO's learners share: the policy on its device, Adam, flat weights."""

    def __init__(self, config: SurrogateConfig, policy: nn.Module, dist: ActionDistribution, device: str) -> None:
        self.device = torch.device(device)
        self.policy = policy.to(self.device)
        self.dist = dist
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.learning_rate, eps=1e-5)

    def weights(self) -> np.ndarray:
        """The policy's current weights as one flat float32 CPU array."""
        return flat_weights(self.policy)

    def load_weights(self, weights: np.ndarray) -> None:
        """Overwrite the policy's weights with a flat array from :meth:`weights`."""
        assign_flat(self.policy, weights)

    def state_dict(self) -> dict[str, Any]:
        """The policy's and the optimiser's state (references, not copies), for checkpoints."""
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the policy's architecture must match)."""
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, device=self.device)
