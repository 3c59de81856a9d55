"""The LoRA fine-tuning pipeline, and a command that compiles it to KFP IR YAML."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

from kfp import compiler, dsl

from kfp_training_pipelines.components import prepare_dataset, publish_adapter, train_adapter
from kfp_training_pipelines.storage import S3Location

PIPELINE_NAME = "coder-lora-finetune"
ARTIFACT_ROOT = S3Location("training-data", "coder")


@dataclass(frozen=True)
class PipelineDefaults:
    """Default run arguments; each one can be overridden per run in the KFP UI."""

    source_uri: str = ARTIFACT_ROOT.child("datasets", "latest", "samples.jsonl").uri
    destination_uri: str = ARTIFACT_ROOT.child("adapters", "candidate").uri
    base_model: str = "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    max_samples: int = 20_000
    valid_fraction: float = 0.05
    seed: int = 17
    iterations: int = 600
    learning_rate: float = 1e-4
    lora_rank: int = 16

    def as_arguments(self) -> dict[str, object]:
        """Return the defaults as the ``arguments`` mapping of a KFP run."""
        return asdict(self)


DEFAULTS = PipelineDefaults()


@dsl.pipeline(name=PIPELINE_NAME, description="Fine-tune a LoRA adapter for the homelab coder.")
def finetune_pipeline(
    source_uri: str = DEFAULTS.source_uri,
    destination_uri: str = DEFAULTS.destination_uri,
    base_model: str = DEFAULTS.base_model,
    max_samples: int = DEFAULTS.max_samples,
    valid_fraction: float = DEFAULTS.valid_fraction,
    seed: int = DEFAULTS.seed,
    iterations: int = DEFAULTS.iterations,
    learning_rate: float = DEFAULTS.learning_rate,
    lora_rank: int = DEFAULTS.lora_rank,
) -> None:
    """Prepare the dataset, train an adapter and publish it."""
    prepared = prepare_dataset(
        source_uri=source_uri, max_samples=max_samples, valid_fraction=valid_fraction, seed=seed
    )
    trained = train_adapter(
        base_model=base_model,
        iterations=iterations,
        learning_rate=learning_rate,
        lora_rank=lora_rank,
        train_split=prepared.outputs["train_split"],
        valid_split=prepared.outputs["valid_split"],
    )
    # The GPU node has a single card; caching would hide a changed trainer image.
    trained.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    trained.set_caching_options(False)
    publish_adapter(adapter=trained.outputs["adapter"], destination_uri=destination_uri)


def compile_pipeline(package_path: Path) -> Path:
    """Compile :func:`finetune_pipeline` to ``package_path`` and return that path."""
    package_path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(finetune_pipeline, package_path=str(package_path))
    return package_path


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m kfp_training_pipelines.pipeline -o build/pipeline.yaml``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-o", "--output", type=Path, default=Path("build/finetune_pipeline.yaml"))
    args = parser.parse_args(argv)
    compile_pipeline(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
