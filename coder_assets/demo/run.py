"""The demo: sample repositories in a local folder, then every asset of the graph materialized on
the Dagster instance in DAGSTER_HOME, so `make dev` shows the runs."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from coder_assets.constants import (
    COMMIT_SHA_TAG,
    REPO_PARTITIONS_NAME,
    TRIGGER_TAG,
    coder_assets_home,
)
from coder_assets.demo.sample_repos import create_sample_repos

# The demo prints its own summary, one line per failed step with a link to its run; the logs and
# tracebacks stay in the runs' event logs (the UI), off the terminal.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass(frozen=True)
class DemoResult:
    partition_key: str
    sha: str
    success: bool
    summary: str


def repos_dir() -> Path:
    """The local folder the embedded default reads repositories from."""
    from coder_assets.resources import build_repo_source

    source = build_repo_source()
    root = getattr(source, "root", None)
    if root is None:
        raise SystemExit(
            "The demo runs on the embedded default (a local folder of repositories); "
            "unset GITEA_URL to run it."
        )
    return Path(root)


SAMPLE_ASSETS = ("instruction_pairs", "fim_samples")


def _metadata(outcome: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    """The metadata values of `asset`'s materialization in `outcome` (empty when it failed)."""
    for materialization in outcome.asset_materializations_for_node(asset):
        return {key: value.value for key, value in materialization.metadata.items()}
    return {}


STAGES = ("repos", "dataset", "training")
STAGE_TITLES = {
    "dataset": "dataset_job (base_model → dataset_splits → checks → training_dataset):",
    "training": "train_deploy_job on waterdeep_executor (lora_adapter → eval_scores → gate → "
    "adapter_release → deployed_adapter):",
}


def demo_train_deploy_job() -> dg.JobDefinition:
    """train_deploy_job as the step workers of waterdeep_executor load it again (reconstructable:
    each process builds the code location from the same environment)."""
    from coder_assets.definitions import build_definitions

    return build_definitions().resolve_job_def("train_deploy_job")


# A short training on the dev model: the whole path, a falling loss, and FIM completions of the
# sample repos' code that the production gate accepts as better.
DEMO_TRAINING_CONFIG = {
    "rank": 8,
    "num_layers": 4,
    "iters": 20,
    "learning_rate": 1e-3,
    "steps_per_report": 5,
    "steps_per_eval": 10,
    "save_every": 10,
    "val_batches": 2,
}
# The runs the automation requests with the demo's settings (`make dev`) continue from the
# deployed adapter: twenty more iterations on the new dataset version, where twenty from scratch
# are seldom better than the adapter `make demo` deployed, and the gate compares with that one.
DEMO_AUTOMATION_TRAINING_CONFIG = {**DEMO_TRAINING_CONFIG, "start_from": "deployed"}


# A handful of problems and every FIM task of the small test split: the point is the whole path.
DEMO_EVAL_CONFIG = {
    "humaneval_problems": 4,
    "fim_tasks": 8,
    "chat_tasks": 4,
    "humaneval_max_tokens": 64,
    "fim_max_tokens": 24,
    "chat_max_tokens": 48,
}


def run_demo(
    instance: dg.DagsterInstance, until: str = "training", *, sample_repos: bool = True
) -> list[DemoResult]:
    """Create the sample repos (unless `sample_repos` is off), register the partitions of every
    repo in the folder and run repo_job for each; then dataset_job; then train_deploy_job
    through waterdeep_executor (stopping after `until`)."""
    if sample_repos:
        create_sample_repos(repos_dir())
    # Imported after the repos exist so the code location sees them on first load.
    from coder_assets.definitions import build_definitions

    defs = build_definitions()

    source = defs.resources["repo_source"]
    listing = source.list_heads()
    keys = [head.repo.partition_key for head in listing.heads]
    known = set(instance.get_dynamic_partitions(REPO_PARTITIONS_NAME))
    instance.add_dynamic_partitions(REPO_PARTITIONS_NAME, [k for k in keys if k not in known])
    job = defs.resolve_job_def("repo_job")
    results: list[DemoResult] = []
    for head in listing.heads:
        key = head.repo.partition_key
        outcome = job.execute_in_process(
            instance=instance,
            partition_key=key,
            tags={COMMIT_SHA_TAG: head.sha, TRIGGER_TAG: "make demo"},
            raise_on_error=False,
            run_config=QUIET_RUN_CONFIG,
        )
        results_by_asset = {
            name: _metadata(outcome, name) for name in ("repo_snapshots", *SAMPLE_ASSETS)
        }
        snapshot = results_by_asset["repo_snapshots"]
        parts = []
        if snapshot:
            parts.append(f"{snapshot['files_kept']}/{snapshot['files_total']} files")
        pairs, fim = results_by_asset["instruction_pairs"], results_by_asset["fim_samples"]
        if pairs:
            parts.append(f"{pairs['pairs_total']} pairs")
        if fim:
            parts.append(f"{fim['samples_total']} FIM")
        if pairs or fim:
            secrets = (pairs or {}).get("secrets_total", 0)
            parts.append(f"{secrets} secrets redacted")
        summary = ", ".join(parts)
        if not outcome.success:
            summary += ("\n         " if summary else "") + failure_summary(
                instance, outcome.run_id
            )
        results.append(DemoResult(key, head.sha, outcome.success, summary))
    if until == "repos":
        return results
    results.append(_run_dataset_job(defs, instance))
    if until == "dataset" or not results[-1].success:
        return results
    results.append(_run_training(instance))
    return results


def _run_training(instance: dg.DagsterInstance) -> DemoResult:
    """A real job execution, so waterdeep_executor launches the lora_adapter step (in its own
    process, after the host guard); `execute_in_process` would bypass the executor."""
    run_config = {
        **QUIET_RUN_CONFIG,
        "ops": {
            "lora_adapter": {"config": DEMO_TRAINING_CONFIG},
            "eval_scores": {"config": DEMO_EVAL_CONFIG},
        },
    }
    with dg.execute_job(
        dg.reconstructable(demo_train_deploy_job),
        instance=instance,
        run_config=run_config,
        tags={TRIGGER_TAG: "make demo"},
        raise_on_error=False,
    ) as outcome:
        success = outcome.success
        run_id = outcome.run_id
    metadata = _run_metadata(instance, run_id, "lora_adapter")
    scores = _run_metadata(instance, run_id, "eval_scores")
    if not metadata or not scores:
        return DemoResult("training", "", False, failure_summary(instance, run_id))
    summary = (
        f"adapter {metadata['version']}: {metadata['iterations']} iterations, train loss "
        f"{metadata['final_train_loss']}, val loss {metadata['final_val_loss']}, "
        f"{metadata['tokens_per_second']} tok/s"
    )
    if "mlflow_run" in metadata:
        summary += f"\n         loss curve: UI (lora_adapter) and MLflow {metadata['mlflow_run']}"
    summary += (
        f"\n         eval_scores: HumanEval pass@1 base {scores['humaneval_pass_at_1_base']} / "
        f"adapter {scores['humaneval_pass_at_1_adapter']}, FIM edit similarity "
        f"{scores['fim_edit_similarity_adapter']}, test loss {scores['test_loss_adapter']}"
    )
    if "fim_edit_similarity_copy_baseline" in scores:
        summary += (
            " (copying the lines above each gap scores "
            f"{scores['fim_edit_similarity_copy_baseline']})"
        )
    cache = ", ".join(
        f"{label} {scores[f'cache_hits_{label}']}/{scores[f'cache_misses_{label}']}"
        for label in ("base", "adapter", "deployed")
        if f"cache_hits_{label}" in scores
    )
    summary += (
        f"\n         eval_scores cost: cache hits/misses {cache}; "
        f"{scores.get('generated_tokens')} tokens generated, {scores.get('model_loads')} model "
        f"loads; model server down {scores.get('server_downtime_seconds')} s"
    )
    gate = _gate(instance, run_id)
    summary += f"\n         promotion_gate: {gate}"
    release = _run_metadata(instance, run_id, "adapter_release")
    deployed = _run_metadata(instance, run_id, "deployed_adapter")
    if release:
        summary += (
            f"\n         adapter_release: tag {release['tag']} ({str(release['commit'])[:12]}) in "
            f"{release['remote']}, weights in LFS: {release['weights_in_lfs']}"
        )
    if deployed:
        summary += (
            f"\n         deployed_adapter: {deployed['version']} served at {deployed['server']} "
            f"(smoke test passed; restarted: {deployed['restarted']})"
            f"\n         model server down in this run: "
            f"{deployed.get('train_deploy_downtime_seconds')} s in all"
        )
    elif not success:
        summary += "\n         " + failure_summary(instance, run_id)
    return DemoResult("training", "", success and bool(deployed), summary)


def _latest_deploy() -> dict[str, object] | None:
    """The value deployed_adapter stored last, when the demo got that far."""
    from coder_assets.definitions import build_definitions

    storage = build_definitions().resources["json_io_manager"]
    return storage.stored(dg.AssetKey("deployed_adapter"))


def failure_summary(instance: dg.DagsterInstance, run_id: str) -> str:
    """The demo's account of a failed run: each failed step with the first line of its error,
    and where the whole story (log, traceback) is: the run's page in the UI."""
    ui_url = os.environ.get("CODER_ASSETS_UI_URL", "http://127.0.0.1:3000").rstrip("/")
    failures = "; ".join(_step_failures(instance, run_id)) or "the run failed before any step ran"
    return f"{failures}\n         log and traceback: {ui_url}/runs/{run_id}  (make dev)"


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no error message"


def _step_failures(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Each failed step and the first line of what failed it, as its Failure describes it (or
    its error message)."""
    messages = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not event.is_step_failure:
            continue
        data = event.step_failure_data
        described = data.user_failure_data.description if data.user_failure_data else None
        error = data.error.cause.message if data.error and data.error.cause else None
        message = described or error or (data.error.message if data.error else "")
        messages.append(f"step {event.step_key} failed: {_first_line(message)}")
    return messages


def _run_metadata(instance: dg.DagsterInstance, run_id: str, asset: str) -> dict[str, object]:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.run_id != run_id:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _gate(instance: dg.DagsterInstance, run_id: str) -> str:
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is not None and event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            if data.check_name == "promotion_gate":
                return data.description or ("passed" if data.passed else "failed")
    return "not evaluated"


# The sample repos are small: bigger valid and test shares keep both splits non-empty.
DEMO_DATASET_CONFIG = {"valid_fraction": 0.15, "test_fraction": 0.15}


def _run_dataset_job(defs: dg.Definitions, instance: dg.DagsterInstance) -> DemoResult:
    outcome = defs.resolve_job_def("dataset_job").execute_in_process(
        instance=instance,
        tags={TRIGGER_TAG: "make demo"},
        raise_on_error=False,
        run_config={**QUIET_RUN_CONFIG, "ops": {"dataset_splits": {"config": DEMO_DATASET_CONFIG}}},
    )
    splits = _metadata(outcome, "dataset_splits")
    published = _metadata(outcome, "training_dataset")
    checks = outcome.get_asset_check_evaluations()
    failed = [c.check_name for c in checks if not c.passed]
    if splits:
        summary = (
            f"version {str(splits['version'])[:12]}: {splits['train_lines']} train / "
            f"{splits['valid_lines']} valid / {splits['test_lines']} test lines, "
            f"{len(checks) - len(failed)}/{len(checks)} checks passed"
        )
        if failed:
            summary += f" (failed: {', '.join(failed)})"
    else:
        summary = ""
    if not outcome.success:
        summary += ("\n         " if summary else "") + failure_summary(instance, outcome.run_id)
    if published:
        summary += f"\n         published to {published['uri']}"
        if "mlflow_run" in published:
            summary += f"\n         MLflow run {published['mlflow_run']}  (make mlflow)"
    return DemoResult("dataset", "", outcome.success and not failed, summary)


def main(until: str = "training") -> int:
    """Entry point of `coder-assets demo`; returns the process exit code."""
    if not os.environ.get("DAGSTER_HOME"):
        raise SystemExit("DAGSTER_HOME is not set; run the demo with `make demo`.")
    with dg.DagsterInstance.get() as instance:
        results = run_demo(instance, until)
    width = max((len(r.partition_key) for r in results), default=10)
    lines = ["", "repo_job (repo_snapshots → instruction_pairs + fim_samples), one run per repo:"]
    for r in results:
        if r.partition_key in STAGE_TITLES:
            state = "ok    " if r.success else "FAILED"
            lines += ["", STAGE_TITLES[r.partition_key]]
            lines.append(f"  {state} {r.summary}")
            continue
        state = "ok    " if r.success else "FAILED"
        lines.append(f"  {state} {r.partition_key:<{width}}  {r.sha[:12]}  {r.summary}")
    deployed = _latest_deploy()
    if deployed is not None:
        lines += [
            "",
            f"The fine-tuned dev model is served at {deployed['url']} behind its proxy, which "
            "wants an API key; talk to it (the key is read from the keys file):",
            f"  {deployed['curl']}",
            "Keys of your own (add prints the key once; list shows names only):",
            f"  CODER_ASSETS_HOME={coder_assets_home()} "
            f"{Path(sys.executable).with_name('coder-assets')} server keys add|revoke|list NAME",
            "Status, stop and restart of that server:",
            f"  CODER_ASSETS_HOME={coder_assets_home()} "
            f"{Path(sys.executable).with_name('coder-assets')} server status|stop|restart",
        ]
    lines += [
        "",
        f"Sample repos: {repos_dir()}",
        "Open the UI:  make dev   then http://127.0.0.1:3000/asset-groups",
        "Try the sensor: with `make dev` running, commit to a sample repo, e.g.",
        f"  git -C {repos_dir()}/homelab-adrs -c user.name=me -c user.email=me@homelab.example \\",
        "      commit --allow-empty -m 'Record review date'",
        "  and watch gitea_change_sensor request one run (Automation > Sensors). A commit that",
        "  adds code also gives one dataset build and, in the demo's always-open maintenance",
        "  window, training, evaluation and deployment (README: Watch the whole pipeline follow",
        "  the push).",
    ]
    print("\n".join(lines))  # noqa: T201 - the demo's report is for the person who ran it
    return 0 if all(r.success for r in results) else 1
