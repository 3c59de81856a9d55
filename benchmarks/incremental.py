"""How much work a push costs: a full materialization of N repositories (repo_job: snapshots,
instruction pairs, FIM samples and their checks, MinHash signatures), a re-run with no change,
and a re-run after one commit in one repository, each driven the way production drives it
(gitea_change_sensor ticks, then the runs it requests).

    .venv/bin/python benchmarks/incremental.py [--repos 20] [--files 40]

Goal: no change costs at most 0.05 of the full run, one changed repo at most 1/N + 0.05.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import dagster as dg

from coder_assets.assets.dataset import sample_signatures
from coder_assets.assets.samples import fim_samples, instruction_pairs
from coder_assets.assets.snapshots import repo_snapshots
from coder_assets.checks import fim_samples_free_of_secrets, instruction_pairs_free_of_secrets
from coder_assets.demo.run import QUIET_RUN_CONFIG
from coder_assets.demo.sample_repos import commit_files
from coder_assets.jobs import repo_job
from coder_assets.resources.repos import LocalReposResource
from coder_assets.resources.storage import ParquetIOManager, RepoMirrorsResource
from coder_assets.sensors import gitea_change_sensor


def make_repo(path: Path, files: int, index: int) -> None:
    """A working repo with `files` small Python and YAML files over three commits."""
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", "--template=", str(path)], check=True)
    subprocess.run(
        ["git", "-C", str(path), "config", "user.email", "bench@homelab.example"], check=True
    )
    subprocess.run(["git", "-C", str(path), "config", "user.name", "Bench"], check=True)
    for commit in range(3):
        batch = {
            f"pkg/module_{i}.py": f'"""Module {i} of repo {index}."""\n\nVALUE = {i * commit}\n'
            * 20
            for i in range(commit, files, 3)
        }
        batch[f"deploy/app-{commit}.yaml"] = f"apiVersion: v1\nkind: ConfigMap\n# {index}\n"
        commit_files(path, batch, f"Add batch {commit}")


class Driver:
    """One sensor tick (partitions applied, cursor kept) followed by the runs it requested."""

    def __init__(self, instance: dg.DagsterInstance, repos: Path, home: Path) -> None:
        self.instance = instance
        self.source = LocalReposResource(root=str(repos), owner="homelab")
        self.cursor: str | None = None
        self.job = dg.Definitions(
            assets=[repo_snapshots, instruction_pairs, fim_samples, sample_signatures],
            asset_checks=[instruction_pairs_free_of_secrets, fim_samples_free_of_secrets],
            jobs=[repo_job],
            resources={
                "repo_source": self.source,
                "repo_mirrors": RepoMirrorsResource(path=str(home / "mirrors")),
                "parquet_io_manager": ParquetIOManager(base_path=str(home / "storage")),
            },
        ).resolve_job_def("repo_job")

    def tick_and_run(self) -> tuple[float, int]:
        started = time.perf_counter()
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"repo_source": self.source}
        )
        result = gitea_change_sensor(context)
        requests = []
        if isinstance(result, dg.SensorResult):
            for request in result.dynamic_partitions_requests or []:
                if isinstance(request, dg.AddDynamicPartitionsRequest):
                    self.instance.add_dynamic_partitions("repos", list(request.partition_keys))
            self.cursor = result.cursor
            requests = list(result.run_requests or [])
        for request in requests:
            outcome = self.job.execute_in_process(
                instance=self.instance,
                partition_key=request.partition_key,
                tags=dict(request.tags),
                run_config=QUIET_RUN_CONFIG,
            )
            assert outcome.success, request.partition_key
        return time.perf_counter() - started, len(requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=20)
    parser.add_argument("--files", type=int, default=40)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test() as instance:
        root = Path(tmp)
        for index in range(args.repos):
            make_repo(root / "repos" / f"service-{index:02d}", args.files, index)
        driver = Driver(instance, root / "repos", root / "home")

        full, full_runs = driver.tick_and_run()
        unchanged, unchanged_runs = driver.tick_and_run()
        commit_files(root / "repos" / "service-07", {"pkg/new.py": "NEW = 1\n"}, "Add new module")
        one, one_runs = driver.tick_and_run()

    n = args.repos
    rows = [
        ("full materialization", full, full_runs, 1.0, None),
        ("re-run, no change", unchanged, unchanged_runs, unchanged / full, 0.05),
        ("re-run, one repo changed", one, one_runs, one / full, 1 / n + 0.05),
    ]
    print(f"{n} repos x {args.files} files, sensor-driven, in-process runs")
    print("| scenario | seconds | runs | of full | goal |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds, runs, ratio, goal in rows:
        goal_text = f"≤ {goal:.3f}" if goal is not None else "—"
        print(f"| {name} | {seconds:.2f} | {runs} | {ratio:.3f} | {goal_text} |")


if __name__ == "__main__":
    main()
