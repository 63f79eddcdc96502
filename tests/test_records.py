"""One record per update: ``on_update``, the event stream, the metrics file and the progress
display all read the same :class:`aiorl.UpdateReport`, and steps/s has one definition."""

from __future__ import annotations

import io
import logging
import math
import os

import pytest
from conftest import SMALL, documented_metrics_keys

import aiorl
from aiorl import PPO, Trainer, TrainingUpdate, UpdateReport
from aiorl.metrics_log import MetricsLog, metrics_line, read_metrics
from aiorl.progress import ProgressDisplay
from aiorl.records import LagStats, steps_per_second

QUICK_PPO = PPO(update_epochs=1, num_minibatches=1)


def report(**changes: object) -> UpdateReport:
    fields: dict[str, object] = dict(
        policy_version=3,
        env_steps=768,
        batch_steps=256,
        lag=LagStats(0, 0.5, 1),
        rollouts=((0, 100, 2), (1, 101, 3)),
        learner={"policy_loss": 0.25, "entropy": 0.69, "approx_kl": math.nan},
        mean_return=math.nan,
        update_s=0.05,
        steps_per_s=1234.5,
        wall_time_s=12.0,
        time=1.7e9,
        steps_collected=1024,
        steps_discarded=0,
        episodes=0,
        worker_restarts=1,
        env_errors=0,
        workers_alive=1,
        num_workers=2,
    )
    fields.update(changes)
    return UpdateReport(**fields)  # type: ignore[arg-type]


# ---- the record and the public names ------------------------------------------------------------
def test_the_event_and_the_callback_argument_are_one_type():
    assert TrainingUpdate is UpdateReport is aiorl.UpdateReport is aiorl.events.TrainingUpdate
    assert aiorl.LagStats is LagStats


def test_steps_per_second_is_steps_over_seconds_and_zero_before_any_time_passed():
    assert steps_per_second(3000, 1.5) == 2000.0
    assert steps_per_second(0, 0.0) == 0.0
    assert steps_per_second(10, 0.0) == 0.0


# ---- the metrics file is the record, flattened ---------------------------------------------------
def test_a_metrics_line_holds_exactly_the_documented_keys_with_the_records_numbers():
    line = metrics_line(report())
    assert set(line) == documented_metrics_keys()
    assert line["schema"] == 1 and line["update"] == 3 and line["env_steps"] == 768
    assert line["steps_per_s"] == 1234.5 and line["wall_time_s"] == 12.0 and line["update_s"] == 0.05
    assert (line["lag_min"], line["lag_mean"], line["lag_max"]) == (0, 0.5, 1)
    assert (line["workers_alive"], line["num_workers"], line["worker_restarts"]) == (1, 2, 1)
    assert line["mean_return"] is None  # NaN before the first episode: JSON null
    assert line["learner"] == {"policy_loss": 0.25, "entropy": 0.69, "approx_kl": None}


def test_the_metrics_log_writes_one_readable_line_per_report(tmp_path):
    with MetricsLog(tmp_path, tensorboard=False) as log:
        log.write(report(policy_version=1, env_steps=256))
        log.write(report(policy_version=2, env_steps=512, mean_return=21.0))
    lines = read_metrics(tmp_path)
    assert [(line["update"], line["env_steps"], line["mean_return"]) for line in lines] == [
        (1, 256, None),
        (2, 512, 21.0),
    ]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_fails_the_write_that_hit_it_and_the_close_only_logs(tmp_path, caplog):
    (tmp_path / "metrics.jsonl").symlink_to("/dev/full")  # every write: ENOSPC
    metrics = MetricsLog(tmp_path, tensorboard=False)
    with pytest.raises(OSError, match="No space left"):
        metrics.write(report())
    with caplog.at_level(logging.WARNING, logger="aiorl"):
        metrics.close()  # was: the same OSError again, raised over the run's own error
    assert "the last metrics line could not be written" in caplog.text


# ---- the progress display reads the record -------------------------------------------------------
def test_the_progress_line_shows_the_records_numbers():
    display = ProgressDisplay(title="t", total_steps=1536, live=False, file=io.StringIO())
    line = display.line(report())
    assert "steps 768 (50% of 1,536)" in line
    assert "1,234 steps/s" in line or "1,235 steps/s" in line
    assert "return n/a" in line and "lag 0/0.50/1" in line and "1/2 alive, 1 restarting, 1 restarts" in line
    assert display.eta_s(report()) == pytest.approx(768 / 1234.5)  # the rest of the budget at steps_per_s


def test_a_resumed_run_s_progress_counts_toward_the_run_s_final_step():
    display = ProgressDisplay(title="t", total_steps=512, steps_at_start=512, live=False, file=io.StringIO())
    assert "steps 768 (50% of 1,024)" in display.line(report())  # 256 of the call's 512, at step 768 of 1,024


# ---- a trainer's updates: one object everywhere, one rate ---------------------------------------
@pytest.mark.asyncio
async def test_one_record_reaches_on_update_the_event_stream_and_the_metrics_file(tmp_path):
    trainer = Trainer("CartPole-v1", QUICK_PPO, **SMALL)
    stream = trainer.events(maxsize=1_000_000)
    reports: list[UpdateReport] = []
    with MetricsLog(tmp_path, tensorboard=False) as log:

        def on_update(report: UpdateReport) -> None:
            reports.append(report)
            log.write(report)

        result = await trainer.run(total_steps=1000, on_update=on_update)
    events = [event async for event in stream if isinstance(event, TrainingUpdate)]

    assert len(reports) == result.updates > 0
    assert all(event is report for event, report in zip(events, reports, strict=True))  # the same objects
    lines = read_metrics(tmp_path)
    assert [line["update"] for line in lines] == [r.policy_version for r in reports]
    assert [line["steps_per_s"] for line in lines] == [r.steps_per_s for r in reports]
    assert [line["learner"]["policy_loss"] for line in lines] == [r.learner["policy_loss"] for r in reports]
    last = reports[-1]
    assert last.env_steps == trainer.stats.steps_trained and last.steps_collected <= trainer.stats.steps_collected
    assert last.num_workers == 2 and 0 <= last.workers_alive <= 2
    assert last.wall_time_s <= trainer.train_time_s


@pytest.mark.asyncio
async def test_steps_per_s_is_the_steps_trained_in_this_call_per_second_of_it():
    trainer = Trainer("CartPole-v1", QUICK_PPO, **SMALL)
    async with trainer:
        first = await trainer.run(total_steps=512)
        steps_before, time_before = trainer.stats.steps_trained, trainer.train_time_s
        reports: list[UpdateReport] = []
        second = await trainer.run(total_steps=512, on_update=reports.append)
    assert first.steps_per_second == pytest.approx(first.env_steps / first.wall_time)
    assert second.steps_per_second == pytest.approx(second.env_steps / second.wall_time)
    for r in reports:  # the second call's steps over the second call's seconds, not the trainer's life
        assert r.steps_per_s > 0
        assert r.steps_per_s * (r.wall_time_s - time_before) == pytest.approx(r.env_steps - steps_before)
