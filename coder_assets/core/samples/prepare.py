"""The files of one snapshot made ready for sample extraction: read from the mirror, filtered,
and with every secret redacted (or the file dropped) before any sample is built from them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from coder_assets.core.samples.extract_yaml import is_sops_encrypted
from coder_assets.core.samples.filters import (
    FileFilterConfig,
    rejection_reason,
    strip_licence_header,
)
from coder_assets.core.samples.secrets import Redactor, SecretScanner, redacted_line_fraction
from coder_assets.core.sources.manifest import BlobReader

SECRET_ACTIONS = ("redact", "drop", "keep")
# A file with more than this share of its non-blank lines redacted yields no sample: what is left
# of a key file or a Secret manifest is placeholders and blank lines.
MAX_REDACTED_LINE_FRACTION = 0.5


@dataclass(frozen=True)
class ManifestFile:
    """A kept row of a snapshot's manifest."""

    path: str
    blob_sha: str
    language: str | None


@dataclass(frozen=True)
class SourceFile:
    """A file ready for extraction: its text is already free of secrets and of its licence
    header. `text`'s line 1 is line `first_line` of the file in the repository."""

    path: str
    blob_sha: str
    language: str | None
    text: str
    first_line: int = 1

    def repo_line(self, line: int) -> int:
        """The repository's line number of `text`'s line `line`."""
        return line + self.first_line - 1


@dataclass
class PreparedFiles:
    files: list[SourceFile] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    licence_headers: int = 0  # kept files whose licence header was taken off

    @property
    def rejection_counts(self) -> Counter[str]:
        return Counter(reason for _, reason in self.rejected)


class SecretPolicy:
    """What happens to text with a secret in it: redacted with stable placeholders (default),
    dropped, or kept (only for proving that the blocking secret check catches it)."""

    def __init__(self, action: str, scanner: SecretScanner | None = None) -> None:
        if action not in SECRET_ACTIONS:
            raise ValueError(f"secret_action must be one of {SECRET_ACTIONS}, got {action!r}")
        self.action = action
        self.scanner = scanner or SecretScanner()
        self.redactor = Redactor(self.scanner)
        self.dropped: Counter[str] = Counter()

    @property
    def counts(self) -> Counter[str]:
        """Secrets found, per type (redacted or dropped); never the secrets themselves."""
        return self.redactor.counts + self.dropped

    def vetoes(self, texts: Iterable[tuple[str, str]]) -> bool:
        """The last look at a finished sample, as (path, text) pieces in the order a reader
        reads them: True when any piece still holds a finding, so the sample must be left out.
        It never rewrites a piece: the files were cleaned once, and every sample cut from one
        file must show the same redaction. With "keep" nothing is vetoed."""
        if self.action == "keep":
            return False
        return any(text and self.scanner.scan(text, path) for path, text in texts)

    def clean(self, text: str, path: str = "") -> str | None:
        """`text` free of secrets, or None when the policy drops it."""
        if self.action == "keep":
            return text
        if self.action == "drop":
            findings = self.scanner.scan(text, path)
            if findings:
                self.dropped.update(f.secret_type for f in findings)
                return None
            return text
        redacted, _ = self.redactor.redact(text, path)
        return redacted


def prepare_files(
    mirror: Path,
    kept: Iterable[ManifestFile],
    *,
    filters: FileFilterConfig,
    secrets: SecretPolicy,
) -> PreparedFiles:
    """Read every kept file (in path order, so placeholders number the same way every run),
    take its licence header off, reject what the filters reject, and clean what remains."""
    prepared = PreparedFiles()
    with BlobReader(mirror) as reader:
        for item in sorted(kept, key=lambda f: f.path):
            try:
                text = reader.read(item.blob_sha).decode("utf-8")
            except UnicodeDecodeError:
                prepared.rejected.append((item.path, "not_utf8"))
                continue
            if is_sops_encrypted(text):
                prepared.rejected.append((item.path, "sops_encrypted"))
                continue
            text, header_lines = strip_licence_header(text)
            reason = rejection_reason(text, item.path, item.language, filters)
            if reason:
                prepared.rejected.append((item.path, reason))
                continue
            clean = secrets.clean(text, item.path)
            if clean is None:
                prepared.rejected.append((item.path, "contains_secret"))
                continue
            if redacted_line_fraction(clean) > MAX_REDACTED_LINE_FRACTION:
                prepared.rejected.append((item.path, "mostly_redacted"))
                continue
            prepared.licence_headers += 1 if header_lines else 0
            prepared.files.append(
                SourceFile(item.path, item.blob_sha, item.language, clean, 1 + header_lines)
            )
    return prepared


def count_secret_findings(
    pieces: Iterable[tuple[str, str]], scanner: SecretScanner | None = None
) -> Counter[str]:
    """Findings per secret type over (path, text) pieces: the validator behind the blocking
    secret checks. A path chooses the rules of its file type ("" scans as source code)."""
    scanner = scanner or SecretScanner()
    counts: Counter[str] = Counter()
    for path, text in pieces:
        if text:
            counts.update(f.secret_type for f in scanner.scan(text, path))
    return counts
