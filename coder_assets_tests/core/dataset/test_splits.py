"""Tests for cluster-level train/valid/test splits (coder_assets.core.dataset.splits)."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from coder_assets.core.dataset.splits import SPLITS, SplitConfig, assign_splits, split_of


def _ids(n: int, prefix: str = "cluster") -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


def test_fractions_are_respected_within_one_percent_on_20k_clusters() -> None:
    config = SplitConfig(valid_fraction=0.1, test_fraction=0.05)
    counts = Counter(split_of(cluster_id, config) for cluster_id in _ids(20_000))
    assert set(counts) == set(SPLITS)
    assert counts["valid"] / 20_000 == pytest.approx(0.10, abs=0.01)
    assert counts["test"] / 20_000 == pytest.approx(0.05, abs=0.01)
    assert counts["train"] / 20_000 == pytest.approx(0.85, abs=0.01)


def test_zero_fractions_put_everything_in_train() -> None:
    config = SplitConfig(valid_fraction=0.0, test_fraction=0.0)
    assert {split_of(c, config) for c in _ids(2_000)} == {"train"}


def test_adding_clusters_never_moves_existing_ones() -> None:
    config = SplitConfig()
    before = assign_splits({f"s{i}": f"c{i % 700}" for i in range(2_000)}, config)
    grown = {f"s{i}": f"c{i % 700}" for i in range(2_000)}
    grown.update({f"new-s{i}": f"new-c{i}" for i in range(3_000)})
    after = assign_splits(grown, config)
    assert {sample: after[sample] for sample in before} == before


def test_same_input_gives_same_splits_and_salt_changes_them() -> None:
    clusters = {f"s{i}": f"c{i // 3}" for i in range(3_000)}
    first = assign_splits(clusters, SplitConfig())
    assert assign_splits(dict(reversed(list(clusters.items()))), SplitConfig()) == first
    reshuffled = assign_splits(clusters, SplitConfig(salt="coder-assets-v2"))
    assert reshuffled != first


def test_split_is_sha256_of_salt_and_cluster_id_not_process_hash() -> None:
    # Python's hash() changes per process; the split must not, or published splits would move
    config = SplitConfig(valid_fraction=0.3, test_fraction=0.3)
    digest = hashlib.sha256(b"coder-assets-v1\x00c0").digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    expected = "test" if u < 0.3 else "valid" if u < 0.6 else "train"
    assert split_of("c0", config) == expected


def test_a_cluster_never_straddles_splits() -> None:
    clusters = {f"s{i}": f"c{i % 50}" for i in range(5_000)}
    committed = {f"s{i}": "2026-01-01T00:00:00+00:00" for i in range(5_000)}
    committed["s7"] = "2026-06-01T00:00:00+00:00"  # one recent member of cluster c7
    for config in (
        SplitConfig(valid_fraction=0.3, test_fraction=0.3),
        SplitConfig(test_after="2026-03-01"),
    ):
        splits = assign_splits(clusters, config, committed)
        per_cluster: dict[str, set[str]] = {}
        for sample_id, cluster_id in clusters.items():
            per_cluster.setdefault(cluster_id, set()).add(splits[sample_id])
        assert all(len(found) == 1 for found in per_cluster.values())
        assert set(splits) == set(clusters)


def test_time_based_split_sends_clusters_with_any_recent_member_to_test() -> None:
    config = SplitConfig(valid_fraction=0.0, test_fraction=0.0, test_after="2026-03-01")
    clusters = {"old-a": "A", "new-a": "A", "old-b": "B", "undated": "C", "same-day": "D"}
    committed = {
        "old-a": "2025-11-02T10:00:00+00:00",
        "new-a": "2026-03-02T00:00:00Z",
        "old-b": "2026-02-28T23:59:59",
        "same-day": "2026-03-01T23:59:59+00:00",
    }
    assert assign_splits(clusters, config, committed) == {
        "old-a": "test",
        "new-a": "test",
        "old-b": "train",
        "undated": "train",
        "same-day": "train",
    }


@pytest.mark.parametrize(
    ("test_after", "committed_at", "expected"),
    [
        ("2026-03-01", "2026-03-01T23:59:59+00:00", "train"),
        ("2026-03-01", "2026-03-02T00:00:00+00:00", "test"),
        ("2026-03-01", "2026-03-02T00:30:00+01:00", "train"),  # 23:30 UTC on the cutoff day
        ("2026-03-01T12:00:00+00:00", "2026-03-01T12:00:00+00:00", "train"),
        ("2026-03-01T12:00:00+00:00", "2026-03-01T12:00:01+00:00", "test"),
        ("2026-03-01", None, "train"),
    ],
)
def test_split_of_time_cutoff(test_after: str, committed_at: str | None, expected: str) -> None:
    config = SplitConfig(valid_fraction=0.0, test_fraction=0.0, test_after=test_after)
    assert split_of("cluster", config, committed_at=committed_at) == expected


def test_without_test_after_commit_times_are_ignored() -> None:
    config = SplitConfig()
    clusters = {f"s{i}": f"c{i}" for i in range(500)}
    committed = dict.fromkeys(clusters, "2099-01-01T00:00:00+00:00")
    assert assign_splits(clusters, config, committed) == assign_splits(clusters, config)


def test_time_based_split_keeps_hash_splits_for_old_clusters() -> None:
    plain = SplitConfig(valid_fraction=0.2, test_fraction=0.1)
    timed = SplitConfig(valid_fraction=0.2, test_fraction=0.1, test_after="2026-03-01")
    ids = _ids(1_000)
    committed = "2025-01-01T00:00:00+00:00"
    assert [split_of(c, timed, committed_at=committed) for c in ids] == [
        split_of(c, plain) for c in ids
    ]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"valid_fraction": -0.1}, "valid_fraction"),
        ({"valid_fraction": 1.0}, "valid_fraction"),
        ({"test_fraction": float("nan")}, "test_fraction"),
        ({"test_fraction": "0.1"}, "test_fraction"),
        ({"test_fraction": True}, "test_fraction"),
        ({"valid_fraction": 0.6, "test_fraction": 0.4}, "valid_fraction \\+ SplitConfig"),
        ({"salt": ""}, "salt"),
        ({"test_after": "last tuesday"}, "test_after"),
    ],
)
def test_bad_config_raises_value_error_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SplitConfig(**kwargs)


def test_bad_commit_time_names_the_sample() -> None:
    config = SplitConfig(test_after="2026-03-01")
    with pytest.raises(ValueError, match="s1"):
        assign_splits({"s1": "c1"}, config, {"s1": "yesterday"})
