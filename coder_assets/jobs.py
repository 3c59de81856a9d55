"""Jobs of the code location."""

from __future__ import annotations

import dagster as dg

from coder_assets.assets.snapshots import repo_snapshots
from coder_assets.partitions import repo_partitions

repo_snapshots_job = dg.define_asset_job(
    name="repo_snapshots_job",
    selection=[repo_snapshots],
    partitions_def=repo_partitions,
    description="Snapshot one repository (one partition per repo).",
)
