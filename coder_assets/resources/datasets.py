"""The dataset store: publish a dataset version (a directory of files and its `manifest.json`) to
an S3-compatible bucket or to a local folder laid out like one, and fetch it back verified.

A version lives under `<prefix>/<version>/<name>`. Files are compared by sha256, so a re-publish
sends nothing, and `manifest.json` is written last: a version without a manifest is an upload
that never finished and is refused by `fetch`.
"""

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
import dagster as dg
from boto3.exceptions import S3UploadFailedError
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr

from coder_assets.core.errors import CoderAssetsError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
SHA256_METADATA_KEY = "sha256"
CHUNK_BYTES = 1024 * 1024

# The longest one S3 call may take, its retries and their backoff included, unless
# CODER_ASSETS_S3_TIMEOUT_SECONDS says otherwise. botocore's own defaults (60 s connect, 60 s read,
# dagster-aws's 5 retries) let a hanging endpoint hold a step for about 6 minutes.
DEFAULT_S3_DEADLINE_SECONDS = 60.0
# At most this many retries: standard mode's backoff before retry n is up to 2**(n-1) s.
MAX_S3_RETRIES = 2
S3_ENDPOINT_SETTING = "CODER_ASSETS_S3_ENDPOINT_URL"
S3_DEADLINE_SETTING = "CODER_ASSETS_S3_TIMEOUT_SECONDS"


@dataclass(frozen=True)
class CallTimeouts:
    """How one S3 call's deadline is split: retries after the first call, and the connect and
    read timeouts of each call."""

    retries: int
    connect_seconds: float
    read_seconds: float


def call_timeouts(deadline: float, max_retries: int) -> CallTimeouts:
    """Timeouts such that every call, retries and worst-case backoff included, ends within
    `deadline` seconds: fewer retries where the backoff would take more than a quarter of it."""
    retries = max(0, min(max_retries, MAX_S3_RETRIES))
    while retries and 2**retries - 1 > deadline / 4:
        retries -= 1
    per_call = (deadline - (2**retries - 1)) / (retries + 1)
    connect = min(5.0, per_call / 4)
    return CallTimeouts(retries=retries, connect_seconds=connect, read_seconds=per_call - connect)


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_NO_BUCKET_CODES = frozenset({"NoSuchBucket"})
_DENIED_CODES = frozenset(
    {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"}
)


class DatasetStoreError(CoderAssetsError):
    """Publishing or fetching a dataset version failed."""


class DatasetManifestError(DatasetStoreError, ValueError):
    """A manifest that cannot be understood, or a dataset directory that does not match its
    manifest. Nothing was sent."""


class DatasetIntegrityError(DatasetStoreError):
    """A fetched file's sha256 differs from the one its manifest records."""

    def __init__(self, message: str, *, name: str, expected: str, actual: str) -> None:
        super().__init__(message)
        self.name = name
        self.expected = expected
        self.actual = actual


class DatasetIncompleteError(DatasetStoreError):
    """The version has no manifest (never published, or its upload stopped before the end), or
    a file its manifest lists is missing from the store."""


class DatasetStoreUnavailableError(DatasetStoreError):
    """The bucket does not exist, the endpoint cannot be reached, or access was refused."""


@dataclass(frozen=True)
class ManifestEntry:
    """One file of a dataset version as its manifest records it."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class DatasetManifest:
    """A parsed `manifest.json`; `raw` is the file's exact bytes, stored unchanged."""

    version: str
    files: dict[str, ManifestEntry]
    raw: bytes


@dataclass(frozen=True)
class PublishResult:
    """What `publish` did: where the version lives and which files it sent or found present.

    `sent` and `skipped` name files (with `manifest.json` last when it is among them);
    `bytes_sent` counts the bytes of the files in `sent`."""

    uri: str
    manifest_uri: str
    sent: list[str]
    skipped: list[str]
    bytes_sent: int


@dataclass(frozen=True)
class StoredObject:
    """A file as a store holds it: its recorded sha256 (None when it carries none) and size."""

    sha256: str | None
    bytes: int


class _Absent(Exception):
    """Internal: the object a store was asked to read does not exist."""


def sha256_of_file(path: Path) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of the file at `path`, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _is_plain_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..", MANIFEST_NAME)
        and not any(char in name for char in "/\\\0")
    )


def _check_version(version: object, where: str) -> str:
    if not isinstance(version, str) or not _SHA256_HEX.fullmatch(version):
        raise DatasetManifestError(
            f"{where}: version {version!r} is not a 64-character lowercase sha256 hex digest; "
            "use the version recorded in the dataset's manifest.json"
        )
    return version


def parse_manifest(raw: bytes, where: str) -> DatasetManifest:
    """Parse and validate manifest bytes read from `where` (a path or URI, named in errors).

    The version must be 64 lowercase hex characters; `files` must map plain file names (no
    folders, not `manifest.json`) to `{"sha256": <64 hex>, "bytes": <int >= 0>}`. Other keys of
    the manifest are allowed and kept in `raw`."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetManifestError(
            f"{where} is not valid UTF-8 JSON ({exc}); rewrite it with the dataset build"
        ) from exc
    if not isinstance(data, dict):
        raise DatasetManifestError(f"{where} must hold a JSON object, not {type(data).__name__}")
    version = _check_version(data.get("version"), where)
    files = data.get("files")
    if not isinstance(files, dict) or not files:
        raise DatasetManifestError(
            f"{where}: 'files' must be a non-empty object of file name -> "
            '{"sha256": ..., "bytes": ...}'
        )
    entries: dict[str, ManifestEntry] = {}
    for name, entry in files.items():
        if not _is_plain_name(name):
            raise DatasetManifestError(
                f"{where}: file name {name!r} is not a plain file name inside the dataset "
                f"directory (no '/', '\\', '..', and not {MANIFEST_NAME!r})"
            )
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        size = entry.get("bytes") if isinstance(entry, dict) else None
        if not isinstance(sha, str) or not _SHA256_HEX.fullmatch(sha):
            raise DatasetManifestError(
                f"{where}: {name!r} has sha256 {sha!r}, not a 64-character lowercase hex digest"
            )
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise DatasetManifestError(
                f"{where}: {name!r} has bytes {size!r}, not a non-negative integer"
            )
        entries[name] = ManifestEntry(sha256=sha, bytes=size)
    return DatasetManifest(version=version, files=entries, raw=raw)


def read_dataset_directory(directory: Path) -> DatasetManifest:
    """The manifest of the dataset version in `directory`, after checking that every file it
    lists is there with the recorded size and sha256. Every problem is reported at once."""
    manifest_path = directory / MANIFEST_NAME
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError as exc:
        raise DatasetManifestError(
            f"{manifest_path} does not exist; publish a directory written by the dataset build "
            "(it holds manifest.json and the files it lists)"
        ) from exc
    manifest = parse_manifest(raw, str(manifest_path))
    problems: list[str] = []
    for name, entry in sorted(manifest.files.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: listed in the manifest but not a file in {directory}")
            continue
        size = path.stat().st_size
        if size != entry.bytes:
            problems.append(f"{name}: manifest says {entry.bytes} bytes, the file has {size}")
            continue
        actual, _ = sha256_of_file(path)
        if actual != entry.sha256:
            problems.append(
                f"{name}: manifest says sha256 {entry.sha256}, the file has sha256 {actual}"
            )
    if problems:
        raise DatasetManifestError(
            f"{manifest_path} does not match the files beside it, so nothing was published:\n  "
            + "\n  ".join(problems)
            + "\nRebuild the dataset version (or restore the files) and publish again."
        )
    return manifest


def _join_key(*parts: str) -> str:
    return "/".join(part.strip("/") for part in parts if part.strip("/"))


class DatasetStoreResource(dg.ConfigurableResource):
    """Where dataset versions are published: `<prefix>/<version>/<name>` for every file of the
    version, `manifest.json` last. Subclasses say where that tree lives (S3 or a local folder)."""

    prefix: str = Field(
        default="code-finetune",
        description="Folder (key prefix) under which each dataset version gets its own folder.",
    )

    # --- what a concrete store provides -------------------------------------------------------

    def _location(self, version: str, name: str = "") -> str:
        """URI of the version's folder (name empty) or of one of its files."""
        raise NotImplementedError

    def _prepare(self) -> None:
        """Check that the store can be used (bucket or root present) before any transfer."""
        raise NotImplementedError

    def _stat(self, version: str, name: str) -> StoredObject | None:
        """The stored object's sha256 and size, or None when it is absent."""
        raise NotImplementedError

    def _send(self, version: str, name: str, source: Path, sha256: str) -> None:
        """Store `source` as `name` of `version`, replacing any object of that name at once."""
        raise NotImplementedError

    def _read(self, version: str, name: str) -> Iterator[bytes]:
        """The stored object's bytes in chunks; raises `_Absent` when it does not exist."""
        raise NotImplementedError

    # --- the public API ------------------------------------------------------------------------

    def uri(self, version: str) -> str:
        """URI of a version's folder, e.g. `s3://bucket/code-finetune/<version>/`."""
        return self._location(_check_version(version, "uri"))

    def exists(self, version: str) -> bool:
        """Whether the version is published completely (its manifest is present)."""
        _check_version(version, "exists")
        self._prepare()
        return self._stat(version, MANIFEST_NAME) is not None

    def publish(self, directory: Path) -> PublishResult:
        """Upload the dataset version in `directory` (manifest.json and the files it lists).

        The directory is checked against its manifest first; on any mismatch nothing is sent.
        Files already stored with the same sha256 are skipped, so publishing again sends
        nothing. `manifest.json` is sent last, once every file is confirmed present."""
        directory = Path(directory).expanduser()
        manifest = read_dataset_directory(directory)
        version = manifest.version
        self._prepare()
        sent: list[str] = []
        skipped: list[str] = []
        bytes_sent = 0
        for name, entry in sorted(manifest.files.items()):
            if self._holds(version, name, entry):
                skipped.append(name)
                continue
            self._send(version, name, directory / name, entry.sha256)
            sent.append(name)
            bytes_sent += entry.bytes
            logger.info(
                "Sent %s (%d bytes) to %s", name, entry.bytes, self._location(version, name)
            )
        absent = [
            name
            for name, entry in sorted(manifest.files.items())
            if not self._holds(version, name, entry)
        ]
        if absent:
            raise DatasetIncompleteError(
                f"{self._location(version)}: {', '.join(absent)} not present with the manifest's "
                "sha256 and size after upload, so manifest.json was not sent; publish again"
            )
        manifest_entry = ManifestEntry(
            sha256=hashlib.sha256(manifest.raw).hexdigest(), bytes=len(manifest.raw)
        )
        if self._holds(version, MANIFEST_NAME, manifest_entry):
            skipped.append(MANIFEST_NAME)
        else:
            self._send(version, MANIFEST_NAME, directory / MANIFEST_NAME, manifest_entry.sha256)
            sent.append(MANIFEST_NAME)
            bytes_sent += manifest_entry.bytes
        logger.info(
            "Published dataset %s to %s: %d sent, %d already present",
            version,
            self._location(version),
            len(sent),
            len(skipped),
        )
        return PublishResult(
            uri=self._location(version),
            manifest_uri=self._location(version, MANIFEST_NAME),
            sent=sent,
            skipped=skipped,
            bytes_sent=bytes_sent,
        )

    def fetch(self, version: str, destination: Path) -> Path:
        """Download the version's files and manifest into `destination` and return it.

        Each file is written through a temp file and renamed into place only once its sha256
        matches the manifest; files already there with the right sha256 are not downloaded.
        `manifest.json` is written last, so a local manifest means a complete, verified copy."""
        _check_version(version, "fetch")
        self._prepare()
        manifest_uri = self._location(version, MANIFEST_NAME)
        try:
            raw = b"".join(self._read(version, MANIFEST_NAME))
        except _Absent:
            raise DatasetIncompleteError(
                f"{manifest_uri} does not exist: version {version} was never published, or its "
                "upload stopped before the end (the manifest is sent last). Publish it again "
                "from its dataset directory."
            ) from None
        manifest = parse_manifest(raw, manifest_uri)
        if manifest.version != version:
            raise DatasetManifestError(
                f"{manifest_uri} records version {manifest.version}, not {version}; the store "
                "is inconsistent: publish the version again"
            )
        destination = Path(destination).expanduser()
        destination.mkdir(parents=True, exist_ok=True)
        local_manifest = destination / MANIFEST_NAME
        if local_manifest.exists() and local_manifest.read_bytes() != raw:
            # A manifest must only ever sit beside the files it lists.
            local_manifest.unlink()
        for name, entry in sorted(manifest.files.items()):
            target = destination / name
            if target.is_file() and target.stat().st_size == entry.bytes:
                if sha256_of_file(target)[0] == entry.sha256:
                    continue
            self._fetch_file(version, name, entry, target)
        _write_atomic(local_manifest, raw)
        return destination

    # --- shared steps ----------------------------------------------------------------------

    def _holds(self, version: str, name: str, entry: ManifestEntry) -> bool:
        stored = self._stat(version, name)
        return stored is not None and stored.sha256 == entry.sha256 and stored.bytes == entry.bytes

    def _fetch_file(self, version: str, name: str, entry: ManifestEntry, target: Path) -> None:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.", suffix=".part")
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    for chunk in self._read(version, name):
                        out.write(chunk)
                        digest.update(chunk)
                except _Absent:
                    raise DatasetIncompleteError(
                        f"{self._location(version, name)} is listed in the version's manifest "
                        "but missing from the store; publish the version again"
                    ) from None
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if actual != entry.sha256:
                raise DatasetIntegrityError(
                    f"{self._location(version, name)}: {name} has sha256 {actual}, but the "
                    f"manifest expects {entry.sha256}; the stored file was altered or corrupted. "
                    "Delete it from the store and publish the version again from its dataset "
                    "directory (publish skips objects whose recorded sha256 still matches).",
                    name=name,
                    expected=entry.sha256,
                    actual=actual,
                )
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalDatasetStoreResource(DatasetStoreResource):
    """A dataset store in a local folder laid out like the bucket: `<root>/<prefix>/<version>/`.
    For the demo and tests; `root` is created on first publish."""

    root: str = Field(description="Folder that stands in for the bucket.")

    def _path(self, version: str, name: str = "") -> Path:
        parts = _join_key(self.prefix, version, name).split("/")
        return Path(self.root).expanduser().resolve().joinpath(*parts)

    def _location(self, version: str, name: str = "") -> str:
        uri = self._path(version).as_uri() + "/"
        return uri + name

    def _prepare(self) -> None:
        root = Path(self.root).expanduser()
        if root.exists() and not root.is_dir():
            raise DatasetStoreUnavailableError(
                f"dataset store root {root} is not a folder; set LocalDatasetStoreResource.root "
                "to a folder"
            )

    def _stat(self, version: str, name: str) -> StoredObject | None:
        path = self._path(version, name)
        if not path.is_file():
            return None
        sha, size = sha256_of_file(path)
        return StoredObject(sha256=sha, bytes=size)

    def _send(self, version: str, name: str, source: Path, sha256: str) -> None:
        target = self._path(version, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.", suffix=".tmp")
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                while chunk := src.read(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != sha256:
                # The source changed after it was checked against the manifest.
                raise DatasetManifestError(
                    f"{source} changed while it was being published (sha256 "
                    f"{digest.hexdigest()}, manifest {sha256}); rebuild the dataset version"
                )
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _read(self, version: str, name: str) -> Iterator[bytes]:
        try:
            handle = open(self._path(version, name), "rb")
        except FileNotFoundError:
            raise _Absent(name) from None
        with handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk


class S3CompatibleResource(S3Resource):
    """`dagster_aws.s3.S3Resource` for S3-compatible servers (RustFS, MinIO): the same fields,
    but the client computes and validates checksums only where an operation requires them."""

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    def __repr_args__(self) -> Any:
        # A resource's repr ends up in tracebacks, test reports and logs: never show secrets.
        for name, value in super().__repr_args__():
            secret = name in ("aws_secret_access_key", "aws_session_token") and value
            yield name, "***" if secret else value

    deadline_seconds: float = Field(
        default=DEFAULT_S3_DEADLINE_SECONDS,
        gt=0,
        description=(
            "The longest one S3 call may take, retries included; the connect and read timeouts "
            f"and the retries are derived from it ({S3_DEADLINE_SETTING})."
        ),
    )

    def display_endpoint(self) -> str:
        """The endpoint for messages: without any user:password part."""
        if not self.endpoint_url:
            return "the default AWS S3 endpoint"
        parts = urlsplit(self.endpoint_url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def unavailable(self, exc: BaseException, action: str, target: str) -> DatasetStoreError:
        """Our error for a call that could not reach the endpoint or got no answer in time."""
        endpoint = self.display_endpoint()
        if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
            return DatasetStoreUnavailableError(
                f"the S3 endpoint {endpoint} did not answer within the {self.deadline_seconds:g} "
                f"s deadline to {action} {target} ({type(exc).__name__}); check "
                f"{S3_ENDPOINT_SETTING} and that the server there is up (the deadline is "
                f"{S3_DEADLINE_SETTING})"
            )
        if isinstance(exc, EndpointConnectionError):
            return DatasetStoreUnavailableError(
                f"could not reach the S3 endpoint {endpoint} to {action} {target}; check "
                f"{S3_ENDPOINT_SETTING} and that the server is running"
            )
        return DatasetStoreUnavailableError(
            f"could not {action} {target} at {endpoint} ({type(exc).__name__}); check "
            f"{S3_ENDPOINT_SETTING} and the network"
        )

    def get_client(self) -> Any:
        """A boto3 S3 client whose every call ends within `deadline_seconds`, with
        `when_required` checksums."""
        timeouts = call_timeouts(self.deadline_seconds, self.max_attempts)
        # boto3 >= 1.36 sends CRC checksums on every upload by default, which RustFS and MinIO
        # versions in use reject; only send (and check) them where the API demands one.
        config = Config(
            retries={"max_attempts": timeouts.retries, "mode": "standard"},
            connect_timeout=timeouts.connect_seconds,
            read_timeout=timeouts.read_seconds,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        if self.use_unsigned_session:
            config = config.merge(Config(signature_version=UNSIGNED))
        session = boto3.session.Session(profile_name=self.profile_name)
        return session.client(
            "s3",
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            use_ssl=self.use_ssl,
            verify=self.verify,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            config=config,
        )


class S3DatasetStoreResource(DatasetStoreResource):
    """A dataset store in an S3-compatible bucket. Each object carries its sha256 as user
    metadata (`x-amz-meta-sha256`), which is what makes publishing idempotent. The bucket must
    exist: it is never created here."""

    bucket: str = Field(description="Bucket that holds the dataset versions; must already exist.")
    s3: S3CompatibleResource = Field(
        description="Connection to the S3-compatible server (endpoint, region, credentials)."
    )

    _client: Any = PrivateAttr(default=None)

    def _get_client(self) -> Any:
        if self._client is None:
            self._client = self.s3.get_client()
        return self._client

    def _key(self, version: str, name: str = "") -> str:
        return _join_key(self.prefix, version, name)

    def _location(self, version: str, name: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(version, name)}" + ("" if name else "/")

    def _endpoint(self) -> str:
        # An endpoint written as http://user:pass@host must not leak its password.
        return self.s3.display_endpoint()

    def _redact(self, text: str) -> str:
        for secret in (self.s3.aws_secret_access_key, self.s3.aws_session_token):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _failure(self, exc: Exception, action: str, target: str) -> DatasetStoreError:
        """Our error for a boto3/botocore failure of `action` on `target`."""
        endpoint = self._endpoint()
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            detail = self._redact(f"{code}: {error.get('Message', '')}".rstrip(": "))
            if code in _NO_BUCKET_CODES:
                return self._no_bucket()
            if code in _DENIED_CODES:
                return DatasetStoreUnavailableError(
                    f"{endpoint} refused to {action} {target} ({detail}); check the S3 "
                    "credentials (aws_access_key_id / aws_secret_access_key) and the bucket's "
                    "policy"
                )
            return DatasetStoreError(f"could not {action} {target} at {endpoint} ({detail})")
        if isinstance(exc, EndpointConnectionError | ReadTimeoutError):
            return self.s3.unavailable(exc, action, target)
        return DatasetStoreUnavailableError(
            f"could not {action} {target} at {endpoint} ({type(exc).__name__}: "
            f"{self._redact(str(exc))}); check {S3_ENDPOINT_SETTING} and the network"
        )

    def _no_bucket(self) -> DatasetStoreUnavailableError:
        return DatasetStoreUnavailableError(
            f"bucket {self.bucket!r} does not exist at {self._endpoint()}; create it (e.g. "
            f"`aws s3 mb s3://{self.bucket} --endpoint-url {self._endpoint()}`) or set "
            "S3DatasetStoreResource.bucket to an existing bucket"
        )

    def _prepare(self) -> None:
        try:
            self._get_client().head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in _MISSING_CODES:
                raise self._no_bucket() from None
            raise self._failure(exc, "open bucket", repr(self.bucket)) from exc
        except BotoCoreError as exc:
            raise self._failure(exc, "open bucket", repr(self.bucket)) from exc

    def _stat(self, version: str, name: str) -> StoredObject | None:
        try:
            head = self._get_client().head_object(Bucket=self.bucket, Key=self._key(version, name))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in _MISSING_CODES:
                return None
            raise self._failure(exc, "read", self._location(version, name)) from exc
        except BotoCoreError as exc:
            raise self._failure(exc, "read", self._location(version, name)) from exc
        return StoredObject(
            sha256=head.get("Metadata", {}).get(SHA256_METADATA_KEY),
            bytes=int(head["ContentLength"]),
        )

    def _send(self, version: str, name: str, source: Path, sha256: str) -> None:
        content_type = "application/json" if name.endswith(".json") else "application/octet-stream"
        try:
            # upload_file switches to multipart uploads for large files; each upload is atomic.
            self._get_client().upload_file(
                str(source),
                self.bucket,
                self._key(version, name),
                ExtraArgs={"Metadata": {SHA256_METADATA_KEY: sha256}, "ContentType": content_type},
            )
        except S3UploadFailedError as exc:
            # s3transfer wraps the ClientError of the failed request in its own error.
            cause = exc.__cause__ if isinstance(exc.__cause__, ClientError) else exc
            raise self._failure(cause, "upload to", self._location(version, name)) from exc
        except (ClientError, BotoCoreError) as exc:
            raise self._failure(exc, "upload to", self._location(version, name)) from exc

    def _read(self, version: str, name: str) -> Iterator[bytes]:
        try:
            response = self._get_client().get_object(
                Bucket=self.bucket, Key=self._key(version, name)
            )
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in _MISSING_CODES:
                raise _Absent(name) from None
            raise self._failure(exc, "download", self._location(version, name)) from exc
        except BotoCoreError as exc:
            raise self._failure(exc, "download", self._location(version, name)) from exc
        body = response["Body"]
        try:
            yield from body.iter_chunks(CHUNK_BYTES)
        except BotoCoreError as exc:
            raise self._failure(exc, "download", self._location(version, name)) from exc
        finally:
            body.close()


class S3JsonIOManager(dg.ConfigurableIOManager):
    """Stores small dict values (dataset, adapter, eval and release descriptors) as JSON objects
    `s3://<bucket>/<prefix>/<asset key>/<partition>.json`, so a step on waterdeep reads what a step
    on the cluster wrote without a shared folder. Each value is one PUT: whole or absent."""

    s3: S3CompatibleResource
    bucket: str = Field(description="Bucket of the asset values (the dataset bucket).")
    prefix: str = Field(default="dagster-values", description="Key prefix of the asset values.")

    def _key(self, asset_key: dg.AssetKey, partition: str | None) -> str:
        return "/".join([self.prefix, *asset_key.path, f"{partition or '__unpartitioned__'}.json"])

    def handle_output(self, context: dg.OutputContext, obj: dict) -> None:
        if not isinstance(obj, dict):
            raise TypeError(
                f"S3JsonIOManager stores dicts; {context.asset_key.to_user_string()} returned "
                f"{type(obj).__name__}"
            )
        partition = context.partition_key if context.has_partition_key else None
        body = json.dumps(obj, indent=2, sort_keys=True).encode("utf-8")
        key = self._key(context.asset_key, partition)
        try:
            self.s3.get_client().put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json"
            )
        except BotoCoreError as exc:
            raise self.s3.unavailable(exc, "upload to", f"s3://{self.bucket}/{key}") from exc

    def stored(self, asset_key: dg.AssetKey, partition: str | None = None) -> dict | None:
        """The last stored value of an asset (partition), or None."""
        client = self.s3.get_client()
        key = self._key(asset_key, partition)
        try:
            response = client.get_object(Bucket=self.bucket, Key=key)
            return json.loads(response["Body"].read().decode("utf-8"))
        except client.exceptions.NoSuchKey:
            return None
        except BotoCoreError as exc:
            raise self.s3.unavailable(exc, "read", f"s3://{self.bucket}/{key}") from exc

    def load_input(self, context: dg.InputContext) -> dict:
        partition = context.partition_key if context.has_partition_key else None
        key = self._key(context.asset_key, partition)
        client = self.s3.get_client()
        try:
            response = client.get_object(Bucket=self.bucket, Key=key)
            return json.loads(response["Body"].read().decode("utf-8"))
        except client.exceptions.NoSuchKey:
            raise dg.Failure(
                description=f"{context.asset_key.to_user_string()} has no stored value at "
                f"s3://{self.bucket}/{key}: materialize it first"
            ) from None
        except BotoCoreError as exc:
            raise self.s3.unavailable(exc, "read", f"s3://{self.bucket}/{key}") from exc


class S3ParquetIOManager(dg.ConfigurableIOManager):
    """Stores DataFrame values (repo snapshots, per-repo sample and signature tables) as parquet
    objects `s3://<bucket>/<prefix>/<asset key>/<partition>.parquet`, attrs included, so the run
    that builds the dataset reads what runs in other pods wrote: nothing shared but the bucket.
    Loaded for several partitions it gives `{partition key: frame}` of those stored, as
    `ParquetIOManager` does."""

    s3: S3CompatibleResource
    bucket: str = Field(description="Bucket of the asset values (the dataset bucket).")
    prefix: str = Field(default="dagster-values", description="Key prefix of the asset values.")

    def _key(self, asset_key: dg.AssetKey, partition: str | None) -> str:
        name = f"{partition or '__unpartitioned__'}.parquet"
        return "/".join([self.prefix, *asset_key.path, name])

    def _get(self, key: str) -> bytes | None:
        client = self.s3.get_client()
        try:
            response = client.get_object(Bucket=self.bucket, Key=key)
            return response["Body"].read()
        except client.exceptions.NoSuchKey:
            return None
        except BotoCoreError as exc:
            raise self.s3.unavailable(exc, "read", f"s3://{self.bucket}/{key}") from exc

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        # Imported here: storage.py is the local side and imports nothing of this module.
        from coder_assets.resources.storage import parquet_bytes

        if not hasattr(obj, "attrs") or not hasattr(obj, "itertuples"):
            raise TypeError(
                f"S3ParquetIOManager stores pandas DataFrames; "
                f"{context.asset_key.to_user_string()} returned {type(obj).__name__}"
            )
        partition = context.partition_key if context.has_partition_key else None
        key = self._key(context.asset_key, partition)
        try:
            self.s3.get_client().put_object(
                Bucket=self.bucket,
                Key=key,
                Body=parquet_bytes(obj),
                ContentType="application/vnd.apache.parquet",
            )
        except BotoCoreError as exc:
            raise self.s3.unavailable(exc, "upload to", f"s3://{self.bucket}/{key}") from exc
        context.add_output_metadata({"uri": dg.MetadataValue.url(f"s3://{self.bucket}/{key}")})

    def stored(self, asset_key: dg.AssetKey, partition: str | None) -> Any:
        """The last stored frame of an asset (partition), or None."""
        from coder_assets.resources.storage import frame_from_parquet_bytes

        data = self._get(self._key(asset_key, partition))
        return None if data is None else frame_from_parquet_bytes(data)

    def load_input(self, context: dg.InputContext) -> Any:
        asset_key = context.asset_key
        keys = list(context.asset_partition_keys) if context.has_asset_partitions else [None]
        if len(keys) == 1 and (keys[0] is None or context.has_partition_key):
            frame = self.stored(asset_key, keys[0])
            if frame is None:
                raise dg.Failure(
                    description=f"{asset_key.to_user_string()} has no stored value at "
                    f"s3://{self.bucket}/{self._key(asset_key, keys[0])}: materialize it first"
                )
            return frame
        # A fan-in (dataset_splits): a repo whose run failed has no object yet; it is left out
        # here and the consumer reports which repos it lacks.
        frames = {}
        for key in keys:
            frame = self.stored(asset_key, key)
            if frame is not None:
                frames[key] = frame
        return frames
