"""adapter_release and deployed_adapter: after the promotion gate, the adapter is versioned in the
`code-lora-adapters` git repository and served by mlx_lm.server on waterdeep."""

# No `from __future__ import annotations` here: Dagster reads these annotations at runtime.
import json
import shlex
import time
from pathlib import Path

import dagster as dg
from pydantic import Field

from coder_assets.assets import reported_as_failure
from coder_assets.assets.training import WATERDEEP_ASSET_SETTINGS
from coder_assets.constants import DEPLOYMENT_GROUP
from coder_assets.core.dataset.build import read_manifest
from coder_assets.core.deployment.deploy import (
    FINGERPRINT_FILE,
    MANIFEST_FILE,
    DeployDir,
    DeploymentError,
    Links,
    digest_differences,
)
from coder_assets.core.deployment.downtime import add_downtime, downtime_of, mlflow_metrics
from coder_assets.core.deployment.proxy import PIPELINE_KEY_NAME
from coder_assets.core.deployment.smoke import Fingerprint, SmokeReport, smoke_test
from coder_assets.core.errors import CoderAssetsError
from coder_assets.core.evaluation.evaluate import SUMMARY_METRICS
from coder_assets.core.training.adapter_files import adapter_digests
from coder_assets.resources.datasets import DatasetStoreResource
from coder_assets.resources.deployment import AdapterDeploymentResource, AdapterReleaseResource
from coder_assets.resources.mlflow import MlflowTrackingResource
from coder_assets.resources.policy import PromotionPolicyResource
from coder_assets.resources.service import SERVING, ModelServerResource
from coder_assets.resources.storage import WorkspaceResource
from coder_assets.resources.waterdeep import WaterdeepResource

CURL_QUESTION = "Write a Python function that checks whether a number is prime."


def release_manifest(
    lora_adapter: dict, eval_scores: dict, training_dataset: dict, dataset_manifest: dict
) -> dict:
    """What a release says about itself: versions, scores, MLflow run and source commits."""
    scores = {
        label: {
            name: eval_scores[label][name]
            for name in SUMMARY_METRICS
            if isinstance(eval_scores.get(label), dict) and name in eval_scores[label]
        }
        for label in ("base", "adapter", "deployed")
        if eval_scores.get(label)
    }
    return {
        "adapter_name": lora_adapter.get("name", "homelab-coder"),
        "adapter_version": lora_adapter["version"],
        "dataset_version": training_dataset["version"],
        "dataset_uri": training_dataset.get("uri"),
        "base_model_version": lora_adapter["base_model_version"],
        "lora_settings": lora_adapter.get("settings", {}),
        "eval_scores": scores,
        "mlflow_run_id": lora_adapter.get("mlflow_run_id"),
        "source_commits": dataset_manifest.get("source_commits", {}),
    }


@dg.asset(
    group_name=DEPLOYMENT_GROUP,
    kinds={"git", "mlflow"},
    code_version="1",
    io_manager_key="json_io_manager",
    **WATERDEEP_ASSET_SETTINGS,
)
def adapter_release(
    context: dg.AssetExecutionContext,
    lora_adapter: dict,
    eval_scores: dict,
    training_dataset: dict,
    waterdeep: WaterdeepResource,
    promotion_policy: PromotionPolicyResource,
    adapter_repo: AdapterReleaseResource,
    dataset_store: DatasetStoreResource,
    mlflow_tracking: MlflowTrackingResource,
    workspace: WorkspaceResource,
) -> dg.MaterializeResult:
    """The promoted adapter in the `code-lora-adapters` git repository: adapters.safetensors,
    adapter_config.json and manifest.json (adapter, dataset and base model versions, eval scores,
    MLflow run, source commits) in one commit with one annotated tag per version; weights as git
    LFS objects when the remote supports LFS. Re-running for a released version changes nothing.
    Runs on waterdeep, where the adapter files are."""
    _require_evaluated_files(Path(lora_adapter["path"]), eval_scores, "release")
    decision = promotion_policy.decide(eval_scores)
    if not decision.passed:
        raise dg.Failure(
            description=f"adapter {eval_scores['adapter_version']} did not pass the promotion "
            f"gate ({'; '.join(decision.reasons)}): nothing is released. Train a better adapter "
            "or change the gate's margin (CODER_ASSETS_GATE_HUMANEVAL_MARGIN)."
        )
    with reported_as_failure():
        waterdeep.require("release an adapter")
        version = training_dataset["version"]
        data_dir = dataset_store.fetch(version, workspace.fetched_datasets_dir() / version)
        manifest = release_manifest(
            lora_adapter, eval_scores, training_dataset, read_manifest(data_dir)
        )
        result = adapter_repo.release(Path(lora_adapter["path"]), manifest)
        run_id = lora_adapter.get("mlflow_run_id")
        if run_id and not result.already_released:
            mlflow_tracking.set_tags(
                run_id,
                {
                    "coder_assets.release_tag": result.tag,
                    "coder_assets.release_commit": result.commit,
                },
            )
            mlflow_tracking.log_dict(run_id, manifest, f"releases/{result.version}.json")
    if result.already_released:
        context.log.info(f"{result.tag} is already released at {result.remote}; nothing changed")
    else:
        context.log.info(f"released {result.tag} ({result.commit[:12]}) to {result.remote}")
    files = {name: info["sha256"] for name, info in result.files.items()}
    differences = digest_differences(eval_scores["adapter_files"], files)
    if differences:
        raise dg.Failure(
            description=f"{result.tag} in {result.remote} holds other adapter files than "
            f"eval_scores evaluated ({'; '.join(differences)}): "
            "it was released earlier from other files; train and evaluate a new version"
        )
    value = {
        "version": result.version,
        "tag": result.tag,
        "commit": result.commit,
        "remote": result.remote,
        "lfs": result.lfs,
        "files": files,
        "manifest": manifest,
    }
    metadata = {
        "version": result.version,
        "tag": result.tag,
        "commit": result.commit,
        "remote": result.remote,
        "weights_in_lfs": result.lfs,
        "already_released": result.already_released,
        "adapter_bytes": sum(int(info["bytes"]) for info in result.files.values()),
        "source_repos": len(manifest["source_commits"]),
        "manifest": dg.MetadataValue.json(manifest),
    }
    return dg.MaterializeResult(
        value=value, data_version=dg.DataVersion(result.version), metadata=metadata
    )


def _require_evaluated_files(adapter_dir: Path, eval_scores: dict, what: str) -> None:
    """Fail unless the adapter files in `adapter_dir` are the ones eval_scores evaluated."""
    evaluated = eval_scores.get("adapter_files")
    if not evaluated:
        raise dg.Failure(
            description=f"eval_scores of adapter {eval_scores.get('adapter_version')} records no "
            f"sha256 of the files it evaluated (materialized before it did), so nothing proves "
            f"what would {what}: rematerialize eval_scores. Nothing was changed."
        )
    differences = digest_differences(evaluated, adapter_digests(adapter_dir))
    if differences:
        raise dg.Failure(
            description=f"refusing to {what} adapter {eval_scores.get('adapter_version')}: its "
            f"files in {adapter_dir} changed after eval_scores evaluated them "
            f"({'; '.join(differences)}). Rematerialize lora_adapter and eval_scores. Nothing "
            "was changed."
        )


class DeployedAdapterConfig(dg.Config):
    """How the deploy waits and checks."""

    smoke_timeout_seconds: float = Field(
        default=120.0, description="Limit for each smoke-test request to the model server."
    )


@dg.asset(
    group_name=DEPLOYMENT_GROUP,
    kinds={"mlx"},
    code_version="1",
    io_manager_key="json_io_manager",
    **WATERDEEP_ASSET_SETTINGS,
)
def deployed_adapter(
    context: dg.AssetExecutionContext,
    config: DeployedAdapterConfig,
    lora_adapter: dict,
    adapter_release: dict,
    eval_scores: dict,
    waterdeep: WaterdeepResource,
    model_server: ModelServerResource,
    adapter_deployment: AdapterDeploymentResource,
    adapter_repo: AdapterReleaseResource,
    mlflow_tracking: MlflowTrackingResource,
) -> dg.MaterializeResult:
    """The released adapter served by mlx_lm.server on waterdeep. The version is installed under
    the deploy directory (checked against the release's sha256s), `latest` is swapped to it
    atomically, the server is restarted and smoke-tested: /v1/models lists the model, chat and
    FIM completions answer, and the served greedy output of fixed prompts equals the adapter's
    own (recorded by eval_scores) and differs from the base model's. On any failure `latest` is
    swapped back, the server restarted, the old adapter verified serving again, and the asset
    fails with the reason. Keeps the last versions and prunes older ones, never the deployed or
    the previous one. The restart's downtime is added to the run's total (metadata and MLflow)."""
    version = adapter_release["version"]
    fingerprint = (
        Fingerprint.from_dict(eval_scores["fingerprint"])
        if eval_scores.get("fingerprint")
        else None
    )
    if fingerprint is None:
        raise dg.Failure(
            description=f"eval_scores has no fingerprint for adapter {version} (it was "
            "materialized before fingerprints existed), so serving it could not be proven: "
            "rematerialize eval_scores, then deployed_adapter. Nothing was changed."
        )
    differences = digest_differences(
        eval_scores.get("adapter_files") or {}, adapter_release["files"]
    )
    if not eval_scores.get("adapter_files") or differences:
        raise dg.Failure(
            description=f"release {adapter_release['tag']} is not the adapter eval_scores "
            f"evaluated ({'; '.join(differences) or 'eval_scores records no file sha256s'}): "
            "rematerialize eval_scores and adapter_release. Nothing was changed."
        )
    with reported_as_failure():
        waterdeep.require("deploy an adapter")
        with waterdeep.lock("deploying deployed_adapter", context.run_id):
            deploy = adapter_deployment.directory()
            documents = {
                MANIFEST_FILE: adapter_release["manifest"],
                FINGERPRINT_FILE: fingerprint.to_dict(),
            }
            installed = deploy.install(
                Path(lora_adapter["path"]),
                version,
                expected=adapter_release["files"],
                documents=documents,
            )
            try:
                report, restarted, down_seconds = _deploy(
                    context, deploy, version, fingerprint, model_server, config
                )
            except dg.Failure as failure:
                _mark_rejected(context, adapter_repo, version, failure.description or "")
                raise
            model_server.set_desired_state(
                SERVING, f"deployed_adapter {version} (run {context.run_id[:8]})"
            )
            pruned = deploy.prune(adapter_deployment.keep_versions)
    if pruned:
        context.log.info(f"pruned adapter versions {', '.join(pruned)}")
    downtime = add_downtime(
        downtime_of(eval_scores), context.run_id, "deployed_adapter", down_seconds
    )
    run_id = lora_adapter.get("mlflow_run_id")
    if run_id and mlflow_tracking is not None:
        mlflow_tracking.log_metrics(run_id, mlflow_metrics(downtime))
    links = deploy.links()
    url = model_server.url()
    curl = curl_command(url, str(model_server.keys_path()))
    metadata = {
        "version": version,
        "path": dg.MetadataValue.path(str(installed)),
        "latest_link": dg.MetadataValue.path(str(deploy.latest)),
        "previous": links.previous or "none",
        "restarted": restarted,
        "server": dg.MetadataValue.url(url),
        "model": str(model_server.model_dir()),
        "release_tag": adapter_release["tag"],
        "smoke_test": dg.MetadataValue.md(report.markdown()),
        "try_it": dg.MetadataValue.md(f"```\n{curl}\n```"),
        "kept_versions": ", ".join(deploy.installed_versions()),
        "pruned_versions": ", ".join(pruned) or "none",
        "server_downtime_seconds": round(down_seconds, 1),
        "train_deploy_downtime_seconds": downtime["total_seconds"],
        "train_deploy_downtime": dg.MetadataValue.md(_downtime_table(downtime)),
    }
    value = {
        "version": version,
        "path": str(installed),
        "previous": links.previous,
        "url": url,
        "model": str(model_server.model_dir()),
        "curl": curl,
        "downtime": downtime,
    }
    return dg.MaterializeResult(
        value=value, data_version=dg.DataVersion(version), metadata=metadata
    )


def _mark_rejected(
    context: dg.AssetExecutionContext,
    adapter_repo: AdapterReleaseResource,
    version: str,
    reason: str,
) -> None:
    """Tag the release rejected, so the release repository does not offer it as good; a failure
    to do so is logged, the deploy's own failure is what the run reports."""
    try:
        tag = adapter_repo.reject(version, reason[:2000])
    except CoderAssetsError as exc:
        context.log.error(f"could not mark release {version} rejected: {exc}")
        return
    context.log.warning(f"marked release {version} rejected in the release repository: {tag}")


def _deploy(
    context: dg.AssetExecutionContext,
    deploy: DeployDir,
    version: str,
    fingerprint: Fingerprint | None,
    model_server: ModelServerResource,
    config: DeployedAdapterConfig,
) -> tuple[SmokeReport, bool, float]:
    """Swap, restart, smoke-test; roll back on any failure. Returns the smoke report, whether
    the server was restarted, and for how many seconds it was down (restart until ready)."""
    model_id = str(model_server.model_dir())
    links = deploy.links()
    if links.latest == version and model_server.status().running:
        report = smoke_test(
            model_server.url(),
            model_id,
            fingerprint,
            timeout=config.smoke_timeout_seconds,
            log=context.log.info,
            **model_server.client_options(),
        )
        if report.passed:
            context.log.info(f"adapter {version} is already deployed and serving; nothing to do")
            return report, False, 0.0
    before = deploy.swap(version)
    context.log.info(f"latest -> {version} (was {before.latest or 'no adapter'}); restarting")
    try:
        started = time.monotonic()
        _restart(model_server, context)
        down_seconds = time.monotonic() - started
        context.log.info(f"model server ready in {down_seconds:.1f} s (down that long)")
        report = smoke_test(
            model_server.url(),
            model_id,
            fingerprint,
            timeout=config.smoke_timeout_seconds,
            log=context.log.info,
            **model_server.client_options(),
        )
        if not report.passed:
            raise DeploymentError(
                f"the smoke test of adapter {version} failed: {'; '.join(report.failures())}"
            )
    except Exception as exc:  # noqa: BLE001 - every failure rolls back, then fails the asset
        reason = str(exc)
        raise dg.Failure(
            description=_roll_back(
                context, deploy, before, version, reason, fingerprint, model_server, config
            ),
            metadata={"failed_version": version, "reason": reason[:2000]},
        ) from exc
    return report, True, down_seconds


def _downtime_table(downtime: dict) -> str:
    lines = ["| step | model server down, s |", "|---|---:|"]
    lines += [f"| {step} | {seconds:.1f} |" for step, seconds in downtime["by_step"].items()]
    lines.append(f"| **train_deploy_job (this run)** | **{downtime['total_seconds']:.1f}** |")
    return "\n".join(lines)


def _roll_back(
    context: dg.AssetExecutionContext,
    deploy: DeployDir,
    before: Links,
    version: str,
    reason: str,
    fingerprint: Fingerprint | None,
    model_server: ModelServerResource,
    config: DeployedAdapterConfig,
) -> str:
    """Put the old links back, restart, and verify the old adapter serves; returns the sentence
    that fails the asset."""
    old = before.latest
    context.log.error(f"deploying {version} failed: {reason}; rolling back to {old or 'the base'}")
    deploy.restore(before, reason[:500])
    what = f"adapter {old}" if old else "the base model (no adapter was deployed before)"
    try:
        _restart(model_server, context)
        if old is not None:
            recorded = deploy.read_json(old, FINGERPRINT_FILE)
            expected = Fingerprint.from_dict(recorded) if recorded else None
            expect = "adapter"
        else:
            # No adapter before: the new version's fingerprint holds the base model's output.
            expected, expect = fingerprint, "base"
        check = smoke_test(
            model_server.url(),
            str(model_server.model_dir()),
            expected,
            expect=expect,
            prove_adapter=False,
            require_text=expected is None,
            timeout=config.smoke_timeout_seconds,
            log=context.log.info,
            **model_server.client_options(),
        )
        if not check.passed:
            raise DeploymentError("; ".join(check.failures()))
    except CoderAssetsError as exc:
        return (
            f"deploying adapter {version} failed: {reason}. Rolled back `latest` to {what}, but "
            f"the server does not serve it either: {exc}. Check `coder-assets server status` and "
            f"the server log ({model_server.log_file()})."
        )
    return (
        f"deploying adapter {version} failed: {reason}. Rolled back: `latest` points at {what} "
        "again and the server serves it (verified by its smoke test)."
    )


def _restart(model_server: ModelServerResource, context) -> None:
    """Restart the server so it loads what `latest` points at, and wait until it is ready. A
    launchd agent's plist is rendered again first (its --adapter-path appears after the first
    deploy); rewriting a loaded agent's plist reloads it, which is the restart."""
    if model_server.kind == "launchd" and model_server.ensure_plist():
        context.log.info(f"updated the launchd agent {model_server.plist_path()}")
        if model_server.status().running:
            model_server.wait_ready()
            return
    model_server.restart()


def curl_command(
    url: str, keys_file: str, key_name: str = PIPELINE_KEY_NAME, question: str = CURL_QUESTION
) -> str:
    """A command a person can paste on waterdeep to talk to the deployed model through the
    proxy. It reads the key `key_name` from the keys file when it runs, so the key itself is
    never in this text (which ends up in metadata and logs)."""
    body = json.dumps(
        {
            "model": "default_model",
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 128,
            "temperature": 0,
        }
    )
    read_key = f"$(awk '$1==\"{key_name}\" {{print $2}}' {shlex.quote(keys_file)})"
    return (
        f"curl -s {url}/v1/chat/completions -H 'Content-Type: application/json' "
        f'-H "Authorization: Bearer {read_key}" -d {shlex.quote(body)}'
    )
