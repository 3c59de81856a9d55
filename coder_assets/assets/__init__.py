"""Software-defined assets, one module per stage."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from coder_assets.core.errors import CoderAssetsError


@contextmanager
def reported_as_failure() -> Iterator[None]:
    """Turn our own errors into `dg.Failure`, so the UI shows their message (which already says
    what was wrong and what to do) instead of a stack trace."""
    try:
        yield
    except CoderAssetsError as exc:
        raise dg.Failure(description=str(exc)) from exc
