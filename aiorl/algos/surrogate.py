"""PPO's clipped surrogate optimisation, shared by PPO (on GAE) and APPO (on V-trace).

Given advantages and value targets computed by the algorithm, for ``update_epochs``
epochs over shuffled minibatches of the batch:

- ``ratio = pi_theta(a|s) / mu(a|s)`` where ``mu`` is the behaviour policy that acted
  (its log-prob was recorded by the worker), so the lag between acting and learning is
  corrected by the same clip;
- ``L_clip = E[max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))]``;
- value loss ``0.5 * (V - R)^2`` (optionally clipped around the pre-update value);
- ``loss = L_clip - c_ent * entropy + c_v * L_value``; clip the gradient norm; step.

How it is made fast (the learner, not the workers, bounds training speed):

- Steps of episodes broken by an env error are *masked* (their weight is 0 in every
  mean) rather than cut out, so every minibatch has the same shape: a compiled step
  (``compile=True``, the default on CUDA) is built once and never recompiled.
- Losses and diagnostics stay on the device, summed over the minibatches; the host
  reads them once per update (PPO's ``target_kl`` adds one read per epoch, and so does
  a batch with masked samples: a minibatch without one valid sample takes no step). The
  non-finite check happens at that read: if any minibatch's loss or gradient norm was
  NaN or infinite, the policy and the optimiser are put back as they were before the
  update and :class:`~aiorl.errors.LearnerError` is raised.
- The policy's parameters and gradients are views into one flat tensor
  (:func:`~aiorl.models.flatten_parameters`), so zeroing, clipping and fused Adam are
  one operation each per step, whatever the number of layers.
- On a CPU, aiorl's default MLP (:class:`~aiorl.models.ActorCritic`, any action space,
  with action masks or without) takes its gradient from :mod:`aiorl.algos.mlp_step`,
  the same gradient written out without autograd (its observations normalised once per
  update, not per step), and PPO's value pass runs the critic alone.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from aiorl.algos.batch import RolloutBatch, stack_frames
from aiorl.algos.compiling import LEARNERS_PER_PROCESS, allow_recompiles, compiler_warnings_ignored
from aiorl.algos.mlp_step import Coefficients, WrittenOutStep, written_out_policy
from aiorl.algos.optim import Snapshot, adam_step, flat_adam_state, make_optimizer
from aiorl.distributions import ActionDistribution
from aiorl.errors import LearnerError
from aiorl.models import ObservationNormalizer, assign_flat, evaluate, flat_weights, flatten_parameters
from aiorl.recurrent import unroll

log = logging.getLogger("aiorl")

LOSS_STATS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "loss")
"""What :func:`clipped_surrogate_loss` reports of a minibatch, in this order."""
STATS = (*LOSS_STATS, "grad_norm")
"""The diagnostics of an update (the gradient norm before clipping last), averaged over its minibatch steps."""


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

    @property
    def compile(self) -> bool | None: ...  # noqa: D102


@dataclass(frozen=True, slots=True)
class Sequences:
    """What replaying a recurrent policy over a batch needs (see :mod:`aiorl.recurrent`).

    ``initial_state`` ``[N, S]`` is each trajectory's state before its first step, as the
    worker had it; ``episode_starts`` ``[T, N]`` (float) marks the steps the state was reset at.
    """

    initial_state: torch.Tensor
    episode_starts: torch.Tensor

    @property
    def steps(self) -> int:
        """``T``, the length of every sequence."""
        return self.episode_starts.shape[0]


@dataclass(frozen=True, slots=True)
class Targets:
    """Flat ``[B, ...]`` tensors of one batch (``B = T * N``), ready for the epochs.

    ``valid`` is 1.0 for samples to train on and 0.0 for steps of an episode broken by
    an env error (or too old to use); the other fields of masked samples are zeroed so
    they can never put a NaN into a minibatch. ``old_values`` are V(s) before the update.

    With ``sequences`` (a recurrent policy) the samples are ``T`` steps of ``N``
    trajectories, time-major, and minibatches are whole trajectories: a minibatch replays
    its trajectories from their recorded states (truncated backpropagation through time).
    Their observations are kept as they are, masked or not, so a replay passes through
    the same inputs the worker's policy did.

    ``action_masks`` (bool ``[B, num_inputs]``, or ``None`` without action masks) are the
    valid actions of each sample: log-probs and entropies are taken over them.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    behaviour_logprobs: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    valid: torch.Tensor
    action_masks: torch.Tensor | None = None
    sequences: Sequences | None = None
    all_valid: bool = False
    """Every sample is valid (``False`` where that is not known)."""

    @classmethod
    def masked(
        cls,
        valid: torch.Tensor,
        *,
        all_valid: bool = False,
        sequences: Sequences | None = None,
        **fields: torch.Tensor | None,
    ) -> Targets:
        """Targets with every sample where ``valid`` (bool ``[B]``) is False zeroed.

        ``all_valid=True`` (the caller knows no sample is masked) skips the copies. A field
        given as ``None`` (``action_masks`` without masks) stays ``None``.
        """

        def zero_invalid(name: str, tensor: torch.Tensor) -> torch.Tensor:
            if all_valid or (name == "obs" and sequences is not None):
                return tensor
            keep = valid.reshape(-1, *([1] * (tensor.dim() - 1)))
            return torch.where(keep, tensor, torch.zeros((), dtype=tensor.dtype, device=tensor.device))

        zeroed = {name: None if t is None else zero_invalid(name, t) for name, t in fields.items()}
        return cls(valid=valid.float(), sequences=sequences, all_valid=all_valid, **zeroed)  # type: ignore[arg-type]

    @property
    def units(self) -> int:
        """What minibatches are drawn from: samples, or whole trajectories with ``sequences``."""
        return self.valid.numel() if self.sequences is None else self.sequences.initial_state.shape[0]

    def empty_minibatches(self, indices: Sequence[torch.Tensor]) -> set[int]:
        """The positions in ``indices`` of minibatches without one valid sample (no host read if all are valid).

        Their loss and gradient are 0, but an optimiser step would still move the weights
        on Adam's momentum: a recurrent policy's whole trajectory can be masked (too old,
        or broken by an env error) and make up a minibatch of its own.
        """
        if self.all_valid:
            return set()
        unit_valid = self.valid  # a trajectory counts if any of its steps does:
        if self.sequences is not None:
            unit_valid = unit_valid.reshape(self.sequences.steps, -1).amax(0)
        counts = torch.stack([unit_valid.index_select(0, index).sum() for index in indices]).tolist()
        return {i for i, count in enumerate(counts) if count == 0}

    def minibatch(self, index: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """The units at ``index``, in the argument order of :func:`clipped_surrogate_loss`.

        Gathered with ``index_select`` (2-4x faster than ``tensor[index]`` on a CPU).
        """
        initial_state = episode_starts = None
        if self.sequences is not None:  # trajectories ``index``: their samples, time-major
            seq = self.sequences
            steps = torch.arange(seq.steps, device=index.device).unsqueeze(1)
            initial_state = seq.initial_state.index_select(0, index)
            episode_starts = seq.episode_starts.index_select(1, index)
            index = (steps * seq.initial_state.shape[0] + index).reshape(-1)
        return (
            self.obs.index_select(0, index),
            self.actions.index_select(0, index),
            self.behaviour_logprobs.index_select(0, index),
            self.old_values.index_select(0, index),
            self.advantages.index_select(0, index),
            self.returns.index_select(0, index),
            self.valid.index_select(0, index),
            None if self.action_masks is None else self.action_masks.index_select(0, index),
            initial_state,
            episode_starts,
        )


def finite_number(value: object) -> bool:
    """Whether ``value`` is a finite int or float (a bool is not a number here)."""
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
        if not (finite_number(value) and value > 0):
            problems.append(f"{kind}.{name}={value!r} must be a finite number > 0")
    for name in unit:
        value = getattr(cfg, name)
        if not (finite_number(value) and 0.0 <= value <= 1.0):
            problems.append(f"{kind}.{name}={value!r} must be in [0, 1]")
    for name in ("ent_coef", "vf_coef"):
        value = getattr(cfg, name)
        if not (finite_number(value) and value >= 0):
            problems.append(f"{kind}.{name}={value!r} must be a finite number >= 0")
    for name in ("update_epochs", "num_minibatches"):
        value = getattr(cfg, name)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            problems.append(f"{kind}.{name}={value!r} must be an integer >= 1")
    for name in ("clip_value_loss", "normalize_advantages"):
        value = getattr(cfg, name)
        if not isinstance(value, bool):
            problems.append(f"{kind}.{name}={value!r} must be True or False")
    schedule = getattr(cfg, "lr_schedule")  # noqa: B009 - any config object
    if schedule not in ("constant", "linear"):
        problems.append(f"{kind}.lr_schedule={schedule!r} must be 'constant' or 'linear'")
    compile_ = getattr(cfg, "compile")  # noqa: B009 - any config object
    if compile_ is not None and not isinstance(compile_, bool):
        problems.append(f"{kind}.compile={compile_!r} must be True, False or None (automatic)")
    return problems


def explained_variance(returns: np.ndarray, values: np.ndarray, valid: np.ndarray) -> float:
    """``1 - Var(R - V) / Var(R)`` over valid samples (NaN when the returns are constant)."""
    var_returns = float(np.var(returns[valid]))
    return float("nan") if var_returns == 0 else 1.0 - float(np.var(returns[valid] - values[valid])) / var_returns


def clipped_surrogate_loss(
    policy: nn.Module,
    dist: ActionDistribution,
    cfg: SurrogateConfig,
    obs: torch.Tensor,
    actions: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    valid: torch.Tensor,
    action_masks: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    episode_starts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of one minibatch, and its diagnostics (a tensor ordered as :data:`LOSS_STATS`).

    Every mean is over the valid samples only (``valid`` is 1.0 or 0.0 per sample). With
    ``action_masks`` the new log-probs and the entropy are over each sample's valid actions.
    A recurrent policy's minibatch also has ``initial_state`` ``[n, S]`` and
    ``episode_starts`` ``[T, n]``: its samples are ``T`` steps of ``n`` trajectories, replayed.
    """
    count = valid.sum().clamp(min=1.0)

    def mean(x: torch.Tensor) -> torch.Tensor:
        return (x * valid).sum() / count

    if initial_state is not None and episode_starts is not None:
        steps_obs = obs.reshape(*episode_starts.shape, *obs.shape[1:])
        dist_inputs, new_value = unroll(policy, steps_obs, initial_state, episode_starts)
    else:
        dist_inputs, new_value = evaluate(policy, obs)
    new_logprob, entropy = dist.log_prob_entropy(dist_inputs, actions, action_masks)
    # A masked sample's ratio is 1: its zeroed action could score a log-prob whose exp() overflows
    # (a sharp Gaussian near 0), and 0 * inf would put a NaN into every mean.
    log_ratio = (new_logprob - behaviour_logprobs) * valid
    ratio = log_ratio.exp()
    with torch.no_grad():
        approx_kl = mean((ratio - 1) - log_ratio)
        clipfrac = mean(((ratio - 1.0).abs() > cfg.clip_coef).float())

    if cfg.normalize_advantages:  # zero mean, unit (unbiased) std over the minibatch's valid samples
        centred = (advantages - mean(advantages)) * valid
        std = ((centred**2).sum() / (count - 1).clamp(min=1.0)).sqrt()
        advantages = centred / (std + 1e-8)

    pg_loss = mean(
        torch.max(
            -advantages * ratio,
            -advantages * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef),
        )
    )

    if cfg.clip_value_loss:
        v_clipped = old_values + (new_value - old_values).clamp(-cfg.clip_coef, cfg.clip_coef)
        v_loss = 0.5 * mean(torch.max((new_value - returns) ** 2, (v_clipped - returns) ** 2))
    else:
        v_loss = 0.5 * mean((new_value - returns) ** 2)

    entropy_loss = mean(entropy)
    loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss
    stats = torch.stack([pg_loss.detach(), v_loss.detach(), entropy_loss.detach(), approx_kl, clipfrac, loss.detach()])
    return loss, stats


LossFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


class SurrogateLearner:
    """What PPO's and APPO's learners share: the policy on its device, Adam, the epochs, flat weights.

    ``config.compile`` ``None`` compiles the minibatch loss with ``torch.compile`` on CUDA
    (where a step costs kernel launches, not arithmetic) and not on CPU (where compiling
    took 3-25 s on 2 cores for a 1.1-1.3x faster update, a loss for most CPU runs). If
    compiling fails, the learner logs why and goes on uncompiled.

    On a CPU the default MLP's minibatch steps go through :attr:`written_out` (see
    :mod:`aiorl.algos.mlp_step`), compiled or not as the loss would be.
    """

    def __init__(self, config: SurrogateConfig, policy: nn.Module, dist: ActionDistribution, device: str) -> None:
        self.device = torch.device(device)
        self.policy = policy.to(self.device)
        self.dist = dist
        self.surrogate_config = config
        self.parameters = flatten_parameters(self.policy)
        """All of the policy's parameters as one flat tensor (the policy's own are views of it)."""
        self._grad: torch.Tensor = self.parameters.grad  # type: ignore[assignment]  # set by flatten_parameters
        self.optimizer = make_optimizer([self.parameters], config.learning_rate)
        self.generator = torch.Generator(device=self.device)
        """Orders the minibatches; the trainer seeds it and checkpoints its state (the global
        generator stays the application's)."""
        model = written_out_policy(self.policy) if self.device.type == "cpu" else None
        self.written_out = None if model is None else WrittenOutStep(model, dist, Coefficients.of(config))
        """The default MLP's gradient written out (``None``: autograd's, for any other policy or
        device); set it to ``None`` to train through autograd."""
        self.compiled = config.compile if config.compile is not None else self.device.type == "cuda"
        """Whether the minibatch loss runs compiled (set back to False if compiling failed)."""
        self._loss: LossFn = self._eager_loss
        self._loss_checked = True
        if self.compiled:
            self.compile_loss()

    def compile_loss(self, mode: str | None = None) -> None:
        """Run the minibatch loss (forward and backward) through ``torch.compile`` from the next update on.

        ``mode`` is ``torch.compile``'s (``"reduce-overhead"`` replays CUDA graphs).
        Compiling happens at the next update's first minibatch; if it fails there, the
        learner logs why and goes on uncompiled (:attr:`compiled` turns False).
        """
        allow_recompiles(LEARNERS_PER_PROCESS)
        self._loss = torch.compile(self._eager_loss, mode=mode, dynamic=False)  # fixed shapes: see Targets
        if self.written_out is not None:
            self.written_out.compile(mode)
        self.compiled, self._loss_checked = True, False

    def _eager_loss(self, *minibatch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return clipped_surrogate_loss(self.policy, self.dist, self.surrogate_config, *minibatch)

    def _gradients(self, minibatch: tuple[torch.Tensor | None, ...], written_out: bool) -> torch.Tensor:
        """Set the gradients of the minibatch's loss; return its diagnostics (see :data:`LOSS_STATS`).

        ``written_out``: through :attr:`written_out` (the minibatch's observations are normalised).
        """
        if not self.compiled:
            return self._step(minibatch, written_out)
        with compiler_warnings_ignored():
            return self._compiled_gradients(minibatch, written_out)

    def _compiled_gradients(self, minibatch: tuple[torch.Tensor | None, ...], written_out: bool) -> torch.Tensor:
        if not self._loss_checked:  # the first call compiles the forward and backward: if that fails, go eager
            try:
                return self._step(minibatch, written_out)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                log.warning("torch.compile of the learner's loss failed (%s); training uncompiled", reason)
                self._loss, self.compiled = self._eager_loss, False
                if self.written_out is not None:
                    self.written_out.uncompile()
            finally:
                self._loss_checked = True
        return self._step(minibatch, written_out)

    def _step(self, minibatch: tuple[torch.Tensor | None, ...], written_out: bool) -> torch.Tensor:
        if written_out and self.written_out is not None:
            return self.written_out(self._grad, *minibatch)
        loss, stats = self._loss(*minibatch)
        self._grad.zero_()
        loss.backward()  # accumulates into views of ``grad``
        return stats

    def _written_out_targets(self, targets: Targets) -> Targets | None:
        """``targets`` for :attr:`written_out`, observations normalised; ``None`` where it does not apply."""
        if self.written_out is None or targets.sequences is not None:
            return None
        # The statistics are fixed during the update: normalise once, not per step.
        return dataclasses.replace(targets, obs=self._mlp_inputs(targets.obs))

    def _mlp_inputs(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs`` as :attr:`written_out`'s MLP takes it: normalised if the policy normalises (no gradient)."""
        if type(self.policy) is not ObservationNormalizer:
            return obs
        with torch.no_grad():
            return self.policy.normalize(obs)

    def optimise(self, targets: Targets, target_kl: float | None = None, name: str = "PPO") -> dict[str, float]:
        """Run the epochs of the clipped surrogate on ``targets``; return the mean losses and diagnostics.

        Raises:
            LearnerError: a loss or gradient norm became NaN or infinite (``name`` says
                whose). :meth:`update` then puts the policy and the optimiser back.
        """
        cfg = self.surrogate_config
        grad = self._grad
        size = targets.units
        minibatches = min(cfg.num_minibatches, size)
        totals = torch.zeros(len(STATS), device=self.device)
        steps = 0
        written_out = self._written_out_targets(targets)
        source = targets if written_out is None else written_out
        for _epoch in range(cfg.update_epochs):
            order = torch.randperm(size, device=self.device, generator=self.generator)
            indices = torch.tensor_split(order, minibatches)
            empty = targets.empty_minibatches(indices)  # no data, so no step
            for i, index in enumerate(indices):
                if i in empty:
                    continue
                stats = self._gradients(source.minibatch(index), written_out is not None)
                grad_norm = torch.linalg.vector_norm(grad)  # clip the global norm, as clip_grad_norm_ does
                grad.mul_((cfg.max_grad_norm / (grad_norm + 1e-6)).clamp(max=1.0))
                adam_step(self.optimizer)
                totals += torch.cat([stats, grad_norm.reshape(1)])
                steps += 1
            if target_kl is not None and float(stats[LOSS_STATS.index("approx_kl")]) > target_kl:  # one read per epoch
                break
        if steps == 0:  # no valid sample at all: nothing to learn from
            return dict.fromkeys(STATS, 0.0)
        means = (totals / steps).tolist()  # the one host read of the update
        if not all(math.isfinite(value) for value in means):
            source = "the observations" if not bool(torch.isfinite(targets.obs).all()) else "the model"
            losses = dict(zip(STATS, means, strict=True))
            raise LearnerError(
                f"non-finite {name} loss (policy {losses['policy_loss']}, value {losses['value_loss']}, "
                f"entropy {losses['entropy']}, gradient norm {losses['grad_norm']}) coming from {source}; "
                "the update was abandoned and the policy restored"
            )
        return dict(zip(STATS, means, strict=True))

    def update(self, batch: RolloutBatch, progress: float) -> dict[str, float]:
        """One update on ``batch`` (:meth:`learn`); ``progress`` in [0, 1] drives the lr schedule.

        Returns the losses and diagnostics of the update.

        Raises:
            LearnerError: a loss became NaN or infinite. On this or any other error the
                policy (observation statistics included) and the optimiser are put back
                as they were before the update.
        """
        snapshot = Snapshot(self.policy, self.optimizer)
        try:
            return self.learn(batch, progress)
        except BaseException:
            snapshot.restore()
            raise

    def learn(self, batch: RolloutBatch, progress: float) -> dict[str, float]:
        """The algorithm's update (PPO's or APPO's); :meth:`update` undoes it if it fails."""
        raise NotImplementedError

    def values(self, batch: RolloutBatch, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Sequences | None]:
        """The critic's values of a whole batch as :meth:`evaluate_batch` gives them, without ``dist_inputs``.

        The default MLP (:attr:`written_out`) runs its critic alone, over the batch's and
        ``next_obs``'s observations at once (the actor's half of the pass is not needed).
        """
        if self.written_out is None or batch.initial_state is not None:
            _, values, next_value, sequences = self.evaluate_batch(batch, obs)
            return values, next_value, sequences
        both = self._mlp_inputs(torch.cat([obs, self._tensor(batch.next_obs).float()]))
        with torch.no_grad():
            values = self.written_out.policy.value(both)
        return values[: obs.shape[0]], values[obs.shape[0] :], None

    def evaluate_batch(
        self, batch: RolloutBatch, obs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Sequences | None]:
        """The network as it is now on a whole batch (no gradients); ``obs`` is the batch's ``[T * N, *obs]``.

        Returns ``dist_inputs`` ``[T * N, D]``, the values ``[T * N]``, ``next_value`` ``[N]``
        (V of ``next_obs``) and, for a recurrent policy, the batch's :class:`Sequences`:
        each trajectory is replayed from its recorded state, with one more step for ``next_obs``.
        """
        next_obs = self._tensor(batch.next_obs).float()
        with torch.no_grad():
            if batch.initial_state is None or batch.episode_starts is None or batch.next_starts is None:
                dist_inputs, values = evaluate(self.policy, obs)
                return dist_inputs, values, evaluate(self.policy, next_obs)[1], None
            steps, envs = batch.rewards.shape
            sequences = Sequences(self._tensor(batch.initial_state), self._tensor(batch.episode_starts).float())
            replay_obs = torch.cat([obs.reshape(steps, envs, *obs.shape[1:]), next_obs.unsqueeze(0)])
            next_starts = self._tensor(batch.next_starts).float().unsqueeze(0)
            dist_inputs, values = unroll(
                self.policy, replay_obs, sequences.initial_state, torch.cat([sequences.episode_starts, next_starts])
            )
        cut = steps * envs
        return dist_inputs[:cut], values[:cut], values[cut:], sequences

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
        """Restore what :meth:`state_dict` returned (the policy's architecture must match).

        An optimiser state saved before the parameters were flattened (one Adam entry per
        parameter tensor, aiorl 0.1 up to issue 11) is converted to the flat layout.
        """
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(flat_adam_state(state["optimizer"]))

    def _masks(self, batch: RolloutBatch) -> torch.Tensor | None:
        """The batch's action masks as ``[T * N, num_inputs]`` on the device (``None`` without masks)."""
        if batch.action_masks is None:
            return None
        return self._tensor(batch.action_masks).reshape(-1, batch.action_masks.shape[-1])

    def observations(self, batch: RolloutBatch) -> torch.Tensor:
        """The batch's observations as float32 ``[T * N, *obs]`` on the device.

        Stored bytes (``uint8`` images) become floats of the same values, and stacked frames
        stored once are stacked again (:func:`~aiorl.algos.batch.stack_frames`), on the device,
        so only the stored bytes are copied to it.
        """
        obs = self._tensor(batch.obs)
        if batch.frame_history is not None and batch.frame_starts is not None:
            obs = stack_frames(obs, self._tensor(batch.frame_history), self._tensor(batch.frame_starts))
        steps, envs = batch.rewards.shape
        return obs.reshape(steps * envs, *batch.next_obs.shape[1:]).float()

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        """``array`` on the learner's device (copied without waiting when it sits in pinned memory)."""
        tensor = torch.from_numpy(array)
        return tensor.to(self.device, non_blocking=tensor.is_pinned()) if self.device.type != "cpu" else tensor
