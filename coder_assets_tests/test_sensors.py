"""The sensors evaluated against a real Dagster instance: gitea_change_sensor with the Gitea API
server of ours and with the local-folder source; the pipeline that follows a change (repo runs,
one dataset build, training in the maintenance window) with the daemon's part played by the
test."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.test_utils import create_run_for_test

from coder_assets.assets.snapshots import repo_snapshots
from coder_assets.constants import (
    CHANGED_REPOS_TAG,
    DATASET_VERSION_TAG,
    MAINTENANCE_WINDOW_TAG,
    SUPERSEDED_TAG,
    TRIGGER_TAG,
)
from coder_assets.core.deployment.window import parse_window
from coder_assets.core.sources.changes import SensorCursor
from coder_assets.resources.gitea import GiteaResource
from coder_assets.resources.repos import LocalReposResource
from coder_assets.schedules import weekly_refresh_schedule
from coder_assets.sensors import (
    build_train_sensor,
    build_window_notice_sensor,
    dataset_after_repos_sensor,
    gitea_change_sensor,
)
from coder_assets_tests.conftest import (
    GITEA_ORG,
    GITEA_TOKEN,
    Tick,
    commit,
    free_port,
    init_repo,
    requested_shas,
    resources_for,
)


def _gitea_source(gitea, **overrides) -> GiteaResource:
    settings = {"url": gitea.base_url, "token": GITEA_TOKEN, "org": GITEA_ORG, "page_size": 2}
    return GiteaResource(**{**settings, "max_retries": 1, **overrides})


def _pushed(gitea, tmp_path: Path, name: str) -> tuple[Path, str]:
    repo = init_repo(tmp_path / "src" / name)
    sha = commit(repo, {"README.md": f"# {name}\n"}, f"Add {name}")
    gitea.add_repo(name, repo)
    return repo, sha


def test_first_tick_adds_partitions_and_requests_every_repo_with_its_sha(gitea, instance, tmp_path):
    shas = {f"homelab~{n}": _pushed(gitea, tmp_path, n)[1] for n in ("a", "b", "c")}
    tick = Tick(instance, _gitea_source(gitea))

    result = tick()

    assert tick.partitions == sorted(shas)
    assert requested_shas(result) == shas
    assert sorted(r.run_key for r in result.run_requests) == sorted(
        f"{key}@{sha}" for key, sha in shas.items()
    )


def test_no_change_requests_nothing(gitea, instance, tmp_path):
    _pushed(gitea, tmp_path, "a")
    tick = Tick(instance, _gitea_source(gitea))
    tick()

    result = tick()

    assert requested_shas(result) == {}
    assert "No repository changed" in result.skip_reason.skip_message


def test_sensor_requests_only_changed_repos(gitea, instance, tmp_path):
    repo_a, _ = _pushed(gitea, tmp_path, "a")
    _pushed(gitea, tmp_path, "b")
    tick = Tick(instance, _gitea_source(gitea))
    tick()

    new_sha = commit(repo_a, {"main.go": "package main\n"}, "Add entry point")
    gitea.push_from("a", repo_a)
    result = tick()

    assert requested_shas(result) == {"homelab~a": new_sha}
    assert result.run_requests[0].run_key == f"homelab~a@{new_sha}"
    assert requested_shas(tick()) == {}


def test_new_and_deleted_repos_change_the_partitions(gitea, instance, tmp_path):
    _pushed(gitea, tmp_path, "a")
    _pushed(gitea, tmp_path, "b")
    tick = Tick(instance, _gitea_source(gitea))
    tick()

    gitea.remove_repo("b")
    _, sha_c = _pushed(gitea, tmp_path, "c")
    result = tick()

    assert tick.partitions == ["homelab~a", "homelab~c"]
    assert requested_shas(result) == {"homelab~c": sha_c}
    removed = SensorCursor.from_json(tick.cursor).removed
    assert [r["repo"] for r in removed] == ["homelab~b"] and removed[0]["removed_at"]


def test_cursor_round_trips_through_json(gitea, instance, tmp_path):
    _, sha = _pushed(gitea, tmp_path, "a")
    tick = Tick(instance, _gitea_source(gitea))
    tick()

    cursor = SensorCursor.from_json(tick.cursor)

    assert cursor.heads == {"homelab~a": sha}
    assert SensorCursor.from_json(cursor.to_json()) == cursor


def test_gitea_down_skips_with_the_error_and_catches_up_later(gitea, instance, tmp_path):
    _pushed(gitea, tmp_path, "a")
    dead_url = f"http://127.0.0.1:{free_port()}"
    tick = Tick(
        instance, GiteaResource(url=dead_url, token=GITEA_TOKEN, org=GITEA_ORG, max_retries=0)
    )

    down = tick()

    assert isinstance(down, dg.SkipReason)
    assert "Could not list repositories" in down.skip_message and dead_url in down.skip_message
    assert tick.cursor is None and tick.partitions == []
    tick.source = _gitea_source(gitea)
    assert list(requested_shas(tick())) == ["homelab~a"]


def test_bad_token_skips_with_a_clear_reason_and_no_token(gitea, instance, tmp_path, caplog):
    _pushed(gitea, tmp_path, "a")
    wrong = "0badc0de" * 5
    tick = Tick(instance, _gitea_source(gitea, token=wrong))

    with caplog.at_level(logging.DEBUG):
        result = tick()

    assert isinstance(result, dg.SkipReason) and "401" in result.skip_message
    assert wrong not in result.skip_message + caplog.text
    assert GITEA_TOKEN not in result.skip_message + caplog.text


def test_repo_already_snapshotted_at_its_head_is_not_requested_after_a_cursor_reset(
    instance, tmp_path, repos_root
):
    repo = init_repo(repos_root / "svc")
    commit(repo, {"a.py": "a = 1\n"})
    source = LocalReposResource(root=str(repos_root), owner="homelab")
    instance.add_dynamic_partitions("repos", ["homelab~svc"])
    dg.materialize(
        [repo_snapshots],
        partition_key="homelab~svc",
        instance=instance,
        resources=resources_for(source, tmp_path),
    )

    result = Tick(instance, source)()

    assert requested_shas(result) == {}


def test_sensor_works_the_same_against_the_local_folder_source(instance, repos_root):
    first = init_repo(repos_root / "one")
    commit(first, {"a.py": "a = 1\n"})
    second = init_repo(repos_root / "two")
    commit(second, {"b.py": "b = 1\n"})
    init_repo(repos_root / "empty")
    tick = Tick(instance, LocalReposResource(root=str(repos_root), owner="homelab"))

    assert set(requested_shas(tick())) == {"homelab~one", "homelab~two"}
    new_sha = commit(second, {"c.py": "c = 1\n"}, "Add c")
    assert requested_shas(tick()) == {"homelab~two": new_sha}
    assert requested_shas(tick()) == {}
    assert tick.partitions == ["homelab~one", "homelab~two"]


def test_unreadable_repo_is_reported_and_does_not_stop_the_others(instance, repos_root, caplog):
    good = init_repo(repos_root / "good")
    sha = commit(good, {"a.py": "a = 1\n"})
    broken = init_repo(repos_root / "broken")
    commit(broken, {"a.py": "a = 1\n"})
    (broken / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (broken / ".git" / "refs" / "heads" / "main").write_text("not-a-sha\n")
    tick = Tick(instance, LocalReposResource(root=str(repos_root), owner="homelab"))

    result = tick()

    assert requested_shas(result) == {"homelab~good": sha}


@pytest.mark.parametrize("interval", [60])
def test_sensor_default_interval_is_a_minute(interval):
    assert gitea_change_sensor.minimum_interval_seconds == interval


class Daemon:
    """The daemon's part in a test: runs that sensors and schedules request are created in the
    instance (not started yet), then started and finished with the materializations their assets
    would report. The sensors themselves are evaluated for real against the instance."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self.requested: dict[str, list[dg.RunRequest]] = {}

    def submit(self, job: str, result) -> list[dg.DagsterRun]:
        requests = [] if isinstance(result, dg.SkipReason) else _requests(result)
        self.requested.setdefault(job, []).extend(requests)
        runs = []
        for request in requests:
            tags = dict(request.tags)
            if request.partition_key:
                tags["dagster/partition"] = request.partition_key
            runs.append(
                create_run_for_test(
                    self.instance, job_name=job, status=dg.DagsterRunStatus.NOT_STARTED, tags=tags
                )
            )
        return runs

    def start(self, run: dg.DagsterRun, at: datetime | None = None) -> None:
        self.instance.report_dagster_event(
            DagsterEvent(DagsterEventType.RUN_START.value, job_name=run.job_name),
            run_id=run.run_id,
            timestamp=at.timestamp() if at else None,
        )

    def finish(self, run: dg.DagsterRun, *materializations: dg.AssetMaterialization) -> None:
        if self.instance.get_run_by_id(run.run_id).status != dg.DagsterRunStatus.STARTED:
            self.start(run)
        for materialization in materializations:
            self.instance.report_runless_asset_event(materialization)
        self.instance.report_dagster_event(
            DagsterEvent(DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name),
            run_id=run.run_id,
        )


def _requests(result) -> list[dg.RunRequest]:
    if isinstance(result, dg.SkipReason):
        return []
    if isinstance(result, dg.RunRequest):
        return [result]
    if isinstance(result, list):
        return result
    return list(result.run_requests or [])


def _skip(result) -> str:
    assert not _requests(result), f"expected a skip, got {_requests(result)}"
    reason = result if isinstance(result, dg.SkipReason) else result.skip_reason
    return reason.skip_message if isinstance(reason, dg.SkipReason) else str(reason)


def _signatures(key: str) -> dg.AssetMaterialization:
    return dg.AssetMaterialization("sample_signatures", partition=key)


def _dataset_built(version: str = "d" * 64) -> list[dg.AssetMaterialization]:
    return [
        dg.AssetMaterialization("dataset_splits", metadata={"version": version}),
        dg.AssetMaterialization("training_dataset", metadata={"version": version}),
    ]


def _adapter(version: str) -> dg.AssetMaterialization:
    return dg.AssetMaterialization("lora_adapter", metadata={"dataset_version": version})


class DatasetTick:
    """dataset_after_repos_sensor evaluated with its cursor carried over, as the daemon does."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self.cursor: str | None = None

    def __call__(self) -> dg.SensorResult:
        result = dataset_after_repos_sensor(
            dg.build_sensor_context(instance=self.instance, cursor=self.cursor)
        )
        self.cursor = result.cursor
        return result


def _four_repos(repos_root: Path) -> dict[str, Path]:
    repos = {}
    for name in ("one", "two", "three", "four"):
        repos[name] = init_repo(repos_root / name)
        commit(repos[name], {f"{name}.py": f"{name} = 1\n"}, f"Add {name}")
    return repos


def _settle_repos(daemon: Daemon, runs: list[dg.DagsterRun]) -> None:
    for run in runs:
        daemon.finish(run, _signatures(run.tags["dagster/partition"]))


def test_push_to_one_of_four_repos_gives_one_repo_run_then_one_dataset_build(instance, repos_root):
    repos = _four_repos(repos_root)
    daemon = Daemon(instance)
    change = Tick(instance, LocalReposResource(root=str(repos_root), owner="homelab"))
    dataset = DatasetTick(instance)
    _settle_repos(daemon, daemon.submit("repo_job", change()))
    (first_build,) = daemon.submit("dataset_job", dataset())
    daemon.finish(first_build, *_dataset_built("1" * 64))
    assert "up to date" in _skip(dataset())

    commit(repos["two"], {"more.py": "more = 2\n"}, "Add more")
    (repo_run,) = daemon.submit("repo_job", change())
    assert repo_run.tags["dagster/partition"] == "homelab~two"
    assert "up to date" in _skip(dataset())  # nothing new until the run has snapshotted
    daemon.finish(repo_run, _signatures("homelab~two"))
    (build,) = daemon.submit("dataset_job", dataset())
    assert "already" in _skip(dataset())  # the build is under way: no second one
    daemon.finish(build, *_dataset_built("2" * 64))

    assert "up to date" in _skip(dataset())
    assert [r.partition_key for r in daemon.requested["repo_job"]].count("homelab~two") == 2
    assert len(daemon.requested["repo_job"]) == 5 and len(daemon.requested["dataset_job"]) == 2
    assert build.tags[TRIGGER_TAG] == "dataset_after_repos_sensor"
    assert build.tags[CHANGED_REPOS_TAG] == "homelab~two"
    assert repo_run.tags[TRIGGER_TAG] == "gitea_change_sensor"


def test_weekly_refresh_of_four_repos_gives_four_repo_runs_and_one_dataset_build(instance):
    keys = [f"homelab~{name}" for name in ("one", "two", "three", "four")]
    instance.add_dynamic_partitions("repos", keys)
    daemon = Daemon(instance)
    dataset = DatasetTick(instance)
    for key in keys:
        instance.report_runless_asset_event(_signatures(key))
    for materialization in _dataset_built("1" * 64):
        instance.report_runless_asset_event(materialization)
    assert "up to date" in _skip(dataset())

    runs = daemon.submit(
        "repo_job",
        weekly_refresh_schedule(
            dg.build_schedule_context(
                instance=instance, scheduled_execution_time=datetime(2026, 12, 6, 3, tzinfo=UTC)
            )
        ),
    )
    assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(keys)
    for finished, run in enumerate(runs[:-1], start=1):
        daemon.finish(run, _signatures(run.tags["dagster/partition"]))
        waiting = _skip(dataset())
        assert f"Waiting for {len(runs) - finished} repo_job run(s)" in waiting
    daemon.finish(runs[-1], _signatures(runs[-1].tags["dagster/partition"]))
    (build,) = daemon.submit("dataset_job", dataset())
    daemon.finish(build, *_dataset_built("2" * 64))

    assert "up to date" in _skip(dataset())
    assert len(daemon.requested["repo_job"]) == 4 and len(daemon.requested["dataset_job"]) == 1
    assert all(r.tags[TRIGGER_TAG] == "weekly_refresh_schedule" for r in runs)
    assert build.tags[CHANGED_REPOS_TAG] == ", ".join(sorted(keys))


def test_no_change_gives_nothing(instance, repos_root):
    _four_repos(repos_root)
    daemon = Daemon(instance)
    change = Tick(instance, LocalReposResource(root=str(repos_root), owner="homelab"))
    dataset = DatasetTick(instance)
    _settle_repos(daemon, daemon.submit("repo_job", change()))
    (build,) = daemon.submit("dataset_job", dataset())
    daemon.finish(build, *_dataset_built("1" * 64), _adapter("1" * 64))
    train = TrainTick(instance, parse_window("always"))

    assert requested_shas(change()) == {}
    assert "up to date" in _skip(dataset())
    assert "already has an adapter" in _skip(train())


def test_a_removed_repo_rebuilds_the_dataset_once(instance):
    instance.add_dynamic_partitions("repos", ["homelab~one", "homelab~two"])
    dataset = DatasetTick(instance)
    for materialization in _dataset_built():
        instance.report_runless_asset_event(materialization)
    dataset()

    instance.delete_dynamic_partition("repos", "homelab~two")
    (request,) = dataset().run_requests

    assert request.tags[CHANGED_REPOS_TAG] == "-homelab~two"
    assert "up to date" in _skip(dataset())


def test_a_backfill_still_submitting_runs_holds_the_dataset_build(instance):
    from coder_assets.definitions import defs

    keys = ["homelab~one", "homelab~two"]
    instance.add_dynamic_partitions("repos", keys)
    dataset = DatasetTick(instance)
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id="weekly1",
        asset_graph=defs.resolve_asset_graph(),
        partition_names=keys,
        asset_selection=[dg.AssetKey("repo_snapshots")],
        backfill_timestamp=FRIDAY.timestamp(),
        tags={},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=None,
        description=None,
        run_config=None,
    )
    instance.add_backfill(backfill)
    # The first partition is done, the backfill has not submitted the second run yet.
    instance.report_runless_asset_event(_signatures("homelab~one"))

    held = _skip(dataset())
    instance.update_backfill(backfill.with_status(BulkActionStatus.COMPLETED_SUCCESS))

    assert "Waiting for backfill weekly1" in held
    assert len(dataset().run_requests) == 1


def test_a_failed_dataset_build_is_not_requested_again_and_says_why(instance):
    instance.add_dynamic_partitions("repos", ["homelab~one"])
    daemon = Daemon(instance)
    dataset = DatasetTick(instance)
    instance.report_runless_asset_event(_signatures("homelab~one"))
    (build,) = daemon.submit("dataset_job", dataset())
    instance.report_run_failed(build)

    assert "failed or was cancelled" in _skip(dataset())


# 2026-12-04 is a Friday; the window opens on Sundays.
FRIDAY = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
SUNDAY_2AM = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
SUNDAY_3AM = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
NEXT_SUNDAY_2AM = datetime(2026, 12, 13, 2, 0, tzinfo=UTC)


class TrainTick:
    """train_on_new_dataset_sensor for `window`, on a clock the test moves, cursor carried over."""

    def __init__(
        self, instance: dg.DagsterInstance, window, now: datetime = SUNDAY_2AM, run_config=None
    ) -> None:
        self.instance = instance
        self.now = now
        self.cursor: str | None = None
        self.sensor = build_train_sensor(
            window, auto_train=True, now=lambda: self.now, run_config=run_config
        )

    def __call__(self) -> dg.SensorResult:
        result = self.sensor(dg.build_sensor_context(instance=self.instance, cursor=self.cursor))
        self.cursor = result.cursor
        return result


def _publish(instance: dg.DagsterInstance, version: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization("training_dataset", metadata={"version": version})
    )


SUNDAYS = parse_window("Sun 01:00-07:00")


def test_new_dataset_version_inside_the_window_gives_one_training(instance):
    daemon = Daemon(instance)
    short = {"ops": {"lora_adapter": {"config": {"iters": 2}}}}
    train = TrainTick(instance, SUNDAYS, run_config=short)
    _publish(instance, "a" * 64)

    result = train()
    assert result.run_requests[0].run_config == short
    (run,) = daemon.submit("train_deploy_job", result)
    assert "still queued or running" in _skip(train())
    daemon.finish(run, _adapter("a" * 64))

    assert "already has an adapter" in _skip(train())
    assert run.tags[TRIGGER_TAG] == "train_on_new_dataset_sensor"
    assert run.tags[DATASET_VERSION_TAG] == "a" * 64
    assert len(daemon.requested["train_deploy_job"]) == 1


def test_outside_the_window_nothing_trains_until_it_opens(instance):
    daemon = Daemon(instance)
    train = TrainTick(instance, SUNDAYS, now=FRIDAY)
    _publish(instance, "a" * 64)

    waiting = _skip(train())
    train.now = SUNDAY_2AM
    (run,) = daemon.submit("train_deploy_job", train())

    assert "waits for the maintenance window Sun 01:00-07:00 (UTC)" in waiting
    assert "opens Sun 2026-12-06 01:00" in waiting
    assert run.tags[DATASET_VERSION_TAG] == "a" * 64


def test_two_versions_before_the_window_opens_give_one_training_of_the_newer(instance):
    daemon = Daemon(instance)
    train = TrainTick(instance, SUNDAYS, now=FRIDAY)
    _publish(instance, "a" * 64)
    assert "waits for the maintenance window" in _skip(train())
    _publish(instance, "b" * 64)
    assert "2 versions waiting; the newest is trained" in _skip(train())

    train.now = SUNDAY_2AM
    (run,) = daemon.submit("train_deploy_job", train())
    daemon.finish(run, _adapter("b" * 64))

    assert run.tags[DATASET_VERSION_TAG] == "b" * 64
    assert run.tags[SUPERSEDED_TAG] == "a" * 12
    assert "already has an adapter" in _skip(train())
    assert len(daemon.requested["train_deploy_job"]) == 1


def test_at_most_one_training_per_window(instance):
    daemon = Daemon(instance)
    train = TrainTick(instance, SUNDAYS)
    _publish(instance, "a" * 64)
    (first,) = daemon.submit("train_deploy_job", train())
    daemon.finish(first, _adapter("a" * 64))

    _publish(instance, "b" * 64)
    train.now = SUNDAY_3AM
    once = _skip(train())
    train.now = NEXT_SUNDAY_2AM
    (second,) = daemon.submit("train_deploy_job", train())

    assert "already ran once in this maintenance window" in once
    assert "from Sun 2026-12-13 01:00" in once
    assert second.tags[DATASET_VERSION_TAG] == "b" * 64


def test_always_open_window_trains_each_new_version(instance):
    daemon = Daemon(instance)
    train = TrainTick(instance, parse_window("always"), now=FRIDAY)
    for version in ("a" * 64, "b" * 64):
        _publish(instance, version)
        (run,) = daemon.submit("train_deploy_job", train())
        daemon.finish(run, _adapter(version))

    assert [r.tags[DATASET_VERSION_TAG] for r in daemon.requested["train_deploy_job"]] == [
        "a" * 64,
        "b" * 64,
    ]


def test_a_failed_training_is_not_requested_again_in_its_window_and_says_why(instance):
    daemon = Daemon(instance)
    train = TrainTick(instance, parse_window("always"))
    _publish(instance, "a" * 64)
    (run,) = daemon.submit("train_deploy_job", train())
    instance.report_run_failed(run)

    assert "failed or was cancelled" in _skip(train())


def test_without_a_window_nothing_trains_and_the_sensor_is_stopped():
    from coder_assets.sensors import train_on_new_dataset_sensor

    # The test environment sets no CODER_ASSETS_MAINTENANCE_WINDOW.
    assert train_on_new_dataset_sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert build_train_sensor(SUNDAYS, True).default_status == dg.DefaultSensorStatus.RUNNING
    assert build_train_sensor(SUNDAYS, False).default_status == dg.DefaultSensorStatus.STOPPED
    assert train_on_new_dataset_sensor.job_name == "train_deploy_job"


def test_without_a_window_the_sensor_says_how_to_set_one(instance):
    _publish(instance, "a" * 64)

    assert "CODER_ASSETS_MAINTENANCE_WINDOW" in _skip(TrainTick(instance, None)())


def _notice(instance: dg.DagsterInstance, run: dg.DagsterRun, window):
    sensor = build_window_notice_sensor(window)
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=DagsterEvent(DagsterEventType.RUN_START.value, job_name=run.job_name),
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run.run_id),
    )
    return sensor(context)


def test_a_hand_launch_outside_the_window_says_so_in_the_run_and_proceeds(instance):
    daemon = Daemon(instance)
    run = create_run_for_test(
        instance, job_name="train_deploy_job", status=dg.DagsterRunStatus.NOT_STARTED
    )
    daemon.start(run, at=FRIDAY)

    _notice(instance, run, SUNDAYS)

    logged = [
        entry.message
        for entry in instance.all_logs(run.run_id)
        if "outside the maintenance window" in (entry.message or "")
    ]
    assert logged and "launched by hand: it proceeds" in logged[0]
    assert instance.get_run_by_id(run.run_id).tags[MAINTENANCE_WINDOW_TAG] == "outside"
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED


def test_a_launch_inside_the_window_or_by_the_sensor_gets_no_notice(instance):
    daemon = Daemon(instance)
    inside = create_run_for_test(instance, job_name="train_deploy_job")
    daemon.start(inside, at=SUNDAY_2AM)
    by_sensor = create_run_for_test(
        instance, job_name="train_deploy_job", tags={TRIGGER_TAG: "train_on_new_dataset_sensor"}
    )
    daemon.start(by_sensor, at=FRIDAY)

    assert "inside the maintenance window" in _notice(instance, inside, SUNDAYS).skip_message
    assert "window's own sensor" in _notice(instance, by_sensor, SUNDAYS).skip_message
    for run in (inside, by_sensor):
        assert MAINTENANCE_WINDOW_TAG not in instance.get_run_by_id(run.run_id).tags
