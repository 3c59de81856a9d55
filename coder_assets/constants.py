"""Names shared across the code location: groups, partitions, tags, default paths."""

from __future__ import annotations

import os
from pathlib import Path

# Asset groups, one per stage.
SOURCES_GROUP = "sources"
SAMPLES_GROUP = "samples"
DATASET_GROUP = "dataset"
TRAINING_GROUP = "training"
EVALUATION_GROUP = "evaluation"
DEPLOYMENT_GROUP = "deployment"

# Who to ask about an asset (shown in the UI).
OWNERS = ["team:homelab"]

# Partitions.
REPO_PARTITIONS_NAME = "repos"

# Where a step runs: waterdeep_executor sends steps tagged HOST_TAG=WATERDEEP to waterdeep; the
# same tag on runs is limited to one at a time in dagster.yaml.
HOST_TAG = "coder_assets/host"
WATERDEEP = "waterdeep"

# Run tags.
COMMIT_SHA_TAG = "coder_assets/commit_sha"
TRIGGER_TAG = "coder_assets/trigger"

# Automation defaults (overridable by environment, see README's settings table).
DEFAULT_SENSOR_INTERVAL_SECONDS = 60
DEFAULT_WEEKLY_CRON = "0 3 * * 0"

# The opt-out file a repository can carry at its root.
OPT_OUT_FILE = ".coder-assets.yaml"


def int_setting(name: str, default: int) -> int:
    """A whole-number setting from the environment, with a clear error when it is not one."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(
            f"{name} must be a whole number, got {raw!r}; unset it to use {default}"
        ) from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}; unset it to use {default}")
    return value


def coder_assets_home() -> Path:
    """Root of everything coder_assets writes locally (mirrors, asset storage, demo repos)."""
    return Path(os.environ.get("CODER_ASSETS_HOME", "~/.coder-assets")).expanduser().resolve()
