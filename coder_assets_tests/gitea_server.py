"""A small Gitea 1.27.1 stand-in for tests: a JSON API and git smart HTTP on a loopback port.

The API answers a handful of `/api/v1` operations exactly as `reference/gitea-swagger-1.27.1.json`
declares them (paths, query parameters, response definitions) and copies what Gitea does where the
spec is silent: the `{"message": ..., "url": ...}` error body, `X-Total-Count` and `Link` paging
headers, default page size 30 and maximum 50. Git clones and fetches go through the real
`git http-backend` CGI program, so what a client sees on the wire is what git itself serves.

Only the `Authorization` header authenticates (`token <T>`, or HTTP Basic with the token as
password). Tokens in the query string (`?token=`, `?access_token=`) are refused outright, because
the client under test must never put a secret in a URL.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

GITEA_VERSION = "1.27.1"
API_PREFIX = "/api/v1"
# Gitea's [api] DEFAULT_PAGING_NUM and MAX_RESPONSE_ITEMS; the spec only names "page" and "limit".
DEFAULT_PAGING_NUM = 30
MAX_RESPONSE_ITEMS = 50
# Gitea's [git] COMMITS_RANGE_SIZE caps the page size of the commits list.
COMMITS_RANGE_SIZE = 50
GIT_HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
GIT_TIMEOUT_S = 60
JSON_CONTENT_TYPE = "application/json;charset=utf-8"
# Gitea writes a zero time (not null) for "archived_at" of a repository that was never archived.
ZERO_TIME = "1970-01-01T00:00:00Z"
QUERY_TOKEN_PARAMS = ("token", "access_token")
# Gitea serves clones with and without the ".git" suffix.
_GIT_PATH = re.compile(
    r"^/(?P<owner>[^/]+)/(?P<name>[^/]+?)(?:\.git)?"
    r"(?P<service>/info/refs|/git-upload-pack|/git-receive-pack)$"
)


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for git commands the server runs: no user or system config, no prompts."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GIT_") and key not in ("HOME", "XDG_CONFIG_HOME")
    }
    env.update(
        {
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "HOME": tempfile.gettempdir(),
        }
    )
    env.update(extra or {})
    return env


def _git(*args: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        ["git", *map(str, args)],
        cwd=cwd,
        env=git_env(),
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(map(str, args))} failed: {result.stderr.strip()}")
    return result.stdout


def _rfc3339(moment: datetime) -> str:
    text = moment.isoformat(timespec="seconds")
    return text.replace("+00:00", "Z")


@dataclass
class GiteaRepoSpec:
    """What the server knows about one repository besides its bare git directory."""

    owner: str
    name: str
    id: int
    path: Path
    private: bool = True
    archived: bool = False
    mirror: bool = False
    default_branch: str = "main"
    description: str = ""
    original_url: str = ""
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True)
class Route:
    """One API operation: the spec's path template (relative to basePath) and what it reads."""

    method: str
    template: str
    query: tuple[str, ...]
    handler: str

    @property
    def pattern(self) -> re.Pattern[str]:
        regex = ""
        for part in re.split(r"(\{[^}]+\})", self.template):
            if part.startswith("{"):
                name = part[1:-1]
                # Branch names may contain "/" (Gitea routes them as a wildcard).
                regex += f"(?P<{name}>.+)" if name == "branch" else f"(?P<{name}>[^/]+)"
            else:
                regex += re.escape(part)
        return re.compile(f"^{regex}$")

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(re.findall(r"\{([^}]+)\}", self.template))


API_ROUTES: tuple[Route, ...] = (
    Route("GET", "/version", (), "_api_version"),
    Route("GET", "/orgs/{org}/repos", ("page", "limit"), "_api_org_repos"),
    Route("GET", "/repos/{owner}/{repo}", (), "_api_repo"),
    Route("GET", "/repos/{owner}/{repo}/branches/{branch}", (), "_api_branch"),
    Route(
        "GET",
        "/repos/{owner}/{repo}/commits",
        ("sha", "page", "limit", "stat", "files", "verification"),
        "_api_commits",
    ),
)


class ApiError(Exception):
    """Ends an API request with Gitea's error body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class ApiResponse:
    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class GiteaTestServer:
    """Gitea API v1 subset plus git smart HTTP over `git http-backend`, for tests.

    Repositories live as bare repos under `root/<owner>/<name>.git`. Start it with `start()` or as
    a context manager; it binds 127.0.0.1 on a free port and serves from a background thread.

    `requests` holds (method, path with query) of every request, API and git alike, and
    `seen_authorization` the raw `Authorization` header of each (None when absent), so tests can
    assert that no token ever travels in a URL. `fail_next` affects API requests only.
    """

    API_ROUTES = API_ROUTES

    def __init__(self, root: Path, *, token: str, org: str = "homelab") -> None:
        self.root = Path(root)
        self.token = token
        self.org = org
        self.base_url = ""
        self.requests: list[tuple[str, str]] = []
        self.seen_authorization: list[str | None] = []
        self._repos: dict[tuple[str, str], GiteaRepoSpec] = {}
        self._owners: dict[str, int] = {}
        self._next_repo_id = 1
        self._fail_remaining = 0
        self._fail_status = 500
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._owner_id(org)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        if self._httpd is not None:
            return self.base_url
        self.root.mkdir(parents=True, exist_ok=True)
        handler = type("_BoundHandler", (_Handler,), {"gitea": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"gitea-test-server:{httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd, self._thread = None, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> GiteaTestServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- repository management ---------------------------------------------------------------

    def add_repo(
        self,
        name: str,
        source: Path | None = None,
        *,
        archived: bool = False,
        mirror: bool = False,
        private: bool = True,
        default_branch: str = "main",
        owner: str | None = None,
    ) -> Path:
        """Create bare repo root/<owner>/<name>.git; with `source`, mirror its branches and tags.

        Without `source` the repository has no refs, which Gitea reports as `empty: true`.
        """
        owner = owner or self.org
        key = (owner.lower(), name.lower())
        with self._lock:
            if key in self._repos:
                raise ValueError(f"repository {owner}/{name} already exists on the test server")
            repo_id = self._next_repo_id
            self._next_repo_id += 1
            self._owner_id(owner)
        path = self.root / owner / f"{name}.git"
        path.parent.mkdir(parents=True, exist_ok=True)
        _git("init", "--quiet", "--bare", f"--initial-branch={default_branch}", path)
        spec = GiteaRepoSpec(
            owner=owner,
            name=name,
            id=repo_id,
            path=path,
            private=private,
            archived=archived,
            mirror=mirror,
            default_branch=default_branch,
            description=f"{name} (test fixture)",
            original_url=Path(source).resolve().as_uri() if mirror and source else "",
        )
        if source is not None:
            self._fetch_into(path, Path(source))
        with self._lock:
            self._repos[key] = spec
        return path

    def push_from(self, name: str, source: Path, owner: str | None = None) -> None:
        """Update the bare repo from `source`: all branches and tags, forced, stale ones pruned."""
        spec = self._repo(owner or self.org, name)
        if spec is None:
            raise KeyError(f"no repository {owner or self.org}/{name} on the test server")
        self._fetch_into(spec.path, Path(source))
        spec.updated_at = datetime.now(UTC).replace(microsecond=0)

    def remove_repo(self, name: str, owner: str | None = None) -> None:
        owner = owner or self.org
        with self._lock:
            spec = self._repos.pop((owner.lower(), name.lower()), None)
        if spec is None:
            raise KeyError(f"no repository {owner}/{name} on the test server")
        shutil.rmtree(spec.path)

    def fail_next(self, count: int, status: int = 500) -> None:
        """Make the next `count` API requests answer `status` (with Gitea's error body)."""
        with self._lock:
            self._fail_remaining = count
            self._fail_status = status

    @staticmethod
    def _fetch_into(bare: Path, source: Path) -> None:
        _git(
            "fetch",
            "--quiet",
            "--force",
            "--prune",
            "--update-head-ok",
            "--no-tags",
            source.resolve(),
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
            cwd=bare,
        )

    def _owner_id(self, owner: str) -> int:
        return self._owners.setdefault(owner.lower(), len(self._owners) + 1)

    def _repo(self, owner: str, name: str) -> GiteaRepoSpec | None:
        with self._lock:
            return self._repos.get((owner.lower(), name.lower()))

    # -- request bookkeeping -----------------------------------------------------------------

    def _record(self, method: str, path: str, authorization: str | None) -> None:
        with self._lock:
            self.requests.append((method, path))
            self.seen_authorization.append(authorization)

    def _take_failure(self) -> int | None:
        with self._lock:
            if self._fail_remaining <= 0:
                return None
            self._fail_remaining -= 1
            return self._fail_status

    def _authenticated(self, authorization: str | None) -> tuple[bool, str | None]:
        """(accepted, user name for REMOTE_USER) for an Authorization header value."""
        if not authorization:
            return False, None
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "token":
            return self._is_token(credentials), "token"
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                return False, None
            user, sep, password = decoded.partition(":")
            return bool(sep) and self._is_token(password), user or None
        return False, None

    def _is_token(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    # -- JSON building -----------------------------------------------------------------------

    @property
    def _app_url(self) -> str:
        return f"{self.base_url}/"

    @property
    def _swagger_url(self) -> str:
        return f"{self.base_url}/api/swagger"

    def _user_json(self, owner: str) -> dict[str, Any]:
        is_org = owner.lower() == self.org.lower()
        return {
            "id": self._owner_id(owner),
            "login": owner,
            "login_name": "",
            "source_id": 0,
            "full_name": owner.title() if is_org else "",
            "email": "" if is_org else f"{owner}@noreply.localhost",
            "avatar_url": f"{self.base_url}/avatars/{owner.lower()}",
            "html_url": f"{self.base_url}/{owner}",
            "language": "",
            "is_admin": False,
            "last_login": "0001-01-01T00:00:00Z",
            "created": "2024-01-01T00:00:00Z",
            "restricted": False,
            "active": False,
            "prohibit_login": False,
            "location": "",
            "website": "",
            "description": "",
            "visibility": "private" if is_org else "public",
            "followers_count": 0,
            "following_count": 0,
            "starred_repos_count": 0,
            # Not in the spec's User definition, but Gitea's User.MarshalJSON adds it for
            # backward compatibility (the spec's "login" description says "same as `username`").
            "username": owner,
        }

    def _repo_json(self, spec: GiteaRepoSpec) -> dict[str, Any]:
        heads = self._heads(spec.path)
        html_url = f"{self.base_url}/{spec.owner}/{spec.name}"
        api_url = f"{self.base_url}{API_PREFIX}/repos/{spec.owner}/{spec.name}"
        size_kib = sum(f.stat().st_size for f in spec.path.rglob("*") if f.is_file()) // 1024
        host = urlsplit(self.base_url).hostname
        created, updated = _rfc3339(spec.created_at), _rfc3339(spec.updated_at)
        return {
            "id": spec.id,
            "owner": self._user_json(spec.owner),
            "name": spec.name,
            "full_name": spec.full_name,
            "description": spec.description,
            "empty": not heads,
            "private": spec.private,
            "fork": False,
            "template": False,
            "mirror": spec.mirror,
            "size": size_kib,
            "language": "",
            "languages_url": f"{api_url}/languages",
            "html_url": html_url,
            "url": api_url,
            "link": "",
            "ssh_url": f"git@{host}:{spec.owner}/{spec.name}.git",
            "clone_url": f"{html_url}.git",
            "original_url": spec.original_url,
            "website": "",
            "stars_count": 0,
            "forks_count": 0,
            "watchers_count": 1,
            "open_issues_count": 0,
            "open_pr_counter": 0,
            "release_counter": 0,
            "default_branch": spec.default_branch,
            "archived": spec.archived,
            "created_at": created,
            "updated_at": updated,
            "archived_at": updated if spec.archived else ZERO_TIME,
            "permissions": {"admin": True, "push": True, "pull": True},
            "has_code": True,
            "has_issues": True,
            "internal_tracker": {
                "enable_time_tracker": True,
                "allow_only_contributors_to_track_time": True,
                "enable_issue_dependencies": True,
            },
            "has_wiki": True,
            "has_pull_requests": True,
            "has_projects": True,
            "projects_mode": "all",
            "has_releases": True,
            "has_packages": True,
            "has_actions": True,
            "ignore_whitespace_conflicts": False,
            "allow_merge_commits": True,
            "allow_rebase": True,
            "allow_rebase_explicit": True,
            "allow_squash_merge": True,
            "allow_fast_forward_only_merge": True,
            "allow_rebase_update": True,
            "allow_manual_merge": False,
            "autodetect_manual_merge": False,
            "allow_merge_update": True,
            "default_delete_branch_after_merge": False,
            "default_merge_style": "merge",
            "default_update_style": "merge",
            "default_allow_maintainer_edit": False,
            "default_target_branch": spec.default_branch,
            "avatar_url": "",
            "internal": False,
            "mirror_interval": "8h0m0s" if spec.mirror else "",
            "object_format_name": "sha1",
            "mirror_updated": updated if spec.mirror else ZERO_TIME,
            "mirror_last_sync_at": updated if spec.mirror else ZERO_TIME,
            "topics": [],
            "licenses": [],
            "branch_count": len(heads),
        }

    @staticmethod
    def _heads(bare: Path) -> list[str]:
        out = _git("for-each-ref", "--format=%(refname:strip=2)", "refs/heads/", cwd=bare)
        return [line for line in out.splitlines() if line]

    @staticmethod
    def _resolve_commit(bare: Path, rev: str) -> str | None:
        result = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"],
            cwd=bare,
            env=git_env(),
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            return None
        return result.stdout.strip() or None

    _LOG_FORMAT = "%x1e%H%x00%P%x00%T%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B%x00"

    def _log(
        self, bare: Path, rev: str, *, skip: int = 0, count: int = 1, with_files: bool = False
    ) -> list[dict[str, Any]]:
        args = ["log", f"--format={self._LOG_FORMAT}", f"--skip={skip}", f"-n{count}"]
        if with_files:
            args += ["--raw", "--numstat", "--no-renames", "--no-abbrev"]
        out = _git(*args, "--end-of-options", rev, "--", cwd=bare)
        commits = []
        for record in out.split("\x1e")[1:]:
            fields = record.split("\x00")
            sha, parents, tree, an, ae, ad, cn, ce, cd, message = fields[:10]
            files: list[dict[str, str]] = []
            additions = deletions = 0
            for line in fields[10].splitlines() if len(fields) > 10 else []:
                if line.startswith(":"):
                    meta, _, path = line.partition("\t")
                    status = {"A": "added", "D": "removed"}.get(meta.split()[-1][0], "modified")
                    files.append({"filename": path, "status": status})
                elif "\t" in line:
                    added, deleted, _ = line.split("\t", 2)
                    additions += int(added) if added.isdigit() else 0
                    deletions += int(deleted) if deleted.isdigit() else 0
            commits.append(
                {
                    "sha": sha,
                    "parents": parents.split(),
                    "tree": tree,
                    "author": {"name": an, "email": ae, "date": ad},
                    "committer": {"name": cn, "email": ce, "date": cd},
                    "message": message,
                    "files": files,
                    "stats": {
                        "total": additions + deletions,
                        "additions": additions,
                        "deletions": deletions,
                    },
                }
            )
        return commits

    @staticmethod
    def _verification() -> dict[str, Any]:
        # Gitea also writes "signer": null; Swagger 2.0 cannot declare null, so it is left out.
        return {
            "verified": False,
            "reason": "gpg.error.not_signed_commit",
            "signature": "",
            "payload": "",
        }

    # -- API handlers ------------------------------------------------------------------------

    def handle_api(
        self, method: str, path: str, query: dict[str, list[str]], authorization: str | None
    ) -> ApiResponse:
        """Answer one `/api/v1` request; `path` is relative to `/api/v1` and still %-encoded."""
        failure = self._take_failure()
        if failure is not None:
            raise ApiError(failure, f"fail_next: injected HTTP {failure}")
        if any(name in query for name in QUERY_TOKEN_PARAMS):
            raise ApiError(
                401,
                "tokens in the query string are not accepted; "
                "send the header 'Authorization: token <TOKEN>'",
            )
        accepted, _ = self._authenticated(authorization)
        if not authorization:
            raise ApiError(401, "token is required")
        if not accepted:
            raise ApiError(401, "invalid username, password or token")
        allowed: list[str] = []
        for route in API_ROUTES:
            match = route.pattern.match(path)
            if match is None:
                continue
            if route.method != method:
                allowed.append(route.method)
                continue
            params = {name: unquote(value) for name, value in match.groupdict().items()}
            reader = _QueryReader(route, path, query)
            handler: Callable[..., ApiResponse] = getattr(self, route.handler)
            return handler(reader, **params)
        if allowed:
            raise ApiError(405, "method not allowed", {"Allow": ", ".join(allowed)})
        raise ApiError(404, "not found")

    def _api_version(self, query: _QueryReader) -> ApiResponse:
        return ApiResponse({"version": GITEA_VERSION})

    def _api_org_repos(self, query: _QueryReader, org: str) -> ApiResponse:
        if org.lower() not in self._owners:
            raise ApiError(404, "not found")
        page = query.integer("page")
        limit = _page_size(query.integer("limit"), MAX_RESPONSE_ITEMS)
        with self._lock:
            repos = sorted(
                (spec for (owner, _), spec in self._repos.items() if owner == org.lower()),
                key=lambda spec: spec.name.lower(),
            )
        start = (max(page, 1) - 1) * limit
        body = [self._repo_json(spec) for spec in repos[start : start + limit]]
        return ApiResponse(body, headers=self._paging_headers(query, len(repos), limit, page))

    def _api_repo(self, query: _QueryReader, owner: str, repo: str) -> ApiResponse:
        return ApiResponse(self._repo_json(self._require_repo(owner, repo)))

    def _api_branch(self, query: _QueryReader, owner: str, repo: str, branch: str) -> ApiResponse:
        spec = self._require_repo(owner, repo)
        if branch not in self._heads(spec.path):
            raise ApiError(404, f"branch does not exist [name: {branch}]")
        sha = self._resolve_commit(spec.path, f"refs/heads/{branch}")
        if sha is None:
            raise ApiError(404, f"branch does not exist [name: {branch}]")
        (commit,) = self._log(spec.path, sha)
        html_url = f"{self.base_url}/{spec.owner}/{spec.name}"
        body = {
            "name": branch,
            "commit": {
                "id": sha,
                "message": commit["message"],
                "url": f"{html_url}/commit/{sha}",
                "author": _payload_user(commit["author"]),
                "committer": _payload_user(commit["committer"]),
                "verification": self._verification(),
                "timestamp": commit["committer"]["date"],
                "added": [],
                "removed": [],
                "modified": [],
            },
            "protected": False,
            "required_approvals": 0,
            "enable_status_check": False,
            "status_check_contexts": [],
            "user_can_push": not spec.archived,
            "user_can_merge": not spec.archived,
            "effective_branch_protection_name": "",
        }
        return ApiResponse(body)

    def _api_commits(self, query: _QueryReader, owner: str, repo: str) -> ApiResponse:
        spec = self._require_repo(owner, repo)
        if not self._heads(spec.path):
            raise ApiError(409, "Git Repository is empty.")
        rev = query.text("sha") or spec.default_branch
        sha = self._resolve_commit(spec.path, rev)
        if sha is None:
            raise ApiError(404, f"object does not exist [id: {rev}, rel_path: ]")
        page = max(query.integer("page"), 1)
        limit = _page_size(query.integer("limit"), COMMITS_RANGE_SIZE)
        with_stat = query.flag("stat", default=True)
        with_files = query.flag("files", default=True)
        with_verification = query.flag("verification", default=True)
        total = int(_git("rev-list", "--count", sha, cwd=spec.path).strip())
        commits = self._log(
            spec.path, sha, skip=(page - 1) * limit, count=limit, with_files=with_stat or with_files
        )
        html_base = f"{self.base_url}/{spec.owner}/{spec.name}"
        api_base = f"{self.base_url}{API_PREFIX}/repos/{spec.owner}/{spec.name}"
        body = []
        for commit in commits:
            item: dict[str, Any] = {
                "url": f"{api_base}/git/commits/{commit['sha']}",
                "sha": commit["sha"],
                "created": commit["committer"]["date"],
                "html_url": f"{html_base}/commit/{commit['sha']}",
                "commit": {
                    "url": f"{api_base}/git/commits/{commit['sha']}",
                    "author": commit["author"],
                    "committer": commit["committer"],
                    "message": commit["message"],
                    "tree": {
                        "url": f"{api_base}/git/trees/{commit['tree']}",
                        "sha": commit["tree"],
                        "created": commit["committer"]["date"],
                    },
                },
                "parents": [
                    {"url": f"{api_base}/git/commits/{parent}", "sha": parent, "created": ""}
                    for parent in commit["parents"]
                ],
            }
            # Gitea writes null "author"/"committer" users when no account matches the e-mail;
            # the spec cannot express null, so they are left out.
            if with_verification:
                item["commit"]["verification"] = self._verification()
            if with_files:
                item["files"] = commit["files"]
            if with_stat:
                item["stats"] = commit["stats"]
            body.append(item)
        parent_metas = [meta for item in body for meta in item["parents"]]
        if parent_metas:
            # CommitMeta.created is a date-time: the parent's commit time, read in one git call.
            shas = sorted({meta["sha"] for meta in parent_metas})
            out = _git("show", "-s", "--format=%H %cI", *shas, cwd=spec.path)
            times = dict(line.split(" ", 1) for line in out.splitlines() if line)
            for meta in parent_metas:
                meta["created"] = times[meta["sha"]]
        page_count = (total + limit - 1) // limit
        headers = self._paging_headers(query, total, limit, query.integer("page"))
        headers.update(
            {
                "X-Page": str(page),
                "X-PerPage": str(limit),
                "X-Total": str(total),
                "X-PageCount": str(page_count),
                "X-HasMore": "true" if page < page_count else "false",
            }
        )
        return ApiResponse(body, headers=headers)

    def _require_repo(self, owner: str, repo: str) -> GiteaRepoSpec:
        spec = self._repo(owner, repo)
        if spec is None:
            raise ApiError(404, "not found")
        return spec

    def _paging_headers(
        self, query: _QueryReader, total: int, page_size: int, raw_page: int
    ) -> dict[str, str]:
        """X-Total-Count and Link as Gitea's SetTotalCountHeader / SetLinkHeader write them."""
        total_pages = (total + page_size - 1) // page_size
        current = max(min(raw_page, total_pages), 1)
        has_next = current * page_size < total
        links = []

        def link(page: int, rel: str) -> str:
            return f'<{self._app_url}{query.url_with_page(page)[1:]}>; rel="{rel}"'

        if has_next:
            links.append(link(current + 1, "next"))
            links.append(link(total_pages, "last"))
        if current != 1:
            links.append(link(1, "first"))
            links.append(link(current - 1, "prev"))
        headers = {
            "X-Total-Count": str(total),
            "Access-Control-Expose-Headers": "Link, X-Total-Count" if links else "X-Total-Count",
        }
        if links:
            headers["Link"] = ",".join(links)
        return headers

    # -- git smart HTTP ----------------------------------------------------------------------

    def git_target(self, path: str) -> tuple[GiteaRepoSpec | None, str] | None:
        """(repo, service path) for a git smart-HTTP URL path, or None if it is not one."""
        match = _GIT_PATH.match(path)
        if match is None:
            return None
        owner, name, service = (unquote(group) for group in match.groups())
        return self._repo(owner, name), service


def _payload_user(person: dict[str, str]) -> dict[str, str]:
    return {"name": person["name"], "email": person["email"], "username": ""}


def _page_size(limit: int, maximum: int) -> int:
    # Gitea's convert.ToCorrectPageSize: missing/zero/negative means the default, large is capped.
    if limit <= 0:
        return DEFAULT_PAGING_NUM
    return min(limit, maximum)


class _QueryReader:
    """Reads only the query parameters its route declares, so the spec test can trust the list."""

    def __init__(self, route: Route, path: str, query: dict[str, list[str]]) -> None:
        self.route = route
        self.path = path
        self.query = query

    def _raw(self, name: str) -> str:
        if name not in self.route.query:
            raise AssertionError(f"{self.route.template} reads undeclared query parameter {name!r}")
        values = self.query.get(name) or [""]
        return values[0]

    def text(self, name: str) -> str:
        return self._raw(name).strip()

    def integer(self, name: str) -> int:
        # Go's ctx.FormInt: anything that does not parse is 0.
        try:
            return int(self._raw(name))
        except ValueError:
            return 0

    def flag(self, name: str, *, default: bool) -> bool:
        raw = self._raw(name).strip().lower()
        if raw in ("1", "t", "true"):
            return True
        if raw in ("0", "f", "false"):
            return False
        return default

    def url_with_page(self, page: int) -> str:
        params = {key: list(values) for key, values in self.query.items()}
        params["page"] = [str(page)]
        # Go's url.Values.Encode sorts keys.
        encoded = urlencode(sorted(params.items()), doseq=True)
        return f"{API_PREFIX}{self.path}?{encoded}"


class _Handler(BaseHTTPRequestHandler):
    gitea: GiteaTestServer
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return f"GiteaTestServer/{GITEA_VERSION}"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Keep test output quiet; the server records requests in `requests` instead."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        authorization = self.headers.get("Authorization")
        self.gitea._record(self.command, self.path, authorization)
        split = urlsplit(self.path)
        try:
            body = self._read_body()
        except ValueError as exc:
            self._send_plain(400, f"bad request body: {exc}\n")
            return
        if split.path == API_PREFIX or split.path.startswith(API_PREFIX + "/"):
            self._serve_api(split.path[len(API_PREFIX) :], split.query, authorization)
            return
        target = self.gitea.git_target(split.path)
        if target is not None:
            self._serve_git(target, split.query, authorization, body)
            return
        self._send_plain(404, "Not found.\n")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers (usually none) end with an empty line.
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # API

    def _serve_api(self, path: str, raw_query: str, authorization: str | None) -> None:
        query = parse_qs(raw_query, keep_blank_values=True)
        try:
            response = self.gitea.handle_api(self.command, path, query, authorization)
        except ApiError as exc:
            headers = dict(exc.headers)
            body = {"message": exc.message, "url": self.gitea._swagger_url}
            self._send_json(exc.status, body, headers)
            return
        self._send_json(response.status, response.body, response.headers)

    def _send_json(self, status: int, body: Any, headers: dict[str, str]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", JSON_CONTENT_TYPE)
        self.send_header("Cache-Control", "max-age=0, private, must-revalidate, no-transform")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _send_plain(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        payload = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    # git

    def _serve_git(
        self,
        target: tuple[GiteaRepoSpec | None, str],
        raw_query: str,
        authorization: str | None,
        body: bytes,
    ) -> None:
        spec, service = target
        query = parse_qs(raw_query, keep_blank_values=True)
        accepted, user = self.gitea._authenticated(authorization)
        if any(name in query for name in QUERY_TOKEN_PARAMS) or not accepted:
            self._send_plain(401, "Unauthorized\n", {"WWW-Authenticate": 'Basic realm="Gitea"'})
            return
        if spec is None:
            self._send_plain(404, "Repository not found\n")
            return
        wanted = query.get("service", [""])[0]
        if service == "/git-receive-pack" or wanted == "git-receive-pack":
            self._send_plain(403, "This test server is read-only: push is refused.\n")
            return
        if not (
            (service == "/info/refs" and self.command == "GET" and wanted == "git-upload-pack")
            or (service == "/git-upload-pack" and self.command == "POST")
        ):
            self._send_plain(403, "Only smart HTTP git-upload-pack is served.\n")
            return
        relative = spec.path.relative_to(self.gitea.root).as_posix()
        env = git_env(
            {
                "GIT_PROJECT_ROOT": str(self.gitea.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": f"/{quote(relative)}{service}",
                "QUERY_STRING": raw_query,
                "REQUEST_METHOD": self.command,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": user or "",
                "REMOTE_ADDR": self.client_address[0],
                "SERVER_PROTOCOL": "HTTP/1.1",
                "GATEWAY_INTERFACE": "CGI/1.1",
                # Gitea enables these for every git process, so partial clones work as in prod.
                "GIT_CONFIG_COUNT": "2",
                "GIT_CONFIG_KEY_0": "uploadpack.allowFilter",
                "GIT_CONFIG_VALUE_0": "true",
                "GIT_CONFIG_KEY_1": "uploadpack.allowAnySHA1InWant",
                "GIT_CONFIG_VALUE_1": "true",
            }
        )
        for header, variable in (
            ("Git-Protocol", "HTTP_GIT_PROTOCOL"),
            ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
        ):
            if self.headers.get(header):
                env[variable] = self.headers[header]
        self._run_cgi(env, body)

    def _run_cgi(self, env: dict[str, str], body: bytes) -> None:
        with tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen(
                [GIT_HTTP_BACKEND],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
            assert process.stdin is not None and process.stdout is not None
            # Feed stdin from a thread so a large request cannot deadlock against the output pipe.
            feeder = threading.Thread(target=_feed, args=(process.stdin, body), daemon=True)
            feeder.start()
            try:
                status, headers = _read_cgi_headers(process.stdout)
                if status is None:
                    process.wait(timeout=GIT_TIMEOUT_S)
                    stderr.seek(0)
                    message = stderr.read().decode(errors="replace")
                    self._send_plain(500, f"git http-backend wrote no response: {message}\n")
                    return
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in iter(lambda: process.stdout.read1(65536), b""):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            finally:
                feeder.join(timeout=GIT_TIMEOUT_S)
                process.stdout.close()
                process.wait(timeout=GIT_TIMEOUT_S)


def _feed(pipe: Any, body: bytes) -> None:
    with contextlib.suppress(BrokenPipeError), pipe:
        pipe.write(body)


def _read_cgi_headers(stdout: Any) -> tuple[int | None, list[tuple[str, str]]]:
    """CGI response status (None if the output ended before the header block) and headers."""
    status = 200
    headers: list[tuple[str, str]] = []
    while True:
        line = stdout.readline()
        if line == b"":
            return None, headers
        if line in (b"\r\n", b"\n"):
            return status, headers
        name, _, value = line.decode("latin-1").partition(":")
        name, value = name.strip(), value.strip()
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name.lower() not in ("content-length", "transfer-encoding", "connection"):
            headers.append((name, value))


def iter_link_header(value: str) -> Iterator[tuple[str, str]]:
    """(url, rel) pairs of a Link header as Gitea writes it (comma-joined, no spaces)."""
    for part in value.split(","):
        match = re.match(r'\s*<([^>]*)>;\s*rel="([^"]+)"\s*$', part)
        if match:
            yield match.group(1), match.group(2)
