"""How long a run of `train_deploy_job` kept the model server down, step by step.

Every waterdeep step that stops or restarts the server measures its own downtime (from the stop
until the server answers again). The steps run in separate processes, so the figure travels with
the asset values: each step's value carries `{"run_id": ..., "by_step": {step: seconds}}`, and
the next step of the same run adds its own to what it received. A value from another run (an
asset not rematerialized in this run) contributes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def add_downtime(
    previous: Mapping[str, Any] | None, run_id: str, step: str, seconds: float
) -> dict[str, Any]:
    """The downtime record of this run after `step`: the steps of `previous` when it is of the
    same run, and `step` with `seconds` (added to what the step had, for a step that pauses
    twice)."""
    by_step: dict[str, float] = {}
    if previous and previous.get("run_id") == run_id and isinstance(previous.get("by_step"), dict):
        by_step = {str(name): float(value) for name, value in previous["by_step"].items()}
    by_step[step] = round(by_step.get(step, 0.0) + max(0.0, float(seconds)), 3)
    return {"run_id": run_id, "by_step": by_step, "total_seconds": total_downtime(by_step)}


def total_downtime(by_step: Mapping[str, float]) -> float:
    return round(sum(by_step.values()), 3)


def downtime_of(value: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The downtime record an asset value carries, if any."""
    if not isinstance(value, Mapping):
        return None
    record = value.get("downtime")
    return record if isinstance(record, Mapping) else None


def mlflow_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """MLflow metrics of a downtime record: one per step and the run's total so far."""
    metrics = {
        f"downtime_seconds_{name}": float(value) for name, value in record["by_step"].items()
    }
    metrics["downtime_seconds_train_deploy_job"] = float(record["total_seconds"])
    return metrics
