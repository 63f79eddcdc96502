"""``trainer.events()``: typed events for any number of consumers, never slowing training."""

from __future__ import annotations

import asyncio
import gc
import os
import signal

import numpy as np
import pytest
from conftest import SMALL

from aiorl import (
    PPO,
    ConfigError,
    EpisodeFinished,
    EvaluationFinished,
    EventsDropped,
    Trainer,
    TrainingUpdate,
    WorkerCrashed,
    WorkerRestarted,
)
from aiorl.events import CheckpointSaved, EventHub

QUICK_PPO = PPO(update_epochs=1, num_minibatches=1)
EVERYTHING = 1_000_000
"""A buffer no test run fills."""


def checkpoint(n: int) -> CheckpointSaved:
    return CheckpointSaved(path=f"/tmp/ckpt-{n}", env_steps=n, policy_version=n)


# ---- the fan-out itself -----------------------------------------------------------------------
@pytest.mark.asyncio
async def test_every_subscriber_gets_every_event_in_order():
    hub = EventHub()
    first, second = hub.subscribe(), hub.subscribe()
    for n in range(3):
        hub.publish(checkpoint(n))
    hub.end_streams()
    expected = [checkpoint(0), checkpoint(1), checkpoint(2)]
    assert [e async for e in first] == expected
    assert [e async for e in second] == expected


@pytest.mark.asyncio
async def test_a_full_buffer_drops_the_oldest_and_marks_the_gap():
    hub = EventHub()
    slow = hub.subscribe(maxsize=2)
    for n in range(5):
        hub.publish(checkpoint(n))
    assert slow.dropped == 3
    hub.end_streams()
    assert [e async for e in slow] == [EventsDropped(3), checkpoint(3), checkpoint(4)]
    assert slow.dropped == 3


@pytest.mark.asyncio
async def test_a_waiting_consumer_is_woken_by_a_publish_and_by_the_end():
    hub = EventHub()
    stream = hub.subscribe()
    reader = asyncio.create_task(anext(stream))
    await asyncio.sleep(0)
    hub.publish(checkpoint(1))
    assert await reader == checkpoint(1)
    reader = asyncio.create_task(anext(stream, None))
    await asyncio.sleep(0)
    hub.end_streams()
    assert await reader is None
    assert stream.closed


@pytest.mark.asyncio
async def test_a_second_task_reading_the_same_stream_is_told_to_subscribe_its_own():
    hub = EventHub()
    stream = hub.subscribe()
    first = asyncio.create_task(anext(stream, None))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match=r"already reading this EventStream: call trainer.events\(\) once per"):
        await anext(stream)  # was: took the first reader's wake-up, which then waited forever
    hub.end_streams()
    assert await first is None


@pytest.mark.asyncio
async def test_a_stream_left_with_break_stops_receiving():
    hub = EventHub()
    hub.publish(checkpoint(0))  # before anyone listens: nobody gets it
    asyncio.get_running_loop().call_soon(hub.publish, checkpoint(1))
    async for event in hub.subscribe():
        assert event == checkpoint(1)
        break
    else:
        pytest.fail("the stream ended")
    gc.collect()
    assert not hub.subscribed


@pytest.mark.asyncio
async def test_closing_a_stream_unsubscribes_it_and_ends_it_after_its_buffer():
    hub = EventHub()
    async with hub.subscribe() as stream:
        hub.publish(checkpoint(1))
    hub.publish(checkpoint(2))
    assert not hub.subscribed
    assert [e async for e in stream] == [checkpoint(1)]


def test_buffer_size_must_be_positive():
    with pytest.raises(ConfigError, match="maxsize=0"):
        EventHub().subscribe(maxsize=0)
    with pytest.raises(ConfigError, match="maxsize=0 must be"):
        EventHub().subscribe(maxsize=np.int64(0))


@pytest.mark.asyncio
async def test_a_numpy_buffer_size_is_taken_as_pythons_own():
    hub = EventHub()
    slow = hub.subscribe(maxsize=np.int64(2))  # was refused: an np.int64 is no int
    for n in range(3):
        hub.publish(checkpoint(n))
    hub.end_streams()
    assert [e async for e in slow] == [EventsDropped(1), checkpoint(1), checkpoint(2)]


# ---- a trainer's events ----------------------------------------------------------------------
@pytest.mark.asyncio
async def test_subscribed_before_run_sees_every_update_and_episode_then_ends():
    trainer = Trainer("CartPole-v1", QUICK_PPO, **SMALL)
    stream = trainer.events(maxsize=EVERYTHING)
    result = await trainer.run(total_steps=1000)  # outside `async with`: the trainer closes after it
    events = [event async for event in stream]  # ends because the trainer closed
    updates = [e for e in events if isinstance(e, TrainingUpdate)]
    episodes = [e for e in events if isinstance(e, EpisodeFinished)]
    assert [u.policy_version for u in updates] == list(range(1, result.updates + 1))
    assert updates[-1].env_steps == result.env_steps
    assert all(u.steps_per_s > 0 and u.lag.min >= 0 and "policy_loss" in u.learner for u in updates)
    assert len(episodes) == trainer.stats.episodes > 0
    assert {e.worker_id for e in episodes} == {0, 1}
    assert all(e.episode_return == e.length > 0 for e in episodes)  # CartPole: reward 1 per step
    assert stream.dropped == 0


@pytest.mark.asyncio
async def test_subscribing_during_run_receives_the_updates_from_then_on():
    trainer = Trainer("CartPole-v1", QUICK_PPO, **SMALL)
    second_update = asyncio.Event()

    def on_update(report):
        if report.policy_version >= 2:
            second_update.set()

    task = asyncio.create_task(trainer.run(total_steps=10**9, on_update=on_update))
    await asyncio.wait_for(second_update.wait(), timeout=60)
    stream = trainer.events(maxsize=EVERYTHING)
    version_at_subscription = trainer.policy_version
    async for event in stream:
        if isinstance(event, TrainingUpdate):
            assert event.policy_version == version_at_subscription + 1
            break
    trainer.stop()
    assert (await asyncio.wait_for(task, timeout=60)).stopped


@pytest.mark.asyncio
async def test_a_consumer_that_never_reads_loses_its_oldest_events_and_blocks_nobody():
    trainer = Trainer("CartPole-v1", QUICK_PPO, **SMALL)
    idle = trainer.events(maxsize=4)
    reader_stream = trainer.events(maxsize=EVERYTHING)
    reader = asyncio.create_task(_read_all(reader_stream))
    result = await trainer.run(total_steps=1000)
    everything = await reader
    assert result.env_steps >= 1000
    assert reader_stream.dropped == 0
    assert idle.dropped == len(everything) - 4 > 0
    assert [e async for e in idle] == [EventsDropped(idle.dropped), *everything[-4:]]


async def _read_all(stream):
    return [event async for event in stream]


@pytest.mark.asyncio
async def test_a_killed_worker_is_announced_with_its_cause_and_restart_count():
    async with Trainer("CartPole-v1", QUICK_PPO, restart_backoff_s=0.05, **SMALL) as trainer:
        stream = trainer.events(maxsize=EVERYTHING)
        os.kill(trainer.worker_pids[1], signal.SIGKILL)
        while trainer.stats.worker_restarts == 0:
            await trainer.run(total_steps=200)
    restarts = [e async for e in stream if isinstance(e, WorkerRestarted)]
    assert len(restarts) == 1
    assert restarts[0].worker_id == 1 and restarts[0].restarts == 1
    assert isinstance(restarts[0].cause, WorkerCrashed)
    assert "SIGKILL" in str(restarts[0].cause)


@pytest.mark.asyncio
async def test_an_evaluation_publishes_its_result():
    async with Trainer("CartPole-v1", QUICK_PPO, **SMALL) as trainer:
        stream = trainer.events(maxsize=EVERYTHING)
        result = await trainer.evaluate(episodes=2)
    evaluations = [e async for e in stream if isinstance(e, EvaluationFinished)]
    assert evaluations == [EvaluationFinished(result)]
