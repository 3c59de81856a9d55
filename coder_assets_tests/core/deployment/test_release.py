"""Releasing adapter versions to `code-lora-adapters`: real git, real git-lfs, local bare remotes
and a smart-HTTP remote served by `git http-backend` that takes pushes and (optionally) speaks the
LFS batch API."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from coder_assets.core.deployment.release import (
    WORK_MARKER,
    ReleaseError,
    ReleaseResult,
    ReleaseTarget,
    lfs_batch_url,
    lfs_pointer,
    parse_lfs_pointer,
    probe_lfs,
    release_adapter,
)
from coder_assets.core.errors import CoderAssetsError, UnsafeRemoteError
from coder_assets.core.sources.git import GitHttp
from coder_assets_tests.conftest import GIT_ENV, GITEA_TOKEN
from coder_assets_tests.gitea_server import GIT_HTTP_BACKEND
from coder_assets_tests.gitea_server import git_env as server_git_env

AUTH_HEADER = f"Authorization: token {GITEA_TOKEN}"
REPO_PATH = "/homelab/code-lora-adapters.git"


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """git in `repo` with an isolated config (no LFS filters) and stdout as text."""
    proc = subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **GIT_ENV, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


def blob_bytes(repo: Path, rev: str, path: str) -> bytes:
    proc = subprocess.run(
        ["git", "cat-file", "blob", f"{rev}:{path}"],
        cwd=repo,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        check=True,
    )
    return proc.stdout


def remote_state(bare: Path) -> tuple[str, list[str]]:
    """Every ref of `bare` and every file under its objects/ and lfs/ folders."""
    refs = git(bare, "for-each-ref", "--format=%(refname) %(objectname)")
    files = sorted(
        str(path.relative_to(bare))
        for folder in ("objects", "lfs")
        for path in (bare / folder).rglob("*")
        if path.is_file()
    )
    return refs, files


def make_adapter(folder: Path, seed: bytes = b"one") -> Path:
    """An adapter folder with small, distinct weights and config."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = b"".join(hashlib.sha256(seed + bytes([i])).digest() for i in range(256))
    (folder / "adapters.safetensors").write_bytes(weights)
    (folder / "adapter_config.json").write_text(
        json.dumps({"fine_tune_type": "lora", "num_layers": 4, "seed": seed.decode()})
    )
    return folder


def manifest_for(version: str, **extra: Any) -> dict[str, Any]:
    return {
        "adapter_version": version,
        "dataset_version": "ds-20240601-abcd",
        "base_model_version": "qwen2.5-coder-1.5b@1234abcd",
        "eval_scores": {"humaneval_pass_at_1": 0.4268, "fim_exact_match": 0.31},
        **extra,
    }


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    return make_adapter(tmp_path / "adapter")


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    return tmp_path / "remote" / "code-lora-adapters.git"


@pytest.fixture
def target(bare: Path) -> ReleaseTarget:
    return ReleaseTarget(remote=bare.as_uri(), create_local_remote=True)


# -- a smart-HTTP remote that takes pushes -------------------------------------------------------


class GitHttpRemote:
    """`git http-backend` on a loopback port, serving bare repos under `root` for push and fetch.

    Git requests need `Authorization: token <token>`. With `lfs=True` the LFS batch API answers
    too, sending uploads to `http://localhost:<port>/storage/<oid>`: a host name other than the
    127.0.0.1 of the clone URL, as an object store would be. `requests` records (method, Host,
    path, Authorization header) of each request.
    """

    def __init__(self, root: Path, *, token: str, lfs: bool = False) -> None:
        self.root, self.token, self.lfs = root, token, lfs
        self.requests: list[tuple[str, str, str, str | None]] = []
        self.stored: dict[str, bytes] = {}
        handler = type("_Handler", (_GitHttpHandler,), {"remote": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}{REPO_PATH}"
        self.bare = root / REPO_PATH.lstrip("/")
        self.bare.mkdir(parents=True)
        git(self.bare, "init", "-q", "--bare", "-b", "main", "--template=", ".")
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> GitHttpRemote:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


class _GitHttpHandler(BaseHTTPRequestHandler):
    remote: GitHttpRemote

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        remote = self.remote
        authorization = self.headers.get("Authorization")
        remote.requests.append((self.command, self.headers["Host"], self.path, authorization))
        body = self._body()
        path, _, query = self.path.partition("?")
        if path.startswith("/storage/") and self.command == "PUT":
            remote.stored[path.rsplit("/", 1)[1]] = body
            self._send(200, b"")
        elif authorization != f"token {remote.token}":
            self._send(401, b"Unauthorized\n", {"WWW-Authenticate": 'Basic realm="test"'})
        elif path == f"{REPO_PATH}/info/lfs/objects/batch" and remote.lfs:
            request = json.loads(body)
            objects = [
                {
                    **obj,
                    "actions": {
                        "upload": {"href": f"http://localhost:{remote.port}/storage/{obj['oid']}"}
                    },
                }
                for obj in request["objects"]
            ]
            payload = json.dumps({"transfer": "basic", "objects": objects}).encode()
            self._send(200, payload, {"Content-Type": "application/vnd.git-lfs+json"})
        elif path.startswith(REPO_PATH + "/") and "/info/lfs" not in path:
            self._cgi(path, query, body)
        else:
            self._send(404, b"Not found\n")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _cgi(self, path: str, query: str, body: bytes) -> None:
        env = server_git_env(
            {
                "GIT_PROJECT_ROOT": str(self.remote.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "REQUEST_METHOD": self.command,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": "homelab-bot",
                "REMOTE_ADDR": "127.0.0.1",
                "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                "GATEWAY_INTERFACE": "CGI/1.1",
            }
        )
        proc = subprocess.run(
            [GIT_HTTP_BACKEND], input=body, env=env, capture_output=True, timeout=60, check=False
        )
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        status, headers = 200, {}
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers[name.strip()] = value.strip()
        self._send(status, payload, headers)

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def http_remote(tmp_path: Path) -> Iterator[GitHttpRemote]:
    with GitHttpRemote(tmp_path / "server", token=GITEA_TOKEN) as remote:
        yield remote


@pytest.fixture
def http_lfs_remote(tmp_path: Path) -> Iterator[GitHttpRemote]:
    with GitHttpRemote(tmp_path / "server", token=GITEA_TOKEN, lfs=True) as remote:
        yield remote


def assert_token_nowhere(token: str, work_dir: Path, *things: object) -> None:
    for path in work_dir.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    for thing in things:
        assert token not in repr(thing)


# -- local remotes --------------------------------------------------------------------------------


def test_first_release_creates_remote_with_one_commit_one_annotated_tag_and_lfs_weights(
    adapter: Path, bare: Path, target: ReleaseTarget, tmp_path: Path
) -> None:
    result = release_adapter(adapter, manifest_for("v1"), target, tmp_path / "work")

    weights = adapter / "adapters.safetensors"
    assert result == ReleaseResult(
        version="v1",
        tag="v1",
        commit=git(bare, "rev-parse", "main"),
        remote=bare.as_uri(),
        lfs=True,
        already_released=False,
        files={
            "adapters.safetensors": {"sha256": sha256_of(weights), "bytes": weights.stat().st_size},
            "adapter_config.json": {
                "sha256": sha256_of(adapter / "adapter_config.json"),
                "bytes": (adapter / "adapter_config.json").stat().st_size,
            },
        },
    )
    assert git(bare, "rev-list", "--count", "main") == "1"
    assert git(bare, "cat-file", "-t", "refs/tags/v1") == "tag"
    assert git(bare, "rev-parse", "v1^{commit}") == result.commit
    tag_message = git(bare, "tag", "-l", "--format=%(contents)", "v1")
    for fragment in ("v1", "ds-20240601-abcd", "qwen2.5-coder-1.5b@1234abcd", "0.4268"):
        assert fragment in tag_message
    assert git(bare, "ls-tree", "--name-only", "v1").splitlines() == [
        ".gitattributes",
        "adapter_config.json",
        "adapters.safetensors",
        "manifest.json",
    ]
    assert (
        blob_bytes(bare, "v1", "adapter_config.json")
        == (adapter / "adapter_config.json").read_bytes()
    )
    oid = sha256_of(weights)
    pointer = blob_bytes(bare, "v1", "adapters.safetensors").decode()
    assert pointer == lfs_pointer(oid, weights.stat().st_size)
    assert (
        bare / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    ).read_bytes() == weights.read_bytes()
    assert blob_bytes(bare, "v1", ".gitattributes") == (
        b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    )
    manifest_text = blob_bytes(bare, "v1", "manifest.json").decode()
    manifest = json.loads(manifest_text)
    assert manifest == {**manifest_for("v1"), "files": result.files}
    assert manifest_text == json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def test_fresh_clone_of_the_tag_with_lfs_pull_restores_identical_adapter_files(
    adapter: Path, target: ReleaseTarget, tmp_path: Path
) -> None:
    release_adapter(adapter, manifest_for("v1"), target, tmp_path / "work")

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", target.remote, str(clone))
    git(clone, "checkout", "-q", "v1")
    git(clone, "lfs", "install", "--local")
    git(clone, "lfs", "pull")

    for name in ("adapters.safetensors", "adapter_config.json"):
        assert (clone / name).read_bytes() == (adapter / name).read_bytes()
    assert git(clone, "status", "--porcelain") == ""


def test_second_version_adds_one_commit_on_the_branch_and_keeps_both_tags(
    tmp_path: Path, bare: Path, target: ReleaseTarget
) -> None:
    first = release_adapter(
        make_adapter(tmp_path / "a1", b"one"), manifest_for("v1"), target, tmp_path / "work"
    )
    second = release_adapter(
        make_adapter(tmp_path / "a2", b"two"), manifest_for("v2"), target, tmp_path / "work"
    )

    assert git(bare, "rev-list", "main").splitlines() == [second.commit, first.commit]
    assert git(bare, "tag", "-l").splitlines() == ["v1", "v2"]
    assert git(bare, "rev-parse", "v1^{commit}", "v2^{commit}").splitlines() == [
        first.commit,
        second.commit,
    ]
    assert json.loads(blob_bytes(bare, "main", "manifest.json"))["adapter_version"] == "v2"
    assert first.files != second.files


@pytest.mark.parametrize("lfs", ["auto", "never"])
@pytest.mark.parametrize("fresh_work_dir", [False, True], ids=["same_work_dir", "new_work_dir"])
def test_rerelease_of_the_same_version_changes_nothing_on_the_remote(
    adapter: Path, bare: Path, tmp_path: Path, lfs: str, fresh_work_dir: bool
) -> None:
    target = ReleaseTarget(remote=str(bare), lfs=lfs, create_local_remote=True)
    first = release_adapter(adapter, manifest_for("v1"), target, tmp_path / "work")
    before = remote_state(bare)
    work = tmp_path / ("work-again" if fresh_work_dir else "work")

    again = release_adapter(adapter, manifest_for("v1", note="rerun"), target, work)

    assert again.already_released and not first.already_released
    assert (again.commit, again.tag, again.files, again.lfs) == (
        first.commit,
        first.tag,
        first.files,
        first.lfs,
    )
    assert remote_state(bare) == before


@pytest.mark.parametrize("changed", ["adapters.safetensors", "adapter_config.json"])
def test_same_version_with_other_adapter_files_is_refused_and_remote_unchanged(
    adapter: Path, bare: Path, target: ReleaseTarget, tmp_path: Path, changed: str
) -> None:
    release_adapter(adapter, manifest_for("v1"), target, tmp_path / "work")
    before = remote_state(bare)
    (adapter / changed).write_bytes((adapter / changed).read_bytes() + b" ")

    with pytest.raises(ReleaseError, match="immutable") as caught:
        release_adapter(adapter, manifest_for("v1"), target, tmp_path / "work")

    assert changed in str(caught.value) and "'v1'" in str(caught.value)
    assert remote_state(bare) == before


def test_lfs_never_commits_the_weights_as_a_plain_blob_without_gitattributes(
    adapter: Path, bare: Path, tmp_path: Path
) -> None:
    target = ReleaseTarget(remote=bare.as_uri(), lfs="never", create_local_remote=True)
    result = release_adapter(adapter, manifest_for("v1"), target, tmp_path / "work")

    assert not result.lfs
    assert (
        blob_bytes(bare, "v1", "adapters.safetensors")
        == (adapter / "adapters.safetensors").read_bytes()
    )
    assert ".gitattributes" not in git(bare, "ls-tree", "--name-only", "v1").splitlines()
    assert not (bare / "lfs").exists()


def test_tag_prefix_names_the_tag_and_branch_can_be_chosen(
    adapter: Path, bare: Path, tmp_path: Path
) -> None:
    target = ReleaseTarget(
        remote=str(bare), branch="releases", tag_prefix="adapter/", create_local_remote=True
    )
    result = release_adapter(adapter, manifest_for("2024.06.01-1"), target, tmp_path / "work")

    assert result.tag == "adapter/2024.06.01-1"
    assert git(bare, "for-each-ref", "--format=%(refname)").splitlines() == [
        "refs/heads/releases",
        "refs/tags/adapter/2024.06.01-1",
    ]
    assert git(bare, "log", "-1", "--format=%an <%ae>", "releases") == (
        "coder_assets <coder-assets@localhost>"
    )


@pytest.mark.parametrize("missing", ["adapters.safetensors", "adapter_config.json"])
def test_missing_adapter_file_is_named_in_the_error(
    adapter: Path, target: ReleaseTarget, tmp_path: Path, missing: str
) -> None:
    (adapter / missing).unlink()
    with pytest.raises(ReleaseError, match=f"{missing} is missing") as caught:
        release_adapter(adapter, manifest_for("v1"), target, tmp_path / "work")
    assert "train" in str(caught.value)


@pytest.mark.parametrize(
    "version", [None, "", "../v1", "v 1", "-v1", "v1..2", "v1.lock", "v1/x", "v1~1", "a" * 200]
)
def test_missing_or_tag_unsafe_adapter_version_is_refused(
    adapter: Path, target: ReleaseTarget, tmp_path: Path, version: str | None
) -> None:
    manifest = manifest_for("v1")
    if version is None:
        del manifest["adapter_version"]
    else:
        manifest["adapter_version"] = version
    with pytest.raises(ReleaseError, match="adapter_version"):
        release_adapter(adapter, manifest, target, tmp_path / "work")


def test_missing_local_remote_is_refused_unless_it_may_be_created(
    adapter: Path, bare: Path, tmp_path: Path
) -> None:
    target = ReleaseTarget(remote=bare.as_uri())
    with pytest.raises(ReleaseError, match="does not exist"):
        release_adapter(adapter, manifest_for("v1"), target, tmp_path / "work")
    assert not bare.exists()


def test_first_release_to_an_existing_empty_remote_creates_the_branch(
    adapter: Path, bare: Path, tmp_path: Path
) -> None:
    bare.mkdir(parents=True)
    git(bare, "init", "-q", "--bare", "-b", "main", ".")
    result = release_adapter(
        adapter, manifest_for("v1"), ReleaseTarget(remote=str(bare)), tmp_path / "work"
    )
    assert git(bare, "rev-parse", "main") == result.commit


@pytest.mark.parametrize("damage", ["deleted", "no_head", "garbage_config", "lost_objects"])
def test_broken_or_missing_work_dir_is_rebuilt(
    tmp_path: Path, bare: Path, target: ReleaseTarget, damage: str
) -> None:
    work = tmp_path / "work"
    first = release_adapter(make_adapter(tmp_path / "a1", b"one"), manifest_for("v1"), target, work)
    if damage == "deleted":
        shutil.rmtree(work)
    elif damage == "no_head":
        (work / "HEAD").unlink()
    elif damage == "garbage_config":
        (work / "config").write_text("[core\nthis is not git config\n")
    else:
        shutil.rmtree(work / "objects")
        (work / "objects").mkdir()

    second = release_adapter(
        make_adapter(tmp_path / "a2", b"two"), manifest_for("v2"), target, work
    )

    assert git(bare, "rev-list", "main").splitlines() == [second.commit, first.commit]
    assert (work / WORK_MARKER).is_file()


def test_foreign_folder_as_work_dir_is_refused_and_left_alone(
    adapter: Path, target: ReleaseTarget, tmp_path: Path
) -> None:
    work = tmp_path / "somebodys-files"
    work.mkdir()
    (work / "notes.txt").write_text("keep me")
    with pytest.raises(ReleaseError, match="not a scratch clone"):
        release_adapter(adapter, manifest_for("v1"), target, work)
    assert (work / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "remote",
    [
        f"https://bot:{GITEA_TOKEN}@gitea.example/homelab/code-lora-adapters.git",
        f"https://{GITEA_TOKEN}@gitea.example/homelab/code-lora-adapters.git",
        f"ssh://git:{GITEA_TOKEN}@gitea.example/homelab/code-lora-adapters.git",
    ],
)
def test_remote_url_with_credentials_is_refused_without_echoing_them(
    adapter: Path, tmp_path: Path, remote: str
) -> None:
    with pytest.raises(ReleaseError, match="token as a header") as caught:
        release_adapter(adapter, manifest_for("v1"), ReleaseTarget(remote=remote), tmp_path / "w")
    assert GITEA_TOKEN not in str(caught.value)
    assert not (tmp_path / "w").exists()


def test_unsafe_transport_is_refused(adapter: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsafeRemoteError):
        release_adapter(
            adapter, manifest_for("v1"), ReleaseTarget(remote="ext::sh -c touch% /tmp/x"), tmp_path
        )


def test_lfs_always_with_a_remote_without_lfs_api_is_refused_before_pushing(
    adapter: Path, http_remote: GitHttpRemote, tmp_path: Path
) -> None:
    target = ReleaseTarget(remote=http_remote.url, http=GitHttp((AUTH_HEADER,)), lfs="always")
    with pytest.raises(ReleaseError, match="offers no Git LFS API") as caught:
        release_adapter(adapter, manifest_for("v1"), target, tmp_path / "work")
    assert GITEA_TOKEN not in str(caught.value)
    assert git(http_remote.bare, "for-each-ref") == ""


# -- HTTP remotes: the token travels in a header only --------------------------------------------


def test_http_release_sends_token_only_as_header_and_falls_back_to_plain_blobs(
    adapter: Path, http_remote: GitHttpRemote, tmp_path: Path
) -> None:
    target = ReleaseTarget(remote=http_remote.url, http=GitHttp((AUTH_HEADER,)))
    work = tmp_path / "work"

    result = release_adapter(adapter, manifest_for("v1"), target, work)
    again = release_adapter(adapter, manifest_for("v1"), target, work)

    assert not result.lfs and again.already_released and again.commit == result.commit
    bare = http_remote.bare
    assert git(bare, "rev-parse", "main") == result.commit
    assert (
        blob_bytes(bare, "v1", "adapters.safetensors")
        == (adapter / "adapters.safetensors").read_bytes()
    )
    methods_paths = [(method, path) for method, _, path, _ in http_remote.requests]
    assert ("POST", f"{REPO_PATH}/info/lfs/objects/batch") in methods_paths
    assert ("POST", f"{REPO_PATH}/git-receive-pack") in methods_paths
    assert all(GITEA_TOKEN not in path for _, _, path, _ in http_remote.requests)
    assert all(auth == f"token {GITEA_TOKEN}" for *_, auth in http_remote.requests)
    assert (work / "config").read_text().count(http_remote.url) == 1
    assert_token_nowhere(GITEA_TOKEN, work, result, again)


def test_http_release_with_a_wrong_token_fails_without_leaking_either_token(
    adapter: Path, http_remote: GitHttpRemote, tmp_path: Path
) -> None:
    wrong = "0123456789abcdef0123456789abcdef01234567"
    target = ReleaseTarget(remote=http_remote.url, http=GitHttp((f"Authorization: token {wrong}",)))
    with pytest.raises(CoderAssetsError) as caught:
        release_adapter(adapter, manifest_for("v1"), target, tmp_path / "work")
    assert wrong not in str(caught.value)
    assert http_remote.url in str(caught.value)
    assert_token_nowhere(wrong, tmp_path / "work")


def test_http_release_with_lfs_api_uploads_weights_and_keeps_token_off_the_storage_host(
    adapter: Path, http_lfs_remote: GitHttpRemote, tmp_path: Path
) -> None:
    target = ReleaseTarget(remote=http_lfs_remote.url, http=GitHttp((AUTH_HEADER,)))
    work = tmp_path / "work"

    result = release_adapter(adapter, manifest_for("v1"), target, work)

    weights = (adapter / "adapters.safetensors").read_bytes()
    oid = hashlib.sha256(weights).hexdigest()
    assert result.lfs
    assert http_lfs_remote.stored == {oid: weights}
    pointer = blob_bytes(http_lfs_remote.bare, "v1", "adapters.safetensors").decode()
    assert parse_lfs_pointer(pointer) == (oid, len(weights))
    batch = [r for r in http_lfs_remote.requests if r[2].endswith("/objects/batch")]
    uploads = [r for r in http_lfs_remote.requests if r[0] == "PUT"]
    # The probe and git-lfs's own batch request both carry the token...
    assert len(batch) == 2 and all(auth == f"token {GITEA_TOKEN}" for *_, auth in batch)
    # ...the object store on another host name never sees it.
    assert [(host, auth) for _, host, _, auth in uploads] == [
        (f"localhost:{http_lfs_remote.port}", None)
    ]
    assert_token_nowhere(GITEA_TOKEN, work, result)


@pytest.mark.parametrize("lfs", [True, False])
def test_lfs_probe_is_positive_only_when_the_batch_api_answers_200(
    tmp_path: Path, lfs: bool
) -> None:
    with GitHttpRemote(tmp_path / "server", token=GITEA_TOKEN, lfs=lfs) as remote:
        reason = probe_lfs(remote.url.removesuffix(".git"), GitHttp((AUTH_HEADER,)))
        unauthenticated = probe_lfs(remote.url)
    assert (reason == "") is lfs
    assert "401" in unauthenticated
    method, _, path, auth = remote.requests[0]
    assert (method, path, auth) == (
        "POST",
        f"{REPO_PATH}/info/lfs/objects/batch",
        f"token {GITEA_TOKEN}",
    )


def test_lfs_probe_of_an_unreachable_server_gives_a_reason_without_the_token() -> None:
    reason = probe_lfs("http://127.0.0.1:9/x.git", GitHttp((AUTH_HEADER,)), timeout=5)
    assert "could not be reached" in reason and GITEA_TOKEN not in reason


@pytest.mark.parametrize(
    ("remote", "batch"),
    [
        ("https://g.example/o/r.git", "https://g.example/o/r.git/info/lfs/objects/batch"),
        ("https://g.example/o/r", "https://g.example/o/r.git/info/lfs/objects/batch"),
        ("https://g.example/o/r/", "https://g.example/o/r.git/info/lfs/objects/batch"),
    ],
)
def test_lfs_batch_url_follows_git_lfs_endpoint_rule(remote: str, batch: str) -> None:
    assert lfs_batch_url(remote) == batch


def test_lfs_pointer_round_trips_and_other_text_is_not_a_pointer() -> None:
    oid = "a" * 64
    assert parse_lfs_pointer(lfs_pointer(oid, 12)) == (oid, 12)
    assert parse_lfs_pointer('{"fine_tune_type": "lora"}') is None
