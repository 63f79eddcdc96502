"""Run logs: one line per learner update, to ``LOGDIR/metrics.jsonl`` and TensorBoard.

``metrics.jsonl`` holds one JSON object per line, one line per learner update, written
and flushed as the update finishes: the update's :class:`~aiorl.records.UpdateReport`,
flattened by :func:`metrics_line` (nothing is recomputed). Its schema (``schema`` = 1):

=====================  ===========================================================
key                    meaning
=====================  ===========================================================
``schema``             layout version of this line (1)
``update``             the policy version the update produced (1, 2, ...;
                       ``UpdateReport.policy_version``)
``env_steps``          env steps trained on, over the whole run (resumes included)
``steps_collected``    env steps collected by the workers
``steps_discarded``    collected steps not trained on (policy lag, lost workers, ...)
``episodes``           episodes finished
``mean_return``        mean return of the last ``return_window`` episodes (``null``
                       before the first episode ends)
``wall_time_s``        seconds of training so far (time in ``run()``, resumes included)
``time``               Unix time the line was written
``steps_per_s``        env steps trained per second since this ``train`` or
                       ``resume`` command began training
``batch_steps``        env steps in this update's batch
``update_s``           seconds the learner spent on this update
``lag_min``            policy lag of the batch: min, mean and max (versions)
``lag_mean``
``lag_max``
``workers_alive``      worker processes running after the update
``num_workers``        worker processes configured
``worker_restarts``    worker replacements so far
``env_errors``         env failures so far (each re-created the env, or ended the run)
``learner``            the learner's metrics: ``policy_loss``, ``value_loss``,
                       ``entropy``, ``approx_kl``, ``clipfrac``, ``loss``,
                       ``grad_norm`` (before clipping), ``learning_rate``,
                       ``explained_variance`` (APPO adds ``rho_mean``, reward
                       normalisation ``reward_scale``); NaN as ``null``
=====================  ===========================================================

With the ``tensorboard`` extra installed, the same numbers go to TensorBoard event files in
``LOGDIR`` (``return/mean``, ``throughput/steps_per_s``, ``lag/mean``, ``learner/*``, ...),
with ``env_steps`` as the step.

Periodic evaluations (``eval_interval_steps``) go to ``evaluations.jsonl``, one line each as
it finishes: ``schema``, ``update`` (the policy version that played), ``env_steps`` (trained
on when that version was made), ``mean_return``, ``std_return``, ``episodes``, ``capped``
(episodes cut at the step cap), ``returns``, ``lengths``, ``time``; and to TensorBoard as
``eval/mean_return``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiorl.errors import ConfigError
from aiorl.records import UpdateReport

if TYPE_CHECKING:
    from aiorl.evaluation import EvalResult

log = logging.getLogger("aiorl")

METRICS_NAME = "metrics.jsonl"
EVALUATIONS_NAME = "evaluations.jsonl"
SCHEMA = 1


def metrics_line(report: UpdateReport) -> dict[str, Any]:
    """The ``metrics.jsonl`` object of ``report`` (the module doc's schema); NaN becomes ``None``."""
    return {
        "schema": SCHEMA,
        "update": report.policy_version,
        "env_steps": report.env_steps,
        "steps_collected": report.steps_collected,
        "steps_discarded": report.steps_discarded,
        "episodes": report.episodes,
        "mean_return": _finite(report.mean_return),
        "wall_time_s": report.wall_time_s,
        "time": report.time,
        "steps_per_s": report.steps_per_s,
        "batch_steps": report.batch_steps,
        "update_s": report.update_s,
        "lag_min": report.lag.min,
        "lag_mean": report.lag.mean,
        "lag_max": report.lag.max,
        "workers_alive": report.workers_alive,
        "num_workers": report.num_workers,
        "worker_restarts": report.worker_restarts,
        "env_errors": report.env_errors,
        "learner": {name: _finite(value) for name, value in report.learner.items()},
    }


class MetricsLog:
    """Appends one line per :class:`~aiorl.records.UpdateReport` to ``LOGDIR/metrics.jsonl`` (and TensorBoard).

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
        self.evaluations_path = self.logdir / EVALUATIONS_NAME
        purge_step = None
        if resume_after is not None:
            update, env_steps = resume_after
            _keep_until(self.path, update)
            _keep_until(self.evaluations_path, update)
            purge_step = env_steps + 1
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._steps_of: dict[int, int] = {}  # env_steps of the updates an evaluation may still play
        self._tensorboard: Any = None
        if tensorboard is None or tensorboard:
            self._tensorboard = _summary_writer(self.logdir, purge_step, required=bool(tensorboard))

    def write(self, report: UpdateReport) -> None:
        """Append the line of ``report`` (flushed) and its TensorBoard scalars (call it from ``on_update``)."""
        line = metrics_line(report)
        self._file.write(json.dumps(line, allow_nan=False) + "\n")
        self._file.flush()
        self._steps_of[report.policy_version] = report.env_steps
        if self._tensorboard is not None:
            _write_scalars(self._tensorboard, line)

    def write_evaluation(self, result: EvalResult) -> None:
        """Append a periodic evaluation's line to ``evaluations.jsonl`` (flushed) and its TensorBoard scalar."""
        env_steps = self._steps_of.get(result.policy_version)
        for version in [v for v in self._steps_of if v < result.policy_version]:  # later ones play newer versions
            del self._steps_of[version]
        line = {
            "schema": SCHEMA,
            "update": result.policy_version,
            "env_steps": env_steps,
            "mean_return": _finite(result.mean_return),
            "std_return": _finite(result.std_return),
            "episodes": result.episodes,
            "capped": result.capped,
            "returns": [_finite(value) for value in result.returns],
            "lengths": list(result.lengths),
            "time": time.time(),
        }
        with open(self.evaluations_path, "a", encoding="utf-8") as file:
            file.write(json.dumps(line, allow_nan=False) + "\n")
        if self._tensorboard is not None and env_steps is not None and line["mean_return"] is not None:
            self._tensorboard.add_scalar("eval/mean_return", line["mean_return"], global_step=env_steps)

    def close(self) -> None:
        """Close the file and the TensorBoard writer (idempotent).

        A line that cannot be flushed at the close (a full disk) is logged, not raised: the
        error that stopped the run is the one to report, and the file is closed either way.
        """
        try:
            self._file.close()
        except OSError as exc:
            log.warning("%s: the last metrics line could not be written (%s)", self.path, exc)
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

    Raises:
        ConfigError: a whole line is not a record of an update (a JSON object with an
            integer ``update``); the message names the file and the line.
    """
    target = Path(path)
    if target.is_dir():
        target = target / METRICS_NAME
    records = []
    with open(target, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.endswith("\n"):
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{str(target)!r}, line {number}: not a JSON record ({exc})") from None
            if not (isinstance(record, dict) and isinstance(record.get("update"), int)):
                raise ConfigError(f"{str(target)!r}, line {number}: not the record of an update: {line.strip()[:80]}")
            records.append(record)
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


def _write_scalars(writer: Any, line: dict[str, Any]) -> None:
    scalars = {
        "return/mean": line["mean_return"],
        "progress/episodes": line["episodes"],
        "progress/update": line["update"],
        "throughput/steps_per_s": line["steps_per_s"],
        "throughput/update_s": line["update_s"],
        "lag/mean": line["lag_mean"],
        "lag/max": line["lag_max"],
        "workers/alive": line["workers_alive"],
        "workers/restarts": line["worker_restarts"],
        "accounting/steps_discarded": line["steps_discarded"],
        **{f"learner/{name}": value for name, value in line["learner"].items()},
    }
    for tag, value in scalars.items():
        if value is not None:
            writer.add_scalar(tag, value, global_step=line["env_steps"], walltime=line["time"])
