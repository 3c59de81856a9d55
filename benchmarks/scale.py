"""How data preparation scales with concurrent runs: a new organisation of N generated
repositories onboarded on a local instance, with the real daemon, the QueuedRunCoordinator at 1, 2
and 4 concurrent runs and Dagster's default run launcher (one run-worker process per run, as the
cluster has one pod per run). gitea_change_sensor's first tick adds a partition and requests one
repo_job run per repository, which is how production fills the queue for a new organisation.

    .venv/bin/python benchmarks/scale.py [--repos 50] [--concurrency 1,2,4]

Prints runs per minute at each level and where a run's time goes: queued, launching the run
worker (process start, imports, loading the location), the steps, and the time between steps
(waterdeep_executor starts each step as a process of its own).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import dagster as dg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from incremental import make_repo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
POLL_SECONDS = 2.0


def instance_yaml(concurrency: int) -> dict:
    return {
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"dequeue_interval_seconds": 1},
        },
        "concurrency": {"runs": {"max_concurrent_runs": concurrency}},
        "telemetry": {"enabled": False},
        "code_servers": {"local_startup_timeout": 300},
    }


def measure(repos: Path, count: int, concurrency: int, root: Path, timeout: float) -> dict:
    home = root / f"c{concurrency}"
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml(concurrency)))
    workspace = home / "workspace.yaml"
    workspace.write_text(
        yaml.safe_dump(
            {"load_from": [{"python_module": {"module_name": "coder_assets.definitions"}}]}
        )
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CODER_ASSETS_", "GITEA_"))},
        "DAGSTER_HOME": str(dagster_home),
        "CODER_ASSETS_HOME": str(home / "coder-assets"),
        "CODER_ASSETS_REPOS_DIR": str(repos),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    log = open(home / "daemon.log", "wb")  # noqa: SIM115 (closed below)
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
        env=env,
        cwd=home,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started = time.monotonic()
    try:
        os.environ["DAGSTER_HOME"] = str(dagster_home)
        with dg.DagsterInstance.get() as instance:
            while True:
                records = instance.get_run_records(dg.RunsFilter(job_name="repo_job"))
                done = [r for r in records if r.dagster_run.is_finished]
                if len(done) >= count:
                    break
                if time.monotonic() - started > timeout:
                    raise TimeoutError(
                        f"{len(done)} of {count} runs finished after {timeout:.0f}s "
                        f"(concurrency {concurrency}); see {home / 'daemon.log'}"
                    )
                time.sleep(POLL_SECONDS)
            return summarise(instance, done, concurrency)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        log.close()


def summarise(instance: dg.DagsterInstance, records: list, concurrency: int) -> dict:
    failed = [r for r in records if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
    first = min(r.create_timestamp.timestamp() for r in records)
    last = max(r.end_time for r in records if r.end_time)
    queued, launch, steps, rest, runs = [], [], [], [], []
    by_step: dict[str, list[float]] = defaultdict(list)
    for record in records:
        run = record.dagster_run
        stats = instance.get_run_step_stats(run.run_id)
        step_times = [(s.start_time, s.end_time) for s in stats if s.start_time and s.end_time]
        for s in stats:
            if s.start_time and s.end_time:
                by_step[s.step_key].append(s.end_time - s.start_time)
        enqueued = record.create_timestamp.timestamp()
        # The coordinator's launch of the run (RUN_STARTING) ends its time in the queue.
        events = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.RUN_STARTING
        ).records
        dequeued = events[0].timestamp if events else enqueued
        queued.append(dequeued - enqueued)
        if step_times:
            launch.append(min(t[0] for t in step_times) - dequeued)
            # Steps of a run run one after another here (one process at a time per step).
            busy = sum(end - start for start, end in step_times)
            steps.append(busy)
            total = record.end_time - min(t[0] for t in step_times)
            rest.append(total - busy)
        runs.append(record.end_time - dequeued)
    wall = last - first
    return {
        "concurrency": concurrency,
        "runs": len(records),
        "failed": len(failed),
        "wall_s": wall,
        "runs_per_min": len(records) / wall * 60,
        "run_s": statistics.median(runs),
        "queued_s": statistics.median(queued),
        "launch_s": statistics.median(launch) if launch else float("nan"),
        "steps_s": statistics.median(steps) if steps else float("nan"),
        "between_steps_s": statistics.median(rest) if rest else float("nan"),
        "by_step": {k: statistics.median(v) for k, v in sorted(by_step.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=50)
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="coder-assets-scale-") as tmp:
        root = Path(tmp)
        repos = root / "repos"
        for index in range(args.repos):
            make_repo(repos / f"service-{index:03d}", args.files, index)
        print(f"{args.repos} repositories of {args.files} files; {os.cpu_count()} CPUs")
        results = [measure(repos, args.repos, c, root, args.timeout) for c in levels]
    print()
    print(
        "| concurrent runs | runs | failed | wall s | runs/min | run s (median) | queued s | "
        "launch s | steps s | between steps s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['concurrency']} | {r['runs']} | {r['failed']} | {r['wall_s']:.0f} | "
            f"{r['runs_per_min']:.1f} | {r['run_s']:.1f} | {r['queued_s']:.1f} | "
            f"{r['launch_s']:.1f} | {r['steps_s']:.1f} | {r['between_steps_s']:.1f} |"
        )
    print()
    print("median seconds per step:")
    for r in results:
        steps = ", ".join(f"{k} {v:.1f}" for k, v in r["by_step"].items())
        print(f"  {r['concurrency']} concurrent: {steps}")


if __name__ == "__main__":
    main()
