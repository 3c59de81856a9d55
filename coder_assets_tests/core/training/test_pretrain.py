"""The trained dev model's builder on tiny settings: the numpy-backed forward pass is mlx-lm's
Qwen2, examples are deterministic PSM FIM or plain chunks that fit, the same seed gives the same
weights, and the cache builds a key once."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import pytest

from coder_assets.core.training import pretrain
from coder_assets.core.training.dev_model import (
    EOS_TOKEN,
    PAD_TOKEN,
    QWEN_SPECIAL_TOKENS,
    DevModelConfig,
    _train_tokenizer,
)
from coder_assets.core.training.pretrain import (
    PretrainConfig,
    SourceFile,
    build_info,
    cache_key,
    cached_dev_model,
    pretrain_examples,
    stdlib_sources,
)

SOURCES = [
    SourceFile(
        f"pkg/mod_{i}.py",
        "".join(
            f"def function_{i}_{j}(values):\n    total = 0\n    for value in values:\n"
            f"        total += value * {j}\n    return total\n\n\n"
            for j in range(6)
        ),
    )
    for i in range(8)
]
TINY = PretrainConfig(
    model=DevModelConfig(
        vocab_size=320,
        hidden_size=16,
        num_hidden_layers=1,
        intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=1,
    ),
    steps=3,
    batch_size=2,
    seq_length=32,
    warmup_steps=1,
)


def test_forward_pass_equals_mlx_lm_qwen2_on_the_same_weights() -> None:
    from mlx_lm.models.qwen2 import Model, ModelArgs

    args = ModelArgs.from_dict(
        {
            "model_type": "qwen2",
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "intermediate_size": 48,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 100,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "tie_word_embeddings": True,
        }
    )
    mx.random.seed(3)
    model = Model(args)
    tokens = mx.random.randint(0, 100, (2, 12))
    ours = pretrain._forward(model.trainable_parameters(), tokens, args)
    assert ours.shape == (2, 12, 100)
    assert mx.abs(ours - model(tokens)).max().item() < 1e-4


def test_stdlib_sources_leave_out_tests_and_other_packages(tmp_path: Path) -> None:
    for rel in (
        "json/encoder.py",
        "os.py",
        "test/test_os.py",
        "site-packages/pkg/mod.py",
        "unittest/test/test_case.py",
        "idlelib/editor.py",
        "empty.py",
    ):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("" if rel == "empty.py" else "x = 1\n")
    assert [s.path for s in stdlib_sources(tmp_path)] == ["json/encoder.py", "os.py"]


def test_the_running_interpreters_stdlib_is_a_corpus_of_megabytes() -> None:
    sources = stdlib_sources()
    assert sum(len(s.text) for s in sources) > 2_000_000
    assert not any(s.path.startswith(("test/", "site-packages/")) for s in sources)


def test_examples_are_deterministic_fim_or_plain_chunks_ending_in_eos() -> None:
    tokenizer = _train_tokenizer([s.text for s in SOURCES], 320)
    token_id = {token: tokenizer.token_to_id(token) for token in QWEN_SPECIAL_TOKENS}
    config = replace(TINY, seq_length=48, fim_rate=0.5)
    rows = pretrain_examples(tokenizer, token_id, SOURCES, config, 40)
    again = pretrain_examples(tokenizer, token_id, SOURCES, config, 40)
    assert rows.shape == (40, 49) and (rows == again).all()
    fim = 0
    for row in rows.tolist():
        ids = [i for i in row if i != token_id[PAD_TOKEN]]
        assert ids[-1] == token_id[EOS_TOKEN] and ids.count(token_id[EOS_TOKEN]) == 1
        text = tokenizer.decode(ids[:-1], skip_special_tokens=False)
        if text.startswith("<|fim_prefix|>"):
            fim += 1
            prefix, rest = text[len("<|fim_prefix|>") :].split("<|fim_suffix|>")
            suffix, middle = rest.split("<|fim_middle|>")
            assert middle  # what the model learns to write
        else:
            assert "<|fim_" not in text
    assert 5 < fim < 35
    other = pretrain_examples(tokenizer, token_id, SOURCES, replace(config, seed=1), 40)
    assert not (rows == other).all()


def test_same_seed_builds_identical_weights_and_pretraining_lowers_the_loss(
    tmp_path: Path,
) -> None:
    config = replace(TINY, steps=12, learning_rate=1e-2)
    first = pretrain.build_trained_dev_model(tmp_path / "a", SOURCES, config)
    second = pretrain.build_trained_dev_model(tmp_path / "b", SOURCES, config)
    weights = "model.safetensors"
    assert (first / weights).read_bytes() == (second / weights).read_bytes()
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()
    info = build_info(first)
    assert info is not None and info["final_loss"] < info["first_loss"]
    assert info["steps"] == 12 and info["parameters"] > 0
    assert info["build_cpu_seconds"] >= info["train_cpu_seconds"] > 0

    import mlx_lm

    model, tokenizer = mlx_lm.load(str(first))
    assert tokenizer.encode("<|fim_middle|>") == [tokenizer.convert_tokens_to_ids("<|fim_middle|>")]


def test_cache_builds_a_key_once_and_keys_change_with_seed_and_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = []
    real = pretrain.build_trained_dev_model

    def counting(*args, **kwargs):
        builds.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain, "build_trained_dev_model", counting)
    first = cached_dev_model(tmp_path, TINY, sources=SOURCES)
    again = cached_dev_model(tmp_path, TINY, sources=SOURCES)
    assert first == again == tmp_path / cache_key(SOURCES, TINY)
    assert len(builds) == 1
    assert json.loads((first / "config.json").read_text())["hidden_size"] == 16
    assert build_info(first)["cache_key"] == first.name
    # Nothing half-built is left next to it.
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        first.name
    ]
    assert cache_key(SOURCES, replace(TINY, seed=1)) != first.name
    assert cache_key(SOURCES[:-1], TINY) != first.name


def test_cache_dir_comes_from_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pretrain.CACHE_ENV, str(tmp_path / "cache"))
    assert pretrain.default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv(pretrain.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pretrain.default_cache_dir() == tmp_path / "xdg" / "coder-assets" / "dev-models"
