"""Fault injection on waterdeep with real processes (issue 15, cases 1, 2, 3, 6, 10): a step or a
run worker killed with SIGKILL, a lock held by a live and by a dead process, a second run or an
operator at the wrong moment. Each test asserts recovery and the message a person reads."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from coder_assets.executor import RUN_LOCK_FILE
from coder_assets.resources.service import ModelServerResource
from coder_assets_tests import test_cli_server, test_executor
from coder_assets_tests.conftest import REPO_ROOT
from coder_assets_tests.test_cli_server import FakeLaunchctl, Setup, run_cli
from coder_assets_tests.test_executor import QUIET, TINY_EVAL, TINY_TRAINING, _wait_for

# Their fixtures: the CLI's environment and fake launchctl, and the site with a published dataset
# (module-scoped: this module builds its own).
setup = test_cli_server.setup
launchctl = test_cli_server.launchctl
site = test_executor.site

# --- helpers -------------------------------------------------------------------------------------


def hold_lock(path: Path, purpose: str, run_id: str = "") -> subprocess.Popen[str]:
    """A live process that holds the waterdeep lock at `path` until it is killed."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from coder_assets.core.deployment.host import WaterdeepLock\n"
        "lock = WaterdeepLock(Path(sys.argv[1]), purpose=sys.argv[2], run_id=sys.argv[3])\n"
        "lock.acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path), purpose, run_id],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def leave_stale_holder(path: Path, **holder: object) -> None:
    """What a holder killed with SIGKILL leaves behind: its info, and no flock (the kernel
    dropped it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"hostname": "waterdeep", "started_at": "2026-01-01T00:00:00+00:00", **holder}
    path.write_text(json.dumps(record) + "\n")


# --- case 3: `coder-assets server` takes the waterdeep lock --------------------------------------


@pytest.mark.parametrize("action", ["start", "stop", "restart"])
def test_server_commands_refuse_while_a_live_process_holds_the_lock_and_force_overrides(
    setup: Setup,
    capsys: pytest.CaptureFixture[str],
    launchctl: FakeLaunchctl,
    action: str,
) -> None:
    launchctl.loaded = True
    holder = hold_lock(setup.state.parent / "waterdeep.lock", "training lora_adapter", "run-7")
    try:
        code, out, err = run_cli(capsys, action)
        assert (code, out) == (1, "")
        assert err.startswith(f"coder-assets server {action}: refused: waterdeep is busy")
        assert "'training lora_adapter'" in err and f"pid {holder.pid}" in err and "run-7" in err
        assert "--force" in err
        assert launchctl.verbs() == []  # nothing was started or stopped

        code, out, err = run_cli(capsys, action, "--force")
        assert code == 0, err
        assert f"server {action} --force overrode the waterdeep lock" in err
        assert "--force overrode" in (setup.state / "operator.log").read_text()
        assert launchctl.verbs() != []
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_dead_pid_is_reclaimed_by_server_restart(
    setup: Setup, capsys: pytest.CaptureFixture[str], launchctl: FakeLaunchctl
) -> None:
    gone = dead_pid()
    lock = setup.state.parent / "waterdeep.lock"
    leave_stale_holder(lock, pid=gone, purpose="training lora_adapter", run_id="run-8")
    code, out, err = run_cli(capsys, "restart")
    assert code == 0, err
    assert "cleared a stale waterdeep lock" in err and str(gone) in err
    assert lock.read_text() == ""  # released after the restart, stale info gone


def test_status_shows_the_desired_and_the_actual_state(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "status")
    assert code == 0 and "desired stopped (default: no adapter is deployed)" in out
    assert "actual not running" in out
    setup.deploy_adapter()
    _, out, _ = run_cli(capsys, "status")
    assert "desired serving (default: an adapter is deployed)" in out
    run_cli(capsys, "stop")
    _, out, _ = run_cli(capsys, "status")
    assert "desired stopped (set by coder-assets server stop at " in out
    assert "actual not running" in out


# --- case 2: a dead run worker's slot and lock are reclaimed -------------------------------------


def test_reclaim_sensor_fails_the_run_of_a_dead_worker_and_frees_its_pool_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coder_assets.sensors import waterdeep_reclaim_sensor

    monkeypatch.setenv("CODER_ASSETS_HOME", str(tmp_path / "home"))
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    with dg.instance_for_test() as instance:
        run = instance.create_run_for_job(
            dg.GraphDefinition("train_deploy_job").to_job(), status=dg.DagsterRunStatus.STARTED
        )
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
        storage = instance.event_log_storage
        storage.set_concurrency_slots("waterdeep", 1)
        assert storage.claim_concurrency_slot("waterdeep", run.run_id, "lora_adapter").is_claimed
        steps = tmp_path / "home" / "steps"
        steps.mkdir(parents=True)
        (steps / f"{run.run_id}-lora_adapter.pid").write_text(str(orphan.pid))
        leave_stale_holder(
            steps / RUN_LOCK_FILE,
            pid=dead_pid(),
            purpose="run train_deploy_job",
            run_id=run.run_id,
            state_dir=str(steps),
        )

        result = waterdeep_reclaim_sensor(dg.build_sensor_context(instance=instance))

        assert isinstance(result, dg.SkipReason)
        assert f"reclaimed run {run.run_id}" in result.skip_message
        assert "marked the run failed" in result.skip_message
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert storage.get_concurrency_info("waterdeep").claimed_slots == []
        assert orphan.wait(timeout=60) is not None  # the orphaned step was stopped
        # Reclaimed once: the next evaluation finds nothing left behind.
        again = waterdeep_reclaim_sensor(dg.build_sensor_context(instance=instance))
        assert "none was left behind" in again.skip_message


def test_reclaim_sensor_leaves_a_live_run_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coder_assets.sensors import waterdeep_reclaim_sensor

    monkeypatch.setenv("CODER_ASSETS_HOME", str(tmp_path / "home"))
    holder = hold_lock(tmp_path / "home" / "steps" / RUN_LOCK_FILE, "run x", "run-live")
    try:
        with dg.instance_for_test() as instance:
            result = waterdeep_reclaim_sensor(dg.build_sensor_context(instance=instance))
        assert "a live run holds waterdeep" in result.skip_message
        assert "run-live" in result.skip_message
    finally:
        holder.kill()
        holder.wait()


# --- with real training runs (slow) ---------------------------------------------------------------


def _start_training(site, training: dict) -> subprocess.Popen[str]:
    return site.run(
        ["job", "execute", "-m", "coder_assets.definitions", "-j", "train_deploy_job"],
        {
            **QUIET,
            "ops": {"lora_adapter": {"config": training}, "eval_scores": {"config": TINY_EVAL}},
        },
        start_new_session=True,
    )


def _step_pid(site, step_key: str) -> int:
    (pid_file,) = sorted((site.home / "steps").glob(f"*-{step_key}.pid"), key=os.path.getmtime)[-1:]
    return int(pid_file.read_text().strip())


def _kill_group(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_a_retry_after_a_killed_training_step_restores_the_model_server(
    site,
    model_server: ModelServerResource,
) -> None:
    training = {**TINY_TRAINING, "iters": 40, "save_every": 4, "seed": 31}
    earlier = set(site.adapters().glob("*/0000004_adapters.safetensors"))
    proc = _start_training(site, training)
    try:
        _wait_for(
            lambda: set(site.adapters().glob("*/0000004_adapters.safetensors")) - earlier,
            240,
            "the first checkpoint",
        )
        assert not model_server.status().running  # paused for training
        os.killpg(_step_pid(site, "lora_adapter"), signal.SIGKILL)  # no cleanup runs
        proc.communicate(timeout=120)
    finally:
        _kill_group(proc)
    assert not model_server.status().running  # the killed holder could not restore it
    assert model_server.desired_state().serving

    _, output = site.train(training)
    site.assert_trained_and_evaluated(output)
    assert model_server.status().running, output
    model_server.wait_ready()


@pytest.mark.slow
def test_a_killed_run_worker_is_reclaimed_and_the_next_run_proceeds(site) -> None:
    training = {**TINY_TRAINING, "iters": 40, "save_every": 4, "seed": 32}
    earlier = set(site.adapters().glob("*/0000004_adapters.safetensors"))
    proc = _start_training(site, training)
    try:
        _wait_for(
            lambda: set(site.adapters().glob("*/0000004_adapters.safetensors")) - earlier,
            240,
            "the first checkpoint",
        )
        dead_run, _ = site.last_run()
        orphan = _step_pid(site, "lora_adapter")
        os.kill(proc.pid, signal.SIGKILL)  # the run worker only; its step runs on
        proc.wait(timeout=30)
    finally:
        _kill_group(proc)
    with site.instance() as instance:
        assert instance.get_run_by_id(dead_run.run_id).status == dg.DagsterRunStatus.STARTED
        info = instance.event_log_storage.get_concurrency_info("waterdeep")
        assert [slot.run_id for slot in info.claimed_slots] == [dead_run.run_id]

    code, output = site.train({**TINY_TRAINING, "seed": 33}, timeout=400)
    assert f"reclaimed run {dead_run.run_id}" in output, output
    site.assert_trained_and_evaluated(output)
    with site.instance() as instance:
        assert instance.get_run_by_id(dead_run.run_id).status == dg.DagsterRunStatus.FAILURE
    _wait_for(lambda: not _alive(orphan), 60, "the orphaned step to be stopped")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"


@pytest.mark.slow
def test_two_concurrent_job_executes_never_interleave(site) -> None:
    first = _start_training(site, {**TINY_TRAINING, "seed": 34})
    second = _start_training(site, {**TINY_TRAINING, "seed": 35})
    try:
        outputs = [p.communicate(timeout=400)[0] for p in (first, second)]
    finally:
        _kill_group(first)
        _kill_group(second)
    refused = [o for o in outputs if "another run holds waterdeep" in o]
    assert len(refused) == 1, outputs
    assert "waterdeep is busy" in refused[0] and "'run train_deploy_job'" in refused[0]
    with site.instance() as instance:
        runs = instance.get_runs(limit=2)
        steps = {
            run.run_id: {
                e.step_key
                for e in instance.all_logs(run.run_id)
                if e.dagster_event is not None and e.dagster_event.is_step_start
            }
            for run in runs
        }
    assert sorted(len(s) > 0 for s in steps.values()) == [False, True], steps
    assert not (site.home / "steps" / RUN_LOCK_FILE).read_text()  # released at the end


# --- case 6: the adapter's content is one chain ---------------------------------------------------


def test_adapter_files_changed_after_evaluation_are_not_released(tmp_path: Path) -> None:
    from coder_assets.assets.deployment import adapter_release
    from coder_assets.resources.deployment import AdapterReleaseResource

    adapter = tmp_path / "adapters" / "homelab-coder" / "v1"
    adapter.mkdir(parents=True)
    (adapter / "adapters.safetensors").write_bytes(b"evaluated weights")
    (adapter / "adapter_config.json").write_text("{}")
    eval_scores = {
        "adapter_version": "v1",
        "adapter_files": {
            name: hashlib.sha256((adapter / name).read_bytes()).hexdigest()
            for name in ("adapters.safetensors", "adapter_config.json")
        },
    }
    (adapter / "adapters.safetensors").write_bytes(b"damaged weights!!")  # same size
    releases = tmp_path / "code-lora-adapters.git"

    with dg.build_asset_context() as context, pytest.raises(dg.Failure) as failure:
        adapter_release(
            context=context,
            lora_adapter={"version": "v1", "path": str(adapter)},
            eval_scores=eval_scores,
            training_dataset={"version": "ds"},
            waterdeep=None,
            promotion_policy=None,
            adapter_repo=AdapterReleaseResource(
                remote=str(releases), work_dir=str(tmp_path / "work"), create_local_remote=True
            ),
            dataset_store=None,
            mlflow_tracking=None,
            workspace=None,
        )
    message = failure.value.description
    assert "refusing to release adapter v1" in message and str(adapter) in message
    assert "changed after eval_scores evaluated them" in message
    assert "adapters.safetensors" in message and "adapter_config.json" not in message
    assert not releases.exists()  # nothing was committed or tagged
