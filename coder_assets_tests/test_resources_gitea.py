"""GiteaResource against our Gitea API server (which follows Gitea 1.27.1's spec) and real git
smart HTTP through git http-backend."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from coder_assets.core.errors import (
    GiteaAuthError,
    GiteaNotFoundError,
    GiteaUnavailableError,
    GitError,
    RepoSourceError,
)
from coder_assets.core.sources.repos import RepoRef
from coder_assets.resources.gitea import GiteaResource
from coder_assets_tests.conftest import (
    GITEA_ORG,
    GITEA_TOKEN,
    commit,
    free_port,
    git,
    init_repo,
)


def _resource(gitea, **overrides) -> GiteaResource:
    settings = {
        "url": gitea.base_url,
        "token": GITEA_TOKEN,
        "org": GITEA_ORG,
        "page_size": 2,
        "max_retries": 2,
        "connect_timeout_seconds": 1.0,
        "read_timeout_seconds": 5.0,
        **overrides,
    }
    return GiteaResource(**settings)


def _source_repo(tmp_path: Path, name: str, files: dict[str, str] | None = None) -> Path:
    repo = init_repo(tmp_path / "src" / name)
    commit(repo, files or {"main.go": "package main\n"}, f"Add {name}")
    return repo


def test_list_repos_follows_pages_until_total_count(gitea, tmp_path):
    for index in range(5):
        gitea.add_repo(f"repo-{index}", _source_repo(tmp_path, f"repo-{index}"))

    repos = _resource(gitea).list_repos()

    assert sorted(r.name for r in repos) == [f"repo-{i}" for i in range(5)]
    pages = [p for m, p in gitea.requests if p.startswith(f"/api/v1/orgs/{GITEA_ORG}/repos")]
    assert len(pages) == 3
    assert all("limit=2" in p for p in pages)


def test_list_heads_skips_archived_empty_and_mirror_repos(gitea, tmp_path):
    active = gitea.add_repo("active", _source_repo(tmp_path, "active"))
    gitea.add_repo("old", _source_repo(tmp_path, "old"), archived=True)
    gitea.add_repo("upstream", _source_repo(tmp_path, "upstream"), mirror=True)
    gitea.add_repo("nothing-yet")

    listing = _resource(gitea).list_heads()

    assert [h.repo.name for h in listing.heads] == ["active"]
    assert listing.heads[0].sha == git(active, "rev-parse", "refs/heads/main")
    assert listing.skipped == {
        "homelab/nothing-yet": "empty",
        "homelab/old": "archived",
        "homelab/upstream": "mirror",
    }
    included = _resource(gitea, include_archived=True, include_mirrors=True).list_heads()
    assert sorted(h.repo.name for h in included.heads) == ["active", "old", "upstream"]


def test_server_errors_are_retried_with_backoff(gitea, tmp_path):
    gitea.add_repo("active", _source_repo(tmp_path, "active"))
    gitea.fail_next(2, status=503)

    repos = _resource(gitea).list_repos()

    assert [r.name for r in repos] == ["active"]


def test_gitea_down_raises_unavailable_naming_the_url(caplog):
    url = f"http://127.0.0.1:{free_port()}"
    resource = GiteaResource(url=url, token=GITEA_TOKEN, org=GITEA_ORG, max_retries=1)

    with caplog.at_level(logging.DEBUG), pytest.raises(GiteaUnavailableError) as raised:
        resource.list_repos()

    assert url in str(raised.value) and "2 attempts" in str(raised.value)
    assert GITEA_TOKEN not in str(raised.value) + caplog.text


def test_bad_token_gives_a_clear_error_without_the_token(gitea, tmp_path, caplog):
    gitea.add_repo("active", _source_repo(tmp_path, "active"))
    wrong = "0badc0de" * 5

    with caplog.at_level(logging.DEBUG), pytest.raises(GiteaAuthError) as raised:
        _resource(gitea, token=wrong).list_repos()

    message = str(raised.value)
    assert "401" in message and f"{gitea.base_url}/api/v1/orgs/{GITEA_ORG}/repos" in message
    assert "GITEA_TOKEN" in message
    everything = message + repr(raised.value) + caplog.text + str(raised.value.url)
    assert wrong not in everything and GITEA_TOKEN not in everything


def test_unknown_org_is_a_not_found_error(gitea):
    with pytest.raises(GiteaNotFoundError, match="404.*GITEA_ORG"):
        _resource(gitea, org="no-such-org").list_repos()


def test_fetch_sends_the_token_in_a_header_and_never_stores_it(gitea, tmp_path):
    source = _source_repo(tmp_path, "svc", {"a.py": "a = 1\n"})
    gitea.add_repo("svc", source)
    resource = _resource(gitea)
    repo = resource.get_repo(GITEA_ORG, "svc")
    mirror = tmp_path / "mirrors" / "homelab~svc.git"

    first = resource.fetch(repo, mirror)
    new_sha = commit(source, {"b.py": "b = 2\n"}, "Add b")
    gitea.push_from("svc", source)
    second = resource.fetch(repo, mirror)

    assert (first.action, second.action) == ("cloned", "fetched")
    assert second.head_sha == new_sha
    git_paths = [p for _, p in gitea.requests if ".git/" in p]
    assert git_paths and all(GITEA_TOKEN not in p for _, p in gitea.requests)
    assert f"token {GITEA_TOKEN}" in gitea.seen_authorization
    stored = b"".join(p.read_bytes() for p in mirror.rglob("*") if p.is_file())
    assert GITEA_TOKEN.encode() not in stored


def test_fetch_without_a_valid_token_fails_without_echoing_it(gitea, tmp_path):
    gitea.add_repo("svc", _source_repo(tmp_path, "svc"))
    good = _resource(gitea)
    repo = good.get_repo(GITEA_ORG, "svc")
    wrong = "0badc0de" * 5

    with pytest.raises(GitError) as raised:
        _resource(gitea, token=wrong).fetch(repo, tmp_path / "mirror.git")

    assert "check that GITEA_TOKEN is valid" in str(raised.value)
    assert wrong not in str(raised.value)
    assert not (tmp_path / "mirror.git").exists()


def test_token_is_never_sent_to_a_clone_url_on_another_host(gitea, tmp_path):
    resource = _resource(gitea)
    elsewhere = RepoRef(
        owner=GITEA_ORG,
        name="svc",
        clone_url="http://198.51.100.7/homelab/svc.git",
        default_branch="main",
    )
    with pytest.raises(RepoSourceError, match="only sent to GITEA_URL"):
        resource.fetch(elsewhere, tmp_path / "mirror.git")


def test_a_private_ca_bundle_is_used_for_the_api_and_for_git(gitea, tmp_path):
    bundle = tmp_path / "homelab-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")

    client = _resource(gitea, ca_bundle=str(bundle)).client

    assert client._session.verify == str(bundle)
    assert client.git_http().ca_bundle == str(bundle)
