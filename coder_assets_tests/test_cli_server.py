"""`coder-assets server ...` in-process, and the resource's `ensure_plist` it relies on: the
plist for the configured settings, install (dry run, refused off macOS, launchctl on a Mac),
status/start/stop/restart through the model server resource, exit codes and warnings.
launchctl is never run: the resource's `_run` is replaced by a fake that answers like a Mac."""

from __future__ import annotations

import os
import plistlib
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from coder_assets import cli
from coder_assets.resources.service import ModelServerResource

LABEL = "io.daviestechlabs.mlx-coder"


@dataclass(frozen=True)
class Setup:
    home: Path  # $HOME: ~/Library/LaunchAgents and ~/Library/Logs live under it
    model: Path
    state: Path
    adapter_link: Path
    port: int

    @property
    def plist(self) -> Path:
        return self.home / "Library" / "LaunchAgents" / f"{LABEL}.plist"

    def deploy_adapter(self) -> None:
        version = self.state.parent / "adapters" / "v1"
        version.mkdir(parents=True)
        self.adapter_link.parent.mkdir(parents=True, exist_ok=True)
        self.adapter_link.symlink_to(version, target_is_directory=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    """The environment the command reads: a model directory with a config.json (so no dev model
    is built), a coder_assets home and $HOME on tmp paths, a free loopback port."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}", "utf-8")
    coder_home = tmp_path / "coder-assets"
    port = free_port()
    for name in (
        "CODER_ASSETS_SERVER_KIND",
        "CODER_ASSETS_SERVER_HOST",
        "CODER_ASSETS_SERVER_PYTHON",
        "CODER_ASSETS_SERVER_LABEL",
        "CODER_ASSETS_ADAPTER_LINK",
        "CODER_ASSETS_DEPLOY_DIR",
        "CODER_ASSETS_WATERDEEP_HOST",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CODER_ASSETS_HOME", str(coder_home))
    monkeypatch.setenv("CODER_ASSETS_BASE_MODEL", str(model))
    monkeypatch.setenv("CODER_ASSETS_SERVER_PORT", str(port))
    return Setup(
        home=tmp_path,
        model=model,
        state=coder_home / "server",
        adapter_link=coder_home / "deployed" / "homelab-coder" / "latest",
        port=port,
    )


class FakeLaunchctl:
    """Answers launchctl like a Mac would and records the commands; never runs anything. Each
    agent (the model server's and its proxy's) is loaded or not on its own; `loaded` sets both."""

    def __init__(self, loaded: bool = False) -> None:
        self.services: dict[str, bool] = {}
        self.default = loaded
        self.calls: list[list[str]] = []

    @property
    def loaded(self) -> bool:
        return self.default

    @loaded.setter
    def loaded(self, value: bool) -> None:
        self.default = value
        self.services.clear()

    def run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        """Stands in for the bound `ModelServerResource._run` (a bound method is not rebound)."""
        self.calls.append(command)
        label = Path(command[-1]).stem if command[1] == "bootstrap" else command[-1].split("/")[-1]
        if command[1] == "print":
            if not self.services.get(label, self.default):
                return subprocess.CompletedProcess(command, 113, "", "Could not find service")
            out = f"gui/{os.getuid()}/{label} = {{\n\tstate = running\n\tpid = 4242\n}}\n"
            return subprocess.CompletedProcess(command, 0, out, "")
        self.services[label] = command[1] != "bootout"
        return subprocess.CompletedProcess(command, 0, "", "")

    def verbs(self) -> list[str]:
        """The commands without uid and paths; those for the proxy's agent end in `proxy`."""
        return [
            " ".join(part for part in call[1:] if not part.startswith(("gui/", "/")))
            + (" proxy" if call[-1].endswith((".proxy", ".proxy.plist")) else "")
            for call in self.calls
        ]


@pytest.fixture
def launchctl(monkeypatch: pytest.MonkeyPatch) -> FakeLaunchctl:
    """A Mac with launchctl, the launchd kind, and a server that is ready when asked."""
    fake = FakeLaunchctl()
    monkeypatch.setattr(ModelServerResource, "_run", fake.run)
    monkeypatch.setattr(ModelServerResource, "wait_ready", lambda _self, timeout=None: None)
    monkeypatch.setattr(cli, "_on_macos", lambda: True)
    monkeypatch.setenv("CODER_ASSETS_SERVER_KIND", "launchd")
    return fake


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["server", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_plist_prints_the_agent_for_the_configured_settings(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODER_ASSETS_SERVER_HOST", "192.168.1.20")
    monkeypatch.setenv("CODER_ASSETS_SERVER_PYTHON", "/opt/coder/.venv/bin/python")
    code, out, err = run_cli(capsys, "plist")
    assert (code, err) == (0, "")
    agent = plistlib.loads(out.encode("utf-8"))
    assert agent["Label"] == LABEL
    assert agent["ProgramArguments"] == [
        "/opt/coder/.venv/bin/python",
        "-m",
        "mlx_lm",
        "server",
        "--model",
        str(setup.model.resolve()),
        "--host",
        "127.0.0.1",  # the model on loopback only; 192.168.1.20 is the proxy's address
        "--port",
        str(setup.port + 1),
    ]
    code, out, err = run_cli(capsys, "plist", "--proxy")
    assert (code, err) == (0, "")
    proxy = plistlib.loads(out.encode("utf-8"))
    assert proxy["Label"] == f"{LABEL}.proxy"
    config = setup.state / "proxy" / "caddy.json"
    assert proxy["ProgramArguments"][1:] == ["run", "--config", str(config)]
    assert "Bearer" not in out  # the keys are in the config (mode 600), never in the plist
    assert agent["EnvironmentVariables"]["HF_HUB_CACHE"] == str(setup.state / "hf-hub-cache")
    assert agent["StandardErrorPath"] == str(setup.home / "Library" / "Logs" / "mlx-coder.log")
    assert not setup.plist.exists()  # printing installs nothing

    setup.deploy_adapter()
    _, out, _ = run_cli(capsys, "plist")
    arguments = plistlib.loads(out.encode("utf-8"))["ProgramArguments"]
    assert arguments[6:8] == ["--adapter-path", str(setup.adapter_link)]


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_wildcard_host_is_warned_about_on_stderr(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.setenv("CODER_ASSETS_SERVER_HOST", host)
    code, out, err = run_cli(capsys, "plist")
    assert code == 0 and plistlib.loads(out.encode("utf-8"))
    assert "every interface" in err and "API key" in err


def test_install_dry_run_prints_path_plist_and_commands_and_changes_nothing(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "_on_macos", lambda: False)
    code, out, err = run_cli(capsys, "install", "--dry-run")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"# {setup.plist} would be written:"
    plist = out[out.index("<?xml") : out.index("</plist>") + len("</plist>")]
    assert plistlib.loads(plist.encode("utf-8"))["Label"] == LABEL
    uid = os.getuid()
    proxy_plist = setup.plist.with_name(f"{LABEL}.proxy.plist")
    assert f"# {proxy_plist} would be written:" in lines
    assert lines[-5].startswith("# launchctl commands (on macOS, with the agent not loaded")
    assert lines[-4:] == [
        f"launchctl bootstrap gui/{uid} {setup.plist}",
        f"launchctl kickstart gui/{uid}/{LABEL}",
        f"launchctl bootstrap gui/{uid} {proxy_plist}",
        f"launchctl kickstart gui/{uid}/{LABEL}.proxy",
    ]
    assert not setup.plist.exists() and not setup.state.exists()


def test_install_is_refused_off_macos(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "_on_macos", lambda: False)
    code, out, err = run_cli(capsys, "install")
    assert (code, out) == (1, "")
    assert "launchd agents exist only on macOS" in err
    assert "--dry-run" in err and "CODER_ASSETS_SERVER_KIND=managed" in err
    assert not setup.plist.exists()


def test_install_on_macos_writes_the_plist_bootstraps_it_and_reloads_it_when_it_changes(
    setup: Setup, capsys: pytest.CaptureFixture[str], launchctl: FakeLaunchctl
) -> None:
    code, out, err = run_cli(capsys, "install")
    assert (code, err) == (0, "")
    assert f"wrote: {setup.plist}" in out and "running" in out
    assert stat.S_IMODE(setup.plist.stat().st_mode) == 0o644
    assert plistlib.loads(setup.plist.read_bytes())["Label"] == LABEL
    assert (setup.state / "hf-hub-cache").is_dir()
    assert (setup.home / "Library" / "Logs").is_dir()
    assert launchctl.verbs() == [
        "print proxy",  # ensure_plist: reload a loaded proxy agent whose plist changed?
        "print",
        "print",  # start: both agents, the model's first
        "bootstrap",
        "kickstart",
        "print proxy",
        "bootstrap proxy",
        "kickstart proxy",
        "print",
        "print proxy",
        "print",
        "print proxy",
    ]
    bootstrap = launchctl.calls[3]
    assert bootstrap == ["launchctl", "bootstrap", f"gui/{os.getuid()}", str(setup.plist)]

    # Unchanged: nothing written, the running agent only kickstarted (a no-op when it runs).
    launchctl.calls.clear()
    code, out, _ = run_cli(capsys, "install")
    assert code == 0 and f"unchanged: {setup.plist}" in out
    assert launchctl.verbs() == [
        "print",
        "kickstart",
        "print proxy",
        "kickstart proxy",
        "print",
        "print proxy",
        "print",
        "print proxy",
    ]

    # The first adapter is deployed: the plist changes, and the loaded agent is reloaded.
    setup.deploy_adapter()
    launchctl.calls.clear()
    code, out, _ = run_cli(capsys, "install")
    assert code == 0 and f"wrote: {setup.plist}" in out
    assert "--adapter-path" in plistlib.loads(setup.plist.read_bytes())["ProgramArguments"]
    assert launchctl.verbs() == [
        "print",  # loaded?
        "print",  # stop both agents: loaded?
        "bootout",
        "print proxy",
        "bootout proxy",
        "print",  # unloaded yet?
        "print",  # start both: loaded?
        "bootstrap",
        "kickstart",
        "print proxy",
        "bootstrap proxy",
        "kickstart proxy",
        "print",
        "print proxy",
        "print",  # install: kickstart, unless running
        "kickstart",
        "print proxy",
        "kickstart proxy",
        "print",
        "print proxy",
        "print",
        "print proxy",
    ]


def test_install_dry_run_on_a_mac_shows_the_reload_of_a_loaded_agent(
    setup: Setup, capsys: pytest.CaptureFixture[str], launchctl: FakeLaunchctl
) -> None:
    launchctl.loaded = True
    code, out, _ = run_cli(capsys, "install", "--dry-run")
    assert code == 0
    uid = os.getuid()
    proxy_plist = setup.plist.with_name(f"{LABEL}.proxy.plist")
    assert out.splitlines()[-7:] == [
        "# launchctl commands:",
        f"launchctl bootout gui/{uid}/{LABEL}",
        f"launchctl bootstrap gui/{uid} {setup.plist}",
        f"launchctl kickstart gui/{uid}/{LABEL}",
        f"launchctl bootout gui/{uid}/{LABEL}.proxy",
        f"launchctl bootstrap gui/{uid} {proxy_plist}",
        f"launchctl kickstart gui/{uid}/{LABEL}.proxy",
    ]
    assert launchctl.verbs() == ["print"]  # only asked whether it is loaded
    assert not setup.plist.exists()


def test_install_refuses_the_managed_kind_on_macos(
    setup: Setup,
    capsys: pytest.CaptureFixture[str],
    launchctl: FakeLaunchctl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CODER_ASSETS_SERVER_KIND", "managed")
    code, _, err = run_cli(capsys, "install")
    assert code == 1 and "set CODER_ASSETS_SERVER_KIND=launchd" in err
    assert not setup.plist.exists() and launchctl.calls == []


def test_install_refuses_a_model_directory_without_config(
    setup: Setup, capsys: pytest.CaptureFixture[str], launchctl: FakeLaunchctl
) -> None:
    (setup.model / "config.json").unlink()
    code, _, err = run_cli(capsys, "install")
    assert code == 1 and "has no config.json" in err and "CODER_ASSETS_BASE_MODEL" in err
    assert not setup.plist.exists()


@pytest.mark.parametrize(
    ("action", "loaded", "expected", "detail"),
    [
        ("status", True, ["print", "print proxy"], "running"),
        ("status", False, ["print", "print proxy"], "is not loaded"),
        (
            "start",
            False,
            [
                "print",
                "bootstrap",
                "kickstart",
                "print proxy",
                "bootstrap proxy",
                "kickstart proxy",
                "print",
                "print proxy",
                "print",
                "print proxy",
            ],
            "running",
        ),
        (
            "stop",
            True,
            ["print", "print proxy", "print", "bootout", "print proxy", "bootout proxy"],
            "stopped (was gui/",
        ),
        (
            "restart",
            True,
            [
                "print",
                "kickstart -k",
                "print proxy",
                "kickstart -k proxy",
                "print",
                "print proxy",
                "print",
                "print proxy",
            ],
            "running",
        ),
    ],
)
def test_launchd_kind_lifecycle_goes_through_launchctl(
    setup: Setup,
    capsys: pytest.CaptureFixture[str],
    launchctl: FakeLaunchctl,
    action: str,
    loaded: bool,
    expected: list[str],
    detail: str,
) -> None:
    launchctl.loaded = loaded
    code, out, err = run_cli(capsys, action)
    assert (code, err) == (0, "")
    assert out.startswith(f"launchd model server at http://127.0.0.1:{setup.port}:")
    assert detail in out
    assert launchctl.verbs() == expected


def test_launchctl_failure_exits_1_with_the_message(
    setup: Setup,
    capsys: pytest.CaptureFixture[str],
    launchctl: FakeLaunchctl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing(_resource, command: list[str]) -> subprocess.CompletedProcess[str]:
        if command[1] == "print":
            return subprocess.CompletedProcess(command, 113, "", "Could not find service")
        return subprocess.CompletedProcess(command, 5, "", "Bootstrap failed: 5: I/O error")

    monkeypatch.setattr(ModelServerResource, "_run", failing)
    code, out, err = run_cli(capsys, "start")
    assert (code, out) == (1, "")
    assert err.startswith("coder-assets server start: `launchctl bootstrap")
    assert "I/O error" in err


def test_managed_status_and_stop_on_an_empty_state_dir(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "status")
    assert (code, err) == (0, "")
    assert out.startswith(f"managed model server at http://127.0.0.1:{setup.port}: desired ")
    assert "actual not running" in out
    assert "no pid file" in out
    code, out, _ = run_cli(capsys, "stop")
    assert code == 0 and "not running" in out


def test_managed_start_failure_exits_1_without_a_traceback(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    (setup.model / "config.json").unlink()
    code, out, err = run_cli(capsys, "start")
    assert (code, out) == (1, "")
    assert err.startswith("coder-assets server start: model_path") and "no config.json" in err


def test_launchd_kind_off_macos_says_to_use_the_managed_kind(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODER_ASSETS_SERVER_KIND", "launchd")
    monkeypatch.setenv("PATH", str(setup.home / "no-launchctl-here"))
    code, _, err = run_cli(capsys, "status")
    assert code == 1 and "CODER_ASSETS_SERVER_KIND=managed" in err


def test_a_bad_setting_exits_1_naming_the_settings(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODER_ASSETS_SERVER_PORT", "eighty")
    code, _, err = run_cli(capsys, "status")
    assert code == 1 and "CODER_ASSETS_SERVER_*" in err and "'eighty'" in err


def test_ensure_plist_writes_only_for_the_launchd_kind_and_only_changes(
    setup: Setup, launchctl: FakeLaunchctl
) -> None:
    fields = {
        "model_path": str(setup.model),
        "state_dir": str(setup.state),
        "adapter_link": str(setup.adapter_link),
        "launchd_plist": str(setup.plist),
        "launchd_log": str(setup.home / "logs" / "mlx-coder.log"),
        "port": setup.port,
    }
    assert ModelServerResource(kind="managed", **fields).ensure_plist() is False
    assert not setup.plist.exists()

    server = ModelServerResource(kind="launchd", **fields)
    assert server.ensure_plist() is True
    assert setup.plist.read_text("utf-8") == server.render_plist()
    # Not loaded: installing is start's business.
    assert launchctl.verbs() == ["print proxy", "print"]
    assert server.proxy_plist_path().read_text("utf-8") == server.render_proxy_plist()
    assert server.ensure_plist() is False
    assert server.log_file() == setup.home / "logs" / "mlx-coder.log"


def test_cli_import_does_not_load_dagster_or_mlx() -> None:
    probe = (
        "import sys, coder_assets.cli; "
        "print(sorted({'dagster', 'mlx', 'mlx_lm'} & set(sys.modules)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "[]"


def test_deploy_restart_on_launchd_reloads_a_changed_plist_once_and_kickstarts_otherwise(
    setup: Setup, launchctl: FakeLaunchctl, capsys: pytest.CaptureFixture[str]
) -> None:
    import dagster as dg

    from coder_assets.assets.deployment import _restart
    from coder_assets.resources import build_base_model, build_model_server

    assert run_cli(capsys, "install")[0] == 0  # no adapter yet: the plist has none
    server = build_model_server(build_base_model())
    setup.adapter_link.parent.mkdir(parents=True)
    (setup.adapter_link.parent / "v1").mkdir()
    setup.adapter_link.symlink_to("v1")
    launchctl.calls.clear()

    with dg.build_asset_context() as context:
        _restart(server, context)  # the first deploy adds --adapter-path: reload, not kickstart
        assert "--adapter-path" in server.plist_path().read_text()
        assert "kickstart -k" not in launchctl.verbs()
        assert "bootout" in launchctl.verbs()
        launchctl.calls.clear()
        _restart(server, context)  # plist unchanged: a kickstart serves the new latest
    assert "kickstart -k" in launchctl.verbs() and "bootout" not in launchctl.verbs()
