"""The model server on waterdeep: `mlx_lm.server` with the base model and the `latest` adapter.

Two kinds of service:
- `managed`: a process this resource starts and stops itself, recorded in a pid file (Linux, the
  demo and tests; also usable on a Mac).
- `launchd`: the macOS launchd agent that serves the model on waterdeep, driven with `launchctl`.
  Its property list is rendered from the packaged template (core/deployment/launchd.py);
  `ensure_plist` keeps the installed copy current and reloads a loaded agent when it changed.

The proxy: mlx_lm.server has no authentication, so it listens on 127.0.0.1:model_port only,
and Caddy (core/deployment/proxy.py) listens on host:port, asks every request for a known API key
and forwards it. Both are started, stopped, restarted and status-checked together: the managed kind
keeps a second pid file for Caddy, the launchd kind a second agent (`<label>.proxy`). Adding
or revoking a key rewrites Caddy's config and reloads Caddy; the model keeps running.

Readiness: mlx-lm 0.32's `GET /health` answers "ok" while the model is still loading, and
`GET /v1/models` lists `--model` as soon as the directory exists, loaded or not. So `wait_ready`
asks `/v1/models` for the model, fails fast when `/health` reports the generation thread dead
(the model failed to load), and then has the server complete one token: only that proves the
model and adapter are loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import requests
from pydantic import Field

from coder_assets.core.deployment.launchd import (
    DEFAULT_LOG_PATH,
    DEFAULT_THROTTLE_SECONDS,
    AgentSpec,
    ProxyAgentSpec,
    install_plist,
    plist_differs,
    render_plist,
    render_proxy_plist,
)
from coder_assets.core.deployment.proxy import (
    DEFAULT_MAX_BODY_BYTES,
    PIPELINE_KEY_NAME,
    ProxySpec,
    caddy_config,
    caddy_reload_command,
    caddy_run_command,
    ensure_key,
    read_keys,
    redact,
    write_config,
)
from coder_assets.core.errors import CoderAssetsError
from coder_assets.core.files import write_json_atomic
from coder_assets.step_worker import default_termination_signals

PID_FILE = "mlx-server.pid"
LOG_FILE = "mlx-server.log"
# The proxy's folder in state_dir (mode 700): Caddy's config, admin socket, pid file and logs.
PROXY_DIR = "proxy"
KEYS_FILE = "api-keys"
CADDY_CONFIG = "caddy.json"
CADDY_PID_FILE = "caddy.pid"
CADDY_LOG = "caddy.log"
ACCESS_LOG = "access.log"
ADMIN_SOCKET = "admin.sock"
# What the model server should be doing, recorded on waterdeep next to the pid file: every step
# that pauses the server restores this state, whatever the previous holder of waterdeep did.
DESIRED_FILE = "desired-state.json"
SERVING, STOPPED = "serving", "stopped"
# An empty Hugging Face cache for the managed server: its /v1/models scans the HF cache and, in
# mlx-lm 0.32, answers 200 with an empty body when the cache directory does not exist.
HF_CACHE_DIR = "hf-hub-cache"
_POLL_SECONDS = 0.5
_LOG_TAIL_LINES = 40
# Each start appends this marker line to the log, so errors come from the latest start only.
_START_MARKER = "=== "
# The server's access-log lines of wait_ready's own requests.
_PROBE_LINE = re.compile(r'"(GET /v1/models|GET /health|POST /v1/completions) HTTP/1\.[01]" \d+')
# Processes started by this Python process, so that liveness checks reap them instead of
# mistaking an exited child (a zombie until waited for) for a running server.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class ModelServerError(CoderAssetsError):
    """The model server could not be started, stopped or reached."""


@dataclass(frozen=True)
class ServerStatus:
    """Whether the server process runs, its pid, and a sentence for people."""

    running: bool
    pid: int | None
    detail: str


@dataclass(frozen=True)
class DesiredState:
    """What the model server should be doing (`serving` or `stopped`), who said so and when.
    `recorded` is False for the default of a fresh waterdeep (serving iff an adapter is
    deployed)."""

    state: str
    by: str
    at: str
    recorded: bool = True

    @property
    def serving(self) -> bool:
        return self.state == SERVING

    def describe(self) -> str:
        if not self.recorded:
            return f"{self.state} ({self.by})"
        return f"{self.state} (set by {self.by} at {self.at})"


@dataclass
class PausedServer:
    """What `ModelServerResource.paused` found: whether the server ran, and why it paused;
    after the block, `down_seconds`: how long the model was not served, from the stop until
    it answered again (0 when it was not serving and was not to serve)."""

    was_running: bool
    reason: str
    down_seconds: float = 0.0


def port_in_use(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on `host:port` (wildcards mean loopback)."""
    target = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False


def launchctl_commands(
    action: str, uid: int, label: str, plist: str, *, loaded: bool = True
) -> list[list[str]]:
    """The `launchctl` command lines for `action` on the agent `label` of user `uid`.

    Actions: "status" (print the service), "start" (start it unless running), "restart" (kill
    and start it), "stop" (unload it, so KeepAlive cannot bring it back). `loaded` says whether
    the service is bootstrapped already; if not, start and restart bootstrap `plist` first and
    stop has nothing to do.
    """
    domain = f"gui/{uid}"
    service = f"{domain}/{label}"
    bootstrap = [] if loaded else [["launchctl", "bootstrap", domain, plist]]
    if action == "status":
        return [["launchctl", "print", service]]
    if action == "start":
        return [*bootstrap, ["launchctl", "kickstart", service]]
    if action == "restart":
        return [*bootstrap, ["launchctl", "kickstart", "-k", service]]
    if action == "stop":
        return [["launchctl", "bootout", service]] if loaded else []
    raise ValueError(f"unknown launchctl action {action!r}: use status, start, restart or stop")


class ModelServerResource(dg.ConfigurableResource):
    """`mlx_lm.server` serving the base model with the `latest` adapter on waterdeep."""

    kind: str = Field(
        default="managed",
        description=(
            "managed: a process started and stopped by this resource, with a pid file in "
            "state_dir (Linux, demo); launchd: the macOS launchd agent (waterdeep)."
        ),
    )
    host: str = Field(
        default="127.0.0.1", description="Address the proxy (Caddy) listens on for clients."
    )
    port: int = Field(default=8080, description="Port the proxy (Caddy) listens on.")
    model_port: int = Field(
        default=0,
        description="Port mlx_lm.server listens on, always on 127.0.0.1; 0: port + 1.",
    )
    caddy: str = Field(default="caddy", description="The Caddy executable (PATH or full path).")
    keys_file: str = Field(
        default="",
        description="API keys file (mode 600, `name key` per line); default state_dir/proxy/"
        "api-keys.",
    )
    tls_cert: str = Field(default="", description="TLS certificate file of the proxy (PEM).")
    tls_key: str = Field(default="", description="TLS private key file of the proxy (PEM).")
    tls_ca: str = Field(
        default="",
        description="CA bundle the pipeline's own requests to the proxy verify it with; "
        "default: the system's.",
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES, description="Largest request body the proxy forwards."
    )
    model_path: str = Field(description="Base model directory (MLX format) given as --model.")
    adapter_link: str = Field(
        default="",
        description=(
            "Path of the `latest` adapter link; --adapter-path (resolved) is passed only when "
            "it exists."
        ),
    )
    state_dir: str = Field(
        description="Directory of the managed server's pid file and log file (mlx-server.log)."
    )
    python: str = Field(
        default="",
        description="Python interpreter with mlx-lm for the managed server; default: this one.",
    )
    launchd_label: str = Field(
        default="io.daviestechlabs.mlx-coder", description="Label of the launchd agent."
    )
    launchd_plist: str = Field(
        default="~/Library/LaunchAgents/io.daviestechlabs.mlx-coder.plist",
        description="Property list of the launchd agent, bootstrapped when not loaded.",
    )
    launchd_log: str = Field(
        default=DEFAULT_LOG_PATH,
        description="The launchd agent's stdout and stderr log (managed: in state_dir).",
    )
    launchd_throttle_seconds: int = Field(
        default=DEFAULT_THROTTLE_SECONDS,
        description="launchd's ThrottleInterval: at least this many seconds between two starts.",
    )
    ready_timeout_seconds: float = Field(
        default=120.0, description="How long wait_ready waits for the model to be served."
    )
    extra_args: list[str] = Field(
        default=[], description="Further mlx_lm.server arguments (managed kind)."
    )

    # --- paths and command line ---------------------------------------------------------------

    def url(self) -> str:
        """Base URL of the proxy clients use, e.g. http://127.0.0.1:8080 (https with TLS)."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{host}:{self.port}"

    def backend_port(self) -> int:
        return self.model_port or self.port + 1

    def model_url(self) -> str:
        """Base URL of mlx_lm.server itself, on loopback only."""
        return f"http://127.0.0.1:{self.backend_port()}"

    # --- proxy ------------------------------------------------------------------------------------

    def proxy_dir(self) -> Path:
        return self.state_path() / PROXY_DIR

    def keys_path(self) -> Path:
        return Path(self.keys_file).expanduser() if self.keys_file else self.proxy_dir() / KEYS_FILE

    def proxy_config_path(self) -> Path:
        return self.proxy_dir() / CADDY_CONFIG

    def access_log(self) -> Path:
        return self.proxy_dir() / ACCESS_LOG

    def proxy_log(self) -> Path:
        return self.proxy_dir() / CADDY_LOG

    def proxy_spec(self) -> ProxySpec:
        return ProxySpec(
            host=self.host,
            port=self.port,
            upstream_port=self.backend_port(),
            admin_socket=str(self.proxy_dir() / ADMIN_SOCKET),
            log_path=str(self.proxy_log()),
            access_log_path=str(self.access_log()),
            tls_cert=self.tls_cert,
            tls_key=self.tls_key,
            max_body_bytes=self.max_body_bytes,
        )

    def pipeline_key(self) -> str:
        """The key the pipeline's own probes and smoke tests send (added when missing)."""
        self._prepare_proxy_dir()
        return ensure_key(self.keys_path(), PIPELINE_KEY_NAME).key

    def client_options(self) -> dict[str, Any]:
        """`api_key` and `verify` for the pipeline's own requests through the proxy."""
        return {"api_key": self.pipeline_key(), "verify": self.tls_ca or True}

    def write_proxy_config(self) -> bool:
        """Render Caddy's config from the settings and the keys file (the pipeline's key added
        when missing) and write it (mode 600) when it changed; returns whether it changed."""
        self.pipeline_key()
        config = caddy_config(self.proxy_spec(), read_keys(self.keys_path()))
        return write_config(self.proxy_config_path(), config)

    def reload_proxy(self) -> bool:
        """Apply the keys file to a running proxy without touching the model; returns whether
        a running proxy was reloaded (a stopped one reads the config when it starts)."""
        self.write_proxy_config()
        if not self.proxy_running():
            return False
        spec = self.proxy_spec()
        command = caddy_reload_command(
            self._caddy(), str(self.proxy_config_path()), spec.admin_socket
        )
        proc = self._run(command)
        if proc.returncode != 0:
            # Caddy's answer names the config problem; any key it quotes is replaced by its name.
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            message = redact(detail[0], read_keys(self.keys_path()))[:300]
            raise ModelServerError(
                f"Caddy did not reload {self.proxy_config_path()}: {message}; the previous keys "
                f"stay in force. See {self.proxy_log()}"
            )
        return True

    def proxy_running(self) -> bool:
        if self.kind == "launchd":
            return self._launchd_status(self.proxy_label()).running
        record = self._read_pid_file(self.proxy_pid_file())
        return record is not None and _is_process(record["pid"], "caddy")

    def proxy_pid_file(self) -> Path:
        return self.proxy_dir() / CADDY_PID_FILE

    def proxy_label(self) -> str:
        return f"{self.launchd_label}.proxy"

    def proxy_plist_path(self) -> Path:
        path = self.plist_path()
        return path.with_name(f"{self.proxy_label()}.plist")

    def proxy_agent_spec(self) -> ProxyAgentSpec:
        return ProxyAgentSpec(
            label=self.proxy_label(),
            caddy=self._caddy(),
            config=str(self.proxy_config_path()),
            data_home=str(self.proxy_dir() / "caddy-data"),
            log_path=str(self.proxy_dir() / "caddy-agent.log"),
            working_directory=str(self.proxy_dir()),
            throttle_interval=self.launchd_throttle_seconds,
        )

    def render_proxy_plist(self) -> str:
        return render_proxy_plist(self.proxy_agent_spec())

    def _caddy(self) -> str:
        found = shutil.which(self.caddy)
        if found is None:
            raise ModelServerError(
                f"Caddy ({self.caddy!r}) is not installed: the model server is only reachable "
                "through it. Install it (`brew install caddy` on the Mac, `apt-get install "
                "caddy` on Debian, or `make system-deps`) or set CODER_ASSETS_SERVER_CADDY"
            )
        return str(Path(found).resolve())

    def _prepare_proxy_dir(self) -> None:
        self.proxy_dir().mkdir(parents=True, exist_ok=True)
        os.chmod(self.proxy_dir(), 0o700)

    def _proxy_env(self) -> dict[str, str]:
        data = str(self.proxy_dir() / "caddy-data")
        return {**os.environ, "XDG_DATA_HOME": data, "XDG_CONFIG_HOME": data}

    def start_proxy(self) -> None:
        """Start Caddy (managed kind) unless it runs."""
        self.write_proxy_config()
        if self.proxy_running():
            return
        if port_in_use(self.host, self.port):
            raise ModelServerError(
                f"cannot start the proxy on {self.url()}: something else already listens on "
                f"port {self.port}; stop that process or choose another CODER_ASSETS_SERVER_PORT"
            )
        command = caddy_run_command(self._caddy(), str(self.proxy_config_path()))
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        with open(self.proxy_log(), "ab") as log:
            log.write(f"\n{_START_MARKER}{started_at} starting: {' '.join(command)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._proxy_env(),
                cwd=self.proxy_dir(),
                start_new_session=True,
                preexec_fn=default_termination_signals,
            )
        _CHILDREN[proc.pid] = proc
        write_json_atomic(
            self.proxy_pid_file(), {"pid": proc.pid, "command": command, "url": self.url()}
        )

    def stop_proxy(self, timeout: float = 15) -> None:
        record = self._read_pid_file(self.proxy_pid_file())
        if record is None:
            return
        pid = record["pid"]
        if _is_process(pid, "caddy"):
            _signal_group(pid, signal.SIGTERM)
            if not _wait_exit(pid, timeout):
                _signal_group(pid, signal.SIGKILL)
                _wait_exit(pid, 10)
        self.proxy_pid_file().unlink(missing_ok=True)

    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser()

    def pid_file(self) -> Path:
        return self.state_path() / PID_FILE

    def desired_state_file(self) -> Path:
        return self.state_path() / DESIRED_FILE

    def desired_state(self) -> DesiredState:
        """The recorded desired state; without a record, serving iff an adapter is deployed."""
        try:
            record = json.loads(self.desired_state_file().read_text("utf-8"))
            if record.get("state") in (SERVING, STOPPED):
                return DesiredState(
                    str(record["state"]), str(record.get("by", "?")), str(record.get("at", "?"))
                )
        except (FileNotFoundError, ValueError, AttributeError):
            pass
        if self.adapter_dir() is not None:
            return DesiredState(SERVING, "default: an adapter is deployed", "", recorded=False)
        return DesiredState(STOPPED, "default: no adapter is deployed", "", recorded=False)

    def set_desired_state(self, state: str, by: str) -> DesiredState:
        """Record that the server should be `serving` or `stopped` (an operator's `coder-assets
        server stop` says stopped; start, restart and a deploy say serving)."""
        if state not in (SERVING, STOPPED):
            raise ValueError(f"desired state {state!r}: use {SERVING} or {STOPPED}")
        at = datetime.now(UTC).isoformat(timespec="seconds")
        write_json_atomic(self.desired_state_file(), {"state": state, "by": by, "at": at})
        return DesiredState(state, by, at)

    def restore_desired_state(self, reason: str) -> None:
        """Bring the server to its desired state: start it and its proxy (and wait until they
        serve) when it should serve and either does not run; a server that should be stopped is
        left as it is."""
        if not self.desired_state().serving or (self.status().running and self.proxy_running()):
            return
        dg.get_dagster_logger().info(
            f"starting the model server at {self.url()} after {reason}: its desired state is "
            f"{self.desired_state().describe()}"
        )
        self.start()
        self.wait_ready()

    def log_file(self) -> Path:
        """The server's log: the pid-file process's in state_dir, or the launchd agent's."""
        if self.kind == "launchd":
            return Path(self.launchd_log).expanduser()
        return self.state_path() / LOG_FILE

    def model_dir(self) -> Path:
        return Path(self.model_path).expanduser().resolve()

    def adapter_dir(self) -> Path | None:
        """The directory the adapter link points at now, or None without an existing link."""
        if not self.adapter_link:
            return None
        link = Path(self.adapter_link).expanduser()
        return link.resolve() if link.exists() else None

    def server_command(self) -> list[str]:
        """The managed server's command line. The adapter link is resolved here, so the command
        (kept in the pid file and log) names the adapter version that is served."""
        command = [self.python or sys.executable, "-m", "mlx_lm", "server"]
        command += ["--model", str(self.model_dir())]
        adapter = self.adapter_dir()
        if adapter is not None:
            command += ["--adapter-path", str(adapter)]
        # Loopback only: the proxy is the one way in.
        command += ["--host", "127.0.0.1", "--port", str(self.backend_port()), *self.extra_args]
        return command

    def server_env(self) -> dict[str, str]:
        """The managed server's environment: offline, with an empty HF cache of its own."""
        return {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_CACHE": str(self.state_path() / HF_CACHE_DIR),
        }

    # --- launchd agent ---------------------------------------------------------------------------

    def plist_path(self) -> Path:
        return Path(self.launchd_plist).expanduser()

    def agent_spec(self) -> AgentSpec:
        """What the launchd agent runs: the same model, adapter link, address and offline HF
        cache as the managed server, with the link itself as adapter path (see the template)."""
        return AgentSpec(
            label=self.launchd_label,
            python=self.python or sys.executable,
            model=str(self.model_dir()),
            adapter_link=self.adapter_link,
            host="127.0.0.1",
            port=self.backend_port(),
            log_path=self.launchd_log,
            working_directory=str(self.state_path()),
            hf_hub_cache=str(self.state_path() / HF_CACHE_DIR),
            throttle_interval=self.launchd_throttle_seconds,
        )

    def render_plist(self) -> str:
        """The launchd agent's property list for the current settings and adapter link."""
        return render_plist(self.agent_spec())

    def install_commands(self, *, loaded: bool, changed: bool) -> list[list[str]]:
        """The launchctl command lines that `ensure_plist` and `start` run to install the agent:
        bootstrap a new one, reload (bootout, bootstrap) a loaded one whose plist changed."""
        commands: list[list[str]] = []
        for args in (self._launchd_args(), self._launchd_proxy_args()):
            if loaded and not changed:
                commands += launchctl_commands("start", *args, loaded=True)
                continue
            commands += launchctl_commands("stop", *args, loaded=True) if loaded else []
            commands += launchctl_commands("start", *args, loaded=False)
        return commands

    def ensure_plist(self) -> bool:
        """Keep the installed launchd plist current (launchd kind; the managed kind has none).

        Renders the plist again (the adapter link may exist now) and, when the text differs
        from the installed file, writes it; an agent that is loaded is then reloaded (bootout,
        bootstrap), since launchd reads the plist only when bootstrapping. Returns whether the
        plist changed. The folders the agent needs (state dir, HF cache, log folder) are
        created either way.
        """
        if self.kind != "launchd":
            return False
        self.write_proxy_config()
        proxy_text = self.render_proxy_plist()
        if plist_differs(self.proxy_plist_path(), proxy_text):
            install_plist(self.proxy_plist_path(), proxy_text)
            if self._launchd_loaded(self._launchd_proxy_args()):
                self._run_all(launchctl_commands("stop", *self._launchd_proxy_args()))
                self._run_all(
                    launchctl_commands("start", *self._launchd_proxy_args(), loaded=False)
                )
        text = self.render_plist()
        self._prepare_agent_dirs()
        path = self.plist_path()
        if not plist_differs(path, text):
            return False
        # Written before the reload: a plist that cannot be written leaves the agent running.
        install_plist(path, text)
        if self._launchd_loaded():
            self.stop()
            self._wait_unloaded(timeout=30)
            self.start()
        return True

    # --- lifecycle ------------------------------------------------------------------------------

    def status(self) -> ServerStatus:
        """Whether the server runs. A managed pid file whose process is gone (or is no longer
        an mlx-lm server) is removed."""
        if self.kind == "launchd":
            model = self._launchd_status()
        else:
            model = self._managed_status()
        proxy = "running" if self.proxy_running() else "not running"
        return ServerStatus(
            model.running, model.pid, f"{model.detail}; proxy {proxy} on {self.url()}"
        )

    def _managed_status(self) -> ServerStatus:
        self._check_kind()
        record = self._read_pid_file()
        if record is None:
            return ServerStatus(False, None, f"not running (no pid file at {self.pid_file()})")
        pid = record["pid"]
        if not _is_server_process(pid):
            self.pid_file().unlink(missing_ok=True)
            return ServerStatus(
                False, None, f"not running (removed stale pid file of gone pid {pid})"
            )
        listening = (
            "listening" if port_in_use("127.0.0.1", self.backend_port()) else "not listening yet"
        )
        return ServerStatus(True, pid, f"pid {pid}, {listening} on {self.model_url()}")

    def start(self) -> ServerStatus:
        """Start the server unless it runs; returns at once, see wait_ready.

        A running server is left as it is, with the model and adapter it loaded: use restart
        to serve a new adapter.
        """
        if self.kind == "launchd":
            self.write_proxy_config()
            for args in (self._launchd_args(), self._launchd_proxy_args()):
                loaded = self._launchd_loaded(args)
                self._run_all(launchctl_commands("start", *args, loaded=loaded))
            return self.status()
        proxy_was_running = self.proxy_running()
        self.start_proxy()
        try:
            return self._start_model()
        except BaseException:
            # A model that cannot start leaves no proxy behind that this call started.
            if not proxy_was_running:
                self.stop_proxy()
            raise

    def _start_model(self) -> ServerStatus:
        current = self._managed_status()
        if current.running:
            return current
        if port_in_use("127.0.0.1", self.backend_port()):
            raise ModelServerError(
                f"cannot start the model server on {self.model_url()}: something else already "
                f"listens on port {self.backend_port()} (no pid file of ours at "
                f"{self.pid_file()}); stop that process or choose another "
                "CODER_ASSETS_SERVER_MODEL_PORT"
            )
        model_dir = self.model_dir()
        if not (model_dir / "config.json").is_file():
            raise ModelServerError(
                f"model_path {model_dir} has no config.json: point the model server's model_path "
                "at an MLX model directory"
            )
        command = self.server_command()
        state = self.state_path()
        (state / HF_CACHE_DIR).mkdir(parents=True, exist_ok=True)
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        with open(self.log_file(), "ab") as log:
            log.write(f"\n{_START_MARKER}{started_at} starting: {' '.join(command)}\n".encode())
            log.flush()
            # Its own session: stop() signals the whole group, and a Ctrl-C or the end of the
            # Dagster step that started it does not take the server down.
            try:
                proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.server_env(),
                    cwd=state,
                    start_new_session=True,
                    # stop() ends it with SIGTERM, which must not stay ignored if this process
                    # was started with it ignored (a background shell, some supervisors).
                    preexec_fn=default_termination_signals,
                )
            except OSError as exc:
                raise ModelServerError(
                    f"cannot run the model server's interpreter {command[0]}: {exc}; set the "
                    "model server's `python` to a Python with mlx-lm installed"
                ) from exc
        _CHILDREN[proc.pid] = proc
        write_json_atomic(
            self.pid_file(),
            {"pid": proc.pid, "command": command, "url": self.url(), "started_at": started_at},
        )
        return ServerStatus(True, proc.pid, f"started pid {proc.pid} on {self.url()}")

    def stop(self, timeout: float = 30) -> None:
        """Stop the server and wait for it to exit: SIGTERM to its process group, SIGKILL after
        `timeout` seconds. A stale pid file is just removed."""
        if self.kind == "launchd":
            for args in (self._launchd_args(), self._launchd_proxy_args()):
                loaded = self._launchd_loaded(args)
                self._run_all(launchctl_commands("stop", *args, loaded=loaded))
            self._wait_port_free(timeout)
            return
        self._check_kind()
        self.stop_proxy()
        record = self._read_pid_file()
        if record is None:
            return
        pid = record["pid"]
        if _is_server_process(pid):
            _signal_group(pid, signal.SIGTERM)
            if not _wait_exit(pid, timeout):
                _signal_group(pid, signal.SIGKILL)
                if not _wait_exit(pid, 10):
                    raise ModelServerError(
                        f"model server pid {pid} ({self.url()}) survived SIGKILL for 10 s; "
                        f"check it with `ps -p {pid}` and remove {self.pid_file()} once it is gone"
                    )
            self._wait_port_free(timeout)
        self.pid_file().unlink(missing_ok=True)

    def restart(self) -> ServerStatus:
        """Stop (if running) and start the server, then wait until it serves the model: the
        way to serve a new `latest` adapter."""
        if self.kind == "launchd":
            self.write_proxy_config()
            for args in (self._launchd_args(), self._launchd_proxy_args()):
                loaded = self._launchd_loaded(args)
                self._run_all(launchctl_commands("restart", *args, loaded=loaded))
        else:
            self.stop()
            self.start()
        self.wait_ready()
        return self.status()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the server serves the model, or raise ModelServerError.

        Ready means: `GET /v1/models` answers 200 listing `model_path`, and a one-token
        completion succeeds. Polls every ~0.5 s up to `timeout` (default ready_timeout_seconds);
        gives up early when the managed process exits or `/health` says the model failed to load.
        """
        limit = self.ready_timeout_seconds if timeout is None else timeout
        deadline = time.monotonic() + limit
        url = self.url()
        last = "no answer yet"
        while True:
            ready, last, hopeless = self._probe(deadline)
            if ready:
                return
            remaining = deadline - time.monotonic()
            if hopeless or remaining <= 0:
                break
            time.sleep(min(_POLL_SECONDS, remaining))
        waited = "gave up early" if hopeless else f"not ready within {limit:g} s"
        raise ModelServerError(
            f"model server {url} {waited}: {last}. Last lines of {self.log_file()}:\n"
            + self.log_tail()
        )

    @contextlib.contextmanager
    def paused(self, reason: str) -> Iterator[PausedServer]:
        """Stop the server for the block (e.g. training needs the memory) and bring it back to
        its desired state afterwards, waiting until it is ready, whatever way the block ends.

        The desired state, not what this call found, decides: a previous holder killed with
        SIGKILL leaves the server stopped, and its retry must still start it again. A running
        server without a recorded desired state is recorded as serving first, so that a holder
        killed from here on is followed by a restart too."""
        log = dg.get_dagster_logger()
        was_running = self.status().running
        desired = self.desired_state()
        if was_running and not desired.recorded:
            desired = self.set_desired_state(SERVING, f"{reason} (found it serving)")
        if not was_running and desired.serving:
            log.warning(
                f"the model server at {self.url()} is not running although its desired state is "
                f"{desired.describe()} (a previous holder of waterdeep ended without restoring "
                f"it): it is started after {reason}"
            )
        paused = PausedServer(was_running, reason)
        # Down from here when it serves now, or when it should serve and does not.
        down_since = time.monotonic() if was_running or desired.serving else None
        try:
            if was_running:
                log.info(f"stopping the model server at {self.url()} for {reason}")
                self.stop()
            yield paused
        finally:
            # Also on KeyboardInterrupt and GeneratorExit: a cancelled training run must not
            # leave waterdeep without its model server.
            try:
                self.restore_desired_state(reason)
            finally:
                if down_since is not None:
                    paused.down_seconds = time.monotonic() - down_since
                    log.info(
                        f"the model server at {self.url()} was down {paused.down_seconds:.1f} s "
                        f"for {reason}"
                    )

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last `lines` lines the latest managed server start wrote to its log file, without
        the access-log lines of readiness probes (they would crowd out the error)."""
        try:
            with open(self.log_file(), "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 256 * 1024))
                text = handle.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return f"(no log file at {self.log_file()})"
        _, marker, since = text.rpartition(f"\n{_START_MARKER}")
        latest = marker.lstrip("\n") + since
        kept = [line for line in latest.splitlines() if not _PROBE_LINE.search(line)]
        return "\n".join(kept[-lines:])

    # --- internals ------------------------------------------------------------------------------

    def _probe(self, deadline: float) -> tuple[bool, str, bool]:
        """One readiness attempt: (ready, what was seen, whether waiting on is pointless)."""
        url = self.model_url()
        if self.kind != "launchd":
            record = self._read_pid_file()
            if record is None:
                return False, f"no managed server running (no pid file at {self.pid_file()})", True
            if not _is_server_process(record["pid"]):
                return False, f"the server process (pid {record['pid']}) exited", True

        def timeout(most: float) -> float:
            return max(0.2, min(most, deadline - time.monotonic()))

        try:
            response = requests.get(f"{url}/v1/models", timeout=timeout(5))
        except requests.RequestException as exc:
            return False, f"GET {url}/v1/models failed: {type(exc).__name__}", False
        try:
            body = response.json()
        except ValueError:
            return False, f"GET {url}/v1/models answered {response.status_code}, not JSON", False
        models = (
            body.get("data") if response.status_code == 200 and isinstance(body, dict) else None
        )
        if not models:
            return (
                False,
                f"GET {url}/v1/models answered {response.status_code}: {str(body)[:200]}",
                False,
            )
        ids = [str(m.get("id")) for m in models if isinstance(m, dict)]
        if str(self.model_dir()) not in ids:
            return (
                False,
                f"{url} serves {ids}, not model_path {self.model_dir()}: the server runs another "
                "model (check the launchd plist or what else listens on the port)",
                True,
            )
        try:
            health = requests.get(f"{url}/health", timeout=timeout(5))
            if health.status_code == 503:
                return False, "/health says the model failed to load (see the log)", True
            completion = requests.post(
                f"{url}/v1/completions",
                json={"prompt": "\n", "max_tokens": 1, "temperature": 0.0},
                timeout=timeout(30),
            )
        except requests.RequestException as exc:
            return False, f"one-token completion failed: {type(exc).__name__}", False
        if completion.status_code != 200:
            return False, f"one-token completion answered {completion.status_code}", False
        return self._probe_proxy(timeout(10))

    def _probe_proxy(self, timeout: float) -> tuple[bool, str, bool]:
        """Whether the proxy forwards a request with the pipeline's key to the model."""
        if self.kind != "launchd" and not self.proxy_running():
            return False, f"the proxy (Caddy) is not running; see {self.proxy_log()}", True
        options = self.client_options()
        try:
            response = requests.get(
                f"{self.url()}/v1/models",
                headers={"Authorization": f"Bearer {options['api_key']}"},
                verify=options["verify"],
                timeout=timeout,
            )
        except requests.exceptions.SSLError as exc:
            return False, f"the proxy's TLS certificate is not trusted: {exc}", True
        except requests.RequestException as exc:
            return False, f"GET {self.url()}/v1/models failed: {type(exc).__name__}", False
        if response.status_code != 200:
            return False, f"the proxy answered {response.status_code} to the pipeline's key", False
        return True, "ready", False

    def _check_kind(self) -> None:
        if self.kind != "managed":
            raise ModelServerError(
                f"model server kind {self.kind!r} is not known: set kind to managed or launchd"
            )

    def _read_pid_file(self, path: Path | None = None) -> dict[str, Any] | None:
        pid_file = path or self.pid_file()
        try:
            record = json.loads(pid_file.read_text("utf-8"))
            pid = int(record["pid"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            # Not ours to trust; a pid file is only ever written whole (os.replace).
            pid_file.unlink(missing_ok=True)
            return None
        return {**record, "pid": pid}

    def _wait_port_free(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        port = self.backend_port()
        while port_in_use("127.0.0.1", port):
            if time.monotonic() > deadline:
                raise ModelServerError(
                    f"port {port} still answers {timeout:g} s after stopping the model "
                    f"server at {self.model_url()}: find the process with `lsof -i :{port}`"
                )
            time.sleep(0.2)

    def _launchd_args(self) -> tuple[int, str, str]:
        return os.getuid(), self.launchd_label, str(Path(self.launchd_plist).expanduser())

    def _launchd_proxy_args(self) -> tuple[int, str, str]:
        return os.getuid(), self.proxy_label(), str(self.proxy_plist_path())

    def _launchd_loaded(self, args: tuple[int, str, str] | None = None) -> bool:
        (command,) = launchctl_commands("status", *(args or self._launchd_args()))
        return self._run(command).returncode == 0

    def _wait_unloaded(self, timeout: float) -> None:
        """Wait until launchd has removed the booted-out agent: bootstrapping a label that is
        still being removed fails (`Bootstrap failed: 5: Input/output error`)."""
        deadline = time.monotonic() + timeout
        while self._launchd_loaded():
            if time.monotonic() > deadline:
                raise ModelServerError(
                    f"launchd agent {self.launchd_label} is still loaded {timeout:g} s after "
                    f"`launchctl bootout`: check it with `launchctl print gui/{os.getuid()}/"
                    f"{self.launchd_label}` and try again"
                )
            time.sleep(0.2)

    def _prepare_agent_dirs(self) -> None:
        """launchd creates neither the working directory nor the log's folder, and the server
        needs its (empty) HF cache folder to exist."""
        for folder in (
            self.state_path() / HF_CACHE_DIR,
            Path(self.launchd_log).expanduser().parent,
        ):
            folder.mkdir(parents=True, exist_ok=True)

    def _launchd_status(self, label: str | None = None) -> ServerStatus:
        args = self._launchd_args() if label is None else self._launchd_proxy_args()
        (command,) = launchctl_commands("status", *args)
        proc = self._run(command)
        service = command[-1]
        if proc.returncode != 0:
            return ServerStatus(False, None, f"launchd service {service} is not loaded")
        fields = _launchctl_fields(proc.stdout)
        pid = int(fields["pid"]) if fields.get("pid", "").isdigit() else None
        state = fields.get("state", "unknown")
        return ServerStatus(state == "running" and pid is not None, pid, f"{service}: {state}")

    def _run_all(self, commands: list[list[str]]) -> None:
        for command in commands:
            proc = self._run(command)
            if proc.returncode != 0:
                raise ModelServerError(
                    f"`{' '.join(command)}` failed with exit code {proc.returncode}: "
                    f"{(proc.stderr or proc.stdout).strip()}; check launchd_label and "
                    f"launchd_plist ({self.launchd_plist})"
                )

    def _run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        """Run one launchctl command (tests replace this)."""
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        except FileNotFoundError as exc:
            raise ModelServerError(
                f"cannot run `{' '.join(command)}`: {command[0]} is not installed. The launchd "
                "kind needs macOS; elsewhere set CODER_ASSETS_SERVER_KIND=managed"
            ) from exc


def _launchctl_fields(text: str) -> dict[str, str]:
    """Top-level `key = value` lines of `launchctl print` output."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        # Top-level fields are indented by one tab; nested blocks by more.
        if line.startswith("\t") and not line.startswith("\t\t") and " = " in line:
            key, _, value = line.strip().partition(" = ")
            fields.setdefault(key, value)
    return fields


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """Whether `pid` has exited and only waits to be reaped by its parent."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            state = stat.read_text().rpartition(")")[2].split()[0]
            # Linux shows the main thread of a process that is still exiting as a zombie while
            # its other threads wind down (and hold the port): that one is not dead yet.
            return state == "Z" and len(os.listdir(f"/proc/{pid}/task")) <= 1
        except (OSError, IndexError):
            return False
    try:
        proc = subprocess.run(
            ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.stdout.strip().startswith("Z")


def _process_command(pid: int) -> str | None:
    """The command line of `pid`; "" while it exits; None when it cannot be told."""
    if Path("/proc/self/cmdline").exists():
        try:
            return (
                Path(f"/proc/{pid}/cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
            )
        except OSError:
            return ""
    try:
        proc = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip()


def _is_server_process(pid: int) -> bool:
    """Whether `pid` is a live mlx-lm server: a pid file can outlive its process, and the pid
    can have been reused by an unrelated process since, which must not be signalled."""
    return _is_process(pid, "mlx_lm")


def _is_process(pid: int, marker: str) -> bool:
    """Whether `pid` is alive and its command line names `marker` (see _is_server_process)."""
    if not _alive(pid):
        return False
    if pid in _CHILDREN:
        return True  # started by this process: ours, even while it is still exec'ing
    command = _process_command(pid)
    # No command line: a server that is exiting (its main thread already a zombie while other
    # threads hold the port), or a process in the middle of exec, whose arguments are not set
    # up yet; the latter gets its command line within moments.
    deadline = time.monotonic() + 1.0
    while command == "" and _main_thread_state(pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.05)
        command = _process_command(pid)
    return not command or marker in command


def _main_thread_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return ""


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
