"""Publishing one trained LoRA adapter version to the git repository `code-lora-adapters`.

The repository's root holds the adapter of the latest release, so that a checkout of any release
tag is a directory `mlx_lm.server --adapter-path` accepts:

    adapters.safetensors   the weights: an LFS pointer when the release used Git LFS
    adapter_config.json    as training wrote it
    manifest.json          the caller's manifest plus `files` (sha256 and bytes of the two above)
    .gitattributes         `*.safetensors` through LFS (only in releases that used LFS)

Each release is one commit on the branch and one annotated tag `<tag_prefix><version>`, pushed
together with `git push --atomic`. A version is immutable: releasing it again with the same adapter
files changes nothing, with other files it is refused.

The release is built from git objects in a bare scratch clone (`work_dir`): nothing is checked out,
so no filter, hook or smudge runs. For LFS, `git lfs clean` is not needed either: the pointer is
written here (its format is fixed by the LFS spec), the object is stored under `lfs/objects/` of
the scratch clone, and `git lfs push --object-id` uploads it before the git push, because the
pre-push hook that would do so never runs (`core.hooksPath=/dev/null`).

Credentials travel only as HTTP headers through the environment (`GitHttp`). For git-lfs the
headers are scoped to the remote's `scheme://host:port/`: an unscoped `http.extraHeader` is sent by
git-lfs to every host its batch API names, such as an object store serving uploads directly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from coder_assets.core.errors import CoderAssetsError, GitError
from coder_assets.core.files import write_text_atomic
from coder_assets.core.sources.git import (
    GitHttp,
    check_remote_url,
    display_url,
    file_lock,
    redact,
    run_git,
)

WEIGHTS_FILE = "adapters.safetensors"
CONFIG_FILE = "adapter_config.json"
ADAPTER_FILES = (WEIGHTS_FILE, CONFIG_FILE)
MANIFEST_FILE = "manifest.json"
GITATTRIBUTES_FILE = ".gitattributes"
GITATTRIBUTES_LFS = "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
LFS_MODES = ("auto", "always", "never")
LFS_POINTER_VERSION = "https://git-lfs.github.com/spec/v1"
LFS_POINTER_MAX_BYTES = 1024
LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"
PROBE_TIMEOUT_S = 15
# Scores quoted in commit and tag messages when the manifest (or its `eval_scores`) has them.
SUMMARY_SCORES = (
    "humaneval_pass_at_1",
    "fim_exact_match",
    "fim_edit_similarity",
    "chat_edit_similarity",
    "test_loss",
)
REMOTE_NAME = "origin"
# A release whose deploy failed gets an annotated tag `rejected/<tag>` naming the reason.
REJECTED_TAG_PREFIX = "rejected/"
# Where the scratch clone keeps what it fetched of the remote's branch and tag.
LOCAL_REFS = "refs/coder-assets/remote"
# Written into a scratch clone when it is made: only a directory holding it (or an empty one) is
# ever deleted and rebuilt, so a mistyped work_dir never costs anyone their files.
WORK_MARKER = "coder-assets-release-work"
_STAGING_DIR = "release-staging"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_POINTER_OID = re.compile(r"^oid sha256:([0-9a-f]{64})$", re.MULTILINE)
_POINTER_SIZE = re.compile(r"^size ([0-9]+)$", re.MULTILINE)


class ReleaseError(CoderAssetsError):
    """An adapter version could not be released. The message is free of credentials."""


@dataclass(frozen=True)
class ReleaseTarget:
    """Where releases go: the adapters repository, its branch, and how to talk to it.

    `remote` is an https/http/ssh URL, a file:// URL or an absolute path; a token goes in
    `http.headers` (`Authorization: token ...`), never in the URL. `lfs` is "auto" (LFS when git-lfs
    is installed and the remote offers the LFS API), "always" or "never". `create_local_remote`
    lets a local remote that does not exist yet be created as an empty bare repository.
    """

    remote: str
    branch: str = "main"
    http: GitHttp | None = None
    lfs: str = "auto"
    tag_prefix: str = ""
    author_name: str = "coder_assets"
    author_email: str = "coder-assets@localhost"
    create_local_remote: bool = False


@dataclass(frozen=True)
class ReleaseResult:
    """One released version: its tag and commit on the remote (shown without credentials)."""

    version: str
    tag: str
    commit: str
    remote: str
    lfs: bool
    already_released: bool
    files: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class _StagedFile:
    """An adapter file copied into the scratch clone, with the digest of exactly that copy."""

    name: str
    path: Path
    sha256: str
    bytes: int

    def entry(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class _ScopedHttp(GitHttp):
    """`GitHttp` whose headers are sent to one `scheme://host[:port]/` only."""

    scope: str = ""

    def config(self) -> list[tuple[str, str]]:
        pairs = [(f"http.{self.scope}.extraHeader", header) for header in self.headers]
        if self.ca_bundle:
            pairs.append(("http.sslCAInfo", self.ca_bundle))
        return pairs


def release_adapter(
    adapter_dir: Path,
    manifest: Mapping[str, Any],
    target: ReleaseTarget,
    work_dir: Path,
    *,
    timeout: float = 600,
) -> ReleaseResult:
    """Publish the adapter in `adapter_dir` as version `manifest["adapter_version"]`.

    One commit on `target.branch` and one annotated tag, pushed atomically. When the tag already
    exists with the same adapter files nothing is pushed and `already_released` is True; with other
    files ReleaseError is raised (manifest.json is not compared: the adapter files are the
    version). `work_dir` is a scratch clone this function owns (locked while
    in use; rebuilt when missing or broken). `timeout` bounds each git command.
    """
    adapter_dir, work_dir = Path(adapter_dir), Path(work_dir)
    version = check_adapter_version(manifest)
    tag = f"{target.tag_prefix}{version}"
    _check_target(target, tag)
    sources = _adapter_sources(adapter_dir)
    remote = target.remote
    shown = display_url(remote)
    http = _http_for(target)
    secrets = _secrets_of(target.http)
    if _local_remote_path(remote) is not None:
        _ensure_local_remote(target, shown, timeout)

    with file_lock(work_dir.with_name(work_dir.name + ".lock"), timeout=timeout):
        _open_work_repo(work_dir, remote, timeout)
        staging = work_dir / _STAGING_DIR
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(work_dir / "lfs", ignore_errors=True)
        staging.mkdir()
        try:
            staged = {name: _stage(path, staging / name) for name, path in sources.items()}
            files = {name: staged[name].entry() for name in ADAPTER_FILES}
            git = _Git(work_dir, http, secrets, timeout, shown)
            remote_refs = git.remote_refs(target.branch, tag)
            tag_ref = f"{LOCAL_REFS}/tags/{tag}"
            branch_ref = f"{LOCAL_REFS}/heads/{target.branch}"
            git.fetch(
                {f"refs/heads/{target.branch}": branch_ref, f"refs/tags/{tag}": tag_ref},
                remote_refs,
            )
            if f"refs/tags/{tag}" in remote_refs:
                commit, used_lfs = _compare_release(git, tag_ref, tag, staged, shown)
                return ReleaseResult(version, tag, commit, shown, used_lfs, True, files)

            use_lfs = _decide_lfs(target, secrets, timeout)
            parent = branch_ref if f"refs/heads/{target.branch}" in remote_refs else None
            full_manifest = {**manifest, "files": files}
            message = release_message(version, full_manifest)
            author = _author_args(target)
            commit = _build_commit(
                git, staging, staged, full_manifest, use_lfs, parent, message, author
            )
            tag_message = _write(staging / "TAG_MSG", message)
            git.run(
                [*author, "tag", "-f", "-a", "-F", str(tag_message), tag, commit],
                what=f"git tag {tag}",
            )
            if use_lfs:
                git.run(
                    ["lfs", "push", "--object-id", REMOTE_NAME, staged[WEIGHTS_FILE].sha256],
                    what=f"git lfs push of {WEIGHTS_FILE} to {shown}",
                )
            git.push(commit, target.branch, tag)
            git.run(["update-ref", branch_ref, commit], what="git update-ref")
            return ReleaseResult(version, tag, commit, shown, use_lfs, False, files)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(work_dir / "lfs", ignore_errors=True)


def reject_release(
    version: str,
    reason: str,
    target: ReleaseTarget,
    work_dir: Path,
    *,
    timeout: float = 600,
) -> str:
    """Mark the released `version` as rejected in the release repository: an annotated tag
    `rejected/<tag>` on its release commit whose message is `reason`, so that nobody takes the
    tip of the branch (or the version's tag) as a good adapter. Returns the rejected tag; marking
    one twice moves nothing."""
    tag = f"{target.tag_prefix}{version}"
    rejected = f"{REJECTED_TAG_PREFIX}{tag}"
    _check_target(target, tag)
    shown = display_url(target.remote)
    http = _http_for(target)
    secrets = _secrets_of(target.http)
    with file_lock(work_dir.with_name(work_dir.name + ".lock"), timeout=timeout):
        _open_work_repo(work_dir, target.remote, timeout)
        git = _Git(work_dir, http, secrets, timeout, shown)
        refs = git.remote_refs(target.branch, tag)
        if f"refs/tags/{tag}" not in refs:
            raise ReleaseError(
                f"cannot mark {tag!r} rejected in {shown}: the tag does not exist there"
            )
        out = git.run(
            ["ls-remote", REMOTE_NAME, f"refs/tags/{rejected}"],
            what=f"git ls-remote {shown}",
        )
        if out.strip():
            return rejected
        tag_ref = f"{LOCAL_REFS}/tags/{tag}"
        git.fetch({f"refs/tags/{tag}": tag_ref}, refs)
        message = _write(work_dir / "REJECT_MSG", f"rejected {tag}: {reason}\n")
        try:
            git.run(
                [
                    *_author_args(target),
                    "tag",
                    "-f",
                    "-a",
                    "-F",
                    str(message),
                    rejected,
                    f"{tag_ref}^{{commit}}",
                ],
                what=f"git tag {rejected}",
            )
            git.run(
                ["push", "--quiet", REMOTE_NAME, f"refs/tags/{rejected}:refs/tags/{rejected}"],
                what=f"git push of tag {rejected!r} to {shown}",
            )
        finally:
            message.unlink(missing_ok=True)
    return rejected


def check_adapter_version(manifest: Mapping[str, Any]) -> str:
    """`manifest["adapter_version"]` if it can name a tag and a folder, else ReleaseError."""
    version = manifest.get("adapter_version")
    if not isinstance(version, str) or not version:
        raise ReleaseError(
            f"the manifest has no adapter_version (got {version!r}): pass the manifest that "
            "lora_adapter wrote, whose adapter_version names the release tag"
        )
    if not _VERSION.match(version) or ".." in version or version.endswith((".", ".lock")):
        raise ReleaseError(
            f"adapter_version {version!r} cannot name a release tag: use letters, digits, '.', "
            "'_', '+' and '-' (starting with a letter or digit, at most 128 characters)"
        )
    return version


def probe_lfs(remote: str, http: GitHttp | None = None, *, timeout: float = PROBE_TIMEOUT_S) -> str:
    """Ask an http(s) remote's LFS batch API whether it accepts uploads.

    Returns "" when it answered 200, else the reason it is taken as not offering LFS. The request
    is the one git-lfs makes first (an upload batch, here with no objects), to the endpoint git-lfs
    derives from the clone URL (`<repo>.git/info/lfs`). Redirects are not followed.
    """
    url = lfs_batch_url(remote)
    headers = {"Accept": LFS_MEDIA_TYPE, "Content-Type": LFS_MEDIA_TYPE}
    for header in http.headers if http else ():
        name, _, value = header.partition(":")
        headers[name.strip()] = value.strip()
    body = json.dumps({"operation": "upload", "transfers": ["basic"], "objects": []}).encode()
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    context = ssl.create_default_context(cafile=http.ca_bundle if http else None)
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=context))
    secrets = _secrets_of(http)
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        return redact(f"{display_url(url)} could not be reached: {exc}", secrets)
    if status == 200:
        return ""
    return f"{display_url(url)} answered HTTP {status}"


def lfs_batch_url(remote: str) -> str:
    """The LFS batch endpoint git-lfs uses for the http(s) clone URL `remote`."""
    base = remote.rstrip("/")
    if not base.endswith(".git"):
        base += ".git"
    return f"{base}/info/lfs/objects/batch"


def release_message(version: str, manifest: Mapping[str, Any]) -> str:
    """Commit and tag message: the version, dataset and base model versions, key eval scores."""
    lines = [f"Release LoRA adapter {version}", ""]
    for key in ("adapter_version", "dataset_version", "base_model_version"):
        if manifest.get(key) not in (None, ""):
            lines.append(f"{key}: {manifest[key]}")
    scores = manifest.get("eval_scores")
    scores = scores if isinstance(scores, Mapping) else {}
    # adapter_release nests them per model (base, adapter, deployed): the adapter's are news.
    if isinstance(scores.get("adapter"), Mapping):
        scores = scores["adapter"]
    for key in SUMMARY_SCORES:
        value = scores.get(key, manifest.get(key))
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, float):
            lines.append(f"{key}: {value:.4f}" if math.isfinite(value) else f"{key}: {value}")
        elif isinstance(value, int):
            lines.append(f"{key}: {value}")
    for name, entry in sorted(manifest.get("files", {}).items()):
        lines.append(f"{name}: sha256 {entry['sha256']}, {entry['bytes']} bytes")
    return "\n".join(lines) + "\n"


def manifest_text(manifest: Mapping[str, Any]) -> str:
    """manifest.json as released: sorted keys, two-space indent, one trailing newline."""
    try:
        return (
            json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False, default=float) + "\n"
        )
    except (TypeError, ValueError) as exc:
        raise ReleaseError(
            f"the adapter manifest cannot be written as JSON ({exc}): keep it to strings, numbers, "
            "lists and mappings"
        ) from None


def lfs_pointer(sha256: str, size: int) -> str:
    """The canonical LFS pointer of content with this digest and size."""
    return f"version {LFS_POINTER_VERSION}\noid sha256:{sha256}\nsize {size}\n"


def parse_lfs_pointer(text: str) -> tuple[str, int] | None:
    """(sha256, size) of an LFS pointer, or None when `text` is not one."""
    if not text.startswith(f"version {LFS_POINTER_VERSION}\n"):
        return None
    oid, size = _POINTER_OID.search(text), _POINTER_SIZE.search(text)
    if oid is None or size is None:
        return None
    return oid.group(1), int(size.group(1))


# -- checks on the inputs ------------------------------------------------------------------------


def _check_target(target: ReleaseTarget, tag: str) -> None:
    if target.lfs not in LFS_MODES:
        raise ReleaseError(f"ReleaseTarget.lfs={target.lfs!r}: use one of {', '.join(LFS_MODES)}")
    check_remote_url(target.remote)
    parts = urlsplit(target.remote) if "://" in target.remote else None
    if parts is not None:
        scheme = parts.scheme.lower()
        with_user = scheme in ("http", "https") and (parts.username or parts.password)
        if with_user or parts.password:
            raise ReleaseError(
                f"refusing remote {display_url(target.remote)!r}: it carries credentials in the "
                "URL, where git would store and print them; remove them from the URL and pass the "
                "token as a header instead (GitHttp(headers=('Authorization: token <T>',)))"
            )
    for ref, what, hint in (
        (f"refs/heads/{target.branch}", f"branch {target.branch!r}", "ReleaseTarget.branch"),
        (f"refs/tags/{tag}", f"tag {tag!r}", "ReleaseTarget.tag_prefix and adapter_version"),
    ):
        try:
            run_git(["check-ref-format", ref], what="git check-ref-format")
        except GitError:
            raise ReleaseError(f"{what} is not a valid git ref name: fix {hint}") from None


def _adapter_sources(adapter_dir: Path) -> dict[str, Path]:
    sources = {}
    for name in ADAPTER_FILES:
        path = adapter_dir / name
        if not path.is_file():
            raise ReleaseError(
                f"{path} is missing: an adapter release needs {' and '.join(ADAPTER_FILES)}; "
                "point adapter_dir at a finished training of lora_adapter, or train it again"
            )
        sources[name] = path
    return sources


def _secrets_of(http: GitHttp | None) -> list[str]:
    """Every header, its value, and the value's last word (the bare token) for redaction."""
    secrets: list[str] = []
    for header in http.headers if http else ():
        value = header.partition(":")[2].strip()
        secrets += [header, value, *(value.split()[-1:] if value else [])]
    return [secret for secret in secrets if len(secret) >= 4]


def _http_for(target: ReleaseTarget) -> GitHttp | None:
    if target.http is None:
        return None
    parts = urlsplit(target.remote) if "://" in target.remote else None
    if parts is None or parts.scheme.lower() not in ("http", "https"):
        return target.http
    scope = f"{parts.scheme.lower()}://{parts.netloc}/"
    return _ScopedHttp(target.http.headers, target.http.ca_bundle, scope=scope)


def _author_args(target: ReleaseTarget) -> list[str]:
    return ["-c", f"user.name={target.author_name}", "-c", f"user.email={target.author_email}"]


# -- the remote ----------------------------------------------------------------------------------


def _local_remote_path(remote: str) -> Path | None:
    if remote.startswith("/"):
        return Path(remote)
    parts = urlsplit(remote)
    if parts.scheme.lower() == "file" and parts.netloc in ("", "localhost"):
        return Path(unquote(parts.path))
    return None


def _ensure_local_remote(target: ReleaseTarget, shown: str, timeout: float) -> None:
    path = _local_remote_path(target.remote)
    assert path is not None
    if (path / "HEAD").is_file() or (path / ".git").exists():
        return
    if not target.create_local_remote:
        raise ReleaseError(
            f"release remote {shown} does not exist: create it (git init --bare) or set "
            "ReleaseTarget.create_local_remote for a local adapters repository"
        )
    if path.exists() and any(path.iterdir()):
        raise ReleaseError(
            f"release remote {shown} is a non-empty folder that is not a git repository: "
            "point ReleaseTarget.remote at the adapters repository or at a new path"
        )
    run_git(
        [
            "init",
            "--bare",
            "--quiet",
            "--template=",
            f"--initial-branch={target.branch}",
            str(path),
        ],
        timeout=timeout,
        what=f"git init of release remote {shown}",
    )


def _decide_lfs(target: ReleaseTarget, secrets: Sequence[str], timeout: float) -> bool:
    if target.lfs == "never":
        return False
    shown = display_url(target.remote)
    try:
        run_git(["lfs", "version"], timeout=timeout, what="git lfs version")
    except GitError:
        if target.lfs == "always":
            raise ReleaseError(
                "ReleaseTarget.lfs='always' but git-lfs is not installed on this host: install "
                "git-lfs (apt-get install git-lfs, brew install git-lfs) or set lfs='auto'"
            ) from None
        return False
    if _local_remote_path(target.remote) is not None:
        return True
    scheme = urlsplit(target.remote).scheme.lower()
    if scheme in ("http", "https"):
        reason = probe_lfs(target.remote, target.http, timeout=min(timeout, PROBE_TIMEOUT_S))
        if not reason:
            return True
        if target.lfs == "always":
            raise ReleaseError(
                redact(
                    f"ReleaseTarget.lfs='always' but {shown} offers no Git LFS API ({reason}): "
                    "enable LFS for the repository on the server, or set lfs='auto' to fall "
                    "back to plain git blobs",
                    secrets,
                )
            )
        return False
    # ssh: git-lfs would ask the server over ssh (git-lfs-authenticate); there is no cheap probe,
    # so LFS over ssh is used only when asked for.
    return target.lfs == "always"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# -- the scratch clone ---------------------------------------------------------------------------


def _open_work_repo(work_dir: Path, remote: str, timeout: float) -> None:
    """Make `work_dir` a sound bare repository whose `origin` is `remote`."""
    if not _is_sound_repo(work_dir, timeout):
        if work_dir.exists():
            if not _is_ours(work_dir):
                raise ReleaseError(
                    f"release work_dir {work_dir} exists but is not a scratch clone of releases "
                    f"(no {WORK_MARKER} file in it): choose an empty or new folder for work_dir"
                )
            shutil.rmtree(work_dir)
        staging = work_dir.with_name(f".{work_dir.name}.staging-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        try:
            run_git(
                ["init", "--bare", "--quiet", "--template=", str(staging)],
                timeout=timeout,
                what=f"git init of release work_dir {work_dir}",
            )
            (staging / WORK_MARKER).write_text(
                "A scratch clone that coder_assets.core.deployment.release owns; safe to delete.\n"
            )
            os.replace(staging, work_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    # The URL holds no credentials (refused earlier), so it may sit in the clone's config.
    run_git(["config", f"remote.{REMOTE_NAME}.url", remote], cwd=work_dir, what="git config")


def _is_ours(work_dir: Path) -> bool:
    if not work_dir.is_dir():
        return False
    return (work_dir / WORK_MARKER).is_file() or not any(work_dir.iterdir())


def _is_sound_repo(work_dir: Path, timeout: float) -> bool:
    if not (work_dir / "HEAD").is_file() or not (work_dir / WORK_MARKER).is_file():
        return False
    try:
        git_dir = run_git(["rev-parse", "--absolute-git-dir"], cwd=work_dir, timeout=timeout)
        if Path(git_dir.strip()).resolve() != work_dir.resolve():
            return False
        run_git(
            ["fsck", "--connectivity-only", "--no-progress", "--no-dangling"],
            cwd=work_dir,
            timeout=timeout,
        )
    except GitError:
        return False
    return True


def _stage(source: Path, dest: Path) -> _StagedFile:
    """Copy `source` to `dest`, hashing exactly the bytes copied."""
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as src, open(dest, "wb") as out:
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
            out.write(block)
    return _StagedFile(dest.name, dest, digest.hexdigest(), size)


def _write(path: Path, text: str) -> Path:
    write_text_atomic(path, text)
    return path


class _Git:
    """git in the scratch clone, talking to `origin` with the target's HTTP settings."""

    def __init__(
        self,
        repo: Path,
        http: GitHttp | None,
        secrets: Sequence[str],
        timeout: float,
        shown: str,
    ) -> None:
        self.repo, self.http, self.secrets = repo, http, list(secrets)
        self.timeout, self.shown = timeout, shown

    def run(self, args: Sequence[str], *, what: str) -> str:
        return run_git(
            args,
            cwd=self.repo,
            http=self.http,
            secrets=self.secrets,
            timeout=self.timeout,
            what=what,
        )

    def remote_refs(self, branch: str, tag: str) -> dict[str, str]:
        """{ref: sha} of the branch and the tag on the remote, for those that exist."""
        wanted = {f"refs/heads/{branch}", f"refs/tags/{tag}"}
        out = self.run(
            ["ls-remote", REMOTE_NAME, *sorted(wanted)], what=f"git ls-remote {self.shown}"
        )
        refs = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref in wanted:
                refs[ref] = sha
        return refs

    def fetch(self, refspecs: Mapping[str, str], remote_refs: Mapping[str, str]) -> None:
        """Fetch each remote ref that exists into its local ref. Local refs of remote refs that
        do not exist are left stale: nothing reads them (callers go by `remote_refs`)."""
        present = [f"+{src}:{dst}" for src, dst in refspecs.items() if src in remote_refs]
        if present:
            self.run(
                ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", REMOTE_NAME, *present],
                what=f"git fetch from {self.shown}",
            )

    def push(self, commit: str, branch: str, tag: str) -> None:
        try:
            self.run(
                [
                    "push",
                    "--atomic",
                    "--quiet",
                    REMOTE_NAME,
                    f"{commit}:refs/heads/{branch}",
                    f"refs/tags/{tag}:refs/tags/{tag}",
                ],
                what=f"git push --atomic of branch {branch!r} and tag {tag!r} to {self.shown}",
            )
        except GitError as exc:
            if "rejected" in str(exc):
                raise ReleaseError(
                    f"{self.shown} refused the release of {tag!r} (neither the branch nor the tag "
                    f"changed): another release moved branch {branch!r} or created the tag "
                    f"meanwhile; run the release again. git said: {exc}"
                ) from exc
            raise


def _compare_release(
    git: _Git, tag_ref: str, tag: str, staged: Mapping[str, _StagedFile], shown: str
) -> tuple[str, bool]:
    """(commit, whether the weights are in LFS) of the released tag when its adapter files equal
    the staged ones; ReleaseError when they differ."""
    try:
        commit = git.run(["rev-parse", "--verify", f"{tag_ref}^{{commit}}"], what="git rev-parse")
    except GitError:
        raise ReleaseError(f"tag {tag!r} on {shown} does not point at a commit") from None
    commit = commit.strip()
    listing = git.run(["ls-tree", commit, "--", *ADAPTER_FILES], what="git ls-tree")
    blobs = {}
    for line in listing.splitlines():
        meta, _, name = line.partition("\t")
        blobs[name] = meta.split()[2]
    differing: list[str] = []
    used_lfs = False
    for name in ADAPTER_FILES:
        blob = blobs.get(name)
        if blob is None:
            differing.append(f"{name} (absent at the tag)")
            continue
        pointer = _read_pointer(git, blob)
        if name == WEIGHTS_FILE:
            used_lfs = pointer is not None
        file = staged[name]
        if pointer is not None:
            same = pointer == (file.sha256, file.bytes)
        else:
            local = git.run(
                ["hash-object", "--no-filters", "--", str(file.path)], what="git hash-object"
            )
            same = local.strip() == blob
        if not same:
            differing.append(name)
    if differing:
        raise ReleaseError(
            f"adapter version tag {tag!r} already exists on {shown} with different "
            f"{', '.join(differing)}: released versions are immutable; delete the tag on the "
            "remote if that release was a mistake, or train a new adapter version"
        )
    return commit, used_lfs


def _read_pointer(git: _Git, blob: str) -> tuple[str, int] | None:
    size = int(git.run(["cat-file", "-s", blob], what="git cat-file -s").strip())
    if size > LFS_POINTER_MAX_BYTES:
        return None
    return parse_lfs_pointer(git.run(["cat-file", "blob", blob], what="git cat-file"))


def _build_commit(
    git: _Git,
    staging: Path,
    staged: Mapping[str, _StagedFile],
    manifest: Mapping[str, Any],
    use_lfs: bool,
    parent: str | None,
    message: str,
    author: Sequence[str],
) -> str:
    """Write the release's blobs, tree and commit into the scratch clone; return the commit."""
    weights = staged[WEIGHTS_FILE]
    if use_lfs:
        # git-lfs's local object store of a bare repository: lfs/objects/OID[0:2]/OID[2:4]/OID.
        oid = weights.sha256
        store = git.repo / "lfs" / "objects" / oid[:2] / oid[2:4]
        store.mkdir(parents=True, exist_ok=True)
        os.replace(weights.path, store / oid)
        weights_source = _write(staging / "weights.pointer", lfs_pointer(oid, weights.bytes))
    else:
        weights_source = weights.path
    entries = {
        WEIGHTS_FILE: weights_source,
        CONFIG_FILE: staged[CONFIG_FILE].path,
        MANIFEST_FILE: _write(staging / MANIFEST_FILE, manifest_text(manifest)),
    }
    if use_lfs:
        entries[GITATTRIBUTES_FILE] = _write(staging / "gitattributes", GITATTRIBUTES_LFS)
    names = sorted(entries)
    blobs = git.run(
        ["hash-object", "-w", "--no-filters", "--", *(str(entries[name]) for name in names)],
        what="git hash-object",
    ).split()
    git.run(["read-tree", "--empty"], what="git read-tree")
    cacheinfo = [
        arg
        for name, blob in zip(names, blobs, strict=True)
        for arg in ("--cacheinfo", f"100644,{blob},{name}")
    ]
    git.run(["update-index", "--add", *cacheinfo], what="git update-index")
    tree = git.run(["write-tree"], what="git write-tree").strip()
    args = ["commit-tree", tree, "-F", str(_write(staging / "COMMIT_MSG", message))]
    if parent is not None:
        args += ["-p", git.run(["rev-parse", "--verify", parent], what="git rev-parse").strip()]
    return git.run([*author, *args], what="git commit-tree").strip()
