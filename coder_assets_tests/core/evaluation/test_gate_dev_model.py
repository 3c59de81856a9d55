"""The promotion gate on the trained dev model with real mlx: an adapter trained on the test
split's distribution passes it; a LoRA adapter that leaves the model unchanged and a harmful one,
trained on the same records with their tokens shuffled, are rejected."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest

from coder_assets.core.evaluation.evaluate import EvalSettings, evaluate_model, promotion_decision
from coder_assets.core.evaluation.generation import InProcessGenerator
from coder_assets.core.training.lora import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_FILE,
    LoraSettings,
    train_lora,
)
from coder_assets_tests.dev_model_records import fim_record, write_records

# Trained on the test records themselves ("the test data's distribution"): the FIM middles are
# memorised.
BETTER = LoraSettings(
    rank=8,
    num_layers=4,
    iters=150,
    learning_rate=3e-3,
    steps_per_report=10,
    steps_per_eval=50,
    save_every=1000,
    val_batches=1,
    max_seq_length=256,
    grad_checkpoint=False,
    batch_size=1,
)
SETTINGS = EvalSettings(
    humaneval_problems=1,
    fim_tasks=None,
    chat_tasks=0,
    humaneval_max_tokens=16,
    fim_max_tokens=24,
    max_seq_length=256,
)


def _shuffled(texts: list[str], tokenizer: Any, seed: int) -> list[str]:
    """Each text with its tokens in a random order: the same tokens, no code left."""
    rng = random.Random(seed)
    out = []
    for text in texts:
        ids = tokenizer.encode(text)
        rng.shuffle(ids)
        out.append(tokenizer.decode(ids))
    return out


def _zero_adapter(trained: Path, out: Path) -> Path:
    """The trained adapter with every `lora_b` set to zero: exactly the base model."""
    out.mkdir()
    shutil.copy(trained / ADAPTER_CONFIG_FILE, out / ADAPTER_CONFIG_FILE)
    weights = mx.load(str(trained / ADAPTER_FILE))
    zeroed = {
        name: mx.zeros_like(value) if name.endswith("lora_b") else value
        for name, value in weights.items()
    }
    mx.save_safetensors(str(out / ADAPTER_FILE), zeroed)
    return out


@pytest.fixture(scope="module")
def summaries(
    tmp_path_factory: pytest.TempPathFactory, trained_dev_model: Path
) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("gate")
    model_dir = trained_dev_model
    records = [fim_record(i) for i in range(12)]
    data = root / "data"
    data.mkdir()
    write_records(data / "train.jsonl", records)
    write_records(data / "valid.jsonl", records)
    better = root / "better"
    train_lora(model_dir, data, better, BETTER)
    zero = _zero_adapter(better, root / "zero")
    noise = root / "noise"
    noise.mkdir()
    tokenizer = InProcessGenerator(model_dir).tokenizer
    write_records(noise / "train.jsonl", _shuffled(records, tokenizer, seed=1))
    write_records(noise / "valid.jsonl", _shuffled(records, tokenizer, seed=2))
    harmful = root / "harmful"
    train_lora(model_dir, noise, harmful, BETTER)

    test_records = [(f"test:{i}", text) for i, text in enumerate(records)]
    return {
        label: evaluate_model(
            label,
            InProcessGenerator(model_dir, adapter),
            test_records,
            SETTINGS,
            root / "eval",
        )
        for label, adapter in (
            ("base", None),
            ("better", better),
            ("zero", zero),
            ("harmful", harmful),
        )
    }


@pytest.mark.slow
def test_gate_passes_an_adapter_trained_on_the_test_distribution_and_rejects_a_zero_adapter(
    summaries: dict[str, dict[str, Any]],
) -> None:
    base, better, zero = summaries["base"], summaries["better"], summaries["zero"]
    assert base["fim_tasks"] == better["fim_tasks"] == zero["fim_tasks"] == 12
    assert base["humaneval_problems"] == 1
    # The trained base model completes code before any adapter: not noise.
    assert base["fim_edit_similarity"] > 0.1

    passed = promotion_decision(base, better, None)
    assert passed.passed, passed.reasons
    assert passed.reference == "base"
    assert passed.numbers["fim_edit_similarity_delta"] > 0
    assert better["fim_edit_similarity"] > 0.5  # the middles are reproduced, not just hinted at
    assert passed.numbers["test_loss_delta"] < 0

    # LoRA with B = 0 adds nothing: same greedy completions as the base model.
    assert zero["fim_edit_similarity"] == base["fim_edit_similarity"]
    rejected = promotion_decision(base, zero, None)
    assert not rejected.passed
    assert any("does not improve" in reason for reason in rejected.reasons), rejected.reasons

    # Against the trained adapter as the deployed one, the zero adapter is worse still.
    against_deployed = promotion_decision(base, zero, better)
    assert not against_deployed.passed
    assert against_deployed.reference == "deployed"
    assert any("does not improve" in reason for reason in against_deployed.reasons)
    assert any("test loss does not go down" in reason for reason in against_deployed.reasons)


@pytest.mark.slow
def test_gate_rejects_an_adapter_trained_on_shuffled_tokens(
    summaries: dict[str, dict[str, Any]],
) -> None:
    base, harmful = summaries["base"], summaries["harmful"]
    assert harmful["test_loss"] > base["test_loss"]
    assert harmful["fim_edit_similarity"] < base["fim_edit_similarity"]
    decision = promotion_decision(base, harmful, None)
    assert not decision.passed
    assert any("test loss does not go down" in reason for reason in decision.reasons)
    assert any("FIM edit similarity does not improve" in reason for reason in decision.reasons)
    # Against the good adapter as the deployed one, it is rejected just the same.
    assert not promotion_decision(base, harmful, summaries["better"]).passed
