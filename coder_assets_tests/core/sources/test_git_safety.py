"""Git safety, each rule proven against real git: refused transports, no hooks, no LFS smudge,
credentials never written to disk."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from coder_assets.core.errors import GitError, UnsafeRemoteError
from coder_assets.core.sources.git import GitHttp, fetch_mirror, git_env, run_git
from coder_assets_tests.conftest import add_symlink, commit, init_repo


@pytest.mark.parametrize(
    "url_template",
    [
        "ext::sh -c touch% {marker}",
        "ext::sh -c 'touch {marker}'",
        "fd::0",
        "-u touch {marker}",
    ],
)
def test_ext_and_other_transports_are_refused_before_git_runs(tmp_path, url_template):
    marker = tmp_path / "pwned"
    url = url_template.format(marker=marker)

    with pytest.raises(UnsafeRemoteError, match="refusing clone URL"):
        fetch_mirror(url, tmp_path / "mirror.git", "main")

    assert not marker.exists()
    assert not (tmp_path / "mirror.git").exists()


def test_git_itself_refuses_ext_even_if_a_url_slipped_through(tmp_path):
    marker = tmp_path / "pwned"
    mirror = init_repo(tmp_path / "mirror.git", bare=True)

    with pytest.raises(GitError, match="transport 'ext' not allowed"):
        run_git(["fetch", f"ext::sh -c touch% {marker}", "main"], cwd=mirror)

    assert not marker.exists()


def test_hooks_in_the_mirror_never_run(tmp_path):
    source = init_repo(tmp_path / "src")
    commit(source, {"a.py": "a = 1\n"})
    mirror = tmp_path / "mirror.git"
    fetch_mirror(str(source), mirror, "main")
    marker = tmp_path / "hook-ran"
    hooks = mirror / "hooks"
    hooks.mkdir(exist_ok=True)
    for name in ("reference-transaction", "post-checkout", "post-merge", "pre-auto-gc"):
        hook = hooks / name
        hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
        hook.chmod(hook.stat().st_mode | stat.S_IXUSR)

    commit(source, {"b.py": "b = 2\n"})
    result = fetch_mirror(str(source), mirror, "main")

    assert result.action == "fetched"
    assert not marker.exists()


def test_lfs_is_never_smudged_and_the_pointer_stays_a_pointer(tmp_path):
    env = git_env()
    assert env["GIT_LFS_SKIP_SMUDGE"] == "1"
    source = init_repo(tmp_path / "src")
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:" + "b" * 64 + "\nsize 9\n"
    commit(source, {"weights.bin": pointer, ".gitattributes": "*.bin filter=lfs -text\n"})

    mirror = tmp_path / "mirror.git"
    fetch_mirror(str(source), mirror, "main")

    assert run_git(["cat-file", "-p", "HEAD:weights.bin"], cwd=mirror) == pointer
    assert not (mirror / "lfs").exists()


def test_headers_travel_in_the_environment_not_in_argv_or_config(tmp_path, monkeypatch):
    seen_argv: list[list[str]] = []
    real_run = __import__("subprocess").run

    def spy(args, **kwargs):
        seen_argv.append(list(args))
        return real_run(args, **kwargs)

    monkeypatch.setattr("coder_assets.core.sources.git.subprocess.run", spy)
    source = init_repo(tmp_path / "src")
    commit(source, {"a.py": "a = 1\n"})
    secret = "Authorization: token " + "ab" * 20

    fetch_mirror(str(source), tmp_path / "mirror.git", "main", http=GitHttp(headers=(secret,)))

    assert seen_argv and all(secret not in " ".join(argv) for argv in seen_argv)
    assert "ab" * 20 not in (tmp_path / "mirror.git" / "config").read_text()


def test_an_interrupted_first_clone_leaves_no_half_mirror(tmp_path):
    missing = tmp_path / "does-not-exist"
    mirror = tmp_path / "mirror.git"

    with pytest.raises(GitError, match="git fetch"):
        fetch_mirror(str(missing), mirror, "main")

    assert not mirror.exists()
    assert not any(".staging-" in p.name for p in tmp_path.iterdir())


def test_symlinks_are_never_checked_out(tmp_path):
    source = init_repo(tmp_path / "src")
    add_symlink(source, "passwd", "/etc/passwd")
    commit(source, {"a.py": "a = 1\n"}, "Add link")
    mirror = tmp_path / "mirror.git"

    fetch_mirror(str(source), mirror, "main")

    # A bare mirror has no work tree: the link exists only as a blob holding its target path.
    assert run_git(["cat-file", "-p", "HEAD:passwd"], cwd=mirror) == "/etc/passwd"
    assert not any(p.is_symlink() for p in Path(mirror).rglob("*"))
