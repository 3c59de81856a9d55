"""The code location loads from workspace.yaml, every job/sensor/schedule validates, and the
instance config in dagster.yaml loads."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from coder_assets.constants import int_setting
from coder_assets.resources import build_repo_source, build_resources
from coder_assets.resources.gitea import GiteaResource
from coder_assets.resources.repos import LocalReposResource

ROOT = Path(__file__).resolve().parents[1]


def _workspace_defs() -> dg.Definitions:
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    target = workspace["load_from"][0]["python_module"]
    return importlib.import_module(target["module_name"]).defs


def test_workspace_target_loads_and_validates():
    defs = _workspace_defs()

    dg.Definitions.validate_loadable(defs)

    assert defs.resolve_job_def("repo_job") is not None
    assert defs.resolve_sensor_def("gitea_change_sensor") is not None
    assert defs.resolve_sensor_def("run_failure_reporter") is not None
    assert defs.resolve_schedule_def("weekly_refresh_schedule").cron_schedule == "0 3 * * 0"
    assets = defs.resolve_asset_graph().get_all_asset_keys()
    assert dg.AssetKey("repo_snapshots") in assets


def test_the_automation_sensors_follow_repos_to_the_dataset_and_the_dataset_to_training():
    defs = _workspace_defs()

    assert defs.resolve_sensor_def("dataset_after_repos_sensor").job_name == "dataset_job"
    assert defs.resolve_sensor_def("train_on_new_dataset_sensor").job_name == "train_deploy_job"
    assert defs.resolve_sensor_def("maintenance_window_notice") is not None


def test_make_dev_has_an_always_open_window_and_trains_by_itself(tmp_path):
    import os
    import re
    import subprocess
    import sys

    makefile = (ROOT / "Makefile").read_text()
    demo_env = re.search(r"^DEMO_ENV := (.*?)(?<!\\)$", makefile, re.M | re.S)
    assert demo_env is not None
    settings = dict(
        pair.split("=", 1)
        for pair in demo_env.group(1).replace("\\\n", " ").split()
        if pair.startswith("CODER_ASSETS_") and "$(" not in pair
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODER_ASSETS_")}
    probe = (
        "from coder_assets.definitions import defs; "
        "s = defs.resolve_sensor_def('train_on_new_dataset_sensor'); "
        "import coder_assets.sensors as m; "
        "print(s.default_status.value, m.DEMO_SETTINGS, '|', s.description)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, **settings, "CODER_ASSETS_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert settings == {
        "CODER_ASSETS_MAINTENANCE_WINDOW": "always",
        "CODER_ASSETS_DEMO_SETTINGS": "1",
    }
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.startswith("RUNNING True |") and "now: always open" in loaded.stdout


@pytest.mark.parametrize("job_name", ["dataset_job", "train_deploy_job"])
def test_the_automation_run_config_of_the_demo_is_valid_for_its_job(job_name):
    from coder_assets.demo.run import DEMO_AUTOMATION_TRAINING_CONFIG, DEMO_TRAINING_CONFIG
    from coder_assets.sensors import automation_run_config

    job = _workspace_defs().resolve_job_def(job_name)
    demo = automation_run_config(job_name, demo=True)

    assert dg.validate_run_config(job, demo)
    assert automation_run_config(job_name, demo=False) == {}
    if job_name == "train_deploy_job":
        # The dev model has 4 layers; production's default (16) fails lora_adapter on it. The
        # automation's trainings continue from the deployed adapter; make demo's starts fresh.
        assert demo["ops"]["lora_adapter"]["config"] == DEMO_AUTOMATION_TRAINING_CONFIG
        assert DEMO_AUTOMATION_TRAINING_CONFIG == {**DEMO_TRAINING_CONFIG, "start_from": "deployed"}
        assert "start_from" not in DEMO_TRAINING_CONFIG


def test_every_asset_has_a_description_group_kinds_owner_and_code_version():
    for spec in _workspace_defs().resolve_all_asset_specs():
        assert spec.description, spec.key
        assert spec.group_name and spec.group_name != "default", spec.key
        assert spec.kinds, spec.key
        assert spec.code_version, spec.key
        assert spec.owners, spec.key


def test_embedded_default_reads_the_local_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("GITEA_URL", raising=False)
    monkeypatch.setenv("CODER_ASSETS_HOME", str(tmp_path))

    source = build_repo_source()

    assert isinstance(source, LocalReposResource)
    assert source.root == str(tmp_path / "repos")


def test_gitea_is_chosen_when_gitea_url_is_set_and_the_token_stays_an_env_var(monkeypatch):
    token = "9e" * 20
    monkeypatch.setenv("GITEA_URL", "https://gitea.example.lan")
    monkeypatch.setenv("GITEA_TOKEN", token)
    monkeypatch.setenv("GITEA_ORG", "homelab")

    source = build_repo_source()

    assert isinstance(source, GiteaResource)
    # The definition holds a reference to the variable, never its value.
    assert token not in repr(source._get_non_default_public_field_values())


def test_dagster_yaml_loads_as_an_instance_with_a_safe_run_queue(tmp_path):
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config.max_concurrent_runs == 2
        assert {"key": "coder_assets/host", "value": "waterdeep", "limit": 1} in (
            concurrency.run_queue_config.tag_concurrency_limits
        )
        # one waterdeep step at a time, however the run was launched
        assert concurrency.pool_config.default_pool_limit == 1
        assert instance.telemetry_enabled is False


def test_paths_are_configurable_one_by_one(monkeypatch, tmp_path):
    monkeypatch.setenv("CODER_ASSETS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CODER_ASSETS_MIRRORS_DIR", str(tmp_path / "fast-disk" / "mirrors"))

    resources = build_resources()

    assert resources["repo_mirrors"].path == str(tmp_path / "fast-disk" / "mirrors")
    assert resources["parquet_io_manager"].base_path == str(tmp_path / "home" / "storage")


@pytest.mark.parametrize("raw", ["soon", "-5", "0"])
def test_a_bad_interval_setting_names_the_variable(monkeypatch, raw):
    monkeypatch.setenv("CODER_ASSETS_SENSOR_INTERVAL_SECONDS", raw)

    with pytest.raises(ValueError, match="CODER_ASSETS_SENSOR_INTERVAL_SECONDS must be"):
        int_setting("CODER_ASSETS_SENSOR_INTERVAL_SECONDS", 60)


def test_every_environment_setting_the_code_reads_is_in_the_readme_settings_table():
    import re

    root = Path(__file__).resolve().parents[1]
    names = set()
    for path in (root / "coder_assets").rglob("*.py"):
        names |= set(re.findall(r"\"((?:CODER_ASSETS|GITEA)_[A-Z0-9_]+)\"", path.read_text()))
    readme = (root / "README.md").read_text()
    documented = set()
    for line in readme.splitlines():
        if line.startswith("| `"):
            first_cell = line.split(" | ")[0]
            documented |= set(re.findall(r"`([A-Z0-9_]+)`", first_cell))
    assert sorted(names - documented) == []


def test_the_benchmarks_load_and_build_what_they_run(tmp_path):
    """The README's figures come from these scripts; they must keep up with the graph."""
    import importlib.util

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    modules = {}
    for path in sorted(root.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[path.stem] = module
    assert {"incremental", "deploy", "dedup", "generation", "train_overhead", "dev_model"} <= set(
        modules
    )
    # dev_model.py measures the demo's own training and evaluation settings.
    from coder_assets.demo.run import DEMO_EVAL_CONFIG

    assert modules["dev_model"]._eval_settings(DEMO_EVAL_CONFIG).fim_tasks == 8
    assert modules["dev_model"]._eval_settings(DEMO_EVAL_CONFIG, 4096).context_tokens == 4096
    with dg.instance_for_test() as instance:
        driver = modules["incremental"].Driver(instance, tmp_path / "repos", tmp_path / "home")
        assert driver.job.name == "repo_job"
