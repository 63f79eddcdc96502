"""Embedding the trainer in an application's event loop: stop(), cancellation, no global side effects.

Every async test runs on asyncio's default loop and on uvloop (conftest.py).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import random
import signal
import threading

import numpy as np
import pytest
import torch
from conftest import SMALL

import aiorl
from aiorl import PPO, Trainer, TrainerClosed, TrainingUpdate
from aiorl.testing import FaultyEnv

QUICK_PPO = PPO(update_epochs=1, num_minibatches=1)


class GatedPPO:
    """PPO whose updates wait at a gate: lets a test act while an update is in progress."""

    def __init__(self) -> None:
        self.update_started = threading.Event()
        self.gate = threading.Event()

    def make_learner(self, policy, dist, device):
        learner = QUICK_PPO.make_learner(policy, dist, device)
        update = learner.update

        def gated_update(batch, progress):
            self.update_started.set()
            self.gate.wait(timeout=60)
            return update(batch, progress)

        learner.update = gated_update
        return learner


@pytest.mark.asyncio
async def test_stop_finishes_the_update_in_progress_and_returns_the_result():
    algo = GatedPPO()
    async with Trainer("CartPole-v1", algo, **SMALL) as trainer:
        stream = trainer.events()
        run = asyncio.create_task(trainer.run(total_steps=10**9))
        await asyncio.to_thread(algo.update_started.wait, 60)  # the first update is in the learner thread
        trainer.stop()
        algo.gate.set()
        result = await asyncio.wait_for(run, timeout=60)
        assert result.stopped and not result.reached_target
        assert result.updates == 1 and result.policy_version == trainer.policy_version == 1
        assert len(trainer.worker_pids) == 2  # stopping a run keeps the workers for the next
    updates = [e async for e in stream if isinstance(e, TrainingUpdate)]
    assert [u.policy_version for u in updates] == [1]  # the update in progress was finished and reported
    stats = trainer.stats
    assert stats.steps_collected == stats.steps_trained + stats.steps_discarded


@pytest.mark.asyncio
async def test_run_and_sample_refuse_to_overlap_naming_the_one_in_progress():
    algo = GatedPPO()
    async with Trainer("CartPole-v1", algo, **SMALL) as trainer:
        run = asyncio.create_task(trainer.run(total_steps=10**9))
        await asyncio.to_thread(algo.update_started.wait, 60)
        for call in (trainer.sample(64), trainer.run(total_steps=64)):
            with pytest.raises(RuntimeError, match=r"while run\(\) is in progress"):
                await call
        trainer.stop()
        algo.gate.set()
        await asyncio.wait_for(run, timeout=60)

        sampling = asyncio.create_task(trainer.sample(10**9))
        while trainer.stats.steps_discarded == 0:  # sample() holds the trainer
            await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match=r"run\(\) while sample\(\) is in progress"):
            await trainer.run(total_steps=64)
        with pytest.raises(RuntimeError, match=r"save\(\) while sample\(\) is in progress$"):
            await trainer.save("never.pt")
        sampling.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sampling


@pytest.mark.asyncio
async def test_stop_while_waiting_for_rollouts_returns_at_once():
    # Every worker's env 0 hangs at its 50th step, so after 3 rollouts per worker no more come.
    hangs = functools.partial(FaultyEnv, "CartPole-v1", "hang", 50, workers=None)
    async with Trainer(hangs, QUICK_PPO, worker_timeout_s=120, shutdown_grace_s=0.5, **SMALL) as trainer:
        run = asyncio.create_task(trainer.run(total_steps=10**9))
        while trainer.stats.updates < 3:  # 6 rollouts in batches of 2: all trained, the queue empty
            await asyncio.sleep(0.05)
        assert not run.done()
        trainer.stop()
        await asyncio.sleep(0)  # the wait for a rollout is being interrupted: a second stop() is harmless
        trainer.stop()
        result = await asyncio.wait_for(run, timeout=30)
    assert result.stopped and result.updates == 3


@pytest.mark.asyncio
async def test_stop_before_run_starts_ends_that_run_only():
    async with Trainer("CartPole-v1", QUICK_PPO, **SMALL) as trainer:
        trainer.stop()
        stopped = await trainer.run(total_steps=10**9)
        assert stopped.stopped and stopped.updates == 0
        normal = await trainer.run(total_steps=300)
        assert not normal.stopped and normal.env_steps >= 300


@pytest.mark.asyncio
async def test_cancelling_the_task_that_owns_the_trainer_kills_its_workers_before_it_ends():
    pids: list[int] = []
    first_update = asyncio.Event()

    async def app() -> None:
        async with Trainer("CartPole-v1", QUICK_PPO, **SMALL) as trainer:
            pids.extend(trainer.worker_pids.values())
            await trainer.run(total_steps=10**9, on_update=lambda _: first_update.set())

    task = asyncio.create_task(app())
    await asyncio.wait_for(first_update.wait(), timeout=60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(pids) == 2
    assert not [pid for pid in pids if _running(pid)]  # gone when the task ends, not eventually


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _signal_handlers() -> dict[signal.Signals, object]:
    return {sig: signal.getsignal(sig) for sig in signal.valid_signals() if sig not in (signal.SIGKILL, signal.SIGSTOP)}


@pytest.mark.asyncio
async def test_run_leaves_the_loop_policy_and_signal_handlers_alone():
    policy, handlers = asyncio.get_event_loop_policy(), _signal_handlers()
    seen_during_run: list[tuple[object, dict]] = []

    def on_update(report) -> None:
        if not seen_during_run:
            seen_during_run.append((asyncio.get_event_loop_policy(), _signal_handlers()))

    await Trainer("CartPole-v1", QUICK_PPO, **SMALL).run(total_steps=300, on_update=on_update)
    assert seen_during_run == [(policy, handlers)]
    assert asyncio.get_event_loop_policy() is policy
    assert _signal_handlers() == handlers


def _global_random_states() -> tuple:
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def _same_random_states(left: tuple, right: tuple) -> bool:
    return torch.equal(left[0], right[0]) and (left[1] == right[1]).all() and left[2] == right[2]


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_training_leaves_the_global_random_generators_and_thread_count_alone():
    torch.manual_seed(1234)
    states, threads = _global_random_states(), torch.get_num_threads()
    seen_threads: list[int] = []

    trainer = Trainer("CartPole-v1", QUICK_PPO, learner_threads=threads + 1, **SMALL)  # the default policy
    assert _same_random_states(_global_random_states(), states)
    await trainer.run(total_steps=300, on_update=lambda _: seen_threads.append(torch.get_num_threads()))

    assert seen_threads and set(seen_threads) == {threads}  # the loop's thread kept its count during the run
    assert torch.get_num_threads() == threads
    assert _same_random_states(_global_random_states(), states)  # the learner drew from its own generator


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_two_trainers_in_one_process_keep_their_own_learner_threads():
    one = {**SMALL, "num_workers": 1}
    async with (
        Trainer("CartPole-v1", QUICK_PPO, learner_threads=1, **one) as first,
        Trainer("CartPole-v1", QUICK_PPO, learner_threads=3, **one) as second,
    ):
        counts = [
            await asyncio.get_running_loop().run_in_executor(t._session.consumer.executor, torch.get_num_threads)
            for t in (first, second)
        ]
    assert counts == [1, 3]


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_the_same_seed_trains_the_same_policy():
    async def train() -> list[torch.Tensor]:
        trainer = Trainer("CartPole-v1", PPO(update_epochs=2, num_minibatches=4), **_one_worker())
        await trainer.run(total_steps=128)
        return [p.detach().clone() for p in trainer.policy.parameters()]

    first = await train()
    torch.manual_seed(99)  # the application's use of the global generator changes nothing
    second = await train()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def _one_worker() -> dict:
    return SMALL | {"num_workers": 1, "max_policy_lag": 0, "rollouts_per_batch": 1}


def test_a_trainer_closed_mid_run_in_one_event_loop_closes_the_same_way_in_the_next():
    trainer = Trainer("CartPole-v1", PPO(update_epochs=1, num_minibatches=1), **SMALL)

    async def close_while_running() -> int:
        async with trainer:
            before = trainer.policy_version
            running = asyncio.create_task(trainer.run(total_steps=10**9))
            while trainer.policy_version == before:  # run() holds its lock, in this loop
                await asyncio.sleep(0.05)
            await trainer.aclose()  # in the second loop: "Lock ... is bound to a different event loop"
            with pytest.raises(TrainerClosed):
                await running
        return trainer.policy_version

    first = asyncio.run(close_while_running())
    assert asyncio.run(close_while_running()) > first
    assert trainer.worker_pids == {}


def test_a_trainer_started_in_one_event_loop_refuses_another_until_closed_there():
    trainer = Trainer("CartPole-v1", QUICK_PPO, **SMALL)
    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(trainer.__aenter__())
        for use in (trainer.run(total_steps=256), trainer.aclose()):  # was: a segfault, once that loop closed
            with pytest.raises(RuntimeError, match=r"started in another event loop .* close it there"):
                asyncio.run(use)
        first.run_until_complete(trainer.aclose())
    finally:
        first.close()
    assert asyncio.run(trainer.run(total_steps=256)).env_steps >= 256  # closed there, it starts here


@pytest.mark.asyncio
async def test_aclose_while_run_starts_the_workers_ends_that_run_with_trainer_closed():
    trainer = Trainer("CartPole-v1", QUICK_PPO, **SMALL)
    running = asyncio.create_task(trainer.run(total_steps=10**9))
    await asyncio.sleep(0)  # run() is starting the workers
    await trainer.aclose()  # was: returned at once, and the run trained on
    assert trainer.worker_pids == {}
    with pytest.raises(TrainerClosed, match="closed while it was starting"):
        await running
    assert trainer.stats.updates == 0


@pytest.mark.asyncio
async def test_concurrent_acloses_close_the_trainer_once():
    trainer = Trainer("CartPole-v1", QUICK_PPO, **SMALL)
    async with trainer:
        running = asyncio.create_task(trainer.run(total_steps=10**9))
        while trainer.stats.updates == 0:
            await asyncio.sleep(0.01)
        await asyncio.gather(trainer.aclose(), trainer.aclose())
        with pytest.raises(TrainerClosed):
            await running
    assert trainer._launches == 1  # was 2: the session closed twice, moving the next start's seeds twice
    assert trainer.stats.steps_pending == 0


@pytest.mark.asyncio
async def test_stop_while_a_run_tears_down_its_workers_does_not_stop_the_next_run():
    trainer = Trainer("CartPole-v1", QUICK_PPO, **SMALL)
    first = asyncio.create_task(trainer.run(total_steps=256))
    while trainer.stats.steps_trained < 256 or trainer.worker_pids:  # done training; then the workers go
        await asyncio.sleep(0.001)
    assert not first.done()  # tearing down: the stop is for this run
    trainer.stop()
    await first
    second = await trainer.run(total_steps=256)
    assert not second.stopped and second.env_steps >= 256  # was: stopped at once, no update


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_aiorl_run_inside_a_running_loop_says_to_await_instead(recwarn):
    async def main() -> None:
        pass

    for given in (Trainer("CartPole-v1", num_workers=1), main()):
        with pytest.raises(RuntimeError, match=r"one is running in this thread: await the coroutine"):
            aiorl.run(given)
    assert not [w for w in recwarn if "never awaited" in str(w.message)]  # was: Trainer.run never awaited


def test_aiorl_run_names_a_coroutine_function_passed_uncalled_and_closes_a_coroutine_it_refuses(recwarn):
    async def main() -> None:
        pass

    with pytest.raises(TypeError, match=r"takes a coroutine or a Trainer, not .*: call it, aiorl.run\(main\(\)\)"):
        aiorl.run(main)  # type: ignore[arg-type]  # was: "object function can't be used in 'await' expression"
    with pytest.raises(TypeError, match=r"keyword arguments \['total_steps'\] only apply when main is a Trainer"):
        aiorl.run(main(), total_steps=5)
    gc.collect()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]
