"""Sensors: gitea_change_sensor keeps the `repos` partitions in step with the source and snapshots
only the repositories whose default branch moved; train_on_new_dataset_sensor trains on every new
dataset version (when enabled); run_failure_reporter reports failed runs."""

# No `from __future__ import annotations` here: Dagster reads these annotations at runtime.
import os
from datetime import UTC, datetime

import dagster as dg

from coder_assets.constants import (
    COMMIT_SHA_TAG,
    DEFAULT_SENSOR_INTERVAL_SECONDS,
    REPO_PARTITIONS_NAME,
    TRIGGER_TAG,
)
from coder_assets.core.changes import SensorCursor, plan_changes
from coder_assets.core.errors import CoderAssetsError
from coder_assets.core.notify import failure_report
from coder_assets.core.repos import partition_key_for
from coder_assets.jobs import repo_job, train_deploy_job
from coder_assets.partitions import repo_partitions
from coder_assets.resources.notify import FailureNotifierResource
from coder_assets.resources.repos import RepoSourceResource
from coder_assets.settings import int_setting

SENSOR_INTERVAL_SECONDS = int_setting(
    "CODER_ASSETS_SENSOR_INTERVAL_SECONDS", DEFAULT_SENSOR_INTERVAL_SECONDS
)


def _snapshotted_shas(instance: dg.DagsterInstance, keys: list[str]) -> dict[str, str | None]:
    """The commit SHA of the latest `repo_snapshots` materialization of each partition key."""
    asset_key = dg.AssetKey("repo_snapshots")
    found: dict[str, str | None] = {}
    for key in keys:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[key]), limit=1
        ).records
        materialization = records[0].asset_materialization if records else None
        value = materialization.metadata.get("commit_sha") if materialization else None
        found[key] = str(value.value) if value is not None else None
    return found


@dg.sensor(
    name="gitea_change_sensor",
    job=repo_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Lists the repositories of the source: adds new ones to the `repos` partitions, removes "
        "deleted ones, and runs repo_job (snapshot, samples, checks) for each repo whose default "
        "branch head changed (the SHA is pinned in the run's tags)."
    ),
)
def gitea_change_sensor(
    context: dg.SensorEvaluationContext, repo_source: RepoSourceResource
) -> dg.SensorResult | dg.SkipReason:
    try:
        listing = repo_source.list_heads()
    except CoderAssetsError as exc:
        return dg.SkipReason(
            f"Could not list repositories from {repo_source.describe()}: {exc}. "
            "Nothing changed; the next tick tries again."
        )
    for full_name, error in sorted(listing.errors.items()):
        context.log.warning(f"Skipping {full_name} this tick: {error}")

    current = {head.repo.partition_key: head.sha for head in listing.heads}
    unreadable = {partition_key_for(*name.split("/", 1)) for name in listing.errors}
    skipped = {
        partition_key_for(*name.split("/", 1)): reason for name, reason in listing.skipped.items()
    }
    cursor = SensorCursor.from_json(context.cursor)
    partitions = set(context.instance.get_dynamic_partitions(REPO_PARTITIONS_NAME))
    unknown = sorted(set(current) - set(cursor.heads))
    plan = plan_changes(
        cursor,
        current,
        partitions,
        unreadable=unreadable,
        materialized=_snapshotted_shas(context.instance, unknown) if unknown else {},
        skipped=skipped,
        now=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if plan.removed:
        # Only repos the source confirms: no longer listed, or listed and excluded by the filter
        # rule (an unreadable repo is neither, and keeps its partition).
        why = ", ".join(
            f"{key} ({skipped.get(key, f'no longer in {repo_source.describe()}')})"
            for key in plan.removed
        )
        context.log.info(f"Removing partitions of deleted or excluded repos: {why}")
    if plan.added:
        context.log.info(f"Adding partitions for new repos: {plan.added}")

    requests = [
        dg.RunRequest(
            run_key=f"{key}@{sha}",
            partition_key=key,
            tags={COMMIT_SHA_TAG: sha, TRIGGER_TAG: "gitea_change_sensor"},
        )
        for key, sha in plan.changed.items()
    ]
    partition_requests: list[
        dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest
    ] = []
    if plan.added:
        partition_requests.append(repo_partitions.build_add_request(plan.added))
    if plan.removed:
        partition_requests.append(repo_partitions.build_delete_request(plan.removed))
    skip = None
    if not requests:
        skip = (
            f"No repository changed since the last tick ({len(current)} checked, "
            f"{len(listing.skipped)} skipped by the filter rule, {len(listing.errors)} unreadable)."
        )
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=partition_requests,
        cursor=plan.cursor.to_json(),
        skip_reason=skip,
    )


@dg.run_failure_sensor(
    name="run_failure_reporter",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Reports every failed run of this code location: a log line always, and a POST to the "
        "webhook in CODER_ASSETS_FAILURE_WEBHOOK_URL (e.g. an ntfy topic) when it is set."
    ),
)
def run_failure_reporter(
    context: dg.RunFailureSensorContext, failure_notifier: FailureNotifierResource
) -> None:
    run = context.dagster_run
    failures = context.get_step_failure_events()
    reason = (
        failures[0].step_failure_data.error.message
        if failures and failures[0].step_failure_data.error
        else context.failure_event.message or ""
    )
    user_failure = failures[0].step_failure_data.user_failure_data if failures else None
    if user_failure is not None and user_failure.description:
        reason = user_failure.description
    report = failure_report(
        job_name=run.job_name,
        run_id=run.run_id,
        partition_key=run.tags.get("dagster/partition"),
        failed_steps=[event.step_key for event in failures if event.step_key],
        reason=reason,
        ui_url=os.environ.get("CODER_ASSETS_UI_URL", "http://127.0.0.1:3000"),
    )
    context.log.error(f"{report.title}: {report.body}")
    failure_notifier.send(report)


# Off unless CODER_ASSETS_AUTO_TRAIN=1 (the demo's `make dev` sets it): training occupies waterdeep
# for hours in production, so a person turns it on deliberately (here or in the UI).
AUTO_TRAIN = os.environ.get("CODER_ASSETS_AUTO_TRAIN", "") == "1"


@dg.asset_sensor(
    name="train_on_new_dataset_sensor",
    asset_key=dg.AssetKey("training_dataset"),
    job=train_deploy_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=(
        dg.DefaultSensorStatus.RUNNING if AUTO_TRAIN else dg.DefaultSensorStatus.STOPPED
    ),
    description=(
        "Requests train_deploy_job once for every new dataset version that training_dataset "
        "publishes (run key: the version), unless an adapter was already trained on it. Runs by "
        "default only with CODER_ASSETS_AUTO_TRAIN=1."
    ),
)
def train_on_new_dataset_sensor(
    context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
) -> dg.RunRequest | dg.SkipReason:
    materialization = asset_event.asset_materialization
    value = materialization.metadata.get("version") if materialization else None
    version = str(value.value) if value is not None else ""
    if not version:
        return dg.SkipReason("The latest training_dataset materialization names no version.")
    trained = context.instance.get_latest_materialization_event(dg.AssetKey("lora_adapter"))
    trained_on = (
        trained.asset_materialization.metadata.get("dataset_version")
        if trained is not None and trained.asset_materialization is not None
        else None
    )
    if trained_on is not None and str(trained_on.value) == version:
        return dg.SkipReason(
            f"Dataset version {version[:12]} already has an adapter (lora_adapter's latest "
            "materialization was trained on it)."
        )
    return dg.RunRequest(
        run_key=f"dataset-{version}",
        tags={TRIGGER_TAG: f"new dataset version {version[:12]}"},
    )


@dg.sensor(
    name="waterdeep_reclaim_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Reclaims waterdeep from a run whose run worker died (kill -9, OOM, a reboot): its run "
        "lock is free but still names the run, so the run is marked failed, its `waterdeep` pool "
        "slots are freed and its orphaned step processes stopped."
    ),
)
def waterdeep_reclaim_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    from pathlib import Path

    from coder_assets.core.host import WaterdeepBusyError
    from coder_assets.executor import reclaim_dead_run, take_run_lock
    from coder_assets.resources import run_lock_file

    try:
        lock = take_run_lock(Path(run_lock_file()), "waterdeep_reclaim_sensor", "")
    except WaterdeepBusyError as exc:
        return dg.SkipReason(f"a live run holds waterdeep: {exc.holder}")
    try:
        stale = lock.cleared_stale
        outcome = reclaim_dead_run(context.instance, stale) if stale else None
    finally:
        lock.release()
    if outcome is None:
        return dg.SkipReason("no run holds waterdeep and none was left behind by a dead worker")
    context.log.warning(outcome)
    return dg.SkipReason(outcome)
