"""The episode and fault bookkeeping both samplers share (pure: no envs, no processes)."""

from __future__ import annotations

import pytest

from aiorl.worker.episodes import EnvBookkeeping, EnvStepError


def test_an_episode_adds_up_its_rewards_and_starts_afresh_when_it_ends():
    episode = EnvBookkeeping(index=3, gamma=0.5, error_limit=3)
    assert episode.rewarded(1.0) == 1.0
    assert episode.rewarded(2.0) == 2.5  # 1 * 0.5 + 2
    assert episode.finished(next_row=2) == (3.0, 2)
    assert (episode.episode_return, episode.episode_length, episode.disc_return, episode.start) == (0.0, 0, 0.0, 2)
    assert episode.rewarded(4.0) == 4.0, "the discounted return restarts with the episode"


def test_without_reward_normalisation_the_discounted_return_stays_zero():
    episode = EnvBookkeeping(index=0, gamma=None, error_limit=3)
    assert episode.rewarded(5.0) == 0.0 and episode.disc_return == 0.0
    assert episode.finished(next_row=1) == (5.0, 1)


def test_a_broken_episode_masks_its_rows_and_reports_the_discarded_steps():
    episode = EnvBookkeeping(index=1, gamma=None, error_limit=3)
    episode.finished(next_row=4)  # an episode began at row 4
    episode.env_steps = 9
    broken = episode.broke(RuntimeError("boom"), row=6, policy_version=7)
    assert (broken.start, broken.end, broken.discarded) == (4, 7, 3)
    report = broken.report
    assert (report.env_index, report.step, report.policy_version) == (1, 9, 7)
    assert report.error_type == "RuntimeError" and report.message == "boom" and "boom" in report.traceback
    # A reset that fails after the episode ended at row 6 costs nothing from the finished episode.
    after_reset = episode.broke(RuntimeError("reset"), row=6, policy_version=7, mask_from=7)
    assert (after_reset.start, after_reset.end, after_reset.discarded) == (7, 7, 0)


def test_a_rebuilt_env_starts_a_fresh_episode_at_the_next_row():
    episode = EnvBookkeeping(index=0, gamma=0.9, error_limit=3)
    episode.env_steps = 5
    episode.rewarded(1.0)
    episode.broke(RuntimeError("boom"), row=2, policy_version=0)
    episode.retry()
    episode.rebuilt(next_row=3)
    assert (episode.env_steps, episode.episode_return, episode.episode_length, episode.disc_return) == (0, 0.0, 0, 0.0)
    assert episode.start == 3 and episode.failures == 1 and episode.error is None


def test_the_error_limit_counts_failures_in_a_row_and_a_finished_episode_resets_it():
    episode = EnvBookkeeping(index=2, gamma=None, error_limit=3)
    for _ in range(2):
        episode.broke(RuntimeError("boom"), row=0, policy_version=0)
        episode.retry()
        episode.rebuilt(next_row=1)
    episode.finished(next_row=1)
    assert episode.failures == 0
    for _ in range(2):
        episode.broke(RuntimeError("boom"), row=0, policy_version=0)
        episode.retry()
        episode.rebuilt(next_row=1)
    episode.env_steps = 4
    episode.broke(ValueError("third"), row=0, policy_version=0)
    with pytest.raises(EnvStepError) as raised:
        episode.retry()
    error = raised.value
    assert (error.env_index, error.step) == (2, 4) and isinstance(error.original, ValueError)
    assert "failed 3 times in a row" in error.reason and "env_error_limit=3" in error.reason


def test_a_failed_rebuild_is_the_error_reported_at_the_limit():
    episode = EnvBookkeeping(index=0, gamma=None, error_limit=2)
    episode.broke(RuntimeError("step"), row=0, policy_version=0)
    episode.retry()
    episode.rebuild_failed(EnvStepError(0, 0, OSError("constructor")))
    with pytest.raises(EnvStepError) as raised:
        episode.retry()
    assert isinstance(raised.value.original, OSError) and raised.value.__cause__ is raised.value.original
