"""Greedy generation and test loss with the dev model, base and LoRA adapter, in process and
through a real `mlx_lm.server` (coder_assets.core.evaluation.generation)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from coder_assets.core.dataset.formatting import FormatConfig, render_pair
from coder_assets.core.evaluation.generation import (
    CHAT_STOP,
    FIM_STOP,
    ChatTask,
    FimTask,
    GenerationError,
    InProcessGenerator,
    ServerGenerator,
    ServerRequestError,
    TaskFormatError,
    chat_tasks_from_records,
    cut_at_stop,
    fim_tasks_from_records,
    parse_fim_record,
)
from coder_assets.core.samples.fim import (
    ENDOFTEXT,
    FILE_SEP,
    FIM_MIDDLE,
    FIM_PREFIX,
    IM_END,
    format_fim,
    format_repo_fim,
)
from coder_assets.core.training.dev_model import build_dev_model
from coder_assets.core.training.lora import LoraSettings, train_lora
from coder_assets_tests.conftest import free_port

NAMES = ["add", "scale", "clamp", "merge", "parse", "render", "count", "split", "join", "load"]
MAX_TOKENS = 24
SERVER_START_SECONDS = 90

TINY = LoraSettings(
    rank=4,
    num_layers=2,
    iters=4,
    save_every=2,
    steps_per_report=2,
    steps_per_eval=2,
    val_batches=1,
    max_seq_length=256,
    grad_checkpoint=False,
    learning_rate=1e-2,
)


def _code(i: int) -> str:
    name = NAMES[i % len(NAMES)]
    return (
        f"def {name}_{i}(values, limit={i}):\n"
        f"    total = 0\n"
        f"    for value in values[:limit]:\n"
        f"        total += value * {i % 7 + 1}\n"
        f"    return total\n"
    )


def _fim(i: int) -> str:
    """A FIM record whose middle is the loop of `_code(i)`."""
    code = _code(i)
    start, end = code.index("    total = 0"), code.index("    return")
    return format_fim(code[:start], code[end:], code[start:end])


def _write_records(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), "utf-8")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = [_code(i) for i in range(20)] * 20
    return build_dev_model(tmp_path_factory.mktemp("models") / "dev-model", corpus)


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    data = tmp_path_factory.mktemp("data")
    _write_records(data / "train.jsonl", [_fim(i) for i in range(16)])
    _write_records(data / "valid.jsonl", [_fim(i) for i in range(100, 104)])
    adapter = tmp_path_factory.mktemp("adapters") / "v1"
    train_lora(model_dir, data, adapter, TINY)
    return adapter


@pytest.fixture(scope="module")
def base(model_dir: Path) -> InProcessGenerator:
    return InProcessGenerator(model_dir)


@pytest.fixture(scope="module")
def tuned(model_dir: Path, adapter_dir: Path) -> InProcessGenerator:
    return InProcessGenerator(model_dir, adapter_dir)


@pytest.fixture(scope="module")
def tasks() -> list[FimTask]:
    return fim_tasks_from_records([(f"t{i}", _fim(i)) for i in range(200, 206)])


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path, adapter_dir: Path
) -> Iterator[str]:
    """A real `mlx_lm.server` with the dev model and the adapter, on a free loopback port."""
    state = tmp_path_factory.mktemp("server")
    # The server's /v1/models scans this cache; it must exist, and be empty and offline.
    (state / "hf-hub-cache").mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = state / "server.log"
    command = [sys.executable, "-m", "mlx_lm", "server", "--model", str(model_dir)]
    command += ["--adapter-path", str(adapter_dir), "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(state / "hf-hub-cache")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Until a one-token completion succeeds: /health says "ok" before the model is loaded."""
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlx_lm.server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            answer = requests.post(
                f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 1}, timeout=10
            )
            if answer.status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(
        f"mlx_lm.server at {url} not ready in {SERVER_START_SECONDS} s:\n{log_path.read_text()}"
    )


# --- tasks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "language", "context"),
    [
        (format_fim("def f(x):\n", "\n", "    return x\n"), None, ""),
        (format_fim("a = 1\n", "", ""), None, ""),
        (
            format_repo_fim(
                "homelab/tools",
                [("lib/util.go", "package lib\n")],
                "app/main.py",
                "import os\n",
                "\nmain()\n",
                "def main():\n    pass\n",
            ),
            "python",
            f"<|repo_name|>homelab/tools\n{FILE_SEP}lib/util.go\npackage lib\n\n"
            f"{FILE_SEP}app/main.py\n",
        ),
    ],
    ids=["plain", "empty-middle", "repo-context"],
)
def test_fim_record_splits_into_prompt_ending_at_fim_middle_and_the_middle(
    text: str, language: str | None, context: str
) -> None:
    task = parse_fim_record("r1", text)
    assert task.prompt + task.reference == text
    assert task.prompt.endswith(FIM_MIDDLE)
    assert task.context == context
    assert task.prompt.startswith(context + FIM_PREFIX)
    assert task.language == language


def test_fim_tasks_skip_chat_records_keep_order_and_stop_at_limit() -> None:
    chat = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
    records = [("a", _fim(1)), ("c", chat), ("b", _fim(2)), ("d", _fim(3))]
    tasks = fim_tasks_from_records(records, limit=2, languages={"a": "python"})
    assert [(t.task_id, t.language) for t in tasks] == [("a", "python"), ("b", None)]
    assert fim_tasks_from_records(records, limit=0) == []
    assert [t.task_id for t in chat_tasks_from_records(records)] == ["c"]


@pytest.mark.parametrize(
    "text",
    [
        f"{FIM_PREFIX}a = 1\n",
        format_fim("a", "b", "c") + format_fim("d", "e", "f")[len(FIM_PREFIX) :],
        format_fim("a", "b", "c" + FIM_MIDDLE),
    ],
    ids=["no-suffix-or-middle", "two-samples", "second-middle"],
)
def test_malformed_fim_record_raises_naming_the_record(text: str) -> None:
    with pytest.raises(TaskFormatError, match="record bad-7"):
        parse_fim_record("bad-7", text)


def test_chat_record_prompt_ends_at_assistant_turn_and_reference_is_the_answer(
    base: InProcessGenerator,
) -> None:
    config = FormatConfig(system_prompt="Be brief.")
    answer = "def add(a, b):\n    return a + b\n"
    text = render_pair(base.tokenizer, "Write add.", "", answer, config)
    (task,) = chat_tasks_from_records([("p1", text), ("f1", _fim(1))])
    assert task.prompt.endswith("<|im_start|>assistant\n")
    assert task.reference == answer
    assert text == task.prompt + answer + IM_END + "\n"
    assert task.messages == (("system", "Be brief."), ("user", "Write add."))
    with pytest.raises(TaskFormatError, match="record p2"):
        chat_tasks_from_records([("p2", "<|im_start|>user\nhi<|im_end|>\n")])


@pytest.mark.parametrize(
    ("text", "stop", "expected"),
    [
        ("x = 1<|endoftext|>junk", FIM_STOP, ("x = 1", True)),
        ("x = 1<|file_sep|>b.py\n<|fim_prefix|>", FIM_STOP, ("x = 1", True)),
        ("a<|fim_suffix|>b<|im_end|>", FIM_STOP, ("a", True)),
        ("no stop here", FIM_STOP, ("no stop here", False)),
        ("one\n\ntwo", ["\n\n"], ("one", True)),
        ("answer<|im_end|>\n", CHAT_STOP, ("answer", True)),
        ("", FIM_STOP, ("", False)),
    ],
)
def test_cut_at_stop_keeps_text_before_the_earliest_stop_string(
    text: str, stop: list[str], expected: tuple[str, bool]
) -> None:
    assert cut_at_stop(text, stop) == expected


# --- in process --------------------------------------------------------------------------------


def test_in_process_greedy_is_deterministic(
    tuned: InProcessGenerator, model_dir: Path, adapter_dir: Path, tasks: list[FimTask]
) -> None:
    first = [tuned.complete(task.prompt, MAX_TOKENS) for task in tasks[:3]]
    again = [tuned.complete(task.prompt, MAX_TOKENS) for task in tasks[:3]]
    reloaded = InProcessGenerator(model_dir, adapter_dir)
    assert first == again == [reloaded.complete(task.prompt, MAX_TOKENS) for task in tasks[:3]]
    assert all(first)


def test_generation_ends_before_the_first_stop_string(
    tuned: InProcessGenerator, tasks: list[FimTask]
) -> None:
    full = tuned.complete(tasks[0].prompt, MAX_TOKENS, stop=())
    assert len(full) > 8
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert tuned.complete(tasks[0].prompt, MAX_TOKENS, stop=[stop]) == full[: full.index(stop)]


def test_adapter_changes_completions_and_lowers_loss_on_held_out_fim(
    base: InProcessGenerator, tuned: InProcessGenerator, tasks: list[FimTask]
) -> None:
    base_out = [base.complete(task.prompt, MAX_TOKENS) for task in tasks]
    tuned_out = [tuned.complete(task.prompt, MAX_TOKENS) for task in tasks]
    assert base_out != tuned_out
    held_out = [_fim(i) for i in range(300, 306)]
    assert tuned.loss(held_out) < base.loss(held_out)


def test_loss_appends_eos_once_and_perplexity_is_its_exp(tuned: InProcessGenerator) -> None:
    text = _fim(7)
    assert tuned.loss([text]) == pytest.approx(tuned.loss([text + IM_END]), rel=1e-6)
    assert tuned.perplexity([text]) == pytest.approx(math.exp(tuned.loss([text])), rel=1e-6)
    with pytest.raises(GenerationError, match="no text with at least two tokens"):
        tuned.loss([])


def test_loss_equals_mlx_lm_validation_loss_on_unpadded_sequences(
    tuned: InProcessGenerator,
) -> None:
    # mlx-lm's loss mask also counts one padding target after EOS in padded rows (mlx-lm PR
    # #1697); rows cut to max_seq_length have no padding, so there both must agree exactly.
    from mlx_lm.tuner.datasets import CacheDataset, create_dataset
    from mlx_lm.tuner.trainer import evaluate

    texts = [_fim(i) for i in range(400, 404)]
    options = SimpleNamespace(
        text_feature="text",
        mask_prompt=False,
        prompt_feature="prompt",
        completion_feature="completion",
        chat_feature="messages",
    )
    dataset = CacheDataset(create_dataset([{"text": t} for t in texts], tuned.tokenizer, options))
    expected = evaluate(tuned.model, dataset, batch_size=1, num_batches=-1, max_seq_length=16)
    assert tuned.loss(texts, max_seq_length=16) == pytest.approx(expected, rel=1e-5)


def test_in_process_generator_names_a_missing_model_or_adapter(
    model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(GenerationError, match="no config.json"):
        InProcessGenerator(tmp_path / "nothing")
    with pytest.raises(GenerationError, match="no adapter_config.json"):
        InProcessGenerator(model_dir, tmp_path)


# --- through mlx_lm.server ---------------------------------------------------------------------


def test_server_greedy_text_equals_in_process_for_adapter_then_base(
    server: str,
    base: InProcessGenerator,
    tuned: InProcessGenerator,
    model_dir: Path,
    adapter_dir: Path,
    tasks: list[FimTask],
) -> None:
    # Adapter first: it is what the server was started with, so no reload until the base.
    expected_tuned = [tuned.complete(task.prompt, MAX_TOKENS) for task in tasks]
    expected_base = [base.complete(task.prompt, MAX_TOKENS) for task in tasks]
    with ServerGenerator(server, str(model_dir), str(adapter_dir)) as remote:
        assert [remote.complete(task.prompt, MAX_TOKENS) for task in tasks] == expected_tuned
    with ServerGenerator(server, "default_model") as remote:
        assert remote.complete(tasks[0].prompt, MAX_TOKENS) == expected_tuned[0]
    with ServerGenerator(server, str(model_dir)) as remote:
        assert [remote.complete(task.prompt, MAX_TOKENS) for task in tasks] == expected_base
    assert expected_base != expected_tuned


def test_server_cuts_plain_text_stop_strings_like_in_process(
    server: str, tuned: InProcessGenerator, model_dir: Path, adapter_dir: Path, tasks: list[FimTask]
) -> None:
    # mlx_lm.server itself would delete such a string from the text and generate on.
    full = tuned.complete(tasks[1].prompt, MAX_TOKENS, stop=())
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    with ServerGenerator(server, str(model_dir), str(adapter_dir)) as remote:
        for stops in ([stop], [stop, ENDOFTEXT], ()):
            expected = tuned.complete(tasks[1].prompt, MAX_TOKENS, stop=stops)
            assert remote.complete(tasks[1].prompt, MAX_TOKENS, stop=stops) == expected


def test_server_chat_answers_like_in_process_on_the_rendered_prompt(
    server: str, tuned: InProcessGenerator, model_dir: Path, adapter_dir: Path
) -> None:
    config = FormatConfig(system_prompt="Be brief.")
    text = render_pair(tuned.tokenizer, "Write add.", "", "def add(a, b): ...\n", config)
    task: ChatTask = chat_tasks_from_records([("p1", text)])[0]
    expected = tuned.complete(task.prompt, MAX_TOKENS, stop=CHAT_STOP)
    assert expected
    with ServerGenerator(server, str(model_dir), str(adapter_dir)) as remote:
        assert remote.chat(task.message_dicts(), MAX_TOKENS) == expected


def test_server_errors_name_the_url_and_status(
    server: str, model_dir: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no-adapter"
    with ServerGenerator(server, str(model_dir), str(missing), timeout=60) as remote:
        with pytest.raises(ServerRequestError, match="answered 404") as caught:
            remote.complete("x", 1)
    assert caught.value.status == 404
    assert caught.value.url == f"{server}/v1/completions"
    closed = f"http://127.0.0.1:{free_port()}"
    with ServerGenerator(closed, str(model_dir), timeout=5) as remote:
        with pytest.raises(ServerRequestError, match="is mlx_lm.server running") as caught:
            remote.complete("x", 1)
    assert caught.value.status is None
    assert closed in str(caught.value)


def test_server_generator_refuses_an_adapter_for_default_model() -> None:
    with pytest.raises(GenerationError, match="ignores the adapter"):
        ServerGenerator("http://127.0.0.1:1", "default_model", "/adapters/v1")


@pytest.mark.parametrize(("max_tokens", "stop"), [(0, FIM_STOP), (8, "<|im_end|>"), (8, [""])])
def test_requests_with_bad_max_tokens_or_stop_are_refused(max_tokens: int, stop: object) -> None:
    remote = ServerGenerator("http://127.0.0.1:1", "m")
    with pytest.raises(GenerationError):
        remote.complete("x", max_tokens, stop)  # type: ignore[arg-type]
