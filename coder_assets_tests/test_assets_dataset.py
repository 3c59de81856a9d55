"""base_model, sample_signatures, dataset_splits (with its blocking checks) and training_dataset,
materialized from real git repositories with a real dev model, local storage and MLflow; and
training_dataset against a real S3-compatible server and a real `mlflow server`."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
from mlflow import MlflowClient

from coder_assets.assets.dataset import (
    base_model,
    dataset_splits,
    sample_signatures,
    training_dataset,
)
from coder_assets.assets.samples import fim_samples, instruction_pairs
from coder_assets.assets.snapshots import repo_snapshots
from coder_assets.checks import DATASET_CHECKS
from coder_assets.core.dataset.build import MANIFEST_FILE, SPLIT_FILES
from coder_assets.core.training.dev_model import build_dev_model
from coder_assets.demo.sample_repos import create_sample_repos
from coder_assets.resources.datasets import (
    LocalDatasetStoreResource,
    S3CompatibleResource,
    S3DatasetStoreResource,
)
from coder_assets.resources.mlflow import MlflowTrackingResource
from coder_assets.resources.mlx import BaseModelResource, dev_model_corpus
from coder_assets.resources.repos import LocalReposResource
from coder_assets.resources.storage import (
    JsonIOManager,
    WorkspaceResource,
    read_parquet,
    write_parquet_atomic,
)
from coder_assets_tests.conftest import commit, init_repo, resources_for

REPO_GRAPH = [repo_snapshots, instruction_pairs, fim_samples, sample_signatures]
DATASET_GRAPH = [base_model, dataset_splits, *DATASET_CHECKS, training_dataset]
SPLITS_CONFIG = {
    "ops": {"dataset_splits": {"config": {"valid_fraction": 0.2, "test_fraction": 0.2}}}
}


@pytest.fixture(scope="module")
def dev_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_dev_model(tmp_path_factory.mktemp("models") / "dev", dev_model_corpus())


def _resources(root: Path, repos: Path, model: Path, **overrides) -> dict[str, object]:
    source = LocalReposResource(root=str(repos), owner="homelab")
    return {
        **resources_for(source, root),
        "json_io_manager": JsonIOManager(base_path=str(root / "storage")),
        "workspace": WorkspaceResource(path=str(root / "work")),
        "mlx_base_model": BaseModelResource(path=str(model)),
        "dataset_store": LocalDatasetStoreResource(root=str(root / "bucket")),
        "mlflow_tracking": MlflowTrackingResource(
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
            artifact_location=(root / "mlflow-artifacts").as_uri(),
        ),
        **overrides,
    }


def _materialize_repos(instance, resources, names, run_config=None) -> None:
    for name in names:
        key = f"homelab~{name}"
        if not instance.has_dynamic_partition("repos", key):
            instance.add_dynamic_partitions("repos", [key])
        dg.materialize(
            REPO_GRAPH,
            partition_key=key,
            instance=instance,
            resources=resources,
            run_config=run_config,
        )


def _materialize_dataset(instance, resources, *, raise_on_error=True):
    # The per-repo assets are inputs here, loaded from storage, not rematerialized.
    return dg.materialize(
        [*REPO_GRAPH, *DATASET_GRAPH],
        selection=[base_model, dataset_splits, training_dataset],
        instance=instance,
        resources=resources,
        run_config=SPLITS_CONFIG,
        raise_on_error=raise_on_error,
    )


def _metadata(result, asset) -> dict[str, object]:
    (materialization,) = result.asset_materializations_for_node(asset.key.path[-1])
    return {key: value.value for key, value in materialization.metadata.items()}


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def sample_pipeline(tmp_path_factory: pytest.TempPathFactory, dev_model: Path):
    """The sample repos through the whole dataset stage, once for the module."""
    root = tmp_path_factory.mktemp("pipeline")
    repos = root / "repos"
    names = [path.name for path in create_sample_repos(repos)]
    resources = _resources(root, repos, dev_model)
    with dg.instance_for_test() as instance:
        _materialize_repos(instance, resources, names)
        result = _materialize_dataset(instance, resources)
        yield root, instance, resources, result


def test_sample_repos_give_a_dataset_that_passes_every_blocking_check(sample_pipeline) -> None:
    root, _, _, result = sample_pipeline
    assert _checks(result) == {check.check_key.name: True for check in DATASET_CHECKS}
    metadata = _metadata(result, dataset_splits)
    directory = Path(metadata["path"])
    assert directory == root / "work" / "datasets" / metadata["version"]
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    assert manifest["version"] == metadata["version"]
    assert set(manifest["repos"]) == {
        "homelab/homelab-adrs",
        "homelab/homelab-flux",
        "homelab/kfp-training-pipelines",
        "homelab/order-events-handler",
    }
    assert all(metadata[f"{split}_lines"] > 0 for split in SPLIT_FILES)
    assert metadata["repos_covered"] == "4/4"
    assert metadata["signatures_computed_here"] == 0  # every repo's stored signatures reused
    assert "| homelab/order-events-handler |" in metadata["repo_coverage"]


def test_no_build_folder_is_left_beside_the_versions(sample_pipeline) -> None:
    root, _, _, _ = sample_pipeline
    assert [p.name for p in (root / "work" / "datasets").iterdir() if p.name.startswith(".")] == []


def test_a_repo_with_unreadable_samples_is_left_out_and_named(sample_pipeline) -> None:
    """One repo's broken samples never fail the dataset: it is left out, with the reason in the
    metadata and the manifest, and the dataset is built from the others."""
    root, instance, resources, _ = sample_pipeline
    stored = root / "storage" / "fim_samples" / "homelab~homelab-flux.parquet"
    original = stored.read_bytes()
    frame = read_parquet(stored)
    frame.loc[0, "text"] = "a FIM sample without its markers"
    write_parquet_atomic(frame, stored)
    try:
        result = _materialize_dataset(instance, resources)
    finally:
        stored.write_bytes(original)
    metadata = _metadata(result, dataset_splits)
    assert metadata["repos_left_out"] == 1
    assert (
        "| homelab/homelab-flux | homelab/homelab-flux: FIM sample"
        in (metadata["repos_left_out_why"])
    )
    assert "the text lacks <\\|fim_prefix\\|>" in metadata["repos_left_out_why"]
    manifest = json.loads((Path(metadata["path"]) / MANIFEST_FILE).read_text())
    assert set(manifest["repos_left_out"]) == {"homelab/homelab-flux"}
    assert "homelab/homelab-flux" not in manifest["repos"]
    assert _checks(result) == {check.check_key.name: True for check in DATASET_CHECKS}


def test_mlx_lm_loads_the_dataset_as_text_records_within_the_length(
    sample_pipeline, dev_model: Path
) -> None:
    from mlx_lm.tuner.datasets import TextDataset, load_local_dataset
    from mlx_lm.utils import load_tokenizer

    _, _, _, result = sample_pipeline
    directory = Path(_metadata(result, dataset_splits)["path"])
    tokenizer = load_tokenizer(dev_model)
    loaded = load_local_dataset(directory, tokenizer, SimpleNamespace(mask_prompt=False))
    for dataset, split in zip(loaded, SPLIT_FILES, strict=True):
        assert isinstance(dataset, TextDataset) and len(dataset) > 0, split
        assert all(len(dataset.process(dataset[i])[0]) <= 2048 for i in range(len(dataset)))


def test_training_dataset_is_published_with_its_manifest_and_recorded_in_mlflow(
    sample_pipeline,
) -> None:
    root, _, resources, result = sample_pipeline
    metadata = _metadata(result, training_dataset)
    version = metadata["version"]
    folder = root / "bucket" / "code-finetune" / version
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*SPLIT_FILES.values(), "provenance.parquet", "dropped.parquet", MANIFEST_FILE]
    )
    client = MlflowClient(tracking_uri=resources["mlflow_tracking"].tracking_uri)
    run = client.get_run(metadata["mlflow_run_id"])
    assert run.data.params["dataset_version"] == version
    assert run.data.metrics["num_samples_train"] > 0
    assert run.data.metrics["repo_coverage"] == 1.0
    assert "dedup_near_dropped_units" in run.data.metrics
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "dataset")]
    assert artifacts == ["dataset/manifest.json"]


def test_rematerializing_gives_the_same_version_and_sends_nothing(sample_pipeline) -> None:
    _, instance, resources, first = sample_pipeline
    again = _materialize_dataset(instance, resources)
    assert (
        _metadata(again, dataset_splits)["version"] == _metadata(first, dataset_splits)["version"]
    )
    published = _metadata(again, training_dataset)
    assert published["files_sent"] == 0 and published["files_already_present"] == 6
    assert published["mlflow_run_id"] == _metadata(first, training_dataset)["mlflow_run_id"]


def test_training_dataset_publishes_to_s3_and_a_real_mlflow_server(
    sample_pipeline, s3_server, mlflow_server, tmp_path: Path
) -> None:
    import boto3

    _, instance, resources, _ = sample_pipeline
    bucket = "homelab-datasets"
    s3 = S3CompatibleResource(
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.get_client().create_bucket(Bucket=bucket)
    store = S3DatasetStoreResource(bucket=bucket, s3=s3)
    tracking = MlflowTrackingResource(tracking_uri=mlflow_server.url)
    result = dg.materialize(
        [*REPO_GRAPH, *DATASET_GRAPH],
        selection=[training_dataset],
        instance=instance,
        resources={**resources, "dataset_store": store, "mlflow_tracking": tracking},
    )
    metadata = _metadata(result, training_dataset)
    version = metadata["version"]
    assert metadata["uri"] == f"s3://{bucket}/code-finetune/{version}/"
    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert f"code-finetune/{version}/manifest.json" in keys and len(keys) == 6
    fetched = store.fetch(version, tmp_path / "fetched")
    assert json.loads((fetched / MANIFEST_FILE).read_text())["version"] == version
    assert metadata["mlflow_run"].startswith(mlflow_server.url)
    run = MlflowClient(tracking_uri=mlflow_server.url).get_run(metadata["mlflow_run_id"])
    assert run.data.tags["coder_assets.dataset_uri"] == metadata["uri"]
    assert "dataset_uri" not in run.data.params


def test_base_model_builds_the_dev_model_and_versions_it(tmp_path: Path) -> None:
    resource = BaseModelResource(path=str(tmp_path / "model"), build_dev_model=True)
    result = dg.materialize([base_model], resources={"mlx_base_model": resource})
    metadata = _metadata(result, base_model)
    assert metadata["model_type"] == "qwen2" and metadata["dev_model"] is True
    assert metadata["version"] == resource.version()
    assert all(len(ids) == 1 for ids in metadata["special_token_ids"].values())
    (materialization,) = result.asset_materializations_for_node("base_model")
    assert materialization.tags["dagster/data_version"] == resource.version()


def test_base_model_refuses_a_missing_production_model_with_what_to_do(tmp_path: Path) -> None:
    resource = BaseModelResource(path=str(tmp_path / "Qwen2.5-Coder-32B-Instruct-Q8"))
    with pytest.raises(dg.Failure, match="lacks config.json.*mlx_lm.convert"):
        dg.materialize([base_model], resources={"mlx_base_model": resource})
    assert not (tmp_path / "Qwen2.5-Coder-32B-Instruct-Q8").exists()


# --- small repos: incremental signatures and blocking ----------------------------------------


def _module(name: str, index: int, flavour: str = "") -> str:
    functions = []
    for n in range(3):
        functions.append(
            f"def {name}_step_{n}(values: list[int]) -> int:\n"
            f'    """Combine the {name} values, pass {n}{flavour}."""\n'
            f"    total = {index * 7 + n}\n"
            f"    for value in values:\n"
            f"        total = total * {n + 3} + value - {index}\n"
            f"    return total\n"
        )
    return f'"""The {name} helpers."""\n\n\n' + "\n\n".join(functions)


def _small_repo(repos: Path, name: str, files: int = 10) -> Path:
    repo = init_repo(repos / name)
    words = ["ledger", "invoice", "backup", "restore", "router", "quota", "replica", "tenant"]
    commit(
        repo,
        {
            f"src/{words[i % len(words)]}_{i}.py": _module(f"{name.replace('-', '_')}_{i}", i)
            for i in range(files)
        },
        "Add helpers",
    )
    return repo


def test_a_push_to_one_repo_recomputes_only_that_repos_signatures(
    tmp_path: Path, dev_model: Path, instance
) -> None:
    repos = tmp_path / "repos"
    alpha = _small_repo(repos, "alpha")
    _small_repo(repos, "beta")
    resources = _resources(tmp_path, repos, dev_model)
    _materialize_repos(instance, resources, ["alpha", "beta"])
    beta_file = tmp_path / "storage" / "sample_signatures" / "homelab~beta.parquet"
    beta_before = beta_file.stat().st_mtime_ns
    first = _materialize_dataset(instance, resources)
    assert _metadata(first, dataset_splits)["signatures_computed_here"] == 0

    commit(alpha, {"src/ledger_0.py": _module("alpha_0", 0, " (revised)")}, "Revise ledger")
    _materialize_repos(instance, resources, ["alpha"])

    alpha_signatures = read_parquet(
        tmp_path / "storage" / "sample_signatures" / "homelab~alpha.parquet"
    )
    total = len(alpha_signatures)
    # The changed file's pairs and its FIM file unit are recomputed, all else reused.
    assert 0 < alpha_signatures.attrs["computed"] < total / 2
    assert alpha_signatures.attrs["reused"] == total - alpha_signatures.attrs["computed"]
    assert beta_file.stat().st_mtime_ns == beta_before
    second = _materialize_dataset(instance, resources)
    assert _metadata(second, dataset_splits)["signatures_computed_here"] == 0
    assert (
        _metadata(second, dataset_splits)["version"] != _metadata(first, dataset_splits)["version"]
    )


def test_a_failed_blocking_check_stops_the_upload(
    tmp_path: Path, dev_model: Path, instance
) -> None:
    repos = tmp_path / "repos"
    leaky = _small_repo(repos, "leaky", files=20)
    key_id = "AKIA" + "Q3EGRZ7XPLM4NW2B"
    settings = (
        '"""Backup settings."""\n\n\ndef backup_key_id() -> str:\n'
        '    """Return the access key id that the nightly backup uses."""\n'
        f'    key_id = "{key_id}"\n    return key_id\n'
    )
    commit(leaky, {"src/settings.py": settings}, "Settings")
    resources = _resources(tmp_path, repos, dev_model)
    keep = {"config": {"secret_action": "keep"}}
    _materialize_repos(
        instance, resources, ["leaky"], {"ops": {"instruction_pairs": keep, "fim_samples": keep}}
    )
    result = _materialize_dataset(instance, resources, raise_on_error=False)
    assert _checks(result)["dataset_free_of_secrets"] is False
    assert not result.asset_materializations_for_node("training_dataset")
    assert not (tmp_path / "bucket").exists()
