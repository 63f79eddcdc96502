"""No worker process and no shared-memory segment survives any exit path.

The autouse ``no_leaks`` fixture (conftest.py) checks every test here after it ends.
"""

from __future__ import annotations

import asyncio
import functools
import glob
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from multiprocessing.process import BaseProcess

import pytest
from conftest import SMALL, alive, descendants, leftover_workers, open_fds, our_segments, wait_until

import aiorl
from aiorl import PPO, Trainer
from aiorl.testing import ChildProcessEnv, env_child_pids

QUICK_PPO = PPO(update_epochs=1, num_minibatches=1)


@pytest.mark.asyncio
async def test_run_outside_async_with_starts_and_stops_workers():
    trainer = Trainer("CartPole-v1", QUICK_PPO, **SMALL)
    result = await trainer.run(total_steps=500)
    assert result.env_steps >= 500
    assert trainer.worker_pids == {}


@pytest.mark.asyncio
async def test_exception_inside_async_with_tears_down():
    with pytest.raises(KeyError):
        async with Trainer("CartPole-v1", QUICK_PPO, **SMALL) as trainer:
            assert len(trainer.worker_pids) == 2
            await trainer.run(total_steps=300)
            raise KeyError("user code failed")


@pytest.mark.asyncio
async def test_cancelling_the_task_running_run_tears_down():
    trainer = Trainer("CartPole-v1", QUICK_PPO, **SMALL)
    started = asyncio.Event()
    task = asyncio.create_task(trainer.run(total_steps=10**9, on_update=lambda _: started.set()))
    await asyncio.wait_for(started.wait(), timeout=60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert trainer.worker_pids == {}
    stats = trainer.stats
    assert stats.steps_pending == 0
    assert stats.steps_collected == stats.steps_trained + stats.steps_discarded


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_closed_trainer_still_referenced_holds_no_file_descriptor():
    # Starting workers with multiprocessing's pickler had torch move the policy template's
    # tensors into shared memory, each held open here for the trainer's life (15 per trainer).
    kept = []
    counts = []
    for seed in range(3):
        trainer = Trainer("CartPole-v1", PPO(update_epochs=1, num_minibatches=1), **SMALL, seed=seed)
        await trainer.run(total_steps=256)
        kept.append(trainer)
        counts.append(len(open_fds()))
    assert not [target for target in open_fds() if target.startswith("/dev/shm/torch_")]
    assert counts[2] <= counts[1], counts  # was 15 more per trainer


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_closing_the_trainer_ends_the_processes_its_workers_envs_started(tmp_path):
    env = functools.partial(ChildProcessEnv, "CartPole-v1", str(tmp_path))  # its close() leaves them running
    async with Trainer(env, QUICK_PPO, **SMALL) as trainer:
        await trainer.run(total_steps=300)
        children = env_child_pids(str(tmp_path))
        assert len(children) == 8 and all(alive(pid) for pid in children.values())
    # Orphaned once their worker exits, so the no_leaks fixture cannot see them:
    assert wait_until(lambda: not any(alive(pid) for pid in children.values())), "env children outlived the trainer"


@pytest.mark.asyncio(loop_factories=["uvloop"])
@pytest.mark.parametrize("delay_s", [0.0, 0.005, 0.02, 0.08, 0.3])
async def test_cancelling_while_workers_start_leaves_no_process(delay_s):
    async def enter() -> None:
        async with Trainer("CartPole-v1", QUICK_PPO, **SMALL):
            await asyncio.sleep(3600)

    task = asyncio.create_task(enter())
    await asyncio.sleep(delay_s)  # somewhere in starting the forkserver, the processes, or waiting for hello
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # the autouse no_leaks fixture then checks for processes and shared memory


SCRIPT = textwrap.dedent(
    """
    import functools
    import os
    import sys
    import time
    import gymnasium as gym
    import aiorl
    from aiorl.testing import ChildProcessEnv, worker_identity

    def announce(report):
        if report.policy_version == 2:
            print("training", flush=True)

    class Worker0HangsOnFlag(gym.Wrapper):  # CartPole whose steps in worker 0 block once the file exists

        def __init__(self, flag):
            super().__init__(gym.make("CartPole-v1"))
            self.flag = flag

        def step(self, action):
            if worker_identity()[0] == 0 and os.path.exists(self.flag):
                open(self.flag + ".hung", "w").close()
                time.sleep(3600)
            return self.env.step(action)

    if __name__ == "__main__":
        env = "CartPole-v1"
        if sys.argv[2:]:
            env = functools.partial(ChildProcessEnv, functools.partial(Worker0HangsOnFlag, sys.argv[2]), sys.argv[1])
        elif sys.argv[1:]:
            env = functools.partial(ChildProcessEnv, "CartPole-v1", sys.argv[1])
        trainer = aiorl.Trainer(env, num_workers=2, envs_per_worker=4, rollout_length=16)
        aiorl.run(trainer, total_steps=10**9, on_update=announce)
    """
)


def start_script(tmp_path, *args: str, new_session: bool = False) -> subprocess.Popen:
    script = tmp_path / "train_forever.py"
    script.write_text(SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )
    line = process.stdout.readline()
    assert line.strip() == "training", process.stderr.read() if process.poll() is not None else line
    return process


def test_ctrl_c_in_a_script_stops_workers_and_frees_memory(tmp_path):
    process = start_script(tmp_path)
    children = descendants(process.pid)
    assert len(children) >= 2
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert "KeyboardInterrupt" in stderr
    assert wait_until(lambda: not (descendants(process.pid) | (children & set(descendants(1)))), 10)
    assert our_segments(process.pid) == []


def test_parent_killed_workers_and_their_envs_children_exit_on_their_own_even_in_a_hung_env_step(tmp_path):
    pid_dir, flag = tmp_path / "env_children", tmp_path / "hang"
    pid_dir.mkdir()
    process = start_script(tmp_path, str(pid_dir), str(flag))  # each env starts a child process, left running
    children = descendants(process.pid)
    assert len(env_child_pids(str(pid_dir))) == 8 and set(env_child_pids(str(pid_dir)).values()) <= children
    flag.touch()  # worker 0's next env step blocks for good; worker 1 goes on
    assert wait_until(lambda: os.path.exists(f"{flag}.hung"), 30)
    process.kill()
    process.wait(timeout=10)

    def all_gone() -> bool:
        return not any(alive(pid) for pid in children)

    # worker 1 stops in order; worker 0's loop is blocked in the step: its thread watching the trainer ends it
    assert wait_until(all_gone, 20), f"orphans: {[pid for pid in children if alive(pid)]}"
    assert wait_until(lambda: our_segments(process.pid) == [], 10), our_segments(process.pid)
    assert glob.glob(f"{tempfile.gettempdir()}/aiorl_{process.pid}_*") == [], "stack files left behind"
    process.stdout.close()
    process.stderr.close()


def test_the_leak_check_sees_a_process_whose_parent_died():
    shell = subprocess.run(
        ["sh", "-c", "sleep 60 > /dev/null 2>&1 & echo $!"], capture_output=True, text=True, check=True
    )
    orphan = int(shell.stdout)  # its shell has exited: it belongs to init (or a subreaper) now
    try:
        assert orphan not in descendants(os.getpid())
        assert orphan in leftover_workers()
    finally:
        os.kill(orphan, signal.SIGKILL)
    assert wait_until(lambda: orphan not in leftover_workers(), 10)


def test_shared_memory_is_freed_when_the_trainers_whole_process_group_is_killed(tmp_path):
    process = start_script(tmp_path, new_session=True)  # the script leads its own process group
    children = descendants(process.pid)  # workers (in sessions of their own), forkserver, resource tracker
    assert our_segments(process.pid)
    os.killpg(process.pid, signal.SIGKILL)  # `kill -9 -PGID`: the trainer and its resource tracker at once
    process.wait(timeout=10)
    assert wait_until(lambda: not [pid for pid in children if alive(pid)], 20), "orphans left"
    assert wait_until(lambda: our_segments(process.pid) == [], 10), our_segments(process.pid)
    process.stdout.close()
    process.stderr.close()


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_spawn_start_method_trains_replaces_and_closes():
    async with Trainer("CartPole-v1", QUICK_PPO, start_method="spawn", restart_backoff_s=0.05, **SMALL) as trainer:
        await trainer.run(total_steps=500)
        os.kill(trainer.worker_pids[0], signal.SIGKILL)
        while trainer.stats.worker_restarts == 0:
            await trainer.run(total_steps=200)
    assert trainer.worker_pids == {}


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_killing_a_worker_never_waits_for_it_on_the_event_loop(monkeypatch):
    loop_thread = threading.get_ident()
    waits_on_loop: list[float | None] = []
    real_join = BaseProcess.join

    def recording_join(process: BaseProcess, timeout: float | None = None) -> None:
        if threading.get_ident() == loop_thread and timeout != 0:  # join(0) only polls
            waits_on_loop.append(timeout)
        real_join(process, timeout)

    monkeypatch.setattr(BaseProcess, "join", recording_join)
    async with Trainer("CartPole-v1", QUICK_PPO, **SMALL) as trainer:
        await trainer.run(total_steps=300)
        victim = trainer._session.pool.alive()[0]
        victim.link.kill_now()
        async with asyncio.timeout(10):  # reaped by the loop once its sentinel fires
            await victim.exited.wait()
        assert victim.link.exitcode == -signal.SIGKILL
        async with asyncio.timeout(20):  # a replacement takes the seat
            while trainer.worker_pids.get(victim.worker_id) in (None, victim.pid):
                await asyncio.sleep(0.05)
        await trainer.run(total_steps=300)
    assert waits_on_loop == [], "process.join with a timeout ran on the event loop's thread"


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_second_concurrent_run_outside_async_with_fails_at_once_and_starts_nothing():
    trainer = Trainer("CartPole-v1", QUICK_PPO, **SMALL)
    first, second = await asyncio.gather(
        trainer.run(total_steps=500), trainer.run(total_steps=500), return_exceptions=True
    )
    assert isinstance(first, aiorl.TrainResult) and first.env_steps >= 500
    assert isinstance(second, RuntimeError) and "already started" in str(second)
    stats = trainer.stats
    assert stats.steps_collected == stats.steps_trained + stats.steps_discarded  # one pool's steps, all counted
    assert trainer.worker_pids == {}
