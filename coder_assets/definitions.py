"""The one wiring point of the coder_assets code location.

Each asset group is one pipeline stage, and one name leads to everything of it: the group's assets
in `coder_assets/assets/`, their logic in the `coder_assets/core/` package of the group's name, and
the tests of that package in `coder_assets_tests/core/` of the same name (asset-level tests beside
them in `coder_assets_tests/`). Paths below are relative to those three folders.

    group       assets                                        assets module   core package
                tests
    sources     repo_snapshots; base_model (in dataset.py)    snapshots.py    sources/
                core/sources/, test_assets_snapshots.py
    samples     instruction_pairs, fim_samples                samples.py      samples/
                core/samples/, test_assets_samples.py
    dataset     sample_signatures, dataset_splits,            dataset.py      dataset/
                training_dataset
                core/dataset/, test_assets_dataset.py
    training    lora_adapter                                  training.py     training/
                core/training/, test_executor.py (through the waterdeep executor)
    evaluation  eval_scores                                   evaluation.py   evaluation/
                core/evaluation/, test_executor.py
    deployment  adapter_release, deployed_adapter             deployment.py   deployment/
                core/deployment/, test_assets_deployment.py

The asset checks are in `checks.py` (validators in `core/dataset/checks.py`), the sensors and
schedules in `sensors.py` and `schedules.py`, the jobs in `jobs.py`, the resources in
`resources/`; `coder_assets_tests/test_layout.py` keeps this map and the stage order true.
"""

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
