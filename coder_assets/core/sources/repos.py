"""Repository references, partition keys and the rule that decides which repos are snapshotted."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from coder_assets.core.errors import PartitionKeyError

# Gitea names are [-._A-Za-z0-9]; anything else (possible in local folders) is percent-encoded, so
# the key stays reversible. "~" separates owner and name because no encoded part can contain it.
PARTITION_KEY_SEPARATOR = "~"
_SAFE_CHARS = "-._"


def _encode_part(part: str) -> str:
    if not part:
        raise PartitionKeyError("an owner or repository name is empty; both are required")
    # quote() never encodes "~", which is our separator.
    encoded = quote(part, safe=_SAFE_CHARS).replace("~", "%7E")
    # Dagster refuses "..." anywhere in a partition key; escape every dot that touches another dot.
    return re.sub(r"\.(?=\.)|(?<=\.)\.", "%2E", encoded)


def partition_key_for(owner: str, name: str) -> str:
    """The Dagster partition key of `owner/name`, reversible with `parse_partition_key`."""
    return f"{_encode_part(owner)}{PARTITION_KEY_SEPARATOR}{_encode_part(name)}"


def parse_partition_key(key: str) -> tuple[str, str]:
    """`(owner, name)` of a partition key made by `partition_key_for`."""
    owner, sep, name = key.partition(PARTITION_KEY_SEPARATOR)
    if not sep or not owner or not name or PARTITION_KEY_SEPARATOR in name:
        raise PartitionKeyError(
            f"partition key {key!r} is not of the form 'owner{PARTITION_KEY_SEPARATOR}name'; "
            "pick a key from the 'repos' partitions, e.g. 'homelab~order-events-handler'"
        )
    return unquote(owner), unquote(name)


@dataclass(frozen=True)
class RepoRef:
    """One repository of the source, as listed (not yet fetched)."""

    owner: str
    name: str
    clone_url: str
    default_branch: str
    archived: bool = False
    mirror: bool = False
    empty: bool = False
    fork: bool = False
    private: bool = True
    html_url: str = ""
    # Why the source could not read the repository (empty when it could); never "empty".
    unreadable: str = ""

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def partition_key(self) -> str:
        return partition_key_for(self.owner, self.name)


@dataclass(frozen=True)
class RepoHead:
    """A repository and the commit its default branch points at."""

    repo: RepoRef
    sha: str


@dataclass(frozen=True)
class RepoFilterRule:
    """Which listed repositories are snapshotted. Archived, mirror and empty repos are skipped by
    default: archived code is stale, mirrors are someone else's code, empty repos hold nothing."""

    include_archived: bool = False
    include_mirrors: bool = False
    include_forks: bool = True
    exclude_names: tuple[str, ...] = field(default_factory=tuple)

    def skip_reason(self, repo: RepoRef) -> str | None:
        """Why `repo` is skipped, or None when it is kept."""
        if repo.empty:
            return "empty"
        if repo.archived and not self.include_archived:
            return "archived"
        if repo.mirror and not self.include_mirrors:
            return "mirror"
        if repo.fork and not self.include_forks:
            return "fork"
        for pattern in self.exclude_names:
            if fnmatch.fnmatchcase(repo.full_name, pattern) or fnmatch.fnmatchcase(
                repo.name, pattern
            ):
                return "excluded_by_name"
        return None


def select_repos(
    repos: Iterable[RepoRef], rule: RepoFilterRule
) -> tuple[list[RepoRef], dict[str, str]]:
    """Split `repos` into the kept ones and `{full_name: skip reason}` for the rest."""
    kept: list[RepoRef] = []
    skipped: dict[str, str] = {}
    for repo in repos:
        reason = rule.skip_reason(repo)
        if reason is None:
            kept.append(repo)
        else:
            skipped[repo.full_name] = reason
    return kept, skipped
