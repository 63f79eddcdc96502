"""Learning curves from ``metrics.jsonl``: mean return against env steps and against wall time.

Needs matplotlib (``pip install "aiorl[plot]"``). Draws on a figure of its own with the Agg
canvas, so it changes no global matplotlib state (backend, pyplot figures).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from aiorl.errors import ConfigError
from aiorl.metrics_log import METRICS_NAME, read_metrics


def supported_formats() -> set[str]:
    """The file types (extensions without the dot) that matplotlib's Agg canvas writes.

    Raises:
        ImportError: matplotlib is not installed (the message says how to install it).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError as exc:
        raise ImportError('plotting needs matplotlib: pip install "aiorl[plot]"') from exc
    return set(FigureCanvasAgg.get_supported_filetypes())


def plot_learning_curves(
    logdirs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Draw the mean return of each run in ``logdirs`` against env steps and wall time into a PNG.

    Each run is one line, labelled with its directory's name. Returns the output path.

    Raises:
        ConfigError: a directory has no ``metrics.jsonl`` or no update with a return yet.
        ImportError: matplotlib is not installed (the message says how to install it).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError('plotting needs matplotlib: pip install "aiorl[plot]"') from exc

    runs = [(Path(d), _curve(Path(d))) for d in logdirs]
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    by_steps, by_time = figure.subplots(1, 2, sharey=True)
    for directory, (steps, seconds, returns) in runs:
        label = directory.resolve().name
        by_steps.plot(steps, returns, label=label)
        by_time.plot(seconds, returns, label=label)
    by_steps.set_xlabel("env steps")
    by_steps.set_ylabel("mean return (last episodes)")
    by_time.set_xlabel("wall time (s)")
    for axes in (by_steps, by_time):
        axes.grid(alpha=0.3)
    by_steps.legend(loc="best", fontsize="small")
    figure.suptitle(title or "learning curve")
    target = png_name(output)
    figure.savefig(target, dpi=110)
    return target


def png_name(output: str | os.PathLike[str]) -> Path:
    """The file matplotlib writes for ``output``: with ``.png`` added where it has no suffix."""
    target = Path(output)
    return target if target.suffix else target.with_name(target.name + ".png")


def _curve(logdir: Path) -> tuple[list[int], list[float], list[float]]:
    path = logdir / METRICS_NAME
    if not path.is_file():
        raise ConfigError(f"{str(logdir)!r} has no {METRICS_NAME}: is it an aiorl log directory?")
    points = [r for r in read_metrics(path) if r.get("mean_return") is not None]
    if not points:
        raise ConfigError(f"{str(path)!r} has no update with a mean return yet")
    return (
        [r["env_steps"] for r in points],
        [r["wall_time_s"] for r in points],
        [r["mean_return"] for r in points],
    )
