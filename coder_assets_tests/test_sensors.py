"""gitea_change_sensor evaluated against a real Dagster instance, with the Gitea API server of ours
and with the local-folder source."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import pytest

from coder_assets.assets.snapshots import repo_snapshots
from coder_assets.core.changes import SensorCursor
from coder_assets.resources.gitea import GiteaResource
from coder_assets.resources.repos import LocalReposResource
from coder_assets.sensors import gitea_change_sensor
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


def _dataset_version(instance: dg.DagsterInstance, version: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization("training_dataset", metadata={"version": version})
    )


def _train_tick(instance: dg.DagsterInstance, cursor: str | None = None):
    from coder_assets.definitions import defs
    from coder_assets.sensors import train_on_new_dataset_sensor

    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=defs,
        sensor_name=train_on_new_dataset_sensor.name,
    )
    return train_on_new_dataset_sensor.evaluate_tick(context)


def test_train_sensor_requests_one_run_for_a_new_dataset_version_and_none_after(instance):
    _dataset_version(instance, "a" * 64)

    first = _train_tick(instance)

    (request,) = first.run_requests
    assert request.run_key == "dataset-" + "a" * 64
    from coder_assets.sensors import train_on_new_dataset_sensor

    assert train_on_new_dataset_sensor.job_name == "train_deploy_job"
    # The cursor moved past that materialization: the next tick has nothing new.
    second = _train_tick(instance, first.cursor)
    assert not second.run_requests


def test_train_sensor_skips_a_dataset_version_that_already_has_an_adapter(instance):
    _dataset_version(instance, "b" * 64)
    instance.report_runless_asset_event(
        dg.AssetMaterialization("lora_adapter", metadata={"dataset_version": "b" * 64})
    )

    result = _train_tick(instance)

    assert not result.run_requests
    assert "already has an adapter" in (result.skip_message or "")


def test_train_sensor_is_off_unless_auto_train_is_set():
    from coder_assets.sensors import train_on_new_dataset_sensor

    # The test environment does not set CODER_ASSETS_AUTO_TRAIN.
    assert train_on_new_dataset_sensor.default_status == dg.DefaultSensorStatus.STOPPED
