"""The proxy's keys file and Caddy config (core/deployment/proxy.py): modes, parsing, what the
config says."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from coder_assets.core.deployment.proxy import (
    ACCESS_LOGGER,
    ApiKey,
    KeysFileError,
    ProxyError,
    ProxySpec,
    add_key,
    caddy_config,
    ensure_key,
    new_key,
    parse_access_line,
    read_keys,
    redact,
    revoke_key,
    write_config,
    write_keys,
)


def spec(tmp_path: Path, **fields) -> ProxySpec:
    values = {
        "host": "192.168.1.20",
        "port": 8080,
        "upstream_port": 8081,
        "admin_socket": str(tmp_path / "admin.sock"),
        "log_path": str(tmp_path / "caddy.log"),
        "access_log_path": str(tmp_path / "access.log"),
        **fields,
    }
    return ProxySpec(**values)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_added_keys_are_listed_by_name_and_the_file_is_mode_600(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    alice = add_key(path, "laptop-alice")
    bob = add_key(path, "ci@runner")
    assert mode(path) == 0o600
    assert [k.name for k in read_keys(path)] == ["laptop-alice", "ci@runner"]
    assert alice.key != bob.key and len(alice.key) >= 43
    assert alice.key not in repr(alice)  # never in a traceback or log line
    revoke_key(path, "laptop-alice")
    assert read_keys(path) == [bob]
    assert mode(path) == 0o600


@pytest.mark.parametrize("file_mode", [0o644, 0o640, 0o604, 0o660])
def test_a_keys_file_others_can_read_is_refused(tmp_path: Path, file_mode: int) -> None:
    path = tmp_path / "keys"
    write_keys(path, [ApiKey("a", new_key())])
    os.chmod(path, file_mode)
    with pytest.raises(KeysFileError, match=f"mode {file_mode:04o}.*chmod 600"):
        read_keys(path)


def test_a_malformed_line_is_named_by_number_without_its_content(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    secret = new_key()
    path.write_text(f"good {new_key()}\nbad name {secret}\n")
    os.chmod(path, 0o600)
    with pytest.raises(KeysFileError, match="line 2") as caught:
        read_keys(path)
    assert secret not in str(caught.value)


@pytest.mark.parametrize("key", ["short", "has*wildcard" + "x" * 40, "x" * 31])
def test_keys_outside_the_alphabet_are_refused(tmp_path: Path, key: str) -> None:
    path = tmp_path / "keys"
    path.write_text(f"name {key}\n")
    os.chmod(path, 0o600)
    with pytest.raises(KeysFileError, match="line 1"):
        read_keys(path)


def test_duplicate_and_unknown_names_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    add_key(path, "alice")
    with pytest.raises(KeysFileError, match="exists already"):
        add_key(path, "alice")
    with pytest.raises(KeysFileError, match="no key named 'carol'.*alice"):
        revoke_key(path, "carol")
    with pytest.raises(KeysFileError, match="not allowed"):
        add_key(path, "two words")
    assert ensure_key(path, "alice") == read_keys(path)[0]


def test_the_same_key_under_two_names_is_refused_without_showing_it(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    key = new_key()
    path.write_text(f"alice {key}\nbob {key}\n")
    os.chmod(path, 0o600)
    with pytest.raises(KeysFileError, match="same key twice \\(line 2\\)") as caught:
        read_keys(path)
    assert key not in str(caught.value)


def test_redact_replaces_keys_by_their_names() -> None:
    alice = ApiKey("alice", new_key())
    assert redact(f"duplicate input 'Bearer {alice.key}'", [alice]) == (
        "duplicate input 'Bearer <key alice>'"
    )


def test_config_maps_each_key_to_its_name_and_refuses_the_rest(tmp_path: Path) -> None:
    keys = [ApiKey("alice", new_key()), ApiKey("bob", new_key())]
    config = caddy_config(spec(tmp_path), keys)
    server = config["apps"]["http"]["servers"]["proxy"]
    assert server["listen"] == ["192.168.1.20:8080"]
    mapping, refuse, too_large, forward = server["routes"]
    assert too_large["handle"][0]["status_code"] == 413
    assert mapping["handle"][0]["mappings"] == [
        {"input": f"Bearer {k.key}", "outputs": [k.name]} for k in keys
    ]
    assert mapping["handle"][0]["defaults"] == [""]
    assert refuse["handle"][0]["status_code"] == 401 and refuse["terminal"]
    body_limit, proxy = forward["handle"]
    assert body_limit["max_size"] == 4 * 1024 * 1024
    assert proxy["flush_interval"] == -1
    assert proxy["upstreams"] == [{"dial": "127.0.0.1:8081"}]
    assert config["admin"] == {
        "listen": f"unix/{tmp_path / 'admin.sock'}",
        "config": {"persist": False},
    }
    access = config["logging"]["logs"]["access"]
    assert access["include"] == [ACCESS_LOGGER]
    assert {"request>headers", "resp_headers"} <= set(access["encoder"]["fields"])
    assert "tls" not in config["apps"]


def test_tls_config_loads_the_certificate_files(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    config = caddy_config(spec(tmp_path, tls_cert=str(cert), tls_key=str(key)), [])
    assert config["apps"]["tls"]["certificates"]["load_files"] == [
        {"certificate": str(cert), "key": str(key)}
    ]
    assert config["apps"]["http"]["servers"]["proxy"]["tls_connection_policies"] == [{}]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tls_cert": "/nonexistent/cert.pem"}, "both a certificate and its key"),
        (
            {"tls_cert": "/nonexistent/cert.pem", "tls_key": "/nonexistent/key.pem"},
            "certificate file /nonexistent/cert.pem does not exist",
        ),
        ({"upstream_port": 8080}, "CODER_ASSETS_SERVER_MODEL_PORT"),
        ({"admin_socket": "/" + "x" * 120}, "longer than 100"),
    ],
)
def test_bad_proxy_settings_are_named(tmp_path: Path, fields: dict, message: str) -> None:
    with pytest.raises(ProxyError, match=message):
        caddy_config(spec(tmp_path, **fields), [])


def test_config_file_holding_keys_is_mode_600_in_a_700_folder(tmp_path: Path) -> None:
    path = tmp_path / "proxy" / "caddy.json"
    config = caddy_config(spec(tmp_path), [ApiKey("a", new_key())])
    assert write_config(path, config)
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert json.loads(path.read_text()) == config
    assert not write_config(path, config)  # unchanged: not written again


def test_access_lines_are_read_as_time_key_path_status_duration() -> None:
    line = json.dumps(
        {
            "level": "info",
            "ts": 1.5,
            "logger": ACCESS_LOGGER,
            "request": {"method": "POST", "uri": "/v1/completions"},
            "user_id": "alice",
            "duration": 0.25,
            "status": 200,
        }
    )
    assert parse_access_line(line) == {
        "time": 1.5,
        "key": "alice",
        "method": "POST",
        "path": "/v1/completions",
        "status": 200,
        "duration": 0.25,
    }
    assert parse_access_line('{"logger": "http"}') is None
    assert parse_access_line("not json") is None
