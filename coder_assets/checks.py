"""Asset checks: thin wrappers over validators in core/."""

# No `from __future__ import annotations` here: Dagster reads these annotations at runtime.
from collections.abc import Iterable

import dagster as dg
import pandas as pd

from coder_assets.assets.samples import fim_samples, instruction_pairs
from coder_assets.core.prepare import count_secret_findings
from coder_assets.partitions import repo_partitions


def _no_secrets(frame: pd.DataFrame, columns: Iterable[str]) -> dg.AssetCheckResult:
    texts = (text for column in columns for text in frame[column].tolist())
    findings = count_secret_findings(texts)
    total = int(sum(findings.values()))
    return dg.AssetCheckResult(
        passed=total == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            "No secret found in any sample."
            if total == 0
            else f"{total} secret findings in the samples; nothing downstream may use them. "
            "Check the repo's secret_action (redact or drop) and the rejected files."
        ),
        metadata={"findings_total": total, **{f"findings_{k}": v for k, v in findings.items()}},
    )


@dg.asset_check(
    asset=instruction_pairs,
    blocking=True,
    partitions_def=repo_partitions,
    description="Re-scans every instruction, input and output for secrets; passes at zero.",
)
def instruction_pairs_free_of_secrets(instruction_pairs: pd.DataFrame) -> dg.AssetCheckResult:
    return _no_secrets(instruction_pairs, ("instruction", "input", "output"))


@dg.asset_check(
    asset=fim_samples,
    blocking=True,
    partitions_def=repo_partitions,
    description="Re-scans every FIM sample for secrets; passes at zero.",
)
def fim_samples_free_of_secrets(fim_samples: pd.DataFrame) -> dg.AssetCheckResult:
    return _no_secrets(fim_samples, ("text",))
