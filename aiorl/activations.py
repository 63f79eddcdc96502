"""``tanh`` through the logistic sigmoid, where this CPU computes it faster that way.

torch's CPU ``tanh`` goes through MKL's vector math, which takes an unvectorised path on
AMD CPUs: about 3 ns per element on the development machine against 0.5 ns for
``sigmoid``. Since ``tanh(z) = 2 * sigmoid(2 * z) - 1``, the default MLP's hidden layers
can use the faster kernel and give the same values up to float rounding (``1e-7``):

- workers fold the factors into their fused copy's weights
  (:func:`aiorl.worker.fused.fold_sigmoid`): one ``sigmoid`` per layer instead of one
  ``tanh`` (:func:`sigmoid_is_faster` decides);
- the learner's :class:`~aiorl.models.ActorCritic` computes each hidden layer as
  :func:`linear_tanh`: ``addmm`` with the factor 2 in its scalars, an in-place
  ``sigmoid``, then ``2 * s - 1`` in place; its backward pass is ``tanh``'s
  (``grad * (1 - y**2)``). Forward and backward of the actor and critic (64 x 64) took
  1.73 ms against 2.18 ms on 1,024 rows, 3.1 against 3.8 ms on 2,048, but the same on 512
  rows, where the Python-level autograd function costs what the kernel saves: only
  batches of :data:`MIN_ROWS` rows or more take this form (:func:`linear_tanh_is_faster`
  decides whether it pays on this CPU). PPO's update of 7,168-14,336 samples (4 epochs x 2
  minibatches) ran 1.15-1.43x faster with 1 or 2 torch threads, of 1,024 samples the same;
- the learner's written-out step for that MLP (:mod:`aiorl.algos.mlp_step`) has no
  autograd function to pay for, so it takes the ``sigmoid`` form at any number of rows
  (:func:`sigmoid_pays`), as do value passes run without gradients.

Which form is faster is measured once per process on this CPU (the first time it is
needed: 1-2 ms for the workers' check, 30-100 ms for the learner's), so a CPU whose
``tanh`` is fast keeps the plain kernel. GPUs and compiled code (``torch.compile``
generates its own vectorised ``tanh``) always do.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

MIN_ROWS = 1024
"""The fewest rows for which the learner's MLP computes ``tanh`` through ``sigmoid``."""


def fastest_times(*kernels: Callable[[], object], rounds: int = 9, calls: int = 5) -> list[float]:
    """Each kernel's best time for ``calls`` calls over ``rounds`` rounds, the kernels taking turns.

    Taking turns matters on a busy machine: timed one after the other, a few milliseconds
    of interference fell on one kernel's every timing and flipped the comparison in about
    one process in ten on the development VM (a learner then ran ``tanh``'s slow kernel,
    its update 1.6-2x slower); interleaved, the same interference costs each kernel a round.
    """
    for kernel in kernels:  # warm-up
        kernel()
    best = [math.inf] * len(kernels)
    for _ in range(rounds):
        for i, kernel in enumerate(kernels):
            start = time.perf_counter()
            for _ in range(calls):
                kernel()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


@functools.cache
def sigmoid_is_faster() -> bool:
    """Whether ``sigmoid`` beats ``tanh`` on a worker's activations ``[32, 128]`` on this CPU."""
    x = torch.linspace(-3.0, 3.0, 32 * 128).reshape(32, 128)
    out = torch.empty_like(x)
    with torch.inference_mode():
        sigmoid, tanh = fastest_times(lambda: torch.sigmoid(x, out=out), lambda: torch.tanh(x, out=out))
    return sigmoid < tanh


@functools.cache
def linear_tanh_is_faster() -> bool:
    """Whether :func:`linear_tanh`'s forward form takes under 80% of ``tanh(addmm(...))``'s time on ``[MIN_ROWS, 64]``.

    Only the forward pass differs (the backward pass runs the same kernels); the margin
    leaves room for the autograd function's Python overhead, which the forward timing
    leaves out (timing forward and backward of one layer was too noisy to decide on).
    """
    x = torch.linspace(-1.0, 1.0, MIN_ROWS * 64).reshape(MIN_ROWS, 64)
    weight, bias = torch.eye(64), torch.zeros(64)
    with torch.inference_mode():
        plain, through_sigmoid = fastest_times(
            lambda: torch.addmm(bias, x, weight.t()).tanh_(), lambda: _linear_tanh_forward(x, weight, bias)
        )
    return through_sigmoid < 0.8 * plain


def _linear_tanh_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``tanh(x @ weight.T + bias)`` as ``2 * sigmoid(2 * z) - 1``, in place after the ``addmm``."""
    return torch.addmm(bias, x, weight.t(), beta=2.0, alpha=2.0).sigmoid_().mul_(2.0).sub_(1.0)


class _LinearTanh(torch.autograd.Function):
    """``tanh(x @ weight.T + bias)`` through ``sigmoid``, with ``tanh``'s backward pass."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _linear_tanh_forward(x, weight, bias)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        x, weight, _ = inputs
        ctx.save_for_backward(x, weight, output)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, weight, y = ctx.saved_tensors
        grad_z = torch.ops.aten.tanh_backward(grad, y)  # grad * (1 - y**2), as tanh's own backward
        grad_x = grad_z @ weight if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:
            # The same product either way round; MKL is faster with the narrow side first:
            # for the first layer ([64, 4]) over 7,168 rows 84 us against 287 us.
            grad_weight = (x.t() @ grad_z).t() if x.shape[1] < weight.shape[0] else grad_z.t() @ x
        grad_bias = grad_z.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def linear_tanh(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``tanh(x @ weight.T + bias)`` for a 2-D ``x``, computed through ``sigmoid`` (differentiable)."""
    return _LinearTanh.apply(x, weight, bias)


def is_tanh_mlp(mlp: nn.Module) -> bool:
    """Whether ``mlp`` is ``Sequential(Linear, Tanh, ..., Linear)`` with biases, as aiorl's MLPs are built."""
    if not isinstance(mlp, nn.Sequential) or len(mlp) % 2 == 0:
        return False
    return all(
        type(m) is (nn.Linear if i % 2 == 0 else nn.Tanh) and (i % 2 or m.bias is not None) for i, m in enumerate(mlp)
    )


def run_tanh_mlp(mlp: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``mlp(x)`` for a :func:`is_tanh_mlp` network, each hidden layer as one :func:`linear_tanh`.

    Without gradients (the learner's value pass) the layers skip the autograd function.
    """
    layers = list(mlp)
    layer = _linear_tanh_forward if not torch.is_grad_enabled() else linear_tanh
    for linear in layers[:-1:2]:
        x = layer(x, linear.weight, linear.bias)
    return layers[-1](x)


def sigmoid_pays(x: torch.Tensor) -> bool:
    """Whether ``tanh`` on ``x`` is faster through ``sigmoid`` in code with no per-call overhead.

    Yes for a CPU tensor outside compiled code, where :func:`linear_tanh_is_faster` on this CPU
    (:mod:`aiorl.algos.mlp_step` writes its layers out, so any number of rows gains).
    """
    return x.device.type == "cpu" and not torch.compiler.is_compiling() and linear_tanh_is_faster()


def through_sigmoid(x: torch.Tensor) -> bool:
    """Whether a tanh MLP's forward on ``x`` should use :func:`linear_tanh`.

    Yes for a 2-D tensor of at least :data:`MIN_ROWS` rows where :func:`sigmoid_pays`.
    """
    return x.dim() == 2 and x.shape[0] >= MIN_ROWS and sigmoid_pays(x)
