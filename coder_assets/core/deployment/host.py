"""The waterdeep host guard and the waterdeep lock.

Training, evaluation and deployment run only on waterdeep, the Apple Silicon Mac Mini (M4 Pro,
48 GB). `check_host` compares the machine it runs on with a `HostExpectation` (identity, platform,
memory) and returns one problem per failed check; `require_host` raises instead, and is called
before anything expensive or disruptive (training, a server restart) happens.

`WaterdeepLock` serialises the steps that need the whole machine: serving and training cannot
run at the same time in 48 GB. It is an exclusive, non-blocking `flock` on a lock file whose
content names the holder, so a refused step can say who holds the machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from coder_assets.core.errors import CoderAssetsError

# The settings a person changes when a check fails; named in every problem message.
HOST_ENV = "CODER_ASSETS_WATERDEEP_HOST"
IDENTITY_FILE_ENV = "CODER_ASSETS_WATERDEEP_IDENTITY_FILE"
PLATFORM_ENV = "CODER_ASSETS_WATERDEEP_PLATFORM"
MIN_MEMORY_ENV = "CODER_ASSETS_WATERDEEP_MIN_MEMORY_GB"

_GIB = 1024**3
_MACHINE_ALIASES = {"arm64": "arm64", "aarch64": "arm64", "x86_64": "x86_64", "amd64": "x86_64"}


class HostGuardError(CoderAssetsError):
    """The machine is not the configured waterdeep host; nothing was started."""

    def __init__(self, message: str, *, problems: list[str], facts: HostFacts) -> None:
        super().__init__(message)
        self.problems = problems
        self.facts = facts


class WaterdeepBusyError(CoderAssetsError):
    """Another live process holds the waterdeep lock."""

    def __init__(self, message: str, *, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class HostExpectation:
    """What the waterdeep host must be. `identity_file`, when set and present, holds the host's
    name and is used instead of the hostname (for hosts whose hostname cannot be trusted)."""

    name: str = "waterdeep"
    platform: str = "darwin-arm64"
    min_memory_gb: float = 48.0
    identity_file: str = ""


@dataclass(frozen=True)
class HostFacts:
    """What this machine is: names, identity file content, `<os>-<machine>` platform, memory."""

    hostname: str
    fqdn: str
    identity: str
    platform: str
    memory_bytes: int

    @classmethod
    def gather(cls, identity_file: str = "") -> HostFacts:
        """The facts of the machine this runs on; `identity` is "" without an identity file."""
        name = socket.gethostname()
        return cls(
            hostname=name.split(".")[0].lower(),
            fqdn=socket.getfqdn().lower(),
            identity=_read_identity(identity_file),
            platform=current_platform(),
            memory_bytes=_physical_memory(),
        )

    @property
    def memory_gb(self) -> float:
        return self.memory_bytes / _GIB


def normalize_platform(value: str) -> str:
    """`<os>-<machine>` lowercased, with the machine's aliases folded (aarch64 → arm64,
    amd64 → x86_64)."""
    system, _, machine = value.strip().lower().partition("-")
    machine = _MACHINE_ALIASES.get(machine, machine)
    return f"{system}-{machine}" if machine else system


def current_platform() -> str:
    """This machine's platform, e.g. "darwin-arm64" or "linux-x86_64"."""
    return normalize_platform(f"{sys.platform}-{platform.machine()}")


def check_host(expect: HostExpectation, facts: HostFacts | None = None) -> list[str]:
    """One problem per failed check (identity, platform, memory); empty when this is the host.

    Each problem says which check failed, what was expected, what was found and which setting
    to change.
    """
    if facts is None:
        facts = HostFacts.gather(expect.identity_file)
    problems: list[str] = []
    wanted = expect.name.strip().lower()
    if expect.identity_file and facts.identity:
        if facts.identity.strip().lower() != wanted:
            problems.append(
                f"host identity: expected {expect.name!r}, found {facts.identity!r} in the "
                f"identity file {expect.identity_file}: write {expect.name!r} into that file on "
                f"the training host, or set {IDENTITY_FILE_ENV} to the right file"
            )
    else:
        names = {facts.hostname.lower(), facts.fqdn.split(".")[0].lower()}
        if wanted not in names:
            found = f"hostname {facts.hostname!r} (fqdn {facts.fqdn!r})"
            if expect.identity_file:
                found += f", no identity in {expect.identity_file}"
            problems.append(
                f"host identity: expected {expect.name!r}, found {found}: set {HOST_ENV} to the "
                f"training host's name, or write its name into the file named by "
                f"{IDENTITY_FILE_ENV}"
            )
    if normalize_platform(facts.platform) != normalize_platform(expect.platform):
        problems.append(
            f"platform: expected {expect.platform!r}, found {facts.platform!r}: training and "
            f"serving need {expect.platform}; set {PLATFORM_ENV} if the host really differs"
        )
    if facts.memory_bytes <= 0:
        problems.append(
            f"memory: expected at least {expect.min_memory_gb:g} GB, could not read this "
            f"machine's physical memory: set {MIN_MEMORY_ENV}=0 to skip the check"
        )
    elif facts.memory_gb < expect.min_memory_gb:
        problems.append(
            f"memory: expected at least {expect.min_memory_gb:g} GB, found "
            f"{facts.memory_gb:.1f} GB: the model and training need it; set {MIN_MEMORY_ENV} to "
            "lower the minimum"
        )
    return problems


def require_host(
    expect: HostExpectation, facts: HostFacts | None = None, *, what: str
) -> HostFacts:
    """This machine's facts when it is the expected host; otherwise HostGuardError naming
    `what` (e.g. "train lora_adapter") and every problem."""
    if facts is None:
        facts = HostFacts.gather(expect.identity_file)
    problems = check_host(expect, facts)
    if problems:
        raise HostGuardError(
            f"refusing to {what} on {facts.hostname}: this is not the configured waterdeep host "
            f"({expect.name!r}): " + "; ".join(problems),
            problems=problems,
            facts=facts,
        )
    return facts


class WaterdeepLock:
    """Exclusive use of waterdeep: a non-blocking `flock` on `path`, holder info inside.

    Use as a context manager. A second holder (another process, thread or instance) gets
    WaterdeepBusyError naming the current holder. The kernel drops a flock when its process
    dies, so a holder killed with SIGKILL never blocks the next one; the holder info it left
    behind is reported in `cleared_stale`. Not safe across `fork()` without `exec`: the child
    shares the open file description and with it the lock.
    """

    def __init__(self, path: Path, *, purpose: str, run_id: str = "") -> None:
        self.path = Path(path).expanduser()
        self.purpose = purpose
        self.run_id = run_id
        self.cleared_stale: dict[str, Any] | None = None
        self.holder: dict[str, Any] | None = None
        self._fd: int | None = None

    def acquire(self) -> WaterdeepLock:
        """Take the lock or raise WaterdeepBusyError; returns self."""
        if self._fd is not None:
            raise WaterdeepBusyError(
                f"{self.path} is already held by this WaterdeepLock ({self.purpose}): "
                "release it before acquiring it again",
                holder=dict(self.holder or {}),
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _parse_holder(_read_fd(fd))
                raise WaterdeepBusyError(self._busy_message(holder), holder=holder) from None
            # The flock is ours, so whoever wrote the old holder info has released the lock or
            # died (the kernel drops a dead process's flock): it is stale whatever its pid says.
            old = _parse_holder(_read_fd(fd))
            self.cleared_stale = old or None
            self.holder = {
                "pid": os.getpid(),
                "hostname": socket.gethostname().split(".")[0].lower(),
                "purpose": self.purpose,
                "run_id": self.run_id,
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            # Written in place: the flock belongs to this inode, a replaced file would not be
            # locked. Readers tolerate a half-written record (see _parse_holder).
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(self.holder) + "\n").encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def rewrite_holder(self) -> None:
        """Write `holder` (amended by the caller) to the lock file again; the lock must be held."""
        if self._fd is None:
            raise WaterdeepBusyError(f"{self.path} is not held by this WaterdeepLock", holder={})
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(self.holder) + "\n").encode(), 0)
        os.fsync(self._fd)

    def release(self) -> None:
        """Clear the holder info and unlock; the file stays. Releasing twice is harmless."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
            self.holder = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> WaterdeepLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _busy_message(self, holder: dict[str, Any]) -> str:
        if not holder:
            who = "another process (it has not written its holder info yet)"
        else:
            run = f"run {holder.get('run_id')}" if holder.get("run_id") else "no run id"
            who = (
                f"{holder.get('purpose', '?')!r} (pid {holder.get('pid', '?')} on "
                f"{holder.get('hostname', '?')}, {run}, since {holder.get('started_at', '?')})"
            )
        return (
            f"waterdeep is busy: cannot {self.purpose!r} while {self.path} is held by {who}; "
            "wait for that run to finish or cancel it, then retry"
        )


def _read_identity(identity_file: str) -> str:
    if not identity_file:
        return ""
    try:
        return Path(identity_file).expanduser().read_text("utf-8").strip()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return ""


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    if sys.platform == "darwin":
        try:
            proc = subprocess.run(
                ["sysctl", "-n", "hw.memsize"], capture_output=True, text=True, timeout=10
            )
            return int(proc.stdout.strip())
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return 0


def _read_fd(fd: int) -> str:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _parse_holder(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        # Empty (free lock) or caught half-written by a holder that is writing it right now.
        return {"raw": text.strip()} if text.strip() else {}
    return data if isinstance(data, dict) else {"raw": text.strip()}
