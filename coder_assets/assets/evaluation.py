"""eval_scores: HumanEval and the project eval for the base model, the new adapter and the
deployed adapter, on waterdeep."""

# No `from __future__ import annotations` here: Dagster reads these annotations at runtime.
import json
import math
from pathlib import Path

import dagster as dg
from pydantic import Field

from coder_assets.assets import reported_as_failure
from coder_assets.assets.training import WATERDEEP_ASSET_SETTINGS
from coder_assets.constants import EVALUATION_GROUP
from coder_assets.core.dataset.build import PROVENANCE_FILE, read_table
from coder_assets.core.deployment.deploy import FINGERPRINT_FILE
from coder_assets.core.deployment.downtime import add_downtime, downtime_of, mlflow_metrics
from coder_assets.core.deployment.smoke import Fingerprint, fingerprint_prompts
from coder_assets.core.evaluation.cache import EvalCache, ModelIdentity, adapter_content_digest
from coder_assets.core.evaluation.evaluate import (
    EvalModel,
    EvalSettings,
    evaluate_model,
    summary_table,
    write_summary,
)
from coder_assets.core.evaluation.generation import DEFAULT_BATCH_SIZE
from coder_assets.core.files import write_json_atomic
from coder_assets.core.training.adapter_files import adapter_digests
from coder_assets.resources.datasets import DatasetStoreResource
from coder_assets.resources.mlflow import MlflowTrackingResource
from coder_assets.resources.mlx import BaseModelResource
from coder_assets.resources.service import ModelServerResource
from coder_assets.resources.storage import WorkspaceResource
from coder_assets.resources.waterdeep import WaterdeepResource

EVAL_DIR = "eval"


class EvalScoresConfig(dg.Config):
    """How much to evaluate; the production default is everything."""

    humaneval_problems: int | None = Field(
        default=None, description="HumanEval problems (first N of 164); None: all."
    )
    fim_tasks: int | None = Field(default=None, description="FIM tasks from the test split.")
    chat_tasks: int | None = Field(default=100, description="Instruction pairs from test.")
    humaneval_max_tokens: int = Field(default=512, description="Tokens per HumanEval answer.")
    fim_max_tokens: int = Field(default=128, description="Tokens per FIM middle.")
    chat_max_tokens: int = Field(default=512, description="Tokens per instruction answer.")
    timeout_seconds: float = Field(default=10.0, description="Wall clock per HumanEval program.")
    batch_size: int = Field(
        default=DEFAULT_BATCH_SIZE,
        ge=1,
        description=(
            "Sequences decoded together (mlx-lm batch generation); 1: one prompt at a time."
        ),
    )
    use_cache: bool = Field(
        default=True,
        description=(
            "Reuse results from the evaluation cache (keyed by base model version, adapter "
            "digest, task, prompt, settings and generator code); False: generate everything."
        ),
    )

    def settings(self, max_seq_length: int, context_tokens: int | None = None) -> EvalSettings:
        """The evaluation's settings; `context_tokens`: the base model's context length (FIM
        prompts longer than it, minus `fim_max_tokens`, are cut to fit)."""
        return EvalSettings(
            humaneval_problems=self.humaneval_problems,
            humaneval_max_tokens=self.humaneval_max_tokens,
            fim_tasks=self.fim_tasks,
            fim_max_tokens=self.fim_max_tokens,
            chat_tasks=self.chat_tasks,
            chat_max_tokens=self.chat_max_tokens,
            timeout=self.timeout_seconds,
            max_seq_length=max_seq_length,
            batch_size=self.batch_size,
            context_tokens=context_tokens,
        )


def _test_records(data_dir: Path) -> tuple[list[tuple[str, str]], dict[str, str | None]]:
    records = []
    for number, line in enumerate((data_dir / "test.jsonl").read_text("utf-8").splitlines(), 1):
        records.append((f"test:{number}", json.loads(line)["text"]))
    languages = {
        f"test:{row['line']}": row["language"]
        for row in read_table(data_dir / PROVENANCE_FILE)
        if row["split"] == "test"
    }
    return records, languages


@dg.asset(
    group_name=EVALUATION_GROUP,
    kinds={"mlx", "mlflow"},
    code_version="2",
    io_manager_key="json_io_manager",
    **WATERDEEP_ASSET_SETTINGS,
)
def eval_scores(
    context: dg.AssetExecutionContext,
    config: EvalScoresConfig,
    lora_adapter: dict,
    training_dataset: dict,
    waterdeep: WaterdeepResource,
    mlx_base_model: BaseModelResource,
    dataset_store: DatasetStoreResource,
    mlflow_tracking: MlflowTrackingResource,
    model_server: ModelServerResource,
    workspace: WorkspaceResource,
) -> dg.MaterializeResult:
    """HumanEval pass@1 (EvalPlus instruct prompt, greedy, sandboxed) and the project eval on the
    held-out test split (FIM exact match, edit similarity, identifier F1; answer edit similarity;
    test loss and perplexity) for the base model, the new adapter and the deployed adapter, one
    model at a time, in-process with mlx-lm (adapters unfused), prompts decoded in batches.
    Results come from the evaluation cache where it has them (the base model's from earlier
    adapters, the deployed adapter's from when it was the candidate), so a model is loaded only
    for what is new. Per-problem results go to the adapter's `eval/` folder and MLflow; the
    promotion gate decides on them. How long the model server was down is recorded, with the
    run's total so far."""
    from coder_assets.core.evaluation.generation import (
        InProcessGenerator,
        chat_tasks_from_records,
        fim_tasks_from_records,
    )

    with reported_as_failure():
        waterdeep.require("evaluate an adapter")
        with waterdeep.lock("evaluating eval_scores", context.run_id):
            version = training_dataset["version"]
            data_dir = dataset_store.fetch(version, workspace.fetched_datasets_dir() / version)
            records, languages = _test_records(data_dir)
            model_dir = mlx_base_model.prepare()
            settings = config.settings(
                int(training_dataset["max_seq_length"]),
                mlx_base_model.config().get("max_position_embeddings"),
            )
            adapter_dir = Path(lora_adapter["path"])
            # What was evaluated, byte for byte: adapter_release refuses files that differ.
            evaluated_files = adapter_digests(adapter_dir)
            results_dir = adapter_dir / EVAL_DIR
            deployed_dir = model_server.adapter_dir()
            if deployed_dir is not None and deployed_dir.name == lora_adapter["version"]:
                # Re-evaluating the deployed version (its installed copy): compare with the base.
                deployed_dir = None
            models = [("base", None), ("adapter", adapter_dir)]
            if deployed_dir is not None:
                models.append(("deployed", deployed_dir))
            base_version = mlx_base_model.version()
            cache = EvalCache(workspace.eval_cache_dir()) if config.use_cache else None
            tokenizer = mlx_base_model.load_tokenizer()
            summaries: dict[str, dict] = {}
            costs: dict[str, dict] = {}
            # The deploy's proof that the server serves this adapter: fixed prompts with the
            # base model's and the adapter's own greedy output, one prompt at a time as the
            # server generates them.
            prompts = fingerprint_prompts(
                fim_tasks_from_records(records, limit=8, languages=languages),
                chat_tasks_from_records(records, limit=4),
            )
            answers: dict[str, tuple[str, ...]] = {}
            with model_server.paused("evaluating eval_scores") as paused:
                for label, directory in models:
                    model = EvalModel(
                        label,
                        lambda directory=directory: InProcessGenerator(model_dir, directory),
                        tokenizer=tokenizer,
                        identity=ModelIdentity(
                            base_version,
                            adapter_content_digest(directory) if directory else None,
                        ),
                        cache=cache,
                    )
                    summaries[label] = evaluate_model(
                        label,
                        model,
                        records,
                        settings,
                        results_dir,
                        languages=languages,
                        progress=context.log.info,
                    )
                    if label in ("base", "adapter"):
                        answers[label] = tuple(
                            model.complete_many(
                                "fingerprint", [p.prompt], p.max_tokens, p.stop, batch_size=1
                            )[0]
                            for p in prompts
                        )
                    summaries[label].pop("cost")
                    costs[label] = model.cost()  # the fingerprint's generation included
                    context.log.info(f"{label}: {_cost_line(costs[label])}")
                    model.release()
            downtime = add_downtime(
                downtime_of(lora_adapter), context.run_id, "eval_scores", paused.down_seconds
            )
            fingerprint = Fingerprint(tuple(prompts), answers["base"], answers["adapter"])
            write_json_atomic(results_dir / FINGERPRINT_FILE, fingerprint.to_dict())
            result = {
                "adapter_version": lora_adapter["version"],
                "adapter_path": str(adapter_dir),
                "adapter_files": evaluated_files,
                "dataset_version": training_dataset["version"],
                "deployed_path": str(deployed_dir) if deployed_dir else None,
                "base": summaries["base"],
                "adapter": summaries["adapter"],
                "deployed": summaries.get("deployed"),
                "fingerprint": fingerprint.to_dict(),
                "cost": costs,
                "downtime": downtime,
            }
            write_summary(results_dir / "summary.json", result)
            run_id = lora_adapter["mlflow_run_id"]
            mlflow_tracking.log_metrics(run_id, mlflow_metrics(downtime) | _cost_metrics(costs))
            for label, summary in summaries.items():
                mlflow_tracking.log_metrics(
                    run_id,
                    {
                        f"eval_{label}_{name}": float(value)
                        for name, value in summary.items()
                        if isinstance(value, int | float) and math.isfinite(float(value))
                    },
                )
            mlflow_tracking.log_artifact(run_id, results_dir, f"eval/{lora_adapter['version']}")
            run_url = mlflow_tracking.run_url(run_id)
    base, adapter = summaries["base"], summaries["adapter"]
    metadata = {
        "scores": dg.MetadataValue.md(summary_table(base, adapter, summaries.get("deployed"))),
        "adapter_version": lora_adapter["version"],
        "humaneval_pass_at_1_base": base["humaneval_pass_at_1"],
        "humaneval_pass_at_1_adapter": adapter["humaneval_pass_at_1"],
        "fim_edit_similarity_adapter": adapter["fim_edit_similarity"],
        "fim_edit_similarity_copy_baseline": adapter["fim_copy_baseline_edit_similarity"],
        "test_loss_adapter": adapter["test_loss"],
        "deployed_adapter": str(deployed_dir) if deployed_dir else "none (first deploy)",
        "results": dg.MetadataValue.path(str(results_dir)),
        "fingerprint_prompts_distinguishing": (
            f"{len(fingerprint.distinguishing())}/{len(fingerprint.prompts)}"
        ),
        "cost": dg.MetadataValue.md(_cost_table(costs)),
        "batch_size": config.batch_size,
        "cache": str(workspace.eval_cache_dir()) if config.use_cache else "off",
        "generated_tokens": sum(cost["generated_tokens"] for cost in costs.values()),
        "model_loads": sum(cost["loads"] for cost in costs.values()),
        "server_downtime_seconds": round(paused.down_seconds, 1),
        "train_deploy_downtime_seconds": downtime["total_seconds"],
    }
    for label, cost in costs.items():
        metadata[f"cache_hits_{label}"] = cost["cache"]["hits"]
        metadata[f"cache_misses_{label}"] = cost["cache"]["misses"]
    if run_url:
        metadata["mlflow_run"] = dg.MetadataValue.url(run_url)
    return dg.MaterializeResult(value=result, metadata=_finite(metadata))


def _cost_line(cost: dict) -> str:
    cache = cost["cache"]
    return (
        f"{cache['hits']} cache hits, {cache['misses']} misses"
        f"{', ' + str(cache['corrupt']) + ' corrupt entries ignored' if cache['corrupt'] else ''}; "
        f"{cost['generated_tokens']} tokens generated; model loaded {cost['loads']} time(s)"
    )


def _cost_table(costs: dict[str, dict]) -> str:
    lines = [
        "| model | cache hits | misses | generated tokens | loads | load s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, cost in costs.items():
        lines.append(
            f"| {label} | {cost['cache']['hits']} | {cost['cache']['misses']} | "
            f"{cost['generated_tokens']} | {cost['loads']} | {cost['load_seconds']:.1f} |"
        )
    return "\n".join(lines)


def _cost_metrics(costs: dict[str, dict]) -> dict[str, float]:
    metrics = {}
    for label, cost in costs.items():
        metrics[f"eval_{label}_cache_hits"] = float(cost["cache"]["hits"])
        metrics[f"eval_{label}_cache_misses"] = float(cost["cache"]["misses"])
        metrics[f"eval_{label}_generated_tokens"] = float(cost["generated_tokens"])
        metrics[f"eval_{label}_model_loads"] = float(cost["loads"])
    return metrics


def _finite(metadata: dict) -> dict:
    return {
        key: (round(value, 4) if math.isfinite(value) else "n/a")
        if isinstance(value, float)
        else value
        for key, value in metadata.items()
    }
