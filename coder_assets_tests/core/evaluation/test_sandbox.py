"""Tests for running untrusted generated code (coder_assets.core.evaluation.sandbox).

Protections that depend on the OS and privileges (namespaces, dropped capabilities) are tested
where `sandbox_capabilities()` says they are active and skipped with the reason otherwise; as
root on Linux (CI) they must be active, which one test pins.
"""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from coder_assets.core.evaluation.sandbox import (
    FILE_SIZE_LIMIT_BYTES,
    TAIL_CHARS,
    SandboxError,
    run_python,
    sandbox_capabilities,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
IS_LINUX = sys.platform.startswith("linux")


def _skip_unless(capability: str) -> None:
    if not sandbox_capabilities()[capability]:
        pytest.skip(
            f"sandbox protection {capability!r} is not available on this machine "
            f"(needs Linux with root or unprivileged user namespaces)"
        )


def _processes_with(token: str) -> list[str]:
    """Live (non-zombie) processes whose command line contains `token`."""
    listing = subprocess.run(
        ["ps", "-A", "-o", "stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    return [
        line for line in listing.splitlines() if token in line and not line.strip().startswith("Z")
    ]


def _wait_until_gone(token: str, deadline_seconds: float = 5.0) -> list[str]:
    """Poll until no process carries `token` or the deadline passes; return the survivors."""
    deadline = time.monotonic() + deadline_seconds
    survivors = _processes_with(token)
    while survivors and time.monotonic() < deadline:
        time.sleep(0.05)
        survivors = _processes_with(token)
    return survivors


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    try:
        yield server
    finally:
        server.close()


def test_correct_program_passes_with_its_output() -> None:
    result = run_python("print(sum(range(10)))")

    assert result.passed
    assert result.exit_code == 0
    assert not result.timed_out
    assert result.stdout_tail == "45\n"
    assert result.wall_seconds < 10


def test_failing_assertion_fails_the_run() -> None:
    # The canary: a harness that passed everything would pass this.
    result = run_python("assert 1 + 1 == 3, 'arithmetic is broken'")

    assert not result.passed
    assert result.exit_code == 1
    assert not result.timed_out
    assert "AssertionError: arithmetic is broken" in result.stderr_tail


def test_infinite_loop_times_out_within_the_deadline_and_the_next_run_still_works() -> None:
    started = time.monotonic()
    result = run_python("while True:\n    pass\n", timeout=1.0)
    elapsed = time.monotonic() - started

    assert result.timed_out
    assert not result.passed
    assert result.exit_code == -9
    assert 1.0 <= result.wall_seconds < 3.0
    assert elapsed < 3.0
    assert run_python("print('still fine')").stdout_tail == "still fine\n"


@pytest.mark.parametrize(
    ("ending", "needs_pid_namespace"),
    [("exits", False), ("hangs", False), ("child_calls_setsid", True)],
)
def test_spawned_child_dies_with_the_program(ending: str, needs_pid_namespace: bool) -> None:
    if needs_pid_namespace and not sandbox_capabilities()["processes_isolated"]:
        pytest.skip("a child that calls setsid() leaves the group; only a PID namespace kills it")
    token = f"sandbox-child-{uuid.uuid4().hex}"
    child_code = "import os, time\n"
    child_code += "os.setsid()\n" if ending == "child_calls_setsid" else ""
    child_code += "time.sleep(60)\n"
    program = textwrap.dedent(
        f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", {child_code!r}, {token!r}])
        time.sleep(0.5)  # let the child start before the program ends or hangs
        print("spawned", flush=True)
        if {ending == "hangs"!r}:
            time.sleep(60)
        """
    )

    result = run_python(program, timeout=2.0)

    assert result.stdout_tail == "spawned\n"
    assert result.timed_out is (ending == "hangs")
    assert _wait_until_gone(token) == []


def test_working_directory_and_home_are_fresh_and_removed_afterwards(tmp_path: Path) -> None:
    program = textwrap.dedent(
        """
        import os
        from pathlib import Path
        print(sorted(os.listdir(".")))
        Path("~/home-canary.txt").expanduser().write_text("x")
        Path("relative-canary.txt").write_text("x")
        print(Path("~/home-canary.txt").expanduser().resolve())
        print(Path("relative-canary.txt").resolve())
        print(os.environ["TMPDIR"])
        """
    )

    first = run_python(program)
    second = run_python(program)

    assert first.passed, first.stderr_tail
    listing, home_file, relative_file, tmpdir = first.stdout_tail.splitlines()
    # Nothing but the program and its TMPDIR: the second run does not see the first's files.
    assert listing == second.stdout_tail.splitlines()[0] == "['main.py', 'tmp']"
    assert Path(home_file).parent == Path(relative_file).parent
    assert Path(tmpdir).parent == Path(home_file).parent
    assert Path(home_file).parent != Path(second.stdout_tail.splitlines()[1]).parent
    assert not Path(home_file).parent.exists()
    assert not Path(home_file).is_relative_to(Path.home())
    assert not (tmp_path / "home-canary.txt").exists()


def test_writes_outside_the_working_directory_fail(tmp_path: Path) -> None:
    _skip_unless("filesystem_readonly")
    target = tmp_path / "escaped.txt"
    program = textwrap.dedent(
        f"""
        try:
            open({str(target)!r}, "w").write("escaped")
        except OSError as exc:
            print(type(exc).__name__, exc.errno)
        open("allowed.txt", "w").write("inside is fine")
        """
    )

    result = run_python(program)

    assert result.passed, result.stderr_tail
    assert result.stdout_tail.split() == ["OSError", "30"]  # EROFS
    assert not target.exists()


def test_program_runs_without_capabilities_and_cannot_remount() -> None:
    _skip_unless("privileges_dropped")
    program = textwrap.dedent(
        """
        import ctypes
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        print(status["CapEff"].strip(), status["CapBnd"].strip())
        libc = ctypes.CDLL(None, use_errno=True)
        ms_remount, ms_bind = 0x20, 0x1000
        print(libc.mount(None, b"/", None, ms_remount | ms_bind, None), ctypes.get_errno())
        """
    )

    result = run_python(program)

    assert result.passed, result.stderr_tail
    capabilities, mount = result.stdout_tail.splitlines()
    assert capabilities == "0000000000000000 0000000000000000"
    assert mount == "-1 1"  # EPERM


def test_parent_environment_variables_are_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("SANDBOX_CANARY_SECRET", secret)
    program = "import os\nprint(sorted(os.environ))\nprint(os.environ.get('SANDBOX_CANARY_SECRET'))"

    result = run_python(program)

    assert result.passed, result.stderr_tail
    names, value = result.stdout_tail.splitlines()
    # LC_CTYPE is Python's own: it coerces the C locale to UTF-8 at startup (PEP 538).
    assert set(ast.literal_eval(names)) <= {"HOME", "PATH", "TMPDIR", "LC_CTYPE"}
    assert value == "None"
    assert secret not in result.stdout_tail + result.stderr_tail


def test_parent_process_environment_is_not_readable_through_proc() -> None:
    _skip_unless("processes_isolated")
    # The secret must be in the harness's initial environment to show in /proc/<pid>/environ,
    # so the harness is a fresh process started with it.
    secret = f"canary-{uuid.uuid4().hex}"
    program = textwrap.dedent(
        f"""
        import os
        found = []
        for pid in os.listdir("/proc"):
            try:
                if {secret!r}.encode() in open(f"/proc/{{pid}}/environ", "rb").read():
                    found.append(pid)
            except OSError:
                pass
        print("found" if found else "not found", len(os.listdir("/proc")) > 0)
        """
    )
    harness = (
        "from coder_assets.core.evaluation.sandbox import run_python\n"
        f"result = run_python({program!r})\n"
        "print(result.stdout_tail, end='')\n"
        "print(result.stderr_tail, end='')\n"
    )
    env = {**os.environ, "SANDBOX_CANARY_SECRET": secret, "PYTHONPATH": str(REPO_ROOT)}

    output = subprocess.run(
        [sys.executable, "-c", harness], env=env, capture_output=True, text=True, timeout=60
    )

    assert output.returncode == 0, output.stderr
    assert output.stdout == "not found True\n"


def test_loopback_server_is_unreachable(listener: socket.socket) -> None:
    _skip_unless("network_isolated")
    port = listener.getsockname()[1]
    program = textwrap.dedent(
        f"""
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
            print("connected")
        except OSError as exc:
            print("blocked", exc.errno)
        """
    )

    result = run_python(program)

    assert result.passed, result.stderr_tail
    assert result.stdout_tail.startswith("blocked")
    with pytest.raises(TimeoutError):
        listener.accept()


@pytest.mark.skipif(
    not (IS_LINUX and os.geteuid() == 0), reason="namespaces are only certain as root on Linux"
)
def test_every_protection_is_active_as_root_on_linux() -> None:
    capabilities = sandbox_capabilities()

    assert all(capabilities.values()), capabilities


@pytest.mark.skipif(not IS_LINUX, reason="RLIMIT_AS is only honoured on Linux")
def test_memory_limit_stops_a_2gb_allocation() -> None:
    result = run_python("block = bytearray(2 * 1024**3)\nprint('allocated')", memory_mb=256)

    assert not result.passed
    assert not result.timed_out
    assert "MemoryError" in result.stderr_tail
    assert "allocated" not in result.stdout_tail


def test_output_beyond_the_file_size_limit_fails_the_program_and_tails_stay_short() -> None:
    chunk = 1024 * 1024
    program = (
        "import sys\n"
        f"for _ in range({FILE_SIZE_LIMIT_BYTES // chunk + 2}):\n"
        f"    sys.stdout.write('x' * {chunk})\n"
        "print('finished')\n"
    )

    result = run_python(program)

    assert not result.passed
    # Python ignores SIGXFSZ, so the write that crosses the limit raises EFBIG.
    assert "File too large" in result.stderr_tail
    assert len(result.stdout_tail) == TAIL_CHARS
    assert "finished" not in result.stdout_tail


def test_sandbox_capabilities_reports_every_protection_as_a_bool() -> None:
    capabilities = sandbox_capabilities()

    assert {"wall_clock_timeout", "process_group_kill", "network_isolated"} <= set(capabilities)
    assert all(isinstance(value, bool) for value in capabilities.values())
    assert capabilities["wall_clock_timeout"] and capabilities["process_group_kill"]


@pytest.mark.parametrize(
    "settings",
    [{"timeout": 0}, {"timeout": -1.0}, {"memory_mb": 0}, {"cpu_seconds": 0}],
)
def test_invalid_settings_raise_sandbox_error(settings: dict[str, float]) -> None:
    with pytest.raises(SandboxError, match="must be"):
        run_python("pass", **settings)
