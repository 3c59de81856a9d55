"""Dagster resources, one module per external system, and the one place where the environment
(demo, test, production) picks them."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from coder_assets.constants import coder_assets_home
from coder_assets.resources.gitea import GiteaResource
from coder_assets.resources.notify import FailureNotifierResource
from coder_assets.resources.repos import LocalReposResource, RepoSourceResource
from coder_assets.resources.storage import ParquetIOManager, RepoMirrorsResource


def _exclude_repos() -> list[str]:
    raw = os.environ.get("CODER_ASSETS_EXCLUDE_REPOS", "")
    return [item.strip() for item in raw.split(",") if item.strip()]


def build_repo_source() -> RepoSourceResource:
    """Gitea when GITEA_URL is set; otherwise the local folder of repositories (the embedded
    default, which the demo fills with sample repos)."""
    filters: dict[str, Any] = {
        "include_archived": os.environ.get("CODER_ASSETS_INCLUDE_ARCHIVED", "") == "1",
        "include_mirrors": os.environ.get("CODER_ASSETS_INCLUDE_MIRRORS", "") == "1",
        "exclude_repos": _exclude_repos(),
    }
    if os.environ.get("GITEA_URL"):
        return GiteaResource(
            url=dg.EnvVar("GITEA_URL"),
            token=dg.EnvVar("GITEA_TOKEN"),
            org=dg.EnvVar("GITEA_ORG"),
            ca_bundle=os.environ.get("GITEA_CA_BUNDLE", ""),
            **filters,
        )
    repos_dir = os.environ.get("CODER_ASSETS_REPOS_DIR") or str(coder_assets_home() / "repos")
    return LocalReposResource(root=repos_dir, owner="homelab", **filters)


def build_resources() -> dict[str, Any]:
    """Every resource of the code location, configured for the current environment."""
    home = coder_assets_home()
    mirrors = os.environ.get("CODER_ASSETS_MIRRORS_DIR") or str(home / "mirrors")
    storage = os.environ.get("CODER_ASSETS_STORAGE_DIR") or str(home / "storage")
    return {
        "repo_source": build_repo_source(),
        "repo_mirrors": RepoMirrorsResource(path=mirrors),
        "parquet_io_manager": ParquetIOManager(base_path=storage),
        "failure_notifier": FailureNotifierResource(),
    }
