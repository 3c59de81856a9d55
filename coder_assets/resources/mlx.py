"""The base model: an MLX model directory (production) or the dev model, pretrained locally on the
interpreter's standard library (core.training.pretrain) and taken from the shared cache."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from coder_assets.core.dataset.decontam import load_humaneval
from coder_assets.core.training.dev_model import ModelDirectoryError, model_version
from coder_assets.core.training.pretrain import cached_dev_model

PRODUCTION_BASE_MODEL = "~/.mlx-models/Qwen2.5-Coder-32B-Instruct-Q8"
_REQUIRED_FILES = ("config.json", "tokenizer_config.json")


def dev_model_corpus() -> list[str]:
    """What the tokenizer of the tests' tiny random dev model learns from: the sample repos' files
    and HumanEval's prompts and solutions. (The trained dev model never sees either.)"""
    from coder_assets.demo.sample_repos import sample_corpus

    texts = sample_corpus()
    for problem in load_humaneval().problems:
        texts.extend((problem.prompt, problem.canonical_solution))
    return texts


class BaseModelResource(dg.ConfigurableResource):
    """Where the base model lives. Production observes an existing MLX model directory and never
    writes to it; the embedded default builds the tiny dev model there."""

    path: str = Field(
        default=PRODUCTION_BASE_MODEL,
        description="MLX model directory (config.json, tokenizer, safetensors weights).",
    )
    build_dev_model: bool = Field(
        default=False,
        description=(
            "Put the trained dev model (Qwen2 architecture, local BPE tokenizer, pretrained on the "
            "standard library; built once into the shared cache) at `path`. For the demo and "
            "tests only: a production model is never overwritten."
        ),
    )

    def model_dir(self) -> Path:
        return Path(self.path).expanduser().resolve()

    def prepare(self) -> Path:
        """The model directory, ready to load: built (dev model) or checked (production)."""
        directory = self.model_dir()
        if self.build_dev_model:
            _install_dev_model(cached_dev_model(), directory)
        missing = [name for name in _REQUIRED_FILES if not (directory / name).is_file()]
        if missing or not any(directory.glob("*.safetensors")):
            what = ", ".join(missing) if missing else "*.safetensors weights"
            raise ModelDirectoryError(
                f"base model directory {directory} lacks {what}: convert the model with "
                "`mlx_lm.convert --hf-path Qwen/Qwen2.5-Coder-32B-Instruct -q --q-bits 8 "
                f"--mlx-path {directory}` or set CODER_ASSETS_BASE_MODEL to where it is"
            )
        return directory

    def version(self) -> str:
        return model_version(self.model_dir())

    def config(self) -> dict[str, Any]:
        return json.loads((self.model_dir() / "config.json").read_text("utf-8"))

    def load_tokenizer(self) -> Any:
        """The tokenizer exactly as `mlx_lm.load` (and so `mlx_lm.lora`) builds it, EOS ids
        included, since mlx-lm appends the tokenizer's EOS to every `text` record."""
        from mlx_lm.utils import load_tokenizer

        directory = self.model_dir()
        eos = self.config().get("eos_token_id")
        return load_tokenizer(directory, eos_token_ids=eos)


def _install_dev_model(source: Path, directory: Path) -> None:
    """Copy the cached dev model to `directory` unless the same version is there already; the
    copy is assembled next to it and renamed into place."""
    if (directory / "config.json").is_file() and model_version(directory) == model_version(source):
        return
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.copy-", dir=directory.parent))
    try:
        shutil.copytree(source, staging / directory.name)
        old = staging / "old"
        if directory.exists():
            directory.rename(old)
        (staging / directory.name).rename(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
