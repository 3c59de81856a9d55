"""The process that runs one Dagster step for `waterdeep_executor`, here or on waterdeep over SSH.

`python -m coder_assets.step_worker` reads one JSON object from stdin:

    {"argv": [...], "env": {...}, "pid_file": "..."}

starts a new session (so the step and everything it spawns form one process group), writes its
pid to `pid_file` and replaces itself with `argv` (`python -m dagster api execute_step`) with `env`
added to its environment. The payload travels on stdin so that nothing in it (serialized step
arguments, forwarded settings, credentials) shows up in a command line, on either machine.

`--terminate PID_FILE` stops such a step: SIGTERM to its process group (Dagster turns that into an
interrupt, so the step's own cleanup runs: the model server is restored), then SIGKILL after a
grace period. `--guard JSON` checks this host against a host expectation and prints the problems
as JSON (the executor runs it over SSH before it starts a waterdeep step).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

TERMINATE_GRACE_SECONDS = 30.0


def _write_pid(pid_file: Path) -> None:
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = pid_file.with_name(f".{pid_file.name}.tmp")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, pid_file)


def run(payload: dict) -> None:
    """Become the step process described by `payload` (never returns)."""
    argv = [str(arg) for arg in payload["argv"]]
    env = {**os.environ, **{str(k): str(v) for k, v in payload.get("env", {}).items()}}
    if os.getpid() != os.getsid(0):
        os.setsid()
    pid_file = payload.get("pid_file")
    if pid_file:
        _write_pid(Path(pid_file).expanduser())
    sys.stdout.flush()
    default_termination_signals()
    os.execvpe(argv[0], argv, env)


def default_termination_signals() -> None:
    """Let SIGTERM, SIGINT and SIGHUP end this process again. An ignored signal stays ignored
    across exec, and a process started from a background shell or a supervisor that ignores
    SIGTERM would otherwise survive `terminate_step` until the SIGKILL after the grace period."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def terminate(pid_file: Path, grace: float = TERMINATE_GRACE_SECONDS) -> str:
    """Stop the step whose pid is in `pid_file`; returns what happened, in words."""
    try:
        pid = int(pid_file.expanduser().read_text().strip())
    except (FileNotFoundError, ValueError):
        return f"no running step recorded in {pid_file}"
    if not _alive(pid):
        return f"step process {pid} had already exited"
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return f"step process {pid} had already exited"
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            return f"step process {pid} stopped after SIGTERM"
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return f"step process {pid} killed after {grace:.0f} s"


def guard(expectation: dict) -> list[str]:
    from coder_assets.core.deployment.host import HostExpectation, check_host

    return check_host(HostExpectation(**expectation))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coder_assets.step_worker")
    parser.add_argument("--terminate", metavar="PID_FILE")
    parser.add_argument("--grace", type=float, default=TERMINATE_GRACE_SECONDS)
    parser.add_argument("--guard", metavar="JSON")
    args = parser.parse_args(argv)
    if args.terminate:
        sys.stdout.write(terminate(Path(args.terminate), args.grace) + "\n")
        return 0
    if args.guard:
        sys.stdout.write(json.dumps(guard(json.loads(args.guard))) + "\n")
        return 0
    run(json.loads(sys.stdin.read()))
    return 1  # not reached: run() replaces the process


if __name__ == "__main__":
    sys.exit(main())
