"""The model server resource against a real `mlx_lm.server` on loopback serving the dev model:
start, readiness, stop, pausing for training, stale pid files; launchctl command lines."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from coder_assets.core.training.dev_model import build_dev_model
from coder_assets.resources.service import (
    LOG_FILE,
    PID_FILE,
    ModelServerError,
    ModelServerResource,
    launchctl_commands,
    port_in_use,
)

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n",
    'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hi")\n}\n',
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n",
] * 20


@pytest.fixture(scope="module")
def dev_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_dev_model(tmp_path_factory.mktemp("service") / "model", CORPUS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_server(model: Path, state_dir: Path, **fields) -> ModelServerResource:
    return ModelServerResource(
        model_path=str(model),
        state_dir=str(state_dir),
        port=free_port(),
        model_port=fields.pop("model_port", free_port()),
        ready_timeout_seconds=60,
        **fields,
    )


@pytest.fixture
def server(dev_model: Path, tmp_path: Path) -> Iterator[ModelServerResource]:
    """A managed server resource on a free port; whatever it started is stopped afterwards."""
    resource = make_server(dev_model, tmp_path / "state")
    yield resource
    resource.stop(timeout=10)


@pytest.fixture
def running(server: ModelServerResource) -> ModelServerResource:
    server.start()
    server.wait_ready()
    return server


def served_models(server: ModelServerResource) -> list[str]:
    """The models served, asked through the proxy with the pipeline's key."""
    response = requests.get(
        f"{server.url()}/v1/models",
        headers={"Authorization": f"Bearer {server.pipeline_key()}"},
        timeout=5,
    )
    response.raise_for_status()
    return [model["id"] for model in response.json()["data"]]


def test_start_serves_the_model_and_stop_frees_the_port(
    server: ModelServerResource, dev_model: Path
) -> None:
    started = server.start()
    assert started.running and started.pid
    server.wait_ready()
    status = server.status()
    assert (status.running, status.pid) == (True, started.pid)
    assert served_models(server) == [str(dev_model.resolve())]
    assert server.start().pid == started.pid  # a running server is left alone
    record = json.loads(server.pid_file().read_text("utf-8"))
    assert record["pid"] == started.pid and "--model" in record["command"]

    server.stop()
    assert not server.status().running
    assert not server.pid_file().exists()
    assert not port_in_use("127.0.0.1", server.port)
    assert "starting:" in (server.state_path() / LOG_FILE).read_text("utf-8")


@pytest.mark.parametrize("raised", [None, RuntimeError, KeyboardInterrupt])
def test_paused_stops_a_running_server_and_always_restores_it(
    running: ModelServerResource, raised: type[BaseException] | None
) -> None:
    before = running.status().pid

    def train() -> None:
        with running.paused("train lora_adapter") as paused:
            assert paused.was_running
            assert not running.status().running
            assert not port_in_use("127.0.0.1", running.port)
            if raised is not None:
                raise raised("training failed")

    if raised is None:
        train()
    else:
        with pytest.raises(raised):
            train()
    after = running.status()
    assert after.running and after.pid != before
    assert served_models(running)  # paused() already waited until ready


def test_paused_records_how_long_the_model_was_not_served(running: ModelServerResource) -> None:
    with running.paused("evaluating eval_scores") as paused:
        assert paused.down_seconds == 0.0  # measured when the server is back
        time.sleep(1.0)
        block_ended = time.monotonic()
    back = time.monotonic()
    assert served_models(running)
    # The block and the restart until the server answered again, nothing after that.
    assert paused.down_seconds >= 1.0 + (back - block_ended) * 0.99
    assert paused.down_seconds < 1.0 + (back - block_ended) + 60


def test_paused_leaves_a_stopped_server_stopped(server: ModelServerResource) -> None:
    with pytest.raises(RuntimeError), server.paused("train lora_adapter") as paused:
        assert not paused.was_running
        raise RuntimeError("training failed")
    assert paused.down_seconds == 0.0  # nothing was served, and nothing was to be
    with server.paused("train lora_adapter"):
        pass
    assert not server.status().running
    assert not server.pid_file().exists()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


def _write_pid_file(server: ModelServerResource, pid: int) -> None:
    server.state_path().mkdir(parents=True, exist_ok=True)
    server.pid_file().write_text(json.dumps({"pid": pid, "command": []}), "utf-8")


@pytest.mark.parametrize("how", ["status", "stop"])
def test_stale_pid_file_of_a_dead_process_is_removed(server: ModelServerResource, how: str) -> None:
    _write_pid_file(server, _dead_pid())
    if how == "status":
        status = server.status()
        assert not status.running and "stale pid file" in status.detail
    else:
        server.stop()
    assert not server.pid_file().exists()


def test_pid_reused_by_another_process_is_not_signalled(server: ModelServerResource) -> None:
    other = subprocess.Popen(["sleep", "60"])
    try:
        _write_pid_file(server, other.pid)
        assert not server.status().running
        _write_pid_file(server, other.pid)
        server.stop(timeout=1)
        assert other.poll() is None
        assert not server.pid_file().exists()
    finally:
        other.kill()
        other.wait(timeout=10)


def test_wait_ready_gives_up_early_when_the_model_fails_to_load(
    dev_model: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(dev_model, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    resource = make_server(broken, tmp_path / "state")
    try:
        resource.start()
        began = time.monotonic()
        with pytest.raises(ModelServerError) as raised:
            resource.wait_ready(timeout=45)
        assert time.monotonic() - began < 45
    finally:
        resource.stop(timeout=10)
    message = str(raised.value)
    assert resource.url() in message and "gave up early" in message
    assert "Last lines of" in message and "Traceback" in message


def test_wait_ready_on_a_port_nothing_listens_on_raises_at_the_deadline(
    dev_model: Path, tmp_path: Path
) -> None:
    # The launchd kind has no pid file to give up early on: it waits out the deadline.
    resource = make_server(dev_model, tmp_path / "state", kind="launchd")
    began = time.monotonic()
    with pytest.raises(ModelServerError) as raised:
        resource.wait_ready(timeout=1.5)
    waited = time.monotonic() - began
    assert 1.5 <= waited < 5
    assert f"{resource.url()} not ready within 1.5 s" in str(raised.value)
    assert "ConnectionError" in str(raised.value)

    managed = make_server(dev_model, tmp_path / "state")
    with pytest.raises(ModelServerError, match="no pid file"):
        managed.wait_ready(timeout=30)


def test_start_refuses_a_port_already_in_use(server: ModelServerResource) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", server.port))
        taken.listen()
        with pytest.raises(ModelServerError, match=f"already listens on port {server.port}"):
            server.start()
    assert not server.pid_file().exists()


def test_start_refuses_a_model_path_without_config_and_leaves_no_proxy(tmp_path: Path) -> None:
    resource = make_server(tmp_path / "no-model", tmp_path / "state")
    with pytest.raises(ModelServerError, match="no config.json"):
        resource.start()
    assert not resource.proxy_running() and not resource.proxy_pid_file().exists()
    assert not port_in_use("127.0.0.1", resource.port)


def test_adapter_path_is_passed_only_when_the_link_exists(dev_model: Path, tmp_path: Path) -> None:
    link = tmp_path / "adapters" / "latest"
    resource = make_server(dev_model, tmp_path / "state", adapter_link=str(link))
    assert "--adapter-path" not in resource.server_command()

    version = tmp_path / "adapters" / "v1"
    version.mkdir(parents=True)
    link.symlink_to(version, target_is_directory=True)
    command = resource.server_command()
    assert command[command.index("--adapter-path") + 1] == str(version.resolve())
    assert command[1:3] == ["-m", "mlx_lm"] and command[3] == "server"
    # The model on loopback, on its own port; resource.port is the proxy's.
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == str(resource.model_port)

    shutil.rmtree(version)  # a dangling link is no adapter
    assert "--adapter-path" not in resource.server_command()
    assert "--adapter-path" not in make_server(dev_model, tmp_path).server_command()


def test_server_env_is_offline_with_its_own_hf_cache(server: ModelServerResource) -> None:
    env = server.server_env()
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["HF_HUB_CACHE"].startswith(str(server.state_path()))


PLIST = "/Users/coder/Library/LaunchAgents/io.daviestechlabs.mlx-coder.plist"
LABEL = "io.daviestechlabs.mlx-coder"


@pytest.mark.parametrize(
    ("action", "loaded", "expected"),
    [
        ("status", True, [["launchctl", "print", f"gui/501/{LABEL}"]]),
        ("start", True, [["launchctl", "kickstart", f"gui/501/{LABEL}"]]),
        (
            "start",
            False,
            [
                ["launchctl", "bootstrap", "gui/501", PLIST],
                ["launchctl", "kickstart", f"gui/501/{LABEL}"],
            ],
        ),
        ("restart", True, [["launchctl", "kickstart", "-k", f"gui/501/{LABEL}"]]),
        (
            "restart",
            False,
            [
                ["launchctl", "bootstrap", "gui/501", PLIST],
                ["launchctl", "kickstart", "-k", f"gui/501/{LABEL}"],
            ],
        ),
        ("stop", True, [["launchctl", "bootout", f"gui/501/{LABEL}"]]),
        ("stop", False, []),
    ],
)
def test_launchctl_command_lines(action: str, loaded: bool, expected: list[list[str]]) -> None:
    assert launchctl_commands(action, 501, LABEL, PLIST, loaded=loaded) == expected


def test_launchctl_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown launchctl action 'reload'"):
        launchctl_commands("reload", 501, LABEL, PLIST)


class FakeLaunchctl:
    """Answers launchctl commands like a Mac would, recording them; never runs anything. The
    model's agent and the proxy's are loaded or not each on their own (both `loaded` at first)."""

    def __init__(self, loaded: bool) -> None:
        self.default = loaded
        self.services: dict[str, bool] = {}
        self.calls: list[list[str]] = []

    def run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        """Stands in for the bound `ModelServerResource._run` (a bound method is not rebound)."""
        self.calls.append(command)
        label = Path(command[-1]).stem if command[1] == "bootstrap" else command[-1].split("/")[-1]
        if command[1] == "print" and not self.services.get(label, self.default):
            return subprocess.CompletedProcess(command, 113, "", "Could not find service")
        if command[1] == "print":
            out = f"gui/501/{LABEL} = {{\n\tactive count = 1\n\tstate = running\n\tpid = 4242\n"
            out += "\tendpoints = {\n\t\tpid = 1\n\t}\n}\n"
            return subprocess.CompletedProcess(command, 0, out, "")
        self.services[label] = command[1] != "bootout"
        return subprocess.CompletedProcess(command, 0, "", "")


_BOTH_STATUS = ["print", "print proxy"]


@pytest.mark.parametrize(
    ("loaded", "method", "expected"),
    [
        (
            False,
            "start",
            ["print", "bootstrap", "kickstart", "print proxy", "bootstrap proxy"]
            + ["kickstart proxy", *_BOTH_STATUS],
        ),
        (True, "start", ["print", "kickstart", "print proxy", "kickstart proxy", *_BOTH_STATUS]),
        (True, "stop", ["print", "bootout", "print proxy", "bootout proxy"]),
        (False, "stop", ["print", "print proxy"]),
        (True, "status", _BOTH_STATUS),
        (
            False,
            "restart",
            ["print", "bootstrap", "kickstart -k", "print proxy", "bootstrap proxy"]
            + ["kickstart -k proxy", *_BOTH_STATUS],
        ),
        (
            True,
            "restart",
            ["print", "kickstart -k", "print proxy", "kickstart -k proxy", *_BOTH_STATUS],
        ),
    ],
)
def test_launchd_kind_drives_launchctl(
    monkeypatch: pytest.MonkeyPatch,
    dev_model: Path,
    tmp_path: Path,
    loaded: bool,
    method: str,
    expected: list[str],
) -> None:
    fake = FakeLaunchctl(loaded)
    monkeypatch.setattr(ModelServerResource, "_run", fake.run)
    monkeypatch.setattr(ModelServerResource, "wait_ready", lambda _self, timeout=None: None)
    resource = make_server(dev_model, tmp_path / "state", kind="launchd")
    result = getattr(resource, method)()
    # The subcommand, with kickstart's -k: the targets are checked in test_launchctl_command_lines.
    verbs = [
        " ".join(part for part in call[1:] if not part.startswith(("gui/", "/")))
        + (" proxy" if call[-1].endswith((".proxy", ".proxy.plist")) else "")
        for call in fake.calls
    ]
    assert verbs == expected
    assert all(call[0] == "launchctl" for call in fake.calls)
    assert any(f"gui/{os.getuid()}" in part for call in fake.calls for part in call)
    if method in ("start", "status", "restart"):
        assert (result.running, result.pid) == (True, 4242)
    assert not (tmp_path / "state" / PID_FILE).exists()


def test_launchd_failure_names_the_command_and_the_plist(
    monkeypatch: pytest.MonkeyPatch, dev_model: Path, tmp_path: Path
) -> None:
    def failing(_resource, command):
        if command[1] == "print":
            return subprocess.CompletedProcess(command, 113, "", "Could not find service")
        return subprocess.CompletedProcess(command, 5, "", "Bootstrap failed: 5: I/O error")

    monkeypatch.setattr(ModelServerResource, "_run", failing)
    resource = make_server(dev_model, tmp_path / "state", kind="launchd")
    with pytest.raises(ModelServerError, match="launchctl bootstrap.*I/O error.*launchd_plist"):
        resource.start()


def test_start_names_a_missing_interpreter(dev_model: Path, tmp_path: Path) -> None:
    resource = make_server(dev_model, tmp_path / "state", python=str(tmp_path / "no-python"))
    with pytest.raises(ModelServerError, match="set the model server's `python`"):
        resource.start()
    assert not resource.pid_file().exists()


def test_stop_ends_a_server_started_by_a_process_that_ignores_sigterm(
    server: ModelServerResource,
):
    import signal

    # A background shell or a supervisor can start us with SIGTERM ignored; the server must not
    # inherit that, or stop() only ends it with SIGKILL after the whole grace period.
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        server.start()
    finally:
        signal.signal(signal.SIGTERM, previous)
    server.wait_ready()
    started = time.monotonic()
    server.stop(timeout=20)
    assert time.monotonic() - started < 10
    assert not server.status().running


def test_the_step_worker_makes_sigterm_end_its_step_again():
    import signal

    script = (
        "import os, signal, sys\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "from coder_assets.step_worker import default_termination_signals\n"
        "default_termination_signals()\n"
        "os.execvp('sleep', ['sleep', '30'])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == -signal.SIGTERM
