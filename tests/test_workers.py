"""Workers persist across updates and runs, pick up new weights, and never block the loop."""

from __future__ import annotations

import threading

import pytest
from conftest import SMALL

from aiorl import PPO, Trainer, UpdateReport

QUICK_PPO = PPO(update_epochs=2, num_minibatches=2)


@pytest.mark.asyncio
async def test_same_worker_processes_collect_across_updates_and_runs():
    reports: list[UpdateReport] = []
    async with Trainer("CartPole-v1", QUICK_PPO, **SMALL) as trainer:
        pids = set(trainer.worker_pids.values())
        assert len(pids) == 2
        first = await trainer.run(total_steps=1_500, on_update=reports.append)
        second = await trainer.run(total_steps=1_500, on_update=reports.append)
        assert set(trainer.worker_pids.values()) == pids
    assert first.updates >= 5 and second.updates >= 5
    acting_pids = {pid for report in reports for _, pid, _ in report.rollouts}
    assert acting_pids == pids
    assert second.policy_version == first.policy_version + second.updates


@pytest.mark.asyncio
async def test_workers_act_with_newer_weights_and_lag_is_reported():
    reports: list[UpdateReport] = []
    async with Trainer("CartPole-v1", QUICK_PPO, **SMALL) as trainer:
        result = await trainer.run(total_steps=4_000, on_update=reports.append)
    behaviour_versions = [version for report in reports for _, _, version in report.rollouts]
    assert max(behaviour_versions) >= len(reports) - 4, "workers must pick up new weights"
    assert [r.policy_version for r in reports] == list(range(1, len(reports) + 1))
    for report in reports:
        assert 0 <= report.lag.min <= report.lag.mean <= report.lag.max <= 4  # max_policy_lag
        assert report.lag.max == report.policy_version - 1 - min(v for _, _, v in report.rollouts)
    assert result.policy_lag is not None and result.policy_lag.max <= 4


@pytest.mark.asyncio
async def test_strict_on_policy_trains_only_on_the_newest_policy():
    reports: list[UpdateReport] = []
    async with Trainer("CartPole-v1", QUICK_PPO, max_policy_lag=0, **SMALL) as trainer:
        result = await trainer.run(total_steps=2_000, on_update=reports.append)
    assert result.updates >= 5
    assert all(report.lag.max == 0 for report in reports)
    assert result.steps_discarded.get("policy_lag", 0) == 0


@pytest.mark.asyncio
async def test_every_collected_step_is_trained_or_discarded_with_a_reason():
    async with Trainer("CartPole-v1", QUICK_PPO, max_policy_lag=1, **SMALL) as trainer:
        result = await trainer.run(total_steps=3_000)
        stats = trainer.stats
        assert result.steps_collected == result.total_env_steps + sum(result.steps_discarded.values()) + (
            result.steps_pending
        )
    assert stats.steps_pending == 0
    assert stats.steps_collected == stats.steps_trained + stats.steps_discarded
    assert set(stats.discarded) <= {"policy_lag", "shutdown"}


@pytest.mark.asyncio
async def test_the_learner_updates_off_the_event_loop_thread():
    # How late the loop's other coroutines run while training is a timing, measured in
    # benchmarks/loop_lag.py; what a test can check is where the update runs.
    update_threads: list[int] = []
    async with Trainer("CartPole-v1", QUICK_PPO, **SMALL) as trainer:
        learner = trainer._learner
        real_update = learner.update

        def recording_update(batch, progress):
            update_threads.append(threading.get_ident())
            return real_update(batch, progress)

        learner.update = recording_update
        result = await trainer.run(total_steps=1_000)
    assert len(update_threads) == result.updates > 0
    assert threading.get_ident() not in update_threads, "an update ran on the event loop's thread"
