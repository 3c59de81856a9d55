"""The file manifest of one commit: every path with its size, blob sha, language, and why it is
skipped when it is. Content is read from git objects only: nothing is checked out, so a symlink's
target is never followed and no filter, hook or LFS smudge can run."""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import git
import pandas as pd

from coder_assets.core.errors import GitError
from coder_assets.core.globs import glob_matches
from coder_assets.core.languages import (
    GENERATED_GLOBS,
    LOCKFILE_NAMES,
    VENDORED_DIRS,
    language_of,
)
from coder_assets.core.sources.git import run_git
from coder_assets.core.sources.gitattributes import linguist_flags, rules_from_files
from coder_assets.core.sources.optout import OPT_OUT_FILE, OptOut, parse_opt_out

MODE_SYMLINK = "120000"
MODE_GITLINK = "160000"
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"
LFS_POINTER_MAX_BYTES = 1024
BINARY_SNIFF_BYTES = 8000

# In the order they are tested: the first that applies is recorded.
SKIP_REASONS = (
    "submodule",
    "symlink",
    "opted_out",
    "vendored",
    "generated",
    "lockfile",
    "too_large",
    "empty",
    "lfs_pointer",
    "binary",
)

MANIFEST_COLUMNS = ("path", "size", "blob_sha", "mode", "language", "skip_reason")


@dataclass(frozen=True)
class TreeEntry:
    path: str
    mode: str
    object_type: str
    sha: str
    size: int | None


@dataclass(frozen=True)
class ManifestRow:
    path: str
    size: int | None
    blob_sha: str
    mode: str
    language: str | None
    skip_reason: str | None


@dataclass(frozen=True)
class ManifestConfig:
    max_file_bytes: int = 1_000_000
    exclude_globs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    rows: list[ManifestRow]
    opt_out: OptOut = field(default_factory=OptOut)

    def kept(self) -> list[ManifestRow]:
        return [row for row in self.rows if row.skip_reason is None]

    def counts_by_language(self) -> dict[str, int]:
        counts = Counter(row.language or "other" for row in self.kept())
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def counts_by_skip_reason(self) -> dict[str, int]:
        counts = Counter(row.skip_reason for row in self.rows if row.skip_reason)
        return {reason: counts[reason] for reason in SKIP_REASONS if counts[reason]}

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame([asdict(row) for row in self.rows], columns=list(MANIFEST_COLUMNS))
        return frame.astype({"size": "Int64"})


def list_tree(repo: Path, sha: str) -> list[TreeEntry]:
    """Every entry of the tree of commit `sha`, recursively, in git's path order."""
    out = run_git(["ls-tree", "-r", "-l", "-z", "--full-tree", sha], cwd=repo, what="git ls-tree")
    entries: list[TreeEntry] = []
    for record in out.split("\0"):
        if not record:
            continue
        meta, _, path = record.partition("\t")
        mode, object_type, object_sha, size = meta.split()
        entries.append(
            TreeEntry(path, mode, object_type, object_sha, None if size == "-" else int(size))
        )
    return entries


class BlobReader:
    """Reads blobs from a repository's object database through one `git cat-file` process."""

    def __init__(self, repo: Path) -> None:
        self._repo = git.Repo(repo, odbt=git.GitCmdObjectDB)

    def read(self, sha: str, limit: int | None = None) -> bytes:
        stream = self._repo.odb.stream(bytes.fromhex(sha))
        return stream.read() if limit is None else stream.read(limit)

    def close(self) -> None:
        self._repo.close()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def path_skip_reason(
    entry: TreeEntry, opt_out: OptOut, linguist: dict[str, bool], config: ManifestConfig
) -> str | None:
    """The reason to skip `entry` that its path, mode and size alone give, or None."""
    if entry.mode == MODE_GITLINK or entry.object_type == "commit":
        return "submodule"
    if entry.mode == MODE_SYMLINK:
        return "symlink"
    if opt_out.excludes(entry.path) or any(
        glob_matches(g, entry.path) for g in config.exclude_globs
    ):
        return "opted_out"
    parts = PurePosixPath(entry.path).parts
    # An explicit `-linguist-vendored` / `linguist-generated=false` overrides the path rules, as
    # it does on GitHub.
    vendored = linguist.get("linguist-vendored")
    if vendored is None:
        vendored = any(p in VENDORED_DIRS for p in parts[:-1])
    if vendored:
        return "vendored"
    generated = linguist.get("linguist-generated")
    if generated is None:
        generated = any(glob_matches(g, entry.path) for g in GENERATED_GLOBS)
    if generated:
        return "generated"
    if parts[-1] in LOCKFILE_NAMES:
        return "lockfile"
    if entry.size is not None and entry.size > config.max_file_bytes:
        return "too_large"
    if entry.size == 0:
        return "empty"
    return None


def content_skip_reason(head: bytes, size: int | None) -> str | None:
    """The reason to skip a blob that its first bytes give, or None. `size` is the blob's full
    size, so a sniff that stopped short of the end can be told from the whole file."""
    if (size or 0) <= LFS_POINTER_MAX_BYTES and head.startswith(LFS_POINTER_PREFIX):
        return "lfs_pointer"
    sniff = head[:BINARY_SNIFF_BYTES]
    if b"\0" in sniff:
        return "binary"
    try:
        sniff.decode("utf-8")
    except UnicodeDecodeError as exc:
        cut_short = size is not None and size > len(sniff)
        # Only a multi-byte character cut at the sniff boundary is forgiven.
        if not (cut_short and exc.reason == "unexpected end of data"):
            return "binary"
    return None


def _control_files(
    entries: Iterable[TreeEntry], reader: BlobReader, repo: str
) -> tuple[OptOut, dict[str, str]]:
    opt_out = OptOut()
    attributes: dict[str, str] = {}
    for entry in entries:
        if entry.object_type != "blob" or entry.mode == MODE_SYMLINK:
            continue
        if entry.path == OPT_OUT_FILE:
            opt_out = parse_opt_out(_text(reader.read(entry.sha, 65536)), repo=repo)
        elif posixpath.basename(entry.path) == ".gitattributes":
            attributes[entry.path] = _text(reader.read(entry.sha, 65536))
    return opt_out, attributes


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def build_manifest(repo_dir: Path, sha: str, *, repo: str, config: ManifestConfig) -> Manifest:
    """The manifest of commit `sha` in the repository at `repo_dir` (`repo` names it in errors)."""
    entries = list_tree(repo_dir, sha)
    rows: list[ManifestRow] = []
    try:
        reader = BlobReader(repo_dir)
    except (git.GitError, OSError) as exc:
        raise GitError(f"cannot open the mirror of {repo} at {repo_dir}: {exc}") from exc
    with reader:
        opt_out, attribute_files = _control_files(entries, reader, repo)
        rules = rules_from_files(attribute_files)
        for entry in entries:
            linguist = linguist_flags(entry.path, rules) if rules else {}
            reason = path_skip_reason(entry, opt_out, linguist, config)
            if reason is None:
                head = reader.read(entry.sha, max(BINARY_SNIFF_BYTES, LFS_POINTER_MAX_BYTES))
                reason = content_skip_reason(head, entry.size)
            rows.append(
                ManifestRow(
                    path=entry.path,
                    size=entry.size,
                    blob_sha=entry.sha,
                    mode=entry.mode,
                    language=language_of(entry.path),
                    skip_reason=reason,
                )
            )
    return Manifest(rows=rows, opt_out=opt_out)
