"""The launchd agent of the model server: its property list, rendered from the packaged template
`coder_assets/templates/io.daviestechlabs.mlx-coder.plist`, and written to ~/Library/LaunchAgents.

`render_plist` fills the template with XML-escaped values and proves the result with
`plistlib`, so a path with `&` or `<` in it cannot produce an agent launchd refuses, or one that
runs other arguments than the ones given. `install_plist` writes it atomically, only when the
text changed. `binding_warning` says when a listen address reaches beyond loopback and the LAN:
the proxy's keys are the only guard then. `render_proxy_plist` does the same for the agent of
Caddy, the authenticating proxy in front of the server (template
`io.daviestechlabs.mlx-coder.proxy.plist`).
"""

from __future__ import annotations

import ipaddress
import plistlib
import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from xml.sax.saxutils import escape

from coder_assets.core.errors import CoderAssetsError
from coder_assets.core.files import write_text_atomic

TEMPLATE_NAME = "io.daviestechlabs.mlx-coder.plist"
PROXY_TEMPLATE_NAME = "io.daviestechlabs.mlx-coder.proxy.plist"
DEFAULT_LOG_PATH = "~/Library/Logs/mlx-coder.log"
DEFAULT_THROTTLE_SECONDS = 30
# launchd labels are reverse-DNS names; anything else is a typo in a setting.
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Addresses that accept connections on every interface (mlx_lm.server passes host to
# http.server, where "" means all interfaces too).
_EVERY_INTERFACE = {"", "*", "0.0.0.0", "::", "[::]", "0:0:0:0:0:0:0:0"}


class LaunchdPlistError(CoderAssetsError):
    """The launchd property list could not be rendered or installed."""


@dataclass(frozen=True)
class AgentSpec:
    """What the launchd agent runs and where it writes; paths may start with `~`."""

    label: str
    python: str
    model: str
    host: str
    port: int
    log_path: str
    working_directory: str
    hf_hub_cache: str
    adapter_link: str = ""
    throttle_interval: int = DEFAULT_THROTTLE_SECONDS


@dataclass(frozen=True)
class ProxyAgentSpec:
    """What the proxy's launchd agent runs: Caddy with the generated config (which holds the
    keys; the plist names only its path)."""

    label: str
    caddy: str
    config: str
    data_home: str
    log_path: str
    working_directory: str
    throttle_interval: int = DEFAULT_THROTTLE_SECONDS


def template_text(name: str = TEMPLATE_NAME) -> str:
    """A packaged plist template (string.Template placeholders such as `${label}`)."""
    return resources.files("coder_assets").joinpath("templates", name).read_text("utf-8")


def proxy_program_arguments(spec: ProxyAgentSpec) -> list[str]:
    return [_absolute(spec.caddy, "caddy"), "run", "--config", _absolute(spec.config, "config")]


def render_proxy_plist(spec: ProxyAgentSpec) -> str:
    """The proxy agent's property list as text, checked by parsing it back with plistlib."""
    if not _LABEL.match(spec.label):
        raise LaunchdPlistError(
            f"launchd label {spec.label!r} is not a reverse-DNS name: fix the model server's "
            "launchd_label (the proxy's label is it plus .proxy)"
        )
    arguments = proxy_program_arguments(spec)
    values = {
        "label": spec.label,
        "caddy": arguments[0],
        "config": arguments[3],
        "data_home": _absolute(spec.data_home, "Caddy data folder"),
        "working_directory": _absolute(spec.working_directory, "working directory"),
        "log_path": _absolute(spec.log_path, "log path"),
        "throttle_interval": str(spec.throttle_interval),
    }
    return _render_checked(PROXY_TEMPLATE_NAME, spec.label, values, arguments)


def _render_checked(
    template_name: str, label: str, values: dict[str, str], arguments: list[str], **raw: str
) -> str:
    """The template filled with the XML-escaped `values` (and `raw` XML fragments), parsed back
    with plistlib and checked to carry `label` and exactly `arguments`."""
    text = string.Template(template_text(template_name)).substitute(
        {key: escape(value) for key, value in values.items()}, **raw
    )
    try:
        parsed = plistlib.loads(text.encode("utf-8"))
    except Exception as exc:  # plistlib raises expat, ValueError and InvalidFileException alike
        raise LaunchdPlistError(
            f"the rendered launchd plist for {label} is not a valid property list ({exc}): "
            f"a setting holds characters XML cannot carry; values: {values}"
        ) from exc
    if parsed.get("ProgramArguments") != arguments or parsed.get("Label") != label:
        raise LaunchdPlistError(
            f"the rendered launchd plist for {label} does not say what was given: "
            f"ProgramArguments {parsed.get('ProgramArguments')} instead of {arguments}; check "
            f"the template {template_name}"
        )
    return text


def program_arguments(spec: AgentSpec) -> list[str]:
    """The agent's command line: the adapter-path pair only when the adapter link exists now."""
    arguments = [_absolute(spec.python, "python"), "-m", "mlx_lm", "server"]
    arguments += ["--model", _absolute(spec.model, "model")]
    adapter = _adapter_path(spec.adapter_link)
    if adapter is not None:
        arguments += ["--adapter-path", adapter]
    return [*arguments, "--host", spec.host, "--port", str(spec.port)]


def render_plist(spec: AgentSpec) -> str:
    """The agent's property list as text, checked by parsing it back with plistlib.

    Raises LaunchdPlistError naming the setting at fault: a label that is not a reverse-DNS
    name, a relative path (launchd does not expand `~` or resolve relative paths), a port out
    of range, an empty host, a value XML cannot carry.
    """
    if not _LABEL.match(spec.label):
        raise LaunchdPlistError(
            f"launchd label {spec.label!r} is not a reverse-DNS name such as "
            "io.daviestechlabs.mlx-coder: fix the model server's launchd_label"
        )
    if not 1 <= spec.port <= 65535:
        raise LaunchdPlistError(
            f"port {spec.port} is not a TCP port (1-65535): fix CODER_ASSETS_SERVER_PORT"
        )
    if not spec.host.strip() or any(ch.isspace() for ch in spec.host):
        raise LaunchdPlistError(
            f"host {spec.host!r} is not an address to listen on: set CODER_ASSETS_SERVER_HOST to "
            "127.0.0.1 or the Mac's LAN address"
        )
    if spec.throttle_interval < 1:
        raise LaunchdPlistError(
            f"throttle interval {spec.throttle_interval} s must be at least 1 second"
        )
    arguments = program_arguments(spec)
    adapter = ""
    if "--adapter-path" in arguments:
        path = arguments[arguments.index("--adapter-path") + 1]
        adapter = f"\n\t\t<string>--adapter-path</string>\n\t\t<string>{escape(path)}</string>"
    values = {
        "label": spec.label,
        "python": arguments[0],
        "model": arguments[arguments.index("--model") + 1],
        "host": spec.host,
        "port": str(spec.port),
        "hf_hub_cache": _absolute(spec.hf_hub_cache, "HF hub cache"),
        "working_directory": _absolute(spec.working_directory, "working directory"),
        "log_path": _absolute(spec.log_path, "log path"),
        "throttle_interval": str(spec.throttle_interval),
    }
    return _render_checked(TEMPLATE_NAME, spec.label, values, arguments, adapter_arguments=adapter)


def plist_differs(path: Path, text: str) -> bool:
    """Whether the file at `path` is missing or holds something other than `text`."""
    try:
        return Path(path).expanduser().read_bytes() != text.encode("utf-8")
    except FileNotFoundError:
        return True


def install_plist(path: Path, text: str) -> bool:
    """Write `text` to `path` (mode 0644, atomically, creating ~/Library/LaunchAgents) unless it
    holds it already. Returns whether the file was written."""
    target = Path(path).expanduser()
    if not plist_differs(target, text):
        return False
    try:
        write_text_atomic(target, text)
    except OSError as exc:
        raise LaunchdPlistError(
            f"cannot write the launchd plist {target}: {exc}; check that the folder is yours "
            "and writable, or set the model server's launchd_plist elsewhere"
        ) from exc
    return True


def binds_beyond_lan(host: str) -> bool:
    """Whether listening on `host` reaches beyond loopback and the LAN: every interface
    (0.0.0.0, ::) or a public address. Host names are taken at their word."""
    if host.strip() in _EVERY_INTERFACE:
        return True
    try:
        address = ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        return False
    return address.is_unspecified or address.is_global


def binding_warning(host: str, port: int) -> str | None:
    """A sentence for people when `binds_beyond_lan(host)`, else None."""
    if not binds_beyond_lan(host):
        return None
    where = "every interface" if _is_wildcard(host) else f"the public address {host}"
    return (
        f"warning: the model server's proxy listens on {where} (host {host!r}, port {port}). "
        "It asks every request for an API key, but a key that leaks is then usable from "
        "anywhere: set CODER_ASSETS_SERVER_HOST to 127.0.0.1 or the Mac's LAN address, and "
        f"firewall port {port} to the machines that use it."
    )


def _is_wildcard(host: str) -> bool:
    if host.strip() in _EVERY_INTERFACE:
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_unspecified
    except ValueError:
        return False


def _absolute(value: str, what: str) -> str:
    path = Path(value).expanduser()
    if not value or not path.is_absolute():
        raise LaunchdPlistError(
            f"the launchd agent's {what} {value!r} is not an absolute path: launchd neither "
            "expands ~ nor resolves relative paths, so give the full path"
        )
    return str(path)


def _adapter_path(link: str) -> str | None:
    """The adapter link itself (not what it points at, so a restart serves a newly deployed
    adapter), or None when there is no link or it dangles."""
    if not link:
        return None
    path = Path(link).expanduser()
    if not path.exists():
        return None
    return _absolute(link, "adapter link")
