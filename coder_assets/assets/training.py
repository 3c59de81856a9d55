"""lora_adapter: a LoRA adapter trained with mlx-lm on waterdeep from one dataset version."""

# No `from __future__ import annotations` here: Dagster reads these annotations at runtime.
import base64
import hashlib
import json
import math
from pathlib import Path

import dagster as dg
from pydantic import Field

from coder_assets.assets import reported_as_failure
from coder_assets.assets.dataset import base_model
from coder_assets.constants import HOST_TAG, OWNERS, TRAINING_GROUP, WATERDEEP
from coder_assets.core.dataset.build import read_manifest
from coder_assets.core.deployment.downtime import add_downtime, mlflow_metrics
from coder_assets.core.training.adapter_files import adapter_digests
from coder_assets.resources.datasets import DatasetStoreResource
from coder_assets.resources.mlflow import MlflowTrackingResource
from coder_assets.resources.mlx import BaseModelResource
from coder_assets.resources.service import ModelServerResource
from coder_assets.resources.storage import WorkspaceResource
from coder_assets.resources.waterdeep import WaterdeepResource

ADAPTER_NAME = "homelab-coder"
LOSS_CURVE_FILE = "loss_curve.png"

# Every waterdeep asset: routed there by waterdeep_executor (op tag), one step at a time across
# runs (pool), and visible as such in the UI (asset tag).
WATERDEEP_ASSET_SETTINGS = {
    "op_tags": {HOST_TAG: WATERDEEP},
    "tags": {"host": WATERDEEP},
    "pool": WATERDEEP,
    "owners": OWNERS,
}


class LoraAdapterConfig(dg.Config):
    """LoRA settings; the defaults are the production plan for the 32B model on waterdeep."""

    rank: int = Field(default=16, description="LoRA rank.")
    scale: float = Field(default=2.0, description="LoRA scale (alpha 32 / rank 16 in mlx-lm).")
    dropout: float = Field(default=0.0, description="LoRA dropout.")
    num_layers: int = Field(default=16, description="Top transformer layers that get LoRA.")
    batch_size: int = Field(default=1, description="Sequences per step (48 GB: keep 1).")
    iters: int = Field(default=1000, description="Training iterations.")
    learning_rate: float = Field(default=1e-5, description="Adam learning rate.")
    val_batches: int = Field(default=25, description="Validation batches per evaluation.")
    steps_per_report: int = Field(default=10, description="Steps between progress lines.")
    steps_per_eval: int = Field(default=200, description="Steps between validation runs.")
    save_every: int = Field(default=100, description="Steps between checkpoints (resume).")
    grad_checkpoint: bool = Field(default=True, description="Trade compute for memory.")
    seed: int = Field(default=0, description="Seed of mlx, numpy and data order.")
    start_from: str = Field(
        default="base",
        description=(
            "'base': a fresh adapter. 'deployed': continue from the deployed adapter's weights "
            "(continuous fine-tuning) when it has the same base model and LoRA shape; otherwise "
            "a fresh adapter, and the log says why."
        ),
    )

    def settings(self, max_seq_length: int):
        # core.training.lora imports mlx-lm (seconds): only when training, not on every code load.
        from coder_assets.core.training.lora import LoraSettings

        return LoraSettings(
            rank=self.rank,
            scale=self.scale,
            dropout=self.dropout,
            num_layers=self.num_layers,
            batch_size=self.batch_size,
            iters=self.iters,
            learning_rate=self.learning_rate,
            val_batches=self.val_batches,
            steps_per_report=self.steps_per_report,
            steps_per_eval=self.steps_per_eval,
            save_every=self.save_every,
            grad_checkpoint=self.grad_checkpoint,
            max_seq_length=max_seq_length,
            seed=self.seed,
        )


def adapter_version(
    dataset_version: str, base_model_version: str, settings, start_from: dict | None = None
) -> str:
    """Deterministic in what makes the adapter: a retry of the same training lands in the same
    folder (and resumes), anything different gets a new one. `<dataset 12>-<settings 8>`.
    `start_from`: the file digests of the adapter the training continues from (None: fresh)."""
    inputs = {"dataset": dataset_version, "base": base_model_version, "lora": settings.to_dict()}
    if start_from is not None:
        inputs["start_from"] = start_from
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()
    return f"{dataset_version[:12]}-{digest[:8]}"


class _Reporter:
    """Streams the trainer's reports into the Dagster log and the MLflow run."""

    def __init__(self, context, tracking: MlflowTrackingResource, run_id: str, every: int):
        self.context = context
        self.tracking = tracking
        self.run_id = run_id
        self.every = max(every, 1)

    def __call__(self, kind: str, info: dict) -> None:
        step = int(info["iteration"])
        if kind == "train":
            metrics = {
                "train_loss": info["train_loss"],
                "learning_rate": info["learning_rate"],
                "tokens_per_second": info["tokens_per_second"],
                "trained_tokens": info["trained_tokens"],
                "peak_memory_gb": info["peak_memory"],
            }
            if step % self.every == 0 or info.get("percent", 0) >= 100:
                eta = info.get("eta_seconds")
                eta_text = f", ETA {_duration(eta)}" if eta is not None else ""
                self.context.log.info(
                    f"iter {step} ({info.get('percent', 0):.0f}%{eta_text}): train loss "
                    f"{info['train_loss']:.4f}, lr {info['learning_rate']:.2e}, "
                    f"{info['tokens_per_second']:.0f} tok/s, {info['trained_tokens']} tokens, "
                    f"peak {info['peak_memory']:.2f} GB"
                )
        else:
            metrics = {"val_loss": info["val_loss"]}
            self.context.log.info(f"iter {step}: val loss {info['val_loss']:.4f}")
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
        self.tracking.log_metrics(self.run_id, finite, step=step)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _loss(value: float | None) -> float | str:
    return round(value, 4) if value is not None else "n/a"


def _loss_curve_markdown(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"![loss curve](data:image/png;base64,{data})"


@dg.asset(
    group_name=TRAINING_GROUP,
    kinds={"mlx", "mlflow"},
    code_version="1",
    deps=[base_model],
    io_manager_key="json_io_manager",
    **WATERDEEP_ASSET_SETTINGS,
)
def lora_adapter(
    context: dg.AssetExecutionContext,
    config: LoraAdapterConfig,
    training_dataset: dict,
    waterdeep: WaterdeepResource,
    mlx_base_model: BaseModelResource,
    dataset_store: DatasetStoreResource,
    mlflow_tracking: MlflowTrackingResource,
    model_server: ModelServerResource,
    workspace: WorkspaceResource,
) -> dg.MaterializeResult:
    """A LoRA adapter for the base model, trained on waterdeep with mlx-lm's trainer from one
    dataset version (fetched from the bucket, every file's sha256 checked against its manifest).
    The model server is stopped while training (they do not fit in memory together) and always
    restored with the deployed adapter. Each adapter version gets its own folder
    `adapters/homelab-coder/<version>/`, never overwritten; a retried run resumes from its last
    checkpoint. Loss, learning rate, tokens/s and peak memory stream into the run log and the
    MLflow run of the dataset version."""
    with reported_as_failure():
        waterdeep.require("train a LoRA adapter")
        with waterdeep.lock("training lora_adapter", context.run_id) as lock:
            if lock.cleared_stale:
                context.log.warning(f"cleared a stale waterdeep lock: {lock.cleared_stale}")
            return _train(
                context,
                config,
                training_dataset,
                mlx_base_model,
                dataset_store,
                mlflow_tracking,
                model_server,
                workspace,
            )


def _starting_adapter(
    context: dg.AssetExecutionContext,
    config: LoraAdapterConfig,
    model_server: ModelServerResource,
    base_version: str,
    settings,
) -> Path | None:
    """The adapter the training continues from: the deployed one with `start_from: deployed`
    when it fits (same base model and LoRA shape), else None (a fresh adapter)."""
    from coder_assets.core.training.lora import continuation_problem

    if config.start_from not in ("base", "deployed"):
        raise dg.Failure(
            f"lora_adapter's start_from is {config.start_from!r}: use 'base' (a fresh adapter) "
            "or 'deployed' (continue from the deployed adapter)"
        )
    if config.start_from == "base":
        return None
    deployed = model_server.adapter_dir()
    if deployed is None:
        context.log.info("start_from deployed: no adapter is deployed, so a fresh adapter")
        return None
    problem = continuation_problem(deployed, base_version, settings)
    if problem is not None:
        context.log.warning(
            f"start_from deployed: the deployed adapter {deployed.name} cannot be continued "
            f"({problem}); training a fresh adapter"
        )
        return None
    context.log.info(f"continuing from the deployed adapter {deployed.name}")
    return deployed


def _train(
    context: dg.AssetExecutionContext,
    config: LoraAdapterConfig,
    training_dataset: dict,
    mlx_base_model: BaseModelResource,
    dataset_store: DatasetStoreResource,
    mlflow_tracking: MlflowTrackingResource,
    model_server: ModelServerResource,
    workspace: WorkspaceResource,
) -> dg.MaterializeResult:
    from coder_assets.core.training.lora import (
        COMPLETION_MARKER,
        ProgressCallback,
        TrainingResult,
        plot_loss_curve,
        train_lora,
    )

    dataset_version = training_dataset["version"]
    data_dir = dataset_store.fetch(
        dataset_version, workspace.fetched_datasets_dir() / dataset_version
    )
    manifest = read_manifest(data_dir)
    model_dir = mlx_base_model.prepare()
    base_version = mlx_base_model.version()
    if manifest["base_model_version"] != base_version:
        context.log.warning(
            f"dataset {dataset_version[:12]} was formatted with base model "
            f"{manifest['base_model_version'][:12]}, training on {base_version[:12]}: "
            "rematerialize dataset_splits to rebuild it with this tokenizer"
        )
    settings = config.settings(int(manifest["max_seq_length"]))
    start_from = _starting_adapter(context, config, model_server, base_version, settings)
    version = adapter_version(
        dataset_version,
        base_version,
        settings,
        adapter_digests(start_from) if start_from is not None else None,
    )
    adapter_dir = workspace.adapters_dir() / ADAPTER_NAME / version
    run_id = training_dataset.get("mlflow_run_id") or mlflow_tracking.dataset_run(dataset_version)
    reused = (adapter_dir / COMPLETION_MARKER).is_file()
    down_seconds = 0.0
    if reused:
        context.log.info(f"adapter {version} is already trained; reusing it (never retrained)")
        result = TrainingResult.from_json((adapter_dir / COMPLETION_MARKER).read_text())
        # A previous attempt killed after training left the server stopped: bring it back.
        model_server.restore_desired_state("training lora_adapter")
    else:
        mlflow_tracking.set_tags(
            run_id, {"coder_assets.adapter_version": version, "coder_assets.stage": "training"}
        )
        mlflow_tracking.log_dict(
            run_id, {"adapter_version": version, **settings.to_dict()}, f"adapters/{version}.json"
        )
        callback = ProgressCallback(
            _Reporter(context, mlflow_tracking, run_id, config.steps_per_report),
            total_iters=settings.iters,
        )
        with model_server.paused("training lora_adapter") as paused:
            if paused.was_running:
                context.log.info("stopped the model server for training; it is restored after")
            result = train_lora(
                model_dir, data_dir, adapter_dir, settings, callback, start_from=start_from
            )
        down_seconds = paused.down_seconds
        if result.resumed_from:
            context.log.info(f"resumed from the checkpoint at iteration {result.resumed_from}")
    curve = adapter_dir / LOSS_CURVE_FILE
    if not curve.is_file():
        plot_loss_curve(result.train_points, result.val_points, curve, f"{ADAPTER_NAME} {version}")
    if not reused:
        mlflow_tracking.log_artifact(run_id, curve, f"adapters/{version}")
        final = {
            name: value
            for name, value in (
                ("final_train_loss", result.final_train_loss),
                ("final_val_loss", result.final_val_loss),
            )
            if value is not None
        }
        mlflow_tracking.log_metrics(run_id, final)
    downtime = add_downtime(None, context.run_id, "lora_adapter", down_seconds)
    mlflow_tracking.log_metrics(run_id, mlflow_metrics(downtime))
    run_url = mlflow_tracking.run_url(run_id)
    descriptor = {
        "version": version,
        "path": str(adapter_dir),
        "name": ADAPTER_NAME,
        "dataset_version": dataset_version,
        "base_model_version": base_version,
        "mlflow_run_id": run_id,
        "final_train_loss": result.final_train_loss,
        "final_val_loss": result.final_val_loss,
        "settings": settings.to_dict(),
        "started_from": start_from.name if start_from is not None else None,
        "downtime": downtime,
    }
    metadata = {
        "version": version,
        "path": dg.MetadataValue.path(str(adapter_dir)),
        "reused_existing": reused,
        "final_train_loss": _loss(result.final_train_loss),
        "final_val_loss": _loss(result.final_val_loss),
        "iterations": result.iterations,
        "resumed_from_iteration": result.resumed_from,
        "started_from": (
            f"deployed adapter {start_from.name}" if start_from is not None else "base model"
        ),
        "trained_tokens": result.trained_tokens,
        "tokens_per_second": round(result.tokens_per_second, 1),
        "peak_memory_gb": round(result.peak_memory_gb, 3),
        "wall_seconds": round(result.wall_seconds, 1),
        "server_downtime_seconds": round(down_seconds, 1),
        "adapter_bytes": result.adapter_bytes,
        "dataset_version": dataset_version,
        "base_model_version": base_version,
        "mlflow_run_id": run_id,
        "loss_curve": dg.MetadataValue.md(_loss_curve_markdown(curve)),
    }
    if run_url:
        metadata["mlflow_run"] = dg.MetadataValue.url(run_url)
    return dg.MaterializeResult(
        value=descriptor, data_version=dg.DataVersion(version), metadata=metadata
    )
