"""How much CPU other processes took during a measurement, so benchmarks can flag or redo it.

Shared by the benchmark scripts.
"""

from __future__ import annotations

import os
import time


class OtherLoadMeter:
    """CPU used by everything but this process tree (Linux ``/proc`` only).

    Other load = machine-wide busy CPU time (``/proc/stat``, steal included) minus the CPU
    time of this process and its descendants (aiorl workers, the forkserver, env processes;
    reaped children included, so workers count even after they exit), divided by the wall
    time: the cores other work took from the benchmark.
    """

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.available = os.path.exists("/proc/stat")

    def snapshot(self) -> tuple[float, float, float] | None:
        """``(wall, machine busy CPU, our tree's CPU)`` in seconds, or ``None`` if unavailable."""
        if not self.available:
            return None
        try:
            return time.monotonic(), self._machine_busy(), self._tree_cpu(os.getpid())
        except (OSError, ValueError, IndexError):
            self.available = False
            return None

    @staticmethod
    def cores(start: tuple[float, float, float] | None, end: tuple[float, float, float] | None) -> float | None:
        """Mean CPU cores used by other processes between two snapshots."""
        if start is None or end is None or end[0] <= start[0]:
            return None
        other = (end[1] - start[1]) - (end[2] - start[2])
        return max(0.0, other / (end[0] - start[0]))

    def _machine_busy(self) -> float:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        return (user + nice + system + irq + softirq + steal) / self.tick

    def _tree_cpu(self, root: int) -> float:
        parents: dict[int, int] = {}
        cpu: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    text = stat.read()
            except OSError:  # the process exited meanwhile
                continue
            fields = text[text.rindex(")") + 2 :].split()
            parents[int(entry)] = int(fields[1])
            # utime + stime + cutime + cstime: reaped children's CPU moves to their parent.
            cpu[int(entry)] = sum(int(x) for x in fields[11:15])
        children: dict[int, list[int]] = {}
        for pid, parent in parents.items():
            children.setdefault(parent, []).append(pid)
        total, todo = 0, [root]
        while todo:
            pid = todo.pop()
            total += cpu.get(pid, 0)
            todo.extend(children.get(pid, ()))
        return total / self.tick


def busy_warning(loads: list[float], threshold: float, what: str, why: str = "") -> str | None:
    """A warning if other processes took more than ``threshold`` cores during any of ``loads``
    (one per run, window or row: ``what``), else ``None``."""
    if not loads or max(loads) <= threshold:
        return None
    busy = sum(load > threshold for load in loads)
    return (
        f"WARNING: other processes used up to {max(loads):.2f} of {os.cpu_count()} cores during {busy} of "
        f"{len(loads)} {what}; {why}rerun on an idle machine for numbers to rely on."
    )


def print_footer(warning: str | None, started: float) -> None:
    """A benchmark's last lines: the other-load ``warning`` if any, then the wall time since ``started`` (monotonic)."""
    if warning is not None:
        print()
        print(warning)
    print()
    print(f"total wall time {time.monotonic() - started:.0f} s")
