"""One worker spec for every backend: the trainer-wide template written once, plus who the worker
is and, for a local worker process, the shared memory it attaches to."""

from __future__ import annotations

import pickle
from dataclasses import fields

import pytest

from aiorl.distributions import ActionDistribution
from aiorl.envs import EnvFactory, EnvSpaces, ObservationEncoder
from aiorl.models import ActorCritic
from aiorl.rollout import RolloutLayout
from aiorl.worker import AsyncActing, LocalPlumbing, WorkerSpec, WorkerTemplate
from aiorl.worker.main import process_main


def template(**changes: object) -> WorkerTemplate:
    factory = EnvFactory.from_user("CartPole-v1")
    spaces = EnvSpaces.probe(factory)
    encoder = ObservationEncoder.for_space(spaces.observation_space)
    dist = ActionDistribution.for_space(spaces.action_space)
    options: dict[str, object] = dict(
        env_factory=factory,
        seed=7,
        layout=RolloutLayout(16, 4, encoder.shape, dist.action_shape, dist.action_dtype.str),
        num_workers=3,
        num_slots=6,
        policy=ActorCritic(encoder.shape, dist),
        dist=dist,
        obs_encoder=encoder,
        heartbeat_interval_s=0.5,
        env_error_limit=3,
        acting=AsyncActing(env_threads=True, env_timeout_s=5.0, act_batch=4, act_wait_s=0.0),
    )
    options.update(changes)
    return WorkerTemplate(**options)  # type: ignore[arg-type]


PLUMBING = LocalPlumbing(
    slots_name="psm_slots", weights_name="psm_weights", num_weights=10, progress_name="psm_progress", stack_path="/s"
)


def test_a_spec_adds_only_the_workers_identity_and_plumbing_to_the_template():
    shared = [f.name for f in fields(WorkerTemplate)]
    own = [f.name for f in fields(WorkerSpec)]
    assert own[: len(shared)] == shared  # the template's fields, declared once, inherited
    assert own[len(shared) :] == ["worker_id", "incarnation", "local"]


def test_worker_spec_carries_every_template_field_unchanged():
    made = template()
    spec = made.worker_spec(2, 1, PLUMBING)
    assert isinstance(spec, WorkerTemplate)
    assert all(getattr(spec, f.name) is getattr(made, f.name) for f in fields(WorkerTemplate))
    assert (spec.worker_id, spec.incarnation, spec.local) == (2, 1, PLUMBING)
    assert made.worker_spec(0, 0).local is None  # a Ray actor's: rollouts come back as values


def test_seeds_differ_per_worker_incarnation_and_env():
    made = template()
    seeds = {made.worker_spec(w, i).env_seed(e) for w in range(3) for i in range(2) for e in range(4)}
    assert len(seeds) == 3 * 2 * 4
    torch_seeds = {made.worker_spec(w, i).torch_seed() for w in range(3) for i in range(2)}
    assert len(torch_seeds) == 3 * 2


def test_a_spec_pickles_to_itself_and_stays_small():
    made = template()
    spec = made.worker_spec(1, 0, PLUMBING)
    copy = pickle.loads(pickle.dumps(spec))
    assert (copy.worker_id, copy.incarnation, copy.local, copy.layout, copy.acting) == (
        1,
        0,
        PLUMBING,
        spec.layout,
        spec.acting,
    )
    assert copy.env_seed(3) == spec.env_seed(3)
    # apart from the policy template, what travels to a worker is a few kilobytes
    assert len(pickle.dumps(spec)) < len(pickle.dumps(made.policy)) + 8192


def test_a_worker_process_refuses_a_spec_without_local_plumbing():
    with pytest.raises(ValueError, match="local plumbing"):
        process_main(template().worker_spec(0, 0), sock=None)  # type: ignore[arg-type]
