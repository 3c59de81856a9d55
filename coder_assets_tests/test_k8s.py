"""deploy/k8s/: the Flux manifests of Dagster's official chart with coder_assets as its user
deployment (issue 18). The chart version is the Dagster version the image pins; the instance the
chart renders from the values (dagster.yaml in its ConfigMap) is checked against Dagster's own
instance schema and built into a real instance, as test_instance_config.py does for the YAML
files; no secret is written in any manifest."""

from __future__ import annotations

import copy
import importlib
import re
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster._serdes.config_class import ConfigurableClassData
from packaging.requirements import Requirement
from packaging.version import Version

from coder_assets.constants import HOST_TAG, WATERDEEP
from coder_assets.core.constraints import parse, project_dependencies

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
NAMESPACE = "dagster"
SECRET_WORDS = re.compile(r"(password|token|secret|private|access_key|id_ed25519)", re.I)
# What the chart's pods hold in their environment, with harmless values.
CHART_ENV = {
    "DAGSTER_HOME": "/opt/dagster/dagster_home",
    "DAGSTER_K8S_INSTANCE_CONFIG_MAP": "dagster-instance",
    "DAGSTER_K8S_PG_PASSWORD_SECRET": "dagster-postgresql-secret",
    "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP": "dagster-pipeline-env",
    "DAGSTER_PG_PASSWORD": "not-a-real-password",
    "CODER_ASSETS_S3_BUCKET": "code-finetune",
    "CODER_ASSETS_S3_ENDPOINT_URL": "https://rustfs.example.lan:9000",
}
_REMOTE_PARTS = (
    "storage_data",
    "run_storage_data",
    "event_storage_data",
    "schedule_storage_data",
    "compute_logs_data",
    "run_launcher_data",
)


def _documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text("utf-8")) if doc]
    return docs


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in _documents()
        if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def _values() -> dict[str, Any]:
    return _one("HelmRelease")["spec"]["values"]


def instance_from_values(values: dict[str, Any]) -> dict[str, Any]:
    """The dagster.yaml that the chart's instance ConfigMap renders from `values`, for the
    sections these values use (the chart's templates/helpers/instance/*.tpl, by hand)."""
    pg = values["postgresql"]
    postgres_db = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg.get("postgresqlParams") or {},
    }
    if pg.get("postgresqlScheme"):
        postgres_db["scheme"] = pg["postgresqlScheme"]

    def storage(module: str, klass: str) -> dict[str, Any]:
        return {"module": module, "class": klass, "config": {"postgres_db": postgres_db}}

    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = launcher["config"]["k8sRunLauncher"]
    launcher_config: dict[str, Any] = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": "dagster",
        "dagster_home": {"env": "DAGSTER_HOME"},
        "instance_config_map": {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
        "postgres_password_secret": {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
        "env_config_maps": [{"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"}]
        + [item["name"] for item in k8s.get("envConfigMaps") or []],
    }
    if k8s.get("envSecrets"):
        launcher_config["env_secrets"] = [item["name"] for item in k8s["envSecrets"]]
    if k8s.get("runK8sConfig"):
        launcher_config["run_k8s_config"] = {
            "container_config": k8s["runK8sConfig"].get("containerConfig", {})
        }

    daemon = values["dagsterDaemon"]
    coordinator = daemon["runCoordinator"]
    assert coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    coordinator_config: dict[str, Any] = {}
    if queued.get("maxConcurrentRuns"):
        coordinator_config["max_concurrent_runs"] = queued["maxConcurrentRuns"]
    if queued.get("tagConcurrencyLimits"):
        coordinator_config["tag_concurrency_limits"] = queued["tagConcurrencyLimits"]

    logs = values["computeLogManager"]
    assert logs["type"] == "S3ComputeLogManager"
    s3 = logs["config"]["s3ComputeLogManager"]
    names = {
        "bucket": "bucket",
        "prefix": "prefix",
        "endpointUrl": "endpoint_url",
        "skipEmptyFiles": "skip_empty_files",
    }

    config: dict[str, Any] = {
        "scheduler": {"module": "dagster._core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": storage("dagster_postgres.schedule_storage", "PostgresScheduleStorage"),
        "run_storage": storage("dagster_postgres.run_storage", "PostgresRunStorage"),
        "event_log_storage": storage("dagster_postgres.event_log", "PostgresEventLogStorage"),
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": launcher_config,
        },
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": coordinator_config,
        },
        "compute_logs": {
            "module": "dagster_aws.s3.compute_log_manager",
            "class": "S3ComputeLogManager",
            "config": {names[k]: v for k, v in s3.items() if k in names},
        },
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }
    monitoring = daemon.get("runMonitoring") or {}
    if monitoring.get("enabled"):
        config["run_monitoring"] = {
            "enabled": True,
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
        }
        if monitoring.get("maxResumeRunAttempts"):
            config["run_monitoring"]["max_resume_run_attempts"] = monitoring["maxResumeRunAttempts"]
    retries = daemon.get("runRetries") or {}
    if retries.get("enabled"):
        config["run_retries"] = {"enabled": True, "max_retries": retries.get("maxRetries", 0)}
    retention = values.get("retention") or {}
    if retention.get("enabled"):
        config["retention"] = {
            part: {"purge_after_days": retention[part]["purgeAfterDays"]}
            for part in ("sensor", "schedule")
            if retention.get(part)
        }
    concurrency = values.get("concurrency") or {}
    pools, runs = concurrency.get("pools") or {}, concurrency.get("runs") or {}
    rendered: dict[str, Any] = {}
    if "defaultLimit" in pools:
        rendered["pools"] = {"default_limit": pools["defaultLimit"]}
    if runs:
        rendered["runs"] = {}
        if runs.get("maxConcurrentRuns") is not None:
            rendered["runs"]["max_concurrent_runs"] = runs["maxConcurrentRuns"]
        if runs.get("tagConcurrencyLimits"):
            rendered["runs"]["tag_concurrency_limits"] = runs["tagConcurrencyLimits"]
    if rendered:
        config["concurrency"] = rendered
    return config


@pytest.fixture
def chart_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CHART_ENV.items():
        monkeypatch.setenv(name, value)


def _home(config: dict[str, Any], tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config), "utf-8")
    return home


def test_chart_is_pinned_to_the_dagster_version_the_image_installs():
    chart = _one("HelmRelease")["spec"]["chart"]["spec"]
    repository = _one("HelmRepository")
    pins = parse((ROOT / "deploy" / "constraints.txt").read_text("utf-8")).pins
    dagster = next(
        Requirement(dep)
        for dep in project_dependencies((ROOT / "pyproject.toml").read_text("utf-8"))
        if Requirement(dep).name == "dagster"
    )

    assert chart["chart"] == "dagster"
    assert chart["sourceRef"] == {
        "kind": "HelmRepository",
        "name": repository["metadata"]["name"],
        "namespace": repository["metadata"]["namespace"],
    }
    assert repository["spec"]["url"] == "https://dagster-io.github.io/helm"
    assert chart["version"] == pins["dagster"]
    assert dagster.specifier.contains(Version(chart["version"]))


def test_chart_instance_passes_dagsters_instance_schema(tmp_path, chart_env):
    config, custom_class = dagster_instance_config(
        str(_home(instance_from_values(_values()), tmp_path))
    )

    assert custom_class is None
    assert config["telemetry"] == {"enabled": False}
    assert config["run_launcher"]["class"] == "K8sRunLauncher"


def test_every_class_the_chart_instance_names_imports_and_accepts_its_config(tmp_path, chart_env):
    ref = InstanceRef.from_dir(str(_home(instance_from_values(_values()), tmp_path)))
    parts = [value for value in ref if isinstance(value, ConfigurableClassData)]

    assert {part.class_name for part in parts} >= {"K8sRunLauncher", "QueuedRunCoordinator"}
    for part in parts:
        klass = getattr(importlib.import_module(part.module_name), part.class_name)
        result = process_config(resolve_to_config_type(klass.config_type()), part.config_dict)
        assert result.success, (part.module_name, part.class_name, result.errors)


def test_a_bad_limit_in_the_values_fails_the_schema(tmp_path, chart_env):
    values = copy.deepcopy(_values())
    values["concurrency"]["runs"]["tagConcurrencyLimits"][0]["limit"] = "one"

    with pytest.raises(dg.DagsterInvalidConfigError, match="limit"):
        dagster_instance_config(str(_home(instance_from_values(values), tmp_path)))


def test_chart_instance_runs_many_data_runs_and_one_waterdeep_run_at_a_time(tmp_path, chart_env):
    ref = InstanceRef.from_dir(str(_home(instance_from_values(_values()), tmp_path)))
    local_home = tmp_path / "local_home"
    local_home.mkdir()
    local = InstanceRef.from_dir(str(local_home))
    # Postgres, S3 and Kubernetes are on other machines: swapped for local stand-ins.
    with dg.DagsterInstance.from_ref(
        ref._replace(**{part: getattr(local, part) for part in _REMOTE_PARTS})
    ) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config.max_concurrent_runs >= 16
        assert {"key": HOST_TAG, "value": WATERDEEP, "limit": 1} in (
            concurrency.run_queue_config.tag_concurrency_limits
        )
        assert concurrency.pool_config.default_pool_limit == 1
        assert instance.telemetry_enabled is False
        # A failed check or a rejected adapter must stay failed: no automatic rerun.
        assert not instance.run_retries_enabled or (
            instance.run_retries_retry_on_asset_or_op_failure is False
        )


def test_the_code_location_runs_from_its_image_with_runs_in_their_own_pods():
    values = _values()
    (deployment,) = values["dagster-user-deployments"]["deployments"]

    assert values["dagster-user-deployments"]["enabled"] is True
    assert deployment["codeServerArgs"][:2] == ["-m", "coder_assets.definitions"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert deployment["podSecurityContext"]["runAsNonRoot"] is True
    mounts = {m["name"]: m["mountPath"] for m in deployment["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["volumes"]}
    ssh = volumes["waterdeep-ssh"]["secret"]["secretName"]
    settings = _one("ConfigMap", "coder-assets-settings")["data"]
    assert settings["CODER_ASSETS_WATERDEEP_TRANSPORT"] == "ssh"
    assert settings["CODER_ASSETS_WATERDEEP_SSH_KEY"].startswith(mounts["waterdeep-ssh"] + "/")
    assert settings["CODER_ASSETS_BASE_MODEL"].startswith(mounts["base-model"] + "/")
    assert ssh in {
        d["spec"]["target"]["name"] for d in _documents() if d["kind"] == "ExternalSecret"
    }


def _secret_problems(documents: list[dict[str, Any]]) -> list[str]:
    """Inline secrets: a Secret with data, or a value under a secret-sounding key that is not a
    reference (a Secret's name, an env: reference, a remote key)."""
    problems = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                where = f"{path}.{key}"
                if (
                    SECRET_WORDS.search(str(key))
                    and isinstance(value, str | int)
                    and not re.search(r"(Name|Key|secretKey|key|Secret)$", str(key))
                    and not str(key).endswith("SecretName")
                ):
                    problems.append(where)
                walk(value, where)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{path}[{index}]")

    for doc in documents:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
            if "sops" not in doc:
                problems.append(f"{name}: a Secret with its values in plain text")
        walk(doc, name)
    return problems


def test_no_manifest_holds_a_secret():
    assert _secret_problems(_documents()) == []
    settings = _one("ConfigMap", "coder-assets-settings")["data"]
    assert not [key for key in settings if SECRET_WORDS.search(key) or key.startswith("PG")]


@pytest.mark.parametrize(
    "planted",
    [
        {"kind": "Secret", "metadata": {"name": "x"}, "stringData": {"GITEA_TOKEN": "abc"}},
        {
            "kind": "HelmRelease",
            "metadata": {"name": "y"},
            "spec": {"values": {"postgresql": {"postgresqlPassword": "hunter2"}}},
        },
        {"kind": "ConfigMap", "metadata": {"name": "z"}, "data": {"AWS_SECRET_ACCESS_KEY": "k"}},
    ],
    ids=["plain Secret", "password in values", "key in a ConfigMap"],
)
def test_an_inline_secret_is_found(planted):
    assert _secret_problems([planted])


def test_limits_in_both_the_coordinator_and_concurrency_are_refused(tmp_path, chart_env):
    values = copy.deepcopy(_values())
    values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"] = {
        "maxConcurrentRuns": 4
    }

    with pytest.raises(dg.DagsterInvalidConfigError, match="max_concurrent_runs"):
        dagster_instance_config(str(_home(instance_from_values(values), tmp_path)))
