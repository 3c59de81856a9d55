"""waterdeep_executor and lora_adapter through real job executions: the run worker is
`dagster job execute` (or `dagster asset materialize`) in a subprocess, each step its own process,
on a real instance; the ssh transport against a real sshd on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

from coder_assets.core.deployment.host import WaterdeepLock
from coder_assets.core.training.adapter_files import adapter_digests
from coder_assets.core.training.dev_model import build_dev_model
from coder_assets.resources.mlx import dev_model_corpus
from coder_assets_tests.conftest import REPO_ROOT, free_port, stop_server
from coder_assets_tests.sshd_server import SshServer

TINY_TRAINING = {
    "rank": 4,
    "num_layers": 2,
    "iters": 4,
    "learning_rate": 1e-3,
    "steps_per_report": 2,
    "steps_per_eval": 2,
    "save_every": 2,
    "val_batches": 1,
    "grad_checkpoint": False,
}
pytestmark = pytest.mark.slow

# eval_scores follows lora_adapter in train_deploy_job: keep it to a token's worth of work.
TINY_EVAL = {
    "humaneval_problems": 1,
    "fim_tasks": 1,
    "chat_tasks": 1,
    "humaneval_max_tokens": 8,
    "fim_max_tokens": 8,
    "chat_max_tokens": 8,
}

QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


@dataclass
class Site:
    """A coder_assets home with a published dataset, and the Dagster instance that made it."""

    home: Path
    dagster_home: Path
    env: dict[str, str]

    def run(self, args: list[str], config: dict, *, env: dict[str, str] | None = None, **kw):
        config_file = self.home / f"run-{time.monotonic_ns()}.yaml"
        config_file.write_text(yaml.safe_dump(config))
        return subprocess.Popen(
            [sys.executable, "-m", "dagster", *args, "-c", str(config_file)],
            cwd=REPO_ROOT,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **kw,
        )

    def train(self, training: dict, *, env: dict[str, str] | None = None, timeout: float = 300):
        proc = self.run(
            ["job", "execute", "-m", "coder_assets.definitions", "-j", "train_deploy_job"],
            {
                **QUIET,
                "ops": {
                    "lora_adapter": {"config": training},
                    "eval_scores": {"config": TINY_EVAL},
                },
            },
            env=env,
        )
        output, _ = proc.communicate(timeout=timeout)
        return proc.returncode, output

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.dagster_home))

    def last_run(self) -> tuple[dg.DagsterRun, list]:
        with self.instance() as instance:
            (run,) = instance.get_runs(limit=1)
            return run, list(instance.all_logs(run.run_id))

    def adapter_metadata(self, run_id: str, asset: str = "lora_adapter") -> dict[str, object]:
        with self.instance() as instance:
            event = instance.get_latest_materialization_event(dg.AssetKey(asset))
            assert event is not None and event.run_id == run_id
            return {k: v.value for k, v in event.asset_materialization.metadata.items()}

    def assert_trained_and_evaluated(self, output: str) -> dg.DagsterRun:
        """The last run trained and evaluated an adapter. Whether the promotion gate passes on
        a few iterations of a random model is its own business (a rejection fails the run)."""
        run, logs = self.last_run()
        with self.instance() as instance:
            for asset in ("lora_adapter", "eval_scores"):
                event = instance.get_latest_materialization_event(dg.AssetKey(asset))
                assert event is not None and event.run_id == run.run_id, (asset, output)
        failed = {e.step_key for e in logs if e.dagster_event and e.dagster_event.is_step_failure}
        assert failed <= {"eval_scores_promotion_gate"}, output  # at most the gate's verdict
        return run

    def adapters(self) -> Path:
        return self.home / "adapters" / "homelab-coder"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The demo's repos and dataset stages, once: the training tests start from its dataset.
    These tests are about the executor, not the model: the tiny random dev model keeps their
    trainings short."""
    root = tmp_path_factory.mktemp("site")
    home, dagster_home = root / "home", root / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    model = build_dev_model(root / "dev-model", dev_model_corpus())
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CODER_ASSETS_", "GITEA_"))},
        "CODER_ASSETS_HOME": str(home),
        "CODER_ASSETS_BASE_MODEL": str(model),
        "DAGSTER_HOME": str(dagster_home),
        "CODER_ASSETS_SERVER_PORT": str(free_port()),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "coder_assets.cli", "demo", "--until", "dataset"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        yield Site(home, dagster_home, env)
    finally:
        stop_server(env)  # in case a training run got as far as deploying


def _failure_messages(logs) -> list[str]:
    return [
        entry.dagster_event.event_specific_data.error.message
        for entry in logs
        if entry.dagster_event is not None and entry.dagster_event.is_step_failure
    ]


def test_training_job_runs_lora_adapter_in_its_own_process_through_the_executor(site) -> None:
    _, output = site.train(TINY_TRAINING)
    run = site.assert_trained_and_evaluated(output)
    _, logs = site.last_run()
    workers = [
        e
        for e in logs
        if e.dagster_event
        and e.dagster_event.event_type_value == "STEP_WORKER_STARTING"
        and e.step_key == "lora_adapter"
    ]
    assert workers and "locally" in workers[0].dagster_event.message
    metadata = site.adapter_metadata(run.run_id)
    adapter = Path(metadata["path"])
    assert adapter.parent == site.adapters()
    assert (adapter / "adapters.safetensors").is_file()
    assert (adapter / "training_complete.json").is_file()
    assert metadata["iterations"] == 4 and metadata["trained_tokens"] > 0
    assert metadata["loss_curve"].startswith("![loss curve](data:image/png;base64,")
    progress = [e.user_message for e in logs if "train loss" in (e.user_message or "")]
    assert progress and "%" in progress[0] and "tok/s" in progress[0]


def test_host_guard_refuses_a_host_that_is_not_waterdeep_and_trains_nothing(site) -> None:
    # One run with all three checks failing (each run costs seconds): every one is named.
    wrong = {
        "CODER_ASSETS_WATERDEEP_HOST": "waterdeep",
        "CODER_ASSETS_WATERDEEP_PLATFORM": "darwin-arm64",
        "CODER_ASSETS_WATERDEEP_MIN_MEMORY_GB": "4096",
    }
    before = sorted(site.adapters().iterdir()) if site.adapters().exists() else []
    code, _ = site.train({**TINY_TRAINING, "seed": 11}, env=wrong)
    assert code != 0
    run, logs = site.last_run()
    assert run.status == dg.DagsterRunStatus.FAILURE
    (message,) = _failure_messages(logs)
    assert "not the configured waterdeep host" in message
    for check, setting in zip(("host identity", "platform", "memory"), wrong, strict=True):
        assert check in message and setting in message
    # The guard ran before the step: no step process, nothing trained.
    assert not [
        e for e in logs if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"
    ]
    after = sorted(site.adapters().iterdir()) if site.adapters().exists() else []
    assert after == before


def test_ad_hoc_materialization_on_a_host_that_is_not_waterdeep_is_refused(site) -> None:
    # What the UI does for a selection: the implicit asset job, with the location's executor.
    proc = site.run(
        ["asset", "materialize", "-m", "coder_assets.definitions", "--select", "lora_adapter"],
        {"ops": {"lora_adapter": {"config": {**TINY_TRAINING, "seed": 12}}}},
        env={"CODER_ASSETS_WATERDEEP_HOST": "waterdeep"},
    )
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    run, logs = site.last_run()
    assert not run.job_name.startswith("train_deploy")
    (message,) = _failure_messages(logs)
    assert "not the configured waterdeep host" in message


def test_the_asset_itself_refuses_a_wrong_host_when_the_executor_is_bypassed(site) -> None:
    # materialize() runs in-process, past any executor: the asset's own guard must hold.
    from coder_assets.definitions import build_definitions

    saved = dict(os.environ)
    os.environ.update({**site.env, "CODER_ASSETS_WATERDEEP_HOST": "waterdeep"})
    try:
        defs = build_definitions()
        with site.instance() as instance:
            result = dg.materialize(
                list(defs.assets or []),
                resources=defs.resources,
                instance=instance,
                run_config={"ops": {"lora_adapter": {"config": {**TINY_TRAINING, "seed": 13}}}},
                raise_on_error=False,
                selection=["lora_adapter"],
            )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert not result.success
    (message,) = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    assert "refusing to train a LoRA adapter" in message


def test_the_lock_refuses_a_second_trainer(site) -> None:
    with WaterdeepLock(site.home / "waterdeep.lock", purpose="another training", run_id="r-1"):
        code, _ = site.train({**TINY_TRAINING, "seed": 14})
    assert code != 0
    _, logs = site.last_run()
    (message,) = _failure_messages(logs)
    assert "another training" in message and str(os.getpid()) in message


def test_a_dataset_file_that_does_not_match_its_manifest_is_refused(site, tmp_path) -> None:
    bucket = tmp_path / "bucket"
    shutil.copytree(site.home / "bucket", bucket)
    (version_dir,) = list((bucket / "code-finetune").iterdir())
    with (version_dir / "train.jsonl").open("a") as handle:
        handle.write('{"text": "planted"}\n')
    code, _ = site.train(
        {**TINY_TRAINING, "seed": 15},
        env={
            "CODER_ASSETS_BUCKET_DIR": str(bucket),
            "CODER_ASSETS_WORK_DIR": str(tmp_path / "work"),
        },
    )
    assert code != 0
    _, logs = site.last_run()
    (message,) = _failure_messages(logs)
    assert "train.jsonl" in message and "sha256" in message
    assert not (tmp_path / "work" / "adapters").exists()


# --- cancel and resume, with a real model server -------------------------------------------------


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_a_cancelled_training_restores_the_server_and_a_retry_resumes(site, model_server) -> None:
    previous = site.adapters() / "previous-version"
    previous.mkdir(parents=True, exist_ok=True)
    (previous / "adapters.safetensors").write_bytes(b"previous adapter")
    long_training = {**TINY_TRAINING, "iters": 40, "save_every": 4, "seed": 21}
    earlier = set(site.adapters().glob("*/0000004_adapters.safetensors"))
    proc = site.run(
        ["job", "execute", "-m", "coder_assets.definitions", "-j", "train_deploy_job"],
        {
            **QUIET,
            "ops": {
                "lora_adapter": {"config": long_training},
                "eval_scores": {"config": TINY_EVAL},
            },
        },
        start_new_session=True,
    )

    def checkpoints() -> list[Path]:
        return sorted(set(site.adapters().glob("*/0000004_adapters.safetensors")) - earlier)

    try:
        _wait_for(lambda: bool(checkpoints()), 240, "the first checkpoint")
        assert not model_server.status().running  # paused for training
        os.kill(proc.pid, signal.SIGINT)  # what cancelling the run does to its run worker
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    run, logs = site.last_run()
    assert run.status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE)
    assert any("Terminated lora_adapter" in (e.user_message or "") for e in logs)
    _wait_for(lambda: model_server.status().running, 60, "the model server to be restored")
    model_server.wait_ready()
    assert (previous / "adapters.safetensors").read_bytes() == b"previous adapter"
    (adapter,) = [path.parent for path in checkpoints()]
    assert not (adapter / "training_complete.json").exists()

    # A retry of the same training resumes from its last checkpoint instead of starting over.
    _, output = site.train(long_training)
    run = site.assert_trained_and_evaluated(output)
    metadata = site.adapter_metadata(run.run_id)
    assert Path(metadata["path"]) == adapter
    assert metadata["resumed_from_iteration"] >= 4 and metadata["iterations"] == 40
    model_server.wait_ready()  # restored after the retry too
    # Both steps paused the serving model server; each records how long it was down, and
    # eval_scores the run's total so far, in separate step processes.
    evaluation = site.adapter_metadata(run.run_id, "eval_scores")
    assert metadata["server_downtime_seconds"] > 0
    assert evaluation["server_downtime_seconds"] > 0
    assert evaluation["train_deploy_downtime_seconds"] == pytest.approx(
        metadata["server_downtime_seconds"] + evaluation["server_downtime_seconds"], abs=0.15
    )


# --- the ssh transport, against a real sshd on loopback ------------------------------------------


def _ssh_env(sshd: SshServer) -> dict[str, str]:
    state = Path(sshd.client_key).parent / "remote-steps"
    return {
        "CODER_ASSETS_WATERDEEP_STATE_DIR": str(state),
        "CODER_ASSETS_WATERDEEP_TRANSPORT": "ssh",
        "CODER_ASSETS_WATERDEEP_SSH": sshd.destination,
        "CODER_ASSETS_WATERDEEP_SSH_PORT": str(sshd.port),
        "CODER_ASSETS_WATERDEEP_SSH_KEY": str(sshd.client_key),
        "CODER_ASSETS_WATERDEEP_SSH_KNOWN_HOSTS": str(sshd.known_hosts),
        "CODER_ASSETS_WATERDEEP_PYTHON": sys.executable,
    }


def test_ssh_transport_runs_the_step_on_the_remote_host(site, sshd) -> None:
    _, output = site.train({**TINY_TRAINING, "seed": 31}, env=_ssh_env(sshd))
    run = site.assert_trained_and_evaluated(output)
    _, logs = site.last_run()
    (worker,) = [
        e for e in logs
        if e.dagster_event and e.dagster_event.event_type_value == "STEP_WORKER_STARTING"
        and e.step_key == "lora_adapter"
    ]  # fmt: skip
    assert f"on {sshd.destination} over ssh" in worker.dagster_event.message
    metadata = site.adapter_metadata(run.run_id)
    assert (Path(metadata["path"]) / "training_complete.json").is_file()


def test_ssh_transport_guards_the_remote_host(site, sshd) -> None:
    env = {**_ssh_env(sshd), "CODER_ASSETS_WATERDEEP_HOST": "waterdeep"}
    code, _ = site.train({**TINY_TRAINING, "seed": 32}, env=env)
    assert code != 0
    _, logs = site.last_run()
    (message,) = _failure_messages(logs)
    assert f"on {sshd.destination}" in message and "host identity" in message


def test_ssh_transport_with_an_unknown_host_key_starts_nothing(site, sshd, tmp_path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    env = {**_ssh_env(sshd), "CODER_ASSETS_WATERDEEP_SSH_KNOWN_HOSTS": str(empty)}
    code, _ = site.train({**TINY_TRAINING, "seed": 33}, env=env)
    assert code != 0
    _, logs = site.last_run()
    (message,) = _failure_messages(logs)
    assert "ssh to" in message and "known_hosts" in message


def test_cancelling_a_run_terminates_its_step_on_the_remote_host(site, sshd) -> None:
    training = {**TINY_TRAINING, "iters": 400, "save_every": 4, "seed": 34}
    earlier = set(site.adapters().glob("*/0000004_adapters.safetensors"))
    proc = site.run(
        ["job", "execute", "-m", "coder_assets.definitions", "-j", "train_deploy_job"],
        {
            **QUIET,
            "ops": {"lora_adapter": {"config": training}, "eval_scores": {"config": TINY_EVAL}},
        },
        env=_ssh_env(sshd),
        start_new_session=True,
    )
    try:
        _wait_for(
            lambda: bool(set(site.adapters().glob("*/0000004_adapters.safetensors")) - earlier),
            240,
            "the remote step's first checkpoint",
        )
        state = Path(_ssh_env(sshd)["CODER_ASSETS_WATERDEEP_STATE_DIR"])
        pids = {int(path.read_text()) for path in state.glob("*-lora_adapter.pid")}
        assert pids, "the remote step worker records its pid"
        os.kill(proc.pid, signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    _, logs = site.last_run()
    (terminated,) = [
        e.user_message for e in logs if "Terminated lora_adapter" in (e.user_message or "")
    ]
    assert f"on {sshd.destination}" in terminated and "stopped after SIGTERM" in terminated

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text()

    _wait_for(lambda: not any(alive(pid) for pid in pids), 30, "the remote step process to exit")


def test_start_from_deployed_continues_from_the_adapter_the_link_points_at(site, tmp_path) -> None:
    # What the demo's automation does: lora_adapter's start_from deployed, through the job.
    finished = sorted(p.parent for p in site.adapters().glob("*/training_complete.json"))
    if not finished:
        site.train({**TINY_TRAINING, "seed": 40})
        finished = sorted(p.parent for p in site.adapters().glob("*/training_complete.json"))
    parent = finished[0]
    deploy_dir = tmp_path / "deployed"
    deploy_dir.mkdir()
    (deploy_dir / "latest").symlink_to(parent)

    _, output = site.train(
        {**TINY_TRAINING, "seed": 41, "start_from": "deployed"},
        env={"CODER_ASSETS_DEPLOY_DIR": str(deploy_dir)},
    )
    run = site.assert_trained_and_evaluated(output)
    metadata = site.adapter_metadata(run.run_id)
    assert metadata["started_from"] == f"deployed adapter {parent.name}"
    adapter = Path(metadata["path"])
    assert adapter != parent
    stored = json.loads((adapter / "adapter_config.json").read_text())["coder_assets"]
    assert stored["start_from"] == adapter_digests(parent)
    _, logs = site.last_run()
    assert any(f"continuing from the deployed adapter {parent.name}" in (e.user_message or "")
               for e in logs)  # fmt: skip
