"""Gitea API v1: list an organisation's repositories, read branch heads, and fetch mirrors over
HTTPS with the token in an `Authorization` header (never in a URL or a git config file)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from pydantic import Field, PrivateAttr

from coder_assets.core.errors import (
    GiteaAuthError,
    GiteaError,
    GiteaNotFoundError,
    GiteaUnavailableError,
    GitError,
    RepoSourceError,
)
from coder_assets.core.sources.git import FetchResult, GitHttp, fetch_mirror, redact
from coder_assets.core.sources.repos import RepoHead, RepoRef
from coder_assets.resources.repos import RepoSourceResource

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_PAGES = 10_000


class GiteaClient:
    """A small Gitea API v1 client: timeouts, retries with backoff on 5xx and connection errors,
    and errors that name the URL and status but never the token."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_retries: int = 4,
        backoff_seconds: float = 0.5,
        page_size: int = 50,
        ca_bundle: str | None = None,
        session: requests.Session | None = None,
    ) -> None:
        base = base_url.strip().rstrip("/")
        if base.endswith("/api/v1"):
            base = base[: -len("/api/v1")]
        if urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).netloc:
            raise GiteaError(
                f"GITEA_URL {base_url!r} is not an http(s) URL; set it to e.g. "
                "https://gitea.example.lan",
                url=base_url,
            )
        self.base_url = base
        self._token = token
        self._timeout = (connect_timeout, read_timeout)
        self._max_retries = max_retries
        self._backoff = backoff_seconds
        self.page_size = page_size
        self._session = session or requests.Session()
        # requests would otherwise take credentials from ~/.netrc (replacing our header) and
        # proxies from the environment; a private CA is configured explicitly instead.
        self._session.trust_env = False
        self.ca_bundle = ca_bundle or None
        if self.ca_bundle:
            self._session.verify = self.ca_bundle

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"token {self._token}"
        return headers

    def git_http(self) -> GitHttp:
        """How git authenticates to this Gitea over HTTP(S)."""
        headers = (f"Authorization: token {self._token}",) if self._token else ()
        return GitHttp(headers=headers, ca_bundle=self.ca_bundle)

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> requests.Response:
        """GET `/api/v1{path}` with retries; raise a GiteaError subclass on failure."""
        url = f"{self.base_url}/api/v1{path}"
        last_problem = ""
        for attempt in range(self._max_retries + 1):
            if attempt:
                time.sleep(min(self._backoff * 2 ** (attempt - 1), 10.0))
            try:
                response = self._session.get(
                    url, params=params, headers=self._headers(), timeout=self._timeout
                )
            except requests.RequestException as exc:
                last_problem = redact(f"{type(exc).__name__}: {exc}", [self._token])
                logger.warning("Gitea request GET %s failed (%s), retrying", url, last_problem)
                continue
            if response.status_code in RETRYABLE_STATUS:
                last_problem = f"HTTP {response.status_code}"
                logger.warning("Gitea answered %s for GET %s, retrying", last_problem, url)
                continue
            if response.status_code in (401, 403):
                raise GiteaAuthError(
                    f"Gitea answered {response.status_code} for GET {url}: the token in "
                    "GITEA_TOKEN is missing, wrong or expired, or lacks the read:organization "
                    "and read:repository scopes; create a new token in Gitea (Settings > "
                    "Applications) and set GITEA_TOKEN",
                    url=url,
                    status=response.status_code,
                )
            if response.status_code == 404:
                raise GiteaNotFoundError(
                    f"Gitea answered 404 for GET {url}: it does not exist or the token cannot "
                    "see it; check GITEA_ORG and the repository name",
                    url=url,
                    status=404,
                )
            if response.status_code >= 400:
                raise GiteaError(
                    f"Gitea answered {response.status_code} for GET {url}: "
                    f"{redact(response.text[:300], [self._token])}",
                    url=url,
                    status=response.status_code,
                )
            return response
        raise GiteaUnavailableError(
            f"Gitea at {self.base_url} did not answer GET {url} after "
            f"{self._max_retries + 1} attempts ({last_problem}); check that Gitea is up and "
            "GITEA_URL is right",
            url=url,
        )

    def _json(self, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise GiteaError(
                f"Gitea answered GET {response.url} with something that is not JSON; "
                "is GITEA_URL the Gitea root URL?",
                url=str(response.url),
                status=response.status_code,
            ) from exc

    def list_org_repos(self, org: str) -> list[dict[str, Any]]:
        """Every repository of `org`, following `page`/`limit` until `X-Total-Count` is reached."""
        repos: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            response = self.get(
                f"/orgs/{quote(org, safe='')}/repos", {"page": page, "limit": self.page_size}
            )
            batch = self._json(response)
            if not isinstance(batch, list):
                raise GiteaError(
                    f"Gitea answered GET {response.url} with a {type(batch).__name__}, "
                    "not a list of repositories",
                    url=str(response.url),
                )
            repos.extend(batch)
            total_header = response.headers.get("X-Total-Count")
            total = int(total_header) if total_header and total_header.isdigit() else None
            if not batch or (total is not None and len(repos) >= total):
                break
            if total is None and len(batch) < self.page_size:
                break
        return repos

    def get_repo(self, owner: str, name: str) -> dict[str, Any]:
        return self._json(self.get(f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"))

    def get_branch(self, owner: str, name: str, branch: str) -> dict[str, Any]:
        path = f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}/branches/{quote(branch)}"
        return self._json(self.get(path))


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    default_port = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default_port


def repo_ref_from_api(data: Mapping[str, Any]) -> RepoRef:
    """A RepoRef from a Gitea `Repository` object."""
    owner = (data.get("owner") or {}).get("login") or str(data.get("full_name", "/")).split("/")[0]
    return RepoRef(
        owner=owner,
        name=str(data["name"]),
        clone_url=str(data.get("clone_url") or ""),
        default_branch=str(data.get("default_branch") or "main"),
        archived=bool(data.get("archived")),
        mirror=bool(data.get("mirror")),
        empty=bool(data.get("empty")),
        fork=bool(data.get("fork")),
        private=bool(data.get("private", True)),
        html_url=str(data.get("html_url") or ""),
    )


class GiteaResource(RepoSourceResource):
    """The repositories of one Gitea organisation, through Gitea API v1."""

    url: str = Field(description="Gitea root URL, e.g. https://gitea.example.lan (GITEA_URL).")
    token: str = Field(
        description="Gitea access token with read:organization and read:repository (GITEA_TOKEN)."
    )
    org: str = Field(description="Organisation whose repositories are snapshotted (GITEA_ORG).")
    connect_timeout_seconds: float = Field(default=5.0, description="TCP connect timeout.")
    read_timeout_seconds: float = Field(default=30.0, description="Response read timeout.")
    max_retries: int = Field(default=4, description="Retries on 5xx and connection errors.")
    page_size: int = Field(default=50, description="Repositories per page (Gitea caps at 50).")
    git_timeout_seconds: float = Field(default=900.0, description="Limit for one git fetch.")
    ca_bundle: str = Field(
        default="",
        description="PEM file of the CA that signed Gitea's certificate, when it is a private CA "
        "(GITEA_CA_BUNDLE); empty uses the system's CAs.",
    )

    _client: GiteaClient | None = PrivateAttr(default=None)

    @property
    def client(self) -> GiteaClient:
        if self._client is None:
            self._client = GiteaClient(
                self.url,
                self.token,
                connect_timeout=self.connect_timeout_seconds,
                read_timeout=self.read_timeout_seconds,
                max_retries=self.max_retries,
                page_size=self.page_size,
                ca_bundle=self.ca_bundle or None,
            )
        return self._client

    def describe(self) -> str:
        return f"Gitea organisation {self.org!r} at {self.client.base_url}"

    def list_repos(self) -> list[RepoRef]:
        return [repo_ref_from_api(item) for item in self.client.list_org_repos(self.org)]

    def get_repo(self, owner: str, name: str) -> RepoRef:
        return repo_ref_from_api(self.client.get_repo(owner, name))

    def head(self, repo: RepoRef) -> RepoHead:
        data = self.client.get_branch(repo.owner, repo.name, repo.default_branch)
        sha = str((data.get("commit") or {}).get("id") or "")
        if not sha:
            raise RepoSourceError(
                f"Gitea returned branch {repo.default_branch!r} of {repo.full_name} without a "
                "commit id"
            )
        return RepoHead(repo=repo, sha=sha)

    def fetch(self, repo: RepoRef, mirror: Path) -> FetchResult:
        self._check_clone_host(repo)
        try:
            return fetch_mirror(
                repo.clone_url,
                mirror,
                repo.default_branch,
                http=self.client.git_http(),
                secrets=[self.token],
                timeout=self.git_timeout_seconds,
            )
        except GitError as exc:
            if "Authentication failed" in str(exc) or "401" in str(exc):
                raise GitError(
                    f"{exc}. Gitea refused the token for git over HTTP: check that GITEA_TOKEN "
                    "is valid and has the read:repository scope"
                ) from exc
            raise

    def _check_clone_host(self, repo: RepoRef) -> None:
        # The token is only ever sent to the Gitea it belongs to: a clone URL on another host
        # (a wrong ROOT_URL in Gitea's app.ini, or a tampered response) is refused.
        clone = urlsplit(repo.clone_url)
        api = urlsplit(self.client.base_url)
        if _origin(repo.clone_url) != _origin(self.client.base_url):
            raise RepoSourceError(
                f"clone URL of {repo.full_name} ({clone.scheme}://{clone.netloc}) is not on "
                f"GITEA_URL ({api.scheme}://{api.netloc}); the token is only sent to GITEA_URL. "
                "Set ROOT_URL in Gitea's app.ini to the URL you use, or fix GITEA_URL"
            )
