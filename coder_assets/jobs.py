"""Jobs of the code location."""

from __future__ import annotations

import dagster as dg

from coder_assets.assets.dataset import (
    base_model,
    dataset_splits,
    sample_signatures,
    training_dataset,
)
from coder_assets.assets.deployment import adapter_release, deployed_adapter
from coder_assets.assets.evaluation import eval_scores
from coder_assets.assets.samples import fim_samples, instruction_pairs
from coder_assets.assets.snapshots import repo_snapshots
from coder_assets.assets.training import lora_adapter
from coder_assets.constants import HOST_TAG, WATERDEEP
from coder_assets.partitions import repo_partitions

repo_job = dg.define_asset_job(
    name="repo_job",
    selection=[repo_snapshots, instruction_pairs, fim_samples, sample_signatures],
    partitions_def=repo_partitions,
    description="Snapshot one repository and build its training samples and their MinHash "
    "signatures (one partition per repo).",
)

dataset_job = dg.define_asset_job(
    name="dataset_job",
    selection=[base_model, dataset_splits, training_dataset],
    description="Build the training dataset from every repo's samples, check it, publish it "
    "and record it in MLflow (data preparation: runs on any host).",
)

train_deploy_job = dg.define_asset_job(
    name="train_deploy_job",
    selection=[lora_adapter, eval_scores, adapter_release, deployed_adapter],
    tags={HOST_TAG: WATERDEEP},
    description="On waterdeep: train the LoRA adapter from the latest dataset version, evaluate "
    "it against the base and deployed models, and, when the promotion gate passes, release it to "
    "code-lora-adapters and deploy it behind mlx_lm.server (smoke-tested, rolled back on "
    "failure). waterdeep_executor; one waterdeep run at a time.",
)

full_pipeline_job = dg.define_asset_job(
    name="full_pipeline_job",
    selection=[
        base_model,
        dataset_splits,
        training_dataset,
        lora_adapter,
        eval_scores,
        adapter_release,
        deployed_adapter,
    ],
    tags={HOST_TAG: WATERDEEP},
    description="Everything after the per-repo samples in one run: build, check and publish the "
    "dataset (any host), then train, evaluate, release and deploy on waterdeep behind the "
    "promotion gate. The repo partitions come from repo_job (sensor, schedule or backfill).",
)
