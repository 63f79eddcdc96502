"""Policies: the default actor-critic MLP, the policy interface, and flat weights.

The policy interface
--------------------
Any ``torch.nn.Module`` works as a policy if ``forward(obs)`` takes a float32
batch of observations ``[B, *obs_shape]`` and returns ``(dist_inputs, value)``:

- ``dist_inputs``: ``[B, num_inputs]``: logits for ``Discrete(n)`` (``n``), or
  the mean then the log standard deviation for ``Box(d,)`` (``2 * d``);
- ``value``: ``[B]`` (or ``[B, 1]``), the state-value estimate.

All parameters and floating-point buffers must be float32. The policy is
checked once on a dummy batch when the trainer is built; a mismatch raises
``ConfigError`` naming the expected and actual shapes.

Workers keep their parameters as views into one flat float32 tensor
(:func:`tie_to_flat`), so installing new weights is a single ``copy_``.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from aiorl.activations import is_tanh_mlp, run_tanh_mlp, through_sigmoid
from aiorl.distributions import ActionDistribution
from aiorl.errors import ConfigError


def _layer(inputs: int, outputs: int, gain: float) -> nn.Linear:
    layer = nn.Linear(inputs, outputs)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def _mlp(inputs: int, hidden_sizes: Sequence[int], outputs: int, out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [_layer(inputs, size, np.sqrt(2.0)), nn.Tanh()]
        inputs = size
    layers.append(_layer(inputs, outputs, out_gain))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs with tanh activations (as in CleanRL's PPO).

    For Gaussian actions the log standard deviation is a learned, state-independent
    parameter initialised to ``log_std_init``.

    On a CPU whose ``tanh`` kernel is slower than ``sigmoid``, batches of 1,024 rows or more
    (the learner's) compute ``tanh(z)`` as ``2 * sigmoid(2 * z) - 1`` (the same values and
    gradients up to float rounding; see :mod:`aiorl.activations`); :attr:`tanh_via_sigmoid`
    overrides that choice for this module's ``forward``.

    Args:
        obs_shape: shape of one (encoded) observation; it is flattened.
        dist: the action distribution, which fixes the actor's output width.
        hidden_sizes: widths of the hidden layers of both networks.
        log_std_init: initial log standard deviation for Gaussian actions.
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        dist: ActionDistribution,
        hidden_sizes: Sequence[int] = (64, 64),
        log_std_init: float = 0.0,
    ) -> None:
        super().__init__()
        obs_dim = int(np.prod(obs_shape))
        self.gaussian = dist.kind == "gaussian"
        actor_outputs = dist.num_inputs // 2 if self.gaussian else dist.num_inputs
        self.actor = _mlp(obs_dim, hidden_sizes, actor_outputs, out_gain=0.01)
        self.critic = _mlp(obs_dim, hidden_sizes, 1, out_gain=1.0)
        if self.gaussian:
            self.log_std = nn.Parameter(torch.full((actor_outputs,), float(log_std_init)))

    tanh_via_sigmoid: bool | None = None
    """``None``: ``tanh`` through ``sigmoid`` where that pays (:func:`aiorl.activations.through_sigmoid`);
    ``True``/``False``: always/never. A class attribute, so modules pickled before it existed have it."""

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(dist_inputs, value)`` for a batch of observations."""
        x = obs.flatten(start_dim=1)
        out = self._run(self.actor, x)
        if self.gaussian:
            out = torch.cat([out, self.log_std.expand_as(out)], dim=-1)
        return out, self.value(x)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """The critic's value ``[B]`` of a batch of observations, without running the actor."""
        return self._run(self.critic, obs.flatten(start_dim=1)).squeeze(-1)

    def _run(self, mlp: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        sigmoid = through_sigmoid(x) if self.tanh_via_sigmoid is None else self.tanh_via_sigmoid
        return run_tanh_mlp(mlp, x) if sigmoid and is_tanh_mlp(mlp) else mlp(x)


MIN_IMAGE_SIZE = 7
"""The smallest height and width the default CNN takes (two 3x3 convolutions of stride 2).
Smaller 3-D observations (a 5x5 grid world, say) are not images to aiorl: the default policy
is the MLP over them, flattened."""


def is_channel_last(shape: Sequence[int]) -> bool:
    """Whether a 3-D image of ``shape`` is ``H, W, C`` (``C <= 4 < H``, as gymnasium's renderers give them)."""
    return shape[-1] <= 4 < shape[0]


def is_image_shape(shape: Sequence[int]) -> bool:
    """Whether observations of ``shape`` are images for the default policies.

    That is: 3-D, at least :data:`MIN_IMAGE_SIZE` high and wide (channel-last or channel-first).
    """
    if len(shape) != 3:
        return False
    height, width = (shape[0], shape[1]) if is_channel_last(shape) else (shape[1], shape[2])
    return min(height, width) >= MIN_IMAGE_SIZE


def _check_image_shape(owner: str, obs_shape: Sequence[int]) -> None:
    if not is_image_shape(obs_shape):
        raise ConfigError(
            f"{owner} needs 3-D image observations at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} (channel-last or "
            f"channel-first), got obs_shape={tuple(obs_shape)}; aiorl's ActorCritic takes smaller ones, flattened"
        )


def conv_trunk(channels: int) -> nn.Sequential:
    """The default CNN's convolutions: two strided 3x3 layers, flattened (input ``[B, C, H, W]``)."""
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, stride=2),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
    )


class ImageEncoder(nn.Module):
    """The default CNN's trunk and 256-unit layer as a feature extractor (for recurrent policies).

    Images may be channel-last or channel-first, as for :class:`CNNActorCritic`.
    """

    def __init__(self, obs_shape: Sequence[int], scale: float = 1.0) -> None:
        super().__init__()
        _check_image_shape("ImageEncoder", obs_shape)
        self.channel_last = is_channel_last(obs_shape)
        self.scale = scale
        self.trunk = conv_trunk(obs_shape[-1] if self.channel_last else obs_shape[0])
        with torch.no_grad():
            flat = self.trunk(self._to_nchw(torch.zeros(1, *obs_shape))).shape[1]
        self.body = nn.Sequential(_layer(flat, 256, np.sqrt(2.0)), nn.ReLU())
        self.features = 256

    def _to_nchw(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.permute(0, 3, 1, 2) if self.channel_last else obs

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``[B, 256]`` features of a batch of images."""
        return self.body(self.trunk(self._to_nchw(obs * self.scale)))


class CNNActorCritic(nn.Module):
    """A small convolutional actor-critic for image observations (the default for :func:`is_image_space`).

    Two strided 3x3 convolutions and a 256-unit layer, shared by the actor and critic
    heads. Images may be channel-last (``H, W, C`` with ``C <= 4``, as gymnasium's Atari
    and most renderers give them) or channel-first; ``uint8`` images are scaled to [0, 1].

    Args:
        obs_shape: shape of one image observation.
        dist: the action distribution, which fixes the actor's output width.
        scale: factor applied to observations (``1/255`` for ``uint8`` images).
        log_std_init: initial log standard deviation for Gaussian actions.
    """

    def __init__(
        self, obs_shape: Sequence[int], dist: ActionDistribution, scale: float = 1.0, log_std_init: float = 0.0
    ) -> None:
        super().__init__()
        _check_image_shape("CNNActorCritic", obs_shape)
        self.channel_last = is_channel_last(obs_shape)
        channels = obs_shape[-1] if self.channel_last else obs_shape[0]
        self.scale = scale
        self.trunk = conv_trunk(channels)
        with torch.no_grad():
            flat = self.trunk(self._to_nchw(torch.zeros(1, *obs_shape))).shape[1]
        self.body = nn.Sequential(_layer(flat, 256, np.sqrt(2.0)), nn.ReLU())
        self.gaussian = dist.kind == "gaussian"
        actor_outputs = dist.num_inputs // 2 if self.gaussian else dist.num_inputs
        self.actor = _layer(256, actor_outputs, 0.01)
        self.critic = _layer(256, 1, 1.0)
        if self.gaussian:
            self.log_std = nn.Parameter(torch.full((actor_outputs,), float(log_std_init)))

    def _to_nchw(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.permute(0, 3, 1, 2) if self.channel_last else obs

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(dist_inputs, value)`` for a batch of images."""
        hidden = self.body(self.trunk(self._to_nchw(obs * self.scale)))
        out = self.actor(hidden)
        if self.gaussian:
            out = torch.cat([out, self.log_std.expand_as(out)], dim=-1)
        return out, self.critic(hidden).squeeze(-1)


class ObservationNormalizer(nn.Module):
    """Wraps a policy: observations are normalised by a running mean and variance.

    The statistics are float32 buffers, so they travel to the workers with the weights
    and are saved in the policy's ``state_dict``. The learner calls :meth:`observe` with
    each batch's observations after it has trained on them (so it trains on them normalised
    as the acting policy saw them; the next version acts with the new statistics). Normalised values are clipped to
    ``[-clip, clip]``.
    """

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, policy: nn.Module, obs_shape: Sequence[int], clip: float = 10.0) -> None:
        super().__init__()
        self.policy = policy
        self.clip = clip
        self.register_buffer("mean", torch.zeros(tuple(obs_shape)))
        self.register_buffer("var", torch.ones(tuple(obs_shape)))
        self.register_buffer("count", torch.tensor(1e-4))

    @torch.no_grad()
    def observe(self, obs: torch.Tensor) -> None:
        """Fold a batch ``[B, *obs_shape]`` into the running statistics (Chan et al.'s update)."""
        batch_mean, batch_var, batch_count = obs.mean(0), obs.var(0, unbiased=False), obs.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean += delta * batch_count / total
        self.var.copy_(
            (self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total) / total
        )
        self.count.copy_(total)

    @property
    def state_size(self) -> int:
        """The wrapped policy's recurrent state width (0: feed-forward; see :mod:`aiorl.recurrent`)."""
        size = getattr(self.policy, "state_size", 0)
        return size if isinstance(size, int) and not isinstance(size, bool) else 0

    def initial_state(self, batch: int) -> torch.Tensor:
        """The wrapped recurrent policy's initial state."""
        return self.policy.initial_state(batch)  # type: ignore[operator]

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs`` normalised by the running statistics and clipped to ``[-clip, clip]``."""
        return (obs - self.mean).mul_(torch.rsqrt(self.var + 1e-8)).clamp_(-self.clip, self.clip)

    def forward(self, obs: torch.Tensor, *recurrent: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Normalise ``obs`` and run the wrapped policy (a recurrent one also gets its state and episode starts)."""
        return self.policy(self.normalize(obs), *recurrent)


def is_image_space(space: gym.Space) -> bool:
    """Whether observations of ``space`` are images (a ``Box`` of an image shape): the default policy is a CNN."""
    return isinstance(space, gym.spaces.Box) and is_image_shape(space.shape)


def default_policy(obs_space: gym.Space, obs_shape: tuple[int, ...], dist: ActionDistribution) -> nn.Module:
    """The policy aiorl builds when none is given: a CNN for images, else an MLP."""
    if is_image_space(obs_space):
        scale = 1.0 / 255.0 if obs_space.dtype == np.uint8 else 1.0
        return CNNActorCritic(obs_shape, dist, scale=scale)
    return ActorCritic(obs_shape, dist)


def weight_tensors(module: nn.Module) -> list[torch.Tensor]:
    """The tensors that make up a policy's weights, in a fixed order."""
    return [*module.parameters(), *(b for b in module.buffers() if b.is_floating_point())]


def num_weights(module: nn.Module) -> int:
    """How many float32 values :func:`flat_weights` returns for ``module``."""
    return sum(t.numel() for t in weight_tensors(module))


def flat_weights(module: nn.Module) -> np.ndarray:
    """A fresh float32 CPU copy of all weights of ``module``, flattened."""
    with torch.no_grad():
        return torch.cat([t.detach().reshape(-1).cpu() for t in weight_tensors(module)]).numpy()


def assign_flat(module: nn.Module, weights: np.ndarray) -> None:
    """Copy a flat array from :func:`flat_weights` back into ``module``'s weights."""
    offset = 0
    with torch.no_grad():
        for tensor in weight_tensors(module):
            n = tensor.numel()
            tensor.copy_(torch.from_numpy(weights[offset : offset + n]).view_as(tensor))
            offset += n


def tie_to_flat(module: nn.Module) -> torch.Tensor:
    """Re-point every weight tensor of ``module`` into one flat float32 tensor.

    Returns that tensor; ``flat.copy_(new)`` then updates the whole module.
    """
    tensors = weight_tensors(module)
    with torch.no_grad():
        flat = torch.cat([t.detach().reshape(-1) for t in tensors]).contiguous()
        offset = 0
        for tensor in tensors:
            n = tensor.numel()
            tensor.data = flat[offset : offset + n].view_as(tensor)
            offset += n
    return flat


def flatten_parameters(module: nn.Module) -> nn.Parameter:
    """Make every parameter of ``module``, and its gradient, a view into one flat tensor; return it.

    The learner optimises the returned parameter: zeroing, clipping and the Adam step
    are then one operation each instead of one per tensor of the model, while the
    module keeps its own parameters (same names, same ``state_dict``). Backward passes
    accumulate into the existing gradient views in place, so ``flat.grad`` always holds
    the whole gradient. Never set the module's gradients to ``None`` (``zero_grad()``
    does by default): zero ``flat.grad`` instead. Move the module to its device first.
    """
    params = list(module.parameters())
    if not params:
        own = module.policy if isinstance(module, ObservationNormalizer) else module  # the user's, not aiorl's wrapper
        raise ConfigError(f"policy={type(own).__name__} has no parameters to train")
    with torch.no_grad():
        flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for param in params:
        n = param.numel()
        param.data = flat.data[offset : offset + n].view_as(param)
        param.grad = flat.grad[offset : offset + n].view_as(param)
        offset += n
    return flat


def check_float32_weights(policy: nn.Module) -> None:
    """Raise :class:`ConfigError` unless every parameter and floating-point buffer of ``policy`` is float32."""
    bad = [tuple(t.shape) for t in weight_tensors(policy) if t.dtype != torch.float32]
    if bad:
        raise ConfigError(f"policy={type(policy).__name__} has non-float32 weights of shapes {bad}")


def check_float_outputs(name: str, outputs: dict[str, object]) -> None:
    """Raise :class:`ConfigError` unless each of a policy's ``outputs`` (by name) is a floating-point tensor."""
    for what, tensor in outputs.items():
        if not (isinstance(tensor, torch.Tensor) and tensor.is_floating_point()):
            kind = f"a tensor of dtype {tensor.dtype}" if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ConfigError(f"policy={name} returned {what} as {kind}; expected a floating-point torch.Tensor")


def validate_policy(policy: object, obs_shape: tuple[int, ...], dist: ActionDistribution) -> None:
    """Check ``policy`` against the interface on dummy batches of two observations and of one.

    One, because workers also run the policy on single observations (a truncated episode's
    final one, for its bootstrap value).

    Raises:
        ConfigError: not a module, non-float32 weights, forward failed, or outputs that are
            not floating-point tensors of the shapes the action space needs.
    """
    if not isinstance(policy, nn.Module):
        raise ConfigError(f"policy={policy!r} must be a torch.nn.Module")
    name = type(policy).__name__
    check_float32_weights(policy)
    for batch in (2, 1):
        try:
            with torch.no_grad():
                out = policy(torch.zeros((batch, *obs_shape), dtype=torch.float32))
        except Exception as exc:
            raise ConfigError(
                f"policy={name} failed on a dummy observation batch of shape "
                f"{(batch, *obs_shape)}: {type(exc).__name__}: {exc}"
            ) from exc
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ConfigError(f"policy={name} must return (dist_inputs, value), got {type(out).__name__}")
        check_float_outputs(name, dict(zip(("dist_inputs", "value"), out, strict=True)))
        dist_inputs, value = out
        expected = (batch, dist.num_inputs)
        if tuple(dist_inputs.shape) != expected:
            raise ConfigError(
                f"policy={name} returned dist_inputs of shape {tuple(dist_inputs.shape)}, expected {expected} "
                f"(a batch of {batch}) for the action space ({dist.kind}, {dist.num_inputs} inputs)"
            )
        if tuple(value.shape) not in ((batch,), (batch, 1)):
            raise ConfigError(
                f"policy={name} returned value of shape {tuple(value.shape)}, expected {(batch,)} (a batch of {batch})"
            )


def evaluate(policy: nn.Module, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``policy`` and normalise the value to shape ``[B]``."""
    dist_inputs, value = policy(obs)
    return dist_inputs, value.reshape(-1)
