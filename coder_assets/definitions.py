"""The one wiring point of the coder_assets code location."""

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
from coder_assets.checks import (
    DATASET_CHECKS,
    fim_samples_free_of_secrets,
    instruction_pairs_free_of_secrets,
    promotion_gate,
)
from coder_assets.executor import waterdeep_executor
from coder_assets.jobs import dataset_job, full_pipeline_job, repo_job, train_deploy_job
from coder_assets.resources import build_executor_config, build_resources
from coder_assets.schedules import weekly_refresh_schedule
from coder_assets.sensors import (
    dataset_after_repos_sensor,
    gitea_change_sensor,
    maintenance_window_notice,
    run_failure_reporter,
    train_on_new_dataset_sensor,
    waterdeep_reclaim_sensor,
)


def build_definitions() -> dg.Definitions:
    """The code location, with resources and executor configured from the environment as it is
    now (read once per load; tests and the demo build it again after changing the environment)."""
    return dg.Definitions(
        assets=[
            repo_snapshots,
            base_model,
            instruction_pairs,
            fim_samples,
            sample_signatures,
            dataset_splits,
            training_dataset,
            lora_adapter,
            eval_scores,
            adapter_release,
            deployed_adapter,
        ],
        asset_checks=[
            instruction_pairs_free_of_secrets,
            fim_samples_free_of_secrets,
            *DATASET_CHECKS,
            promotion_gate,
        ],
        jobs=[repo_job, dataset_job, train_deploy_job, full_pipeline_job],
        sensors=[
            gitea_change_sensor,
            dataset_after_repos_sensor,
            train_on_new_dataset_sensor,
            maintenance_window_notice,
            run_failure_reporter,
            waterdeep_reclaim_sensor,
        ],
        schedules=[weekly_refresh_schedule],
        resources=build_resources(),
        # Every job, and every ad-hoc selection (the implicit asset job), runs through it: waterdeep
        # steps only on waterdeep, the rest locally.
        executor=waterdeep_executor.configured(build_executor_config()),
    )


defs = build_definitions()
