"""Checkpoints: what they restore, when they are written, and that a kill mid-write costs nothing."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import unittest.mock

import numpy as np
import pytest
import torch
from conftest import SMALL, wait_until

from aiorl import PPO, CheckpointError, ConfigError, Policy, Trainer, WorkerRestartError
from aiorl.checkpoint import (
    ABANDONED_AFTER_S,
    Checkpointer,
    RunPlan,
    prepare_checkpoint_path,
    read_checkpoint,
    write_checkpoint,
)
from aiorl.models import flat_weights
from aiorl.testing import FaultyEnv


def assert_same_tensors(left: object, right: object) -> None:
    """Nested dicts/lists of tensors and numbers are equal, tensor by tensor."""
    if isinstance(left, dict):
        assert isinstance(right, dict) and left.keys() == right.keys()
        for key in left:
            assert_same_tensors(left[key], right[key])
    elif isinstance(left, list | tuple):
        assert isinstance(right, list | tuple) and len(left) == len(right)
        for a, b in zip(left, right, strict=True):
            assert_same_tensors(a, b)
    elif isinstance(left, torch.Tensor):
        assert torch.equal(left, right)
    else:
        assert left == right


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_load_restores_weights_optimizer_counters_and_random_state(tmp_path):
    path = tmp_path / "checkpoint.pt"
    trainer = Trainer("CartPole-v1", PPO(), **SMALL)
    at_last_update = {}

    def remember(report):  # runs right after the checkpoint's counters are noted, in the same loop turn
        at_last_update.update(episodes=trainer.stats.episodes, returns=list(trainer.stats.recent_returns))

    await trainer.run(total_steps=1024, checkpoint_path=path, on_update=remember)
    global_states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()

    loaded = Trainer.load(path)

    # The learner's own generator continues where it stopped; the process's generators are left alone.
    assert torch.equal(loaded._learner.generator.get_state(), trainer._learner.generator.get_state())
    assert torch.equal(torch.get_rng_state(), global_states[0])
    assert (np.random.get_state()[1] == global_states[1]).all() and random.getstate() == global_states[2]
    assert_same_tensors(loaded.policy.state_dict(), trainer.policy.state_dict())
    assert_same_tensors(loaded._learner.optimizer.state_dict(), trainer._learner.optimizer.state_dict())
    assert loaded.policy_version == trainer.policy_version > 0
    for name in ("steps_trained", "updates", "worker_restarts", "env_errors"):
        assert getattr(loaded.stats, name) == getattr(trainer.stats, name), name
    # Episodes that end in rollouts arriving after the last update are counted by the live trainer
    # until its workers stop; the checkpoint holds the counts of its last update.
    assert loaded.stats.episodes == at_last_update["episodes"] <= trainer.stats.episodes
    assert list(loaded.stats.recent_returns) == at_last_update["returns"]
    assert loaded.stats.steps_pending == 0  # the saved pending steps count as discarded (shutdown)
    assert loaded.stats.steps_collected == loaded.stats.steps_trained + loaded.stats.steps_discarded
    assert loaded.config == trainer.config and loaded.algo == trainer.algo
    assert loaded.unfinished_run is None  # the run finished


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_training_after_load_continues_the_step_counters_and_versions(tmp_path):
    path = tmp_path / "checkpoint.pt"
    first = await Trainer("CartPole-v1", PPO(), **SMALL).run(total_steps=512, checkpoint_path=path)
    trainer = Trainer.load(path)
    reports = []

    result = await trainer.run(total_steps=512, on_update=reports.append)

    assert reports[0].policy_version == first.policy_version + 1
    assert reports[0].env_steps == first.total_env_steps + reports[0].batch_steps
    assert result.total_env_steps == first.total_env_steps + result.env_steps
    assert result.policy_version == first.policy_version + result.updates
    assert trainer.stats.episodes > 0 and result.episodes < trainer.stats.episodes


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_resume_finishes_an_interrupted_run_with_its_learning_rate_schedule(tmp_path):
    path = tmp_path / "checkpoint.pt"
    algo = PPO(lr_schedule="linear")
    total = 2048
    trainer = Trainer("CartPole-v1", algo, **SMALL)
    at_interrupt = []

    def interrupt_after_four(report):
        if report.policy_version == 4:
            at_interrupt.append(report)
            running.cancel()

    running = asyncio.ensure_future(trainer.run(total, on_update=interrupt_after_four, checkpoint_path=path))
    with pytest.raises(asyncio.CancelledError):
        await running

    resumed = Trainer.load(path)
    saved = at_interrupt[0]
    extra = resumed.policy_version - 4  # an update already in the learner when cancelled is finished and kept
    assert extra in (0, 1) and resumed.stats.steps_trained == saved.env_steps + extra * saved.batch_steps
    trained_at_load, wall_at_load = resumed.stats.steps_trained, resumed.train_time_s
    assert resumed.unfinished_run == RunPlan(total_steps=total, target_return=None, trained_at_start=0)
    reports = []
    result = await resumed.resume(on_update=reports.append)

    assert reports[0].policy_version == 5 + extra
    # the linear schedule goes on from the fraction of the whole run already done
    assert reports[0].learner["learning_rate"] == pytest.approx(algo.learning_rate * (1 - trained_at_load / total))
    assert resumed.stats.steps_trained == total and result.env_steps == total
    # throughput counts the steps of this call only, not those trained before the interruption
    last = reports[-1]
    assert last.steps_per_s * (last.wall_time_s - wall_at_load) == pytest.approx(last.env_steps - trained_at_load)
    assert result.steps_per_second == pytest.approx((total - trained_at_load) / result.wall_time)
    assert resumed.unfinished_run is None
    with pytest.raises(RuntimeError, match="no unfinished run"):
        await resumed.resume()


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_stopped_run_keeps_its_plan_and_so_does_a_loaded_trainer_saved_again(tmp_path):
    trainer = Trainer("CartPole-v1", **SMALL)

    def stop_after_two(report):
        if report.policy_version == 2:
            trainer.stop()

    result = await trainer.run(100_000, on_update=stop_after_two, checkpoint_path=tmp_path / "a.pt")
    assert result.stopped
    plan = RunPlan(total_steps=100_000, target_return=None, trained_at_start=0)
    loaded = Trainer.load(tmp_path / "a.pt")
    assert loaded.unfinished_run == plan  # was None: a stopped run could not be resumed
    assert Trainer.load(await loaded.save(tmp_path / "b.pt")).unfinished_run == plan  # was None: save() dropped it
    assert Trainer.load(loaded.state_dict()).unfinished_run == plan


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_checkpoints_are_written_periodically_during_a_run(tmp_path):
    path = tmp_path / "checkpoint.pt"
    seen = []

    def look(report):
        if path.exists():
            seen.append(read_checkpoint(path)["policy_version"])

    trainer = Trainer("CartPole-v1", PPO(), **SMALL)
    result = await trainer.run(total_steps=4096, on_update=look, checkpoint_path=path, checkpoint_interval_s=0.01)

    assert len(set(seen)) >= 2, seen  # several files replaced one another while training went on
    # a snapshot of the update just reported may already be on disk when on_update reads the file
    assert seen == sorted(seen) and max(seen) <= result.policy_version
    final = read_checkpoint(path)
    assert final["policy_version"] == result.policy_version and final["run"] is None  # the run's end, written last


KILL_DURING_SAVE = textwrap.dedent(
    """
    import os, sys, time
    import aiorl.checkpoint as checkpoint
    from aiorl import Trainer

    if __name__ == "__main__":
        path, marker, point = sys.argv[1:4]
        checkpoint.write_checkpoint(Trainer("CartPole-v1", seed=1).state_dict(), path)
        newer = Trainer("CartPole-v1", seed=2).state_dict()

        def stall(*args):
            open(marker, "w").close()
            time.sleep(600)

        if point == "mid_bytes":  # the third chunk of the new file never comes
            checkpoint.WRITE_CHUNK = 4096
            real_write, calls = os.write, []

            def write(fd, data):
                calls.append(fd)
                if len(calls) == 3:
                    stall()
                return real_write(fd, data)

            os.write = write
        else:  # every byte is in the temporary file, which is not renamed yet
            os.fsync = stall
        checkpoint.write_checkpoint(newer, path)
    """
)


@pytest.mark.parametrize("point", ["mid_bytes", "before_rename"])
def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one_readable(tmp_path, point):
    path, marker = tmp_path / "checkpoint.pt", tmp_path / "writing"
    script = tmp_path / "save.py"
    script.write_text(KILL_DURING_SAVE)
    child = subprocess.Popen([sys.executable, str(script), str(path), str(marker), point], stderr=subprocess.PIPE)
    try:
        assert wait_until(marker.exists, timeout_s=120), child.stderr.read().decode() if child.poll() else ""
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
        child.stderr.close()

    (left,) = tmp_path.glob(".checkpoint.pt.*.tmp")  # the kill did land mid-save
    assert Trainer.load(path).config.seed == 1  # the previous checkpoint, whole
    write_checkpoint(Trainer("CartPole-v1", seed=3).state_dict(), path)  # the next save is not hindered
    assert read_checkpoint(path)["config"]["seed"] == 3

    prepare_checkpoint_path(path)  # as every run and save does first
    assert left.exists()  # just written: maybe by a writer on another machine sharing the directory
    stale = time.time() - ABANDONED_AFTER_S
    os.utime(left, (stale, stale))
    prepare_checkpoint_path(path)
    assert not left.exists()  # its writer is not running and it is old: removed


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_save_creates_its_directory_and_writes_a_directory_s_checkpoint_pt(tmp_path):
    trainer = Trainer("CartPole-v1", **SMALL)
    assert await trainer.save(tmp_path / "new" / "x.pt") == tmp_path / "new" / "x.pt"  # was FileNotFoundError
    (tmp_path / "run").mkdir()
    assert await trainer.save(tmp_path / "run") == tmp_path / "run" / "checkpoint.pt"  # was IsADirectoryError
    assert Trainer.load(tmp_path / "run").policy_version == 0
    (tmp_path / "file").write_text("a regular file")
    with pytest.raises(CheckpointError, match=r"checkpoints cannot be written to .*file/x.pt"):
        await trainer.save(tmp_path / "file" / "x.pt")


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_save_to_a_path_ending_in_a_separator_creates_that_directory_s_checkpoint_pt(tmp_path):
    saved = await Trainer("CartPole-v1", **SMALL).save(f"{tmp_path}/new{os.sep}")
    assert saved == tmp_path / "new" / "checkpoint.pt"  # was: a file named new
    assert Trainer.load(tmp_path / "new").policy_version == 0


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_run_refuses_a_checkpoint_path_ending_in_a_separator_before_it_starts(tmp_path):
    trainer = Trainer("CartPole-v1", **SMALL)
    with pytest.raises(CheckpointError, match=r"checkpoint path '.*/new/' names a directory; name a file"):
        await trainer.run(total_steps=256, checkpoint_path=f"{tmp_path}/new/")
    assert trainer.stats.steps_collected == 0 and not (tmp_path / "new").exists()


def test_a_checkpoint_of_an_older_aiorl_loads_with_the_settings_it_trained_with():
    state = Trainer("CartPole-v1", PPO(), normalize_rewards=False, **SMALL).state_dict()
    del state["config"]["normalize_rewards"]  # aiorl 0.1 had no such option: it never scaled rewards
    old_ppo = PPO()
    object.__delattr__(old_ppo, "target_kl")  # unpickled from aiorl 0.1, whose PPO had no target_kl
    state["algo"] = old_ppo
    loaded = Trainer.load(state)
    assert loaded.algo.target_kl is None  # was: AttributeError at the first update (a LearnerError)
    assert loaded.config.normalize_rewards is False and loaded.reward_normalizer is None  # was: automatic, on


@pytest.mark.parametrize(
    "override", [{"env": "Acrobot-v1"}, {"algo": PPO()}, {"recurrent": "gru"}, {"normalize_observations": False}]
)
def test_load_refuses_overrides_of_what_the_checkpoint_fixes(tmp_path, override):
    write_checkpoint(Trainer("CartPole-v1", **SMALL).state_dict(), tmp_path / "c.pt")
    name = next(iter(override))
    with pytest.raises(ConfigError, match=rf"{name} cannot be overridden when loading a checkpoint"):
        Trainer.load(tmp_path / "c.pt", **override)  # a TypeError, or (recurrent) a config that lied


def test_two_writers_to_one_path_never_collide_and_leave_one_whole_state(tmp_path):
    # Both wrote through one temporary name: one renamed it away under the other
    # (FileNotFoundError), or the file got a mix of both states.
    path = tmp_path / "checkpoint.pt"
    states = [{"weights": torch.full((250_000,), float(value))} for value in (1, 2)]

    def write_often(state: dict) -> None:
        for _ in range(15):
            write_checkpoint(state, path)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(write_often, state) for state in states]:
            done.result()
    weights = torch.load(path, weights_only=False)["weights"]
    assert weights.unique().numel() == 1
    assert not list(tmp_path.glob(".checkpoint.pt.*"))  # no temporary file left


def test_reading_a_missing_truncated_or_foreign_file_names_it(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nothing.pt")
    whole = tmp_path / "whole.pt"
    write_checkpoint(Trainer("CartPole-v1").state_dict(), whole)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=r"truncated\.pt' is truncated or corrupt \(no zip index\)"):
        Trainer.load(truncated)
    flipped = tmp_path / "flipped.pt"  # bytes changed inside the weights: torch.load would not notice
    data = bytearray(whole.read_bytes())
    start = data.index(b"archive/data/0") + 200  # past that entry's header, into its bytes
    data[start : start + 64] = bytes(b ^ 0xFF for b in data[start : start + 64])
    flipped.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"flipped\.pt' is corrupt: .* fails its checksum"):
        Policy.load(flipped)
    foreign = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="is not an aiorl checkpoint"):
        read_checkpoint(foreign)


def test_a_state_in_memory_that_is_no_whole_checkpoint_is_refused_like_a_file():
    state = Trainer("CartPole-v1").state_dict()
    del state["learner"]
    with pytest.raises(CheckpointError, match="the state is not an aiorl checkpoint"):
        Trainer.load({})  # was: KeyError 'env'
    with pytest.raises(CheckpointError, match="checkpoint the state lacks learner"):
        Trainer("CartPole-v1").load_state_dict(state)  # was: KeyError 'learner'


def test_a_checkpoint_missing_part_of_its_contents_names_what_is_missing(tmp_path):
    state = Trainer("CartPole-v1").state_dict()
    del state["learner"], state["stats"]
    cut = tmp_path / "cut.pt"
    write_checkpoint(state, cut)
    with pytest.raises(CheckpointError, match=r"cut\.pt' lacks learner, stats: it is not a complete aiorl checkpoint"):
        Trainer.load(cut)  # was: KeyError: 'learner'
    with pytest.raises(CheckpointError, match="lacks learner, stats"):
        Policy.load(cut)


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_failed_run_leaves_a_checkpoint_of_its_last_update(tmp_path):
    path = tmp_path / "checkpoint.pt"
    killed_at_step_300 = functools.partial(FaultyEnv, "CartPole-v1", "kill", 300)
    trainer = Trainer(killed_at_step_300, PPO(), **{**SMALL, "max_restarts": 0})
    versions = []

    with pytest.raises(WorkerRestartError):
        await trainer.run(
            total_steps=100_000, on_update=lambda r: versions.append(r.policy_version), checkpoint_path=path
        )

    loaded = Trainer.load(path)
    # the last reported update, or the one the learner finished while the run was being cancelled
    assert loaded.policy_version in (versions[-1], versions[-1] + 1) and versions[-1] >= 1
    assert loaded.stats.steps_collected == loaded.stats.steps_trained + loaded.stats.steps_discarded
    assert loaded.unfinished_run == RunPlan(total_steps=100_000, target_return=None, trained_at_start=0)


class CountingPPO:
    """PPO whose learner counts how often its state is read (each read is copied for a checkpoint)."""

    def __init__(self) -> None:
        self.state_reads = 0

    def make_learner(self, policy, dist, device):
        learner = PPO(update_epochs=1, num_minibatches=1).make_learner(policy, dist, device)
        state_dict = learner.state_dict

        def counted_state_dict():
            self.state_reads += 1
            return state_dict()

        learner.state_dict = counted_state_dict
        return learner


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_the_learner_state_is_copied_only_when_a_checkpoint_is_written(tmp_path):
    algo = CountingPPO()
    trainer = Trainer("CartPole-v1", algo, **SMALL)

    result = await trainer.run(total_steps=1024, checkpoint_path=tmp_path / "c.pt", checkpoint_interval_s=3600)

    assert result.updates >= 5
    assert algo.state_reads == 2  # after the first update and at the end; no periodic write was due
    assert read_checkpoint(tmp_path / "c.pt")["policy_version"] == result.policy_version


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_the_checkpointer_snapshots_after_the_first_update_then_only_when_a_write_is_due(tmp_path):
    now = [0.0]
    marks = iter(range(100))
    captured: list[object] = []

    def capture(mark):
        captured.append(mark)
        return {"policy_version": mark, "run": {}}

    checkpointer = Checkpointer(
        tmp_path / "c.pt", capture, mark=lambda: next(marks), interval_s=10, clock=lambda: now[0]
    )
    checkpointer.after_update()
    assert captured == [0]  # the first update is saved at once: a run killed early can be resumed
    while checkpointer.saved == 0:  # written by the writer thread
        await asyncio.sleep(0.01)
    for _ in range(4):
        checkpointer.after_update()
    assert captured == [0]  # four updates, no write due: nothing copied
    now[0] = 10.0
    checkpointer.after_update()
    assert captured == [0, 5]
    checkpointer.after_update()
    await checkpointer.finish(finished=True)  # the end of the run writes the state as it is then
    assert captured == [0, 5, 7]  # counters taken anew: steps collected since the last update count (was 6)
    assert torch.load(tmp_path / "c.pt", weights_only=False) == {"policy_version": 7, "run": None}


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_periodic_snapshot_is_copied_in_the_learner_s_thread_before_its_next_update(tmp_path):
    weights = torch.zeros(3)  # the learner's live tensor
    learner_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="learner")
    copied_in: list[str] = []
    real_clone = torch.Tensor.clone

    def recording_clone(tensor, *args, **kwargs):
        copied_in.append(threading.current_thread().name)
        return real_clone(tensor, *args, **kwargs)

    checkpointer = Checkpointer(
        tmp_path / "c.pt", lambda _: {"policy_version": 1, "weights": weights}, interval_s=60, copy_in=learner_thread
    )
    release = threading.Event()
    learner_thread.submit(release.wait)  # the thread is busy: the copy waits in its queue
    with unittest.mock.patch.object(torch.Tensor, "clone", recording_clone):
        checkpointer.after_update()
        next_update = learner_thread.submit(weights.add_, 1.0)  # submitted after the snapshot, as the consumer does
        assert copied_in == []  # the event loop copied nothing
        release.set()
        next_update.result(timeout=10)
    await checkpointer.finish(finished=False)
    learner_thread.shutdown()

    assert copied_in and all(name.startswith("learner") for name in copied_in)
    assert torch.equal(torch.load(tmp_path / "c.pt")["weights"], torch.zeros(3))  # not the next update's


class SlowToPickle:
    """Takes ``seconds`` to pickle: a checkpoint write that is still going on when the run is cancelled."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __reduce__(self):
        time.sleep(self.seconds)
        return (SlowToPickle, (self.seconds,))


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_run_cancelled_during_its_final_write_ends_after_the_write(tmp_path):
    checkpointer = Checkpointer(
        tmp_path / "c.pt", lambda _: {"policy_version": 1, "slow": SlowToPickle(1.0), "run": {}}, interval_s=60
    )
    checkpointer.after_update()  # marks an update: the end of the run writes
    ending = asyncio.create_task(checkpointer.finish(finished=True))
    await asyncio.sleep(0.2)  # the write of the first update has started
    ending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ending
    assert (tmp_path / "c.pt").exists()  # was: still being written by the thread after the run had ended
    for _ in range(100):  # the idle writer thread ends once it sees the executor's shutdown
        if not [t for t in threading.enumerate() if t.name.startswith("aiorl-checkpoint")]:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the checkpoint writer thread is still alive")


def test_a_checkpoint_of_another_env_is_refused_before_anything_is_overwritten():
    state = Trainer("CartPole-v1", seed=1).state_dict()  # 4 observations, 2 actions
    other = Trainer("Acrobot-v1", seed=2)  # 6 observations, 3 actions: some layers have the same shape
    before = flat_weights(other.policy).copy()
    with pytest.raises(CheckpointError, match=r"does not fit this trainer's .*instead of"):
        other.load_state_dict(state)
    np.testing.assert_array_equal(flat_weights(other.policy), before)
    assert other.policy_version == 0


@pytest.mark.asyncio
async def test_a_checkpoint_path_that_cannot_be_written_is_refused_before_the_run_starts(tmp_path):
    (tmp_path / "file").write_text("a regular file, not a directory (refused to root too)")
    trainer = Trainer("CartPole-v1", **SMALL)
    target = tmp_path / "file" / "c.pt"
    with pytest.raises(
        CheckpointError, match=f"checkpoints cannot be written to '{target}': '{target.parent}' is not a directory"
    ):
        await trainer.run(total_steps=256, checkpoint_path=target)
    assert trainer.stats.steps_collected == 0


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_failed_first_checkpoint_write_ends_the_run_naming_the_path(tmp_path):
    now = [0.0]
    target = tmp_path / "gone" / "c.pt"
    target.parent.mkdir()
    checkpointer = Checkpointer(target, lambda _: {"policy_version": 1}, interval_s=10, clock=lambda: now[0])
    target.parent.rmdir()  # the directory goes away after the run started: the write fails, even for root
    checkpointer.after_update()  # the first update's write; it fails in the writer thread
    with pytest.raises(CheckpointError, match=f"checkpoint '{target}' could not be written \\(FileNotFoundError"):
        for _ in range(1000):  # the next update after the failed write raises
            await asyncio.sleep(0.01)
            checkpointer.after_update()
    await checkpointer.finish(finished=False)  # no second attempt at a path known to fail
    assert checkpointer.saved == 0 and checkpointer.snapshots == 1
