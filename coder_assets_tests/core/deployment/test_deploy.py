"""The deploy directory: complete installs only, atomic link swaps, rollback and pruning."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from coder_assets.core.deployment.deploy import (
    FINGERPRINT_FILE,
    INSTALLED_MARKER,
    AdapterFileError,
    DeployDir,
    DeploymentError,
    Links,
    check_adapter_dir,
    check_safetensors,
    check_version_name,
)


def safetensors_bytes(tensors: dict[str, tuple[list[int], str]]) -> bytes:
    """A valid safetensors file with zero-filled tensors of the given shapes and dtypes."""
    size = {"F32": 4, "F16": 2, "BF16": 2}
    header, offset, blobs = {}, 0, []
    for name, (shape, dtype) in tensors.items():
        count = 1
        for dim in shape:
            count *= dim
        length = count * size[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + length]}
        blobs.append(b"\0" * length)
        offset += length
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"".join(blobs)


def make_adapter(directory: Path, seed: int = 0) -> Path:
    directory.mkdir(parents=True)
    weights = safetensors_bytes(
        {
            "model.layers.0.self_attn.q_proj.lora_a": ([64, 8 + seed], "F32"),
            "model.layers.0.self_attn.q_proj.lora_b": ([8 + seed, 64], "F32"),
        }
    )
    (directory / "adapters.safetensors").write_bytes(weights)
    config = {"num_layers": 1, "lora_parameters": {"rank": 8 + seed, "scale": 2.0}}
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture
def deploy(tmp_path: Path) -> DeployDir:
    return DeployDir(tmp_path / "deployed")


def install(deploy: DeployDir, tmp_path: Path, version: str, seed: int = 0) -> Path:
    source = make_adapter(tmp_path / "sources" / version, seed)
    return deploy.install(source, version, documents={FINGERPRINT_FILE: {"v": version}})


def test_install_copies_both_files_and_marks_the_version_complete_last(deploy, tmp_path):
    target = install(deploy, tmp_path, "v1")

    assert target == deploy.root / "v1"
    assert sorted(p.name for p in target.iterdir()) == sorted(
        ["adapters.safetensors", "adapter_config.json", FINGERPRINT_FILE, INSTALLED_MARKER]
    )
    marker = json.loads((target / INSTALLED_MARKER).read_text())
    assert set(marker["files"]) == {"adapters.safetensors", "adapter_config.json"}
    assert deploy.installed_versions() == ["v1"]
    assert not [p for p in deploy.root.iterdir() if p.name.startswith(".")]


def test_install_of_an_installed_version_keeps_it(deploy, tmp_path):
    first = install(deploy, tmp_path, "v1")
    before = (first / INSTALLED_MARKER).read_text()
    again = deploy.install(make_adapter(tmp_path / "other", seed=3), "v1")
    assert again == first and (first / INSTALLED_MARKER).read_text() == before


def test_install_refuses_files_that_differ_from_the_release(deploy, tmp_path):
    source = make_adapter(tmp_path / "src")
    with pytest.raises(AdapterFileError, match="sha256"):
        deploy.install(source, "v1", expected={"adapters.safetensors": "0" * 64})
    assert deploy.installed_versions() == []
    assert not deploy.root.exists() or not any(deploy.root.iterdir())


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-10]), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes() + b"xx"), "trailing garbage"),
        (lambda p: p.write_bytes(b"\x05\0\0\0\0\0\0\0{bad}"), "garbled"),
        (lambda p: p.write_bytes(b"abc"), "too short"),
        (lambda p: p.unlink(), "missing"),
    ],
)
def test_a_damaged_weights_file_is_refused_before_anything_is_installed(
    deploy, tmp_path, damage, message
):
    source = make_adapter(tmp_path / "src")
    damage(source / "adapters.safetensors")
    with pytest.raises(AdapterFileError, match=message):
        deploy.install(source, "v1")
    assert deploy.installed_versions() == []


def test_an_adapter_config_without_lora_parameters_is_refused(tmp_path):
    source = make_adapter(tmp_path / "src")
    (source / "adapter_config.json").write_text("{}")
    with pytest.raises(AdapterFileError, match="lora_parameters"):
        check_adapter_dir(source)


def test_check_safetensors_returns_the_header(tmp_path):
    path = make_adapter(tmp_path / "a") / "adapters.safetensors"
    header = check_safetensors(path)
    assert header["model.layers.0.self_attn.q_proj.lora_a"]["shape"] == [64, 8]


@pytest.mark.parametrize("name", ["", ".", "..", "latest", "previous", "a/b", ".hidden"])
def test_version_names_that_cannot_be_folders_are_refused(name):
    with pytest.raises(AdapterFileError):
        check_version_name(name)


def test_swap_points_latest_at_the_new_version_and_previous_at_the_old(deploy, tmp_path):
    install(deploy, tmp_path, "v1")
    install(deploy, tmp_path, "v2", seed=1)

    assert deploy.swap("v1") == Links(None, None)
    assert deploy.links() == Links("v1", None)
    assert deploy.swap("v2") == Links("v1", None)
    assert deploy.links() == Links("v2", "v1")
    # Relative links: the directory can move.
    assert os.readlink(deploy.latest) == "v2"
    assert (deploy.latest / "adapters.safetensors").is_file()


def test_swap_refuses_a_version_that_is_not_installed(deploy, tmp_path):
    install(deploy, tmp_path, "v1")
    deploy.swap("v1")
    with pytest.raises(DeploymentError, match="not installed"):
        deploy.swap("v9")
    assert deploy.links() == Links("v1", None)


def test_restore_puts_both_links_back(deploy, tmp_path):
    for i, version in enumerate(("v1", "v2", "v3")):
        install(deploy, tmp_path, version, seed=i)
    deploy.swap("v1")
    deploy.swap("v2")
    before = deploy.swap("v3")
    deploy.restore(before, "smoke test failed")
    assert deploy.links() == Links("v2", "v1")
    events = [e["event"] for e in deploy.history()]
    assert events[-1] == "rolled_back"


def test_restore_to_no_adapter_removes_latest(deploy, tmp_path):
    install(deploy, tmp_path, "v1")
    before = deploy.swap("v1")
    deploy.restore(before, "server never became ready")
    assert deploy.links() == Links(None, None)
    assert not deploy.latest.exists() and not deploy.latest.is_symlink()


def test_prune_keeps_the_newest_and_never_the_deployed_or_previous(deploy, tmp_path):
    for i in range(7):
        install(deploy, tmp_path, f"v{i}", seed=i)
    deploy.swap("v0")
    deploy.swap("v1")  # latest v1, previous v0: both old, both protected

    removed = deploy.prune(keep=3)

    assert removed == ["v2", "v3"]
    assert deploy.installed_versions() == ["v0", "v1", "v4", "v5", "v6"]
    assert deploy.links() == Links("v1", "v0")
    assert (deploy.latest / "adapters.safetensors").is_file()


def test_prune_removes_leftovers_of_interrupted_installs(deploy, tmp_path):
    install(deploy, tmp_path, "v1")
    (deploy.root / ".incoming-v2-abc").mkdir()
    (deploy.root / ".incoming-v2-abc" / "adapters.safetensors").write_bytes(b"partial")
    deploy.prune(keep=5)
    assert sorted(p.name for p in deploy.root.iterdir()) == ["deployments.jsonl", "v1"]


def test_an_incomplete_version_folder_is_replaced_by_a_complete_install(deploy, tmp_path):
    (deploy.root / "v1").mkdir(parents=True)
    (deploy.root / "v1" / "adapters.safetensors").write_bytes(b"half a copy")
    install(deploy, tmp_path, "v1")
    assert deploy.is_installed("v1")
    check_adapter_dir(deploy.root / "v1")


def test_prune_refuses_to_keep_nothing(deploy):
    with pytest.raises(DeploymentError, match="at least one"):
        deploy.prune(keep=0)


CRASH_AFTER_SWAP = """
import os, sys
from pathlib import Path
from coder_assets.core.deployment.deploy import DeployDir
deploy = DeployDir(Path(sys.argv[1]))
deploy.install(Path(sys.argv[2]), "v2")
deploy.swap("v2")
os._exit(17)  # the process dies between the swap and the server restart
"""


def test_a_crash_between_swap_and_restart_leaves_latest_on_a_complete_version(deploy, tmp_path):
    install(deploy, tmp_path, "v1")
    deploy.swap("v1")
    source = make_adapter(tmp_path / "src-v2", seed=2)

    proc = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_SWAP, str(deploy.root), str(source)], check=False
    )

    assert proc.returncode == 17
    latest = deploy.links().latest
    assert latest in ("v1", "v2")
    assert deploy.is_installed(latest)
    check_adapter_dir(deploy.latest)
    assert not [p for p in deploy.root.iterdir() if p.name.startswith(".latest")]
