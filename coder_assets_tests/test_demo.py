"""End to end: `coder-assets demo` on a fresh instance (the whole graph, up to the adapter served
by a running mlx_lm.server), then the change sensor on that instance."""

from __future__ import annotations

import json
import subprocess

import dagster as dg
import pytest
from mlflow import MlflowClient

from coder_assets.core.deployment.proxy import read_keys
from coder_assets.core.sources.git import run_git
from coder_assets.demo.sample_repos import SAMPLE_REPO_NAMES, commit_files
from coder_assets.resources.repos import LocalReposResource
from coder_assets_tests.conftest import Tick, requested_shas

pytestmark = pytest.mark.slow


def test_demo_ends_with_the_adapter_released_and_served(full_demo):
    proc, env, root = full_demo
    home = root / "home"

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "promotion_gate: promote" in proc.stdout
    assert "deployed_adapter: " in proc.stdout and "smoke test passed" in proc.stdout
    # The released version is a tag in the local code-lora-adapters repository.
    remote = home / "releases" / "code-lora-adapters.git"
    tags = run_git(["tag", "--list"], cwd=remote).split()
    latest = (home / "deployed" / "homelab-coder" / "latest").resolve()
    assert tags == [latest.name]
    files = run_git(["ls-tree", "--name-only", tags[0]], cwd=remote).split()
    assert {"adapters.safetensors", "adapter_config.json", "manifest.json"} <= set(files)
    manifest = json.loads(run_git(["show", f"{tags[0]}:manifest.json"], cwd=remote))
    assert manifest["adapter_version"] == latest.name
    assert set(manifest["source_commits"]) == {f"homelab/{n}" for n in SAMPLE_REPO_NAMES}
    # The printed curl command talks to the running server through the proxy, with a key it
    # reads from the keys file (the key itself is not printed); without the key: 401.
    (curl,) = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("curl")]
    assert env["CODER_ASSETS_SERVER_PORT"] in curl and "Authorization: Bearer $(" in curl
    answer = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["choices"][0]["message"]["role"] == "assistant"
    keyless = curl[: curl.index(' -H "Authorization')] + " -o /dev/null -w '%{http_code}'"
    refused = subprocess.run(["bash", "-c", keyless], capture_output=True, text=True, timeout=60)
    assert refused.stdout == "401"
    keys = read_keys(home / "server" / "proxy" / "api-keys")
    assert keys and not any(k.key in proc.stdout + proc.stderr for k in keys)


def test_demo_snapshots_every_sample_repo_and_the_sensor_sees_one_new_commit(full_demo):
    proc, _, root = full_demo
    home, dagster_home = root / "home", root / "dagster_home"

    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in SAMPLE_REPO_NAMES:
        assert f"ok     homelab~{name}" in proc.stdout
    assert "make dev" in proc.stdout
    assert "6/6 checks passed" in proc.stdout
    assert "eval_scores: HumanEval pass@1 base" in proc.stdout
    versions = list((home / "bucket" / "code-finetune").iterdir())
    assert len(versions) == 1 and (versions[0] / "manifest.json").is_file()
    mlflow = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    experiment = mlflow.get_experiment_by_name("waterdeep-coder-finetune")
    runs = mlflow.search_runs([experiment.experiment_id])
    assert [r.data.params["dataset_version"] for r in runs] == [versions[0].name]
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        keys = sorted(instance.get_dynamic_partitions("repos"))
        assert keys == sorted(f"homelab~{name}" for name in SAMPLE_REPO_NAMES)
        for key in keys:
            record = instance.get_latest_data_version_record(
                dg.AssetKey("repo_snapshots"), partition_key=key
            )
            assert record is not None, key

        tick = Tick(instance, LocalReposResource(root=str(home / "repos"), owner="homelab"))
        # Everything was just snapshotted at its head: the first tick has nothing to do.
        assert requested_shas(tick()) == {}
        sha = commit_files(home / "repos" / "homelab-adrs", {"NOTES.md": "review\n"}, "Add notes")
        assert requested_shas(tick()) == {"homelab~homelab-adrs": sha}
        assert requested_shas(tick()) == {}
