"""Dagster resources, one module per external system, and the one place where the environment
(demo, test, production) picks them."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import dagster as dg

from coder_assets.constants import coder_assets_home
from coder_assets.core.deployment.deploy import LATEST_LINK
from coder_assets.core.deployment.host import current_platform
from coder_assets.executor import DEFAULT_FORWARD_ENV, RUN_LOCK_FILE
from coder_assets.resources.datasets import (
    DEFAULT_S3_DEADLINE_SECONDS,
    DatasetStoreResource,
    LocalDatasetStoreResource,
    S3CompatibleResource,
    S3DatasetStoreResource,
    S3JsonIOManager,
    S3ParquetIOManager,
)
from coder_assets.resources.deployment import AdapterDeploymentResource, AdapterReleaseResource
from coder_assets.resources.gitea import GiteaResource
from coder_assets.resources.mlflow import DEFAULT_EXPERIMENT_NAME, MlflowTrackingResource
from coder_assets.resources.mlx import BaseModelResource
from coder_assets.resources.notify import FailureNotifierResource
from coder_assets.resources.policy import PromotionPolicyResource
from coder_assets.resources.repos import LocalReposResource, RepoSourceResource
from coder_assets.resources.service import ModelServerResource
from coder_assets.resources.storage import (
    JsonIOManager,
    ParquetIOManager,
    RepoMirrorsResource,
    WorkspaceResource,
)
from coder_assets.resources.waterdeep import WaterdeepResource
from coder_assets.settings import float_setting, int_setting, path_setting, port_setting


def _exclude_repos() -> list[str]:
    raw = os.environ.get("CODER_ASSETS_EXCLUDE_REPOS", "")
    return [item.strip() for item in raw.split(",") if item.strip()]


def build_repo_source() -> RepoSourceResource:
    """Gitea when GITEA_URL is set; otherwise the local folder of repositories (the embedded
    default, which the demo fills with sample repos)."""
    filters: dict[str, Any] = {
        "include_archived": os.environ.get("CODER_ASSETS_INCLUDE_ARCHIVED", "") == "1",
        "include_mirrors": os.environ.get("CODER_ASSETS_INCLUDE_MIRRORS", "") == "1",
        "exclude_repos": _exclude_repos(),
    }
    if os.environ.get("GITEA_URL"):
        return GiteaResource(
            url=dg.EnvVar("GITEA_URL"),
            token=dg.EnvVar("GITEA_TOKEN"),
            org=dg.EnvVar("GITEA_ORG"),
            ca_bundle=path_setting("GITEA_CA_BUNDLE"),
            **filters,
        )
    repos_dir = path_setting("CODER_ASSETS_REPOS_DIR", coder_assets_home() / "repos", folder=True)
    return LocalReposResource(root=repos_dir, owner="homelab", **filters)


def build_base_model() -> BaseModelResource:
    """The MLX model at CODER_ASSETS_BASE_MODEL (production: the converted 32B model), or the
    tiny dev model built under the coder_assets home (the embedded default)."""
    configured = path_setting("CODER_ASSETS_BASE_MODEL", folder=True)
    if configured:
        return BaseModelResource(path=configured, build_dev_model=False)
    return BaseModelResource(
        path=str(coder_assets_home() / "models" / "dev-qwen2.5-coder"), build_dev_model=True
    )


def build_s3() -> S3CompatibleResource | None:
    """The S3-compatible server of the bucket named by CODER_ASSETS_S3_BUCKET (RustFS/MinIO at
    CODER_ASSETS_S3_ENDPOINT_URL), or None without a bucket (the embedded default)."""
    if not os.environ.get("CODER_ASSETS_S3_BUCKET", "").strip():
        return None
    credentials: dict[str, Any] = {}
    # Credentials only from the environment, through EnvVar so they never land in run config;
    # without them boto3's own chain (profile, instance role) applies.
    for field, name in (
        ("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
        ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    ):
        if os.environ.get(name):
            credentials[field] = dg.EnvVar(name)
    return S3CompatibleResource(
        endpoint_url=os.environ.get("CODER_ASSETS_S3_ENDPOINT_URL") or None,
        region_name=os.environ.get("CODER_ASSETS_S3_REGION", "us-east-1"),
        deadline_seconds=float_setting(
            "CODER_ASSETS_S3_TIMEOUT_SECONDS", DEFAULT_S3_DEADLINE_SECONDS, minimum=1.0
        ),
        **credentials,
    )


def build_dataset_store() -> DatasetStoreResource:
    """The S3-compatible bucket named by CODER_ASSETS_S3_BUCKET, or a local folder laid out like
    the bucket."""
    s3 = build_s3()
    if s3 is None:
        root = path_setting("CODER_ASSETS_BUCKET_DIR", coder_assets_home() / "bucket", folder=True)
        return LocalDatasetStoreResource(root=root)
    return S3DatasetStoreResource(bucket=os.environ["CODER_ASSETS_S3_BUCKET"].strip(), s3=s3)


def build_json_io_manager(storage: str) -> dg.ConfigurableIOManager:
    """Asset values that cross between the cluster and waterdeep: in the bucket when there is one
    (no shared folder needed), else under the local storage folder."""
    s3 = build_s3()
    if s3 is None:
        return JsonIOManager(base_path=storage)
    return S3JsonIOManager(s3=s3, bucket=os.environ["CODER_ASSETS_S3_BUCKET"].strip())


def build_parquet_io_manager(storage: str) -> dg.ConfigurableIOManager:
    """The DataFrame values (snapshots, per-repo sample and signature tables): in the bucket when
    there is one, so every run can execute in its own pod with nothing shared but Postgres and
    the bucket; else under the local storage folder."""
    s3 = build_s3()
    if s3 is None:
        return ParquetIOManager(base_path=storage)
    return S3ParquetIOManager(s3=s3, bucket=os.environ["CODER_ASSETS_S3_BUCKET"].strip())


def build_mlflow_tracking() -> MlflowTrackingResource:
    """The MLflow server at CODER_ASSETS_MLFLOW_TRACKING_URI, or a local SQLite store under the
    coder_assets home (open it with `make mlflow`)."""
    experiment = os.environ.get("CODER_ASSETS_MLFLOW_EXPERIMENT", DEFAULT_EXPERIMENT_NAME)
    ui_url = os.environ.get("CODER_ASSETS_MLFLOW_UI_URL", "")
    uri = os.environ.get("CODER_ASSETS_MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return MlflowTrackingResource(tracking_uri=uri, experiment_name=experiment, ui_url=ui_url)
    folder = coder_assets_home() / "mlflow"
    return MlflowTrackingResource(
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
        artifact_location=(folder / "artifacts").as_uri(),
        experiment_name=experiment,
        ui_url=ui_url or "http://127.0.0.1:5000",
    )


def waterdeep_lock_file() -> str:
    """The waterdeep lock that training, evaluation, deployment and `coder-assets server`
    take: CODER_ASSETS_WATERDEEP_LOCK_FILE, by default waterdeep.lock in the coder_assets home."""
    return str(
        path_setting("CODER_ASSETS_WATERDEEP_LOCK_FILE", coder_assets_home() / "waterdeep.lock")
    )


def run_lock_file() -> str:
    """The lock a run with waterdeep steps holds for its whole length (waterdeep_executor), in
    the executor's state dir: one such run at a time, however it was launched."""
    return str(coder_assets_home() / "steps" / RUN_LOCK_FILE)


def waterdeep_host() -> dict[str, Any]:
    """What waterdeep must look like. CODER_ASSETS_WATERDEEP_HOST names it in production (an Apple
    Silicon Mac with 48 GB by default); unset, the embedded default names this machine, so the
    demo trains here (on Linux, on mlx's CPU backend)."""
    name = os.environ.get("CODER_ASSETS_WATERDEEP_HOST", "").strip()
    production = bool(name)
    return {
        "name": name or socket.gethostname().split(".")[0].lower(),
        "platform": os.environ.get("CODER_ASSETS_WATERDEEP_PLATFORM", "").strip()
        or ("darwin-arm64" if production else current_platform()),
        "min_memory_gb": float_setting(
            "CODER_ASSETS_WATERDEEP_MIN_MEMORY_GB", 48.0 if production else 1.0
        ),
        "identity_file": path_setting("CODER_ASSETS_WATERDEEP_IDENTITY_FILE"),
    }


def build_executor_config() -> dict[str, Any]:
    """waterdeep_executor's configuration: the host guard's expectation and the transport."""
    home = coder_assets_home()
    config: dict[str, Any] = {
        "transport": os.environ.get("CODER_ASSETS_WATERDEEP_TRANSPORT", "local"),
        "host": waterdeep_host(),
        "state_dir": str(home / "steps"),
        "forward_env": list(DEFAULT_FORWARD_ENV),
    }
    if config["transport"] == "ssh":
        config["ssh"] = {
            "destination": os.environ.get("CODER_ASSETS_WATERDEEP_SSH", ""),
            "port": port_setting("CODER_ASSETS_WATERDEEP_SSH_PORT", 22),
            "identity_file": path_setting("CODER_ASSETS_WATERDEEP_SSH_KEY"),
            "known_hosts_file": path_setting("CODER_ASSETS_WATERDEEP_SSH_KNOWN_HOSTS"),
            "python": os.environ.get("CODER_ASSETS_WATERDEEP_PYTHON", "python3"),
            "state_dir": os.environ.get(
                "CODER_ASSETS_WATERDEEP_STATE_DIR", "~/.coder-assets/steps"
            ),
        }
    return config


def deploy_dir() -> str:
    """Where deployed adapter versions and the `latest` link live on waterdeep:
    CODER_ASSETS_DEPLOY_DIR; in production (CODER_ASSETS_WATERDEEP_HOST set) by default
    ~/.mlx-models/adapters/homelab-coder, in the embedded default under the coder_assets home."""
    configured = path_setting("CODER_ASSETS_DEPLOY_DIR", folder=True)
    if configured:
        return configured
    if os.environ.get("CODER_ASSETS_WATERDEEP_HOST", "").strip():
        return "~/.mlx-models/adapters/homelab-coder"
    return str(coder_assets_home() / "deployed" / "homelab-coder")


def build_adapter_repo() -> AdapterReleaseResource:
    """The `code-lora-adapters` repository: CODER_ASSETS_RELEASE_REMOTE (the Gitea repo in
    production, token from CODER_ASSETS_RELEASE_TOKEN or GITEA_TOKEN), or a local bare repository
    under the coder_assets home that the first release creates (embedded default)."""
    home = coder_assets_home()
    remote = os.environ.get("CODER_ASSETS_RELEASE_REMOTE", "").strip()
    token: Any = None
    for name in ("CODER_ASSETS_RELEASE_TOKEN", "GITEA_TOKEN"):
        if os.environ.get(name):
            token = dg.EnvVar(name)
            break
    return AdapterReleaseResource(
        remote=remote or str(home / "releases" / "code-lora-adapters.git"),
        token=token if remote else None,
        lfs=os.environ.get("CODER_ASSETS_RELEASE_LFS", "auto"),
        work_dir=str(home / "releases" / "work"),
        create_local_remote=not remote,
    )


def build_model_server(base_model: BaseModelResource) -> ModelServerResource:
    """The mlx_lm.server on waterdeep behind its authenticating proxy (Caddy on
    CODER_ASSETS_SERVER_HOST/_PORT, the model on 127.0.0.1:CODER_ASSETS_SERVER_MODEL_PORT): the
    launchd services in production on macOS (CODER_ASSETS_SERVER_KIND=launchd), managed
    processes elsewhere and in the demo."""
    home = coder_assets_home()
    label = os.environ.get("CODER_ASSETS_SERVER_LABEL") or "io.daviestechlabs.mlx-coder"
    return ModelServerResource(
        kind=os.environ.get("CODER_ASSETS_SERVER_KIND", "managed"),
        host=os.environ.get("CODER_ASSETS_SERVER_HOST", "127.0.0.1"),
        port=port_setting("CODER_ASSETS_SERVER_PORT", 8080),
        model_port=port_setting("CODER_ASSETS_SERVER_MODEL_PORT", 0),
        caddy=os.environ.get("CODER_ASSETS_SERVER_CADDY") or "caddy",
        keys_file=path_setting("CODER_ASSETS_SERVER_KEYS_FILE"),
        tls_cert=path_setting("CODER_ASSETS_SERVER_TLS_CERT"),
        tls_key=path_setting("CODER_ASSETS_SERVER_TLS_KEY"),
        tls_ca=path_setting("CODER_ASSETS_SERVER_TLS_CA"),
        max_body_bytes=int_setting("CODER_ASSETS_SERVER_MAX_BODY_BYTES", 4 * 1024 * 1024),
        model_path=base_model.path,
        adapter_link=str(Path(deploy_dir()) / LATEST_LINK),
        launchd_label=label,
        launchd_plist=f"~/Library/LaunchAgents/{label}.plist",
        ready_timeout_seconds=float_setting("CODER_ASSETS_SERVER_READY_TIMEOUT", 120.0),
        state_dir=str(home / "server"),
        python=os.environ.get("CODER_ASSETS_SERVER_PYTHON") or sys.executable,
    )


def build_resources() -> dict[str, Any]:
    """Every resource of the code location, configured for the current environment."""
    home = coder_assets_home()
    mirrors = path_setting("CODER_ASSETS_MIRRORS_DIR", home / "mirrors", folder=True)
    storage = path_setting("CODER_ASSETS_STORAGE_DIR", home / "storage", folder=True)
    base_model = build_base_model()
    return {
        "repo_source": build_repo_source(),
        "repo_mirrors": RepoMirrorsResource(path=mirrors),
        "parquet_io_manager": build_parquet_io_manager(storage),
        "json_io_manager": build_json_io_manager(storage),
        "workspace": WorkspaceResource(
            path=path_setting("CODER_ASSETS_WORK_DIR", home, folder=True)
        ),
        "mlx_base_model": base_model,
        "waterdeep": WaterdeepResource(
            **waterdeep_host(),
            lock_file=waterdeep_lock_file(),
        ),
        "model_server": build_model_server(base_model),
        "promotion_policy": PromotionPolicyResource(
            humaneval_margin=float_setting("CODER_ASSETS_GATE_HUMANEVAL_MARGIN", 0.02),
            fim_must_improve=os.environ.get("CODER_ASSETS_GATE_FIM_MUST_IMPROVE", "1") != "0",
        ),
        "dataset_store": build_dataset_store(),
        "mlflow_tracking": build_mlflow_tracking(),
        "failure_notifier": FailureNotifierResource(),
        "adapter_repo": build_adapter_repo(),
        "adapter_deployment": AdapterDeploymentResource(
            deploy_dir=deploy_dir(), keep_versions=int_setting("CODER_ASSETS_KEEP_ADAPTERS", 5)
        ),
    }
