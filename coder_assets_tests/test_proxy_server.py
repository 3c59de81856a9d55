"""The authenticating proxy with a real Caddy process in front of a real mlx_lm.server serving the
tiny dev model: keys, 401s the model never sees, streaming, loopback-only model port, TLS with a
CA made here, keys kept across restarts, and what the logs keep."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from coder_assets.core.deployment.proxy import add_key, parse_access_line, read_keys, revoke_key
from coder_assets.core.training.dev_model import build_dev_model
from coder_assets.resources.service import LOG_FILE, ModelServerResource, port_in_use
from coder_assets_tests.conftest import free_port

pytestmark = pytest.mark.slow

CORPUS = ["def add(a, b):\n    return a + b\n", "class Stack:\n    items = []\n"] * 30
COMPLETION = {"prompt": "def add(a, b):\n", "max_tokens": 4, "temperature": 0.0}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy")


@pytest.fixture(scope="module")
def dev_model(home: Path) -> Path:
    return build_dev_model(home / "model", CORPUS)


@pytest.fixture(scope="module")
def served(dev_model: Path, home: Path) -> Iterator[ModelServerResource]:
    """The model server and its proxy on loopback, laid out as `build_model_server` lays out the
    coder_assets home `home`, so that the CLI finds them."""
    server = ModelServerResource(
        model_path=str(dev_model),
        state_dir=str(home / "server"),
        port=free_port(),
        model_port=free_port(),
        ready_timeout_seconds=120,
    )
    server.start()
    server.wait_ready()
    try:
        yield server
    finally:
        server.stop(timeout=10)


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key is not None else {}


def complete(server: ModelServerResource, key: str | None, **kwargs) -> requests.Response:
    return requests.post(
        f"{server.url()}/v1/completions", json=COMPLETION, headers=bearer(key), timeout=60, **kwargs
    )


def model_requests(server: ModelServerResource) -> int:
    """How many completion requests mlx_lm.server itself has logged."""
    time.sleep(0.3)  # its log lines are written after the response
    log = (server.state_path() / LOG_FILE).read_text("utf-8", errors="replace")
    return log.count("POST /v1/completions")


def key_of(server: ModelServerResource, name: str) -> str:
    return next(k.key for k in read_keys(server.keys_path()) if k.name == name)


def test_only_known_keys_reach_the_model_and_reloading_keys_keeps_the_model(
    served: ModelServerResource,
) -> None:
    model_pid = served.status().pid
    alice = add_key(served.keys_path(), "alice")
    bob = add_key(served.keys_path(), "bob")
    assert served.reload_proxy()
    assert complete(served, bob.key).status_code == 200
    revoke_key(served.keys_path(), "bob")
    assert served.reload_proxy()

    before = model_requests(served)
    for key in (None, "wrong-" + alice.key, bob.key, alice.key.upper()):
        refused = complete(served, key)
        assert refused.status_code == 401, key
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    basic = requests.post(
        f"{served.url()}/v1/completions", json=COMPLETION, auth=("alice", alice.key), timeout=60
    )
    assert basic.status_code == 401
    assert model_requests(served) == before  # the model never saw a refused request

    answer = complete(served, alice.key)
    assert answer.status_code == 200
    assert isinstance(answer.json()["choices"][0]["text"], str)
    assert model_requests(served) == before + 1
    assert served.status().pid == model_pid  # keys changed, the model was not restarted


def test_a_streamed_chat_completion_arrives_in_chunks(served: ModelServerResource) -> None:
    key = served.pipeline_key()
    body = {
        "messages": [{"role": "user", "content": "Write a function that adds two numbers."}],
        # Enough tokens, sampled, that the answer is many events spread over time: a few greedy
        # tokens of the tiny model can all decode to nothing and end as a single event.
        "max_tokens": 96,
        "temperature": 1.0,
        "stream": True,
    }
    chunks: list[bytes] = []
    with requests.post(
        f"{served.url()}/v1/chat/completions",
        json=body,
        headers=bearer(key),
        stream=True,
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for chunk in response.iter_content(chunk_size=None):
            chunks.append(chunk)
    body_text = b"".join(chunks)
    assert body_text.count(b"data: ") >= 4, body_text
    assert len(chunks) >= 3, chunks
    assert b"data: [DONE]" in body_text


def test_a_request_body_over_the_limit_never_reaches_the_model(
    served: ModelServerResource,
) -> None:
    before = model_requests(served)
    big = {**COMPLETION, "prompt": "x" * (served.max_body_bytes + 1)}
    response = requests.post(
        f"{served.url()}/v1/completions",
        json=big,
        headers=bearer(served.pipeline_key()),
        timeout=60,
    )
    assert response.status_code == 413
    assert model_requests(served) == before


def non_loopback_address() -> str | None:
    """This machine's address on its default route, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent for UDP connect
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_the_model_port_answers_on_loopback_only(served: ModelServerResource) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    assert port_in_use("127.0.0.1", served.backend_port())
    with (
        pytest.raises(OSError),
        socket.create_connection((address, served.backend_port()), timeout=2),
    ):
        pass
    assert "--host" in served.server_command()
    assert served.server_command()[served.server_command().index("--host") + 1] == "127.0.0.1"


def test_restarting_the_server_keeps_the_keys(served: ModelServerResource) -> None:
    keeper = add_key(served.keys_path(), "keeper")
    served.reload_proxy()
    before = served.status().pid
    served.restart()
    assert served.status().pid != before
    assert served.proxy_running()
    assert complete(served, keeper.key).status_code == 200
    assert "keeper" in [k.name for k in read_keys(served.keys_path())]


def cli(home: Path, served: ModelServerResource, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODER_ASSETS_")}
    env.update(
        {
            "CODER_ASSETS_HOME": str(home),
            "CODER_ASSETS_BASE_MODEL": served.model_path,
            "CODER_ASSETS_SERVER_PORT": str(served.port),
            "CODER_ASSETS_SERVER_MODEL_PORT": str(served.backend_port()),
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "coder_assets.cli", "server", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_keys_add_revoke_list_reload_the_proxy_only(
    served: ModelServerResource, home: Path
) -> None:
    model_pid = served.status().pid
    added = cli(home, served, "keys", "add", "laptop-carol")
    assert added.returncode == 0, added.stderr
    key = key_of(served, "laptop-carol")
    assert added.stdout.count(key) == 1 and "proxy reloaded" in added.stdout
    assert complete(served, key).status_code == 200

    listed = cli(home, served, "keys", "list")
    assert "laptop-carol" in listed.stdout.splitlines() and key not in listed.stdout

    revoked = cli(home, served, "keys", "revoke", "laptop-carol")
    assert revoked.returncode == 0, revoked.stderr
    assert complete(served, key).status_code == 401
    assert served.status().pid == model_pid

    status = cli(home, served, "status")
    assert "proxy running" in status.stdout, status.stdout + status.stderr

    os.chmod(served.keys_path(), 0o644)
    try:
        refused = cli(home, served, "keys", "list")
    finally:
        os.chmod(served.keys_path(), 0o600)
    assert refused.returncode == 1
    assert "mode 0644" in refused.stderr and "chmod 600" in refused.stderr


def test_logs_keep_key_names_and_never_keys(served: ModelServerResource) -> None:
    alice = key_of(served, "alice")
    assert complete(served, alice).status_code == 200
    assert complete(served, "not-a-key").status_code == 401
    time.sleep(0.5)
    entries = [
        entry
        for line in served.access_log().read_text("utf-8").splitlines()
        if (entry := parse_access_line(line)) is not None
    ]
    ok = [e for e in entries if e["key"] == "alice" and e["status"] == 200]
    assert ok and ok[-1]["path"] == "/v1/completions" and ok[-1]["duration"] > 0
    assert any(e["key"] == "" and e["status"] == 401 for e in entries)
    raw = served.access_log().read_text("utf-8")
    assert "def add" not in raw and "choices" not in raw  # no prompts, no completions

    secrets = [k.key for k in read_keys(served.keys_path())]
    private = {served.keys_path(), served.proxy_config_path()}
    for path in served.state_path().rglob("*"):
        if path.is_file() and path not in private and not path.is_socket():
            text = path.read_bytes().decode("utf-8", errors="replace")
            assert not any(secret in text for secret in secrets), path
    assert oct(served.proxy_config_path().stat().st_mode & 0o777) == "0o600"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_test_pki(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a certificate for 127.0.0.1 and localhost signed by it: (ca, cert, key)."""
    folder.mkdir(parents=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=coder-assets test CA", cwd=folder)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=localhost", cwd=folder)  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext",
            cwd=folder)  # fmt: skip
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


def test_tls_with_a_certificate_from_the_homelab_ca(
    served: ModelServerResource, home: Path
) -> None:
    ca, cert, key = make_test_pki(home / "pki")
    tls = ModelServerResource(
        model_path=served.model_path,
        state_dir=str(home / "tls-server"),
        port=free_port(),
        model_port=served.backend_port(),
        tls_cert=str(cert),
        tls_key=str(key),
        tls_ca=str(ca),
    )
    tls.start_proxy()
    try:
        deadline = time.monotonic() + 30
        while not port_in_use("127.0.0.1", tls.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tls.url().startswith("https://127.0.0.1:")
        assert tls._probe_proxy(10) == (True, "ready", False)
        options = tls.client_options()
        answer = complete(tls, options["api_key"], verify=str(ca))
        assert answer.status_code == 200
        assert complete(tls, None, verify=str(ca)).status_code == 401
        with pytest.raises(requests.exceptions.SSLError):
            complete(tls, options["api_key"])  # the system's CAs do not know the test CA
        plain = tls.url().replace("https://", "http://")
        refused = requests.get(f"{plain}/v1/models", headers=bearer(options["api_key"]), timeout=10)
        assert refused.status_code == 400  # plain HTTP on the TLS port is not served
    finally:
        tls.stop_proxy()
    assert not port_in_use("127.0.0.1", tls.port)
    assert json.loads(tls.proxy_config_path().read_text())["apps"]["tls"]
