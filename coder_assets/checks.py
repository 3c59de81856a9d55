"""Asset checks: thin wrappers over validators in core/."""

# No `from __future__ import annotations` here: Dagster reads these annotations at runtime.
from collections.abc import Iterable
from pathlib import Path

import dagster as dg
import pandas as pd

from coder_assets.assets.dataset import dataset_splits
from coder_assets.assets.evaluation import eval_scores
from coder_assets.assets.samples import fim_samples, instruction_pairs
from coder_assets.core.dataset import checks as dataset_checks
from coder_assets.core.dataset.build import (
    PROVENANCE_FILE,
    SPLIT_FILES,
    UNITS_FILE,
    read_manifest,
    read_table,
)
from coder_assets.core.dataset.decontam import Decontaminator, load_humaneval
from coder_assets.core.samples.fim import fim_documents
from coder_assets.core.samples.prepare import count_secret_findings
from coder_assets.partitions import repo_partitions
from coder_assets.resources.mlx import BaseModelResource
from coder_assets.resources.policy import PromotionPolicyResource


def _no_secrets(pieces: Iterable[tuple[str, str]]) -> dg.AssetCheckResult:
    findings = count_secret_findings(pieces)
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
    return _no_secrets(
        (path, text)
        for row in instruction_pairs.itertuples()
        for path, text in (("", row.instruction), (row.path, row.input), (row.path, row.output))
    )


@dg.asset_check(
    asset=fim_samples,
    blocking=True,
    partitions_def=repo_partitions,
    description="Re-scans every FIM sample for secrets, its files read in file order (the middle "
    "back between prefix and suffix); passes at zero.",
)
def fim_samples_free_of_secrets(fim_samples: pd.DataFrame) -> dg.AssetCheckResult:
    return _no_secrets(
        (path or row.path, text)
        for row in fim_samples.itertuples()
        for path, text in fim_documents(row.text)
    )


def _dataset_check(problems: list[str], ok: str, failed: str) -> dg.AssetCheckResult:
    """A blocking dataset check's result: the first problems as a markdown list."""
    listing = "\n".join(f"- `{problem}`" for problem in problems[:20])
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description=ok if not problems else f"{failed} Rematerialize dataset_splits after fixing.",
        metadata={
            "problems": len(problems),
            **({"first_problems": dg.MetadataValue.md(listing)} if problems else {}),
        },
    )


def _dataset_dir(descriptor: dict) -> Path:
    return Path(descriptor["directory"])


@dg.asset_check(
    asset=dataset_splits,
    blocking=True,
    description="Every split file exists and holds one record format: `text` on every line.",
)
def dataset_has_one_format_per_file(dataset_splits: dict) -> dg.AssetCheckResult:
    return _dataset_check(
        dataset_checks.format_problems(_dataset_dir(dataset_splits)),
        "train, valid and test hold `text` records only.",
        "mlx-lm reads a file in its first line's format; some lines differ.",
    )


@dg.asset_check(
    asset=dataset_splits,
    blocking=True,
    description="Every line parses as JSON and has a non-empty `text`.",
)
def dataset_lines_have_text(dataset_splits: dict) -> dg.AssetCheckResult:
    return _dataset_check(
        dataset_checks.line_problems(_dataset_dir(dataset_splits)),
        "Every line parses and has text.",
        "Some lines do not parse or have no text.",
    )


@dg.asset_check(
    asset=dataset_splits,
    blocking=True,
    description="No line is longer than max_seq_length with the base model's tokenizer, so "
    "mlx-lm never truncates one.",
)
def dataset_within_token_limit(
    dataset_splits: dict, mlx_base_model: BaseModelResource
) -> dg.AssetCheckResult:
    tokenizer = mlx_base_model.load_tokenizer()
    limit = int(dataset_splits["max_seq_length"])
    return _dataset_check(
        dataset_checks.over_length_lines(_dataset_dir(dataset_splits), tokenizer, limit),
        f"Every line fits in {limit} tokens.",
        f"Lines over {limit} tokens would be truncated by mlx-lm.",
    )


@dg.asset_check(
    asset=dataset_splits,
    blocking=True,
    description="No two records of different split files are exact or near duplicates (exact "
    "Jaccard >= 0.7 of their own 5-token shingles), computed from the JSONL lines alone.",
)
def dataset_splits_share_no_duplicates(dataset_splits: dict) -> dg.AssetCheckResult:
    directory = _dataset_dir(dataset_splits)
    lines = sum(dataset_splits["lines"].values())
    return _dataset_check(
        dataset_checks.cross_split_duplicates(directory),
        f"No duplicate across splits among {lines} records (exact Jaccard of every "
        f"cross-split pair at or above {dataset_checks.DUPLICATE_JACCARD}).",
        "Duplicates across splits leak test data into training.",
    )


@dg.asset_check(
    asset=dataset_splits,
    blocking=True,
    description="No line and no kept file overlaps a HumanEval problem (substring or 13-gram).",
)
def dataset_free_of_benchmark_contamination(dataset_splits: dict) -> dg.AssetCheckResult:
    directory = _dataset_dir(dataset_splits)
    ngram = int(read_manifest(directory)["config"]["decontam_ngram"])
    decontaminator = Decontaminator(load_humaneval(), ngram=ngram)
    return _dataset_check(
        dataset_checks.contaminated(directory, read_table(directory / UNITS_FILE), decontaminator),
        "No overlap with the 164 HumanEval problems.",
        "Benchmark text in training data inflates HumanEval scores.",
    )


@dg.asset_check(
    asset=dataset_splits,
    blocking=True,
    description="Re-scans every line of train, valid and test for secrets (FIM records in file "
    "order, with their file's rules); passes at zero.",
)
def dataset_free_of_secrets(dataset_splits: dict) -> dg.AssetCheckResult:
    directory = _dataset_dir(dataset_splits)
    paths = {
        f"{SPLIT_FILES[row['split']]}:{row['line']}": row["path"]
        for row in read_table(directory / PROVENANCE_FILE)
    }
    return _dataset_check(
        dataset_checks.secret_findings(directory, paths=paths),
        "No secret found in any line.",
        "Secrets in training data can be memorised and emitted by the model.",
    )


DATASET_CHECKS = [
    dataset_has_one_format_per_file,
    dataset_lines_have_text,
    dataset_within_token_limit,
    dataset_splits_share_no_duplicates,
    dataset_free_of_benchmark_contamination,
    dataset_free_of_secrets,
]


@dg.asset_check(
    asset=eval_scores,
    blocking=True,
    description="Promotion gate: HumanEval pass@1 no worse than the deployed adapter (or the base "
    "model on first deploy) by more than the margin, on the same problems; and the project eval "
    "improves (FIM edit similarity up, test loss down). Nothing is released or deployed without "
    "it.",
)
def promotion_gate(
    eval_scores: dict, promotion_policy: PromotionPolicyResource
) -> dg.AssetCheckResult:
    decision = promotion_policy.decide(eval_scores)
    verdict = "promote" if decision.passed else "reject"
    return dg.AssetCheckResult(
        passed=decision.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{verdict} adapter {eval_scores['adapter_version']} (compared with the "
        f"{decision.reference}): " + "; ".join(decision.reasons),
        metadata={
            "verdict": verdict,
            "compared_with": decision.reference,
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
            **{name: round(value, 4) for name, value in decision.numbers.items()},
        },
    )
