"""weekly_refresh_schedule: refreshes every repository once a week, whatever the sensor saw."""

# No `from __future__ import annotations` here: Dagster reads these annotations at runtime.
import os

import dagster as dg

from coder_assets.constants import DEFAULT_WEEKLY_CRON, REPO_PARTITIONS_NAME, TRIGGER_TAG
from coder_assets.jobs import repo_job
from coder_assets.settings import timezone_setting

WEEKLY_CRON = os.environ.get("CODER_ASSETS_WEEKLY_CRON", DEFAULT_WEEKLY_CRON)
SCHEDULE_TIMEZONE = timezone_setting("CODER_ASSETS_TIMEZONE")


@dg.schedule(
    name="weekly_refresh_schedule",
    cron_schedule=WEEKLY_CRON,
    execution_timezone=SCHEDULE_TIMEZONE,
    job=repo_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Runs repo_job for every repository partition (default: Sundays 03:00); "
        "dataset_after_repos_sensor builds the dataset once when they have all finished."
    ),
)
def weekly_refresh_schedule(
    context: dg.ScheduleEvaluationContext,
) -> list[dg.RunRequest] | dg.SkipReason:
    keys = context.instance.get_dynamic_partitions(REPO_PARTITIONS_NAME)
    if not keys:
        return dg.SkipReason(
            "No repository partitions yet: gitea_change_sensor adds them on its first tick."
        )
    stamp = context.scheduled_execution_time.isoformat()
    return [
        dg.RunRequest(
            run_key=f"weekly:{stamp}:{key}",
            partition_key=key,
            tags={TRIGGER_TAG: "weekly_refresh_schedule"},
        )
        for key in keys
    ]
