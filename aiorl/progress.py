"""Live training progress for a terminal, and plain periodic lines for logs (CI).

:class:`ProgressDisplay` consumes one :class:`~aiorl.records.UpdateReport` per learner
update. On a terminal it shows a live panel (rich) with steps, steps/s, episodes, mean
return, policy lag, worker health and an ETA, refreshed four times a second; when the
output is not a terminal it prints one plain line every ``interval_s`` seconds and a last
one at the end.
"""

from __future__ import annotations

import math
import time
from types import TracebackType
from typing import IO, TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from aiorl.records import UpdateReport

if TYPE_CHECKING:
    from aiorl.evaluation import EvalResult


class ProgressDisplay:
    """Shows how a run is going; feed it with :meth:`update` after every learner update.

    Args:
        title: what is being trained (shown on top of the live panel).
        total_steps: the run's step budget.
        steps_at_start: ``env_steps`` when the run (or the run it resumes) started.
        target_return: the run's target mean return, if any.
        live: use the live panel; ``None`` means "if the output is a terminal".
        interval_s: seconds between plain lines (when not live).
        file: where to write (default: standard error).

    Resource handling:
        Use it as a context manager: the live panel owns a refresh thread until exit.
    """

    def __init__(
        self,
        *,
        title: str,
        total_steps: int,
        steps_at_start: int = 0,
        target_return: float | None = None,
        live: bool | None = None,
        interval_s: float = 10.0,
        file: IO[str] | None = None,
    ) -> None:
        self.title = title
        self.total_steps = total_steps
        self.steps_at_start = steps_at_start
        self.target_return = target_return
        self.interval_s = interval_s
        self.console = Console(file=file, stderr=file is None, highlight=False)
        self.live = self.console.is_terminal if live is None else live
        self.report: UpdateReport | None = None
        self._last_line = -math.inf
        self._line_printed_for: UpdateReport | None = None
        self._live = Live(self, console=self.console, refresh_per_second=4) if self.live else None

    def __enter__(self) -> ProgressDisplay:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live panel (leaving its last state on screen), or print the last plain line."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        elif not self.live and self.report is not None and self._line_printed_for is not self.report:
            self._print_line(self.report)

    def update(self, report: UpdateReport) -> None:
        """Take the newest report; print a plain line if ``interval_s`` has passed (not live)."""
        self.report = report
        if self.live:
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval_s:
            self._last_line = now
            self._print_line(report)

    def evaluated(self, result: EvalResult) -> None:
        """Print a line for a periodic evaluation (above the live panel, or among the plain lines)."""
        capped = f", {result.capped} cut at the step cap" if result.capped else ""
        self.console.print(
            f"evaluation of version {result.policy_version}: mean return {_number(result.mean_return)} "
            f"+- {_number(result.std_return)} over {result.episodes} episodes{capped}",
            soft_wrap=True,
        )

    # ---- what is shown -------------------------------------------------------------------
    @property
    def final_steps(self) -> int:
        """The run's ``env_steps`` at the end of the budget (shown as "of N": counts are the run's, not the call's)."""
        return self.steps_at_start + self.total_steps

    def eta_s(self, report: UpdateReport) -> float | None:
        """Seconds to the end of the step budget at the run's rate (``None`` when unknown)."""
        left = self.final_steps - report.env_steps
        if left <= 0:
            return 0.0
        return left / report.steps_per_s if report.steps_per_s > 0 else None

    def line(self, report: UpdateReport) -> str:
        """The plain progress line for ``report``."""
        done = report.env_steps - self.steps_at_start
        return (
            f"[{_duration(report.wall_time_s)}] steps {report.env_steps:,} "
            f"({100 * min(done / self.total_steps, 1):.0f}% of {self.final_steps:,}) | "
            f"{report.steps_per_s:,.0f} steps/s | episodes {report.episodes:,} | "
            f"return {_number(report.mean_return)}{self._target()} | "
            f"lag {report.lag.min}/{report.lag.mean:.2f}/{report.lag.max} | {_workers(report)} | "
            f"ETA {_eta(self.eta_s(report))}"
        )

    def _target(self) -> str:
        return "" if self.target_return is None else f" (target {self.target_return:g})"

    def _print_line(self, report: UpdateReport) -> None:
        self._line_printed_for = report
        self.console.print(self.line(report), soft_wrap=True)

    def __rich__(self) -> RenderableType:
        """The live panel (rich calls this on every refresh)."""
        report = self.report
        header = Text(f"aiorl · {self.title}", style="bold")
        if report is None:
            return Group(header, Text("starting workers, waiting for the first update ..."))
        done = report.env_steps - self.steps_at_start
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim")
        grid.add_column()
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=self.total_steps, completed=min(done, self.total_steps), width=30),
            f"{report.env_steps:,} steps ({100 * min(done / self.total_steps, 1):.0f}% of {self.final_steps:,})",
        )
        grid.add_row("progress", bar)
        grid.add_row(
            "speed", f"{report.steps_per_s:,.0f} steps/s · update {report.policy_version} ({report.update_s:.2f} s)"
        )
        grid.add_row("episodes", f"{report.episodes:,}")
        grid.add_row("return", f"{_number(report.mean_return)}{self._target()}")
        grid.add_row("policy lag", f"min {report.lag.min} · mean {report.lag.mean:.2f} · max {report.lag.max}")
        health = Text(_workers(report), style="green" if report.workers_alive == report.num_workers else "yellow")
        grid.add_row("workers", health)
        grid.add_row("time", f"{_duration(report.wall_time_s)} elapsed · ETA {_eta(self.eta_s(report))}")
        return Group(header, grid)


def _workers(report: UpdateReport) -> str:
    restarting = report.num_workers - report.workers_alive
    state = f"{report.workers_alive}/{report.num_workers} alive"
    if restarting > 0:
        state += f", {restarting} restarting"
    return f"{state}, {report.worker_restarts} restarts"


def _number(value: float) -> str:
    return f"{value:.1f}" if math.isfinite(value) else "n/a"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _eta(seconds: float | None) -> str:
    return "?" if seconds is None else _duration(seconds)
