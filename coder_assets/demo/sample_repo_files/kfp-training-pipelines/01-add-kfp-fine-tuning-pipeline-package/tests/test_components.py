"""Tests for the helpers and the pipeline wiring that run without a KFP cluster."""

import pytest

from kfp_training_pipelines import components
from kfp_training_pipelines.pipeline import DEFAULTS, finetune_pipeline
from kfp_training_pipelines.storage import S3Location, adapter_location, dataset_location


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix"),
    [
        ("s3://training-data", "training-data", ""),
        ("s3://training-data/coder", "training-data", "coder"),
        ("s3://training-data/coder/datasets/", "training-data", "coder/datasets"),
    ],
)
def test_parse_splits_bucket_and_prefix(uri: str, bucket: str, prefix: str) -> None:
    location = S3Location.parse(uri)
    assert (location.bucket, location.prefix) == (bucket, prefix)
    assert S3Location.parse(location.uri) == location


@pytest.mark.parametrize("uri", ["https://rustfs.homelab.example/x", "s3://", "s3://Upper/case"])
def test_parse_rejects_other_schemes_and_bad_buckets(uri: str) -> None:
    with pytest.raises(ValueError):
        S3Location.parse(uri)


def test_locations_follow_the_bucket_layout() -> None:
    root = S3Location("training-data", "coder")
    assert dataset_location(root, "homelab", "2024-03-01").uri == (
        "s3://training-data/coder/datasets/homelab/2024-03-01"
    )
    assert adapter_location(root, "run-7f3a").uri == "s3://training-data/coder/adapters/run-7f3a"


def test_defaults_cover_every_pipeline_parameter() -> None:
    assert set(DEFAULTS.as_arguments()) == set(finetune_pipeline.component_spec.inputs)


def test_prepare_dataset_declares_both_splits() -> None:
    outputs = components.prepare_dataset.component_spec.outputs
    assert {"train_split", "valid_split"} <= set(outputs)
