"""The dev model: loadable unchanged by mlx-lm, Qwen's special tokens whole, deterministic builds,
and a model version that never reads weights."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from coder_assets.core.training.dev_model import (
    DEFAULT_SYSTEM_PROMPT,
    QWEN_SPECIAL_TOKENS,
    DevModelConfig,
    DevModelError,
    ModelDirectoryError,
    build_dev_model,
    model_version,
)
from coder_assets.demo.sample_repos import create_sample_repos

EXTRA_TEXTS = [
    "def add(a, b):\n    return a + b\n",
    'package main\n\nfunc main() {\n\tprintln("hello")\n}\n',
    "Ünïcödé, 日本語 and emoji 🤖 survive the byte-level round trip.\n",
]


def _corpus(root: Path) -> list[str]:
    texts = list(EXTRA_TEXTS)
    for repo in create_sample_repos(root):
        for path in sorted(repo.rglob("*")):
            if path.is_file() and ".git" not in path.relative_to(repo).parts:
                try:
                    texts.append(path.read_text("utf-8"))
                except UnicodeDecodeError:
                    continue  # binary files (images) are no tokenizer material
    return texts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return _corpus(tmp_path_factory.mktemp("sample_repos"))


@pytest.fixture(scope="module")
def dev_model_dir(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> Path:
    return build_dev_model(tmp_path_factory.mktemp("models") / "dev-model", corpus)


@pytest.fixture(scope="module")
def loaded(dev_model_dir: Path):
    import mlx_lm

    return mlx_lm.load(str(dev_model_dir))


def test_build_writes_an_mlx_model_directory(dev_model_dir: Path) -> None:
    names = sorted(p.name for p in dev_model_dir.iterdir())
    assert names == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    config = json.loads((dev_model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert config["vocab_size"] == DevModelConfig().vocab_size
    # Nothing half-built is left next to the model.
    assert [p.name for p in dev_model_dir.parent.iterdir()] == ["dev-model"]


@pytest.mark.parametrize("token", QWEN_SPECIAL_TOKENS)
def test_special_token_is_one_id_and_round_trips(dev_model_dir: Path, loaded, token: str) -> None:
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(dev_model_dir / "tokenizer.json"))
    ids = raw.encode(token).ids
    assert len(ids) == 1
    assert raw.decode(ids, skip_special_tokens=False) == token

    _, tokenizer = loaded
    assert tokenizer.encode(token, add_special_tokens=False) == ids
    assert tokenizer.decode(ids) == token


def test_fim_tokens_stay_whole_inside_code(loaded) -> None:
    _, tokenizer = loaded
    text = "<|fim_prefix|>def add(a, b):\n<|fim_suffix|>\n<|fim_middle|>    return a + b"
    ids = tokenizer.encode(text, add_special_tokens=False)
    for token in ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"):
        assert ids.count(tokenizer.convert_tokens_to_ids(token)) == 1
    assert tokenizer.decode(ids) == text


def test_byte_level_tokenizer_round_trips_any_text(loaded) -> None:
    _, tokenizer = loaded
    text = "x = '日本語 🤖'\r\n\tif ok:\n\t\treturn   None\n"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_eos_is_im_end_and_pad_is_endoftext(loaded) -> None:
    _, tokenizer = loaded
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    # generation_config.json stops generation at either, as Qwen2.5-Instruct does.
    assert set(tokenizer.eos_token_ids) == {im_end, endoftext}


def test_mlx_lm_generate_produces_tokens(loaded) -> None:
    import mlx_lm

    model, tokenizer = loaded
    text = mlx_lm.generate(model, tokenizer, prompt="def add(a, b):", max_tokens=8)
    assert isinstance(text, str) and text


def test_chat_template_renders_chatml_with_generation_prompt(loaded) -> None:
    _, tokenizer = loaded
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add two numbers."},
    ]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nAdd two numbers.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    no_system = tokenizer.apply_chat_template(messages[1:], tokenize=False)
    assert no_system == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nAdd two numbers.<|im_end|>\n"
    )


def test_two_builds_are_byte_identical(
    tmp_path: Path, corpus: list[str], dev_model_dir: Path
) -> None:
    again = build_dev_model(tmp_path / "again", corpus)
    for path in sorted(dev_model_dir.iterdir()):
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name
    assert model_version(again) == model_version(dev_model_dir)


def test_rebuild_replaces_the_previous_model(tmp_path: Path) -> None:
    out = tmp_path / "model"
    build_dev_model(out, EXTRA_TEXTS, DevModelConfig(seed=1))
    first = model_version(out)
    build_dev_model(out, EXTRA_TEXTS, DevModelConfig(seed=2))
    # A different seed changes only weights; the index carries their hash, so the version moves.
    assert model_version(out) != first
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_model_version_changes_when_config_changes(tmp_path: Path, dev_model_dir: Path) -> None:
    copy = Path(shutil.copytree(dev_model_dir, tmp_path / "copy"))
    assert model_version(copy) == model_version(dev_model_dir)
    config = json.loads((copy / "config.json").read_text())
    config["rope_theta"] = 10000.0
    (copy / "config.json").write_text(json.dumps(config))
    assert model_version(copy) != model_version(dev_model_dir)


def _model_with_huge_sparse_weights(src: Path, dst: Path, *, index: bool) -> Path:
    dst.mkdir()
    for path in src.iterdir():
        if not path.name.endswith(".safetensors") and (index or "index" not in path.name):
            shutil.copy(path, dst / path.name)
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        with open(dst / shard, "wb") as f:
            f.truncate(20 * 2**30)  # 20 GiB, sparse: reading it would take minutes
    return dst


@pytest.mark.parametrize("index", [True, False], ids=["with-index", "without-index"])
def test_model_version_never_reads_weights(
    tmp_path: Path, dev_model_dir: Path, monkeypatch: pytest.MonkeyPatch, index: bool
) -> None:
    model_dir = _model_with_huge_sparse_weights(dev_model_dir, tmp_path / "big", index=index)
    real_open = io.open

    def guarded_open(file, *args, **kwargs):
        assert not str(file).endswith(".safetensors"), f"model_version opened {file}"
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr("builtins.open", guarded_open)
    before = model_version(model_dir)
    os.truncate(model_dir / "model-00002-of-00002.safetensors", 21 * 2**30)
    after = model_version(model_dir)
    # Without an index the shards' names and sizes stand in for the weights; with one, the index.
    assert (before != after) is (not index)


def test_model_version_rejects_a_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelDirectoryError, match="config.json"):
        model_version(tmp_path)


@pytest.mark.parametrize(
    "bad",
    [
        {"vocab_size": 100},
        {"hidden_size": 66},
        {"num_attention_heads": 4, "num_key_value_heads": 3},
        {"hidden_size": 12, "num_attention_heads": 4},
    ],
)
def test_config_that_cannot_make_a_qwen2_model_is_rejected(bad: dict[str, int]) -> None:
    with pytest.raises(DevModelError):
        DevModelConfig(**bad)


# On the CPU backend mlx compiles its fused kernels with the C++ compiler on first use (cached under
# $TMPDIR/mlx): about a minute on a fresh machine, under a second after that.
@pytest.mark.slow
def test_lora_training_through_mlx_lm_tuner_writes_adapters(
    tmp_path: Path, dev_model_dir: Path
) -> None:
    import mlx.optimizers as optim
    import mlx_lm
    from mlx_lm.tuner import TrainingArgs, linear_to_lora_layers, train
    from mlx_lm.tuner.datasets import CacheDataset, create_dataset

    model, tokenizer = mlx_lm.load(str(dev_model_dir))
    model.freeze()
    lora = {"rank": 4, "scale": 2.0, "dropout": 0.0}
    linear_to_lora_layers(model, 2, lora)
    records = [
        {"text": "<|fim_prefix|>def add(a, b):\n<|fim_suffix|>\n<|fim_middle|>    return a + b"},
        {"text": "package main\n\nfunc main() {}\n"},
    ]
    dataset = CacheDataset(create_dataset(records, tokenizer, SimpleNamespace()))
    adapter_dir = tmp_path / "adapter"
    adapter_dir.mkdir()
    train(
        model,
        optim.Adam(learning_rate=1e-3),
        dataset,
        dataset,
        args=TrainingArgs(
            batch_size=1,
            iters=2,
            val_batches=1,
            steps_per_report=1,
            steps_per_eval=2,
            max_seq_length=128,
            adapter_file=str(adapter_dir / "adapters.safetensors"),
        ),
    )
    assert (adapter_dir / "adapters.safetensors").stat().st_size > 0

    # The adapter loads back onto the dev model the way mlx_lm.server loads one.
    config = {"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": lora}
    (adapter_dir / "adapter_config.json").write_text(json.dumps(config))
    adapted, tokenizer = mlx_lm.load(str(dev_model_dir), adapter_path=str(adapter_dir))
    assert mlx_lm.generate(adapted, tokenizer, prompt="def", max_tokens=4)
