"""waterdeep, the one machine that trains, evaluates and serves: its host guard and its lock."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from coder_assets.core.deployment.host import (
    HostExpectation,
    HostFacts,
    WaterdeepLock,
    require_host,
)


class WaterdeepResource(dg.ConfigurableResource):
    """What waterdeep must look like, checked inside every waterdeep asset (executors can be
    bypassed: `materialize()` and `execute_in_process` run in the caller's process), and the lock
    that keeps a second trainer or server restart off the machine."""

    name: str = Field(default="waterdeep", description="Hostname or identity of waterdeep.")
    platform: str = Field(default="darwin-arm64", description="sys.platform-machine expected.")
    min_memory_gb: float = Field(default=48.0, description="Least physical memory, in GiB.")
    identity_file: str = Field(
        default="", description="File whose content names the host (instead of its hostname)."
    )
    lock_file: str = Field(
        default="~/.coder-assets/waterdeep.lock",
        description="Lock held while training, evaluating or restarting the model server.",
    )

    def expectation(self) -> HostExpectation:
        return HostExpectation(
            name=self.name,
            platform=self.platform,
            min_memory_gb=self.min_memory_gb,
            identity_file=self.identity_file,
        )

    def require(self, what: str) -> HostFacts:
        """This machine's facts, or HostGuardError saying which check failed and how to
        configure it. Call it before anything touches the model server or trains."""
        return require_host(self.expectation(), what=what)

    def lock(self, purpose: str, run_id: str = "") -> WaterdeepLock:
        return WaterdeepLock(Path(self.lock_file).expanduser(), purpose=purpose, run_id=run_id)
