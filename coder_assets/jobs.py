"""Jobs of the code location."""

from __future__ import annotations

import dagster as dg

from coder_assets.assets.samples import fim_samples, instruction_pairs
from coder_assets.assets.snapshots import repo_snapshots
from coder_assets.partitions import repo_partitions

repo_job = dg.define_asset_job(
    name="repo_job",
    selection=[repo_snapshots, instruction_pairs, fim_samples],
    partitions_def=repo_partitions,
    description="Snapshot one repository and build its training samples (one partition per repo).",
)
