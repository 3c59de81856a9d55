"""Addresses of pipeline inputs and outputs in the homelab's S3-compatible object store."""

from __future__ import annotations

import re
from dataclasses import dataclass

# S3 bucket rules without the dotted names, which break virtual-host style addressing.
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Location:
    """A bucket and an optional key prefix, kept without surrounding slashes."""

    bucket: str
    prefix: str = ""

    def __post_init__(self) -> None:
        if not _BUCKET_NAME.match(self.bucket):
            raise ValueError(f"invalid bucket name {self.bucket!r}")
        object.__setattr__(self, "prefix", self.prefix.strip("/"))

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        """Parse ``s3://bucket[/prefix]``; raise ``ValueError`` for anything else."""
        if not uri.startswith("s3://"):
            raise ValueError(f"not an s3:// URI: {uri!r}")
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        return cls(bucket, prefix)

    @property
    def uri(self) -> str:
        """This location as an ``s3://`` URI."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def child(self, *parts: str) -> S3Location:
        """Return the location ``parts`` below this one."""
        keep = (part.strip("/") for part in (self.prefix, *parts))
        return S3Location(self.bucket, "/".join(part for part in keep if part))


def dataset_location(root: S3Location, dataset: str, version: str) -> S3Location:
    """Where one version of a dataset lives: ``<root>/datasets/<dataset>/<version>``."""
    return root.child("datasets", dataset, version)


def adapter_location(root: S3Location, run_id: str) -> S3Location:
    """Where the adapter trained by one pipeline run is published."""
    return root.child("adapters", run_id)
