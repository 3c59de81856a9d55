"""The authenticating proxy in front of mlx_lm.server: its API keys file and Caddy's config.

mlx_lm.server has no authentication, so it only ever listens on 127.0.0.1 and Caddy faces the
network: every request needs `Authorization: Bearer <key>`, where the key is one of the named
keys in the keys file on waterdeep (mode 600, one `name key` per line). Anything else gets 401
from Caddy itself and never reaches the model.

How Caddy knows which key was used: a `map` handler maps the Authorization header to the key's
name in the `{http.auth.user.id}` placeholder, which Caddy's access log records as `user_id`;
an empty name (no key, wrong key, revoked key) ends in the 401 route. The access log keeps time,
key name, method, path, status and duration; request headers (the key among them), addresses
and bodies are filtered out, and bodies never reach a Caddy log anyway.

The generated config holds the keys, so it is written with mode 600 into a folder of mode 700,
Caddy's admin endpoint is a unix socket in that folder (a TCP admin port would let any local
user replace the config), and Caddy's autosave copy of its config is turned off.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coder_assets.core.errors import CoderAssetsError
from coder_assets.core.files import write_text_atomic

# The key the pipeline itself uses for readiness probes and smoke tests through the proxy.
PIPELINE_KEY_NAME = "coder-assets"
KEY_BYTES = 32
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
SERVER_NAME = "coder"
ACCESS_LOGGER = f"http.log.access.{SERVER_NAME}"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
# What new_key produces (URL-safe base64); Caddy's header matcher treats `*` as a wildcard, so
# keys are held to this alphabet.
_KEY = re.compile(r"^[A-Za-z0-9_-]{32,256}$")
_LENGTH = "{http.request.header.Content-Length}"
# Unix socket paths are limited to 104 (macOS) or 108 (Linux) bytes.
_MAX_SOCKET_PATH = 100
# Access-log fields that are not kept: headers carry the key, addresses identify people.
_DROPPED_LOG_FIELDS = (
    "request>headers",
    "request>remote_ip",
    "request>remote_port",
    "request>client_ip",
    "request>tls",
    "request>host",
    "resp_headers",
)


class ProxyError(CoderAssetsError):
    """The proxy's keys or config are not usable."""


class KeysFileError(ProxyError):
    """The API keys file is missing, too open, or malformed. Never carries a key."""


@dataclass(frozen=True)
class ApiKey:
    """A named API key; the key itself is kept out of repr (and so out of tracebacks)."""

    name: str
    key: str = field(repr=False)


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe base64)."""
    return secrets.token_urlsafe(KEY_BYTES)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise KeysFileError(
            f"key name {name!r} is not allowed: use 1-64 letters, digits and . _ @ -, starting "
            "with a letter or digit (e.g. laptop-alice)"
        )
    return name


def read_keys(path: Path) -> list[ApiKey]:
    """The keys in `path` (missing file: none). Refuses a file that others can read or write,
    and a malformed line (named by number, never by content: it may hold a key)."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        return []
    if info.st_mode & 0o077:
        raise KeysFileError(
            f"the API keys file {path} has mode {stat.S_IMODE(info.st_mode):04o}: it holds "
            f"secrets, so only its owner may read it; run `chmod 600 {path}` and try again"
        )
    keys: list[ApiKey] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        if len(parts) != 2 or not _NAME.match(parts[0]) or not _KEY.match(parts[1]):
            raise KeysFileError(
                f"line {number} of the API keys file {path} is not `name key` (a name of "
                "letters, digits and . _ @ -, and a key of at least 32 URL-safe base64 "
                "characters): fix or remove that line, or revoke and add the key again"
            )
        if parts[0] in seen:
            raise KeysFileError(
                f"the API keys file {path} names {parts[0]!r} twice (line {number}): remove "
                "one of the two lines"
            )
        if any(k.key == parts[1] for k in keys):
            raise KeysFileError(
                f"the API keys file {path} holds the same key twice (line {number}): give each "
                "name a key of its own (revoke it and add it again)"
            )
        seen.add(parts[0])
        keys.append(ApiKey(parts[0], parts[1]))
    return keys


def write_keys(path: Path, keys: list[ApiKey]) -> None:
    """Write the keys file atomically with mode 600."""
    lines = [
        "# API keys of the model server's proxy: `name key` per line (coder-assets server keys)"
    ]
    lines += [f"{k.name} {k.key}" for k in keys]
    write_text_atomic(Path(path), "\n".join(lines) + "\n", file_mode=0o600)


def add_key(path: Path, name: str) -> ApiKey:
    """Add a new key called `name` and return it (the only time the key is shown)."""
    check_name(name)
    keys = read_keys(path)
    if any(k.name == name for k in keys):
        raise KeysFileError(
            f"a key named {name!r} exists already in {path}: revoke it first "
            f"(`coder-assets server keys revoke {name}`) or choose another name"
        )
    key = ApiKey(name, new_key())
    write_keys(path, [*keys, key])
    return key


def revoke_key(path: Path, name: str) -> None:
    """Remove the key called `name`, or raise KeysFileError naming the keys there are."""
    keys = read_keys(path)
    kept = [k for k in keys if k.name != name]
    if len(kept) == len(keys):
        names = ", ".join(k.name for k in keys) or "none"
        raise KeysFileError(f"no key named {name!r} in {path} (keys: {names})")
    write_keys(path, kept)


def ensure_key(path: Path, name: str) -> ApiKey:
    """The key called `name`, added first when missing."""
    for key in read_keys(path):
        if key.name == name:
            return key
    return add_key(path, name)


@dataclass(frozen=True)
class ProxySpec:
    """Where Caddy listens and forwards to, and where it keeps its socket and logs."""

    host: str
    port: int
    upstream_port: int
    admin_socket: str
    log_path: str
    access_log_path: str
    tls_cert: str = ""
    tls_key: str = ""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)


def check_spec(spec: ProxySpec) -> None:
    """Raise ProxyError naming the setting at fault."""
    if bool(spec.tls_cert) != bool(spec.tls_key):
        raise ProxyError(
            "TLS needs both a certificate and its key: set both CODER_ASSETS_SERVER_TLS_CERT and "
            "CODER_ASSETS_SERVER_TLS_KEY, or neither"
        )
    for what, value in (("certificate", spec.tls_cert), ("key", spec.tls_key)):
        if value and not Path(value).expanduser().is_file():
            raise ProxyError(
                f"the proxy's TLS {what} file {value} does not exist: check "
                f"CODER_ASSETS_SERVER_TLS_{'CERT' if what == 'certificate' else 'KEY'}"
            )
    if spec.port == spec.upstream_port:
        raise ProxyError(
            f"the proxy and the model both on port {spec.port}: set "
            "CODER_ASSETS_SERVER_MODEL_PORT to another port than CODER_ASSETS_SERVER_PORT"
        )
    if len(spec.admin_socket) > _MAX_SOCKET_PATH:
        raise ProxyError(
            f"the proxy's admin socket path {spec.admin_socket} is longer than "
            f"{_MAX_SOCKET_PATH} characters, which unix sockets do not allow: use a shorter "
            "CODER_ASSETS_HOME"
        )
    if spec.max_body_bytes < 1024:
        raise ProxyError(f"request body limit {spec.max_body_bytes} bytes is below 1 KiB")


def listen_address(host: str, port: int) -> str:
    host = {"": "0.0.0.0", "*": "0.0.0.0"}.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def caddy_config(spec: ProxySpec, keys: list[ApiKey]) -> dict[str, Any]:
    """Caddy's JSON config: bearer-key check, body limit, unbuffered reverse proxy to the model
    on 127.0.0.1, optional TLS from files, a filtered access log."""
    check_spec(spec)
    mappings = [{"input": f"Bearer {k.key}", "outputs": [k.name]} for k in keys]
    routes: list[dict[str, Any]] = [
        {
            "handle": [
                {
                    "handler": "map",
                    "source": "{http.request.header.Authorization}",
                    "destinations": ["{http.auth.user.id}"],
                    "mappings": mappings,
                    "defaults": [""],
                }
            ]
        },
        {
            "match": [{"vars": {"{http.auth.user.id}": [""]}}],
            "handle": [
                {
                    "handler": "static_response",
                    "status_code": 401,
                    "headers": {"WWW-Authenticate": ['Bearer realm="coder-assets"']},
                    "body": (
                        '{"error": "missing or unknown API key: send Authorization: Bearer '
                        '<key> (coder-assets server keys add NAME)"}\n'
                    ),
                }
            ],
            "terminal": True,
        },
        {
            # A body announced as too large is refused before anything reaches the model; a
            # chunked one is cut off by request_body below.
            "match": [{"expression": f'{_LENGTH} != "" && int({_LENGTH}) > {spec.max_body_bytes}'}],
            "handle": [
                {
                    "handler": "static_response",
                    "status_code": 413,
                    "body": (
                        f'{{"error": "request body larger than {spec.max_body_bytes} bytes '
                        '(CODER_ASSETS_SERVER_MAX_BODY_BYTES)"}\n'
                    ),
                }
            ],
            "terminal": True,
        },
        {
            "handle": [
                {"handler": "request_body", "max_size": spec.max_body_bytes},
                {
                    "handler": "reverse_proxy",
                    # Streamed completions reach the client token by token.
                    "flush_interval": -1,
                    "upstreams": [{"dial": f"127.0.0.1:{spec.upstream_port}"}],
                },
            ]
        },
    ]
    server: dict[str, Any] = {
        "listen": [listen_address(spec.host, spec.port)],
        "automatic_https": {"disable": True},
        "logs": {"default_logger_name": SERVER_NAME},
        "routes": routes,
    }
    apps: dict[str, Any] = {"http": {"grace_period": 5_000_000_000, "servers": {"proxy": server}}}
    if spec.tls:
        server["tls_connection_policies"] = [{}]
        apps["tls"] = {
            "certificates": {
                "load_files": [
                    {
                        "certificate": str(Path(spec.tls_cert).expanduser()),
                        "key": str(Path(spec.tls_key).expanduser()),
                    }
                ]
            }
        }
    access_encoder = {
        "format": "filter",
        "wrap": {"format": "json"},
        "fields": {name: {"filter": "delete"} for name in _DROPPED_LOG_FIELDS},
    }
    return {
        "admin": {"listen": f"unix/{spec.admin_socket}", "config": {"persist": False}},
        "logging": {
            "logs": {
                "default": {
                    "writer": {"output": "file", "filename": spec.log_path},
                    "exclude": [ACCESS_LOGGER],
                },
                "access": {
                    "writer": {"output": "file", "filename": spec.access_log_path},
                    "encoder": access_encoder,
                    "include": [ACCESS_LOGGER],
                },
            }
        },
        "apps": apps,
    }


def write_config(path: Path, config: dict[str, Any]) -> bool:
    """Write Caddy's config (it holds the keys: mode 600, folder 700) unless unchanged; returns
    whether it was written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    try:
        if path.read_text("utf-8") == text:
            os.chmod(path, 0o600)
            return False
    except FileNotFoundError:
        pass
    write_text_atomic(path, text, file_mode=0o600)
    return True


def caddy_run_command(caddy: str, config_path: str) -> list[str]:
    return [caddy, "run", "--config", config_path]


def caddy_reload_command(caddy: str, config_path: str, admin_socket: str) -> list[str]:
    return [
        caddy,
        "reload",
        "--config",
        config_path,
        "--address",
        f"unix/{admin_socket}",
    ]


def redact(text: str, keys: list[ApiKey]) -> str:
    """`text` with every key replaced by its name, for messages that quote another program."""
    for key in keys:
        text = text.replace(key.key, f"<key {key.name}>")
    return text


def parse_access_line(line: str) -> dict[str, Any] | None:
    """One access-log line as {time, key, method, path, status, duration}; None if not one."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("logger") != ACCESS_LOGGER:
        return None
    request = entry.get("request") or {}
    return {
        "time": entry.get("ts"),
        "key": entry.get("user_id", ""),
        "method": request.get("method"),
        "path": request.get("uri"),
        "status": entry.get("status"),
        "duration": entry.get("duration"),
    }
