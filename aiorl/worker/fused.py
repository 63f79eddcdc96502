"""The default MLP policy acting in fewer, wider ops: a worker's fast path for small batches.

:class:`~aiorl.models.ActorCritic` runs two MLPs (actor and critic) on the same
observations. On a worker's batch (one row per env, tens of rows) each op costs its fixed
dispatch time, not arithmetic, so :class:`FusedActorCritic` runs both side by side: the
first layers' weights stacked, every later layer's block-diagonal, one ``addmm`` and one
``tanh`` per layer instead of two of each. The outputs are the policy's (zeros add nothing;
only the summation order of the wider matrix products may round differently), so the
learner's recomputed log-probs match the workers' as before. The observation normaliser in
front of it (:class:`~aiorl.models.ObservationNormalizer`) is applied with the same formula.

Where this CPU's ``tanh`` kernel is slow (torch's goes through MKL's vector math, which takes
an unvectorised path on AMD CPUs: ~3 ns per element here against 0.5-1 ns for ``sigmoid``), the
hidden layers use ``tanh(z) = 2 * sigmoid(2 * z) - 1`` with the factors folded into the
weights (:func:`fold_sigmoid`): still one ``addmm`` and one activation per layer, a third
faster on 32-64 rows. Which kernel is faster is measured once per process
(:func:`aiorl.activations.sigmoid_is_faster`).

Only aiorl's own classes qualify (exactly those types, tanh MLPs of equal depth): any other
policy acts through its own ``forward``.
"""

from __future__ import annotations

import torch
from torch import nn

from aiorl.activations import is_tanh_mlp, sigmoid_is_faster
from aiorl.models import ActorCritic, ObservationNormalizer


class FusedActorCritic:
    """A fused copy of an :class:`~aiorl.models.ActorCritic` (optionally behind its normaliser).

    The copy reads the policy's weights in :meth:`refresh`; call it whenever they change.
    """

    def __init__(self, policy: ActorCritic, normalizer: ObservationNormalizer | None) -> None:
        self.policy = policy
        self.normalizer = normalizer
        self.actor_layers = [m for m in policy.actor if isinstance(m, nn.Linear)]
        self.critic_layers = [m for m in policy.critic if isinstance(m, nn.Linear)]
        self.actions = self.actor_layers[-1].out_features
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []  # (bias, weight transposed) per layer
        self.shift = self.scale = torch.zeros(0)
        self.clip = normalizer.clip if normalizer is not None else 0.0
        self.sigmoid = sigmoid_is_faster()
        """Whether the hidden layers compute ``tanh`` through ``sigmoid`` (see :func:`fold_sigmoid`)."""

    @classmethod
    def of(cls, policy: nn.Module) -> FusedActorCritic | None:
        """The fused form of ``policy``, or ``None`` if it is not aiorl's default MLP (maybe normalised)."""
        normalizer = None
        if type(policy) is ObservationNormalizer:
            normalizer, policy = policy, policy.policy
        if type(policy) is not ActorCritic or not (is_tanh_mlp(policy.actor) and is_tanh_mlp(policy.critic)):
            return None
        return cls(policy, normalizer) if len(policy.actor) == len(policy.critic) else None

    @torch.inference_mode()
    def refresh(self) -> None:
        """Read the policy's current weights (and the normaliser's statistics)."""
        layers = []
        for i, (actor, critic) in enumerate(zip(self.actor_layers, self.critic_layers, strict=True)):
            if i == 0:  # both read the observations: stack the rows
                weight = torch.cat([actor.weight, critic.weight])
            else:  # each reads its own half of the previous layer
                weight = torch.block_diag(actor.weight, critic.weight)
            layers.append((torch.cat([actor.bias, critic.bias]), weight.t().contiguous()))
        self.layers = fold_sigmoid(layers) if self.sigmoid else layers
        if self.normalizer is not None:
            self.shift = self.normalizer.mean.flatten().clone()  # elementwise: applied to the flattened obs
            self.scale = torch.rsqrt(self.normalizer.var + 1e-8).flatten()

    def __call__(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dist_inputs, value)`` as the policy returns them, value of shape ``[B]``."""
        x = obs.flatten(start_dim=1)
        if self.normalizer is not None:
            x = (x - self.shift).mul_(self.scale).clamp_(-self.clip, self.clip)
        last = len(self.layers) - 1
        for i, (bias, weight_t) in enumerate(self.layers):
            x = torch.addmm(bias, x, weight_t)
            if i < last:
                x = x.sigmoid_() if self.sigmoid else x.tanh_()
        out, value = x[:, : self.actions], x[:, self.actions]
        if self.policy.gaussian:
            out = torch.cat([out, self.policy.log_std.expand_as(out)], dim=-1)
        return out, value


def fold_sigmoid(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(bias, weight transposed)`` layers of a tanh MLP rewritten so that ``sigmoid`` replaces ``tanh``.

    With ``h = tanh(z) = 2 * s - 1`` where ``s = sigmoid(2 * z)``, a layer reading ``h``
    computes ``h @ W.T + b = s @ (2 * W).T + (b - W.sum(1))``; a hidden layer's
    pre-activation is doubled as well, for the next ``sigmoid``. The MLP then runs as
    ``s = sigmoid(addmm(...))`` per hidden layer and a plain ``addmm`` last, with the
    same outputs up to float rounding.
    """
    last = len(layers) - 1
    folded = []
    for i, (bias, weight_t) in enumerate(layers):
        if i > 0:  # reads 2 * s - 1 instead of tanh(z)
            bias, weight_t = bias - weight_t.sum(0), 2.0 * weight_t
        if i < last:  # feeds a sigmoid of twice its output
            bias, weight_t = 2.0 * bias, 2.0 * weight_t
        folded.append((bias.contiguous(), weight_t.contiguous()))
    return folded
