"""The model server's downtime over one train_deploy_job run
(coder_assets.core.deployment.downtime)."""

from __future__ import annotations

import pytest

from coder_assets.core.deployment.downtime import add_downtime, downtime_of, mlflow_metrics


def test_downtime_adds_up_over_the_steps_of_one_run() -> None:
    training = add_downtime(None, "run-1", "lora_adapter", 600.0)
    evaluation = add_downtime(training, "run-1", "eval_scores", 120.5)
    deploy = add_downtime(downtime_of({"downtime": evaluation}), "run-1", "deployed_adapter", 9.5)
    assert deploy["by_step"] == {
        "lora_adapter": 600.0,
        "eval_scores": 120.5,
        "deployed_adapter": 9.5,
    }
    assert deploy["total_seconds"] == 730.0
    assert mlflow_metrics(deploy)["downtime_seconds_train_deploy_job"] == 730.0
    assert mlflow_metrics(deploy)["downtime_seconds_eval_scores"] == 120.5


@pytest.mark.parametrize(
    "previous",
    [
        {"run_id": "run-0", "by_step": {"lora_adapter": 600.0}, "total_seconds": 600.0},
        None,
        {"run_id": "run-1", "by_step": "garbage"},
    ],
)
def test_downtime_of_another_run_is_not_counted(previous) -> None:
    record = add_downtime(previous, "run-1", "eval_scores", 30.0)
    assert record["by_step"] == {"eval_scores": 30.0}
    assert record["total_seconds"] == 30.0


def test_a_value_without_downtime_gives_none() -> None:
    assert downtime_of({"version": "v1"}) is None
    assert downtime_of(None) is None
