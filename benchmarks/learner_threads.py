"""What extra torch threads give a learner where the trainer runs it: in a thread, beside the main thread.

Why this exists
---------------
aiorl's learner runs in a thread of the user's process (the event loop keeps the main
thread). torch's CPU ops parallelise with OpenMP (libgomp in the pip wheels), and every
thread that runs a parallel region keeps its own pool of OpenMP threads. libgomp counts
the threads of all pools, and once there are more than CPUs it stops spin-waiting between
parallel regions (a 100-iteration spin, then a futex sleep): each op's threads are then
woken by the kernel. The main thread gets such a pool as soon as it runs one parallel op
with more than one torch thread, and building a policy does that (``orthogonal_``
initialisation runs a QR factorisation through MKL), so in a trainer the learner thread's
extra threads normally start and stop through the kernel for every op.

This script measures it: for each net and batch, one learner update at a time with 1 and
with ``--threads`` torch threads in turn (same process, same learner, interleaved), in a
fresh process per condition: ``main thread has a pool: yes`` builds a policy on the main thread first
(as a ``Trainer`` does, with the main thread's default thread count); ``no`` runs no torch
op on the main thread at all. The learner, its batch and every update live in one
learner thread, as in a trainer. The batch and learner come from ``learner.py``: PPO's
default config (4 epochs x 2 minibatches), random CartPole-like data for the MLP, 84x84x4
frames for the CNN.

The ``speedup at N`` columns are (update time with 1 thread) / (update time with N threads):
above 1 the extra threads pay. Run it on an idle machine; on the 16-core machine pass
``--threads 2 8 14``.

Usage::

    python benchmarks/learner_threads.py                           # MLP, 1,024-14,336 samples, 2 threads
    python benchmarks/learner_threads.py --nets mlp cnn --mlp-batches 2048 14336 --cnn-batches 128
    python benchmarks/learner_threads.py --hidden 256              # a wider MLP (aiorl.ActorCritic hidden sizes)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

STEPS = 32
"""Rollout length of every batch: a batch of ``B`` samples is ``[32, B / 32]``."""


def child(args: argparse.Namespace) -> None:
    """One condition, in this (fresh) process: print one JSON line per (net, batch)."""
    import torch
    from learner import NETS, make_data

    import aiorl
    from aiorl.distributions import ActionDistribution

    algo = aiorl.PPO(compile=False)
    if args.main_pool:  # what a Trainer does on the main thread: build a policy (orthogonal init)
        aiorl.ActorCritic((4,), ActionDistribution.for_space(NETS["mlp"].action_space))
    learner_thread = ThreadPoolExecutor(max_workers=1)

    def setup(net_name: str, samples: int) -> tuple[Any, Any]:
        net = NETS[net_name]
        dist = ActionDistribution.for_space(net.action_space)
        torch.manual_seed(0)
        if net_name == "mlp":
            policy = aiorl.ActorCritic(net.obs_shape, dist, hidden_sizes=(args.hidden, args.hidden))
        else:
            policy = net.make_policy(dist)
        data = make_data(net, STEPS, samples // STEPS, algo.gamma)
        return data, algo.make_learner(policy, dist, "cpu")

    def timed_update(learner: Any, data: Any, threads: int) -> float:
        torch.set_num_threads(threads)  # this thread's count (OpenMP keeps it per thread)
        start = time.perf_counter()
        learner.update(data.batch, progress=0.0)
        return time.perf_counter() - start

    for net_name, samples in [("mlp", b) for b in args.mlp_batches] + [("cnn", b) for b in args.cnn_batches]:
        data, learner = learner_thread.submit(setup, net_name, samples).result()
        counts = [1, *args.threads]
        for threads in counts:  # warm-up, every count once
            learner_thread.submit(timed_update, learner, data, threads).result()
        times: dict[int, list[float]] = {n: [] for n in counts}
        for _ in range(args.repeats):
            for threads in counts:
                times[threads].append(learner_thread.submit(timed_update, learner, data, threads).result())
        medians = {n: statistics.median(t) for n, t in times.items()}
        print(json.dumps({"net": net_name, "samples": samples, "main_pool": args.main_pool, "medians": medians}))
    learner_thread.shutdown()


def run_condition(argv: Sequence[str], main_pool: bool) -> list[dict[str, Any]]:
    """Run :func:`child` on the command line ``argv`` in a fresh process; its rows (its errors go to stderr)."""
    command = [sys.executable, os.path.abspath(__file__), "--child", *argv]
    if main_pool:
        command.append("--main-pool")
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(__file__)).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def render(rows: Sequence[dict[str, Any]], threads: Sequence[int], hidden: int, minibatches: int) -> str:
    """The markdown table: one line per (net, batch, condition)."""
    head = ["net", "batch", "minibatch rows", "main thread has a pool", "1 thread ms"]
    for n in threads:
        head += [f"{n} threads ms", f"speedup at {n}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in sorted(rows, key=lambda r: (r["net"], r["samples"], not r["main_pool"])):
        medians = {int(k): v for k, v in row["medians"].items()}
        net = f"mlp {hidden}x{hidden}" if row["net"] == "mlp" else row["net"]
        cells = [net, f"{row['samples']:,}", f"{row['samples'] // minibatches:,}", "yes" if row["main_pool"] else "no"]
        cells.append(f"{medians[1] * 1e3:.1f}")
        for n in threads:
            cells += [f"{medians[n] * 1e3:.1f}", f"{medians[1] / medians[n]:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--nets", nargs="+", choices=("mlp", "cnn"), default=["mlp"])
    parser.add_argument("--mlp-batches", nargs="*", type=int, default=[1024, 2048, 4096, 7168, 14336])
    parser.add_argument("--cnn-batches", nargs="*", type=int, default=[128])
    parser.add_argument("--hidden", type=int, default=64, help="hidden units of the MLP's two layers (default 64)")
    parser.add_argument("--threads", nargs="+", type=int, default=[2], help="thread counts to compare with 1")
    parser.add_argument("--repeats", type=int, default=7, help="timed updates per thread count (default 7)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--main-pool", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if "mlp" not in args.nets:
        args.mlp_batches = []
    if "cnn" not in args.nets:
        args.cnn_batches = []
    for batch in [*args.mlp_batches, *args.cnn_batches]:
        if batch < 2 * STEPS or batch % (2 * STEPS):
            parser.error(f"batch {batch} must be a multiple of {2 * STEPS} (rollouts of {STEPS} steps, 2 minibatches)")
    if any(n < 2 for n in args.threads) or args.repeats < 1:
        parser.error("--threads must be >= 2 and --repeats >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Measure both conditions and print the table."""
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    print(f"# learner threads: 1 against {args.threads}, in a learner thread; {os.cpu_count()} CPUs", flush=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    rows = run_condition(argv, main_pool=True) + run_condition(argv, main_pool=False)
    import aiorl

    print(render(rows, args.threads, args.hidden, aiorl.PPO().num_minibatches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
