"""The records the samples stage produces: instruction pairs and FIM samples, with provenance."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# Kinds of instruction pair, one per source. `*_undocumented` pairs are asked from what the code
# shows (signature, calls, neighbours) because the definition has no docstring / doc comment.
PAIR_KINDS = (
    "python_function",
    "python_function_undocumented",
    "python_class",
    "python_class_undocumented",
    "python_module",
    "go_function",
    "go_function_undocumented",
    "go_type",
    "go_type_undocumented",
    "go_main",
    "k8s_manifest",
    "adr_decision",
    "adr_rationale",
    "commit_change",
)


@dataclass(frozen=True)
class ExtractedPair:
    """What an extractor finds in one file: an instruction pair and the lines it came from
    (1-based, inclusive). The asset adds the repo and commit."""

    kind: str
    instruction: str
    output: str
    input: str = ""
    start_line: int = 1
    end_line: int = 1


@dataclass(frozen=True)
class InstructionPair:
    """One instruction pair with its provenance. `commit_sha` is the snapshot's commit, or for a
    commit_change pair the commit that made the change (`parent_sha` the one before it)."""

    sample_id: str
    kind: str
    language: str
    instruction: str
    input: str
    output: str
    repo: str
    commit_sha: str
    path: str
    start_line: int
    end_line: int
    parent_sha: str = ""


def sample_id(*parts: str) -> str:
    """A stable id from the parts that define a sample's content and origin (never a commit SHA
    alone, so an unchanged file keeps its ids across snapshots)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:20]


def pair_from_extracted(
    extracted: ExtractedPair, *, repo: str, commit_sha: str, path: str, language: str
) -> InstructionPair:
    """An InstructionPair from an extractor's result and where it was found."""
    return InstructionPair(
        sample_id=sample_id(
            "pair",
            extracted.kind,
            repo,
            path,
            extracted.instruction,
            extracted.input,
            extracted.output,
        ),
        kind=extracted.kind,
        language=language,
        instruction=extracted.instruction,
        input=extracted.input,
        output=extracted.output,
        repo=repo,
        commit_sha=commit_sha,
        path=path,
        start_line=extracted.start_line,
        end_line=extracted.end_line,
    )


@dataclass(frozen=True)
class FimRecord:
    """One FIM sample with its provenance (lines of the middle in the file)."""

    sample_id: str
    strategy: str
    language: str
    text: str
    repo: str
    commit_sha: str
    path: str
    blob_sha: str
    start_line: int
    end_line: int
