"""A worker's policy copy acts exactly as the policy: aiorl's default MLP through its fused form."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from conftest import sampler_template
from torch import nn

from aiorl.distributions import ActionDistribution
from aiorl.models import ActorCritic, CNNActorCritic, ObservationNormalizer
from aiorl.recurrent import RecurrentActorCritic
from aiorl.worker.acting import ActingPolicy
from aiorl.worker.fused import FusedActorCritic


@pytest.mark.parametrize("space", [gym.spaces.Discrete(3), gym.spaces.Box(-1.0, 1.0, (2,))], ids=["logits", "gaussian"])
@pytest.mark.parametrize("normalised", [False, True], ids=["raw", "normalised"])
@pytest.mark.parametrize("obs_shape", [(5,), (2, 3)], ids=["flat", "2d"])
@pytest.mark.parametrize("sigmoid", [False, True], ids=["tanh", "tanh-through-sigmoid"])
def test_the_fused_default_mlp_returns_the_policy_s_outputs(space, normalised, obs_shape, sigmoid):
    torch.manual_seed(0)
    policy: nn.Module = ActorCritic(obs_shape, ActionDistribution.for_space(space), hidden_sizes=(64, 32, 16))
    if normalised:
        policy = ObservationNormalizer(policy, obs_shape)
        policy.observe(torch.randn(200, *obs_shape) * 3.0 + 1.0)
    fused = FusedActorCritic.of(policy)
    assert fused is not None
    fused.sigmoid = sigmoid  # whichever kernel this CPU would pick
    fused.refresh()
    obs = torch.randn(32, *obs_shape) * 4.0  # some beyond the normaliser's clip
    with torch.inference_mode():
        expected, got = policy(obs), fused(obs)
    torch.testing.assert_close(got[0], expected[0])
    torch.testing.assert_close(got[1], expected[1].reshape(-1))


def test_only_aiorl_s_own_mlp_is_fused():
    dist = ActionDistribution.for_space(gym.spaces.Discrete(2))

    class Wider(ActorCritic):  # a subclass may change forward: it acts through its own
        pass

    assert FusedActorCritic.of(CNNActorCritic((4, 12, 12), dist)) is None
    assert FusedActorCritic.of(Wider((4,), dist)) is None
    assert FusedActorCritic.of(RecurrentActorCritic((4,), dist, "gru", 8)) is None
    relu = ActorCritic((4,), dist)
    relu.actor[1] = nn.ReLU()
    assert FusedActorCritic.of(relu) is None


def test_an_acting_policy_acts_with_new_weights_once_their_version_changes():
    template, policy = sampler_template("CartPole-v1", envs=8, steps=4)
    acting = ActingPolicy(policy, template.layout)
    assert acting.fused is not None
    obs = torch.randn(8, 4).numpy()
    before = acting.act(obs, version=0)
    torch.testing.assert_close(before, policy(torch.from_numpy(obs))[0].detach())
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.mul_(-1.5)  # as a worker's new weights arrive
    after = acting.act(obs, version=1)
    torch.testing.assert_close(after, policy(torch.from_numpy(obs))[0].detach())
    assert not torch.allclose(before, after)


def test_the_default_mlp_acts_fused_on_the_cpu_whatever_the_worker_device():
    template, policy = sampler_template("CartPole-v1", envs=8, steps=4)
    acting = ActingPolicy(policy, template.layout, "cuda")  # no GPU is touched: the MLP stays on the CPU
    assert acting.fused is not None and acting.on_device is None
    obs = torch.randn(8, 4).numpy()
    torch.testing.assert_close(acting.act(obs, version=0), policy(torch.from_numpy(obs))[0].detach())


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@needs_cuda
@pytest.mark.parametrize("kind", ["cnn", "gru"])
def test_a_policy_acting_on_a_gpu_gives_the_cpu_policy_s_outputs_and_follows_new_weights(kind):
    template, _ = sampler_template("CartPole-v1", envs=8, steps=4)
    dist = ActionDistribution.for_space(gym.spaces.Discrete(3))
    torch.manual_seed(0)
    if kind == "cnn":
        policy: nn.Module = CNNActorCritic((4, 12, 12), dist)
        obs = torch.rand(8, 4, 12, 12).numpy()
    else:
        policy = RecurrentActorCritic((5,), dist, "gru", 8)
        obs = torch.randn(8, 5).numpy()
    on_gpu, on_cpu = ActingPolicy(policy, template.layout, "cuda"), ActingPolicy(policy, template.layout)
    assert on_gpu.on_device is not None and on_gpu.fused is None
    for version in (0, 1):
        if version == 1:
            with torch.no_grad():
                for parameter in policy.parameters():
                    parameter.mul_(-1.5)  # as a worker's new weights arrive
        got, expected = on_gpu.act(obs, version=version), on_cpu.act(obs, version=version)
        assert got.device.type == "cpu"
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        if on_gpu.recurrent:  # both advanced their states alike
            torch.testing.assert_close(on_gpu.state, on_cpu.state, rtol=1e-4, atol=1e-5)
