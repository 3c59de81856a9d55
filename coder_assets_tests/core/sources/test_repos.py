"""Partition keys of repositories and the rule that decides which repositories are snapshotted."""

from __future__ import annotations

import pytest

from coder_assets.core.errors import PartitionKeyError
from coder_assets.core.sources.repos import (
    RepoFilterRule,
    RepoRef,
    parse_partition_key,
    partition_key_for,
    select_repos,
)

# Substrings Dagster refuses in a partition key (dagster's INVALID_PARTITION_SUBSTRINGS), plus "/",
# which would read as a path in storage and in the UI.
FORBIDDEN_IN_KEY = ("...", "/", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")


def repo(name: str = "app", owner: str = "homelab", **flags: bool) -> RepoRef:
    return RepoRef(
        owner=owner,
        name=name,
        clone_url=f"https://gitea.local/{owner}/{name}.git",
        default_branch="main",
        **flags,
    )


ROUND_TRIP_NAMES = [
    ("homelab", "order-events-handler"),
    ("homelab", "app"),
    ("home.lab", "my_repo.v2"),
    ("a-b", "c_d.e-f"),
    ("alice", "my repo"),
    ("alice", "100%"),
    ("alice", "%2E"),
    ("alice", "a+b=c&d?e#f"),
    ("jürgen", "größe"),
    ("東京", "リポ"),
    ("alice", "..."),
    ("alice", "a..b"),
    ("alice", "a....b"),
    ("alice", ".hidden."),
    ("owner.", ".name"),
    ("..", ".."),
    ("alice", "sub/dir"),
    ("alice", "tab\there"),
]


@pytest.mark.parametrize(("owner", "name"), ROUND_TRIP_NAMES)
def test_partition_key_round_trips(owner: str, name: str) -> None:
    assert parse_partition_key(partition_key_for(owner, name)) == (owner, name)


@pytest.mark.parametrize(("owner", "name"), ROUND_TRIP_NAMES)
def test_partition_key_has_no_substring_dagster_forbids(owner: str, name: str) -> None:
    key = partition_key_for(owner, name)
    assert not [bad for bad in FORBIDDEN_IN_KEY if bad in key]


@pytest.mark.parametrize(
    ("owner", "name", "key"),
    [
        ("homelab", "order-events-handler", "homelab~order-events-handler"),
        ("home.lab", "my_repo.v2", "home.lab~my_repo.v2"),
    ],
)
def test_partition_key_of_gitea_name_is_readable(owner: str, name: str, key: str) -> None:
    assert partition_key_for(owner, name) == key


@pytest.mark.parametrize(("owner", "name"), [("alice", "a~b"), ("a~b", "repo"), ("~", "~")])
def test_partition_key_round_trips_names_with_tilde(owner: str, name: str) -> None:
    assert parse_partition_key(partition_key_for(owner, name)) == (owner, name)


@pytest.mark.parametrize(("owner", "name"), [("", "repo"), ("alice", ""), ("", "")])
def test_partition_key_for_refuses_empty_owner_or_name(owner: str, name: str) -> None:
    with pytest.raises(PartitionKeyError, match="empty"):
        partition_key_for(owner, name)


@pytest.mark.parametrize(
    "key",
    ["", "homelab", "homelab/app", "~app", "homelab~", "~", "a~b~c", "homelab-app"],
)
def test_malformed_partition_key_raises_naming_the_key(key: str) -> None:
    with pytest.raises(PartitionKeyError) as raised:
        parse_partition_key(key)
    assert repr(key) in str(raised.value)


def test_partition_key_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_partition_key("no-separator")


def test_repo_ref_partition_key_matches_partition_key_for() -> None:
    assert repo("my repo", owner="alice").partition_key == partition_key_for("alice", "my repo")


@pytest.mark.parametrize(
    ("flags", "rule", "reason"),
    [
        ({}, RepoFilterRule(), None),
        ({"empty": True}, RepoFilterRule(), "empty"),
        ({"empty": True}, RepoFilterRule(include_archived=True, include_mirrors=True), "empty"),
        ({"empty": True, "archived": True}, RepoFilterRule(), "empty"),
        ({"archived": True}, RepoFilterRule(), "archived"),
        ({"archived": True}, RepoFilterRule(include_archived=True), None),
        ({"mirror": True}, RepoFilterRule(), "mirror"),
        ({"mirror": True}, RepoFilterRule(include_mirrors=True), None),
        ({"archived": True, "mirror": True}, RepoFilterRule(include_archived=True), "mirror"),
        ({"fork": True}, RepoFilterRule(), None),
        ({"fork": True}, RepoFilterRule(include_forks=False), "fork"),
        ({"private": False}, RepoFilterRule(), None),
    ],
)
def test_skip_reason_follows_repo_flags_and_include_flags(
    flags: dict[str, bool], rule: RepoFilterRule, reason: str | None
) -> None:
    assert rule.skip_reason(repo(**flags)) == reason


@pytest.mark.parametrize(
    ("owner", "name", "patterns", "reason"),
    [
        ("homelab", "scratch", ("scratch",), "excluded_by_name"),
        ("homelab", "scratch", ("homelab/scratch",), "excluded_by_name"),
        ("homelab", "scratch", ("homelab/*",), "excluded_by_name"),
        ("homelab", "tmp-1", ("tmp-*",), "excluded_by_name"),
        ("homelab", "scratch", ("other/scratch",), None),
        ("homelab", "scratch", ("Scratch",), None),
        ("homelab", "scratchpad", ("scratch",), None),
        ("homelab", "scratch", (), None),
    ],
)
def test_skip_reason_excludes_names_by_full_name_or_name(
    owner: str, name: str, patterns: tuple[str, ...], reason: str | None
) -> None:
    rule = RepoFilterRule(exclude_names=patterns)
    assert rule.skip_reason(repo(name, owner=owner)) == reason


def test_select_repos_splits_kept_from_skipped_with_reasons() -> None:
    repos = [
        repo("app"),
        repo("old", archived=True),
        repo("upstream", mirror=True),
        repo("nothing", empty=True),
        repo("tool", owner="alice"),
        repo("scratch"),
    ]
    kept, skipped = select_repos(repos, RepoFilterRule(exclude_names=("scratch",)))
    assert [r.full_name for r in kept] == ["homelab/app", "alice/tool"]
    assert skipped == {
        "homelab/old": "archived",
        "homelab/upstream": "mirror",
        "homelab/nothing": "empty",
        "homelab/scratch": "excluded_by_name",
    }


def test_select_repos_of_nothing_is_empty() -> None:
    assert select_repos([], RepoFilterRule()) == ([], {})
