"""Names shared across the code location: groups, partitions, tags, default paths."""

from __future__ import annotations

from pathlib import Path

# Re-exported: settings are parsed in coder_assets.settings.
from coder_assets.settings import int_setting as int_setting
from coder_assets.settings import path_setting

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
# Which automation (sensor or schedule) asked for a run; hand launches carry none.
TRIGGER_TAG = "coder_assets/trigger"
# What the automation saw: the repos a dataset build follows, the dataset version a training run
# is for and the untrained older versions it supersedes, a hand launch outside the window.
CHANGED_REPOS_TAG = "coder_assets/changed_repos"
DATASET_VERSION_TAG = "coder_assets/dataset_version"
SUPERSEDED_TAG = "coder_assets/superseded_versions"
MAINTENANCE_WINDOW_TAG = "coder_assets/maintenance_window"

# Automation defaults (overridable by environment, see README's settings table).
DEFAULT_SENSOR_INTERVAL_SECONDS = 60
DEFAULT_WEEKLY_CRON = "0 3 * * 0"

# The opt-out file a repository can carry at its root.
OPT_OUT_FILE = ".coder-assets.yaml"


def coder_assets_home() -> Path:
    """Root of everything coder_assets writes locally (mirrors, asset storage, demo repos)."""
    return Path(path_setting("CODER_ASSETS_HOME", "~/.coder-assets", folder=True)).resolve()
