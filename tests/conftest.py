"""Shared fixtures: every test runs on both event loops and must leave nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import re
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import uvloop

from aiorl.distributions import ActionDistribution
from aiorl.envs import EnvFactory, EnvSpaces, ObservationEncoder
from aiorl.models import ActorCritic
from aiorl.recurrent import state_size
from aiorl.rollout import RolloutLayout
from aiorl.shm import RolloutSlots
from aiorl.worker.async_sampler import AsyncEnvSampler
from aiorl.worker.spec import AsyncActing, WorkerSpec, WorkerTemplate

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # Started in the background by a non-interactive shell (`cmd &`, nohup), this process and
    # every child it starts would ignore Ctrl-C; the tests that press Ctrl-C in a child need
    # the default. A handled signal is reset to the default in exec'd children.
    signal.signal(signal.SIGINT, signal.default_int_handler)

RUN_TAG = f"AIORL_TEST_RUN={os.getpid()}".encode()
"""Every process the tests start inherits this environment variable (set here, before any is started),
so the leak check finds them all, also those whose parent died and left them to init."""
os.environ["AIORL_TEST_RUN"] = str(os.getpid())

LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable]:
    """Run every async test on asyncio's default loop and on uvloop (unless it picks one)."""
    return LOOP_FACTORIES


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process, read from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), fields[0])
    return table


def descendants(root: int) -> set[int]:
    """Live (non-zombie) processes below ``root``."""
    table = process_table()
    found: set[int] = set()
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _state) in table.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                frontier.append(pid)
    return {pid for pid in found if table[pid][1] != "Z"}


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (an orphan's parent may be slow to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def tagged() -> set[int]:
    """Live processes, other than this one, started by this test run however deep (see :data:`RUN_TAG`)."""
    found = set()
    for pid, (_ppid, state) in process_table().items():
        if pid == os.getpid() or state == "Z":
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if RUN_TAG in f.read().split(b"\0"):
                    found.add(pid)
        except OSError:  # gone, or another user's
            continue
    return found


def multiprocessing_services(candidates: set[int]) -> set[int]:
    """Those of ``candidates`` that are per-interpreter services exiting with it: the forkserver,
    the resource tracker, and torch inductor's pool of compile workers (started by the first
    ``torch.compile`` on CUDA) with its children."""
    pids = {
        multiprocessing.forkserver._forkserver._forkserver_pid,
        multiprocessing.resource_tracker._resource_tracker._pid,
    }
    services = {pid for pid in pids if pid is not None}
    for pid in candidates:
        if "torch._inductor.compile_worker" in _cmdline(pid) or "torch/_inductor/compile_worker" in _cmdline(pid):
            services |= {pid} | descendants(pid)
    return services & candidates


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def leftover_workers() -> set[int]:
    """Processes this test run started (below this process, or orphaned and tagged with
    :data:`RUN_TAG`) that are not multiprocessing services."""
    candidates = descendants(os.getpid()) | tagged()
    return candidates - multiprocessing_services(candidates)


def open_fds() -> list[str]:
    """What this process's file descriptors point to, sorted."""
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            fds.append(os.readlink(f"/proc/self/fd/{fd}"))
    return sorted(fds)


def our_segments(pid: int | None = None) -> list[str]:
    """``aiorl_`` shared-memory segments created by process ``pid`` (default: this one)."""
    prefix = f"aiorl_{pid or os.getpid()}_"
    return sorted(name for name in os.listdir("/dev/shm") if name.startswith(prefix))


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout_s`` passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """After each test: no worker process, no shared-memory segment and no worker stack file of ours remains."""
    before = leftover_workers()
    yield
    assert wait_until(lambda: not (leftover_workers() - before), 10.0), (
        f"processes left behind: {sorted(leftover_workers() - before)}"
    )
    assert our_segments() == [], f"shared memory left behind: {our_segments()}"
    assert wait_until(lambda: not our_stack_files(), 10.0), f"worker stack files left behind: {our_stack_files()}"


def our_stack_files() -> list[str]:
    """The files this process's trainers named for their workers' stack dumps that still exist."""
    return glob.glob(os.path.join(tempfile.gettempdir(), f"aiorl_{os.getpid()}_w*.stack"))


SMALL = {"num_workers": 2, "envs_per_worker": 4, "rollout_length": 16, "log_interval_s": 60.0}
"""Trainer options for short behavioural tests."""


def documented_metrics_keys() -> set[str]:
    """The keys of a ``metrics.jsonl`` line, as the schema table in ``aiorl/metrics_log.py`` documents them."""
    import aiorl.metrics_log

    table = (aiorl.metrics_log.__doc__ or "").split("=====================  ")[2]  # between header and end rules
    return set(re.findall(r"^``(\w+)``", table, flags=re.MULTILINE))


def sampler_template(
    env: Any,
    *,
    envs: int,
    steps: int,
    num_slots: int = 1,
    env_kwargs: dict[str, Any] | None = None,
    policy_for: Callable[[tuple[int, ...], ActionDistribution], torch.nn.Module] | None = None,
    **options: Any,
) -> tuple[WorkerTemplate, torch.nn.Module]:
    """What a worker's sampler is built from, for tests that run samplers in this process.

    The env is probed as the trainer does; the layout has its action masks and the policy's
    recurrent state; the policy (``policy_for(obs_shape, dist)``, default the MLP) is seeded.
    ``options`` are further ``WorkerTemplate`` fields (``reward_gamma``).
    """
    factory = EnvFactory.from_user(env, env_kwargs)
    spaces = EnvSpaces.probe(factory)
    encoder = ObservationEncoder.for_space(spaces.observation_space)
    dist = ActionDistribution.for_space(spaces.action_space)
    torch.manual_seed(0)
    policy = (policy_for or ActorCritic)(encoder.shape, dist)
    layout = RolloutLayout(
        steps,
        envs,
        encoder.shape,
        dist.action_shape,
        dist.action_dtype.str,
        state_size=state_size(policy),
        mask_width=0 if spaces.action_masks is None else spaces.action_masks.width,
        obs_dtype=encoder.storage_dtype,
        frame_stack=spaces.frame_stack,
    )
    template = WorkerTemplate(
        env_factory=factory,
        seed=0,
        layout=layout,
        num_slots=num_slots,
        policy=policy,
        dist=dist,
        obs_encoder=encoder,
        heartbeat_interval_s=1.0,
        num_workers=1,
        env_error_limit=3,
        action_space=spaces.action_space,
        **options,
    )
    return template, policy


async def collect_lanes(
    spec: WorkerSpec, policy: torch.nn.Module, acting: AsyncActing, slots: RolloutSlots, rollouts: int
) -> list[dict[str, Any]]:
    """Copies of the first ``rollouts`` rollouts an async sampler's lanes fill, cycling through ``slots``.

    The sampler runs on this loop with every slot granted (each re-granted once copied);
    it is closed, and ``slots`` too, whatever happens.
    """
    sampler = AsyncEnvSampler(spec, policy, acting, lambda: 0)
    granted: asyncio.Queue[int] = asyncio.Queue()
    for slot in range(slots.num_slots):
        granted.put_nowait(slot)
    done: asyncio.Queue[int] = asyncio.Queue()
    await sampler.start()
    task = asyncio.create_task(sampler.run(slots, granted, lambda slot, *_: done.put_nowait(slot), lambda _: None))
    try:
        copies = []
        for _ in range(rollouts):
            slot = await asyncio.wait_for(done.get(), 30)
            copies.append({name: array.copy() for name, array in slots[slot].items()})
            granted.put_nowait(slot)
        return copies
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sampler.aclose()
        slots.close()
