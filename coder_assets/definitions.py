"""The one wiring point of the coder_assets code location."""

from __future__ import annotations

import dagster as dg

from coder_assets.assets.snapshots import repo_snapshots
from coder_assets.jobs import repo_snapshots_job
from coder_assets.resources import build_resources
from coder_assets.schedules import weekly_refresh_schedule
from coder_assets.sensors import gitea_change_sensor, run_failure_reporter

defs = dg.Definitions(
    assets=[repo_snapshots],
    jobs=[repo_snapshots_job],
    sensors=[gitea_change_sensor, run_failure_reporter],
    schedules=[weekly_refresh_schedule],
    resources=build_resources(),
)
