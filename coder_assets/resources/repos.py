"""Repository sources: one interface (list repos, read heads, fetch a mirror) and a local-folder
implementation for the demo and for users without Gitea. `GiteaResource` is the other one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from pydantic import Field

from coder_assets.core.errors import CoderAssetsError, RepoSourceError
from coder_assets.core.sources.git import FetchResult, fetch_mirror, local_head
from coder_assets.core.sources.repos import RepoFilterRule, RepoHead, RepoRef, select_repos


@dataclass(frozen=True)
class RepoListing:
    """One look at the source: the heads of the repos to snapshot, the repos skipped by the filter
    rule with their reason, and the repos whose head could not be read with the error."""

    heads: list[RepoHead]
    skipped: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class RepoSourceResource(dg.ConfigurableResource):
    """Where repositories come from. Subclasses implement `list_repos`, `head` and `fetch`."""

    include_archived: bool = Field(default=False, description="Snapshot archived repos too.")
    include_mirrors: bool = Field(default=False, description="Snapshot pull mirrors too.")
    include_forks: bool = Field(default=True, description="Snapshot forks too.")
    exclude_repos: list[str] = Field(
        default_factory=list,
        description="Globs of repo names (`name` or `owner/name`) never snapshotted.",
    )

    @property
    def filter_rule(self) -> RepoFilterRule:
        return RepoFilterRule(
            include_archived=self.include_archived,
            include_mirrors=self.include_mirrors,
            include_forks=self.include_forks,
            exclude_names=tuple(self.exclude_repos),
        )

    def list_repos(self) -> list[RepoRef]:
        """Every repository of the source, skipped ones included."""
        raise NotImplementedError

    def get_repo(self, owner: str, name: str) -> RepoRef:
        """One repository by owner and name."""
        for repo in self.list_repos():
            if (repo.owner, repo.name) == (owner, name):
                return repo
        raise RepoSourceError(
            f"repository {owner}/{name} is not in {self.describe()}; it may have been deleted "
            "or renamed (the change sensor removes its partition on its next tick)"
        )

    def head(self, repo: RepoRef) -> RepoHead:
        """The commit the default branch of `repo` points at now."""
        raise NotImplementedError

    def fetch(self, repo: RepoRef, mirror: Path) -> FetchResult:
        """Create or update the bare mirror of `repo` at `mirror`."""
        raise NotImplementedError

    def describe(self) -> str:
        """Where the repos come from, for messages (never with credentials)."""
        raise NotImplementedError

    def list_heads(self) -> RepoListing:
        """Heads of all repos the filter rule keeps. A repo whose head cannot be read is reported
        in `errors` and does not stop the others."""
        kept, skipped = select_repos(self.list_repos(), self.filter_rule)
        heads: list[RepoHead] = []
        errors: dict[str, str] = {}
        for repo in kept:
            try:
                heads.append(self.head(repo))
            except CoderAssetsError as exc:
                errors[repo.full_name] = str(exc)
        return RepoListing(heads=heads, skipped=skipped, errors=errors)


def _is_git_dir(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


def _is_repo(path: Path) -> bool:
    # A working tree is recognised by its `.git` alone, so one whose HEAD is damaged is still
    # listed (and reported as unreadable) rather than taken for deleted.
    return (path / ".git").exists() or _is_git_dir(path)


class LocalReposResource(RepoSourceResource):
    """Every git repository (working or bare) directly under `root`, or one level deeper where the
    intermediate directory names the owner."""

    root: str = Field(description="Directory that holds the repositories.")
    owner: str = Field(
        default="local", description="Owner of repositories found directly under `root`."
    )

    def describe(self) -> str:
        return f"local folder {self.root}"

    def _candidates(self) -> list[tuple[str, Path]]:
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise RepoSourceError(
                f"repository folder {root} does not exist; create it or point "
                "CODER_ASSETS_REPOS_DIR at a folder of git repositories"
            )
        found: list[tuple[str, Path]] = []
        for child in sorted(root.iterdir()):
            if child.name.startswith(".") or not child.is_dir() or child.is_symlink():
                continue
            if _is_repo(child):
                found.append((self.owner, child))
                continue
            for grandchild in sorted(child.iterdir()):
                if grandchild.is_dir() and not grandchild.is_symlink() and _is_repo(grandchild):
                    found.append((child.name, grandchild))
        return found

    def list_repos(self) -> list[RepoRef]:
        repos: list[RepoRef] = []
        for owner, path in self._candidates():
            name = path.name.removesuffix(".git")
            unreadable = ""
            try:
                branch, sha = local_head(path)
            except CoderAssetsError as exc:
                # Unreadable is not empty: the repo stays listed, and its snapshot and the
                # sensor report the cause instead of dropping it.
                branch, sha, unreadable = "main", None, str(exc)
            repos.append(
                RepoRef(
                    owner=owner,
                    name=name,
                    clone_url=str(path.resolve()),
                    default_branch=branch,
                    empty=sha is None and not unreadable,
                    private=True,
                    unreadable=unreadable,
                )
            )
        return repos

    def _check_readable(self, repo: RepoRef) -> None:
        if repo.unreadable:
            raise RepoSourceError(
                f"{repo.full_name} ({repo.clone_url}) cannot be read: {repo.unreadable}. Repair "
                "the repository (`git fsck` in it); its partition is kept"
            )

    def head(self, repo: RepoRef) -> RepoHead:
        self._check_readable(repo)
        try:
            branch, sha = local_head(Path(repo.clone_url))
        except CoderAssetsError as exc:
            raise RepoSourceError(f"{repo.full_name} cannot be read: {exc}") from exc
        if sha is None:
            raise RepoSourceError(f"{repo.full_name} has no commit on {branch!r}")
        return RepoHead(repo=repo, sha=sha)

    def fetch(self, repo: RepoRef, mirror: Path) -> FetchResult:
        self._check_readable(repo)
        return fetch_mirror(repo.clone_url, mirror, repo.default_branch)
