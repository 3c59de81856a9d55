"""Nothing shared but the instance (Postgres in production) and the bucket (issue 18): with
CODER_ASSETS_S3_BUCKET set, every asset value another run reads lives in the bucket, so each run can
execute in its own pod; the repository mirrors are a per-pod cache, fetched again when missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest

from coder_assets.assets.samples import fim_samples, instruction_pairs
from coder_assets.assets.snapshots import repo_snapshots
from coder_assets.core.sources.repos import partition_key_for
from coder_assets.demo.sample_repos import create_sample_repos
from coder_assets.resources.datasets import S3CompatibleResource, S3ParquetIOManager
from coder_assets.resources.repos import LocalReposResource
from coder_assets.resources.storage import ParquetIOManager, RepoMirrorsResource
from coder_assets_tests.conftest import commit, init_repo

# Runs one job in this process, as a run worker in its own pod would: repo_job once per partition
# given, dataset_job once. Prints the dataset version dataset_splits recorded (dataset_job).
RUN_JOB = """
import json, sys
import dagster as dg
from coder_assets.definitions import build_definitions
from coder_assets.partitions import repo_partitions

job_name, keys = sys.argv[1], sys.argv[2:]
instance = dg.DagsterInstance.get()
known = set(instance.get_dynamic_partitions(repo_partitions.name))
instance.add_dynamic_partitions(repo_partitions.name, [k for k in keys if k not in known])
job = build_definitions().resolve_job_def(job_name)
for key in keys or [None]:
    result = job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False)
    if not result.success:
        sys.exit(f"{job_name} {key} failed")
if job_name == "dataset_job":
    event = instance.get_latest_materialization_event(dg.AssetKey("dataset_splits"))
    meta = event.asset_materialization.metadata
    print(json.dumps({"version": meta["version"].value}))
"""

PYTHON_FILE = '''"""Helpers of the {name} service."""


def retry_delay(attempt: int, base: float = 0.5) -> float:
    """Seconds to wait before retry `attempt`: exponential backoff capped at thirty seconds."""
    return min(30.0, base * 2**attempt)


def parse_labels(raw: str) -> dict[str, str]:
    """Kubernetes-style labels from `key=value,key=value` text, blanks ignored."""
    labels = {{}}
    for item in raw.split(","):
        key, _, value = item.strip().partition("=")
        if key:
            labels[key] = value
    return labels
'''

MANIFEST = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: homelab
spec:
  replicas: 2
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
        - name: {name}
          image: registry.example.lan/{name}:1.4.2
          ports:
            - containerPort: 8080
"""

REPOS = ("ledger", "weather")


def _make_repos(root: Path) -> list[str]:
    for name in REPOS:
        repo = init_repo(root / "homelab" / name)
        commit(
            repo,
            {
                f"{name}/helpers.py": PYTHON_FILE.format(name=name),
                "deploy.yaml": MANIFEST.format(name=name),
            },
            f"Add the {name} service",
        )
    return [partition_key_for("homelab", name) for name in REPOS]


def _env(tmp_path: Path, repos: Path, home: str, dagster_home: Path, **extra: str) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CODER_ASSETS_", "DAGSTER_", "GITEA_", "AWS_"))
    }
    (tmp_path / home).mkdir()
    dagster_home.mkdir(exist_ok=True)
    env.update(
        CODER_ASSETS_HOME=str(tmp_path / home),
        CODER_ASSETS_REPOS_DIR=str(repos),
        DAGSTER_HOME=str(dagster_home),
        MLFLOW_DISABLE_TELEMETRY="true",
        **extra,
    )
    return env


def _run(job: str, keys: list[str], env: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", RUN_JOB, job, *keys],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def _s3_env(endpoint_url: str) -> dict[str, str]:
    return {
        "CODER_ASSETS_S3_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


def _new_bucket(endpoint_url: str) -> str:
    name = f"homelab-{uuid.uuid4().hex[:12]}"
    s3 = S3CompatibleResource(
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.get_client().create_bucket(Bucket=name)
    return name


@pytest.mark.slow
def test_repo_and_dataset_runs_in_separate_empty_homes_build_the_single_folder_version(
    s3_server, trained_dev_model, tmp_path
):
    repos = tmp_path / "repos"
    keys = [partition_key_for("homelab", path.name) for path in create_sample_repos(repos)]

    single = _env(tmp_path, repos, "single-home", tmp_path / "single-instance")
    _run("repo_job", keys, single)
    expected = _run("dataset_job", [], single)["version"]

    bucket = _new_bucket(s3_server.endpoint_url)
    s3 = _s3_env(s3_server.endpoint_url)
    instance = tmp_path / "shared-instance"  # stands in for Postgres
    repo_pod = _env(tmp_path, repos, "repo-pod", instance, CODER_ASSETS_S3_BUCKET=bucket, **s3)
    dataset_pod = _env(
        tmp_path, repos, "dataset-pod", instance, CODER_ASSETS_S3_BUCKET=bucket, **s3
    )
    _run("repo_job", keys, repo_pod)
    built = _run("dataset_job", [], dataset_pod)["version"]

    assert built == expected
    # Neither pod kept an asset value on its disk: the per-repo tables are in the bucket.
    for pod in ("repo-pod", "dataset-pod"):
        assert not list((tmp_path / pod).glob("storage/**/*.parquet")), pod
    mirrors = tmp_path / "dataset-pod" / "mirrors"
    assert not mirrors.exists() or not any(mirrors.iterdir())
    stored = _s3_values(s3_server.endpoint_url, bucket)
    for asset in ("repo_snapshots", "instruction_pairs", "fim_samples", "sample_signatures"):
        for key in keys:
            assert stored.stored(dg.AssetKey(asset), key) is not None, (asset, key)


def _s3_values(endpoint_url: str, bucket: str) -> S3ParquetIOManager:
    s3 = S3CompatibleResource(
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return S3ParquetIOManager(s3=s3, bucket=bucket)


def test_sample_tables_live_in_the_bucket_and_a_pod_without_the_mirror_fetches_it_again(
    s3_server, tmp_path
):
    repos = tmp_path / "repos"
    key = _make_repos(repos)[0]
    values = _s3_values(s3_server.endpoint_url, _new_bucket(s3_server.endpoint_url))
    source = LocalReposResource(root=str(repos), owner="homelab")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("repos", [key])
        snapshot = dg.materialize(
            [repo_snapshots],
            partition_key=key,
            instance=instance,
            resources={
                "repo_source": source,
                "repo_mirrors": RepoMirrorsResource(path=str(tmp_path / "pod-a" / "mirrors")),
                "parquet_io_manager": values,
            },
        )
        assert snapshot.success
        shutil.rmtree(tmp_path / "pod-a")  # its pod is gone, and its mirror with it
        # Another pod: an empty mirror cache, the snapshot's table read from the bucket.
        other_mirrors = tmp_path / "pod-b" / "mirrors"
        samples = dg.materialize(
            [repo_snapshots.to_source_asset(), instruction_pairs, fim_samples],
            partition_key=key,
            instance=instance,
            resources={
                "repo_source": source,
                "repo_mirrors": RepoMirrorsResource(path=str(other_mirrors)),
                "parquet_io_manager": values,
            },
        )

    assert samples.success
    assert (other_mirrors / f"{key}.git" / "HEAD").is_file()
    pairs = values.stored(dg.AssetKey("instruction_pairs"), key)
    fims = values.stored(dg.AssetKey("fim_samples"), key)
    assert len(pairs) > 0 and len(fims) > 0
    assert pairs.attrs["commit_sha"] == fims.attrs["commit_sha"]
    assert not list(tmp_path.rglob("*.parquet"))


def test_a_fan_in_leaves_out_partitions_missing_from_the_bucket_like_the_local_folder(
    s3_server, tmp_path
):
    import pandas as pd

    values = _s3_values(s3_server.endpoint_url, _new_bucket(s3_server.endpoint_url))
    local = ParquetIOManager(base_path=str(tmp_path / "storage"))
    frame = pd.DataFrame({"unit_id": ["a", "b"], "text_sha256": ["1", "2"]})
    frame.attrs = {"repo": "homelab/ledger", "commit_sha": "abc"}
    loaded = {}
    for name, manager in (("s3", values), ("local", local)):
        with dg.build_output_context(
            asset_key=dg.AssetKey("sample_signatures"), partition_key="homelab~ledger"
        ) as context:
            manager.handle_output(context, frame)
        context = dg.build_input_context(
            asset_key=dg.AssetKey("sample_signatures"),
            asset_partitions_def=dg.StaticPartitionsDefinition(
                ["homelab~ledger", "homelab~weather"]
            ),
            asset_partition_key_range=dg.PartitionKeyRange("homelab~ledger", "homelab~weather"),
        )
        loaded[name] = manager.load_input(context)

    assert set(loaded["s3"]) == set(loaded["local"]) == {"homelab~ledger"}
    assert loaded["s3"]["homelab~ledger"].equals(loaded["local"]["homelab~ledger"])
    assert loaded["s3"]["homelab~ledger"].attrs == frame.attrs
