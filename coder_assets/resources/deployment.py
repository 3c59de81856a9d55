"""Where adapters go after the promotion gate: the `code-lora-adapters` git repository (release)
and the deploy directory on waterdeep that mlx_lm.server loads `latest` from (deployment)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from coder_assets.core.deployment.deploy import DeployDir
from coder_assets.core.sources.git import GitHttp


class AdapterReleaseResource(dg.ConfigurableResource):
    """The git repository adapters are released to, one commit and one annotated tag per
    version; weights as git LFS objects when the remote supports LFS."""

    remote: str = Field(
        description="Remote of code-lora-adapters: the Gitea repo's https URL in production, a "
        "local bare repository (path or file:// URL) in the embedded default."
    )
    token: str | None = Field(
        default=None,
        description="Gitea token with write access (from the environment); sent as an "
        "Authorization header, never in a URL or .git/config.",
    )
    branch: str = Field(default="main", description="Branch that gets one commit per release.")
    tag_prefix: str = Field(default="", description="Tag name prefix; tags are <prefix><version>.")
    lfs: str = Field(
        default="auto",
        description="auto: weights through git LFS when git-lfs is installed and the remote "
        "answers the LFS API; always: fail without LFS; never: plain git blobs.",
    )
    work_dir: str = Field(description="Scratch clone used to make release commits.")
    create_local_remote: bool = Field(
        default=False,
        description="Create the remote as a bare repository when it is a local path that does "
        "not exist yet (embedded default only).",
    )
    author_name: str = Field(default="coder_assets", description="Author of release commits.")
    author_email: str = Field(
        default="coder-assets@localhost", description="E-mail of release commits' author."
    )

    def release(self, adapter_dir: Path, manifest: Mapping[str, Any]):
        """Release the adapter in `adapter_dir` with `manifest`; returns core.deployment.release's
        ReleaseResult (already_released when the tag exists with the same files)."""
        from coder_assets.core.deployment.release import release_adapter

        return release_adapter(Path(adapter_dir), manifest, self._target(), Path(self.work_dir))

    def reject(self, version: str, reason: str) -> str:
        """Mark the released `version` rejected (tag `rejected/<tag>` with the reason); returns
        the tag."""
        from coder_assets.core.deployment.release import reject_release

        return reject_release(version, reason, self._target(), Path(self.work_dir))

    def _target(self):
        from coder_assets.core.deployment.release import ReleaseTarget

        headers = (f"Authorization: token {self.token}",) if self.token else ()
        return ReleaseTarget(
            remote=self.remote,
            branch=self.branch,
            http=GitHttp(headers=headers) if headers else None,
            lfs=self.lfs,
            tag_prefix=self.tag_prefix,
            author_name=self.author_name,
            author_email=self.author_email,
            create_local_remote=self.create_local_remote,
        )


class AdapterDeploymentResource(dg.ConfigurableResource):
    """The deploy directory on waterdeep: `<deploy_dir>/<version>/` per installed version and the
    `latest` link the model server loads."""

    deploy_dir: str = Field(
        description="Deployed adapter versions and the latest/previous links, e.g. "
        "~/.mlx-models/adapters/homelab-coder."
    )
    keep_versions: int = Field(
        default=5, description="Installed versions kept; the deployed and previous never pruned."
    )

    def directory(self) -> DeployDir:
        return DeployDir(Path(self.deploy_dir).expanduser())
