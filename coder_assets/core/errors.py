"""Exception types of coder_assets. Every message names what was at fault and what to do."""

from __future__ import annotations


class CoderAssetsError(Exception):
    """Base class of every error this project raises on purpose."""


class SettingError(CoderAssetsError, ValueError):
    """An environment setting whose value is not of the expected kind."""


class PartitionKeyError(CoderAssetsError, ValueError):
    """A partition key that does not decode to `owner/name`."""


class RepoSourceError(CoderAssetsError):
    """Listing repositories or reading a branch head failed."""


class GiteaError(RepoSourceError):
    """The Gitea API answered with an error or could not be reached.

    `url` never carries credentials: the token travels in a header only.
    """

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class GiteaAuthError(GiteaError):
    """401/403 from Gitea: the token is missing, wrong or lacks a scope."""


class GiteaNotFoundError(GiteaError):
    """404 from Gitea: the organisation, repository or branch does not exist."""


class GiteaUnavailableError(GiteaError):
    """Gitea kept answering 5xx, or could not be reached, after every retry."""


class GitError(CoderAssetsError):
    """A git command failed. The message is already free of credentials."""


class UnsafeRemoteError(GitError):
    """A clone URL uses a transport that coder_assets refuses (ext::, fd::, ...)."""


class MirrorCorruptError(GitError):
    """A repository mirror is damaged and could not be recovered by cloning it again."""


class EmptyRepoError(GitError):
    """The repository has no commit on the branch that should be snapshotted."""


class OptOutFileError(CoderAssetsError):
    """A repository's `.coder-assets.yaml` could not be understood."""
