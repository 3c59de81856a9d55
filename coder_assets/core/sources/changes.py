"""What the change sensor does on one tick, decided from plain data: which partitions to add and
remove, and which repos changed since the last tick."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

CURSOR_VERSION = 1
REMOVED_HISTORY = 50


@dataclass(frozen=True)
class SensorCursor:
    """The sensor's memory: the head SHA it last acted on per partition key, and the partitions it
    removed (most recent last)."""

    heads: dict[str, str] = field(default_factory=dict)
    removed: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {"version": CURSOR_VERSION, "heads": self.heads, "removed": self.removed},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> SensorCursor:
        """Parse a cursor; an empty or unreadable cursor starts afresh rather than failing."""
        if not text:
            return cls()
        try:
            data = json.loads(text)
        except ValueError:
            return cls()
        if not isinstance(data, dict) or not isinstance(data.get("heads"), dict):
            return cls()
        heads = {str(k): str(v) for k, v in data["heads"].items()}
        raw_removed = data.get("removed")
        removed = (
            [r for r in raw_removed if isinstance(r, dict)] if isinstance(raw_removed, list) else []
        )
        return cls(heads=heads, removed=removed)


@dataclass(frozen=True)
class ChangePlan:
    added: list[str]
    removed: list[str]
    changed: dict[str, str]  # partition key -> head SHA to snapshot
    cursor: SensorCursor


def plan_changes(
    cursor: SensorCursor,
    current: Mapping[str, str],
    partitions: set[str],
    *,
    unreadable: set[str] = frozenset(),
    materialized: Mapping[str, str | None] | None = None,
    skipped: Mapping[str, str] | None = None,
    now: str = "",
) -> ChangePlan:
    """Plan one tick.

    `current` maps the partition key of every repo to snapshot to its head SHA; `unreadable`
    holds keys of repos that exist but whose head could not be read (neither removed nor run);
    `materialized` gives, for keys the cursor does not know, the SHA of their latest snapshot, so
    a repo already snapshotted at its head is not run again after a cursor reset; `skipped` maps
    keys of repos the source lists but the filter rule excludes to the reason, which the removal
    history records ("deleted" for keys the source no longer lists).
    """
    materialized = materialized or {}
    present = set(current) | set(unreadable)
    added = sorted(set(current) - partitions)
    removed = sorted(partitions - present)
    changed: dict[str, str] = {}
    for key in sorted(current):
        known = cursor.heads.get(key, materialized.get(key))
        if current[key] != known:
            changed[key] = current[key]
    heads = dict(current)
    for key in unreadable:
        if key in cursor.heads:
            heads[key] = cursor.heads[key]
    skipped = skipped or {}
    history = cursor.removed + [
        {"repo": key, "removed_at": now, "reason": skipped.get(key, "deleted")} for key in removed
    ]
    return ChangePlan(
        added=added,
        removed=removed,
        changed=changed,
        cursor=SensorCursor(heads=heads, removed=history[-REMOVED_HISTORY:]),
    )
