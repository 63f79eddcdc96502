"""Run logs: one record per learner update, to ``LOGDIR/metrics.jsonl`` and TensorBoard.

``metrics.jsonl`` holds one JSON object per line, one line per learner update, written
and flushed as the update finishes. Its schema (``schema`` = 1):

=====================  ===========================================================
key                    meaning
=====================  ===========================================================
``schema``             layout version of this line (1)
``update``             the policy version the update produced (1, 2, ...)
``env_steps``          env steps trained on, over the whole run (resumes included)
``steps_collected``    env steps collected by the workers
``steps_discarded``    collected steps not trained on (policy lag, lost workers, ...)
``episodes``           episodes finished
``mean_return``        mean return of the last ``return_window`` episodes (``null``
                       before the first episode ends)
``wall_time_s``        seconds of training so far (time in ``run()``, resumes included)
``time``               Unix time the line was written
``steps_per_s``        env steps trained per second over the last 10 s
``batch_steps``        env steps in this update's batch
``update_s``           seconds the learner spent on this update
``lag_min``            policy lag of the batch: min, mean and max (versions)
``lag_mean``
``lag_max``
``workers_alive``      worker processes alive after the update
``num_workers``        worker processes configured
``worker_restarts``    worker replacements so far
``env_errors``         env exceptions recovered from so far
``learner``            the learner's metrics: ``policy_loss``, ``value_loss``,
                       ``entropy``, ``approx_kl``, ``clipfrac``, ``learning_rate``,
                       ``explained_variance`` (APPO adds ``rho_mean``); NaN as ``null``
=====================  ===========================================================

With the ``tensorboard`` extra installed, the same numbers go to TensorBoard event files in
``LOGDIR`` (``return/mean``, ``throughput/steps_per_s``, ``lag/mean``, ``learner/*``, ...),
with ``env_steps`` as the step.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from aiorl.engine.consumer import UpdateReport
from aiorl.engine.stats import TrainingStats

METRICS_NAME = "metrics.jsonl"
SCHEMA = 1
RATE_WINDOW_S = 10.0


class TrainerView(Protocol):
    """What a :class:`Recorder` reads from the trainer besides the update report."""

    @property
    def stats(self) -> TrainingStats: ...  # noqa: D102

    @property
    def train_time_s(self) -> float: ...  # noqa: D102

    @property
    def worker_pids(self) -> dict[int, int]: ...  # noqa: D102


@dataclass(frozen=True, slots=True)
class UpdateRecord:
    """The state of a run after one learner update: one line of ``metrics.jsonl`` (see the module doc)."""

    update: int
    env_steps: int
    steps_collected: int
    steps_discarded: int
    episodes: int
    mean_return: float | None
    wall_time_s: float
    time: float
    steps_per_s: float
    batch_steps: int
    update_s: float
    lag_min: int
    lag_mean: float
    lag_max: int
    workers_alive: int
    num_workers: int
    worker_restarts: int
    env_errors: int
    learner: dict[str, float | None]

    def to_json(self) -> str:
        """One JSON line (no newline); NaN and infinities become ``null``."""
        return json.dumps({"schema": SCHEMA, **asdict(self)}, allow_nan=False)


class Recorder:
    """Turns each :class:`~aiorl.UpdateReport` and the trainer's counters into an :class:`UpdateRecord`.

    Keeps the recent (time, steps) pairs to report a throughput over the last
    ``RATE_WINDOW_S`` seconds.
    """

    def __init__(self, trainer: TrainerView, num_workers: int) -> None:
        self.trainer = trainer
        self.num_workers = num_workers
        self._recent: deque[tuple[float, int]] = deque([(trainer.train_time_s, trainer.stats.steps_trained)])

    def capture(self, report: UpdateReport) -> UpdateRecord:
        """The record of the update ``report`` describes (call it from ``on_update``)."""
        stats = self.trainer.stats
        wall = self.trainer.train_time_s
        self._recent.append((wall, report.env_steps))
        while len(self._recent) > 2 and wall - self._recent[1][0] >= RATE_WINDOW_S:
            self._recent.popleft()
        first_wall, first_steps = self._recent[0]
        rate = (report.env_steps - first_steps) / (wall - first_wall) if wall > first_wall else 0.0
        return UpdateRecord(
            update=report.version,
            env_steps=report.env_steps,
            steps_collected=stats.steps_collected,
            steps_discarded=stats.steps_discarded,
            episodes=stats.episodes,
            mean_return=_finite(report.mean_return),
            wall_time_s=wall,
            time=time.time(),
            steps_per_s=rate,
            batch_steps=report.batch_steps,
            update_s=report.update_s,
            lag_min=report.lag.min,
            lag_mean=report.lag.mean,
            lag_max=report.lag.max,
            workers_alive=len(self.trainer.worker_pids),
            num_workers=self.num_workers,
            worker_restarts=stats.worker_restarts,
            env_errors=stats.env_errors,
            learner={name: _finite(value) for name, value in report.metrics.items()},
        )


class MetricsLog:
    """Appends :class:`UpdateRecord` s to ``LOGDIR/metrics.jsonl`` (and TensorBoard when installed).

    Args:
        logdir: the run's directory (created if missing).
        tensorboard: write TensorBoard scalars; ``None`` means "if the ``tensorboard``
            package is installed".
        resume_after: the update a resumed run continues from: lines of later updates
            (written after the checkpoint was taken) are dropped from the file, and
            TensorBoard events from that step on are purged, so the curve continues
            without a fold.

    Resource handling:
        Use it as a context manager (or call :meth:`close`): it holds the file open.
        Each line is flushed when written, so a killed run loses at most the line it
        was writing.
    """

    def __init__(
        self,
        logdir: str | os.PathLike[str],
        *,
        tensorboard: bool | None = None,
        resume_after: tuple[int, int] | None = None,
    ) -> None:
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.path = self.logdir / METRICS_NAME
        purge_step = None
        if resume_after is not None:
            update, env_steps = resume_after
            _keep_until(self.path, update)
            purge_step = env_steps + 1
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._tensorboard: Any = None
        if tensorboard is None or tensorboard:
            self._tensorboard = _summary_writer(self.logdir, purge_step, required=bool(tensorboard))

    def write(self, record: UpdateRecord) -> None:
        """Append one line (flushed) and the TensorBoard scalars of ``record``."""
        self._file.write(record.to_json() + "\n")
        self._file.flush()
        if self._tensorboard is not None:
            _write_scalars(self._tensorboard, record)

    def close(self) -> None:
        """Close the file and the TensorBoard writer (idempotent)."""
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (or of ``DIR/metrics.jsonl``), in order.

    A last line cut short by a killed process is skipped.
    """
    target = Path(path)
    if target.is_dir():
        target = target / METRICS_NAME
    records = []
    with open(target, encoding="utf-8") as file:
        for line in file:
            if line.endswith("\n"):
                records.append(json.loads(line))
    return records


def _keep_until(path: Path, update: int) -> None:
    """Rewrite ``path`` keeping only records of updates up to ``update`` (atomic rename)."""
    if not path.exists():
        return
    kept = [json.dumps(r, allow_nan=False) + "\n" for r in read_metrics(path) if r["update"] <= update]
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("".join(kept), encoding="utf-8")
    os.replace(temporary, path)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _summary_writer(logdir: Path, purge_step: int | None, *, required: bool) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if required:
            raise
        return None
    return SummaryWriter(log_dir=str(logdir), purge_step=purge_step)


def _write_scalars(writer: Any, record: UpdateRecord) -> None:
    step = record.env_steps
    scalars = {
        "return/mean": record.mean_return,
        "progress/episodes": record.episodes,
        "progress/update": record.update,
        "throughput/steps_per_s": record.steps_per_s,
        "throughput/update_s": record.update_s,
        "lag/mean": record.lag_mean,
        "lag/max": record.lag_max,
        "workers/alive": record.workers_alive,
        "workers/restarts": record.worker_restarts,
        "accounting/steps_discarded": record.steps_discarded,
        **{f"learner/{name}": value for name, value in record.learner.items()},
    }
    for tag, value in scalars.items():
        if value is not None:
            writer.add_scalar(tag, value, global_step=step, walltime=record.time)
