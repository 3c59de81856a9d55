"""Safe git: an allow-listed transport, no hooks, no submodules, no LFS smudge, credentials only in
headers passed through the environment, and one persistent bare mirror per repository."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from coder_assets.core.errors import (
    EmptyRepoError,
    GitError,
    MirrorCorruptError,
    UnsafeRemoteError,
)

ALLOWED_SCHEMES = ("https", "http", "ssh", "file")

# Every git command runs with these settings. The allow-list closes ext::, fd:: and any transport
# git may learn later; hooksPath=/dev/null means no hook in a mirror can ever run.
SAFE_GIT_CONFIG: tuple[tuple[str, str], ...] = (
    ("protocol.allow", "never"),
    ("protocol.https.allow", "always"),
    ("protocol.http.allow", "always"),
    ("protocol.ssh.allow", "always"),
    ("protocol.file.allow", "always"),
    ("core.hooksPath", "/dev/null"),
    ("core.symlinks", "false"),
    ("core.fsmonitor", "false"),
    ("submodule.recurse", "false"),
    ("fetch.recurseSubmodules", "false"),
    ("credential.helper", ""),
    ("http.followRedirects", "false"),
    ("transfer.fsckObjects", "true"),
)

# scp-like ssh, `[user@]host:path`, where the path is made of repository-path characters only.
_SCP_LIKE = re.compile(r"^(?P<user>[\w.-]+@)?(?P<host>[\w.-]+):(?P<path>[\w.~/-]+)$")
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
# What git says when the objects or refs of a repository on disk are damaged (as opposed to a
# network or remote failure, which a new clone would not cure).
_CORRUPTION = re.compile(
    r"inflate: data stream error|is corrupt|corrupt (loose|packed) object|bad object|"
    r"packfile .* (cannot be accessed|does not match)|fsck error|missing (blob|tree|commit) |"
    r"object file .* is empty|unable to unpack|not a git repository|invalid (sha1|object) pointer|"
    r"bad (packed|loose) object header|unknown object type",
    re.IGNORECASE,
)
# Where a mirror that was found corrupted is kept: one such copy means it was re-cloned once.
CORRUPT_SUFFIX = ".corrupt"


def check_remote_url(url: str) -> str:
    """Return `url` if git may fetch from it, else raise UnsafeRemoteError.

    Accepted: http(s)://, ssh://, file:// and absolute local paths. Refused: `ext::`/`fd::`
    transports, option-like URLs, and anything else.
    """
    if not url or url.startswith("-"):
        raise UnsafeRemoteError(
            f"refusing clone URL {display_url(url)!r}: it is empty or option-like"
        )
    if "::" in url.split("/", 1)[0]:
        raise UnsafeRemoteError(
            f"refusing clone URL {display_url(url)!r}: 'transport::address' URLs (ext::, fd::) "
            f"can run commands; use one of {', '.join(ALLOWED_SCHEMES)}"
        )
    if url.startswith("/"):
        return url
    if "://" not in url and _SCP_LIKE.match(url):
        return url
    scheme = urlsplit(url).scheme.lower()
    if scheme in ALLOWED_SCHEMES:
        return url
    raise UnsafeRemoteError(
        f"refusing clone URL {display_url(url)!r}: transport {scheme or 'unknown'!r} is not "
        f"allowed; use one of {', '.join(ALLOWED_SCHEMES)} or an absolute path"
    )


def display_url(url: str) -> str:
    """`url` without any user:password part, fit for logs and messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    return url


def redact(text: str, secrets: Sequence[str]) -> str:
    """`text` with every secret (and any URL userinfo) replaced by `***`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return re.sub(r"(\w+://)[^/\s@]+@", r"\1***@", text)


@dataclass(frozen=True)
class GitHttp:
    """How git talks HTTP(S) to one server: extra headers (credentials) and a CA bundle for a
    server whose certificate a private CA signed."""

    headers: tuple[str, ...] = ()
    ca_bundle: str | None = None

    def config(self) -> list[tuple[str, str]]:
        pairs = [("http.extraHeader", header) for header in self.headers]
        if self.ca_bundle:
            pairs.append(("http.sslCAInfo", self.ca_bundle))
        return pairs


def git_env(http: GitHttp | None = None) -> dict[str, str]:
    """Environment for a git command: isolated from user/system config, non-interactive, and with
    HTTP settings given as config through the environment, so headers reach neither argv nor a
    file."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GIT_", "SSH_ASKPASS"))
    }
    env.update(
        {
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "true",
            "GIT_PROTOCOL_FROM_USER": "0",
            "GIT_ALLOW_PROTOCOL": "https:http:ssh:file",
            "GIT_LFS_SKIP_SMUDGE": "1",
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
            "LC_ALL": "C",
        }
    )
    config = list(SAFE_GIT_CONFIG) + (http.config() if http else [])
    env["GIT_CONFIG_COUNT"] = str(len(config))
    for index, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def run_git(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    http: GitHttp | None = None,
    secrets: Sequence[str] = (),
    timeout: float = 600,
    what: str = "",
) -> str:
    """Run `git ARGS` safely and return stdout; on failure raise GitError, redacted."""
    all_secrets = [*secrets, *(http.headers if http else ())]
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=git_env(http),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise GitError(f"{what or 'git ' + args[0]} timed out after {timeout:.0f}s") from exc
    if proc.returncode != 0:
        stderr = redact(proc.stderr.decode("utf-8", "replace").strip(), all_secrets)
        raise GitError(
            f"{what or 'git ' + args[0]} failed (exit {proc.returncode}): {stderr[-2000:]}"
        )
    return proc.stdout.decode("utf-8", "replace")


@contextmanager
def file_lock(path: Path, *, timeout: float = 600) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path`, waiting at most `timeout` seconds for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise GitError(
                        f"could not lock {path} within {timeout:.0f}s: another run is fetching "
                        "this repository; retry when it has finished"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class FetchResult:
    """What `fetch_mirror` did: the mirror, whether it was created, updated or re-cloned, the
    head, and warnings for the run's log."""

    mirror: Path
    action: str  # "cloned", "fetched" or "re-cloned"
    head_sha: str
    seconds: float
    warnings: tuple[str, ...] = ()


def is_corruption(error: GitError) -> bool:
    """True when `error` says a repository on disk is damaged."""
    return bool(_CORRUPTION.search(str(error)))


def fetch_mirror(
    url: str,
    mirror: Path,
    branch: str,
    *,
    http: GitHttp | None = None,
    secrets: Sequence[str] = (),
    timeout: float = 600,
) -> FetchResult:
    """Create or update the bare mirror at `mirror` with `branch` from `url`.

    A mirror that exists is fetched incrementally, never cloned again, unless git finds it
    corrupted: then it is moved aside to `<mirror>.corrupt` and cloned again, once; a mirror that
    is corrupted again while such a copy exists raises MirrorCorruptError. A new mirror is built
    in a temporary directory and renamed into place only once its first fetch succeeded.
    """
    check_remote_url(url)
    started = time.monotonic()
    shown = display_url(url)
    warnings: list[str] = []
    with file_lock(mirror.with_name(mirror.name + ".lock"), timeout=timeout):
        if mirror.exists():
            try:
                _fetch_branch(mirror, url, branch, http, secrets, timeout, shown, mirror)
                head = rev_parse(mirror, f"refs/heads/{branch}")
                # An unchanged branch makes the fetch read next to nothing: reading the head's
                # trees finds a damaged pack before the snapshot trips over it.
                run_git(
                    ["ls-tree", "-r", "-l", "--full-tree", head],
                    cwd=mirror,
                    timeout=timeout,
                    what=f"reading commit {head[:12]} in the mirror {mirror}",
                )
                return FetchResult(mirror, "fetched", head, time.monotonic() - started)
            except GitError as exc:
                if not is_corruption(exc):
                    raise
                warnings.append(_move_aside(mirror, shown, exc))
        _clone(url, mirror, branch, http, secrets, timeout, shown, recovering=bool(warnings))
        head = rev_parse(mirror, f"refs/heads/{branch}")
    action = "re-cloned" if warnings else "cloned"
    return FetchResult(mirror, action, head, time.monotonic() - started, tuple(warnings))


def _move_aside(mirror: Path, shown: str, error: GitError) -> str:
    """Move a corrupted mirror to `<mirror>.corrupt` and say so; refuse when it was corrupted
    before (a disk that keeps damaging files wants a person, not a loop of clones)."""
    aside = mirror.with_name(mirror.name + CORRUPT_SUFFIX)
    if aside.exists():
        raise MirrorCorruptError(
            f"the mirror {mirror} of {shown} is corrupted again after it was cloned anew (the "
            f"earlier copy is {aside}): {error}. Check the disk, then run "
            f"`rm -rf {mirror} {aside}` and materialize again"
        ) from error
    os.replace(mirror, aside)
    return (
        f"the mirror {mirror} of {shown} was corrupted ({str(error)[-300:]}); moved it to "
        f"{aside} and cloned it again. Delete {aside} once the disk is known good"
    )


def _clone(
    url: str,
    mirror: Path,
    branch: str,
    http: GitHttp | None,
    secrets: Sequence[str],
    timeout: float,
    shown: str,
    *,
    recovering: bool,
) -> None:
    staging = mirror.with_name(f".{mirror.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_git(["init", "--bare", "--quiet", "--template=", str(staging)], what="git init")
        _fetch_branch(staging, url, branch, http, secrets, timeout, shown, mirror)
        shutil.rmtree(mirror, ignore_errors=True)
        os.replace(staging, mirror)
    except GitError as exc:
        if recovering:
            raise MirrorCorruptError(
                f"the mirror {mirror} of {shown} was corrupted and cloning it again failed: {exc}"
            ) from exc
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch_branch(
    mirror: Path,
    url: str,
    branch: str,
    http: GitHttp | None,
    secrets: Sequence[str],
    timeout: float,
    shown: str,
    target: Path,
) -> None:
    ref = f"refs/heads/{branch}"
    try:
        run_git(
            [
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-recurse-submodules",
                "--no-write-fetch-head",
                "--",
                url,
                f"+{ref}:{ref}",
            ],
            cwd=mirror,
            http=http,
            secrets=secrets,
            timeout=timeout,
            what=f"git fetch of branch {branch!r} from {shown} into the mirror {target}",
        )
    except GitError as exc:
        if "couldn't find remote ref" in str(exc):
            raise EmptyRepoError(
                f"{shown} has no branch {branch!r} (an empty repository, or a renamed default "
                "branch); push a commit or fix the default branch, then materialize again"
            ) from exc
        raise
    run_git(["symbolic-ref", "HEAD", ref], cwd=mirror, what=f"git symbolic-ref in {target}")


def rev_parse(repo: Path, rev: str) -> str:
    """The full SHA that `rev` names in `repo`."""
    return run_git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=repo).strip()


def has_commit(repo: Path, sha: str) -> bool:
    """True when `repo` holds commit `sha`."""
    if not _SHA.match(sha):
        return False
    try:
        run_git(["cat-file", "-e", f"{sha}^{{commit}}"], cwd=repo)
    except GitError:
        return False
    return True


def local_head(repo: Path) -> tuple[str, str | None]:
    """`(default branch, head sha, or None when the branch has no commit yet)` of a local
    repository. Only a branch that was never written counts as empty: a HEAD, ref or commit that
    cannot be read raises GitError naming the repository and the cause."""
    try:
        git_dir = Path(
            run_git(["rev-parse", "--absolute-git-dir"], cwd=repo, what=f"reading {repo}").strip()
        )
        branch = run_git(
            ["symbolic-ref", "--short", "HEAD"], cwd=repo, what=f"reading HEAD of {repo}"
        ).strip()
    except GitError as exc:
        raise GitError(f"{exc}; its HEAD must name a branch (e.g. 'ref: refs/heads/main')") from exc
    ref = f"refs/heads/{branch}"
    try:
        sha = run_git(
            ["rev-parse", "--verify", f"{ref}^{{commit}}"],
            cwd=repo,
            what=f"reading branch {branch!r} of {repo}",
        ).strip()
    except GitError as exc:
        if not _ref_written(git_dir, ref):
            # HEAD names a branch that has no commit yet: a new, empty repository.
            return branch, None
        raise GitError(f"{exc}; the branch exists but its commit cannot be read") from exc
    return branch, sha


def _ref_written(git_dir: Path, ref: str) -> bool:
    """True when `ref` is stored in `git_dir`, loose or packed, whether or not it is valid."""
    if (git_dir / ref).exists():
        return True
    packed = git_dir / "packed-refs"
    if packed.is_file():
        suffix = f" {ref}"
        for line in packed.read_text("utf-8", "replace").splitlines():
            if line.rstrip().endswith(suffix):
                return True
    return False


def commit_info(repo: Path, sha: str) -> Mapping[str, str]:
    """Committer date (ISO 8601) and subject of `sha`."""
    out = run_git(["show", "-s", "--format=%cI%x00%s", sha], cwd=repo, what="git show")
    date, _, subject = out.strip().partition("\x00")
    return {"date": date, "subject": subject}
