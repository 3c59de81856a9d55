"""The one place where number, path, flag, time zone and maintenance window settings are read from
the environment. A bad value fails the code location's load with a message that names the
variable, the value and what is expected, instead of a bare `invalid literal for int()`."""

from __future__ import annotations

import os
from pathlib import Path
from zoneinfo import ZoneInfo

from coder_assets.core.deployment.window import (
    WINDOW_FORM,
    MaintenanceWindow,
    WindowFormatError,
    parse_window,
)
from coder_assets.core.errors import SettingError


def _raw(name: str) -> str:
    return os.environ.get(name, "").strip()


def int_setting(name: str, default: int, *, minimum: int = 1, maximum: int | None = None) -> int:
    """A whole-number setting in `[minimum, maximum]`, or `default` when unset or empty."""
    raw = _raw(name)
    if not raw:
        return default
    bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(
            f"{name} must be a whole number {bounds}, got {raw!r}; fix it or unset it to use "
            f"{default}"
        ) from None
    if value < minimum or (maximum is not None and value > maximum):
        raise SettingError(
            f"{name} must be a whole number {bounds}, got {raw!r}; fix it or unset it to use "
            f"{default}"
        )
    return value


def port_setting(name: str, default: int) -> int:
    """A TCP port number (1-65535)."""
    return int_setting(name, default, minimum=1, maximum=65535)


def float_setting(name: str, default: float, *, minimum: float = 0.0) -> float:
    """A number setting of at least `minimum`, or `default` when unset or empty."""
    raw = _raw(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(
            f"{name} must be a number of at least {minimum:g}, got {raw!r}; fix it or unset it "
            f"to use {default:g}"
        ) from None
    if not value >= minimum or value == float("inf"):
        raise SettingError(
            f"{name} must be a number of at least {minimum:g}, got {raw!r}; fix it or unset it "
            f"to use {default:g}"
        )
    return value


def path_setting(name: str, default: str | Path = "", *, folder: bool = False) -> str:
    """A path on this machine: absolute, or starting with `~`, which is expanded. Relative paths
    are refused because each Dagster process has its own working directory. With `folder`, a
    path that exists must be a folder. Unset or empty gives `default` (which may be empty)."""
    raw = _raw(name)
    if not raw:
        return str(Path(default).expanduser()) if str(default) else ""
    expected = "an absolute path (or one starting with ~)"
    if "\x00" in raw:
        raise SettingError(f"{name} must be {expected}, got {raw!r} (it holds a NUL byte)")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        raise SettingError(
            f"{name} must be {expected}, got {raw!r}; Dagster's processes each have their own "
            "working directory, so a relative path would mean different folders"
        )
    if folder and path.exists() and not path.is_dir():
        raise SettingError(f"{name} must name a folder, got {raw!r}, which is a file")
    return str(path)


def flag_setting(name: str, default: bool) -> bool:
    """An on/off setting: 1/true/yes/on or 0/false/no/off (any case), `default` when unset."""
    raw = _raw(name)
    if not raw:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingError(
        f"{name} must be 1 or 0 (or true/false, yes/no, on/off), got {raw!r}; fix it or unset it "
        f"to use the default ({'on' if default else 'off'})"
    )


def timezone_setting(name: str, default: str = "UTC") -> str:
    """An IANA time zone name such as `Europe/Berlin`, or `default` when unset."""
    raw = _raw(name)
    if not raw:
        return default
    try:
        ZoneInfo(raw)
    except (ValueError, KeyError):
        raise SettingError(
            f"{name} must be an IANA time zone name such as 'Europe/Berlin' or 'UTC', got "
            f"{raw!r}; fix it or unset it to use {default}"
        ) from None
    return raw


def window_setting(name: str, timezone: str = "UTC") -> MaintenanceWindow | None:
    """A maintenance window (coder_assets.core.deployment.window) in `timezone`, or None when
    unset."""
    raw = _raw(name)
    if not raw:
        return None
    try:
        return parse_window(raw, timezone)
    except WindowFormatError as exc:
        raise SettingError(
            f"{name} must be {WINDOW_FORM}; got {raw!r}: {exc}. Fix it, or unset it for no "
            "window (then nothing trains automatically)"
        ) from None
