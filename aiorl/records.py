"""What one learner update did: the one record every reader of an update gets (a leaf module).

After each update the consumer builds one :class:`UpdateReport`. The same object is passed
to ``run(on_update=...)``, published on the event stream (:class:`aiorl.TrainingUpdate` is
this class), shown by the CLI's progress display, and written as one line of
``metrics.jsonl`` (:func:`aiorl.metrics_log.metrics_line`). Nothing recomputes its numbers.

Throughput has one definition, :func:`steps_per_second`: env steps trained during the
current ``run()`` (or ``resume()``) call divided by the wall-clock seconds since that call
began. :attr:`UpdateReport.steps_per_s` is it after each update;
:attr:`aiorl.TrainResult.steps_per_second` is it at the end of the call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def steps_per_second(steps: int, seconds: float) -> float:
    """Env steps trained per wall-clock second (0 before any time has passed)."""
    return steps / seconds if seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class LagStats:
    """Policy lag of the samples of an update: learner version minus acting version."""

    min: int
    mean: float
    max: int

    @classmethod
    def of(cls, learner_version: int, behaviour_versions: np.ndarray) -> LagStats:
        """Lag statistics of ``behaviour_versions`` against ``learner_version``."""
        lag = learner_version - behaviour_versions
        return cls(min=int(lag.min()), mean=float(lag.mean()), max=int(lag.max()))


@dataclass(frozen=True, slots=True)
class UpdateReport:
    """What one learner update did and where the run stands after it.

    Passed to ``run(on_update=...)`` after each update and published as the
    :class:`aiorl.TrainingUpdate` event (the same class); the CLI writes it to
    ``metrics.jsonl``. Counters that cover the trainer's life include earlier runs and
    resumed checkpoints.

    Attributes:
        policy_version: the policy version the update produced (1, 2, ...).
        env_steps: env steps trained on by the trainer so far (all runs).
        batch_steps: env steps in this update's batch.
        lag: policy lag of the batch's samples (learner version minus acting version).
        rollouts: ``(worker_id, pid, policy_version)`` of each rollout in the batch.
        learner: the learner's losses and diagnostics (``policy_loss``, ``value_loss``,
            ``entropy``, ``approx_kl``, ``clipfrac``, ``loss``, ``grad_norm`` before
            clipping, ``learning_rate``, ``explained_variance``; APPO adds ``rho_mean``,
            reward normalisation ``reward_scale``).
        mean_return: mean return of the last ``return_window`` finished episodes (NaN
            before the first one).
        update_s: seconds the update took in the learner thread.
        steps_per_s: env steps trained per second since the current ``run()`` call began
            (:func:`steps_per_second`).
        wall_time_s: seconds spent in ``run()`` over the trainer's life, this call so far
            included (``Trainer.train_time_s``).
        time: Unix time the report was made.
        steps_collected: env steps collected by the workers over the trainer's life.
        steps_discarded: collected steps not trained on (policy lag, lost workers, ...).
        episodes: episodes finished over the trainer's life.
        worker_restarts: worker replacements over the trainer's life.
        env_errors: env failures over the trainer's life: each re-created the env, or (the last) ended the run.
        workers_alive: workers running after the update.
        num_workers: workers configured.
    """

    policy_version: int
    env_steps: int
    batch_steps: int
    lag: LagStats
    rollouts: tuple[tuple[int, int, int], ...]
    learner: dict[str, float]
    mean_return: float
    update_s: float
    steps_per_s: float
    wall_time_s: float
    time: float
    steps_collected: int
    steps_discarded: int
    episodes: int
    worker_restarts: int
    env_errors: int
    workers_alive: int
    num_workers: int
