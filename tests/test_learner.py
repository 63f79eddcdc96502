"""The clipped-surrogate learner step: the same losses as the textbook form, masking, rollback, compile."""

from __future__ import annotations

import dataclasses
import logging
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_activations import ran_through_sigmoid
from torch.distributions import Bernoulli, Categorical, Normal

from aiorl import APPO, PPO, LearnerError
from aiorl.algos.batch import RolloutBatch
from aiorl.algos.compiling import compiler_warnings_ignored
from aiorl.algos.mlp_step import Coefficients, WrittenOutStep, written_out_policy
from aiorl.algos.optim import adam_step, make_optimizer
from aiorl.algos.surrogate import LOSS_STATS, Targets, clipped_surrogate_loss
from aiorl.distributions import ActionDistribution
from aiorl.models import ActorCritic, ObservationNormalizer, evaluate, flat_weights, flatten_parameters

OBS_DIM = 4
SPACES = {
    "discrete": gym.spaces.Discrete(3),
    "box": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
    "multi_discrete": gym.spaces.MultiDiscrete([3, 2]),
    "multi_binary": gym.spaces.MultiBinary(3),
}


def reference_log_prob_entropy(dist: ActionDistribution, dist_inputs: torch.Tensor, actions: torch.Tensor):
    """The log-probabilities and entropies as ``torch.distributions`` computes them."""
    if dist.kind == "categorical":
        d = Categorical(logits=dist_inputs)
        return d.log_prob(actions), d.entropy()
    if dist.kind == "multi_categorical":
        parts = [Categorical(logits=p) for p in dist_inputs.split(dist.nvec, dim=-1)]
        return (
            sum(p.log_prob(actions[:, i]) for i, p in enumerate(parts)),
            sum(p.entropy() for p in parts),
        )
    if dist.kind == "bernoulli":
        d = Bernoulli(logits=dist_inputs)
        return d.log_prob(actions.float()).sum(-1), d.entropy().sum(-1)
    mean, log_std = dist_inputs.chunk(2, dim=-1)
    d = Normal(mean, log_std.clamp(-20, 2).exp())
    return d.log_prob(actions).sum(-1), d.entropy().sum(-1)


def reference_loss(policy, dist, cfg, obs, actions, behaviour_logprobs, old_values, advantages, returns):
    """PPO's loss as aiorl computed it before the lean rewrite (valid samples only, distribution objects)."""
    dist_inputs, new_value = policy(obs)
    new_logprob, entropy = reference_log_prob_entropy(dist, dist_inputs, actions)
    ratio = (new_logprob - behaviour_logprobs).exp()
    adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
    v_clipped = old_values + (new_value - old_values).clamp(-cfg.clip_coef, cfg.clip_coef)
    v_loss = 0.5 * torch.max((new_value - returns) ** 2, (v_clipped - returns) ** 2).mean()
    return pg_loss - cfg.ent_coef * entropy.mean() + cfg.vf_coef * v_loss


def sample_minibatch(dist: ActionDistribution, policy: torch.nn.Module, size: int = 64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(size, OBS_DIM, generator=generator)
    with torch.no_grad():
        dist_inputs, values = policy(obs)
        actions, logprobs = dist.sample(dist_inputs)
    return {
        "obs": obs,
        "actions": actions,
        "behaviour_logprobs": logprobs + 0.1 * torch.randn(size, generator=generator),
        "old_values": values + 0.1 * torch.randn(size, generator=generator),
        "advantages": torch.randn(size, generator=generator),
        "returns": torch.randn(size, generator=generator),
    }


def gradients(policy: torch.nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(policy.parameters()), allow_unused=True))


@pytest.mark.parametrize("space", SPACES.values(), ids=SPACES.keys())
def test_loss_and_gradients_match_the_reference_form(space):
    dist = ActionDistribution.for_space(space)
    torch.manual_seed(0)
    policy = ActorCritic((OBS_DIM,), dist)
    cfg = PPO(ent_coef=0.01)
    mb = sample_minibatch(dist, policy)
    targets = Targets.masked(torch.ones(64, dtype=torch.bool), **mb)

    loss, stats = clipped_surrogate_loss(policy, dist, cfg, *targets.minibatch(torch.arange(64)))
    expected = reference_loss(policy, dist, cfg, **mb)

    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats[LOSS_STATS.index("loss")], expected.detach(), rtol=1e-5, atol=1e-6)
    for got, want in zip(gradients(policy, loss), gradients(policy, expected), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_masked_samples_count_for_nothing_even_when_garbage():
    dist = ActionDistribution.for_space(gym.spaces.Discrete(3))
    torch.manual_seed(0)
    policy = ActorCritic((OBS_DIM,), dist)
    cfg = PPO(ent_coef=0.01)
    mb = sample_minibatch(dist, policy)
    valid = torch.ones(64, dtype=torch.bool)
    valid[::3] = False
    garbage = {k: v.clone() for k, v in mb.items()}
    garbage["obs"][~valid] = float("nan")
    garbage["actions"][~valid] = 99  # out of range: must never be looked up
    garbage["advantages"][~valid] = float("inf")

    targets = Targets.masked(valid, **garbage)
    loss, _ = clipped_surrogate_loss(policy, dist, cfg, *targets.minibatch(torch.arange(64)))
    expected = reference_loss(policy, dist, cfg, **{k: v[valid] for k, v in mb.items()})

    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert all(torch.isfinite(g).all() for g in gradients(policy, loss) if g is not None)


def test_a_masked_sample_cannot_overflow_the_ratio_of_a_sharp_gaussian():
    # A masked sample's zeroed action at the policy's mean scores a log-prob of ~19 per
    # dimension at the smallest std: exp() of six of them overflows float32.
    dist = ActionDistribution.for_space(gym.spaces.Box(-1.0, 1.0, (6,), np.float32))
    torch.manual_seed(0)
    policy = ActorCritic((OBS_DIM,), dist, log_std_init=-20.0)
    mb = sample_minibatch(dist, policy)
    valid = torch.ones(64, dtype=torch.bool)
    valid[0] = False
    targets = Targets.masked(valid, **mb)
    with torch.no_grad():
        new_logprob, _ = dist.log_prob_entropy(policy(targets.obs[:1])[0], targets.actions[:1])
    assert new_logprob.item() > 88.8  # exp() of it is inf in float32

    loss, stats = clipped_surrogate_loss(policy, dist, PPO(), *targets.minibatch(torch.arange(64)))

    assert torch.isfinite(stats).all(), stats
    assert all(torch.isfinite(g).all() for g in gradients(policy, loss) if g is not None)


WRITTEN_OUT_SPACES = {name: SPACES[name] for name in ("discrete", "box")}


@pytest.mark.parametrize("hidden_sizes", [(64, 64), (16, 8, 4), ()], ids=["64-64", "16-8-4", "linear"])
@pytest.mark.parametrize("clip_value_loss", [True, False], ids=["clipped-value", "plain-value"])
@pytest.mark.parametrize(
    "space", ["discrete", "discrete-masked", "box", "multi_discrete", "multi_discrete-masked", "multi_binary"]
)
def test_the_written_out_gradient_is_autograds(space, clip_value_loss, hidden_sizes):
    dist = ActionDistribution.for_space(SPACES[space.removesuffix("-masked")])
    torch.manual_seed(0)
    policy = ActorCritic((OBS_DIM,), dist, hidden_sizes, log_std_init=-0.5)
    flat = flatten_parameters(policy)
    cfg = PPO(ent_coef=0.01, clip_coef=0.1, clip_value_loss=clip_value_loss)
    mb = sample_minibatch(dist, policy, size=256)
    mb["behaviour_logprobs"] += torch.randn(256)  # ratios inside and outside the clip range, both signs
    valid = torch.rand(256, generator=torch.Generator().manual_seed(1)) > 0.2
    if space.endswith("-masked"):  # about a third of the actions invalid, never the one taken
        mb["action_masks"] = torch.rand(256, dist.num_inputs, generator=torch.Generator().manual_seed(2)) > 0.3
        taken = mb["actions"].reshape(256, -1)
        offsets = [0, *np.cumsum(dist.nvec)[:-1]] if dist.nvec else [0]
        for i, offset in enumerate(offsets):
            mb["action_masks"][torch.arange(256), offset + taken[:, i]] = True
    minibatch = Targets.masked(valid, **mb).minibatch(torch.arange(256))

    loss, want_stats = clipped_surrogate_loss(policy, dist, cfg, *minibatch)
    flat.grad.zero_()
    loss.backward()
    want = flat.grad.clone()
    step = WrittenOutStep(written_out_policy(policy), dist, Coefficients.of(cfg))
    got_stats = step(flat.grad, *minibatch)

    assert 0.0 < float(want_stats[LOSS_STATS.index("clipfrac")]) < 1.0  # both sides of the clip were exercised
    torch.testing.assert_close(flat.grad, want, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(got_stats, want_stats, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("space", WRITTEN_OUT_SPACES.values(), ids=WRITTEN_OUT_SPACES.keys())
def test_a_cpu_learner_of_the_default_mlp_trains_alike_through_the_written_out_gradient_and_autograd(space):
    dist = ActionDistribution.for_space(space)
    learners = []
    for written_out in (True, False):
        torch.manual_seed(0)
        policy = ObservationNormalizer(ActorCritic((OBS_DIM,), dist), (OBS_DIM,))  # normalised once per update
        learner = PPO(update_epochs=2, num_minibatches=2).make_learner(policy, dist, "cpu")
        assert learner.written_out is not None, "the default MLP on a CPU takes the written-out gradient"
        if not written_out:
            learner.written_out = None
        learners.append(learner)
    for seed in range(3):
        batch = cartpole_like_batch(seed=seed)
        batch = dataclasses.replace(batch, obs=batch.obs * 3 + 1)  # away from the statistics' start
        if dist.kind == "gaussian":
            batch = dataclasses.replace(
                batch, actions=np.random.default_rng(seed).normal(size=(16, 8, 2)).astype(np.float32)
            )
        reports = []
        for learner in learners:
            learner.generator.manual_seed(seed)  # the same minibatches
            reports.append(learner.update(batch, progress=0.0))
        for name in LOSS_STATS:
            assert reports[0][name] == pytest.approx(reports[1][name], rel=1e-4, abs=1e-6), name
    np.testing.assert_allclose(flat_weights(learners[0].policy), flat_weights(learners[1].policy), rtol=1e-4, atol=1e-6)


def test_other_policies_train_through_autograd():
    dist = ActionDistribution.for_space(gym.spaces.Discrete(2))
    relu = ActorCritic((OBS_DIM,), dist)
    relu.actor[1] = torch.nn.ReLU()
    assert PPO().make_learner(relu, dist, "cpu").written_out is None


def cartpole_like_batch(steps: int = 16, envs: int = 8, seed: int = 0) -> RolloutBatch:
    rng = np.random.default_rng(seed)
    return RolloutBatch(
        obs=rng.normal(size=(steps, envs, OBS_DIM)).astype(np.float32),
        actions=rng.integers(0, 2, size=(steps, envs)),
        logprobs=np.full((steps, envs), np.log(0.5), dtype=np.float32),
        rewards=np.ones((steps, envs), dtype=np.float32),
        terminated=rng.random((steps, envs)) < 0.05,
        truncated=np.zeros((steps, envs), dtype=bool),
        trunc_values=np.zeros((steps, envs), dtype=np.float32),
        valid=np.ones((steps, envs), dtype=bool),
        disc_returns=np.zeros((steps, envs), dtype=np.float32),
        versions=np.zeros((steps, envs), dtype=np.int64),
        next_obs=rng.normal(size=(envs, OBS_DIM)).astype(np.float32),
    )


def make_learner(**config):
    dist = ActionDistribution.for_space(gym.spaces.Discrete(2))
    torch.manual_seed(0)
    return PPO(update_epochs=2, num_minibatches=2, **config).make_learner(ActorCritic((OBS_DIM,), dist), dist, "cpu")


def optimizer_state(learner) -> list[np.ndarray]:
    return [
        value.detach().clone().numpy()
        for state in learner.optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    ]


def test_update_reports_every_diagnostic_finite():
    metrics = make_learner().update(cartpole_like_batch(), progress=0.0)
    for name in (*LOSS_STATS, "grad_norm", "learning_rate", "explained_variance"):
        assert np.isfinite(metrics[name]), (name, metrics)
    assert metrics["grad_norm"] > 0


@pytest.mark.parametrize("algo", [PPO, APPO])
def test_with_normalised_observations_an_on_policy_batch_starts_its_update_at_ratio_one(algo):
    # The observation statistics take in the batch after the update, not before: the update
    # scores the batch as the workers saw it (as CleanRL's NormalizeObservation does), so the
    # first minibatch's ratio is exactly 1 instead of spending the clip range on new statistics.
    dist = ActionDistribution.for_space(gym.spaces.Discrete(2))
    torch.manual_seed(0)
    policy = ObservationNormalizer(ActorCritic((OBS_DIM,), dist), (OBS_DIM,))
    batch = cartpole_like_batch()
    batch = dataclasses.replace(batch, obs=batch.obs * 5 + 3)  # far from the statistics' start
    with torch.no_grad():  # acted by this very policy: on-policy
        logits, _ = evaluate(policy, torch.from_numpy(batch.obs.reshape(-1, OBS_DIM)))
        chosen = torch.log_softmax(logits, -1).gather(1, torch.from_numpy(batch.actions.reshape(-1, 1)))
    batch = dataclasses.replace(batch, logprobs=chosen.reshape(batch.actions.shape).numpy())
    learner = algo(update_epochs=1, num_minibatches=1).make_learner(policy, dist, "cpu")
    metrics = learner.update(batch, progress=0.0)
    assert metrics["approx_kl"] < 1e-7 and metrics["clipfrac"] == 0.0
    assert float(learner.policy.count) > batch.valid.size  # the statistics did take the batch in


def test_a_non_finite_loss_restores_policy_and_optimizer():
    learner = make_learner()
    learner.update(cartpole_like_batch(seed=1), progress=0.0)  # Adam has state now
    weights, state = flat_weights(learner.policy), optimizer_state(learner)

    batch = cartpole_like_batch(seed=2)
    batch.rewards[3, 2] = np.nan
    with pytest.raises(LearnerError, match=r"non-finite PPO loss.*coming from the model.*restored"):
        learner.update(batch, progress=0.0)

    np.testing.assert_array_equal(flat_weights(learner.policy), weights)
    for got, want in zip(optimizer_state(learner), state, strict=True):
        np.testing.assert_array_equal(got, want)
    assert np.isfinite(learner.update(cartpole_like_batch(seed=3), progress=0.0)["loss"])


def test_targets_without_a_valid_sample_take_no_optimiser_step():
    learner = make_learner()
    learner.update(cartpole_like_batch(seed=1), progress=0.0)  # Adam has momentum now
    weights, (state,) = flat_weights(learner.policy), learner.optimizer.state.values()
    steps = int(state["step"])
    obs = torch.randn(64, OBS_DIM)
    fields = {name: torch.zeros(64) for name in ("behaviour_logprobs", "old_values", "advantages", "returns")}
    report = learner.optimise(
        Targets.masked(torch.zeros(64, dtype=torch.bool), obs=obs, actions=torch.zeros(64), **fields)
    )
    assert report == dict.fromkeys(report, 0.0)
    assert int(state["step"]) == steps
    np.testing.assert_array_equal(flat_weights(learner.policy), weights)


def test_non_finite_observations_are_named_as_the_source():
    learner = make_learner()
    batch = cartpole_like_batch()
    batch.obs[0, 0, 0] = np.inf
    with pytest.raises(LearnerError, match="coming from the observations"):
        learner.update(batch, progress=0.0)


def test_target_kl_stops_the_epochs_early():
    batch = cartpole_like_batch()
    batch.logprobs[:] = np.log(0.01)  # far from the policy: KL above any small bound after the first epoch
    stopped = make_learner(target_kl=1e-6).update(batch, progress=0.0)
    full = make_learner().update(batch, progress=0.0)
    assert stopped["approx_kl"] != pytest.approx(full["approx_kl"])


@pytest.mark.timeout(280)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile imports torch.jit internals
def test_compiled_step_trains_like_the_eager_one():
    eager, compiled = make_learner(compile=False), make_learner(compile=True)
    for seed in range(2):  # the second update runs the compiled code without compiling
        torch.manual_seed(seed)
        want = eager.update(cartpole_like_batch(seed=seed), progress=0.0)
        torch.manual_seed(seed)
        got = compiled.update(cartpole_like_batch(seed=seed), progress=0.0)
        assert compiled.compiled, "torch.compile fell back to eager"
        for name in LOSS_STATS:
            assert got[name] == pytest.approx(want[name], rel=1e-3, abs=1e-5), name
    np.testing.assert_allclose(flat_weights(compiled.policy), flat_weights(eager.policy), rtol=1e-3, atol=1e-5)


@pytest.mark.timeout(280)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_failing_compile_falls_back_to_eager(caplog):
    from torch._inductor import config as inductor_config

    learner = make_learner(compile=True)
    torch._dynamo.reset()
    with (
        inductor_config.patch({"cpp.cxx": (None, "/nonexistent/c++"), "fx_graph_cache": False}),
        caplog.at_level(logging.WARNING, logger="aiorl"),
    ):
        metrics = learner.update(cartpole_like_batch(), progress=0.0)
    assert not learner.compiled
    assert "torch.compile of the learner's loss failed" in caplog.text
    assert np.isfinite(metrics["loss"])


def test_the_compilers_advice_does_not_fail_compilation_under_warnings_as_errors():
    # torch 2.11's inductor warns "TensorFloat32 tensor cores ... available but not enabled"
    # while compiling for CUDA; under -W error that made every CUDA learner fall back to eager.
    def compiler_warns(module: str) -> None:
        warnings.warn_explicit("advice", UserWarning, "compile_fx.py", 1, module=module)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with compiler_warnings_ignored():
            compiler_warns("torch._inductor.compile_fx")
            compiler_warns("torch._dynamo.utils")
            with pytest.raises(UserWarning):  # everyone else's warnings stay as the caller set them
                compiler_warns("aiorl.algos.ppo")


def test_the_learner_trains_alike_with_tanh_through_sigmoid_and_without():
    dist = ActionDistribution.for_space(gym.spaces.Discrete(2))
    algo = PPO(update_epochs=1, num_minibatches=1)  # one full-batch step: the sample order cannot matter
    learners = {}
    for via_sigmoid in (False, True):
        torch.manual_seed(0)
        policy = ActorCritic((OBS_DIM,), dist)
        policy.tanh_via_sigmoid = via_sigmoid
        learners[via_sigmoid] = algo.make_learner(policy, dist, "cpu")
    assert ran_through_sigmoid(learners[True].policy(torch.zeros(8, OBS_DIM))[0])  # the learner's copy uses it
    for seed in range(3):
        batch = cartpole_like_batch(steps=64, envs=32, seed=seed)  # 2,048 rows: where the learner uses it
        want, got = learners[False].update(batch, progress=0.0), learners[True].update(batch, progress=0.0)
        for name in LOSS_STATS:
            assert got[name] == pytest.approx(want[name], rel=1e-4, abs=1e-6), name
    np.testing.assert_allclose(
        flat_weights(learners[True].policy), flat_weights(learners[False].policy), rtol=1e-4, atol=1e-6
    )


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@needs_cuda
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile imports torch.jit internals
@pytest.mark.parametrize(
    "mode", [None, "reduce-overhead", "written-out"], ids=["default", "cuda-graphs", "written-out"]
)
def test_cuda_learner_trains_like_the_cpu_one(mode):
    dist = ActionDistribution.for_space(gym.spaces.Discrete(2))
    algo = PPO(update_epochs=1, num_minibatches=1)  # one full-batch step: the sample order cannot matter
    learners = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        learners[device] = algo.make_learner(ActorCritic((OBS_DIM,), dist), dist, device)
    assert learners["cuda"].compiled, "a CUDA learner compiles its step by default"
    if mode == "written-out":  # an experiment on CUDA (benchmarks/learner.py): the CPU's step, compiled
        model = written_out_policy(learners["cuda"].policy)
        learners["cuda"].written_out = WrittenOutStep(model, dist, Coefficients.of(algo))
        learners["cuda"].compile_loss()
    elif mode is not None:
        learners["cuda"].compile_loss(mode=mode)
    for seed in range(3):  # the first update compiles, the next ones replay
        want = learners["cpu"].update(cartpole_like_batch(seed=seed), progress=0.0)
        got = learners["cuda"].update(cartpole_like_batch(seed=seed), progress=0.0)
        for name in LOSS_STATS:
            assert got[name] == pytest.approx(want[name], rel=1e-3, abs=1e-5), name
    assert learners["cuda"].compiled
    np.testing.assert_allclose(
        flat_weights(learners["cuda"].policy), flat_weights(learners["cpu"].policy), rtol=1e-3, atol=1e-5
    )


@needs_cuda
@pytest.mark.asyncio
async def test_a_trainer_with_a_cuda_learner_trains_and_pins_its_batches():
    from aiorl import Trainer

    trainer = Trainer("CartPole-v1", device="cuda", seed=0, envs_per_worker=8)
    async with trainer:
        assert trainer._session is not None
        assert trainer._session.consumer.builder.pin_memory
        result = await trainer.run(total_steps=20_000)
    assert result.env_steps >= 20_000 and result.updates > 0
    assert next(trainer._learner.policy.parameters()).is_cuda


def test_the_learners_adam_step_matches_optimizer_step_bit_for_bit():
    torch.manual_seed(0)
    start = torch.randn(300)
    params = [start.clone().requires_grad_() for _ in range(2)]
    optimizers = [make_optimizer([p], lr=3e-4) for p in params]
    for step in range(5):
        gradient = torch.randn(300)
        for p, optimizer in zip(params, optimizers, strict=True):
            optimizer.param_groups[0]["lr"] = 3e-4 * (1 - step / 5)  # the schedule changes it between steps
            p.grad = gradient.clone()
        optimizers[0].step()
        adam_step(optimizers[1])
    assert torch.equal(params[0], params[1])
    (reference,), (state,) = optimizers[0].state.values(), optimizers[1].state.values()
    assert float(state["step"]) == 5
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(state[key], reference[key]), key


def test_an_optimizer_state_saved_per_tensor_loads_into_the_flat_layout():
    learner = make_learner()
    dist = ActionDistribution.for_space(gym.spaces.Discrete(2))
    torch.manual_seed(1)
    old_policy = ActorCritic((OBS_DIM,), dist)
    old_adam = torch.optim.Adam(old_policy.parameters(), lr=1e-3, eps=1e-5)  # aiorl 0.1's layout
    sum(p.sum() for p in old_policy.parameters()).backward()
    old_adam.step()

    learner.load_state_dict({"policy": old_policy.state_dict(), "optimizer": old_adam.state_dict()})

    (state,) = learner.optimizer.state.values()
    expected = torch.cat([old_adam.state[p]["exp_avg"].reshape(-1) for p in old_policy.parameters()])
    torch.testing.assert_close(state["exp_avg"], expected)
    np.testing.assert_array_equal(flat_weights(learner.policy), flat_weights(old_policy))
    assert np.isfinite(learner.update(cartpole_like_batch(), progress=0.0)["loss"])
