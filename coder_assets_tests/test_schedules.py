"""weekly_refresh_schedule evaluated against a real instance."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from coder_assets.schedules import weekly_refresh_schedule


def test_weekly_schedule_requests_every_repo_partition(instance):
    instance.add_dynamic_partitions("repos", ["homelab~a", "homelab~b"])
    when = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)

    requests = weekly_refresh_schedule(
        dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
    )

    assert sorted(r.partition_key for r in requests) == ["homelab~a", "homelab~b"]
    assert len({r.run_key for r in requests}) == 2
    assert all(when.isoformat() in r.run_key for r in requests)


def test_weekly_schedule_skips_when_there_are_no_repos_yet(instance):
    result = weekly_refresh_schedule(dg.build_schedule_context(instance=instance))

    assert isinstance(result, dg.SkipReason)
    assert "gitea_change_sensor" in result.skip_message


def test_weekly_schedule_runs_sundays_at_three():
    assert weekly_refresh_schedule.cron_schedule == "0 3 * * 0"
