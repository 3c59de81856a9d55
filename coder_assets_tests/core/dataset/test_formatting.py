"""Formatting: ChatML pairs and raw FIM as mlx-lm `text` records, kept within the sequence
length, written as deterministic atomic JSONL that mlx-lm's own loader accepts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from coder_assets.core.dataset.formatting import (
    FormatConfig,
    FormattingError,
    Record,
    count_tokens,
    dataset_version,
    fit_records,
    render_pair,
    validate_jsonl,
    write_jsonl,
)
from coder_assets.core.training.dev_model import build_dev_model

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "def total(items):\n    result = 0\n    for item in items:\n        result += item\n"
    "    return result\n",
    'package main\n\nfunc main() {\n\tprintln("hello")\n}\n',
    "Write a Python function that adds two numbers.\n",
    "Ünïcödé, 日本語 and emoji 🤖 survive the byte-level round trip.\n",
] * 4

CONFIG = FormatConfig(max_seq_length=160, system_prompt="Be brief.")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from mlx_lm.utils import load_tokenizer

    model_dir = build_dev_model(tmp_path_factory.mktemp("models") / "dev-model", CORPUS)
    return load_tokenizer(model_dir)


def _long_output(lines: int) -> str:
    return "".join(f"    value_{i} = compute(value_{i - 1}, {i})\n" for i in range(1, lines + 1))


def _render(tokenizer, instruction: str, input: str, config: FormatConfig = CONFIG):
    return lambda output: render_pair(tokenizer, instruction, input, output, config)


def test_render_pair_is_chatml_with_system_user_assistant(tokenizer) -> None:
    text = render_pair(
        tokenizer, "Add two numbers.", "", "def add(a, b):\n    return a + b", CONFIG
    )
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nAdd two numbers.<|im_end|>\n"
        "<|im_start|>assistant\ndef add(a, b):\n    return a + b<|im_end|>\n"
    )


def test_render_pair_fences_the_input_longer_than_any_fence_inside(tokenizer) -> None:
    text = render_pair(tokenizer, "Explain.", "x = 1", "It sets x.", CONFIG)
    assert "<|im_start|>user\nExplain.\n\n```\nx = 1\n```<|im_end|>\n" in text
    text = render_pair(tokenizer, "Explain.", "```py\nx\n```\n", "A block.", CONFIG)
    assert "<|im_start|>user\nExplain.\n\n````\n```py\nx\n```\n````<|im_end|>" in text


def test_count_tokens_adds_the_eos_mlx_lm_appends(tokenizer) -> None:
    text = "def add(a, b):\n"
    assert count_tokens(tokenizer, text) == len(tokenizer.encode(text)) + 1
    # Text that already ends in EOS gets none appended by mlx-lm.
    ending = "x<|im_end|>"
    assert count_tokens(tokenizer, ending) == len(tokenizer.encode(ending))


def test_fim_sample_within_budget_is_kept_raw(tokenizer) -> None:
    fim = "<|fim_prefix|>def add(a, b):\n<|fim_suffix|>\n<|fim_middle|>    return a + b"
    records, reason = fit_records("f1", "fim", fim, tokenizer, CONFIG)
    assert reason is None
    assert records == [Record("f1", fim, count_tokens(tokenizer, fim))]
    assert "<|im_start|>" not in records[0].text


def test_pair_within_budget_is_one_record_with_its_id(tokenizer) -> None:
    render = _render(tokenizer, "Add two numbers.", "")
    records, reason = fit_records("p1", "python_function", "return a + b\n", tokenizer, CONFIG,
                                  render=render)  # fmt: skip
    assert reason is None
    assert [r.sample_id for r in records] == ["p1"]
    assert records[0].text == render("return a + b\n")


def test_a_pair_over_the_budget_is_dropped_never_split(tokenizer) -> None:
    output = _long_output(40)
    render = _render(tokenizer, "Write the pipeline.", "def compute(a, b): ...")
    assert count_tokens(tokenizer, render(output)) > CONFIG.max_seq_length
    records, reason = fit_records("p2", "python_module", output, tokenizer, CONFIG, render=render)
    assert (records, reason) == ([], "over_length")


def _fim_parts(text: str) -> tuple[str, str, str]:
    body = text[text.rindex("<|fim_prefix|>") + len("<|fim_prefix|>") :]
    prefix, rest = body.split("<|fim_suffix|>")
    suffix, middle = rest.split("<|fim_middle|>")
    return prefix, middle, suffix


def test_a_long_fim_sample_becomes_a_window_of_whole_lines_around_its_middle(tokenizer) -> None:
    prefix, suffix = _long_output(40), _long_output(30).replace("value", "later")
    middle = "    checkpoint = save(value_40)\n"
    fim = f"<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>{middle}"
    assert count_tokens(tokenizer, fim) > CONFIG.max_seq_length

    (record,), reason = fit_records("f2", "fim", fim, tokenizer, CONFIG)

    assert reason is None and record.sample_id == "f2"
    assert record.tokens == count_tokens(tokenizer, record.text) <= CONFIG.max_seq_length
    kept_prefix, kept_middle, kept_suffix = _fim_parts(record.text)
    assert kept_middle == middle
    assert prefix.endswith(kept_prefix) and suffix.startswith(kept_suffix)
    assert kept_prefix.startswith("    value_") and kept_suffix.endswith("\n")  # whole lines
    assert kept_prefix and kept_suffix
    # The window is as wide as fits: one more line on each side would not.
    lines_before = kept_prefix.count("\n")
    wider = prefix.split("\n")
    one_more = "\n".join(wider[len(wider) - lines_before - 2 :])
    more = suffix.split("\n")[: kept_suffix.count("\n") + 1]
    bigger = f"<|fim_prefix|>{one_more}<|fim_suffix|>{chr(10).join(more)}\n<|fim_middle|>{middle}"
    assert count_tokens(tokenizer, bigger) > CONFIG.max_seq_length


def test_repository_context_is_cut_to_whole_files_within_half_the_budget(tokenizer) -> None:
    context = "".join(f"<|file_sep|>lib/mod_{n}.py\n{_long_output(12)}\n" for n in range(4))
    fim = (
        f"<|repo_name|>homelab/app\n{context}<|file_sep|>app.py\n"
        f"<|fim_prefix|>{_long_output(20)}<|fim_suffix|>\n<|fim_middle|>    return value_20\n"
    )
    (record,), reason = fit_records("f3", "fim", fim, tokenizer, FormatConfig(max_seq_length=400))
    assert reason is None and record.tokens <= 400
    header = record.text[: record.text.rindex("<|fim_prefix|>")]
    assert header.startswith("<|repo_name|>homelab/app\n") and header.endswith("app.py\n")
    assert count_tokens(tokenizer, header) <= 200
    assert header.count("<|file_sep|>lib/") < 4  # whole files dropped from the end


def test_a_fim_middle_that_does_not_fit_alone_is_dropped(tokenizer) -> None:
    fim = f"<|fim_prefix|>x = 1\n<|fim_suffix|>\n<|fim_middle|>{_long_output(40)}"
    records, reason = fit_records("f4", "fim", fim, tokenizer, CONFIG)
    assert (records, reason) == ([], "over_length_fim")


def test_format_config_rejects_unusable_settings() -> None:
    with pytest.raises(FormattingError, match="max_seq_length"):
        FormatConfig(max_seq_length=0)


RECORDS = [
    Record("a", "<|im_start|>user\nhi<|im_end|>\n", 5),
    Record("b", '日本語 🤖 "quoted" \\ tab\t cr\r ls\u2028 nel\x85 end', 9),
    Record("c", "<|fim_prefix|>a<|fim_suffix|>c<|fim_middle|>b", 4),
]


def test_write_jsonl_bytes_are_deterministic(tmp_path: Path) -> None:
    sha1, n1 = write_jsonl(tmp_path / "one.jsonl", RECORDS)
    sha2, n2 = write_jsonl(tmp_path / "two.jsonl", iter(RECORDS))
    data = (tmp_path / "one.jsonl").read_bytes()
    assert data == (tmp_path / "two.jsonl").read_bytes()
    assert (sha1, n1) == (sha2, 3)
    assert sha1 == hashlib.sha256(data).hexdigest()
    assert data.count(b"\n") == 3 and data.endswith(b"\n") and b"\r\n" not in data
    assert "日本語".encode() in data  # ensure_ascii=False
    assert [json.loads(line) for line in data.decode().split("\n")[:-1]][0] == {
        "text": RECORDS[0].text
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.jsonl", "two.jsonl"]


def test_write_jsonl_failure_mid_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    write_jsonl(path, RECORDS)
    old = path.read_bytes()

    def broken():
        yield RECORDS[0]
        raise RuntimeError("extractor crashed")

    with pytest.raises(RuntimeError, match="extractor crashed"):
        write_jsonl(path, broken())
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]


def test_dataset_version_depends_on_names_and_hashes_not_order() -> None:
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    version = dataset_version({"train": a, "valid": b, "test": c})
    assert version == dataset_version({"test": c, "valid": b, "train": a})
    assert version != dataset_version({"train": b, "valid": a, "test": c})
    assert len(version) == 64
    with pytest.raises(FormattingError, match="sha256"):
        dataset_version({"train": "train.jsonl"})


def test_validate_jsonl_accepts_our_files(tmp_path: Path, tokenizer) -> None:
    path = tmp_path / "train.jsonl"
    write_jsonl(path, RECORDS)
    assert validate_jsonl(path) == []
    assert validate_jsonl(path, max_tokens=10_000, tokenizer=tokenizer) == []


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ([{"text": "a"}, {"prompt": "p", "completion": "c"}], ":2: keys ['completion', 'prompt']"),
        ([{"prompt": "p", "completion": "c"}], ":1: keys ['completion', 'prompt']"),
        ([{"text": "a"}, {"text": ""}], ":2: 'text' is empty"),
        ([{"text": "a"}, {"text": 3}], ":2: 'text' is empty or not a string"),
        ([{"text": "a"}, '{"text": "b"'], ":2: invalid JSON"),
        ([{"text": "a"}, ""], ":2: invalid JSON"),
        ([["text"]], ":1: a JSON list, not an object"),
        ([], "no records"),
    ],
)
def test_validate_jsonl_reports_each_problem(tmp_path: Path, lines: list, problem: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), "utf-8"
    )
    problems = validate_jsonl(path)
    assert len(problems) == 1 and problem in problems[0], problems


def test_validate_jsonl_catches_an_over_length_line(tmp_path: Path, tokenizer) -> None:
    path = tmp_path / "train.jsonl"
    long_text = _long_output(40)
    write_jsonl(path, [Record("a", "short", 2), Record("b", long_text, 0)])
    problems = validate_jsonl(path, max_tokens=96, tokenizer=tokenizer)
    assert len(problems) == 1 and ":2:" in problems[0] and "over max_tokens=96" in problems[0]
    with pytest.raises(FormattingError):
        validate_jsonl(path, max_tokens=96)


def test_mlx_lm_loader_reads_our_files_as_text_datasets(tmp_path: Path, tokenizer) -> None:
    from mlx_lm.tuner.datasets import TextDataset, load_local_dataset

    pair_records, _ = fit_records("p", "python_module", _long_output(40), tokenizer, CONFIG,
                                  render=_render(tokenizer, "Write it.", ""))  # fmt: skip
    splits = {"train": pair_records + RECORDS, "valid": RECORDS[:2], "test": RECORDS[2:]}
    for name, records in splits.items():
        write_jsonl(tmp_path / f"{name}.jsonl", records)
    args = SimpleNamespace(mask_prompt=False)
    loaded = load_local_dataset(tmp_path, tokenizer, args)
    for dataset, (name, records) in zip(loaded, splits.items(), strict=True):
        assert isinstance(dataset, TextDataset), name
        assert len(dataset) == len(records)
        for i, record in enumerate(records):
            assert dataset[i] == {"text": record.text}
        # The ids mlx-lm trains on are as long as we counted.
        for i, record in enumerate(pair_records if name == "train" else []):
            ids, offset = dataset.process(dataset[i])
            assert (len(ids), offset) == (record.tokens, 0)
            assert len(ids) <= CONFIG.max_seq_length
