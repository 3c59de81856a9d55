"""Deployed adapter versions on waterdeep: installing a version, the atomic `latest` swap, rollback
and pruning.

Layout of the deploy directory (`~/.mlx-models/adapters/homelab-coder/` in production):

    <version>/            adapters.safetensors, adapter_config.json, manifest.json,
                          fingerprint.json, installed.json (written last: the version is complete)
    latest -> <version>   what mlx_lm.server loads (`--adapter-path .../latest`)
    previous -> <version> what `latest` pointed at before the last swap (the rollback target)
    deployments.jsonl     one line per deploy, rollback and prune

A version directory only ever appears whole: it is assembled under a temporary name and renamed
into place after every file has been checked. The links only ever change by renaming a new link
over the old one, so a crash at any moment leaves `latest` pointing at a complete version.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coder_assets.core.errors import CoderAssetsError
from coder_assets.core.files import write_json_atomic
from coder_assets.core.training.adapter_files import ADAPTER_FILES, sha256_file

MANIFEST_FILE = "manifest.json"
FINGERPRINT_FILE = "fingerprint.json"
INSTALLED_MARKER = "installed.json"
LATEST_LINK = "latest"
PREVIOUS_LINK = "previous"
HISTORY_FILE = "deployments.jsonl"
_TEMP_PREFIX = ".incoming-"
_TRASH_PREFIX = ".removing-"
# A safetensors header is JSON of at most this size (the format's own limit is 100 MB).
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


class DeploymentError(CoderAssetsError):
    """An adapter version could not be installed, swapped in, or rolled back."""


class AdapterFileError(DeploymentError, ValueError):
    """An adapter's files are missing, truncated or not what its manifest says."""


def digest_differences(expected: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    """One sentence per adapter file whose sha256 in `actual` is not the one in `expected`."""
    return [
        f"{name}: sha256 {str(actual.get(name))[:12]}, evaluated {str(want)[:12]}"
        for name, want in sorted(expected.items())
        if actual.get(name) != want
    ]


def check_version_name(version: str) -> str:
    """`version` if it can name a directory under the deploy directory, else AdapterFileError."""
    if (
        not version
        or version in (LATEST_LINK, PREVIOUS_LINK, ".", "..")
        or version.startswith(".")
        or "/" in version
        or "\\" in version
        or "\0" in version
    ):
        raise AdapterFileError(
            f"adapter version {version!r} cannot name a folder: use the version lora_adapter "
            "reported (letters, digits and dashes)"
        )
    return version


def check_safetensors(path: Path) -> dict[str, Any]:
    """Parse the header of the safetensors file `path` and check that its tensors exactly fill
    the file; returns the header. Catches truncated and garbled files without loading them."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise AdapterFileError(f"{path} is {size} bytes: too short for a safetensors file")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > min(_MAX_HEADER_BYTES, size - 8):
                raise AdapterFileError(
                    f"{path} is not a safetensors file (header length {header_len} for a file of "
                    f"{size} bytes): the file is truncated or corrupt; train or copy it again"
                )
            header = json.loads(handle.read(header_len))
    except FileNotFoundError:
        raise AdapterFileError(f"{path} is missing: the adapter is incomplete") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterFileError(
            f"{path} has a garbled safetensors header ({exc}): the file is corrupt"
        ) from None
    if not isinstance(header, dict):
        raise AdapterFileError(f"{path} has a safetensors header that is not a JSON object")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = (int(v) for v in info["data_offsets"])
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            expected = count * _DTYPE_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise AdapterFileError(
                f"{path}: tensor {name!r} has an unreadable entry in the header ({exc})"
            ) from None
        if stop - start != expected or start < 0:
            raise AdapterFileError(
                f"{path}: tensor {name!r} spans {stop - start} bytes but its shape and dtype need "
                f"{expected}: the file is corrupt"
            )
        end = max(end, stop)
    if 8 + header_len + end != size:
        raise AdapterFileError(
            f"{path} is {size} bytes but its header describes {8 + header_len + end}: the file is "
            "truncated or has trailing garbage; train or copy it again"
        )
    return header


def check_adapter_dir(directory: Path, expected: Mapping[str, str] | None = None) -> dict[str, str]:
    """Check that `directory` holds a loadable-looking adapter: both files present, the config is
    JSON with LoRA parameters, the weights file is whole; and, when `expected` (file → sha256) is
    given, that every file has that hash. Returns file → sha256."""
    hashes: dict[str, str] = {}
    for name in ADAPTER_FILES:
        path = directory / name
        if not path.is_file():
            raise AdapterFileError(
                f"{path} is missing: {directory} is not a complete adapter (lora_adapter writes "
                f"{' and '.join(ADAPTER_FILES)})"
            )
        hashes[name] = sha256_file(path)
    try:
        config = json.loads((directory / "adapter_config.json").read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterFileError(f"{directory / 'adapter_config.json'} is not JSON: {exc}") from None
    if not isinstance(config, dict) or "lora_parameters" not in config:
        raise AdapterFileError(
            f"{directory / 'adapter_config.json'} has no lora_parameters: not an mlx-lm adapter"
        )
    check_safetensors(directory / "adapters.safetensors")
    for name, digest in (expected or {}).items():
        if hashes.get(name) != digest:
            raise AdapterFileError(
                f"{directory / name} has sha256 {hashes.get(name, 'missing')[:12]}…, the release "
                f"says {digest[:12]}…: the copy is corrupt or the folder was changed; "
                "rematerialize adapter_release"
            )
    return hashes


@dataclass(frozen=True)
class Links:
    """Where `latest` and `previous` point (version names), None when a link is absent."""

    latest: str | None
    previous: str | None


class DeployDir:
    """The deploy directory of one adapter name."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    @property
    def latest(self) -> Path:
        return self.root / LATEST_LINK

    def version_dir(self, version: str) -> Path:
        return self.root / check_version_name(version)

    def is_installed(self, version: str) -> bool:
        return (self.version_dir(version) / INSTALLED_MARKER).is_file()

    def installed_versions(self) -> list[str]:
        """Complete versions, oldest install first."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            if entry.name.startswith(".") or entry.is_symlink() or not entry.is_dir():
                continue
            marker = entry / INSTALLED_MARKER
            if marker.is_file():
                try:
                    at = json.loads(marker.read_text("utf-8")).get("installed_at", "")
                except (OSError, json.JSONDecodeError):
                    at = ""
                found.append((at, entry.name))
        return [name for _, name in sorted(found)]

    def links(self) -> Links:
        return Links(self._target(LATEST_LINK), self._target(PREVIOUS_LINK))

    def read_json(self, version: str, name: str) -> dict[str, Any] | None:
        path = self.version_dir(version) / name
        try:
            return json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return None

    # --- install --------------------------------------------------------------------------------

    def install(
        self,
        source: Path,
        version: str,
        *,
        expected: Mapping[str, str] | None = None,
        documents: Mapping[str, Mapping[str, Any]] = (),
    ) -> Path:
        """Copy the adapter in `source` to `<root>/<version>/` with `documents` (file name → JSON)
        beside it, checking every copied file; returns the version directory. An installed
        version is left as it is (after checking its files again)."""
        target = self.version_dir(version)
        if self.is_installed(version):
            marker = self.read_json(version, INSTALLED_MARKER) or {}
            check_adapter_dir(target, marker.get("files"))
            return target
        hashes = check_adapter_dir(Path(source), expected)
        self.root.mkdir(parents=True, exist_ok=True)
        incoming = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{version}-", dir=self.root))
        try:
            for name in ADAPTER_FILES:
                shutil.copyfile(Path(source) / name, incoming / name)
            check_adapter_dir(incoming, hashes)
            for name, document in dict(documents).items():
                write_json_atomic(incoming / name, dict(document))
            write_json_atomic(
                incoming / INSTALLED_MARKER,
                {"version": version, "installed_at": _now(), "files": hashes},
            )
            _fsync_dir(incoming)
            os.chmod(incoming, 0o755)
            if target.exists():
                # An incomplete folder of this version (no marker): a copy that never finished.
                self._discard(target)
            os.replace(incoming, target)
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        self.record("installed", version)
        return target

    # --- links ----------------------------------------------------------------------------------

    def swap(self, version: str) -> Links:
        """Point `latest` at `version` and `previous` at what `latest` pointed at; returns the
        links as they were, for `restore`."""
        if not self.is_installed(version):
            raise DeploymentError(
                f"adapter {version} is not installed in {self.root} (no {INSTALLED_MARKER}): "
                "install it before pointing latest at it"
            )
        before = self.links()
        if before.latest != version:
            self._set_link(PREVIOUS_LINK, before.latest)
        self._set_link(LATEST_LINK, version)
        self.record("swapped", version, previous=before.latest)
        return before

    def restore(self, links: Links, reason: str) -> None:
        """Put both links back as they were (`swap`'s return value); an absent link is removed."""
        self._set_link(LATEST_LINK, links.latest)
        self._set_link(PREVIOUS_LINK, links.previous)
        self.record("rolled_back", links.latest, reason=reason)

    # --- pruning --------------------------------------------------------------------------------

    def prune(self, keep: int) -> list[str]:
        """Remove all but the `keep` most recently installed versions, never the one `latest` or
        `previous` points at; also removes leftovers of interrupted installs. Returns the
        versions removed."""
        if keep < 1:
            raise DeploymentError(f"keep={keep}: keep at least one adapter version")
        links = self.links()
        protected = {v for v in (links.latest, links.previous) if v}
        versions = self.installed_versions()
        newest = set(versions[-keep:])
        removed = [v for v in versions if v not in newest and v not in protected]
        for version in removed:
            self._discard(self.root / version)
            self.record("pruned", version)
        if self.root.is_dir():
            for entry in self.root.iterdir():
                if entry.name.startswith((_TEMP_PREFIX, _TRASH_PREFIX)) and entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
        return removed

    # --- history --------------------------------------------------------------------------------

    def record(self, event: str, version: str | None, **details: Any) -> None:
        """Append one line to deployments.jsonl (one write of a whole line)."""
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"at": _now(), "event": event, "version": version, **details})
        with open(self.root / HISTORY_FILE, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def history(self, last: int = 20) -> list[dict[str, Any]]:
        try:
            lines = (self.root / HISTORY_FILE).read_text("utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines[-last:] if line.strip()]

    # --- internals ------------------------------------------------------------------------------

    def _target(self, link_name: str) -> str | None:
        link = self.root / link_name
        if not link.is_symlink():
            return None
        target = os.readlink(link)
        return Path(target).name

    def _set_link(self, link_name: str, version: str | None) -> None:
        link = self.root / link_name
        if version is None:
            link.unlink(missing_ok=True)
            return
        # Relative, so the deploy directory can move; renamed over the old link in one step.
        temporary = self.root / f".{link_name}.{os.getpid()}.{time.monotonic_ns()}"
        os.symlink(check_version_name(version), temporary)
        try:
            os.replace(temporary, link)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _fsync_dir(self.root)

    def _discard(self, path: Path) -> None:
        trash = self.root / f"{_TRASH_PREFIX}{path.name}-{time.monotonic_ns()}"
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
