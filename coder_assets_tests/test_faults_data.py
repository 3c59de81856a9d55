"""Faults of the data side, injected for real (issue 15, cases 4, 5, 7, 8 and 9): a broken HEAD, a
corrupted mirror pack, an S3 endpoint that never answers, a dataset version that moves from the
local bucket to S3 under the same MLflow store, and bad number and path settings."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from coder_assets.assets.dataset import training_dataset
from coder_assets.assets.snapshots import repo_snapshots
from coder_assets.core.errors import SettingError
from coder_assets.core.sources.repos import partition_key_for
from coder_assets.resources import build_executor_config, build_resources, build_s3
from coder_assets.resources.datasets import (
    DatasetStoreUnavailableError,
    LocalDatasetStoreResource,
    S3CompatibleResource,
    S3DatasetStoreResource,
    S3JsonIOManager,
)
from coder_assets.resources.mlflow import MlflowTrackingResource
from coder_assets.resources.repos import LocalReposResource
from coder_assets_tests.conftest import Tick, commit, git, init_repo, resources_for
from coder_assets_tests.test_resources_datasets import write_dataset

KEY = partition_key_for("homelab", "broken")


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every message of the failed steps: the Failure's description and the error."""
    texts = []
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            texts.append(data.user_failure_data.description)
        if data.error is not None:
            texts.append(data.error.message)
    return "\n".join(texts)


def _snapshot(instance, source, tmp_path: Path, key: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [repo_snapshots],
        partition_key=key,
        instance=instance,
        resources=resources_for(source, tmp_path),
        raise_on_error=False,
    )


# -- case 4: unreadable is not empty ----------------------------------------------------------


def test_garbage_head_fails_the_snapshot_naming_repo_and_cause_and_keeps_the_partition(
    instance, repos_root, tmp_path, capfd
):
    good = init_repo(repos_root / "good")
    commit(good, {"a.py": "a = 1\n"})
    broken = init_repo(repos_root / "broken")
    commit(broken, {"b.py": "b = 1\n"})
    source = LocalReposResource(root=str(repos_root), owner="homelab")
    tick = Tick(instance, source)
    tick()
    assert KEY in tick.partitions

    (broken / ".git" / "HEAD").write_text("garbage\n")
    tick()
    tick()

    assert KEY in tick.partitions
    assert "Skipping homelab/broken this tick" in capfd.readouterr().err
    result = _snapshot(instance, source, tmp_path, KEY)
    assert not result.success
    message = _failure_text(result)
    assert "homelab/broken" in message and "cannot be read" in message
    assert "HEAD" in message and "is empty" not in message


def test_a_new_empty_repo_is_still_skipped_and_an_excluded_one_is_removed_with_its_reason(
    instance, repos_root, capfd
):
    kept = init_repo(repos_root / "kept")
    commit(kept, {"a.py": "a = 1\n"})
    secret = init_repo(repos_root / "secret")
    commit(secret, {"s.py": "s = 1\n"})
    init_repo(repos_root / "fresh")
    tick = Tick(instance, LocalReposResource(root=str(repos_root), owner="homelab"))
    tick()
    assert tick.partitions == ["homelab~kept", "homelab~secret"]

    tick.source = LocalReposResource(
        root=str(repos_root), owner="homelab", exclude_repos=["secret"]
    )
    capfd.readouterr()
    tick()

    assert tick.partitions == ["homelab~kept"]
    assert "homelab~secret (excluded_by_name)" in capfd.readouterr().err
    removed = json.loads(tick.cursor)["removed"]
    assert removed[-1]["repo"] == "homelab~secret"
    assert removed[-1]["reason"] == "excluded_by_name"


# -- case 5: a corrupted mirror is cloned again, once -----------------------------------------


def _corrupt_pack(mirror: Path) -> None:
    git(mirror, "repack", "-a", "-d", "-q")
    (pack,) = (mirror / "objects" / "pack").glob("*.pack")
    data = bytearray(pack.read_bytes())
    # Past the 12-byte header, flip a byte every 29 up to the trailing checksum.
    for index in range(12, len(data) - 20, 29):
        data[index] ^= 0xFF
    pack.chmod(0o644)
    pack.write_bytes(bytes(data))


def _warnings(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> list[str]:
    return [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.level == 30 and entry.user_message  # logging.WARNING
    ]


def test_corrupted_mirror_is_cloned_again_once_with_a_warning_then_a_second_corruption_fails(
    instance, repos_root, tmp_path
):
    source_repo = init_repo(repos_root / "broken")
    commit(source_repo, {f"m{i}.py": f"value = {i}\n" * 50 for i in range(20)})
    source = LocalReposResource(root=str(repos_root), owner="homelab")
    instance.add_dynamic_partitions("repos", [KEY])
    assert _snapshot(instance, source, tmp_path, KEY).success
    mirror = tmp_path / "mirrors" / f"{KEY}.git"

    _corrupt_pack(mirror)
    commit(source_repo, {"new.py": "new = 1\n"})
    recovered = _snapshot(instance, source, tmp_path, KEY)

    assert recovered.success, _failure_text(recovered)
    warnings = _warnings(instance, recovered)
    assert any(str(mirror) in w and "cloned it again" in w for w in warnings), warnings
    assert (mirror.parent / f"{mirror.name}.corrupt").is_dir()
    materialization = recovered.asset_materializations_for_node("repo_snapshots")[0]
    assert materialization.metadata["mirror"].value == "re-cloned"

    _corrupt_pack(mirror)
    failed = _snapshot(instance, source, tmp_path, KEY)

    assert not failed.success
    message = _failure_text(failed)
    assert str(mirror) in message and str(source_repo.resolve()) in message
    assert "corrupted again" in message and "rm -rf" in message


def test_a_source_whose_objects_are_gone_fails_naming_the_repo_and_is_not_recloned(
    instance, repos_root, tmp_path
):
    source_repo = init_repo(repos_root / "broken")
    commit(source_repo, {"a.py": "a = 1\n"})
    source = LocalReposResource(root=str(repos_root), owner="homelab")
    instance.add_dynamic_partitions("repos", [KEY])
    assert _snapshot(instance, source, tmp_path, KEY).success
    mirror = tmp_path / "mirrors" / f"{KEY}.git"
    # The source's objects are gone: not the mirror's fault, so no new clone.
    for path in (source_repo / ".git" / "objects").rglob("*"):
        if path.is_file():
            path.chmod(0o644)
            path.unlink()
    commit_file = source_repo / ".git" / "refs" / "heads" / "main"
    commit_file.write_text("1" * 40 + "\n")

    result = _snapshot(instance, source, tmp_path, KEY)

    assert not result.success
    message = _failure_text(result)
    assert "homelab/broken" in message and "cannot be read" in message
    assert not (mirror.parent / f"{mirror.name}.corrupt").exists()


# -- case 7: a hanging S3 endpoint fails within its deadline, naming endpoint and setting -----


@pytest.fixture
def hanging_endpoint() -> Iterator[str]:
    """A TCP server on loopback that accepts every connection and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def _write_dataset(directory: Path, version_salt: str = "") -> str:
    """A dataset version with a manifest complete enough for training_dataset."""
    files = {
        "train.jsonl": b'{"text": "a"}\n' * 4 + version_salt.encode(),
        "valid.jsonl": b'{"text": "b"}\n',
        "test.jsonl": b'{"text": "c"}\n',
    }
    split = {"samples": 1, "lines": 1, "tokens": 10, "by_kind": {"fim": 1}}
    return write_dataset(
        directory,
        files,
        base_model_version="dev",
        max_seq_length=512,
        config={"seed": 7},
        splits={"train": split, "valid": split, "test": split},
        repos={"homelab/a": {"samples_kept": 3}},
        tokens=30,
        samples_in=3,
        dropped={},
        dedup={
            "exact_dropped_units": 0,
            "near_dropped_units": 0,
            "candidate_pairs": 0,
            "merged_pairs": 0,
        },
        decontamination={"samples_dropped": 0},
    )


def test_hanging_s3_endpoint_fails_within_the_deadline_naming_endpoint_and_setting(
    hanging_endpoint, monkeypatch, tmp_path
):
    monkeypatch.setenv("CODER_ASSETS_S3_BUCKET", "datasets")
    monkeypatch.setenv("CODER_ASSETS_S3_ENDPOINT_URL", hanging_endpoint)
    monkeypatch.setenv("CODER_ASSETS_S3_TIMEOUT_SECONDS", "3")
    configured = build_s3()
    assert configured is not None and configured.deadline_seconds == 3
    # The keys travel as dg.EnvVar, which only a Dagster run resolves; the rest is as configured.
    s3 = S3CompatibleResource(
        endpoint_url=configured.endpoint_url,
        region_name=configured.region_name,
        deadline_seconds=configured.deadline_seconds,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    store = S3DatasetStoreResource(bucket="datasets", s3=s3)
    directory = tmp_path / "dataset"
    _write_dataset(directory)

    started = time.monotonic()
    with pytest.raises(DatasetStoreUnavailableError) as raised:
        store.publish(directory)
    elapsed = time.monotonic() - started

    assert elapsed < 10, f"took {elapsed:.1f} s with a 3 s deadline"
    message = str(raised.value)
    assert hanging_endpoint in message
    assert "CODER_ASSETS_S3_ENDPOINT_URL" in message
    assert "CODER_ASSETS_S3_TIMEOUT_SECONDS" in message


def test_asset_values_in_s3_fail_within_the_deadline_too(hanging_endpoint):
    s3 = S3CompatibleResource(
        endpoint_url=hanging_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        deadline_seconds=3,
    )
    values = S3JsonIOManager(s3=s3, bucket="datasets")

    started = time.monotonic()
    with pytest.raises(DatasetStoreUnavailableError, match="CODER_ASSETS_S3_ENDPOINT_URL"):
        values.stored(dg.AssetKey("training_dataset"))
    assert time.monotonic() - started < 10


def test_default_s3_deadline_keeps_every_call_within_about_a_minute():
    config = S3CompatibleResource(endpoint_url="http://127.0.0.1:9").get_client().meta.config
    calls = config.retries["total_max_attempts"]
    backoff = 2 ** (calls - 1) - 1
    worst = calls * (config.connect_timeout + config.read_timeout) + backoff
    assert 30 <= worst <= 65


# -- case 8: a dataset version moves from the local bucket to S3 under one MLflow store -------


@pytest.mark.slow
def test_dataset_version_moves_from_the_local_bucket_to_s3_with_the_same_mlflow_store(
    s3_server, mlflow_server, tmp_path
):
    directory = tmp_path / "dataset"
    version = _write_dataset(directory, version_salt=tmp_path.name)
    tracking = MlflowTrackingResource(
        tracking_uri=mlflow_server.url, experiment_name=f"faults-{tmp_path.name}"
    )
    s3 = S3CompatibleResource(
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.get_client().create_bucket(Bucket="moved-datasets")
    stores = [
        LocalDatasetStoreResource(root=str(tmp_path / "bucket")),
        S3DatasetStoreResource(bucket="moved-datasets", s3=s3),
    ]

    results = [
        training_dataset(
            context=dg.build_asset_context(),
            dataset_splits={"directory": str(directory)},
            dataset_store=store,
            mlflow_tracking=tracking,
        )
        for store in stores
    ]

    first, second = (result.metadata for result in results)
    assert str(first["uri"]).startswith("file://")
    assert str(second["uri"]) == f"s3://moved-datasets/code-finetune/{version}/"
    assert first["mlflow_run_id"] == second["mlflow_run_id"]
    run = MlflowClient(tracking_uri=mlflow_server.url).get_run(str(second["mlflow_run_id"]))
    assert run.data.tags["coder_assets.dataset_uri"] == str(second["uri"])
    assert run.data.params["dataset_version"] == version


# -- case 9: a bad number or path setting names the setting and the value ---------------------


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("CODER_ASSETS_SERVER_PORT", "notanumber", "a whole number between 1 and 65535"),
        ("CODER_ASSETS_SERVER_PORT", "70000", "a whole number between 1 and 65535"),
        ("CODER_ASSETS_KEEP_ADAPTERS", "-1", "a whole number at least 1"),
        ("CODER_ASSETS_SERVER_READY_TIMEOUT", "soon", "a number of at least"),
        ("CODER_ASSETS_S3_TIMEOUT_SECONDS", "a minute", "a number of at least 1"),
        ("CODER_ASSETS_MIRRORS_DIR", "relative/mirrors", "an absolute path"),
        ("CODER_ASSETS_WATERDEEP_LOCK_FILE", "waterdeep.lock", "an absolute path"),
    ],
)
def test_a_bad_setting_names_the_setting_the_value_and_what_is_expected(
    monkeypatch, tmp_path, name, raw, expected
):
    monkeypatch.setenv("CODER_ASSETS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CODER_ASSETS_S3_BUCKET", "datasets")
    monkeypatch.setenv(name, raw)

    with pytest.raises(SettingError) as raised:
        build_resources()

    message = str(raised.value)
    assert name in message and repr(raw) in message and expected in message


def test_a_bad_ssh_port_names_the_setting(monkeypatch):
    monkeypatch.setenv("CODER_ASSETS_WATERDEEP_TRANSPORT", "ssh")
    monkeypatch.setenv("CODER_ASSETS_WATERDEEP_SSH_PORT", "abc")

    with pytest.raises(SettingError, match=r"CODER_ASSETS_WATERDEEP_SSH_PORT .* got 'abc'"):
        build_executor_config()


def test_a_home_that_is_a_file_names_the_setting(monkeypatch, tmp_path):
    home = tmp_path / "home"
    home.write_text("not a folder\n")
    monkeypatch.setenv("CODER_ASSETS_HOME", str(home))

    with pytest.raises(SettingError, match="CODER_ASSETS_HOME must name a folder"):
        build_resources()


@pytest.mark.slow
def test_the_code_location_refuses_to_load_with_a_bad_port_naming_the_setting(tmp_path):
    env = {
        **os.environ,
        "CODER_ASSETS_HOME": str(tmp_path / "home"),
        "CODER_ASSETS_SERVER_PORT": "notanumber",
    }
    proc = subprocess.run(
        [sys.executable, "-c", "import coder_assets.definitions"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert proc.returncode != 0
    assert "CODER_ASSETS_SERVER_PORT must be a whole number" in proc.stderr
    assert "'notanumber'" in proc.stderr
    assert "invalid literal for int()" not in proc.stderr
