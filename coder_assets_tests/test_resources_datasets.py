"""The dataset stores against a real S3 API (moto's standalone server on loopback) and a local
folder laid out like the bucket: idempotent publishes, the manifest last, verified fetches."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from coder_assets.resources.datasets import (
    MANIFEST_NAME,
    DatasetIncompleteError,
    DatasetIntegrityError,
    DatasetManifestError,
    DatasetStoreError,
    DatasetStoreResource,
    DatasetStoreUnavailableError,
    LocalDatasetStoreResource,
    S3CompatibleResource,
    S3DatasetStoreResource,
)
from coder_assets_tests.conftest import REPO_ROOT, free_port

ACCESS_KEY = "testing"
# Distinctive so that a leak is unmistakable; tests assert it never shows up.
SECRET_KEY = "s3cr3t-Dataset-Store-Key-7f3a9c2e51b84d06"
REGION = "us-east-1"
PREFIX = "code-finetune"

DATASET_FILES = {
    "train.jsonl": b'{"text": "def add(a, b):\\n    return a + b\\n"}\n' * 40,
    "valid.jsonl": b'{"text": "x = 1\\n"}\n' * 5,
    "test.jsonl": b'{"text": "y = 2\\n"}\n' * 5,
    "provenance.parquet": bytes(range(256)) * 8,
}
FILE_NAMES = sorted(DATASET_FILES)


def write_dataset(
    directory: Path, files: dict[str, bytes] | None = None, **manifest_fields: object
) -> str:
    """A dataset version in `directory` (files + manifest.json with extra keys, and
    `manifest_fields` on top); its version."""
    files = DATASET_FILES if files is None else files
    directory.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, data in files.items():
        (directory / name).write_bytes(data)
        entries[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    digest = hashlib.sha256()
    for name, entry in sorted(entries.items()):
        digest.update(f"{name}\0{entry['sha256']}\n".encode())
    version = digest.hexdigest()
    manifest = {
        "version": version,
        "files": entries,
        "created_at": "2026-11-22T10:00:00Z",
        "counts": {"train": 40, "valid": 5, "test": 5},
        **manifest_fields,
    }
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return version


def s3_fields(endpoint_url: str, **overrides: object) -> dict[str, object]:
    return {
        "endpoint_url": endpoint_url,
        "region_name": REGION,
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY,
        "max_attempts": 2,
        **overrides,
    }


def s3_settings(endpoint_url: str, **overrides: object) -> S3CompatibleResource:
    return S3CompatibleResource(**s3_fields(endpoint_url, **overrides))


def admin_client(endpoint_url: str):
    """A plain boto3 client for arranging and inspecting the server behind the store's back."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@dataclass
class StoreUnderTest:
    """A store plus ways to look at and damage what it holds, the same for both kinds."""

    kind: str
    store: DatasetStoreResource
    names: Callable[[str], list[str]]
    snapshot: Callable[[str], dict[str, object]]
    overwrite: Callable[[str, str, bytes], None]
    delete: Callable[[str, str], None]
    subprocess_settings: dict[str, object] = field(repr=False)


def _local_store(root: Path) -> StoreUnderTest:
    store = LocalDatasetStoreResource(root=str(root), prefix=PREFIX)

    def folder(version: str) -> Path:
        return root / PREFIX / version

    def names(version: str) -> list[str]:
        return sorted(p.name for p in folder(version).iterdir()) if folder(version).is_dir() else []

    def snapshot(version: str) -> dict[str, object]:
        return {
            p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for p in folder(version).iterdir()
        }

    def overwrite(version: str, name: str, data: bytes) -> None:
        (folder(version) / name).write_bytes(data)

    def delete(version: str, name: str) -> None:
        (folder(version) / name).unlink()

    return StoreUnderTest(
        "local", store, names, snapshot, overwrite, delete, {"root": str(root), "prefix": PREFIX}
    )


def _s3_store(endpoint_url: str, bucket: str) -> StoreUnderTest:
    store = S3DatasetStoreResource(bucket=bucket, prefix=PREFIX, s3=s3_settings(endpoint_url))
    admin = admin_client(endpoint_url)

    def keys(version: str) -> list[str]:
        listing = admin.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/{version}/")
        return [item["Key"] for item in listing.get("Contents", [])]

    def names(version: str) -> list[str]:
        return sorted(key.rsplit("/", 1)[1] for key in keys(version))

    def snapshot(version: str) -> dict[str, object]:
        result = {}
        for key in keys(version):
            obj = admin.get_object(Bucket=bucket, Key=key)
            result[key] = (obj["ETag"], obj["LastModified"], obj["Metadata"], obj["Body"].read())
        return result

    def overwrite(version: str, name: str, data: bytes) -> None:
        key = f"{PREFIX}/{version}/{name}"
        # Keep the recorded sha256: corruption that metadata checks alone would not notice.
        metadata = admin.head_object(Bucket=bucket, Key=key)["Metadata"]
        admin.put_object(Bucket=bucket, Key=key, Body=data, Metadata=metadata)

    def delete(version: str, name: str) -> None:
        admin.delete_object(Bucket=bucket, Key=f"{PREFIX}/{version}/{name}")

    settings = {
        "bucket": bucket,
        "prefix": PREFIX,
        "s3": {
            "endpoint_url": endpoint_url,
            "region_name": REGION,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
        },
    }
    return StoreUnderTest("s3", store, names, snapshot, overwrite, delete, settings)


@pytest.fixture(autouse=True)
def _no_host_aws_config(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's profiles and credentials must not change what the tests talk to.
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture
def bucket(s3_server) -> str:
    """A new, empty bucket of this test's own on the shared server."""
    name = f"datasets-{uuid.uuid4().hex[:16]}"
    admin_client(s3_server.endpoint_url).create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> StoreUnderTest:
    if request.param == "local":
        return _local_store(tmp_path / "bucket")
    server = request.getfixturevalue("s3_server")
    return _s3_store(server.endpoint_url, request.getfixturevalue("bucket"))


@pytest.fixture
def s3_target(s3_server, bucket: str) -> StoreUnderTest:
    return _s3_store(s3_server.endpoint_url, bucket)


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, str]:
    directory = tmp_path / "dataset"
    return directory, write_dataset(directory)


def test_publish_then_republish_sends_nothing_and_leaves_objects_unchanged(target, dataset):
    directory, version = dataset

    first = target.store.publish(directory)
    before = target.snapshot(version)
    second = target.store.publish(directory)

    assert first.sent == [*FILE_NAMES, MANIFEST_NAME]
    assert first.skipped == []
    assert first.bytes_sent == sum(len(data) for data in DATASET_FILES.values()) + len(
        (directory / MANIFEST_NAME).read_bytes()
    )
    assert second.sent == []
    assert second.skipped == [*FILE_NAMES, MANIFEST_NAME]
    assert second.bytes_sent == 0
    assert target.snapshot(version) == before
    assert target.names(version) == sorted([*FILE_NAMES, MANIFEST_NAME])
    assert target.store.exists(version)


def test_uri_names_the_version_folder_laid_out_like_the_bucket(target, dataset):
    directory, version = dataset

    result = target.store.publish(directory)

    if target.kind == "s3":
        expected = f"s3://{target.store.bucket}/{PREFIX}/{version}/"
    else:
        expected = (Path(target.store.root) / PREFIX / version).resolve().as_uri() + "/"
    assert target.store.uri(version) == result.uri == expected
    assert result.manifest_uri == expected + MANIFEST_NAME


KILL_AFTER_FIRST_SEND = """
import json, os, signal, sys
from pathlib import Path
from coder_assets.resources import datasets

kind, settings, directory = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
if kind == "s3":
    settings["s3"] = datasets.S3CompatibleResource(**settings["s3"])
    store = datasets.S3DatasetStoreResource(**settings)
else:
    store = datasets.LocalDatasetStoreResource(**settings)
send = type(store)._send

def send_then_die(self, *args, **kwargs):
    send(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

type(store)._send = send_then_die
store.publish(directory)
sys.exit("publish returned although the process should have been killed")
"""


def test_upload_killed_halfway_leaves_no_manifest_and_republish_completes(target, dataset):
    directory, version = dataset

    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            KILL_AFTER_FIRST_SEND,
            target.kind,
            json.dumps(target.subprocess_settings),
            str(directory),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert target.names(version) == [FILE_NAMES[0]]
    assert not target.store.exists(version)
    with pytest.raises(DatasetIncompleteError):
        target.store.fetch(version, directory.parent / "fetched")

    result = target.store.publish(directory)

    assert result.skipped == [FILE_NAMES[0]]
    assert result.sent == [*FILE_NAMES[1:], MANIFEST_NAME]
    assert target.names(version) == sorted([*FILE_NAMES, MANIFEST_NAME])
    assert target.store.exists(version)


def test_manifest_is_sent_last_after_every_file_is_confirmed(target, dataset, monkeypatch):
    directory, version = dataset
    events: list[tuple[str, str]] = []
    store_class = type(target.store)
    send, stat = store_class._send, store_class._stat

    def recording_send(self, version, name, *args):
        events.append(("send", name))
        return send(self, version, name, *args)

    def recording_stat(self, version, name):
        events.append(("stat", name))
        return stat(self, version, name)

    monkeypatch.setattr(store_class, "_send", recording_send)
    monkeypatch.setattr(store_class, "_stat", recording_stat)

    target.store.publish(directory)

    assert events[-1] == ("send", MANIFEST_NAME)
    assert [e for e in events if e[0] == "send"] == [
        ("send", n) for n in [*FILE_NAMES, MANIFEST_NAME]
    ]
    for name in FILE_NAMES:
        sent_at = events.index(("send", name))
        assert ("stat", name) in events[sent_at + 1 : -1], f"{name} not confirmed before manifest"


def test_s3_manifest_put_is_the_last_request_of_a_publish(s3_target, dataset, monkeypatch):
    directory, version = dataset
    requests: list[tuple[str, str]] = []
    get_client = S3CompatibleResource.get_client

    def recording_client(self):
        client = get_client(self)
        client.meta.events.register(
            "before-parameter-build.s3",
            lambda model, params, **_: requests.append((model.name, params.get("Key", ""))),
        )
        return client

    monkeypatch.setattr(S3CompatibleResource, "get_client", recording_client)

    s3_target.store.publish(directory)

    manifest_key = f"{PREFIX}/{version}/{MANIFEST_NAME}"
    assert requests[-1] == ("PutObject", manifest_key)
    puts = [key for op, key in requests if op == "PutObject"]
    assert puts == [f"{PREFIX}/{version}/{name}" for name in [*FILE_NAMES, MANIFEST_NAME]]


@pytest.mark.parametrize("damage", ["content", "size", "missing"])
def test_file_not_matching_manifest_is_refused_and_nothing_sent(target, dataset, damage):
    directory, version = dataset
    path = directory / "valid.jsonl"
    original = path.read_bytes()
    if damage == "content":
        path.write_bytes(original.replace(b"x", b"z"))
    elif damage == "size":
        path.write_bytes(original + b"\n")
    else:
        path.unlink()

    with pytest.raises(DatasetManifestError) as raised:
        target.store.publish(directory)

    message = str(raised.value)
    assert "valid.jsonl" in message and str(directory / MANIFEST_NAME) in message
    assert "nothing was published" in message
    if damage == "content":
        assert hashlib.sha256(original).hexdigest() in message
        assert hashlib.sha256(path.read_bytes()).hexdigest() in message
    assert target.names(version) == []


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"version": "not-a-sha"}, "not a 64-character"),
        ({"files": {"../escape.jsonl": {"sha256": "0" * 64, "bytes": 1}}}, "plain file name"),
        ({"files": {}}, "non-empty"),
    ],
)
def test_invalid_manifest_is_refused_naming_the_manifest(target, tmp_path, change, fragment):
    directory = tmp_path / "dataset"
    write_dataset(directory)
    manifest_path = directory / MANIFEST_NAME
    manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), **change}))

    with pytest.raises(DatasetManifestError, match=fragment) as raised:
        target.store.publish(directory)

    assert str(manifest_path) in str(raised.value)


def test_fetch_round_trips_files_and_manifest_byte_for_byte(target, dataset, tmp_path):
    directory, version = dataset
    target.store.publish(directory)

    fetched = target.store.fetch(version, tmp_path / "fetched")

    assert fetched == tmp_path / "fetched"
    for name in [*FILE_NAMES, MANIFEST_NAME]:
        assert (fetched / name).read_bytes() == (directory / name).read_bytes(), name
    assert sorted(p.name for p in fetched.iterdir()) == sorted([*FILE_NAMES, MANIFEST_NAME])


def test_fetch_skips_files_already_present_with_the_right_sha256(
    target, dataset, tmp_path, monkeypatch
):
    directory, version = dataset
    target.store.publish(directory)
    destination = target.store.fetch(version, tmp_path / "fetched")
    (destination / "test.jsonl").write_bytes(b"stale\n")
    read: list[str] = []
    original = type(target.store)._read

    def recording_read(self, version, name):
        read.append(name)
        return original(self, version, name)

    monkeypatch.setattr(type(target.store), "_read", recording_read)

    target.store.fetch(version, destination)

    assert read == [MANIFEST_NAME, "test.jsonl"]
    assert (destination / "test.jsonl").read_bytes() == DATASET_FILES["test.jsonl"]


def test_fetch_of_tampered_object_raises_naming_file_expected_and_actual(target, dataset, tmp_path):
    directory, version = dataset
    target.store.publish(directory)
    tampered = DATASET_FILES["train.jsonl"].replace(b"add", b"sub")
    target.overwrite(version, "train.jsonl", tampered)
    destination = tmp_path / "fetched"

    with pytest.raises(DatasetIntegrityError) as raised:
        target.store.fetch(version, destination)

    expected = hashlib.sha256(DATASET_FILES["train.jsonl"]).hexdigest()
    actual = hashlib.sha256(tampered).hexdigest()
    message = str(raised.value)
    assert "train.jsonl" in message and expected in message and actual in message
    assert (raised.value.name, raised.value.expected, raised.value.actual) == (
        "train.jsonl",
        expected,
        actual,
    )
    # Nothing unverified under a final name, no temp files, and no manifest claiming completeness.
    assert not (destination / "train.jsonl").exists()
    assert not (destination / MANIFEST_NAME).exists()
    assert not [p for p in destination.iterdir() if p.name.startswith(".")]


def test_fetch_of_version_without_manifest_is_refused(target, dataset, tmp_path):
    directory, version = dataset
    target.store.publish(directory)
    target.delete(version, MANIFEST_NAME)

    with pytest.raises(DatasetIncompleteError, match="upload stopped before the end") as raised:
        target.store.fetch(version, tmp_path / "fetched")

    assert f"{version}/{MANIFEST_NAME}" in str(raised.value)
    assert not target.store.exists(version)
    assert not (tmp_path / "fetched" / MANIFEST_NAME).exists()


def test_s3_object_with_missing_or_different_sha256_metadata_is_sent_again(s3_target, dataset):
    directory, version = dataset
    admin = admin_client(s3_target.store.s3.endpoint_url)
    bucket = s3_target.store.bucket
    admin.put_object(
        Bucket=bucket, Key=f"{PREFIX}/{version}/train.jsonl", Body=DATASET_FILES["train.jsonl"]
    )
    admin.put_object(
        Bucket=bucket,
        Key=f"{PREFIX}/{version}/test.jsonl",
        Body=DATASET_FILES["test.jsonl"],
        Metadata={"sha256": "0" * 64},
    )

    result = s3_target.store.publish(directory)

    assert result.sent == [*FILE_NAMES, MANIFEST_NAME]
    for name in FILE_NAMES:
        head = admin.head_object(Bucket=bucket, Key=f"{PREFIX}/{version}/{name}")
        assert head["Metadata"] == {"sha256": hashlib.sha256(DATASET_FILES[name]).hexdigest()}


def _request_headers(client) -> dict[str, str]:
    seen: dict[str, str] = {}
    client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: seen.update(request.headers.items())
    )
    return seen


def test_s3_compatible_client_sends_checksums_only_when_required(s3_server, bucket):
    client = s3_settings(s3_server.endpoint_url, max_attempts=3).get_client()

    assert client.meta.config.request_checksum_calculation == "when_required"
    assert client.meta.config.response_checksum_validation == "when_required"
    # botocore reads retries["max_attempts"] as retries after the first call; the deadline caps
    # them at 2, so 3 asked for means 3 calls in all.
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert client.meta.endpoint_url == s3_server.endpoint_url
    assert client.meta.region_name == REGION
    headers = _request_headers(client)
    client.put_object(Bucket=bucket, Key="probe", Body=b"probe")
    assert not [h for h in headers if h.lower().startswith("x-amz-checksum")]
    # The same call through dagster-aws's own resource does send one: the setting is what differs.
    plain = S3Resource(**s3_fields(s3_server.endpoint_url)).get_client()
    plain_headers = _request_headers(plain)
    plain.put_object(Bucket=bucket, Key="probe", Body=b"probe")
    assert [h for h in plain_headers if h.lower().startswith("x-amz-checksum")]


def test_missing_bucket_error_names_bucket_and_endpoint_and_says_to_create_it(
    s3_server, dataset, tmp_path
):
    directory, version = dataset
    store = S3DatasetStoreResource(
        bucket="no-such-datasets", s3=s3_settings(s3_server.endpoint_url)
    )
    calls: list[Callable[[], object]] = [
        lambda: store.publish(directory),
        lambda: store.fetch(version, tmp_path / "fetched"),
        lambda: store.exists(version),
    ]

    for call in calls:
        with pytest.raises(DatasetStoreUnavailableError) as raised:
            call()
        message = str(raised.value)
        assert "'no-such-datasets' does not exist" in message
        assert s3_server.endpoint_url in message
        assert "create it" in message


def _failures(s3_server, bucket: str, directory: Path, version: str, tmp_path: Path):
    """Every error path of the S3 store, each yielding the exception it raised."""
    endpoint = s3_server.endpoint_url
    stores = {
        "missing bucket": S3DatasetStoreResource(bucket="absent", s3=s3_settings(endpoint)),
        "unreachable endpoint": S3DatasetStoreResource(
            bucket=bucket,
            # No retries (botocore counts them after the first call): refused connections
            # would otherwise wait out the retry backoff.
            s3=s3_settings(f"http://127.0.0.1:{free_port()}", max_attempts=0),
        ),
    }
    for store in stores.values():
        yield pytest.raises(DatasetStoreError, store.publish, directory).value
    store = S3DatasetStoreResource(bucket=bucket, s3=s3_settings(endpoint))
    yield pytest.raises(DatasetIncompleteError, store.fetch, version, tmp_path / "a").value
    store.publish(directory)
    admin_client(endpoint).put_object(
        Bucket=bucket, Key=f"{PREFIX}/{version}/valid.jsonl", Body=b"tampered"
    )
    yield pytest.raises(DatasetIntegrityError, store.fetch, version, tmp_path / "b").value


def test_secret_access_key_never_appears_in_errors_or_logs(
    s3_server, bucket, dataset, tmp_path, caplog
):
    directory, version = dataset
    caplog.set_level(logging.DEBUG)

    errors = list(_failures(s3_server, bucket, directory, version, tmp_path))

    assert len(errors) == 4
    for error in errors:
        text = "".join(traceback.format_exception(error))
        assert SECRET_KEY not in text
    assert SECRET_KEY not in caplog.text
    store = S3DatasetStoreResource(bucket=bucket, s3=s3_settings(s3_server.endpoint_url))
    assert SECRET_KEY not in repr(store) and SECRET_KEY not in str(store)
    assert "could not reach the S3 endpoint" in str(errors[1])


def test_s3_store_works_as_a_nested_dagster_resource_with_secret_from_env(
    s3_server, bucket, dataset, monkeypatch
):
    directory, version = dataset
    monkeypatch.setenv("TEST_DATASETS_SECRET", SECRET_KEY)

    @dg.asset
    def published_dataset(dataset_store: DatasetStoreResource) -> dg.MaterializeResult:
        result = dataset_store.publish(directory)
        return dg.MaterializeResult(metadata={"uri": result.uri, "sent": len(result.sent)})

    store = S3DatasetStoreResource(
        bucket=bucket,
        s3=S3CompatibleResource(
            endpoint_url=s3_server.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=dg.EnvVar("TEST_DATASETS_SECRET"),
        ),
    )

    result = dg.materialize([published_dataset], resources={"dataset_store": store})

    assert result.success
    metadata = result.asset_materializations_for_node("published_dataset")[0].metadata
    assert metadata["uri"].value == f"s3://{bucket}/{PREFIX}/{version}/"
    assert metadata["sent"].value == len(FILE_NAMES) + 1


def test_asset_values_cross_hosts_through_the_bucket(s3_server, bucket):
    from coder_assets.resources.datasets import S3JsonIOManager

    manager = S3JsonIOManager(s3=s3_settings(s3_server.endpoint_url), bucket=bucket)

    @dg.asset(io_manager_key="json_io_manager")
    def upstream_descriptor() -> dict:
        return {"version": "abc", "path": "/Users/coder/.coder-assets/adapters/x"}

    @dg.asset(io_manager_key="json_io_manager")
    def downstream_descriptor(upstream_descriptor: dict) -> dict:
        return {"seen": upstream_descriptor["version"]}

    result = dg.materialize(
        [upstream_descriptor, downstream_descriptor], resources={"json_io_manager": manager}
    )

    assert result.success
    stored = admin_client(s3_server.endpoint_url).get_object(
        Bucket=bucket, Key="dagster-values/downstream_descriptor/__unpartitioned__.json"
    )
    assert json.loads(stored["Body"].read()) == {"seen": "abc"}
    assert manager.stored(dg.AssetKey("downstream_descriptor")) == {"seen": "abc"}
    assert manager.stored(dg.AssetKey("never_stored")) is None


def test_a_missing_asset_value_in_the_bucket_says_to_materialize_it(s3_server, bucket):
    from coder_assets.resources.datasets import S3JsonIOManager

    manager = S3JsonIOManager(s3=s3_settings(s3_server.endpoint_url), bucket=bucket)
    with pytest.raises(dg.Failure, match="materialize it first"):
        with dg.build_input_context(
            asset_key=dg.AssetKey("never_materialized"), resources={}
        ) as context:
            manager.load_input(context)


def test_the_bucket_setting_moves_asset_values_into_the_bucket(monkeypatch):
    from coder_assets.resources import build_resources
    from coder_assets.resources.datasets import S3JsonIOManager
    from coder_assets.resources.storage import JsonIOManager

    monkeypatch.delenv("CODER_ASSETS_S3_BUCKET", raising=False)
    assert isinstance(build_resources()["json_io_manager"], JsonIOManager)
    monkeypatch.setenv("CODER_ASSETS_S3_BUCKET", "homelab-datasets")
    manager = build_resources()["json_io_manager"]
    assert isinstance(manager, S3JsonIOManager) and manager.bucket == "homelab-datasets"
