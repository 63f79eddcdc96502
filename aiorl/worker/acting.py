"""A worker's policy copy acting for its envs, feed-forward or recurrent.

Both samplers act through :class:`ActingPolicy`: one forward pass for a batch of envs.
With a recurrent policy (:mod:`aiorl.recurrent`) it also keeps each env's state across
steps and rollouts, and whether the env's next step starts an episode (its state is then
reset by the policy). The samplers record both in the slot, so the learner replays each
rollout from the state the worker had.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from aiorl.distributions import ActionDistribution
from aiorl.models import evaluate
from aiorl.recurrent import initial_state, state_size, step
from aiorl.rollout import RolloutLayout
from aiorl.worker.frames import ObservationWriter
from aiorl.worker.fused import FusedActorCritic

_CPU = torch.device("cpu")


class ActingPolicy:
    """``policy`` acting for the ``layout.num_envs`` envs of a worker, whose rollouts have ``layout``.

    Attributes:
        recurrent: whether the policy carries a state.
        state: ``[num_envs, S]`` each env's state before its next step (``None`` if feed-forward).
        starts: ``[num_envs]`` bool, the env's next step is the first of an episode.
        observations: writes the observations acted on into rollouts (stacked frames once).
        fused: aiorl's default MLP in its fused form (:mod:`aiorl.worker.fused`), which
            :meth:`act` uses when told the weights' version; ``None`` for any other policy.
        device: where :meth:`act` runs the policy when told the weights' version (aiorl's
            default MLP acts fused on the CPU whatever the device: it is too small to gain).
        on_device: the policy's copy on ``device`` (``None`` on the CPU and for the fused MLP),
            re-read when the version changes.
    """

    def __init__(self, policy: nn.Module, layout: RolloutLayout, device: str = "cpu") -> None:
        self.recurrent = state_size(policy) > 0
        self.device = torch.device(device)
        self.policy = policy
        self.state = initial_state(policy, layout.num_envs) if self.recurrent else None
        self.starts = np.ones(layout.num_envs, dtype=np.bool_)
        self.observations = ObservationWriter(layout)

    @property
    def policy(self) -> nn.Module:
        """The policy acting (setting another one drops the copies of the old one)."""
        return self._policy

    @policy.setter
    def policy(self, policy: nn.Module) -> None:
        self._policy = policy
        self.fused = None if self.recurrent else FusedActorCritic.of(policy)  # on the CPU whatever the device
        self.on_device = None
        if self.fused is None and self.device.type != "cpu":
            self.on_device = copy.deepcopy(policy).requires_grad_(False).to(self.device)
        self._copy_version: int | None = None  # the weights version the fused or device copy holds

    def _acting(self, version: int | None) -> tuple[nn.Module | FusedActorCritic, torch.device]:
        """What acts for weights ``version`` (``None``: the policy itself), and on which device."""
        if version is None or (self.fused is None and self.on_device is None):
            return self.policy, _CPU
        if version != self._copy_version:
            if self.fused is not None:
                self.fused.refresh()
            else:
                assert self.on_device is not None
                for copy_, own in zip(_tensors(self.on_device), _tensors(self.policy), strict=True):
                    copy_.copy_(own)
            self._copy_version = version
        return (self.fused, _CPU) if self.fused is not None else (self.on_device, self.device)

    def act(self, obs: np.ndarray, rows: np.ndarray | None = None, version: int | None = None) -> torch.Tensor:
        """``dist_inputs`` (CPU) for the envs ``rows`` (all when ``None``) observing ``obs``; advances their states.

        ``version`` is the version of the weights the policy holds now: given, aiorl's default
        MLP acts through its fused copy (:mod:`aiorl.worker.fused`), and a policy acting on a
        GPU through its copy there, each re-read when the version changes.
        """
        with torch.inference_mode():
            return self._act(obs, rows, version)

    def _act(self, obs: np.ndarray, rows: np.ndarray | None, version: int | None) -> torch.Tensor:
        """:meth:`act`, inside the caller's ``torch.inference_mode``."""
        policy, device = self._acting(version)
        if policy is self.fused:  # the hot path: the fused MLP on the CPU
            return policy(torch.from_numpy(obs))[0]
        x = torch.from_numpy(obs).to(device)
        if self.state is None:
            return evaluate(policy, x)[0].cpu()
        index = slice(None) if rows is None else torch.from_numpy(rows)
        starts = self.starts if rows is None else self.starts[rows]
        dist_inputs, _, new_state = step(policy, x, self.state[index].to(device), torch.from_numpy(starts).to(device))
        self.state[index] = new_state.cpu()
        self.starts[index if rows is None else rows] = False
        return dist_inputs.cpu()

    def values(self, obs: np.ndarray, rows: list[int] | np.ndarray) -> np.ndarray:
        """V of observations ``obs`` that continue the episodes of envs ``rows`` (truncated episodes' final ones)."""
        with torch.inference_mode():
            if self.state is None:
                return evaluate(self.policy, torch.from_numpy(obs))[1].numpy()
            index = torch.as_tensor(np.asarray(rows, dtype=np.int64))
            return step(self.policy, torch.from_numpy(obs), self.state[index], torch.zeros(len(index)))[1].numpy()

    def record_start(self, arrays: dict[str, np.ndarray]) -> None:
        """Write each env's state before a rollout's first step into its slot (the learner replays from it)."""
        if self.state is not None:
            arrays["initial_state"][:] = self.state.numpy()

    def record_end(self, arrays: dict[str, np.ndarray], next_obs: np.ndarray) -> None:
        """Write what follows a rollout's last step: the observations and whether they start episodes."""
        arrays["next_obs"][:] = next_obs
        if self.recurrent:
            arrays["next_starts"][:] = self.starts

    def episode_started(self, i: int) -> None:
        """Env ``i``'s next step is the first of an episode (a reset, or a re-created env)."""
        self.starts[i] = True


def act_into_row(
    acting: ActingPolicy,
    dist: ActionDistribution,
    arrays: dict[str, np.ndarray],
    t: int,
    obs: np.ndarray,
    masks: np.ndarray | None,
    policy_version: int,
) -> np.ndarray:
    """Act for every env on ``obs`` and write row ``t`` of a slot; return the sampled actions.

    The row gets the observations, their action masks (if the env gives them), the
    recurrent episode starts (for a recurrent policy), the actions and their behaviour
    log-probs. The acting version is the whole rollout's: the sampler writes it once.
    """
    if acting.observations.stack:
        acting.observations.write(arrays, t, obs)
    else:  # the hot path: the whole observation
        arrays["obs"][t] = obs
    if masks is not None:
        arrays["action_masks"][t] = masks
    if acting.recurrent:
        arrays["episode_starts"][t] = acting.starts
    guard = inference_mode()  # once around both
    try:
        dist_inputs = acting._act(obs, None, policy_version)
        actions, logprobs = dist.sample(dist_inputs, None if masks is None else torch.from_numpy(masks))
    finally:
        del guard
    actions_np, logprobs_np = actions.numpy(), logprobs.numpy()
    check_sampled(logprobs_np, policy_version, len(obs))
    arrays["actions"][t] = actions_np
    arrays["logprobs"][t] = logprobs_np
    return actions_np


def inference_mode() -> object:
    """Enter ``torch.inference_mode`` until the returned guard is dropped (``del``).

    The guard is what ``torch.inference_mode``'s ``__enter__`` itself creates (in every torch
    aiorl supports); made directly it costs under 1 us, the context manager ~3.5 us per
    use here: a hot loop acting every few hundred microseconds notices.
    """
    return torch._C._InferenceMode(True)


def check_sampled(logprobs: np.ndarray, policy_version: int | None, rows: int) -> None:
    """Raise unless the policy gave one action per observation acted on (``rows``), each with a finite log-probability.

    A policy whose output has another batch size would otherwise have its actions broadcast
    over the envs (or the env blamed for an index error); a NaN logit or Gaussian mean would
    reach the env as a NaN action (and the env be blamed for what it returns) or the learner
    as a NaN behaviour log-probability.

    Raises:
        ValueError: another number of actions than ``rows``.
        FloatingPointError: naming the envs (rows of the batch) and the weights' version.
    """
    if logprobs.shape == (rows,) and all_finite(logprobs):  # the hot path: one numpy call
        return
    if logprobs.shape != (rows,):
        raise ValueError(
            f"the policy (weights version {policy_version}) gave action-distribution inputs of "
            f"{logprobs.shape[0] if logprobs.ndim else 'no'} rows for a batch of {rows} observations "
            "(its outputs' first dimension must be the batch's)"
        )
    if not np.isfinite(logprobs).all():
        rows = np.flatnonzero(~np.isfinite(logprobs)).tolist()
        raise FloatingPointError(
            f"the policy (weights version {policy_version}) gave non-finite action-distribution inputs "
            f"for env rows {rows[:8]}{' ...' if len(rows) > 8 else ''} (the sampled actions' log-probabilities "
            "are not finite)"
        )


def all_finite(values: np.ndarray) -> bool:
    """Whether every element of the float array ``values`` is finite.

    ``np.count_nonzero`` reads the mask of ``np.isfinite`` in about half the time of
    ``.all()`` (a ufunc reduction) on the small arrays of a step; a hot loop notices.
    """
    return np.count_nonzero(np.isfinite(values)) == values.size


def _tensors(module: nn.Module) -> Iterator[torch.Tensor]:
    """``module``'s parameters and buffers, in a fixed order (the same for a deep copy of it)."""
    yield from module.parameters()
    yield from module.buffers()
