"""The content-addressed evaluation cache (coder_assets.core.evaluation.cache) and how
`evaluate_model` uses it, with a scripted generator (the dev-model tests are in
coder_assets_tests/core/evaluation/test_cache_dev_model.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coder_assets.core.evaluation.cache import (
    CacheCounts,
    EvalCache,
    EvalCacheError,
    ModelIdentity,
    adapter_content_digest,
    generation_settings,
)
from coder_assets.core.evaluation.evaluate import EvalModel, EvalSettings, evaluate_model
from coder_assets.core.samples.fim import format_fim

BASE = ModelIdentity("b" * 64)
ADAPTER = ModelIdentity("b" * 64, "a" * 64)
SETTINGS = generation_settings(128, ["<|endoftext|>"])


def _adapter(path: Path, weights: bytes) -> Path:
    path.mkdir()
    (path / "adapters.safetensors").write_bytes(weights)
    (path / "adapter_config.json").write_text('{"rank": 8}')
    return path


def test_a_stored_result_is_found_again_under_the_same_key(tmp_path: Path) -> None:
    cache = EvalCache(tmp_path)
    counts = CacheCounts()
    assert cache.get(ADAPTER, "fim", "def f(", SETTINGS, counts) is None
    cache.put(ADAPTER, "fim", "def f(", SETTINGS, {"completion": "x):"})
    assert cache.get(ADAPTER, "fim", "def f(", SETTINGS, counts) == {"completion": "x):"}
    assert (counts.hits, counts.misses, counts.corrupt) == (1, 1, 0)
    # Written through a temp name: nothing but the entry is left in its folder.
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].suffix == ".json" and not files[0].name.startswith(".")


@pytest.mark.parametrize(
    ("model", "kind", "prompt", "settings"),
    [
        (BASE, "fim", "def f(", SETTINGS),  # another adapter digest (none)
        (ModelIdentity("b" * 64, "c" * 64), "fim", "def f(", SETTINGS),  # another digest
        (ModelIdentity("d" * 64, "a" * 64), "fim", "def f(", SETTINGS),  # another base version
        (ADAPTER, "chat", "def f(", SETTINGS),  # another task kind
        (ADAPTER, "fim", "def f( ", SETTINGS),  # another prompt
        (ADAPTER, "fim", "def f(", generation_settings(64, ["<|endoftext|>"])),
        (ADAPTER, "fim", "def f(", generation_settings(128, ["<|im_end|>"])),
    ],
)
def test_a_result_is_never_found_under_any_other_key_part(
    tmp_path: Path, model: ModelIdentity, kind: str, prompt: str, settings: dict
) -> None:
    cache = EvalCache(tmp_path)
    cache.put(ADAPTER, "fim", "def f(", SETTINGS, {"completion": "x):"})
    assert cache.get(model, kind, prompt, settings) is None


def test_the_generator_code_version_is_part_of_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = EvalCache(tmp_path)
    cache.put(ADAPTER, "fim", "def f(", SETTINGS, {"completion": "x):"})
    monkeypatch.setattr("coder_assets.core.evaluation.cache.GENERATOR_CODE_VERSION", "next")
    assert cache.get(ADAPTER, "fim", "def f(", SETTINGS) is None


def test_an_entry_of_another_digest_at_this_address_never_hits(tmp_path: Path) -> None:
    """A file copied (or corrupted) into another key's place names its own key: not trusted."""
    cache = EvalCache(tmp_path)
    cache.put(ADAPTER, "fim", "def f(", SETTINGS, {"completion": "from adapter a"})
    other = ModelIdentity("b" * 64, "c" * 64)
    source = cache.path(cache.key(ADAPTER, "fim", "def f(", SETTINGS))
    target = cache.path(cache.key(other, "fim", "def f(", SETTINGS))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    counts = CacheCounts()
    assert cache.get(other, "fim", "def f(", SETTINGS, counts) is None
    assert (counts.hits, counts.misses, counts.corrupt) == (0, 1, 1)


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b"\xff\xfe", b"[]", b'{"key": null, "result": {}}'],
)
def test_a_corrupt_entry_is_a_miss_and_is_overwritten(tmp_path: Path, content: bytes) -> None:
    cache = EvalCache(tmp_path)
    path = cache.path(cache.key(ADAPTER, "fim", "def f(", SETTINGS))
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    counts = CacheCounts()
    assert cache.get(ADAPTER, "fim", "def f(", SETTINGS, counts) is None
    assert counts.corrupt == 1
    cache.put(ADAPTER, "fim", "def f(", SETTINGS, {"completion": "again"})
    assert cache.get(ADAPTER, "fim", "def f(", SETTINGS) == {"completion": "again"}


def test_adapter_digest_follows_every_byte_of_the_adapter_files(tmp_path: Path) -> None:
    one = adapter_content_digest(_adapter(tmp_path / "one", b"weights"))
    copy = adapter_content_digest(_adapter(tmp_path / "copy", b"weights"))
    other = adapter_content_digest(_adapter(tmp_path / "other", b"weightz"))
    assert one == copy != other
    (tmp_path / "other" / "adapter_config.json").unlink()
    with pytest.raises(EvalCacheError, match="lacks adapter_config.json"):
        adapter_content_digest(tmp_path / "other")


def test_unknown_task_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EvalCacheError, match="task kind 'summaries'"):
        EvalCache(tmp_path).get(BASE, "summaries", "x", SETTINGS)


class CountingGenerator:
    """Answers every prompt with the same text; counts the prompts it was asked and the losses
    it computed. `tokenizer` renders chat messages as their contents."""

    class Tokenizer:
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "".join(message["content"] for message in messages)

    tokenizer = Tokenizer()

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.asked: list[str] = []
        self.generated_tokens = 0
        self.loss_texts: list[str] = []

    def complete(self, prompt, max_tokens, stop):
        self.asked.append(prompt)
        self.generated_tokens += 3
        return self.answer

    def text_losses(self, texts, max_seq_length):
        self.loss_texts.extend(texts)
        return [(float(len(text)), len(text)) for text in texts]

    def loss(self, texts, max_seq_length):
        parts = self.text_losses(texts, max_seq_length)
        return sum(p[0] for p in parts) / sum(p[1] for p in parts)


def _records(n: int) -> list[tuple[str, str]]:
    return [
        (f"test:{i}", format_fim(f"def f{i}(x):\n", "\n", f"    return x + {i}\n"))
        for i in range(n)
    ]


def _model(label: str, generator: CountingGenerator, cache: EvalCache, identity) -> EvalModel:
    loads = []

    def load():
        loads.append(1)
        return generator

    return EvalModel(label, load, tokenizer=generator.tokenizer, identity=identity, cache=cache)


def test_a_second_evaluation_is_all_hits_and_never_loads_the_model(tmp_path: Path) -> None:
    settings = EvalSettings(humaneval_problems=2, fim_tasks=None, chat_tasks=0, batch_size=4)
    cache = EvalCache(tmp_path / "cache")
    first_gen = CountingGenerator("    return x\n")
    first = evaluate_model(
        "base", _model("base", first_gen, cache, BASE), _records(3), settings, tmp_path / "a"
    )
    assert first["cost"]["loads"] == 1
    assert first["cost"]["cache"]["hits"] == 0
    assert len(first_gen.asked) == 2 + 3  # two problems, three FIM tasks

    again_gen = CountingGenerator("never asked")
    again = evaluate_model(
        "base", _model("base", again_gen, cache, BASE), _records(3), settings, tmp_path / "b"
    )
    assert again_gen.asked == [] and again_gen.loss_texts == []
    assert again["cost"]["loads"] == 0 and again["cost"]["generated_tokens"] == 0
    assert again["cost"]["cache"]["misses"] == 0
    # 2 HumanEval + 3 FIM + 3 loss texts
    assert again["cost"]["cache"]["hits"] == 8
    for name in ("humaneval_outcomes", "fim_edit_similarity", "test_loss", "humaneval_pass_at_1"):
        assert again[name] == first[name]

    # A test split with one new task: only that one is generated (and its loss computed).
    more_gen = CountingGenerator("    return x\n")
    evaluate_model(
        "base", _model("base", more_gen, cache, BASE), _records(4), settings, tmp_path / "c"
    )
    assert more_gen.asked == [_records(4)[3][1].rpartition("<|fim_middle|>")[0] + "<|fim_middle|>"]
    assert more_gen.loss_texts == [_records(4)[3][1]]


def test_another_adapter_digest_generates_everything_again(tmp_path: Path) -> None:
    settings = EvalSettings(humaneval_problems=1, fim_tasks=None, chat_tasks=0)
    cache = EvalCache(tmp_path / "cache")
    evaluate_model(
        "a", _model("a", CountingGenerator("x"), cache, ADAPTER), _records(2), settings, tmp_path
    )
    other = CountingGenerator("y")
    summary = evaluate_model(
        "c",
        _model("c", other, cache, ModelIdentity("b" * 64, "c" * 64)),
        _records(2),
        settings,
        tmp_path,
    )
    assert len(other.asked) == 3
    assert summary["cost"]["cache"]["hits"] == 0


def test_a_cached_humaneval_verdict_is_not_run_in_the_sandbox_again(tmp_path: Path) -> None:
    settings = EvalSettings(humaneval_problems=1, fim_tasks=0, chat_tasks=0)
    cache = EvalCache(tmp_path / "cache")
    generator = CountingGenerator("def has_close_elements(numbers, threshold):\n    return 1\n")
    evaluate_model("m", _model("m", generator, cache, BASE), [], settings, tmp_path / "a")
    [entry] = [p for p in (tmp_path / "cache").rglob("*.json")]
    data = json.loads(entry.read_text())
    assert data["key"]["kind"] == "humaneval"
    assert data["result"]["verdict"]["passed"] is False
    # Plant a verdict that the sandbox would never give: a second evaluation reports it as it is.
    data["result"]["verdict"]["passed"] = True
    entry.write_text(json.dumps(data))
    again = evaluate_model(
        "m", _model("m", CountingGenerator("?"), cache, BASE), [], settings, tmp_path / "b"
    )
    assert again["humaneval_pass_at_1"] == 1.0
