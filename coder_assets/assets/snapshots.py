"""repo_snapshots: a pinned commit of every repository and the manifest of its files."""

# No `from __future__ import annotations` here: Dagster reads these annotations at runtime.
import warnings
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from coder_assets.assets import reported_as_failure
from coder_assets.constants import COMMIT_SHA_TAG, OWNERS, SOURCES_GROUP, TRIGGER_TAG
from coder_assets.core.errors import CoderAssetsError
from coder_assets.core.sources.git import commit_info, has_commit
from coder_assets.core.sources.manifest import ManifestConfig, build_manifest
from coder_assets.core.sources.repos import parse_partition_key
from coder_assets.partitions import repo_partitions
from coder_assets.resources.repos import RepoSourceResource
from coder_assets.resources.storage import RepoMirrorsResource

# `Output(data_version=...)` is marked beta, but it is how an asset states its own data version;
# the warning would otherwise show in every run's log.
warnings.filterwarnings("ignore", message="Parameter `data_version`", category=dg.BetaWarning)


class RepoSnapshotConfig(dg.Config):
    max_file_bytes: int = Field(
        default=1_000_000, description="Files larger than this are recorded as too_large."
    )
    exclude_globs: list[str] = Field(
        default_factory=list,
        description="Extra path globs excluded in every repo (on top of .coder-assets.yaml).",
    )


def _markdown_counts(title: str, counts: dict[str, int]) -> str:
    lines = [f"| {title} | files |", "|---|---:|"]
    lines += [f"| {key} | {value} |" for key, value in counts.items()] or ["| (none) | 0 |"]
    return "\n".join(lines)


@dg.asset(
    partitions_def=repo_partitions,
    group_name=SOURCES_GROUP,
    kinds={"git", "pandas"},
    code_version="1",
    owners=OWNERS,
    io_manager_key="parquet_io_manager",
)
def repo_snapshots(
    context: dg.AssetExecutionContext,
    config: RepoSnapshotConfig,
    repo_source: RepoSourceResource,
    repo_mirrors: RepoMirrorsResource,
) -> dg.Output[pd.DataFrame]:
    """One commit of one repository: its SHA, date and default branch, and a manifest of every file
    (path, size, blob sha, language, and the reason it is skipped, if it is).

    The repository is fetched into a persistent bare mirror (never cloned twice). A run started by
    gitea_change_sensor snapshots the SHA pinned in its tags; otherwise the branch head. The data
    version is the commit SHA, so downstream work for an unchanged repo can be skipped.
    """
    with reported_as_failure():
        return _snapshot(context, config, repo_source, repo_mirrors)


def _snapshot(
    context: dg.AssetExecutionContext,
    config: RepoSnapshotConfig,
    repo_source: RepoSourceResource,
    repo_mirrors: RepoMirrorsResource,
) -> dg.Output[pd.DataFrame]:
    owner, name = parse_partition_key(context.partition_key)
    repo = repo_source.get_repo(owner, name)
    skip = repo_source.filter_rule.skip_reason(repo)
    if skip is not None:
        raise dg.Failure(
            description=(
                f"{repo.full_name} is {skip.replace('_', ' ')} and is not snapshotted; change the "
                "repo source's filter settings to include it, or let gitea_change_sensor remove "
                "its partition"
            )
        )
    mirror = repo_mirrors.mirror_path(owner, name)
    fetched = repo_source.fetch(repo, mirror)
    for warning in fetched.warnings:
        context.log.warning(warning)
    pinned = context.run.tags.get(COMMIT_SHA_TAG)
    sha = pinned or fetched.head_sha
    if pinned and not has_commit(mirror, pinned):
        raise dg.Failure(
            description=(
                f"commit {pinned} pinned by tag {COMMIT_SHA_TAG} is not on branch "
                f"{repo.default_branch!r} of {repo.full_name} (force-pushed away?); materialize "
                "the partition again without the tag to snapshot the current head"
            )
        )
    commit = commit_info(mirror, sha)
    manifest = build_manifest(
        mirror,
        sha,
        repo=repo.full_name,
        config=ManifestConfig(
            max_file_bytes=config.max_file_bytes, exclude_globs=tuple(config.exclude_globs)
        ),
    )
    frame = manifest.to_frame()
    frame.attrs = {
        "repo": repo.full_name,
        "partition_key": context.partition_key,
        "commit_sha": sha,
        "commit_date": commit["date"],
        "default_branch": repo.default_branch,
        "mirror_path": str(mirror),
    }
    kept = manifest.kept()
    by_language = manifest.counts_by_language()
    by_skip = manifest.counts_by_skip_reason()
    context.log.info(
        f"{repo.full_name}@{sha[:12]}: {fetched.action} in {fetched.seconds:.1f}s, "
        f"{len(kept)} of {len(manifest.rows)} files kept"
    )
    metadata: dict[str, object] = {
        "repo": repo.full_name,
        "commit_sha": sha,
        "commit_date": commit["date"],
        "commit_subject": commit["subject"],
        "default_branch": repo.default_branch,
        "commit_chosen_by": (
            f"pinned by {context.run.tags.get(TRIGGER_TAG, 'the run')} (tag {COMMIT_SHA_TAG})"
            if pinned
            else "branch head at run time"
        ),
        "mirror": fetched.action,
        "fetch_seconds": round(fetched.seconds, 2),
        "files_total": len(manifest.rows),
        "files_kept": len(kept),
        "bytes_kept": int(sum(row.size or 0 for row in kept)),
        "opted_out": manifest.opt_out.whole_repo,
        "files_by_language": dg.MetadataValue.md(_markdown_counts("language", by_language)),
        "files_by_skip_reason": dg.MetadataValue.md(_markdown_counts("skip reason", by_skip)),
    }
    if repo.html_url:
        metadata["repo_url"] = dg.MetadataValue.url(repo.html_url)
    return dg.Output(frame, data_version=dg.DataVersion(sha), metadata=metadata)


def mirror_with_commit(
    repo_source: RepoSourceResource,
    repo_mirrors: RepoMirrorsResource,
    repo: str,
    sha: str,
    log: Callable[[str], None] | None = None,
) -> Path:
    """This host's mirror of `repo` (owner/name), holding commit `sha`. Mirrors are a per-host
    (per-pod) cache: a run in another pod than the snapshot's finds none, or an older one, and
    fetches it again from the repo source."""
    owner, name = repo.split("/", 1)
    mirror = repo_mirrors.mirror_path(owner, name)
    if (mirror / "HEAD").is_file() and has_commit(mirror, sha):
        return mirror
    fetched = repo_source.fetch(repo_source.get_repo(owner, name), mirror)
    if log is not None:
        log(f"{repo}: mirror fetched again on this host ({fetched.action}) for commit {sha[:12]}")
    if not has_commit(mirror, sha):
        raise CoderAssetsError(
            f"commit {sha} of {repo} is not in its mirror at {mirror} even after fetching it again "
            "(force-pushed away?); materialize repo_snapshots for this partition again"
        )
    return mirror
