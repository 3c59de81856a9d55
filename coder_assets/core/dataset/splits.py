"""Train / valid / test assignment by near-duplicate cluster.

Splits are decided per cluster (a group of near-duplicate samples from the dedup stage), never per
sample, so near-copies of a test sample cannot sit in train. A cluster's split comes from a stable
hash: sha256 of the salt, a NUL separator and the cluster id, whose first 8 bytes read as a
fraction u in [0, 1):

    u < test_fraction                                   -> "test"
    test_fraction <= u < test_fraction + valid_fraction -> "valid"
    otherwise                                           -> "train"

The hash depends on nothing but the salt and the cluster id, so adding samples, clusters or whole
repositories never moves an existing cluster, and every run on every machine agrees. Changing the
salt reshuffles everything (a new dataset version); changing a fraction moves only the clusters
whose u lies between the old and the new boundary.

Time-based split: with `test_after` set, a cluster goes to test when ANY of its members was
committed after the cutoff, wherever its hash falls; the other clusters are split by hash as above
(set `test_fraction=0` for a test split that is purely "newer than the cutoff"). Deciding on the
newest member keeps the rule per cluster, so a cluster never straddles train and test even when an
old file and its recent near-copy share it. A date-only cutoff (`2026-03-01`) means "after that
UTC day": commits from 2026-03-02T00:00Z on. Timestamps without an offset are read as UTC.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

__all__ = ["SPLITS", "SplitConfig", "assign_splits", "split_of"]

SPLITS: tuple[str, ...] = ("train", "valid", "test")

_HASH_BYTES = 8


@dataclass(frozen=True)
class SplitConfig:
    """How clusters are divided into train, valid and test."""

    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    salt: str = "coder-assets-v1"
    test_after: str | None = None  # ISO date or datetime; commits after it go to test

    def __post_init__(self) -> None:
        for name in ("valid_fraction", "test_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"SplitConfig.{name} must be a number, got {value!r}")
            if not math.isfinite(value) or not 0.0 <= value < 1.0:
                raise ValueError(f"SplitConfig.{name} must be in [0, 1), got {value!r}")
        if self.valid_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                "SplitConfig.valid_fraction + SplitConfig.test_fraction must be below 1 so that "
                f"train gets something, got {self.valid_fraction} + {self.test_fraction}"
            )
        if not isinstance(self.salt, str) or not self.salt:
            raise ValueError(f"SplitConfig.salt must be a non-empty string, got {self.salt!r}")
        if self.test_after is not None:
            _cutoff(self.test_after)  # raises a ValueError naming test_after


def _cutoff(test_after: str) -> datetime:
    """The first instant that counts as "after" `test_after`."""
    if not isinstance(test_after, str):
        raise ValueError(f"SplitConfig.test_after must be an ISO date string, got {test_after!r}")
    try:
        day = date.fromisoformat(test_after)
    except ValueError:
        pass
    else:
        return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    try:
        instant = datetime.fromisoformat(test_after)
    except ValueError as exc:
        raise ValueError(
            f"SplitConfig.test_after must be an ISO date (2026-03-01) or datetime, "
            f"got {test_after!r}"
        ) from exc
    # "after" a datetime is strictly later; one microsecond on turns it into ">= cutoff"
    return _aware(instant) + timedelta(microseconds=1)


def _aware(instant: datetime) -> datetime:
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)


def _commit_time(committed_at: str, what: str) -> datetime:
    try:
        return _aware(datetime.fromisoformat(committed_at))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"committed_at of {what} must be an ISO datetime, got {committed_at!r}"
        ) from exc


def _bucket(cluster_id: str, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}\x00{cluster_id}".encode()).digest()
    return int.from_bytes(digest[:_HASH_BYTES], "big") / float(1 << (8 * _HASH_BYTES))


def _split_by_hash(cluster_id: str, config: SplitConfig) -> str:
    u = _bucket(cluster_id, config.salt)
    if u < config.test_fraction:
        return "test"
    if u < config.test_fraction + config.valid_fraction:
        return "valid"
    return "train"


def split_of(cluster_id: str, config: SplitConfig, *, committed_at: str | None = None) -> str:
    """The split ("train", "valid" or "test") of one cluster.

    `committed_at` is the newest commit time among the cluster's members; it only matters when
    `config.test_after` is set.
    """
    if config.test_after is not None and committed_at is not None:
        if _commit_time(committed_at, f"cluster {cluster_id!r}") >= _cutoff(config.test_after):
            return "test"
    return _split_by_hash(cluster_id, config)


def assign_splits(
    clusters: Mapping[str, str],
    config: SplitConfig,
    committed_at: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Map each sample id to its split; every member of a cluster gets the cluster's split.

    `clusters` maps sample id -> cluster id; `committed_at` maps sample id -> ISO commit time
    (samples without one never count as after the cutoff).
    """
    newest: dict[str, datetime] = {}
    if config.test_after is not None and committed_at:
        for sample_id, cluster_id in clusters.items():
            stamp = committed_at.get(sample_id)
            if stamp is None:
                continue
            when = _commit_time(stamp, f"sample {sample_id!r}")
            if cluster_id not in newest or when > newest[cluster_id]:
                newest[cluster_id] = when
    by_cluster: dict[str, str] = {}
    for cluster_id in clusters.values():
        if cluster_id not in by_cluster:
            when = newest.get(cluster_id)
            by_cluster[cluster_id] = split_of(
                cluster_id, config, committed_at=when.isoformat() if when else None
            )
    return {sample_id: by_cluster[cluster_id] for sample_id, cluster_id in clusters.items()}
