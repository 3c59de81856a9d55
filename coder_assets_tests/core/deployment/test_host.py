"""The waterdeep host guard names each failed check and its setting; the waterdeep lock admits
one holder at a time and never stays blocked by a dead one."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from coder_assets.core.deployment.host import (
    HostExpectation,
    HostFacts,
    HostGuardError,
    WaterdeepBusyError,
    WaterdeepLock,
    check_host,
    current_platform,
    normalize_platform,
    require_host,
)

GIB = 1024**3
WATERDEEP = HostFacts(
    hostname="waterdeep",
    fqdn="waterdeep.lan",
    identity="",
    platform="darwin-arm64",
    memory_bytes=48 * GIB,
)
EXPECT = HostExpectation()


def test_waterdeep_passes_every_check() -> None:
    assert check_host(EXPECT, WATERDEEP) == []
    assert require_host(EXPECT, WATERDEEP, what="train") is WATERDEEP


MISMATCHES = {
    "host identity": replace(WATERDEEP, hostname="ci-runner", fqdn="ci-runner.lan"),
    "platform": replace(WATERDEEP, platform="linux-x86_64"),
    "memory": replace(WATERDEEP, memory_bytes=16 * GIB),
}


@pytest.mark.parametrize(
    ("facts", "check", "env_var"),
    [
        (MISMATCHES["host identity"], "host identity", "CODER_ASSETS_WATERDEEP_HOST"),
        (MISMATCHES["platform"], "platform", "CODER_ASSETS_WATERDEEP_PLATFORM"),
        (MISMATCHES["memory"], "memory", "CODER_ASSETS_WATERDEEP_MIN_MEMORY_GB"),
        (replace(WATERDEEP, memory_bytes=0), "memory", "CODER_ASSETS_WATERDEEP_MIN_MEMORY_GB"),
    ],
)
def test_each_mismatch_gives_exactly_its_problem_naming_its_setting(
    facts: HostFacts, check: str, env_var: str
) -> None:
    problems = check_host(EXPECT, facts)
    assert len(problems) == 1
    assert problems[0].startswith(f"{check}: expected")
    assert env_var in problems[0]


def test_identity_problem_says_expected_and_found() -> None:
    (problem,) = check_host(EXPECT, replace(WATERDEEP, hostname="ci-runner", fqdn="ci-runner"))
    assert "'waterdeep'" in problem and "'ci-runner'" in problem
    assert "CODER_ASSETS_WATERDEEP_IDENTITY_FILE" in problem


@pytest.mark.parametrize(
    ("hostname", "fqdn"),
    [
        ("waterdeep", "waterdeep"),
        ("WaterDeep", "waterdeep.local"),
        ("localhost", "waterdeep.homelab.lan"),  # hostname unset, DNS knows it
    ],
)
def test_hostname_or_fqdn_first_label_matches_case_insensitively(hostname: str, fqdn: str) -> None:
    facts = replace(WATERDEEP, hostname=hostname.lower(), fqdn=fqdn)
    assert check_host(EXPECT, facts) == []


def test_fqdn_matches_only_on_its_first_label() -> None:
    facts = replace(WATERDEEP, hostname="mac", fqdn="mac.waterdeep.lan")
    assert [p.split(":")[0] for p in check_host(EXPECT, facts)] == ["host identity"]


@pytest.mark.parametrize(
    ("identity", "hostname", "ok"),
    [
        ("waterdeep", "ci-runner", True),  # identity file wins over the hostname
        ("Waterdeep", "ci-runner", True),
        ("baldursgate", "waterdeep", False),  # ... also when it says no
        ("", "waterdeep", True),  # empty or absent identity file: the hostname decides
        ("", "ci-runner", False),
    ],
)
def test_identity_file_wins_over_hostname(identity: str, hostname: str, ok: bool) -> None:
    expect = replace(EXPECT, identity_file="/etc/coder-assets/host")
    facts = replace(WATERDEEP, identity=identity, hostname=hostname, fqdn=hostname)
    problems = check_host(expect, facts)
    assert (problems == []) is ok
    if not ok:
        assert "/etc/coder-assets/host" in problems[0]


def test_gather_reads_the_identity_file(tmp_path: Path) -> None:
    identity_file = tmp_path / "host-identity"
    identity_file.write_text("  waterdeep\n", "utf-8")
    facts = HostFacts.gather(str(identity_file))
    assert facts.identity == "waterdeep"
    assert HostFacts.gather(str(tmp_path / "missing")).identity == ""
    assert facts.hostname == socket.gethostname().split(".")[0].lower()
    assert facts.platform == current_platform()
    assert facts.memory_bytes > 0
    expect = HostExpectation(
        platform=current_platform(), min_memory_gb=0.1, identity_file=str(identity_file)
    )
    assert check_host(expect) == []


@pytest.mark.parametrize(
    ("value", "normalized"),
    [
        ("darwin-arm64", "darwin-arm64"),
        ("darwin-aarch64", "darwin-arm64"),
        ("linux-aarch64", "linux-arm64"),
        ("Linux-AMD64", "linux-x86_64"),
        ("linux-x86_64", "linux-x86_64"),
    ],
)
def test_platform_machine_aliases_are_normalized(value: str, normalized: str) -> None:
    assert normalize_platform(value) == normalized


def test_require_host_raises_with_every_problem() -> None:
    facts = HostFacts("ci-runner", "ci-runner.lan", "", "linux-x86_64", 8 * GIB)
    with pytest.raises(HostGuardError) as raised:
        require_host(EXPECT, facts, what="train lora_adapter")
    message = str(raised.value)
    assert message.startswith("refusing to train lora_adapter on ci-runner: this is not the ")
    assert [p.split(":")[0] for p in raised.value.problems] == [
        "host identity",
        "platform",
        "memory",
    ]
    for problem in raised.value.problems:
        assert problem in message


# --- the lock -------------------------------------------------------------------------------

_HOLDER_SCRIPT = """
import sys, time
from pathlib import Path
from coder_assets.core.deployment.host import WaterdeepLock
with WaterdeepLock(Path(sys.argv[1]), purpose="train lora_adapter", run_id="run-42"):
    print("held", flush=True)
    time.sleep(120)
"""


def _spawn_holder(lock_path: Path, deadline_s: float = 30.0) -> subprocess.Popen[str]:
    """A real other process holding the lock; returns once it says it holds it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER_SCRIPT, str(lock_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], deadline_s)
    if not ready or proc.stdout.readline().strip() != "held":
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"the holder process did not take the lock within {deadline_s} s: {err}")
    return proc


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


@pytest.fixture
def holder(tmp_path: Path):
    lock_path = tmp_path / "waterdeep.lock"
    proc = _spawn_holder(lock_path)
    yield lock_path, proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)


def test_lock_refuses_a_second_holder_naming_the_first(holder) -> None:
    lock_path, proc = holder
    with pytest.raises(WaterdeepBusyError) as raised:
        WaterdeepLock(lock_path, purpose="evaluate").acquire()
    message = str(raised.value)
    assert f"pid {proc.pid}" in message
    assert "'train lora_adapter'" in message and "run run-42" in message
    assert "wait for that run to finish or cancel it" in message
    assert raised.value.holder["pid"] == proc.pid


def test_sigkilled_holder_does_not_block_the_next_one(holder) -> None:
    lock_path, proc = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    with WaterdeepLock(lock_path, purpose="evaluate", run_id="run-43") as lock:
        assert lock.cleared_stale is not None
        assert lock.cleared_stale["pid"] == proc.pid
        assert json.loads(lock_path.read_text("utf-8"))["run_id"] == "run-43"


@pytest.mark.parametrize("on_other_host", [False, True])
def test_lock_file_left_by_a_dead_process_is_cleared_and_reported(
    tmp_path: Path, on_other_host: bool
) -> None:
    lock_path = tmp_path / "waterdeep.lock"
    left = {
        "pid": os.getpid() if on_other_host else _dead_pid(),
        "hostname": "baldursgate" if on_other_host else socket.gethostname(),
        "purpose": "train lora_adapter",
        "run_id": "run-1",
        "started_at": "2026-01-01T00:00:00+00:00",
    }
    lock_path.write_text(json.dumps(left), "utf-8")
    with WaterdeepLock(lock_path, purpose="deploy", run_id="run-2") as lock:
        assert lock.cleared_stale == left
        holder = json.loads(lock_path.read_text("utf-8"))
        assert (holder["pid"], holder["purpose"], holder["run_id"]) == (
            os.getpid(),
            "deploy",
            "run-2",
        )
        assert holder["started_at"].endswith("+00:00")


def test_lock_is_reacquirable_after_release_and_free_lock_reports_nothing(tmp_path: Path) -> None:
    lock_path = tmp_path / "state" / "waterdeep.lock"
    first = WaterdeepLock(lock_path, purpose="train")
    with first:
        assert first.held
        with pytest.raises(WaterdeepBusyError):
            WaterdeepLock(lock_path, purpose="evaluate").acquire()  # same process, other fd
    assert not first.held
    assert lock_path.exists() and lock_path.read_text("utf-8") == ""
    with WaterdeepLock(lock_path, purpose="evaluate") as second:
        assert second.cleared_stale is None
    with first:  # the same object again
        assert first.cleared_stale is None


def test_lock_released_even_when_the_block_raises(tmp_path: Path) -> None:
    lock_path = tmp_path / "waterdeep.lock"
    with pytest.raises(RuntimeError), WaterdeepLock(lock_path, purpose="train"):
        raise RuntimeError("training failed")
    with WaterdeepLock(lock_path, purpose="train") as lock:
        assert lock.held
