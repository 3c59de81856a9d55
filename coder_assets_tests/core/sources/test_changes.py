"""What the change sensor does on one tick, and the JSON cursor it keeps."""

from __future__ import annotations

import pytest

from coder_assets.core.sources.changes import REMOVED_HISTORY, SensorCursor, plan_changes

NOW = "2024-05-01T12:00:00+00:00"
HEADS = {"homelab~api": "a" * 40, "homelab~web": "b" * 40}


def test_first_tick_requests_every_repo_and_adds_every_partition() -> None:
    plan = plan_changes(SensorCursor(), HEADS, set(), now=NOW)
    assert plan.added == ["homelab~api", "homelab~web"]
    assert plan.removed == []
    assert plan.changed == HEADS
    assert plan.cursor == SensorCursor(heads=HEADS)


def test_second_tick_without_change_requests_nothing() -> None:
    first = plan_changes(SensorCursor(), HEADS, set(), now=NOW)
    second = plan_changes(first.cursor, HEADS, set(HEADS), now=NOW)
    assert (second.added, second.removed, second.changed) == ([], [], {})
    assert second.cursor == first.cursor


def test_one_changed_head_requests_exactly_that_repo() -> None:
    current = {**HEADS, "homelab~web": "c" * 40}
    plan = plan_changes(SensorCursor(heads=HEADS), current, set(HEADS), now=NOW)
    assert plan.changed == {"homelab~web": "c" * 40}
    assert (plan.added, plan.removed) == ([], [])
    assert plan.cursor.heads == current


def test_new_repo_is_added_and_requested() -> None:
    current = {**HEADS, "alice~tool": "d" * 40}
    plan = plan_changes(SensorCursor(heads=HEADS), current, set(HEADS), now=NOW)
    assert plan.added == ["alice~tool"]
    assert plan.changed == {"alice~tool": "d" * 40}


def test_deleted_repo_is_removed_and_recorded_with_timestamp() -> None:
    current = {"homelab~api": HEADS["homelab~api"]}
    plan = plan_changes(SensorCursor(heads=HEADS), current, set(HEADS), now=NOW)
    assert plan.removed == ["homelab~web"]
    assert plan.changed == {}
    assert plan.cursor.removed == [{"repo": "homelab~web", "removed_at": NOW, "reason": "deleted"}]
    assert "homelab~web" not in plan.cursor.heads


def test_removed_history_keeps_earlier_entries_most_recent_last() -> None:
    earlier = {"repo": "old~gone", "removed_at": "2024-01-01T00:00:00+00:00"}
    cursor = SensorCursor(heads=HEADS, removed=[earlier])
    plan = plan_changes(cursor, {}, set(HEADS), now=NOW)
    assert plan.cursor.removed == [
        earlier,
        {"repo": "homelab~api", "removed_at": NOW, "reason": "deleted"},
        {"repo": "homelab~web", "removed_at": NOW, "reason": "deleted"},
    ]


def test_unreadable_repo_is_neither_removed_nor_requested_and_keeps_its_sha() -> None:
    current = {"homelab~api": "e" * 40}
    plan = plan_changes(
        SensorCursor(heads=HEADS), current, set(HEADS), unreadable={"homelab~web"}, now=NOW
    )
    assert plan.removed == []
    assert plan.changed == {"homelab~api": "e" * 40}
    assert plan.cursor.heads == {"homelab~api": "e" * 40, "homelab~web": HEADS["homelab~web"]}
    assert plan.cursor.removed == []


def test_unreadable_repo_unknown_to_cursor_is_not_added_to_heads() -> None:
    plan = plan_changes(SensorCursor(), {}, {"homelab~web"}, unreadable={"homelab~web"})
    assert (plan.added, plan.removed, plan.changed) == ([], [], {})
    assert plan.cursor.heads == {}


@pytest.mark.parametrize(
    ("materialized", "changed"),
    [
        pytest.param(HEADS, {}, id="all-materialized-at-head"),
        pytest.param(
            {"homelab~api": HEADS["homelab~api"]},
            {"homelab~web": HEADS["homelab~web"]},
            id="one-materialized",
        ),
        pytest.param(
            {"homelab~api": "0" * 40, "homelab~web": None}, HEADS, id="materialized-elsewhere"
        ),
        pytest.param({}, HEADS, id="nothing-materialized"),
    ],
)
def test_materialized_sha_at_head_suppresses_request_when_cursor_does_not_know_repo(
    materialized: dict[str, str | None], changed: dict[str, str]
) -> None:
    plan = plan_changes(SensorCursor(), HEADS, set(HEADS), materialized=materialized, now=NOW)
    assert plan.changed == changed
    assert plan.cursor.heads == HEADS


def test_cursor_sha_wins_over_materialized_sha() -> None:
    cursor = SensorCursor(heads={"homelab~api": "0" * 40})
    current = {"homelab~api": "a" * 40}
    plan = plan_changes(cursor, current, {"homelab~api"}, materialized=current, now=NOW)
    assert plan.changed == current


def test_removed_history_is_capped_keeping_the_most_recent() -> None:
    old = [{"repo": f"old~r{i}", "removed_at": "2024-01-01"} for i in range(REMOVED_HISTORY)]
    partitions = {f"gone~r{i}" for i in range(3)}
    plan = plan_changes(SensorCursor(removed=old), {}, partitions, now=NOW)
    assert len(plan.cursor.removed) == REMOVED_HISTORY
    assert plan.cursor.removed[-3:] == [
        {"repo": f"gone~r{i}", "removed_at": NOW, "reason": "deleted"} for i in range(3)
    ]
    assert plan.cursor.removed[0] == {"repo": "old~r3", "removed_at": "2024-01-01"}


def test_plan_does_not_mutate_the_input_cursor() -> None:
    cursor = SensorCursor(heads=dict(HEADS), removed=[])
    plan_changes(cursor, {}, set(HEADS), now=NOW)
    assert cursor == SensorCursor(heads=HEADS, removed=[])


@pytest.mark.parametrize(
    "cursor",
    [
        SensorCursor(),
        SensorCursor(heads=HEADS),
        SensorCursor(heads=HEADS, removed=[{"repo": "old~gone", "removed_at": NOW}]),
        SensorCursor(heads={"jürgen~größe": "f" * 40}),
    ],
)
def test_cursor_json_round_trips(cursor: SensorCursor) -> None:
    assert SensorCursor.from_json(cursor.to_json()) == cursor


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "not json",
        "{",
        "null",
        "[]",
        "42",
        '"heads"',
        "{}",
        '{"heads": []}',
        '{"heads": "abc"}',
        '{"version": 1}',
    ],
)
def test_garbage_or_empty_cursor_gives_empty_cursor(text: str | None) -> None:
    assert SensorCursor.from_json(text) == SensorCursor()


def test_cursor_drops_removed_entries_that_are_not_objects() -> None:
    text = '{"heads": {"a~b": "1"}, "removed": ["x", 3, {"repo": "c~d", "removed_at": "t"}]}'
    assert SensorCursor.from_json(text) == SensorCursor(
        heads={"a~b": "1"}, removed=[{"repo": "c~d", "removed_at": "t"}]
    )


@pytest.mark.parametrize(
    "text",
    [
        '{"heads": {}, "removed": 5}',
        '{"heads": {}, "removed": null}',
        '{"heads": {}, "removed": true}',
    ],
)
def test_cursor_with_non_list_removed_does_not_raise(text: str) -> None:
    assert SensorCursor.from_json(text).heads == {}
