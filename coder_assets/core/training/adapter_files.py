"""The files of a trained LoRA adapter and their sha256s: what evaluation keys its cache on
and deployment checks a copy against."""

from __future__ import annotations

import hashlib
from pathlib import Path

ADAPTER_FILES = ("adapters.safetensors", "adapter_config.json")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def adapter_digests(adapter_dir: Path) -> dict[str, str]:
    """{file name: sha256} of the adapter files in `adapter_dir` (a missing file: "missing")."""
    return {
        name: sha256_file(adapter_dir / name) if (adapter_dir / name).is_file() else "missing"
        for name in ADAPTER_FILES
    }
