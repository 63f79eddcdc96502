"""tanh through sigmoid: the default MLP's fast form on CPUs with a slow tanh gives tanh's values and gradients."""

from __future__ import annotations

import time
from collections.abc import Callable

import gymnasium as gym
import pytest
import torch
from torch import nn

import aiorl.activations
from aiorl.activations import MIN_ROWS, fastest_times, is_tanh_mlp, linear_tanh, through_sigmoid
from aiorl.distributions import ActionDistribution
from aiorl.models import ActorCritic


def test_linear_tanh_has_the_values_and_gradients_of_tanh_of_a_linear_layer():
    torch.manual_seed(0)
    x = (torch.randn(300, 7) * 3.0).requires_grad_()  # saturates some units: |z| up to ~20
    weight, bias = torch.randn(5, 7).requires_grad_(), torch.randn(5).requires_grad_()
    upstream = torch.randn(300, 5)
    got = linear_tanh(x, weight, bias)
    expected = torch.tanh(x @ weight.t() + bias)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    got_grads = torch.autograd.grad(got, (x, weight, bias), upstream)
    expected_grads = torch.autograd.grad(expected, (x, weight, bias), upstream)
    for name, g, e in zip(("x", "weight", "bias"), got_grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-5, msg=lambda m, name=name: f"grad of {name}: {m}")


@pytest.mark.parametrize("space", [gym.spaces.Discrete(3), gym.spaces.Box(-1.0, 1.0, (2,))], ids=["logits", "gaussian"])
def test_the_default_mlp_trains_alike_with_tanh_through_sigmoid_and_without(space):
    torch.manual_seed(0)
    policy = ActorCritic((6,), ActionDistribution.for_space(space), hidden_sizes=(64, 32, 16))
    obs = torch.randn(512, 6) * 2.0

    def outputs_and_gradients(via_sigmoid: bool) -> list[torch.Tensor]:
        policy.tanh_via_sigmoid = via_sigmoid
        dist_inputs, value = policy(obs)
        assert ran_through_sigmoid(dist_inputs) is via_sigmoid and ran_through_sigmoid(value) is via_sigmoid
        loss = dist_inputs.square().mean() + (value - 1.0).square().mean()
        return [dist_inputs, value, *torch.autograd.grad(loss, list(policy.parameters()))]

    plain, through = outputs_and_gradients(False), outputs_and_gradients(True)
    assert through[1].shape == plain[1].shape == (512,)
    for got, expected in zip(through, plain, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_only_tanh_mlps_run_through_sigmoid_and_never_on_other_devices_small_batches_or_in_compiled_code(monkeypatch):
    monkeypatch.setattr(aiorl.activations, "linear_tanh_is_faster", lambda: True)  # as on a CPU where it pays
    dist = ActionDistribution.for_space(gym.spaces.Discrete(2))
    policy = ActorCritic((4,), dist)
    assert is_tanh_mlp(policy.actor) and is_tanh_mlp(policy.critic)
    policy.critic[1] = nn.ReLU()
    assert not is_tanh_mlp(policy.critic)
    policy.tanh_via_sigmoid = True  # a changed network runs its own layers: ReLU stays ReLU
    obs = torch.randn(16, 4)
    torch.testing.assert_close(policy(obs)[1], policy.critic(obs).squeeze(-1))
    assert through_sigmoid(torch.zeros(MIN_ROWS, 4))
    assert not through_sigmoid(torch.zeros(4096, 4, device="meta"))
    assert not through_sigmoid(torch.zeros(MIN_ROWS - 1, 4))  # too few rows to pay
    big = torch.randn(MIN_ROWS, 4)
    assert torch.compile(lambda x: torch.full((1,), float(through_sigmoid(x))), backend="eager")(big).item() == 0.0


def test_a_default_mlp_pickled_before_the_choice_existed_still_runs():
    policy = ActorCritic((4,), ActionDistribution.for_space(gym.spaces.Discrete(2)))
    policy.__dict__.pop("tanh_via_sigmoid", None)  # as unpickled from an older checkpoint
    assert policy(torch.randn(MIN_ROWS, 4))[1].shape == (MIN_ROWS,)


def ran_through_sigmoid(output: torch.Tensor) -> bool:
    """Whether ``output``'s autograd graph holds a :func:`linear_tanh` step."""
    seen, stack = set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if "LinearTanh" in type(node).__name__:
            return True
        stack.extend(fn for fn, _ in node.next_functions)
    return False


def test_a_slow_spell_while_kernels_are_timed_does_not_flip_which_one_is_faster():
    """The kernels take turns: interference for the first half of the timing slows both, not one."""
    calls = 0

    def sleeper(seconds: float) -> Callable[[], None]:
        def kernel() -> None:
            nonlocal calls
            calls += 1
            spell = 0.003 if calls <= 46 else 0.0  # the first half of the 92 calls (2 warm-ups + 2 x 9 x 5)
            time.sleep(seconds + spell)

        return kernel

    fast, slow = fastest_times(sleeper(0.0005), sleeper(0.001), rounds=9, calls=5)
    assert calls == 92
    assert fast < slow
