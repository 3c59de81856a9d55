"""Sensors: gitea_change_sensor keeps the `repos` partitions in step with the source and snapshots
only the repositories whose default branch moved; dataset_after_repos_sensor builds the dataset
once when a batch of repo runs has settled; train_on_new_dataset_sensor trains the newest dataset
version inside the maintenance window, and maintenance_window_notice marks hand launches outside
it; run_failure_reporter reports failed runs."""

# No `from __future__ import annotations` here: Dagster reads these annotations at runtime.
import hashlib
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import dagster as dg
from dagster._core.execution.backfill import BulkActionStatus

from coder_assets.constants import (
    CHANGED_REPOS_TAG,
    COMMIT_SHA_TAG,
    DATASET_VERSION_TAG,
    DEFAULT_SENSOR_INTERVAL_SECONDS,
    MAINTENANCE_WINDOW_TAG,
    REPO_PARTITIONS_NAME,
    SUPERSEDED_TAG,
    TRIGGER_TAG,
)
from coder_assets.core.deployment.window import MaintenanceWindow
from coder_assets.core.errors import CoderAssetsError, SettingError
from coder_assets.core.notify import failure_report
from coder_assets.core.sources.changes import SensorCursor, plan_changes
from coder_assets.core.sources.repos import partition_key_for
from coder_assets.jobs import dataset_job, full_pipeline_job, repo_job, train_deploy_job
from coder_assets.partitions import repo_partitions
from coder_assets.resources.notify import FailureNotifierResource
from coder_assets.resources.repos import RepoSourceResource
from coder_assets.settings import flag_setting, int_setting, timezone_setting, window_setting

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


# Runs that still hold their trigger's batch open: asked for, waiting, or executing.
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _in_flight(instance: dg.DagsterInstance, *job_names: str) -> list[dg.DagsterRun]:
    runs: list[dg.DagsterRun] = []
    for job_name in job_names:
        runs.extend(instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT)))
    return runs


def _latest_storage_id(instance: dg.DagsterInstance, asset: str) -> int:
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records
    return records[0].storage_id if records else 0


# `make dev` runs the demo's embedded default (the tiny dev model): the runs the automation asks for
# there use the demo's short settings, as `make demo` does, instead of production's defaults.
DEMO_SETTINGS = flag_setting("CODER_ASSETS_DEMO_SETTINGS", False)


def automation_run_config(job_name: str, demo: bool) -> dict:
    """Run config of the runs that the automation requests for `job_name`: production's defaults
    (empty), or with `demo` the demo's dataset, training and evaluation settings, the training
    continuing from the deployed adapter."""
    if not demo:
        return {}
    from coder_assets.demo.run import (
        DEMO_AUTOMATION_TRAINING_CONFIG,
        DEMO_DATASET_CONFIG,
        DEMO_EVAL_CONFIG,
    )

    if job_name == dataset_job.name:
        return {"ops": {"dataset_splits": {"config": DEMO_DATASET_CONFIG}}}
    return {
        "ops": {
            "lora_adapter": {"config": DEMO_AUTOMATION_TRAINING_CONFIG},
            "eval_scores": {"config": DEMO_EVAL_CONFIG},
        }
    }


def _listed(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} and {len(keys) - limit} more" if len(keys) > limit else shown


@dg.sensor(
    name="dataset_after_repos_sensor",
    job=dataset_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Builds the dataset once after the repos change: when repo partitions have new samples "
        "(sample_signatures materialized since the last dataset_splits) or were removed, it waits "
        "until no repo_job run is queued or in progress, then requests one dataset_job for the "
        "whole batch (a push, the weekly refresh, a backfill). An unchanged dataset version "
        "publishes nothing new: versions are content-addressed."
    ),
)
def dataset_after_repos_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    instance = context.instance
    cursor = json.loads(context.cursor) if context.cursor else {}
    partitions = sorted(instance.get_dynamic_partitions(REPO_PARTITIONS_NAME))
    built = _latest_storage_id(instance, "dataset_splits")
    new = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("sample_signatures"), after_storage_id=built),
        limit=10_000,
    ).records
    changed = sorted({r.partition_key for r in new if r.partition_key in partitions})
    # The first tick only learns the partitions; later ticks see the ones that went away.
    removed = sorted(set(cursor.get("repos", partitions)) - set(partitions))

    def skip(reason: str, repos: list[str] | None = None) -> dg.SensorResult:
        kept = {**cursor, "repos": cursor.get("repos", partitions) if repos is None else repos}
        return dg.SensorResult(skip_reason=reason, cursor=json.dumps(kept, sort_keys=True))

    if not changed and not removed:
        return skip(
            "No repo partition has new samples since the last dataset build and none was "
            "removed; the dataset is up to date.",
            partitions,
        )
    what = f"{len(changed)} changed repo(s) ({_listed(changed)})" if changed else ""
    if removed:
        what += (" and " if what else "") + f"{len(removed)} removed ({_listed(removed)})"
    running = _in_flight(instance, repo_job.name)
    if running:
        keys = sorted({r.tags.get("dagster/partition", r.run_id[:8]) for r in running})
        return skip(
            f"Waiting for {len(running)} repo_job run(s) still queued or in progress "
            f"({_listed(keys)}) so that one dataset build covers the whole batch; then the "
            f"dataset is built for {what}."
        )
    # A backfill (`make backfill`, the UI's "Materialize all") submits its runs a few at a time:
    # between two submissions no run may be in flight although the batch is not done.
    backfills = instance.get_backfills(status=BulkActionStatus.REQUESTED)
    if backfills:
        return skip(
            f"Waiting for backfill {backfills[0].backfill_id}, which is still submitting runs, "
            f"so that one dataset build covers it; then the dataset is built for {what}."
        )
    building = _in_flight(instance, dataset_job.name, full_pipeline_job.name)
    if building:
        return skip(
            f"{building[0].job_name} run {building[0].run_id[:8]} is building the dataset "
            f"already; {what} are looked at again when it has finished."
        )
    digest = hashlib.sha256(",".join(removed).encode()).hexdigest()[:12]
    run_key = f"dataset:{new[0].storage_id if new else built}:{digest}"
    if cursor.get("requested") == run_key:
        return skip(
            f"dataset_job was already requested for {what} (run key {run_key}) and produced no "
            "new dataset_splits: it failed or was cancelled. Launch dataset_job by hand once the "
            "cause is fixed, or the next repo change requests it again."
        )
    context.log.info(f"Requesting one dataset build for {what}.")
    request = dg.RunRequest(
        run_key=run_key,
        run_config=automation_run_config(dataset_job.name, DEMO_SETTINGS),
        tags={
            TRIGGER_TAG: "dataset_after_repos_sensor",
            CHANGED_REPOS_TAG: _listed(changed + [f"-{key}" for key in removed]),
        },
    )
    return dg.SensorResult(
        run_requests=[request],
        cursor=json.dumps({"repos": partitions, "requested": run_key}, sort_keys=True),
    )


def _published_versions(instance: dg.DagsterInstance, limit: int = 200) -> list[str]:
    """Dataset versions training_dataset published, newest first, each once."""
    versions: list[str] = []
    records = instance.fetch_materializations(dg.AssetKey("training_dataset"), limit=limit).records
    for record in records:
        materialization = record.asset_materialization
        value = materialization.metadata.get("version") if materialization else None
        if value is not None and str(value.value) and str(value.value) not in versions:
            versions.append(str(value.value))
    return versions


def _trained_versions(instance: dg.DagsterInstance, limit: int = 200) -> set[str]:
    """Dataset versions that an adapter was trained on (lora_adapter's materializations)."""
    trained: set[str] = set()
    for record in instance.fetch_materializations(dg.AssetKey("lora_adapter"), limit=limit).records:
        materialization = record.asset_materialization
        value = materialization.metadata.get("dataset_version") if materialization else None
        if value is not None:
            trained.add(str(value.value))
    return trained


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _local(window: MaintenanceWindow, moment: datetime) -> str:
    return moment.astimezone(ZoneInfo(window.timezone)).strftime("%a %Y-%m-%d %H:%M %Z")


def build_train_sensor(
    window: MaintenanceWindow | None,
    auto_train: bool,
    now: Callable[[], datetime] = _utc_now,
    run_config: dict | None = None,
) -> dg.SensorDefinition:
    """train_on_new_dataset_sensor for `window` (None: no window, nothing trains by itself),
    running by default when `auto_train`; `now` is the clock (tests pass their own);
    `run_config` goes with every run it requests."""

    @dg.sensor(
        name="train_on_new_dataset_sensor",
        job=train_deploy_job,
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=(
            dg.DefaultSensorStatus.RUNNING if auto_train else dg.DefaultSensorStatus.STOPPED
        ),
        description=(
            "Inside the maintenance window (CODER_ASSETS_MAINTENANCE_WINDOW, "
            f"now: {window.describe() if window else 'not set'}), requests train_deploy_job "
            "for the newest dataset version without an adapter; older untrained versions are "
            "superseded by it. At most one run per window (with 'always': one per version). "
            "Runs by default when a window is set; CODER_ASSETS_AUTO_TRAIN=0 turns it off."
        ),
    )
    def train_on_new_dataset_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}

        def skip(reason: str) -> dg.SensorResult:
            return dg.SensorResult(skip_reason=reason, cursor=json.dumps(cursor, sort_keys=True))

        if window is None:
            return skip(
                "No maintenance window is set (CODER_ASSETS_MAINTENANCE_WINDOW), so nothing "
                "trains automatically; set one such as 'Sun 01:00-07:00' (or 'always'), or "
                "launch train_deploy_job by hand."
            )
        versions = _published_versions(context.instance)
        if not versions:
            return skip("No dataset version is published yet (training_dataset is missing).")
        trained = _trained_versions(context.instance)
        newest = versions[0]
        if newest in trained:
            return skip(f"The newest dataset version {newest[:12]} already has an adapter.")
        superseded: list[str] = []
        for version in versions[1:]:
            if version in trained:
                break
            superseded.append(version)
        running = _in_flight(context.instance, train_deploy_job.name, full_pipeline_job.name)
        if running:
            return skip(
                f"{running[0].job_name} run {running[0].run_id[:8]} is still queued or running "
                f"on waterdeep; dataset version {newest[:12]} waits for it to finish."
            )
        moment = now()
        opened = window.opened_at(moment)
        if opened is None:
            opening = window.next_opening(moment)
            assert opening is not None
            waiting = f" ({len(superseded) + 1} versions waiting; the newest is trained)"
            return skip(
                f"Dataset version {newest[:12]} has no adapter yet; it waits for the maintenance "
                f"window {window.describe()}, which opens {_local(window, opening)}"
                + (waiting if superseded else "")
                + "."
            )
        if window.always:
            run_key = f"train:{newest}"
        else:
            run_key = f"train:{newest}:{opened.isoformat()}"
            if cursor.get("window") == opened.isoformat():
                opening = window.next_opening(moment)
                assert opening is not None
                return skip(
                    "train_deploy_job already ran once in this maintenance window (opened "
                    f"{_local(window, opened)}); dataset version {newest[:12]} is trained in "
                    f"the next one, from {_local(window, opening)}."
                )
        if cursor.get("requested") == run_key:
            return skip(
                f"train_deploy_job was already requested for dataset version {newest[:12]} "
                f"(run key {run_key}) and left no adapter: it failed or was cancelled. Launch "
                "train_deploy_job by hand once the cause is fixed."
            )
        if superseded:
            context.log.info(
                f"Training dataset version {newest[:12]}; it supersedes the untrained older "
                f"version(s) {_listed([v[:12] for v in superseded])}, which are not trained."
            )
        tags = {TRIGGER_TAG: "train_on_new_dataset_sensor", DATASET_VERSION_TAG: newest}
        if superseded:
            tags[SUPERSEDED_TAG] = _listed([v[:12] for v in superseded])
        cursor.update({"requested": run_key, "window": opened.isoformat()})
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=run_key, run_config=run_config or {}, tags=tags)],
            cursor=json.dumps(cursor, sort_keys=True),
        )

    return train_on_new_dataset_sensor


def build_window_notice_sensor(
    window: MaintenanceWindow | None, now: Callable[[], datetime] = _utc_now
) -> dg.SensorDefinition:
    """maintenance_window_notice for `window`: says so in the run when train_deploy_job is
    launched by hand outside the window (it proceeds)."""

    @dg.run_status_sensor(
        name="maintenance_window_notice",
        run_status=dg.DagsterRunStatus.STARTED,
        monitored_jobs=[train_deploy_job, full_pipeline_job],
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "When train_deploy_job (or full_pipeline_job) starts outside the maintenance window, "
            "launched by hand, writes that into the run's log and tags the run; the run goes on."
        ),
    )
    def maintenance_window_notice(context: dg.RunStatusSensorContext) -> dg.SkipReason | None:
        run = context.dagster_run
        if window is None:
            return dg.SkipReason("No maintenance window is set; every launch is fine.")
        if run.tags.get(TRIGGER_TAG) == "train_on_new_dataset_sensor":
            return dg.SkipReason(f"Run {run.run_id[:8]} was started by the window's own sensor.")
        record = context.instance.get_run_record_by_id(run.run_id)
        started = (
            datetime.fromtimestamp(record.start_time, UTC)
            if record is not None and record.start_time
            else now()
        )
        if window.opened_at(started) is not None:
            return dg.SkipReason(f"Run {run.run_id[:8]} started inside the maintenance window.")
        opening = window.next_opening(started)
        message = (
            f"{run.job_name} started at {_local(window, started)}, outside the maintenance "
            f"window {window.describe()}, launched by hand: it proceeds, and waterdeep's model "
            "server is down while it trains and evaluates"
            + (f" (the window opens next {_local(window, opening)})" if opening else "")
            + "."
        )
        context.instance.report_engine_event(message, run)
        context.instance.add_run_tags(run.run_id, {MAINTENANCE_WINDOW_TAG: "outside"})
        context.log.warning(message)
        return None

    return maintenance_window_notice


TIMEZONE = timezone_setting("CODER_ASSETS_TIMEZONE")
MAINTENANCE_WINDOW = window_setting("CODER_ASSETS_MAINTENANCE_WINDOW", TIMEZONE)
# Training stops waterdeep's model server for hours, so it follows new dataset versions by itself
# only inside a window: on by default once one is set, CODER_ASSETS_AUTO_TRAIN=0 turns it off.
AUTO_TRAIN = flag_setting("CODER_ASSETS_AUTO_TRAIN", MAINTENANCE_WINDOW is not None)
if AUTO_TRAIN and MAINTENANCE_WINDOW is None:
    raise SettingError(
        "CODER_ASSETS_AUTO_TRAIN is on but CODER_ASSETS_MAINTENANCE_WINDOW is not set: automatic "
        "training needs a window, e.g. CODER_ASSETS_MAINTENANCE_WINDOW='Sun 01:00-07:00' (or "
        "'always'); set one, or unset CODER_ASSETS_AUTO_TRAIN"
    )
train_on_new_dataset_sensor = build_train_sensor(
    MAINTENANCE_WINDOW,
    AUTO_TRAIN,
    run_config=automation_run_config(train_deploy_job.name, DEMO_SETTINGS),
)
maintenance_window_notice = build_window_notice_sensor(MAINTENANCE_WINDOW)


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

    from coder_assets.core.deployment.host import WaterdeepBusyError
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
