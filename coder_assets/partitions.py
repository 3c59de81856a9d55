"""Partitions of the code location: one dynamic partition per repository."""

from __future__ import annotations

import dagster as dg

from coder_assets.constants import REPO_PARTITIONS_NAME

# Keys are `owner~name` (see coder_assets.core.sources.repos.partition_key_for), added and removed
# by gitea_change_sensor as repositories appear and disappear.
repo_partitions = dg.DynamicPartitionsDefinition(name=REPO_PARTITIONS_NAME)
