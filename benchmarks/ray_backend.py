"""Sampling throughput with workers as Ray actors against local worker processes, in one run.

What is measured
----------------
Env steps per second of *sampling only* (``Trainer.sample``: each rollout is freed
as soon as it arrives; nothing is learned) on ``CartPole-v1`` with 2 workers x 32
envs and ``rollout_length=32`` (1,024 env steps, ~9 ms of work at the local backend's
~225k steps/s on 2 cores, per rollout call), for the same trainer settings on two backends:

- ``local``: worker processes on this machine, rollouts in shared memory;
- ``ray``: async Ray actors on a local Ray instance (``ray.init(num_cpus=2)``), one
  ``rollout`` call per rollout, arrays back through the object store.

Both trainers are started first and stay up; after a warm-up, ``--repeats`` rounds
time one window of ``--seconds`` per backend in turn (round-robin, so drifting
background load hits both alike); medians are reported. A window during which
other processes took more than 0.2 cores is timed again (twice at most). Before each window the
rollouts the idle workers already filled are taken untimed, as in ``throughput.py``.

Per-rollout overhead of Ray: the extra wall time per rollout,
``workers * steps_per_rollout * (1 / ray_rate - 1 / local_rate)`` (a worker's
rollout period on Ray minus on local processes), and the round trip of an empty
actor call (the actor's heartbeat method, awaited one at a time).

Ray listens on every interface and probes an external address to find its own, so
the benchmark re-runs itself in a loopback-only network namespace (``unshare
--net``; root or user namespaces), as the tests do. Other processes' CPU use
during each window is reported (``other_load.py``).

Run it (about 40 s on 2 cores)::

    python benchmarks/ray_backend.py
    python benchmarks/ray_backend.py --seconds 5 --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from other_load import OtherLoadMeter

import aiorl
from aiorl.backends import LocalBackend, RayBackend

ENV_ID = "CartPole-v1"
OPTIONS = {"num_workers": 2, "envs_per_worker": 32, "rollout_length": 32, "seed": 0, "log_interval_s": 600.0}
NAMESPACE_VARIABLE = "AIORL_BENCH_NETNS"
SETTLE_S = 0.2
OTHER_LOAD_WARN = 0.2
"""Other processes' CPU use (cores) during a window above which it is timed again."""
BUSY_RETRIES = 2
PINGS = 200


def rerun_in_loopback_namespace() -> int:
    """Run this script again in a fresh network namespace with only loopback; return its exit code."""
    for unshare in (["unshare", "--net"], ["unshare", "--user", "--map-root-user", "--net"]):
        probe = subprocess.run([*unshare, "--", "ip", "link", "set", "lo", "up"], capture_output=True)
        if probe.returncode == 0:
            break
    else:
        print("cannot make a loopback-only network namespace (needs unshare, ip, and root or user namespaces)")
        return 2
    workdir = tempfile.mkdtemp(prefix="aiorl-ray-")
    env = {**os.environ, NAMESPACE_VARIABLE: "1", "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": workdir}
    script = 'ip link set lo up && exec "$@"'
    try:
        command = [*unshare, "--", "sh", "-c", script, "sh", sys.executable, *sys.argv]
        return subprocess.run(command, env=env).returncode
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def window(trainer: aiorl.Trainer, seconds: float, rate: float) -> float:
    """Steps/s over about ``seconds``, after taking the rollouts idle workers filled (untimed)."""
    cfg = trainer.config
    await trainer.sample(cfg.num_workers * cfg.slots_per_worker * cfg.envs_per_worker * cfg.rollout_length)
    await asyncio.sleep(SETTLE_S)
    return await trainer.sample(max(1, int(rate * seconds)))


async def ping_round_trip_s(trainer: aiorl.Trainer) -> float:
    """Median round trip of an empty call to one worker actor (its heartbeat method)."""
    link = trainer._session.pool.seats[0].handle.link
    times = []
    for _ in range(PINGS):
        started = time.perf_counter()
        await link.actor.heartbeat.remote()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def measure(seconds: float, repeats: int) -> None:
    ray_backend = RayBackend(init_options={"num_cpus": 2, "include_dashboard": False, "log_to_driver": False})
    async with (
        aiorl.Trainer(ENV_ID, backend=LocalBackend(), **OPTIONS) as local,
        aiorl.Trainer(ENV_ID, backend=ray_backend, **OPTIONS) as on_ray,
    ):
        systems = {"local": local, "ray": on_ray}
        rates = {name: await trainer.sample(40_000) for name, trainer in systems.items()}  # warm-up
        windows: dict[str, list[float]] = {name: [] for name in systems}
        other: dict[str, list[float]] = {name: [] for name in systems}
        meter = OtherLoadMeter()
        for round_ in range(1, repeats + 1):
            for name, trainer in systems.items():
                for _attempt in range(1 + BUSY_RETRIES):  # redo a window other processes disturbed
                    before = meter.snapshot()
                    rates[name] = await window(trainer, seconds, rates[name])
                    load = meter.cores(before, meter.snapshot())
                    if load is None or load <= OTHER_LOAD_WARN:
                        break
                    print(f"  other processes took {load:.2f} cores: timing {name} again", file=sys.stderr)
                windows[name].append(rates[name])
                if load is not None:
                    other[name].append(load)
                print(f"round {round_}/{repeats}: {name}: {rates[name]:,.0f} steps/s", file=sys.stderr)
        await asyncio.sleep(SETTLE_S)
        await local.sample(OPTIONS["num_workers"] * 2 * OPTIONS["envs_per_worker"] * OPTIONS["rollout_length"])
        ping_s = await ping_round_trip_s(on_ray)
    report(windows, other, ping_s, seconds, repeats)


def report(windows: dict[str, list[float]], other: dict[str, list[float]], ping_s: float, seconds: float, n: int):
    steps = OPTIONS["envs_per_worker"] * OPTIONS["rollout_length"]
    workers = OPTIONS["num_workers"]
    print(
        f"\n{ENV_ID}, {workers} workers x {OPTIONS['envs_per_worker']} envs, rollout_length "
        f"{OPTIONS['rollout_length']} ({steps} env steps per rollout call); {n} windows of {seconds:g} s each\n"
    )
    print("| backend | steps/s (median) | min - max | median of quiet windows | rollout period per worker |")
    print("|---|---:|---:|---:|---:|")
    median, quiet = {}, {}
    for name, rates in windows.items():
        median[name] = statistics.median(rates)
        calm = [rate for rate, load in zip(rates, other[name], strict=False) if load <= OTHER_LOAD_WARN]
        quiet[name] = statistics.median(calm) if calm else None
        calm_text = f"{quiet[name]:,.0f} ({len(calm)} of {len(rates)})" if calm else "none"
        period_ms = 1000 * workers * steps / median[name]
        spread = f"{min(rates):,.0f} - {max(rates):,.0f}"
        print(f"| {name} | {median[name]:,.0f} | {spread} | {calm_text} | {period_ms:.1f} ms |")
    for label, rates in (("all windows", median), ("quiet windows", quiet)):
        if rates["ray"] and rates["local"]:
            overhead_ms = 1000 * workers * steps * (1 / rates["ray"] - 1 / rates["local"])
            print(
                f"{label}: ray / local throughput {rates['ray'] / rates['local']:.3f}; "
                f"Ray's extra wall time per rollout {overhead_ms:.2f} ms"
            )
    print(f"round trip of an empty actor call: {1000 * ping_s:.2f} ms (median of {PINGS})")
    print(f"quiet: other processes took <= {OTHER_LOAD_WARN} cores during the window (other_load.py)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="wall time of one timed window")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows per backend")
    args = parser.parse_args()
    if os.environ.get(NAMESPACE_VARIABLE) != "1":
        return rerun_in_loopback_namespace()
    asyncio.run(measure(args.seconds, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
