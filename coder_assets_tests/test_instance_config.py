"""Every Dagster instance file (dagster.yaml, deploy/dagster*.yaml) and workspace file
(workspace.yaml, deploy/workspace*.yaml) of the project is one Dagster accepts, and each holds
the limits that keep waterdeep to one thing at a time.

Instance files are checked against Dagster's instance schema and built into real instances; the
production one's Postgres storage and S3 compute logs are validated against their own classes'
schemas with dummy settings in the environment and then swapped for local ones, so nothing is
connected to. Workspace files are checked against Dagster's workspace schema and turned into code
location origins (a gRPC entry is never dialled). deploy/waterdeep-python, which gives steps on
waterdeep the instance's settings, is run once."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster._core.remote_origin import (
    GrpcServerCodeLocationOrigin,
    ManagedGrpcPythonEnvCodeLocationOrigin,
)
from dagster._core.workspace.config_schema import ensure_workspace_config
from dagster._core.workspace.load import location_origins_from_yaml_paths
from dagster._serdes.config_class import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import pg_url_from_config

from coder_assets.constants import HOST_TAG, WATERDEEP

ROOT = Path(__file__).resolve().parents[1]
INSTANCE_FILES = [ROOT / "dagster.yaml", *sorted((ROOT / "deploy").glob("dagster*.yaml"))]
WORKSPACE_FILES = [ROOT / "workspace.yaml", *sorted((ROOT / "deploy").glob("workspace*.yaml"))]
PRODUCTION = ROOT / "deploy" / "dagster.production.yaml"
LOCATION_NAME = "coder_assets"

# What the production instance reads from the environment, with harmless values.
PRODUCTION_ENV = {
    "PGHOST": "postgres.example.lan",
    "PGPORT": "5432",
    "PGUSER": "dagster",
    "PGPASSWORD": "not-a-real-password",
    "PGDATABASE": "dagster",
    "CODER_ASSETS_S3_BUCKET": "code-finetune",
    "CODER_ASSETS_S3_ENDPOINT_URL": "https://rustfs.example.lan:9000",
}
# The parts of an instance that may reach another machine.
_REMOTE_PARTS = (
    "storage_data",
    "run_storage_data",
    "event_storage_data",
    "schedule_storage_data",
    "compute_logs_data",
)


def _ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(ROOT)) for path in paths]


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in PRODUCTION_ENV.items():
        monkeypatch.setenv(name, value)
    return PRODUCTION_ENV


def _config_dir(instance_file: Path, tmp_path: Path) -> Path:
    """A DAGSTER_HOME-like folder holding `instance_file` as its dagster.yaml."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(instance_file, home / "dagster.yaml")
    return home


def _instance(instance_file: Path, tmp_path: Path) -> dg.DagsterInstance:
    """The instance Dagster builds from `instance_file` (what `DagsterInstance.from_config` does).
    Storage and compute logs from integration libraries live on other machines (Postgres, S3):
    they are replaced by SQLite and local files under `tmp_path`; Dagster's own are kept."""
    ref = InstanceRef.from_dir(str(_config_dir(instance_file, tmp_path)))
    local_home = tmp_path / "local_home"
    local_home.mkdir()
    local = InstanceRef.from_dir(str(local_home))
    remote = [
        part
        for part in _REMOTE_PARTS
        if getattr(ref, part) and not getattr(ref, part).module_name.startswith("dagster.")
    ]
    return dg.DagsterInstance.from_ref(
        ref._replace(**{part: getattr(local, part) for part in remote})
    )


@pytest.mark.parametrize("instance_file", INSTANCE_FILES, ids=_ids(INSTANCE_FILES))
def test_instance_file_passes_dagsters_instance_schema(instance_file, tmp_path, production_env):
    config, custom_class = dagster_instance_config(str(_config_dir(instance_file, tmp_path)))

    assert custom_class is None
    assert config["telemetry"] == {"enabled": False}


@pytest.mark.parametrize("instance_file", INSTANCE_FILES, ids=_ids(INSTANCE_FILES))
def test_every_class_an_instance_file_names_imports_and_accepts_its_config(
    instance_file, tmp_path, production_env
):
    ref = InstanceRef.from_dir(str(_config_dir(instance_file, tmp_path)))
    parts = [value for value in ref if isinstance(value, ConfigurableClassData)]

    assert parts
    for part in parts:
        klass = getattr(importlib.import_module(part.module_name), part.class_name)
        # What ConfigurableClassData.rehydrate does before it builds the object (which would
        # connect to Postgres or S3): the config, with the environment read, fits the class.
        result = process_config(resolve_to_config_type(klass.config_type()), part.config_dict)
        assert result.success, (part.module_name, part.class_name, result.errors)


@pytest.mark.parametrize("instance_file", INSTANCE_FILES, ids=_ids(INSTANCE_FILES))
def test_every_instance_runs_one_waterdeep_run_and_one_waterdeep_step_at_a_time(
    instance_file, tmp_path, production_env
):
    with _instance(instance_file, tmp_path) as instance:
        if instance_file.name == "dagster.yaml":  # the embedded default, built as it is
            assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        assert {"key": HOST_TAG, "value": WATERDEEP, "limit": 1} in (
            concurrency.run_queue_config.tag_concurrency_limits
        )
        # The waterdeep assets are in the `waterdeep` pool, which has no limit of its own.
        assert concurrency.pool_config.default_pool_limit == 1


def test_production_instance_keeps_everything_in_postgres_and_s3(production_env):
    ref = InstanceRef.from_dir(str(PRODUCTION.parent), config_filename=PRODUCTION.name)

    assert (ref.storage_data.module_name, ref.storage_data.class_name) == (
        "dagster_postgres",
        "DagsterPostgresStorage",
    )
    assert ref.compute_logs_data.class_name == "S3ComputeLogManager"


def test_production_postgres_url_names_a_driver_that_is_installed(production_env):
    ref = InstanceRef.from_dir(str(PRODUCTION.parent), config_filename=PRODUCTION.name)
    config = process_config(
        resolve_to_config_type(DagsterPostgresStorage.config_type()), ref.storage_data.config_dict
    ).value

    # Building an engine imports the driver and connects to nothing. A plain postgresql:// URL
    # makes SQLAlchemy 2.1 import psycopg (3), which dagster-postgres does not install.
    engine = sqlalchemy.create_engine(pg_url_from_config(config))
    engine.dispose()


def test_production_instance_reads_hosts_and_secrets_only_from_the_environment():
    config = yaml.safe_load(PRODUCTION.read_text("utf-8"))

    postgres = config["storage"]["postgres"]
    assert set(postgres) == {"postgres_db"}  # no postgres_url with a password in it
    for key in ("hostname", "port", "username", "password", "db_name"):
        value = postgres["postgres_db"][key]
        assert set(value) == {"env"}, f"postgres_db.{key} must be an env: reference"
    compute_logs = config["compute_logs"]["config"]
    for key in ("bucket", "endpoint_url"):
        assert set(compute_logs[key]) == {"env"}, f"compute_logs.{key} must be an env: reference"


def test_production_instance_retries_only_crashed_runs_and_frees_stuck_pool_slots(
    tmp_path, production_env
):
    with _instance(PRODUCTION, tmp_path) as instance:
        assert instance.run_retries_enabled
        assert instance.run_retries_max_retries == 1
        # A failed check or a rejected adapter stays failed; only a dead run worker is retried.
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert instance.run_monitoring_enabled
        # The default run launcher cannot resume a run; a retry is a new run.
        assert instance.run_monitoring_max_resume_run_attempts == 0
        # Otherwise a crashed waterdeep run would hold the pool's only slot for good.
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs > 1
        assert instance.telemetry_enabled is False


def test_every_environment_variable_of_the_deploy_files_is_in_the_readme():
    readme = (ROOT / "README.md").read_text("utf-8")
    referenced: set[str] = set()
    for path in INSTANCE_FILES + WORKSPACE_FILES:
        referenced |= set(re.findall(r"env:\s*([A-Z][A-Z0-9_]+)", path.read_text("utf-8")))

    assert referenced >= set(PRODUCTION_ENV)
    assert [name for name in sorted(referenced) if f"`{name}`" not in readme] == []


@pytest.mark.parametrize("workspace_file", WORKSPACE_FILES, ids=_ids(WORKSPACE_FILES))
def test_workspace_file_passes_dagsters_workspace_schema_and_serves_coder_assets_once(
    workspace_file,
):
    config = yaml.safe_load(workspace_file.read_text("utf-8"))
    ensure_workspace_config(config, str(workspace_file))

    origins = location_origins_from_yaml_paths([str(workspace_file)])

    # Two locations with these definitions would define every asset twice and run every sensor
    # twice (two runs per push).
    assert [origin.location_name for origin in origins] == [LOCATION_NAME]
    (origin,) = origins
    if isinstance(origin, GrpcServerCodeLocationOrigin):
        assert origin.host and origin.port and not origin.socket
    else:
        assert isinstance(origin, ManagedGrpcPythonEnvCodeLocationOrigin)
        module = origin.loadable_target_origin.module_name
        assert module and importlib.util.find_spec(module) is not None, module


def test_split_workspace_loads_from_the_cluster_and_the_waterdeep_one_from_waterdeep():
    def origin(name: str) -> GrpcServerCodeLocationOrigin:
        (found,) = location_origins_from_yaml_paths([str(ROOT / "deploy" / name)])
        assert isinstance(found, GrpcServerCodeLocationOrigin)
        return found

    assert "waterdeep" not in origin("workspace.split.yaml").host
    assert (origin("workspace.waterdeep.yaml").host, origin("workspace.waterdeep.yaml").port) == (
        "waterdeep.lan",
        4266,
    )


def test_waterdeep_python_loads_the_env_file_before_it_starts_the_virtualenvs_python(tmp_path):
    home = tmp_path / "home"
    (home / ".coder-assets" / "venv" / "bin").mkdir(parents=True)
    (home / ".coder-assets" / "venv" / "bin" / "python").symlink_to(sys.executable)
    (home / ".coder-assets" / "waterdeep.env").write_text(
        "PGHOST=postgres.example.lan\nPGPASSWORD='with a space'\n", "utf-8"
    )
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "")}
    script = "import os, sys; print(os.environ['PGHOST'], os.environ['PGPASSWORD'], sys.argv[1:])"

    proc = subprocess.run(
        ["sh", str(ROOT / "deploy" / "waterdeep-python"), "-c", script, "an argument"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    assert proc.stdout.strip() == "postgres.example.lan with a space ['an argument']"
