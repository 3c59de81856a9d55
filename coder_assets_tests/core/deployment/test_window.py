"""The maintenance window: parsing, openings (across midnight, several days, time zones) and the
settings that fail the code location's load on a bad value."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from coder_assets.core.deployment.window import WindowFormatError, parse_window
from coder_assets.core.errors import SettingError
from coder_assets.settings import flag_setting, timezone_setting, window_setting

# 2026-12-04 is a Friday.
FRI_NOON = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _moment(day: int, hour: int, minute: int = 0) -> datetime:
    """A moment in UTC in the week from Monday 2026-11-30 (day 0); day 7 is the next Monday."""
    return datetime(2026, 11, 30, hour, minute, tzinfo=UTC) + timedelta(days=day)


MON, TUE, WED, THU, FRI, SAT, SUN = range(7)


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        (_moment(SUN, 0, 59), False),
        (_moment(SUN, 1, 0), True),
        (_moment(SUN, 6, 59), True),
        (_moment(SUN, 7, 0), False),
        (_moment(SAT, 3, 0), False),
        (_moment(MON, 3, 0), False),
    ],
)
def test_sunday_window_holds_only_its_hours(moment, inside):
    window = parse_window("Sun 01:00-07:00")

    assert (window.opened_at(moment) is not None) is inside


def test_window_crossing_midnight_opens_on_its_day_and_closes_the_next():
    window = parse_window("Sat 22:00-02:00")

    assert window.opened_at(_moment(SAT, 21, 59)) is None
    assert window.opened_at(_moment(SAT, 23, 0)) == _moment(SAT, 22, 0)
    assert window.opened_at(_moment(SUN, 1, 59)) == _moment(SAT, 22, 0)
    assert window.opened_at(_moment(SUN, 2, 0)) is None
    # Sunday night into Monday wraps the week.
    assert parse_window("Sun 23:00-01:00").opened_at(_moment(7, 0, 30)) == _moment(SUN, 23, 0)


def test_several_days_each_open_their_own_window():
    window = parse_window("Sat,Sun 01:00-07:00")

    assert window.opened_at(_moment(SAT, 2, 0)) == _moment(SAT, 1, 0)
    assert window.opened_at(_moment(SUN, 2, 0)) == _moment(SUN, 1, 0)
    assert window.opened_at(_moment(FRI, 2, 0)) is None


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("Mon-Fri 02:00-05:00", {MON, TUE, WED, THU, FRI}),
        ("Fri-Mon 02:00-05:00", {FRI, SAT, SUN, MON}),
        ("daily 02:00-05:00", set(range(7))),
        ("sun,WED 02:00-05:00", {SUN, WED}),
    ],
)
def test_day_ranges_and_names(text, days):
    assert parse_window(text).days == days


def test_window_follows_its_time_zone():
    window = parse_window("Sun 01:00-07:00", "Europe/Berlin")

    # 00:30 UTC on a December Sunday is 01:30 in Berlin.
    assert window.opened_at(_moment(SUN, 0, 30)) == _moment(SUN, 0, 0)
    assert window.opened_at(_moment(SUN, 6, 30)) is None


def test_next_opening_is_the_coming_one():
    window = parse_window("Sun 01:00-07:00")

    assert window.next_opening(FRI_NOON) == _moment(SUN, 1, 0)
    assert window.next_opening(_moment(SUN, 2, 0)) == _moment(SUN + 7, 1, 0)


def test_always_is_one_window_that_never_closes():
    window = parse_window("always")

    assert window.opened_at(FRI_NOON) == window.opened_at(_moment(SUN, 3, 0)) is not None
    assert window.next_opening(FRI_NOON) is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "expected days and a time range"),
        ("Sun", "expected days and a time range"),
        ("Sun 1-7", "expected days and a time range"),
        ("Funday 01:00-07:00", "'Funday' is not a day"),
        ("Sun 25:00-07:00", "'25:00' is not a time of day"),
        ("Sun 01:61-07:00", "'01:61' is not a time of day"),
        ("Sun 01:00-01:00", "opens and closes at the same time"),
        ("Sat,,Sun 01:00-07:00", "empty day"),
    ],
)
def test_bad_windows_say_what_is_wrong(text, why):
    with pytest.raises(WindowFormatError, match=why):
        parse_window(text)


def test_unknown_time_zone_is_refused():
    with pytest.raises(WindowFormatError, match="Mars/Olympus"):
        parse_window("Sun 01:00-07:00", "Mars/Olympus")


def test_window_setting_names_the_variable_the_value_and_the_form(monkeypatch):
    monkeypatch.setenv("CODER_ASSETS_MAINTENANCE_WINDOW", "Sun 01:00-31:00")

    with pytest.raises(SettingError) as raised:
        window_setting("CODER_ASSETS_MAINTENANCE_WINDOW")

    message = str(raised.value)
    assert "CODER_ASSETS_MAINTENANCE_WINDOW" in message
    assert "'Sun 01:00-31:00'" in message and "'31:00' is not a time of day" in message
    assert "'Sun 01:00-07:00'" in message and "'always'" in message


def test_unset_window_setting_is_no_window(monkeypatch):
    monkeypatch.delenv("CODER_ASSETS_MAINTENANCE_WINDOW", raising=False)

    assert window_setting("CODER_ASSETS_MAINTENANCE_WINDOW") is None


def test_timezone_and_flag_settings_refuse_bad_values(monkeypatch):
    monkeypatch.setenv("CODER_ASSETS_TIMEZONE", "Europe/Atlantis")
    monkeypatch.setenv("CODER_ASSETS_AUTO_TRAIN", "maybe")

    with pytest.raises(SettingError, match="CODER_ASSETS_TIMEZONE.*'Europe/Atlantis'"):
        timezone_setting("CODER_ASSETS_TIMEZONE")
    with pytest.raises(SettingError, match="CODER_ASSETS_AUTO_TRAIN must be 1 or 0.*'maybe'"):
        flag_setting("CODER_ASSETS_AUTO_TRAIN", True)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CODER_ASSETS_MAINTENANCE_WINDOW": "Sunday 01:00-07:00"}, "'Sunday' is not a day"),
        ({"CODER_ASSETS_AUTO_TRAIN": "1"}, "CODER_ASSETS_AUTO_TRAIN is on but"),
    ],
)
def test_bad_automation_settings_fail_the_code_location_load(env, expected, tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CODER_ASSETS_")}
    clean["CODER_ASSETS_HOME"] = str(tmp_path)
    loaded = subprocess.run(
        [sys.executable, "-c", "import coder_assets.definitions"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert loaded.returncode != 0
    assert "SettingError" in loaded.stderr and expected in loaded.stderr
