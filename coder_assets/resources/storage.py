"""Local storage: the parquet IO manager for DataFrame assets and the repository mirror cache."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from coder_assets.core.files import write_json_atomic
from coder_assets.core.sources.repos import partition_key_for

# DataFrame.attrs travel in the parquet schema metadata under this key.
ATTRS_METADATA_KEY = b"coder_assets.attrs"


def frame_table(frame: pd.DataFrame) -> pa.Table:
    """`frame` as an arrow table whose schema metadata carries the frame's attrs."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[ATTRS_METADATA_KEY] = json.dumps(frame.attrs, sort_keys=True, default=str).encode()
    return table.replace_schema_metadata(metadata)


def table_frame(table: pa.Table) -> pd.DataFrame:
    """The frame of a table written by `frame_table`, attrs restored."""
    frame = table.to_pandas()
    raw = (table.schema.metadata or {}).get(ATTRS_METADATA_KEY)
    frame.attrs = json.loads(raw) if raw else {}
    return frame


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """`frame` (with its attrs) as the bytes of one parquet file."""
    sink = pa.BufferOutputStream()
    pq.write_table(frame_table(frame), sink)
    return sink.getvalue().to_pybytes()


def frame_from_parquet_bytes(data: bytes) -> pd.DataFrame:
    """The frame of parquet bytes written by `parquet_bytes`, attrs included."""
    return table_frame(pq.read_table(pa.BufferReader(data)))


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write `frame` (with its attrs) to `path` through a temp file and a rename."""
    table = frame_table(frame)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_parquet(path: Path) -> pd.DataFrame:
    """Read a frame written by `write_parquet_atomic`, attrs included."""
    return table_frame(pq.read_table(path))


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores DataFrame outputs as `<base_path>/<asset key>/<partition>.parquet`. A partitioned
    asset loaded by a partitioned downstream gives one frame; loaded for several partitions it
    gives `{partition key: frame}`."""

    base_path: str = Field(description="Directory under which asset values are stored.")

    def _path(self, asset_key: dg.AssetKey, partition: str | None) -> Path:
        directory = Path(self.base_path).expanduser().joinpath(*asset_key.path)
        return directory / f"{partition or '__unpartitioned__'}.parquet"

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(
                f"ParquetIOManager stores pandas DataFrames; {context.asset_key.to_user_string()} "
                f"returned {type(obj).__name__}"
            )
        partition = context.partition_key if context.has_partition_key else None
        path = self._path(context.asset_key, partition)
        write_parquet_atomic(obj, path)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> Any:
        asset_key = context.asset_key
        if not context.has_asset_partitions:
            return read_parquet(self._path(asset_key, None))
        keys = list(context.asset_partition_keys)
        if len(keys) == 1 and context.has_partition_key:
            return read_parquet(self._path(asset_key, keys[0]))
        # Many partitions (a fan-in such as dataset_splits): a repo whose run failed has no file
        # yet; it is left out here and the consumer reports which repos it lacks.
        frames = {}
        for key in keys:
            path = self._path(asset_key, key)
            if path.is_file():
                frames[key] = read_parquet(path)
        return frames

    def stored(self, asset_key: dg.AssetKey, partition: str | None) -> pd.DataFrame | None:
        """The last stored value of an asset (partition), or None: lets an asset reuse its own
        previous output."""
        path = self._path(asset_key, partition)
        return read_parquet(path) if path.is_file() else None


class WorkspaceResource(dg.ConfigurableResource):
    """Local working folders of the dataset and training stages."""

    path: str = Field(description="Directory for dataset versions and adapters on this host.")

    def datasets_dir(self) -> Path:
        """Dataset versions built here (dataset_splits)."""
        return Path(self.path).expanduser() / "datasets"

    def fetched_datasets_dir(self) -> Path:
        """Dataset versions fetched from the bucket for training (on waterdeep)."""
        return Path(self.path).expanduser() / "fetched-datasets"

    def adapters_dir(self) -> Path:
        """Trained adapters, one folder per version, never overwritten (on waterdeep)."""
        return Path(self.path).expanduser() / "adapters"

    def eval_cache_dir(self) -> Path:
        """Evaluation results by content (core.evaluation.cache), kept across runs (on
        waterdeep)."""
        return Path(self.path).expanduser() / "eval-cache"


class RepoMirrorsResource(dg.ConfigurableResource):
    """The cache of persistent bare mirrors, one per repository."""

    path: str = Field(description="Directory that holds one bare mirror per repository.")

    def mirror_path(self, owner: str, name: str) -> Path:
        return Path(self.path).expanduser() / f"{partition_key_for(owner, name)}.git"


class JsonIOManager(dg.ConfigurableIOManager):
    """Stores small dict outputs (dataset and adapter descriptors) as
    `<base_path>/<asset key>/<partition>.json`, written atomically."""

    base_path: str = Field(description="Directory under which asset values are stored.")

    def _path(self, asset_key: dg.AssetKey, partition: str | None) -> Path:
        directory = Path(self.base_path).expanduser().joinpath(*asset_key.path)
        return directory / f"{partition or '__unpartitioned__'}.json"

    def handle_output(self, context: dg.OutputContext, obj: dict) -> None:
        if not isinstance(obj, dict):
            raise TypeError(
                f"JsonIOManager stores dicts; {context.asset_key.to_user_string()} returned "
                f"{type(obj).__name__}"
            )
        partition = context.partition_key if context.has_partition_key else None
        path = self._path(context.asset_key, partition)
        write_json_atomic(path, obj)

    def stored(self, asset_key: dg.AssetKey, partition: str | None = None) -> dict | None:
        """The last stored value of an asset (partition), or None."""
        path = self._path(asset_key, partition)
        return json.loads(path.read_text("utf-8")) if path.is_file() else None

    def load_input(self, context: dg.InputContext) -> dict:
        partition = context.partition_key if context.has_partition_key else None
        path = self._path(context.asset_key, partition)
        try:
            return json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise dg.Failure(
                description=f"{context.asset_key.to_user_string()} has no stored value at {path}: "
                "materialize it first"
            ) from None
