"""Clone URL allow-list, credential-free display and redaction, and the isolated git environment."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from coder_assets.core.errors import GitError, UnsafeRemoteError
from coder_assets.core.sources import git as core_git
from coder_assets.core.sources.git import (
    GitHttp,
    check_remote_url,
    display_url,
    git_env,
    redact,
    run_git,
)

HEADER = "Authorization: token s3cr3t-t0ken"


@pytest.mark.parametrize(
    "url",
    [
        "https://gitea.local/homelab/app.git",
        "HTTPS://gitea.local/homelab/app.git",
        "http://127.0.0.1:3000/homelab/app.git",
        "https://user:pw@gitea.local/homelab/app.git",
        "ssh://git@gitea.local:2222/homelab/app.git",
        "file:///srv/git/app.git",
        "git@gitea.local:homelab/app.git",
        "git@gitea.local:app.git",
        "/srv/git/app.git",
        "/srv/git/app",
    ],
)
def test_check_remote_url_accepts_allowed_transports(url: str) -> None:
    assert check_remote_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "ext::sh -c touch% /tmp/pwned",
        "ext::sh -c 'touch /tmp/pwned'",
        "EXT::sh",
        "fd::17",
        "fd::17/foo",
        "https::evil.example/x",
        "-uhelp",
        "--upload-pack=touch /tmp/pwned",
        "",
        "ftp://example.com/repo.git",
        "git://example.com/repo.git",
        "javascript:alert(1)",
        "data:text/plain,hi",
        "relative/path",
        "./repo",
        "C:\\repos\\app",
    ],
)
def test_check_remote_url_refuses_unsafe_transports(url: str) -> None:
    with pytest.raises(UnsafeRemoteError):
        check_remote_url(url)


def test_refusal_message_does_not_leak_password() -> None:
    with pytest.raises(UnsafeRemoteError) as raised:
        check_remote_url("ftp://alice:hunter2@example.com/repo.git")
    assert "hunter2" not in str(raised.value)
    assert "ftp" in str(raised.value)


@pytest.mark.parametrize("url", ["gitea.local:homelab/app.git", "myhost:app.git"])
def test_check_remote_url_accepts_scp_like_url_without_user(url: str) -> None:
    assert check_remote_url(url) == url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://alice:hunter2@gitea.local/homelab/app.git",
            "https://gitea.local/homelab/app.git",
        ),
        ("https://tok3n@gitea.local/homelab/app.git", "https://gitea.local/homelab/app.git"),
        (
            "http://alice:hunter2@127.0.0.1:3000/homelab/app.git",
            "http://127.0.0.1:3000/homelab/app.git",
        ),
        ("ssh://git:pw@gitea.local:2222/app.git", "ssh://gitea.local:2222/app.git"),
        ("https://gitea.local/homelab/app.git", "https://gitea.local/homelab/app.git"),
        ("git@gitea.local:homelab/app.git", "git@gitea.local:homelab/app.git"),
        ("/srv/git/app.git", "/srv/git/app.git"),
    ],
)
def test_display_url_strips_userinfo(url: str, shown: str) -> None:
    assert display_url(url) == shown


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("fatal: token s3cret rejected", ["s3cret"], "fatal: token *** rejected"),
        ("a s3cret and s3cret again", ["s3cret"], "a *** and *** again"),
        ("one two", ["one", "two"], "*** ***"),
        ("nothing to hide", ["", "absent"], "nothing to hide"),
        (
            "fatal: unable to access 'https://alice:hunter2@gitea.local/x.git/'",
            [],
            "fatal: unable to access 'https://***@gitea.local/x.git/'",
        ),
        (
            "clone https://tok3n@gitea.local/x.git and http://u:p@h/y",
            [],
            "clone https://***@gitea.local/x.git and http://***@h/y",
        ),
        ("no url here", [], "no url here"),
    ],
)
def test_redact_removes_secrets_and_url_userinfo(
    text: str, secrets: list[str], expected: str
) -> None:
    assert redact(text, secrets) == expected


def config_pairs(env: dict[str, str]) -> list[tuple[str, str]]:
    count = int(env["GIT_CONFIG_COUNT"])
    return [(env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"]) for i in range(count)]


def test_git_env_passes_http_header_only_as_config_value() -> None:
    env = git_env(GitHttp(headers=(HEADER,)))
    assert ("http.extraHeader", HEADER) in config_pairs(env)
    holders = [key for key, value in env.items() if HEADER in value]
    assert len(holders) == 1
    assert holders[0].startswith("GIT_CONFIG_VALUE_")


def test_git_env_passes_every_header() -> None:
    env = git_env(GitHttp(headers=("X-One: 1", "X-Two: 2")))
    headers = [value for key, value in config_pairs(env) if key == "http.extraHeader"]
    assert headers == ["X-One: 1", "X-Two: 2"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GIT_LFS_SKIP_SMUDGE", "1"),
        ("GIT_TERMINAL_PROMPT", "0"),
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_PROTOCOL_FROM_USER", "0"),
        ("LC_ALL", "C"),
    ],
)
def test_git_env_sets_isolating_variables(name: str, value: str) -> None:
    assert git_env()[name] == value


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("core.hooksPath", "/dev/null"),
        ("protocol.allow", "never"),
        ("protocol.https.allow", "always"),
        ("submodule.recurse", "false"),
        ("credential.helper", ""),
    ],
)
def test_git_env_sets_safe_config(key: str, value: str) -> None:
    assert (key, value) in config_pairs(git_env())


def test_git_env_without_headers_has_no_extra_header() -> None:
    assert "http.extraHeader" not in dict(config_pairs(git_env()))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GIT_DIR", "/tmp/elsewhere"),
        ("GIT_CONFIG_PARAMETERS", "'core.hooksPath'='/tmp/hooks'"),
        ("GIT_SSH_COMMAND", "touch /tmp/pwned"),
        ("GIT_CONFIG_KEY_99", "core.sshCommand"),
        ("SSH_ASKPASS", "/tmp/askpass"),
    ],
)
def test_git_env_drops_inherited_git_variables(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    env = git_env()
    assert value not in env.values()
    assert env.get(name) != value


def test_git_env_keeps_unrelated_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODER_ASSETS_TEST_MARKER", "kept")
    assert git_env()["CODER_ASSETS_TEST_MARKER"] == "kept"


class FakeRun:
    """Stands in for subprocess.run and records what git would have been given."""

    def __init__(self, returncode: int = 0, stderr: bytes = b"") -> None:
        self.returncode = returncode
        self.stderr = stderr
        self.calls: list[dict[str, Any]] = []

    def __call__(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        self.calls.append({"args": args, **kwargs})
        return subprocess.CompletedProcess(args, self.returncode, b"ok\n", self.stderr)


def test_run_git_keeps_http_header_out_of_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRun()
    monkeypatch.setattr(core_git.subprocess, "run", fake)
    assert (
        run_git(["ls-remote", "https://gitea.local/x.git"], http=GitHttp(headers=(HEADER,)))
        == "ok\n"
    )
    (call,) = fake.calls
    assert not [arg for arg in call["args"] if "s3cr3t" in arg or arg == "-c"]
    assert ("http.extraHeader", HEADER) in config_pairs(call["env"])
    assert call["stdin"] is subprocess.DEVNULL


def test_run_git_error_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = b"fatal: 'https://alice:hunter2@h/x' said no to s3cr3t-t0ken via " + HEADER.encode()
    monkeypatch.setattr(core_git.subprocess, "run", FakeRun(returncode=128, stderr=stderr))
    with pytest.raises(GitError) as raised:
        run_git(
            ["fetch"], http=GitHttp(headers=(HEADER,)), secrets=["s3cr3t-t0ken"], what="git fetch"
        )
    message = str(raised.value)
    assert "s3cr3t" not in message
    assert "hunter2" not in message
    assert message.startswith("git fetch failed (exit 128)")


def test_a_private_ca_bundle_reaches_git_as_ssl_ca_info():
    pairs = dict(config_pairs(git_env(GitHttp(ca_bundle="/etc/homelab/ca.pem"))))

    assert pairs["http.sslCAInfo"] == "/etc/homelab/ca.pem"
