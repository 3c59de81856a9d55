"""The launchd agent's plist: rendered from the packaged template, proven by plistlib, escaped,
with the adapter only when its link exists; installed atomically and only when it changed."""

from __future__ import annotations

import os
import plistlib
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from coder_assets.core.deployment import launchd
from coder_assets.core.deployment.launchd import (
    AgentSpec,
    LaunchdPlistError,
    binding_warning,
    binds_beyond_lan,
    install_plist,
    plist_differs,
    render_plist,
    template_text,
)


def make_spec(root: Path, **fields) -> AgentSpec:
    values = {
        "label": "io.daviestechlabs.mlx-coder",
        "python": "/opt/coder/.venv/bin/python",
        "model": str(root / "model"),
        "host": "192.168.1.20",
        "port": 8080,
        "log_path": str(root / "Logs" / "mlx-coder.log"),
        "working_directory": str(root / "server"),
        "hf_hub_cache": str(root / "server" / "hf-hub-cache"),
        "adapter_link": str(root / "deployed" / "latest"),
    }
    return AgentSpec(**{**values, **fields})


def parse(text: str) -> dict:
    return plistlib.loads(text.encode("utf-8"))


def test_rendered_plist_runs_mlx_lm_server_offline_and_keeps_it_alive(tmp_path: Path) -> None:
    agent = parse(render_plist(make_spec(tmp_path)))
    assert agent["Label"] == "io.daviestechlabs.mlx-coder"
    assert agent["ProgramArguments"] == [
        "/opt/coder/.venv/bin/python",
        "-m",
        "mlx_lm",
        "server",
        "--model",
        str(tmp_path / "model"),
        "--host",
        "192.168.1.20",
        "--port",
        "8080",
    ]
    assert agent["EnvironmentVariables"]["HF_HUB_OFFLINE"] == "1"
    assert agent["EnvironmentVariables"]["HF_HUB_CACHE"] == str(tmp_path / "server/hf-hub-cache")
    assert (
        agent["StandardOutPath"]
        == agent["StandardErrorPath"]
        == str(tmp_path / "Logs" / "mlx-coder.log")
    )
    assert agent["WorkingDirectory"] == str(tmp_path / "server")
    assert agent["RunAtLoad"] is True
    # Restarted after a crash, not after a clean exit; bootout unloads it whatever KeepAlive says.
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["ThrottleInterval"] == 30
    assert agent["ProcessType"] == "Interactive"


def test_template_explains_lan_only_binding() -> None:
    text = template_text()
    assert "no authentication" in text and "0.0.0.0" in text and "firewall" in text
    for placeholder in ("${label}", "${python}", "${model}", "${adapter_arguments}", "${port}"):
        assert placeholder in text


def test_adapter_path_is_the_link_and_only_when_it_exists(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    assert "--adapter-path" not in parse(render_plist(spec))["ProgramArguments"]

    version = tmp_path / "adapters" / "v1"
    version.mkdir(parents=True)
    link = tmp_path / "deployed" / "latest"
    link.parent.mkdir()
    link.symlink_to(version, target_is_directory=True)
    arguments = parse(render_plist(spec))["ProgramArguments"]
    # The link itself, so that a restart serves whatever `latest` points at by then.
    assert arguments[6:8] == ["--adapter-path", str(link)]
    assert arguments[-4:] == ["--host", "192.168.1.20", "--port", "8080"]

    version.rmdir()  # a dangling link is no adapter
    assert "--adapter-path" not in parse(render_plist(spec))["ProgramArguments"]
    assert (
        "--adapter-path"
        not in parse(render_plist(replace(spec, adapter_link="")))["ProgramArguments"]
    )


def test_odd_characters_in_paths_are_escaped(tmp_path: Path) -> None:
    odd = tmp_path / "a&b<c>d\"e'f ]]> $label ${port}"
    (odd / "deployed").mkdir(parents=True)
    (odd / "deployed" / "latest").mkdir()
    spec = make_spec(odd, python=str(odd / "python"))
    text = render_plist(spec)
    assert "a&amp;b&lt;c&gt;d" in text
    agent = parse(text)
    assert agent["ProgramArguments"][0] == str(odd / "python")
    assert agent["ProgramArguments"][5] == str(odd / "model")
    assert agent["ProgramArguments"][7] == str(odd / "deployed" / "latest")
    assert agent["StandardOutPath"] == str(odd / "Logs" / "mlx-coder.log")


def test_home_relative_paths_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    agent = parse(render_plist(make_spec(tmp_path, log_path="~/Library/Logs/mlx-coder.log")))
    assert agent["StandardOutPath"] == str(tmp_path / "Library" / "Logs" / "mlx-coder.log")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"python": "python3"}, r"python 'python3' is not an absolute path"),
        ({"model": "models/qwen"}, r"model 'models/qwen' is not an absolute path"),
        ({"log_path": ""}, r"log path '' is not an absolute path"),
        ({"port": 0}, r"port 0 is not a TCP port.*CODER_ASSETS_SERVER_PORT"),
        ({"port": 70000}, r"port 70000 is not a TCP port"),
        ({"host": ""}, r"host '' is not an address.*CODER_ASSETS_SERVER_HOST"),
        ({"host": "10.0.0.1 --trust-remote-code"}, r"is not an address to listen on"),
        ({"label": "mlx coder"}, r"label 'mlx coder' is not a reverse-DNS name.*launchd_label"),
        ({"label": ""}, r"launchd label '' is not a reverse-DNS name"),
        ({"throttle_interval": 0}, r"throttle interval 0 s must be at least 1 second"),
        ({"model": "/models/qwen\x01"}, r"not a valid property list.*XML cannot carry"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(
    tmp_path: Path, fields: dict, message: str
) -> None:
    with pytest.raises(LaunchdPlistError, match=message):
        render_plist(make_spec(tmp_path, **fields))


def test_a_template_that_drops_an_argument_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = template_text().replace("<string>--port</string>", "")
    monkeypatch.setattr(launchd, "template_text", lambda name=None: broken)
    with pytest.raises(LaunchdPlistError, match="does not say what was given"):
        render_plist(make_spec(tmp_path))


def test_install_plist_writes_0644_atomically_and_only_when_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "Library" / "LaunchAgents" / "io.daviestechlabs.mlx-coder.plist"
    text = render_plist(make_spec(tmp_path))
    assert plist_differs(target, text)
    assert install_plist(target, text) is True  # creates ~/Library/LaunchAgents
    assert target.read_text("utf-8") == text
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert not plist_differs(target, text)

    before = target.stat()
    assert install_plist(target, text) is False  # the same text: not written again
    assert (target.stat().st_ino, target.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    changed = render_plist(make_spec(tmp_path, port=9090))
    assert plist_differs(target, changed)

    def interrupted(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(LaunchdPlistError, match=f"cannot write the launchd plist {target}"):
        install_plist(target, changed)
    assert target.read_text("utf-8") == text  # the old agent, whole
    monkeypatch.undo()
    assert install_plist(target, changed) is True
    assert parse(target.read_text("utf-8"))["ProgramArguments"][-1] == "9090"
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no temp files


@pytest.mark.parametrize(
    ("host", "beyond"),
    [
        ("127.0.0.1", False),
        ("::1", False),
        ("localhost", False),
        ("192.168.1.20", False),
        ("10.0.0.7", False),
        ("fd00::20", False),
        ("waterdeep.lan", False),
        ("0.0.0.0", True),
        ("::", True),
        ("[::]", True),
        ("", True),
        ("8.8.8.8", True),
    ],
)
def test_binds_beyond_lan(host: str, beyond: bool) -> None:
    assert binds_beyond_lan(host) is beyond
    assert (binding_warning(host, 8080) is not None) is beyond


def test_binding_warning_says_what_to_do() -> None:
    warning = binding_warning("0.0.0.0", 8080)
    assert warning is not None
    assert "every interface" in warning and "API key" in warning
    assert "CODER_ASSETS_SERVER_HOST" in warning and "firewall port 8080" in warning
