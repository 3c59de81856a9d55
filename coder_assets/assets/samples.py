"""instruction_pairs and fim_samples: training samples of one repository, free of secrets."""

# No `from __future__ import annotations` here: Dagster reads these annotations at runtime.
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from coder_assets.assets import reported_as_failure
from coder_assets.assets.snapshots import mirror_with_commit
from coder_assets.constants import OWNERS, SAMPLES_GROUP
from coder_assets.core.languages import language_of
from coder_assets.core.samples import extract_adr, extract_go, extract_python, extract_yaml
from coder_assets.core.samples.filters import FileFilterConfig, rejection_reason
from coder_assets.core.samples.fim import (
    FimConfig,
    contains_special_tokens,
    escape_special_tokens,
    fim_documents,
    fim_samples_for_file,
)
from coder_assets.core.samples.history import (
    HistoryConfig,
    commit_changes,
    commit_instruction,
    review_hunks,
)
from coder_assets.core.samples.prepare import (
    ManifestFile,
    PreparedFiles,
    SecretPolicy,
    prepare_files,
)
from coder_assets.core.samples.quality import pair_quality
from coder_assets.core.samples.records import (
    ExtractedPair,
    FimRecord,
    InstructionPair,
    pair_from_extracted,
    sample_id,
)
from coder_assets.partitions import repo_partitions
from coder_assets.resources.repos import RepoSourceResource
from coder_assets.resources.storage import RepoMirrorsResource

EXTRACTORS = {
    "python": extract_python.extract,
    "go": extract_go.extract,
    "yaml": extract_yaml.extract,
    "markdown": extract_adr.extract,
}
# Extractors that name the repository in the instructions they build for undocumented code.
NAMES_REPO = frozenset({"python", "go"})
PREVIEW_SAMPLES = 5
REJECTION_TABLE_ROWS = 200

SecretAction = Literal["redact", "drop", "keep"]

# Both sample assets: one partition per repo, stored as parquet, deterministic given their inputs.
SAMPLE_ASSET_SETTINGS = {
    "partitions_def": repo_partitions,
    "group_name": SAMPLES_GROUP,
    "kinds": {"python", "pandas"},
    "code_version": "1",
    "owners": OWNERS,
    "io_manager_key": "parquet_io_manager",
}


class FileFilters(dg.Config):
    """BigCode-style file filters; a rejected file contributes no sample."""

    max_line_length: int = Field(default=1000, description="Reject files with a longer line.")
    max_mean_line_length: float = Field(default=100.0, description="Reject above this mean.")
    min_alphanumeric_fraction: float = Field(
        default=0.25, description="Reject files with fewer letters and digits than this."
    )
    min_chars: int = Field(default=40, description="Reject files too short to teach anything.")
    max_data_file_bytes: int = Field(
        default=50_000, description="Reject data files (JSON, CSV, ...) larger than this."
    )

    def to_core(self) -> FileFilterConfig:
        return FileFilterConfig(
            max_line_length=self.max_line_length,
            max_mean_line_length=self.max_mean_line_length,
            min_alphanumeric_fraction=self.min_alphanumeric_fraction,
            min_chars=self.min_chars,
            max_data_file_bytes=self.max_data_file_bytes,
        )


class InstructionPairsConfig(dg.Config):
    filters: FileFilters = Field(default_factory=FileFilters)
    secret_action: SecretAction = Field(
        default="redact",
        description="redact: stable placeholders; drop: leave out any text with a secret; "
        "keep: only to prove the blocking secret check stops the run (never in production).",
    )
    history_depth: int = Field(default=500, description="Commits of history to look back.")
    history_max_changed_lines: int = Field(
        default=200, description="A commit pair changes at most this many lines."
    )


class FimSamplesConfig(dg.Config):
    filters: FileFilters = Field(default_factory=FileFilters)
    secret_action: SecretAction = Field(default="redact", description="As for instruction_pairs.")
    fim_rate: float = Field(default=0.9, description="Fraction of kept files that yield FIM.")
    samples_per_file: int = Field(default=2, description="FIM samples per selected file.")
    random_span_weight: float = Field(default=1.0, description="Mix: random character spans.")
    line_span_weight: float = Field(default=1.0, description="Mix: whole-line spans.")
    syntax_span_weight: float = Field(default=1.0, description="Mix: syntax-aware spans.")
    seed: int = Field(default=0, description="With the blob sha, fixes every span.")
    max_middle_chars: int = Field(default=2000, description="Longest middle.")
    repo_context: bool = Field(
        default=False, description="Prepend neighbouring files in Qwen's repo-level format."
    )
    repo_context_chars: int = Field(default=6000, description="Budget for neighbour files.")
    special_tokens: Literal["drop", "escape"] = Field(
        default="drop",
        description="A file containing a Qwen special-token string is dropped, or escaped.",
    )

    def to_core(self) -> FimConfig:
        return FimConfig(
            fim_rate=self.fim_rate,
            samples_per_file=self.samples_per_file,
            strategy_weights=(
                ("random_span", self.random_span_weight),
                ("line_span", self.line_span_weight),
                ("syntax_span", self.syntax_span_weight),
            ),
            seed=self.seed,
            max_middle_chars=self.max_middle_chars,
            repo_context=self.repo_context,
            repo_context_chars=self.repo_context_chars,
            special_tokens=self.special_tokens,
        )


def _snapshot(
    frame: pd.DataFrame,
    repo_source: RepoSourceResource,
    repo_mirrors: RepoMirrorsResource,
    log: Callable[[str], None],
) -> tuple[str, str, Path, list[ManifestFile]]:
    """Repo, commit, this host's mirror (fetched again when missing) and kept files of a
    repo_snapshots partition."""
    attrs = frame.attrs
    mirror = mirror_with_commit(repo_source, repo_mirrors, attrs["repo"], attrs["commit_sha"], log)
    kept = frame[frame["skip_reason"].isna()]
    files = [
        ManifestFile(
            row.path, row.blob_sha, row.language if isinstance(row.language, str) else None
        )
        for row in kept.itertuples()
    ]
    return attrs["repo"], attrs["commit_sha"], mirror, files


def _counts_table(title: str, counts: Counter[str] | dict[str, int]) -> str:
    lines = [f"| {title} | count |", "|---|---:|"]
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    lines += [f"| {key} | {value} |" for key, value in ordered] or ["| (none) | 0 |"]
    return "\n".join(lines)


def _shorten(text: str, limit: int = 300) -> str:
    """`text` cut at a word boundary near `limit`, with inline code spans kept balanced."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    if cut.count("`") % 2:
        cut += "`"
    return cut + " …"


def _fenced(text: str, limit: int = 600) -> str:
    shown = text if len(text) <= limit else text[:limit] + "\n…"
    return "````\n" + shown.replace("````", "` ` ` `") + "\n````"


def _rejection_table(rejected: Sequence[tuple[str, str]]) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({"path": p, "reason": r}) for p, r in rejected[:REJECTION_TABLE_ROWS]
        ],
        schema=dg.TableSchema(
            columns=[dg.TableColumn("path", "string"), dg.TableColumn("reason", "string")]
        ),
    )


def _common_metadata(
    prepared: PreparedFiles,
    rejections: Counter[str],
    policy: SecretPolicy,
    kept_files: int,
    covered: set[str],
    repo: str,
    sha: str,
) -> dict[str, object]:
    return {
        "repo": repo,
        "commit_sha": sha,
        "files_kept_by_snapshot": kept_files,
        "files_covered": len(covered),
        "coverage": f"{len(covered)} of {kept_files} kept files yield samples",
        "rejections_by_reason": dg.MetadataValue.md(_counts_table("reason", rejections)),
        "rejected_files": _rejection_table(prepared.rejected),
        "secrets_by_type": dg.MetadataValue.md(_counts_table("secret type", policy.counts)),
        "secrets_total": int(sum(policy.counts.values())),
        "licence_headers_removed": prepared.licence_headers,
        "secret_action": policy.action,
    }


@dg.asset(**SAMPLE_ASSET_SETTINGS)
def instruction_pairs(
    context: dg.AssetExecutionContext,
    config: InstructionPairsConfig,
    repo_snapshots: pd.DataFrame,
    repo_source: RepoSourceResource,
    repo_mirrors: RepoMirrorsResource,
) -> dg.MaterializeResult:
    """Instruction → output pairs of one repository, with provenance (repo, commit, path, lines):
    Python functions/classes/modules with docstrings, exported Go declarations with doc comments and
    small main.go files, Kubernetes/Flux/Argo manifests, MADR decisions and their rationale, and
    small single-file commits with imperative subjects (file before → after). Secrets are redacted
    with stable placeholders before any pair is built; Secret manifests and SOPS files never count.
    """
    with reported_as_failure():
        repo, sha, mirror, kept = _snapshot(
            repo_snapshots, repo_source, repo_mirrors, context.log.info
        )
        policy = SecretPolicy(config.secret_action)
        filters = config.filters.to_core()
        prepared = prepare_files(mirror, kept, filters=filters, secrets=policy)
        rejections = prepared.rejection_counts
        pairs: dict[str, InstructionPair] = {}

        def add(pair: InstructionPair, path: str) -> None:
            cleaned = [pair.instruction, pair.input, pair.output]
            # The pieces were cleaned with their file; a finding now vetoes, never rewrites.
            if policy.vetoes([("", pair.instruction), (path, pair.input), (path, pair.output)]):
                rejections["sample_with_secret"] += 1
                return
            low_value = pair_quality(pair.kind, pair.output)
            if low_value:
                rejections[low_value] += 1
                return
            if any(contains_special_tokens(text) for text in cleaned):
                # Raw `<|...|>` strings would become special tokens in training.
                rejections["special_tokens_escaped"] += 1
                cleaned = [escape_special_tokens(text) for text in cleaned]
            instruction, input_, output = cleaned
            pairs.setdefault(
                pair.sample_id, replace(pair, instruction=instruction, input=input_, output=output)
            )

        for item in prepared.files:
            extractor = EXTRACTORS.get(item.language or "")
            if extractor is None:
                continue
            names_repo = {"repo": repo} if item.language in NAMES_REPO else {}
            extraction = extractor(item.text, item.path, **names_repo)
            if extraction.error:
                rejections[f"{extraction.error}:{item.language}"] += 1
                prepared.rejected.append((item.path, extraction.error))
            for extracted in extraction.pairs:
                located = replace(
                    extracted,
                    start_line=item.repo_line(extracted.start_line),
                    end_line=item.repo_line(extracted.end_line),
                )
                add(
                    pair_from_extracted(
                        located, repo=repo, commit_sha=sha, path=item.path, language=item.language
                    ),
                    item.path,
                )

        kept_paths = {f.path for f in kept}
        changes, history_skips = commit_changes(
            mirror,
            sha,
            HistoryConfig(
                depth=config.history_depth, max_changed_lines=config.history_max_changed_lines
            ),
            keep_path=kept_paths.__contains__,
        )
        for change in changes:
            language = language_of(change.path) or "text"
            if rejection_reason(change.after, change.path, language, filters):
                history_skips["after_rejected_by_filters"] += 1
                continue
            texts = [
                policy.clean(t, change.path) for t in (change.subject, change.before, change.after)
            ]
            if any(t is None for t in texts):
                history_skips["contains_secret"] += 1
                continue
            subject, before, after = texts
            old_hunks, new_hunks = review_hunks(before, after)
            extracted = ExtractedPair(
                kind="commit_change",
                instruction=commit_instruction(subject, change.path),
                input=old_hunks,
                output=new_hunks,
                start_line=change.start_line,
                end_line=change.end_line,
            )
            pair = pair_from_extracted(
                extracted,
                repo=repo,
                commit_sha=change.commit_sha,
                path=change.path,
                language=language,
            )
            add(replace(pair, parent_sha=change.parent_sha), change.path)

        records = sorted(pairs.values(), key=lambda p: (p.kind, p.path, p.start_line, p.sample_id))
        frame = pd.DataFrame(
            [asdict(p) for p in records], columns=list(InstructionPair.__dataclass_fields__)
        )
        frame.attrs = {"repo": repo, "commit_sha": sha}
        covered = {p.path for p in records if p.kind != "commit_change"}
        metadata = _common_metadata(prepared, rejections, policy, len(kept), covered, repo, sha)
        metadata.update(
            {
                "pairs_total": len(records),
                "pairs_by_kind": dg.MetadataValue.md(
                    _counts_table("kind", Counter(p.kind for p in records))
                ),
                "pairs_by_language": dg.MetadataValue.md(
                    _counts_table("language", Counter(p.language for p in records))
                ),
                "history_skipped": dg.MetadataValue.md(_counts_table("reason", history_skips)),
                "preview": dg.MetadataValue.md(_pairs_preview(records)),
            }
        )
        context.log.info(f"{repo}@{sha[:12]}: {len(records)} instruction pairs")
        return dg.MaterializeResult(value=frame, metadata=metadata)


def _fim_preview(records: Sequence[FimRecord]) -> str:
    blocks = [
        f"**{r.strategy}** `{r.path}:{r.start_line}-{r.end_line}`\n\n{_fenced(r.text)}"
        for r in records[:PREVIEW_SAMPLES]
    ]
    return "\n\n---\n\n".join(blocks) or "(no samples)"


def _pairs_preview(records: Sequence[InstructionPair]) -> str:
    shown: list[InstructionPair] = []
    for kind in dict.fromkeys(p.kind for p in records):
        shown.extend([p for p in records if p.kind == kind][:1])
    blocks = []
    for pair in shown[:PREVIEW_SAMPLES]:
        where = f"{pair.path}:{pair.start_line}-{pair.end_line}"
        blocks.append(
            f"**{pair.kind}** `{where}`\n\n> {_shorten(pair.instruction)}\n\n{_fenced(pair.output)}"
        )
    return "\n\n---\n\n".join(blocks) or "(no pairs)"


@dg.asset(**SAMPLE_ASSET_SETTINGS)
def fim_samples(
    context: dg.AssetExecutionContext,
    config: FimSamplesConfig,
    repo_snapshots: pd.DataFrame,
    repo_source: RepoSourceResource,
    repo_mirrors: RepoMirrorsResource,
) -> dg.MaterializeResult:
    """Fill-in-the-middle samples of every kept source file of one repository, in Qwen2.5-Coder's
    `<|fim_prefix|>…<|fim_suffix|>…<|fim_middle|>…` format, mixing random character spans,
    whole-line spans and syntax-aware spans. Deterministic from (blob sha, seed): an unchanged file
    yields byte-identical samples. Secrets are redacted before any span is cut."""
    with reported_as_failure():
        repo, sha, mirror, kept = _snapshot(
            repo_snapshots, repo_source, repo_mirrors, context.log.info
        )
        policy = SecretPolicy(config.secret_action)
        prepared = prepare_files(mirror, kept, filters=config.filters.to_core(), secrets=policy)
        rejections = prepared.rejection_counts
        fim_config = config.to_core()
        everything = [(f.path, f.text) for f in prepared.files]
        records: list[FimRecord] = []
        strategies: Counter[str] = Counter()
        for item in prepared.files:
            neighbours = everything if config.repo_context else None
            samples, skip = fim_samples_for_file(
                item.text,
                item.path,
                item.language,
                item.blob_sha,
                fim_config,
                repo_name=repo,
                neighbours=neighbours,
            )
            if skip:
                rejections[skip] += 1
                if skip == "special_tokens":
                    prepared.rejected.append((item.path, skip))
            for sample in samples:
                # Scanned as a reader reads the files (never in PSM order, which puts a suffix
                # after a prefix it does not follow), and only to veto: every sample of a file
                # shows the file's one redaction.
                if policy.vetoes(
                    (path or item.path, text) for path, text in fim_documents(sample.text)
                ):
                    rejections["sample_with_secret"] += 1
                    continue
                strategies[sample.strategy] += 1
                records.append(
                    FimRecord(
                        sample_id=sample_id(
                            "fim",
                            repo,
                            item.path,
                            item.blob_sha,
                            sample.strategy,
                            str(len(sample.prefix)),
                            str(len(sample.middle)),
                        ),
                        strategy=sample.strategy,
                        language=item.language or "text",
                        text=sample.text,
                        repo=repo,
                        commit_sha=sha,
                        path=item.path,
                        blob_sha=item.blob_sha,
                        start_line=item.repo_line(sample.start_line),
                        end_line=item.repo_line(sample.end_line),
                    )
                )
        frame = pd.DataFrame(
            [asdict(r) for r in records], columns=list(FimRecord.__dataclass_fields__)
        )
        frame.attrs = {"repo": repo, "commit_sha": sha}
        covered = {r.path for r in records}
        metadata = _common_metadata(prepared, rejections, policy, len(kept), covered, repo, sha)
        metadata.update(
            {
                "samples_total": len(records),
                "samples_by_strategy": dg.MetadataValue.md(_counts_table("strategy", strategies)),
                "samples_by_language": dg.MetadataValue.md(
                    _counts_table("language", Counter(r.language for r in records))
                ),
                "preview": dg.MetadataValue.md(_fim_preview(records)),
            }
        )
        context.log.info(f"{repo}@{sha[:12]}: {len(records)} FIM samples")
        return dg.MaterializeResult(value=frame, metadata=metadata)
