"""Atomic file writes: readers see the previous file or the complete new one, never a part."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_path(path: Path, file_mode: int = 0o644) -> Iterator[Path]:
    """A temporary path next to `path` to write to; on success it is fsync'd, given
    `file_mode` (0644; 0600 for secrets, which the temporary file has from the start) and
    renamed over `path`; on failure it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, file_mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_writer(path: Path, mode: str = "w", file_mode: int = 0o644) -> Iterator[IO[Any]]:
    """An open file (text, UTF-8, or `mode="wb"`) that replaces `path` when the block ends."""
    with atomic_path(path, file_mode) as tmp:
        if "b" in mode:
            with tmp.open(mode) as handle:
                yield handle
        else:
            with tmp.open(mode, encoding="utf-8") as handle:
                yield handle


def write_text_atomic(path: Path, text: str, file_mode: int = 0o644) -> None:
    with atomic_writer(path, file_mode=file_mode) as out:
        out.write(text)


def write_json_atomic(path: Path, data: Mapping[str, Any], *, indent: int = 2) -> None:
    """JSON with sorted keys; floats such as numpy's are written as floats."""
    write_text_atomic(
        path,
        json.dumps(data, indent=indent, sort_keys=True, ensure_ascii=False, default=float) + "\n",
    )
