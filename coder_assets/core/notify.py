"""The text of a failure report: what failed, why, and where to look."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_REASON_CHARS = 600


@dataclass(frozen=True)
class FailureReport:
    title: str
    body: str


def failure_report(
    *,
    job_name: str,
    run_id: str,
    partition_key: str | None,
    failed_steps: Sequence[str],
    reason: str,
    ui_url: str,
) -> FailureReport:
    """A short report of one failed run, fit for a phone notification (ntfy) or a log line."""
    subject = f"{job_name} [{partition_key}]" if partition_key else job_name
    reason = " ".join(reason.split())
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 1] + "…"
    steps = ", ".join(failed_steps) if failed_steps else "the run itself"
    body = (
        f"Run {run_id[:8]} of {subject} failed in {steps}: {reason or 'no error message'}\n"
        f"{ui_url.rstrip('/')}/runs/{run_id}"
    )
    return FailureReport(title=f"coder_assets: {subject} failed", body=body)
