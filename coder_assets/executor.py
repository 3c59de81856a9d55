"""waterdeep_executor: every step of a run in its own process, waterdeep-tagged steps on waterdeep.

Built on Dagster's step-delegating executor with our own step handler. The handler looks at each
step's tags: a step tagged `coder_assets/host: waterdeep` (training, evaluation, deployment) runs
on waterdeep, every other step (data preparation) as a local subprocess. It is the code location's
default executor, so the routing holds however a waterdeep asset is materialized: its job, an
ad-hoc selection in the UI (the implicit asset job), a backfill, a sensor or a schedule run.

Two transports reach waterdeep:

- `local`: the Dagster run worker already runs on waterdeep; the step is a local subprocess.
- `ssh`: the step worker is started on waterdeep over SSH (`python -m coder_assets.step_worker` in
  a configured Python environment, against the same Dagster instance: Postgres in production).

Before a waterdeep step starts, the host guard checks the machine that would run it (identity,
platform, memory); a mismatch fails the step with the reason and starts nothing. The assets check
again inside (`WaterdeepResource.require`), because `materialize()` and `execute_in_process`
bypass executors. Health checks watch the step process; cancelling the run terminates it (SIGTERM
to its process group, so the step's cleanup runs, then SIGKILL).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster._core.definitions.executor_definition import multiple_process_executor_requirements
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.plan.objects import StepFailureData
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.step_delegating import (
    CheckStepHealthResult,
    StepDelegatingExecutor,
    StepHandler,
    StepHandlerContext,
)
from dagster._utils.error import SerializableErrorInfo

from coder_assets.constants import HOST_TAG, WATERDEEP
from coder_assets.core.deployment.host import (
    HostExpectation,
    WaterdeepBusyError,
    WaterdeepLock,
    check_host,
)

TRANSPORTS = ("local", "ssh")
# Settings a remote step worker needs from this side; values go over SSH's stdin, never argv.
DEFAULT_FORWARD_ENV = (
    "CODER_ASSETS_*",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REQUEST_CHECKSUM_CALCULATION",
    "AWS_RESPONSE_CHECKSUM_VALIDATION",
    "MLFLOW_TRACKING_*",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    # adapter_release runs on waterdeep and pushes with the Gitea token (in a header).
    "GITEA_TOKEN",
    "GITEA_CA_BUNDLE",
    # The production instance's Postgres (deploy/dagster.production.yaml) for the step worker.
    "PG*",
    # ... and the Dagster chart's (deploy/k8s/), whose instance reads the password from this one.
    "DAGSTER_PG_PASSWORD",
)
_LOG_TAIL_CHARS = 2000
_TERMINATE_GRACE_SECONDS = 30
# Held by the run worker of a run with waterdeep steps for the whole run, in the executor's state
# dir: one such run at a time, however it was launched (the daemon's queue limits only the runs it
# launches; two `dagster job execute` would interleave). Its holder info names the run, so a run
# worker killed with SIGKILL (the kernel drops its flock) is recognised by the next holder.
RUN_LOCK_FILE = "waterdeep-run.lock"
# A reclaim sensor takes the run lock for a moment: a starting run waits this long for it.
_RUN_LOCK_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class SshSettings:
    destination: str = ""  # user@host
    port: int = 22
    identity_file: str = ""
    known_hosts_file: str = ""
    python: str = "python3"  # the interpreter of the environment coder_assets is installed in
    state_dir: str = "~/.coder-assets/steps"  # pid files on waterdeep
    connect_timeout: int = 10

    def command(self, remote: Sequence[str]) -> list[str]:
        """The ssh command line running `remote` on waterdeep: key auth only, known hosts
        checked, no agent or X11 forwarding."""
        options = [
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"ConnectTimeout={self.connect_timeout}",
            "-o", "ForwardAgent=no",
            "-o", "ForwardX11=no",
            "-o", "LogLevel=ERROR",
            "-p", str(self.port),
        ]  # fmt: skip
        if self.identity_file:
            options += [
                "-o",
                "IdentitiesOnly=yes",
                "-i",
                str(Path(self.identity_file).expanduser()),
            ]
        if self.known_hosts_file:
            known = Path(self.known_hosts_file).expanduser()
            options += ["-o", f"UserKnownHostsFile={known}"]
        return ["ssh", *options, self.destination, " ".join(shlex.quote(p) for p in remote)]


@dataclass(frozen=True)
class WaterdeepSettings:
    """Everything waterdeep_executor is configured with (see `executor_config_schema`)."""

    transport: str = "local"
    host: HostExpectation = field(default_factory=HostExpectation)
    ssh: SshSettings = field(default_factory=SshSettings)
    forward_env: tuple[str, ...] = DEFAULT_FORWARD_ENV
    state_dir: str = "~/.coder-assets/steps"  # step logs and pid files on this machine
    health_check_interval_seconds: int = 5

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> WaterdeepSettings:
        transport = str(config.get("transport", "local"))
        if transport not in TRANSPORTS:
            raise dg.DagsterInvalidConfigError(
                f"waterdeep_executor transport {transport!r}: use one of {', '.join(TRANSPORTS)} "
                "(CODER_ASSETS_WATERDEEP_TRANSPORT)",
                [],
                config,
            )
        ssh = SshSettings(**dict(config.get("ssh") or {}))  # type: ignore[arg-type]
        if transport == "ssh" and not ssh.destination:
            raise dg.DagsterInvalidConfigError(
                "waterdeep_executor transport 'ssh' needs ssh.destination (user@waterdeep): set "
                "CODER_ASSETS_WATERDEEP_SSH",
                [],
                config,
            )
        return cls(
            transport=transport,
            host=HostExpectation(**dict(config.get("host") or {})),  # type: ignore[arg-type]
            ssh=ssh,
            forward_env=tuple(config.get("forward_env") or DEFAULT_FORWARD_ENV),  # type: ignore[arg-type]
            state_dir=str(config.get("state_dir") or cls.state_dir),
            health_check_interval_seconds=int(config.get("health_check_interval_seconds") or 5),
        )


def executor_config_schema() -> dict[str, dg.Field]:
    return {
        "transport": dg.Field(
            str, default_value="local", description="local: this machine is waterdeep; ssh."
        ),
        "host": dg.Field(
            {
                "name": dg.Field(str, default_value="waterdeep"),
                "platform": dg.Field(str, default_value="darwin-arm64"),
                "min_memory_gb": dg.Field(float, default_value=48.0),
                "identity_file": dg.Field(str, default_value=""),
            },
            is_required=False,
            description="What the host guard expects of the machine that runs waterdeep steps.",
        ),
        "ssh": dg.Field(
            {
                "destination": dg.Field(str, default_value=""),
                "port": dg.Field(int, default_value=22),
                "identity_file": dg.Field(str, default_value=""),
                "known_hosts_file": dg.Field(str, default_value=""),
                "python": dg.Field(str, default_value="python3"),
                "state_dir": dg.Field(str, default_value="~/.coder-assets/steps"),
                "connect_timeout": dg.Field(int, default_value=10),
            },
            is_required=False,
            description="How to reach waterdeep with the ssh transport.",
        ),
        "forward_env": dg.Field(
            [str],
            default_value=list(DEFAULT_FORWARD_ENV),
            description="Environment variables (globs) passed to remote step workers.",
        ),
        "state_dir": dg.Field(str, default_value="~/.coder-assets/steps"),
        "health_check_interval_seconds": dg.Field(int, default_value=5),
        "max_concurrent": dg.Field(int, default_value=max(os.cpu_count() or 1, 1)),
    }


def runs_on_waterdeep(tags: Mapping[str, str]) -> bool:
    return tags.get(HOST_TAG) == WATERDEEP


@dataclass
class _StepProcess:
    process: subprocess.Popen
    log_path: Path
    pid_file: str
    remote: bool


class WaterdeepStepHandler(StepHandler):
    """Launches each step as its own process: waterdeep steps through the configured transport
    after the host guard, other steps locally."""

    def __init__(self, settings: WaterdeepSettings) -> None:
        super().__init__()
        self.settings = settings
        self._steps: dict[tuple[str, str], _StepProcess] = {}

    @property
    def name(self) -> str:
        return "WaterdeepStepHandler"

    # --- launching ------------------------------------------------------------------------------

    def launch_step(self, step_handler_context: StepHandlerContext) -> Iterator[DagsterEvent]:
        args = step_handler_context.execute_step_args
        (step_key,) = args.step_keys_to_execute
        run_id = step_handler_context.dagster_run.run_id
        remote = (
            runs_on_waterdeep(step_handler_context.step_tags[step_key])
            and self.settings.transport == "ssh"
        )
        step_context = step_handler_context.get_step_context(step_key)
        if runs_on_waterdeep(step_handler_context.step_tags[step_key]):
            problems = self._guard()
            if problems:
                yield self._guard_failure(step_context, problems)
                return
        log_path = self._log_path(run_id, step_key)
        env = {"DAGSTER_COMPRESSED_EXECUTE_STEP_ARGS": args.get_command_env()[0]["value"]}
        if remote:
            env.update(self._forwarded_env())
            python = self.settings.ssh.python
            pid_file = f"{self.settings.ssh.state_dir}/{run_id}-{step_key}.pid"
            command = self.settings.ssh.command([python, "-m", "coder_assets.step_worker"])
        else:
            python = sys.executable
            pid_file = str(Path(self.settings.state_dir).expanduser() / f"{run_id}-{step_key}.pid")
            command = [python, "-m", "coder_assets.step_worker"]
        payload = {
            "argv": [python, "-m", "dagster", "api", "execute_step"],
            "env": env,
            "pid_file": pid_file,
        }
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        assert process.stdin is not None
        process.stdin.write(json.dumps(payload).encode())
        process.stdin.close()
        self._steps[(run_id, step_key)] = _StepProcess(process, log_path, pid_file, remote)
        where = f"on {self.settings.ssh.destination} over ssh" if remote else "locally"
        yield DagsterEvent.step_worker_starting(
            step_context,
            f"Launching {step_key} {where} (pid {process.pid}).",
            metadata={"log": dg.MetadataValue.path(str(log_path))},
        )

    def _log_path(self, run_id: str, step_key: str) -> Path:
        directory = Path(self.settings.state_dir).expanduser() / run_id
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{step_key}.log"

    def _forwarded_env(self) -> dict[str, str]:
        return {
            name: value
            for name, value in os.environ.items()
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.settings.forward_env)
        }

    # --- the host guard -------------------------------------------------------------------------

    def _guard(self) -> list[str]:
        """Problems with the machine that would run a waterdeep step; empty when it is waterdeep."""
        expectation = self.settings.host
        if self.settings.transport == "local":
            return check_host(expectation)
        remote = [
            self.settings.ssh.python,
            "-m",
            "coder_assets.step_worker",
            "--guard",
            json.dumps(expectation.__dict__),
        ]
        try:
            proc = subprocess.run(
                self.settings.ssh.command(remote),
                capture_output=True,
                text=True,
                timeout=self.settings.ssh.connect_timeout + 60,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return [f"ssh to {self.settings.ssh.destination} timed out while checking the host"]
        if proc.returncode != 0:
            return [
                f"ssh to {self.settings.ssh.destination} (port {self.settings.ssh.port}) failed "
                f"with exit code {proc.returncode}: {proc.stderr.strip()[-_LOG_TAIL_CHARS:]} — "
                "check CODER_ASSETS_WATERDEEP_SSH, the key and known_hosts file, and that "
                f"{self.settings.ssh.python} has coder_assets installed"
            ]
        try:
            return list(json.loads(proc.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            return [f"the host guard on {self.settings.ssh.destination} answered {proc.stdout!r}"]

    def _guard_failure(self, step_context, problems: list[str]) -> DagsterEvent:
        where = self.settings.ssh.destination if self.settings.transport == "ssh" else "this host"
        message = (
            f"Refusing to run {step_context.step.key} on {where}: it is not the configured "
            f"waterdeep host. " + " ".join(problems)
        )
        return DagsterEvent.step_failure_event(
            step_context,
            StepFailureData(
                error=SerializableErrorInfo(message, stack=[], cls_name="HostGuardError"),
                user_failure_data=None,
            ),
            message=message,
        )

    # --- health and termination -----------------------------------------------------------------

    def check_step_health(self, step_handler_context: StepHandlerContext) -> CheckStepHealthResult:
        (step_key,) = step_handler_context.execute_step_args.step_keys_to_execute
        step = self._steps.get((step_handler_context.dagster_run.run_id, step_key))
        if step is None:
            return CheckStepHealthResult.unhealthy(f"{step_key} was not launched by this worker")
        code = step.process.poll()
        if code is None or code == 0:
            return CheckStepHealthResult.healthy()
        step_handler_context.instance.event_log_storage.free_concurrency_slot_for_step(
            step_handler_context.dagster_run.run_id, step_key
        )
        return CheckStepHealthResult.unhealthy(
            f"the step process exited with code {code}; last output:\n{_tail(step.log_path)}"
        )

    def terminate_step(self, step_handler_context: StepHandlerContext) -> Iterator[DagsterEvent]:
        (step_key,) = step_handler_context.execute_step_args.step_keys_to_execute
        run_id = step_handler_context.dagster_run.run_id
        step = self._steps.get((run_id, step_key))
        if step is None:
            return
        if step.remote:
            outcome = self._terminate_remote(step)
        else:
            outcome = _terminate_local(step.process)
        # A terminated step never reports its end, so its pool slot (the `waterdeep` pool allows
        # one step at a time) would stay claimed and block every later waterdeep step.
        step_handler_context.instance.event_log_storage.free_concurrency_slot_for_step(
            run_id, step_key
        )
        yield DagsterEvent.engine_event(
            step_handler_context.get_step_context(step_key),
            f"Terminated {step_key}: {outcome}",
            EngineEventData(),
        )

    def _terminate_remote(self, step: _StepProcess) -> str:
        remote = [
            self.settings.ssh.python,
            "-m",
            "coder_assets.step_worker",
            "--terminate",
            step.pid_file,
        ]
        try:
            proc = subprocess.run(
                self.settings.ssh.command(remote),
                capture_output=True,
                text=True,
                timeout=_TERMINATE_GRACE_SECONDS + self.settings.ssh.connect_timeout + 10,
                check=False,
            )
            outcome = proc.stdout.strip() or proc.stderr.strip()
        except subprocess.TimeoutExpired:
            outcome = "the remote terminate command timed out"
        _terminate_local(step.process)  # the ssh client
        return f"on {self.settings.ssh.destination}: {outcome}"


def _terminate_local(process: subprocess.Popen) -> str:
    if process.poll() is not None:
        return f"process {process.pid} had already exited"
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return f"process {process.pid} had already exited"
    try:
        process.wait(timeout=_TERMINATE_GRACE_SECONDS)
        return f"process {process.pid} stopped after SIGTERM"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        return f"process {process.pid} killed after {_TERMINATE_GRACE_SECONDS} s"


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "(no output)"
    return data[-_LOG_TAIL_CHARS:].decode("utf-8", errors="replace")


def take_run_lock(path: Path, purpose: str, run_id: str, wait: float = 0.0) -> WaterdeepLock:
    """The run lock at `path`, waiting up to `wait` seconds; WaterdeepBusyError names its holder."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return WaterdeepLock(path, purpose=purpose, run_id=run_id).acquire()
        except WaterdeepBusyError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def reclaim_dead_run(instance: dg.DagsterInstance, holder: Mapping[str, object]) -> str | None:
    """Clean up after the run named by a stale run-lock `holder` (its run worker died without
    releasing the lock): mark the run failed when it is not finished, free its pool slots, and
    stop its orphaned local step processes. Returns what was done, in words, or None when the
    holder names no run."""
    run_id = str(holder.get("run_id") or "")
    if not run_id:
        return None
    run = instance.get_run_by_id(run_id)
    if run is None:
        return None
    who = f"pid {holder.get('pid', '?')} on {holder.get('hostname', '?')}"
    done = []
    if not run.is_finished:
        instance.report_run_failed(
            run,
            f"the run worker of run {run_id} ({who}) died without ending the run (its waterdeep "
            "run lock was left behind); marked failed so that its pool slots are freed",
        )
        done.append("marked the run failed")
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    done.append("freed its pool slots")
    state_dir = Path(str(holder.get("state_dir") or "")).expanduser()
    if str(holder.get("state_dir") or "") and state_dir.is_dir():
        from coder_assets.step_worker import terminate

        for pid_file in sorted(state_dir.glob(f"{run_id}-*.pid")):
            done.append(f"{pid_file.stem[len(run_id) + 1 :]}: {terminate(pid_file)}")
    return f"reclaimed run {run_id} of dead run worker {who}: " + "; ".join(done)


class WaterdeepExecutor(StepDelegatingExecutor):
    """The step-delegating executor that, for a run with waterdeep steps, holds the run lock from
    start to end, and reclaims a run whose worker died holding it."""

    def __init__(self, step_handler: WaterdeepStepHandler, **kwargs) -> None:
        super().__init__(step_handler, **kwargs)
        self._settings = step_handler.settings

    def execute(self, plan_context, execution_plan) -> Iterator[DagsterEvent]:
        steps = execution_plan.get_steps_to_execute_in_topo_order()
        if not any(runs_on_waterdeep(step.tags or {}) for step in steps):
            yield from super().execute(plan_context, execution_plan)
            return
        run = plan_context.dagster_run
        state_dir = Path(self._settings.state_dir).expanduser()
        try:
            lock = take_run_lock(
                state_dir / RUN_LOCK_FILE,
                f"run {run.job_name}",
                run.run_id,
                wait=_RUN_LOCK_WAIT_SECONDS,
            )
        except WaterdeepBusyError as exc:
            raise WaterdeepBusyError(
                f"refusing to start run {run.run_id} of {run.job_name}: it has waterdeep steps "
                f"and another run holds waterdeep. {exc}",
                holder=exc.holder,
            ) from None
        try:
            # Recorded for whoever finds the lock stale: where this run's step pid files are.
            lock.holder = {**(lock.holder or {}), "state_dir": str(state_dir)}
            lock.rewrite_holder()
            if lock.cleared_stale:
                outcome = reclaim_dead_run(plan_context.instance, lock.cleared_stale)
                if outcome:
                    plan_context.log.warning(outcome)
            yield from super().execute(plan_context, execution_plan)
        finally:
            lock.release()


@dg.executor(
    name="waterdeep_executor",
    config_schema=executor_config_schema(),
    requirements=multiple_process_executor_requirements(),
)
def waterdeep_executor(init_context: dg.InitExecutorContext) -> StepDelegatingExecutor:
    """Runs every step in its own process; steps tagged `coder_assets/host: waterdeep` only on
    waterdeep (after the host guard), locally or over SSH; the others locally."""
    config = init_context.executor_config
    settings = WaterdeepSettings.from_config(config)
    return WaterdeepExecutor(
        WaterdeepStepHandler(settings),
        retries=RetryMode.DISABLED,
        max_concurrent=int(config.get("max_concurrent") or 1),
        check_step_health_interval_seconds=settings.health_check_interval_seconds,
    )
