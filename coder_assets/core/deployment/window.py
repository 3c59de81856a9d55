"""The maintenance window: when the automatic triggers may start train_deploy_job (training stops
waterdeep's model server for hours). Written like `Sun 01:00-07:00`, `Sat,Sun 22:00-06:00`,
`Mon-Fri 02:00-05:00`, `daily 01:00-05:00` or `always`, in one time zone. The days name the day a
window opens on; a window whose end is not after its start closes on the next day."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
WINDOW_FORM = (
    "days and a time range like 'Sun 01:00-07:00', 'Sat,Sun 22:00-06:00', "
    "'Mon-Fri 02:00-05:00' or 'daily 01:00-05:00', or 'always'"
)
_WINDOW = re.compile(r"^(?P<days>\S+)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$")


class WindowFormatError(ValueError):
    """A maintenance window that does not parse; the message says which part and why."""


@dataclass(frozen=True)
class MaintenanceWindow:
    """Weekly openings (`days`, 0 = Monday) from `start` for `length`, in `timezone`; or, with
    `always`, one window that never closes."""

    text: str
    timezone: str = "UTC"
    days: frozenset[int] = frozenset()
    start: time = time(0, 0)
    length: timedelta = timedelta(0)
    always: bool = False

    def opened_at(self, now: datetime) -> datetime | None:
        """When the window that `now` falls in opened (UTC), or None when it is closed. With
        `always`, the Unix epoch: one window that holds every moment."""
        if self.always:
            return datetime.fromtimestamp(0, UTC)
        local = now.astimezone(ZoneInfo(self.timezone))
        for back in range(0, 8):
            opening = self._opening_on(local.date() - timedelta(days=back))
            if opening is not None and opening <= now < opening + self.length:
                return opening.astimezone(UTC)
        return None

    def next_opening(self, now: datetime) -> datetime | None:
        """The next time (UTC) after `now` that the window opens; None with `always`."""
        if self.always:
            return None
        local = now.astimezone(ZoneInfo(self.timezone))
        for ahead in range(0, 9):
            opening = self._opening_on(local.date() + timedelta(days=ahead))
            if opening is not None and opening > now:
                return opening.astimezone(UTC)
        raise AssertionError(f"window {self.text!r} has no opening within 8 days")

    def describe(self) -> str:
        return "always open" if self.always else f"{self.text} ({self.timezone})"

    def _opening_on(self, day) -> datetime | None:
        if day.weekday() not in self.days:
            return None
        return datetime.combine(day, self.start, tzinfo=ZoneInfo(self.timezone))


def _clock(text: str) -> time:
    hours, minutes = (int(part) for part in text.split(":"))
    if hours == 24 and minutes == 0:
        return time(0, 0)
    if not (0 <= hours <= 23 and 0 <= minutes <= 59):
        raise WindowFormatError(f"{text!r} is not a time of day (00:00 to 24:00)")
    return time(hours, minutes)


def _day(name: str) -> int:
    for index, known in enumerate(DAY_NAMES):
        if name.lower() == known.lower():
            return index
    raise WindowFormatError(f"{name!r} is not a day; use {', '.join(DAY_NAMES)}")


def _days(text: str) -> frozenset[int]:
    if text.lower() == "daily":
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.split(","):
        if not part:
            raise WindowFormatError(f"{text!r} has an empty day between commas")
        if "-" in part:
            first, _, last = part.partition("-")
            begin, end = _day(first), _day(last)
            days.update((begin + step) % 7 for step in range((end - begin) % 7 + 1))
        else:
            days.add(_day(part))
    return frozenset(days)


def parse_window(text: str, timezone: str = "UTC") -> MaintenanceWindow:
    """The window `text` describes, in `timezone`; WindowFormatError naming the bad part."""
    try:
        ZoneInfo(timezone)
    except (ValueError, KeyError) as exc:
        raise WindowFormatError(f"time zone {timezone!r} is unknown ({exc})") from None
    cleaned = " ".join(text.split())
    if cleaned.lower() == "always":
        return MaintenanceWindow(text=cleaned, timezone=timezone, always=True)
    match = _WINDOW.match(cleaned)
    if match is None:
        raise WindowFormatError(f"expected {WINDOW_FORM}")
    start, end = _clock(match["start"]), _clock(match["end"])
    start_minutes = start.hour * 60 + start.minute
    end_minutes = end.hour * 60 + end.minute
    if start_minutes == end_minutes:
        raise WindowFormatError(
            "the window opens and closes at the same time; use 'always' for no limit"
        )
    # A range whose end is not after its start runs past midnight into the next day.
    minutes = (end_minutes - start_minutes) % (24 * 60)
    return MaintenanceWindow(
        text=cleaned,
        timezone=timezone,
        days=_days(match["days"]),
        start=start,
        length=timedelta(minutes=minutes),
    )
