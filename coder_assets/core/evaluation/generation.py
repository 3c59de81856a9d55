"""Greedy completions and test loss of the base model and of a LoRA adapter, two ways.

Tasks come from our own training records (mlx-lm `text` records, as `core.dataset.formatting` writes
them):

- `fim_tasks_from_records`: `[header]<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>
  {middle}`; the prompt is everything up to and including `<|fim_middle|>` (a repository-context
  header before the last `<|fim_prefix|>` included), the reference is the middle.
- `chat_tasks_from_records`: rendered ChatML; the prompt is everything up to and including the last
  `<|im_start|>assistant\\n`, the reference is that turn's answer.

Generators, both greedy (argmax) and both cut at the first stop string:

- `InProcessGenerator` loads the model once with `mlx_lm.load(model, adapter_path=...)` and runs
  `mlx_lm.generate.stream_generate`; `loss` gives the mean next-token NLL (test loss, perplexity
  = exp(loss)) of full texts as the trainer sees them.
- `ServerGenerator` asks a running `mlx_lm.server` (`/v1/completions`, `/v1/chat/completions`).

How mlx-lm 0.32's server picks model and adapter, per request: the body's `model` (default
"default_model") and `adapters`. "default_model" always means the `--model` AND `--adapter-path`
the server was started with; the body's `adapters` is then ignored, so such a server cannot serve
its base model under that name. Any other `model` is a path (or hub id) that the server loads
itself, with the body's `adapters` (absent: none). The server holds ONE model: a request whose
(model, adapter) differs from the loaded one reloads everything (a full model load).
`ServerGenerator` therefore names the model by the exact string given to `--model` (and the adapter
by the exact string given to `--adapter-path`, or none for the base). Batching by adapter is the
caller's job: all base requests, then all adapter requests, never interleaved.

Stop strings. mlx-lm's server stops when the generated token ids end with a stop string's OWN
tokenization, and otherwise deletes every occurrence of the stop string from the text while
generation goes on: `stop=["lue v"]` over "value value value" comes back as "vaaaa...alue". That
is sound for special tokens (`<|im_end|>`, `<|file_sep|>`, ...), which are always one id, and
wrong for ordinary text. `ServerGenerator` therefore sends only the special-token stop strings to
the server and cuts the returned text at the first of all stop strings itself, which is what
`InProcessGenerator` does with the text it generates.

Both ways give the same text for the same prompt (pinned by tests on the dev model, with and
without the adapter, with special and plain stop strings). One corner remains: when generation
stops at EOS or a stop token, the server drops trailing text that could begin a special-token stop
string (a final `<` or `<|`), which `InProcessGenerator` keeps. Both share mlx-lm's streaming BPE
detokenizer, which drops the leading space of the first generated token (" x" comes out as "x").

mlx-lm is imported on first use, not with this module: parsing tasks needs no model.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import requests

from coder_assets.core.errors import CoderAssetsError
from coder_assets.core.languages import language_of
from coder_assets.core.samples.fim import (
    ENDOFTEXT,
    FILE_SEP,
    FIM_MIDDLE,
    FIM_PAD,
    FIM_PREFIX,
    FIM_SUFFIX,
    IM_END,
    IM_START,
    REPO_NAME,
)

# Where a FIM completion ends: EOS of the base (<|endoftext|>) and of the Instruct model and of
# mlx-lm's text records (<|im_end|>), and any token that starts another FIM or repository part.
FIM_STOP = (
    ENDOFTEXT,
    FIM_PAD,
    FILE_SEP,
    REPO_NAME,
    IM_END,
    FIM_PREFIX,
    FIM_SUFFIX,
    FIM_MIDDLE,
)
CHAT_STOP = (IM_END, ENDOFTEXT, IM_START)
ASSISTANT_START = f"{IM_START}assistant\n"
DEFAULT_MODEL = "default_model"  # mlx_lm.server's name for the model (and adapter) it started with
DEFAULT_MAX_SEQ_LENGTH = 2048  # the trainer's default; longer texts are cut as training cuts them
# The version of the code that turns a prompt into a completion (and a text into its loss): part
# of every evaluation cache key (core.evaluation.cache). Bump it when a change here could change an
# output, so that no cached result of the old code is reused.
GENERATOR_CODE_VERSION = "1"
DEFAULT_BATCH_SIZE = 8

_FIM_TOKENS = (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)
_SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>")
_CHAT_TURN = re.compile(
    re.escape(IM_START) + r"(\w+)\n(.*?)" + re.escape(IM_END) + r"\n?", re.DOTALL
)


class GenerationError(CoderAssetsError):
    """A model or adapter that cannot be loaded, or a generation request that cannot be served."""


class TaskFormatError(GenerationError, ValueError):
    """A record that looks like a FIM or chat record but does not parse as one."""


class ServerRequestError(GenerationError):
    """mlx_lm.server answered with an error, an unexpected body, or not at all."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


@dataclass(frozen=True)
class FimTask:
    """One fill-in-the-middle task. `context` is the repository header before `<|fim_prefix|>`
    ("" without one); `prompt + reference` is the record text."""

    task_id: str
    prefix: str
    suffix: str
    reference: str
    language: str | None
    context: str = ""

    @property
    def prompt(self) -> str:
        """What the model completes: context, prefix and suffix, ending in `<|fim_middle|>`."""
        return f"{self.context}{FIM_PREFIX}{self.prefix}{FIM_SUFFIX}{self.suffix}{FIM_MIDDLE}"


@dataclass(frozen=True)
class ChatTask:
    """One instruction task. `prompt` ends in `<|im_start|>assistant\\n`; `messages` are its turns
    before the answer (role, content), for `ServerGenerator.chat`; `prompt + reference` is the
    record text up to the answer's `<|im_end|>`."""

    task_id: str
    prompt: str
    reference: str
    messages: tuple[tuple[str, str], ...]

    def message_dicts(self) -> list[dict[str, str]]:
        """`messages` as OpenAI chat messages."""
        return [{"role": role, "content": content} for role, content in self.messages]


def parse_fim_record(task_id: str, text: str, language: str | None = None) -> FimTask:
    """The FIM task in one record text. `language` None: taken from the target path in the
    repository header (`<|file_sep|>{path}` just before the prefix), when there is one."""
    context, found, rest = text.rpartition(FIM_PREFIX)
    if not found:
        raise TaskFormatError(f"record {task_id}: no {FIM_PREFIX} in the text: not a FIM record")
    prefix, found_suffix, rest = rest.partition(FIM_SUFFIX)
    suffix, found_middle, middle = rest.partition(FIM_MIDDLE)
    if not found_suffix or not found_middle:
        raise TaskFormatError(
            f"record {task_id}: {FIM_PREFIX} is not followed by {FIM_SUFFIX} and {FIM_MIDDLE}: "
            "FIM records must be prefix-suffix-middle (core.samples.fim.format_fim)"
        )
    for part in (prefix, suffix, middle):
        stray = next((token for token in _FIM_TOKENS if token in part), None)
        if stray is not None:
            raise TaskFormatError(
                f"record {task_id}: a second {stray} after {FIM_PREFIX}: the record holds more "
                "than one FIM sample, or special tokens in the code were not escaped"
            )
    if language is None and FILE_SEP in context:
        path = context.rpartition(FILE_SEP)[2].partition("\n")[0]
        language = language_of(path)
    return FimTask(task_id, prefix, suffix, middle, language, context)


def fit_fim_task(task: FimTask, count_tokens: Callable[[str], int], budget: int) -> FimTask:
    """`task` with a prompt of at most `budget` tokens (as `count_tokens` counts them): the
    repository context goes first, then the prefix's lines farthest from the middle, then the
    suffix's farthest lines; the suffix keeps up to a quarter of the room, or whatever the whole
    prefix leaves. A line that alone does not fit loses its characters farthest from the middle.
    The task itself (prompt within budget) when nothing has to go.

    A model answers a prompt longer than the context it was trained on with noise; an editor
    sends its model a window around the cursor for the same reason. Raises `GenerationError`
    when not even the FIM tokens fit."""
    if count_tokens(task.prompt) <= budget:
        return task
    bare = replace(task, prefix="", suffix="", context="")
    fixed = count_tokens(bare.prompt)
    if fixed > budget:
        raise GenerationError(
            f"FIM task {task.task_id}: a budget of {budget} tokens is smaller than the FIM "
            f"tokens alone ({fixed}): raise the model's context or lower fim_max_tokens"
        )
    context = task.context if count_tokens(task.context) + fixed <= budget // 2 else ""
    room = budget - count_tokens(replace(bare, context=context).prompt)
    suffix_room = max(room // 4, room - count_tokens(task.prefix))
    suffix = _lines_within(task.suffix, count_tokens, suffix_room, from_end=False)
    prefix = _lines_within(task.prefix, count_tokens, room - count_tokens(suffix), from_end=True)
    fitted = replace(task, prefix=prefix, suffix=suffix, context=context)
    # Token counts of the parts may differ from the whole's by a merge at a border: drop one
    # more far line (prefix first) until the whole fits.
    while count_tokens(fitted.prompt) > budget and (fitted.prefix or fitted.suffix):
        if fitted.prefix:
            cut = fitted.prefix.find("\n") + 1 or len(fitted.prefix)
            fitted = replace(fitted, prefix=fitted.prefix[cut:])
        else:
            fitted = replace(
                fitted, suffix=fitted.suffix[: fitted.suffix.rstrip("\n").rfind("\n") + 1]
            )
    return fitted


def _lines_within(
    text: str, count_tokens: Callable[[str], int], budget: int, *, from_end: bool
) -> str:
    """The whole lines of `text` nearest the middle (its end when `from_end`, else its start)
    that fit in `budget` tokens; the nearest line's nearest characters when it alone does not."""
    lines = text.splitlines(keepends=True)
    if from_end:
        lines.reverse()
    kept: list[str] = []
    used = 0
    for line in lines:
        tokens = count_tokens(line)
        if used + tokens > budget:
            if not kept:  # the nearest line alone is too long: keep what fits of its near end
                low, high = 0, len(line)
                while low < high:
                    middle = (low + high + 1) // 2
                    piece = line[len(line) - middle :] if from_end else line[:middle]
                    if count_tokens(piece) <= budget:
                        low = middle
                    else:
                        high = middle - 1
                kept.append(line[len(line) - low :] if from_end else line[:low])
            break
        kept.append(line)
        used += tokens
    if from_end:
        kept.reverse()
    return "".join(kept)


def fim_tasks_from_records(
    records: Iterable[tuple[str, str]],
    limit: int | None = None,
    languages: Mapping[str, str | None] | None = None,
) -> list[FimTask]:
    """FIM tasks from (record id, text) pairs, in order, at most `limit` (None: all).

    Records without `<|fim_prefix|>` (chat records) are skipped, so a whole test split can be
    passed. A record's language comes from `languages` (by record id, e.g. from the dataset's
    provenance table) or else from its repository header. Raises `TaskFormatError` for a record
    that has `<|fim_prefix|>` but does not parse.
    """
    _check_limit(limit)
    tasks: list[FimTask] = []
    for task_id, text in records:
        if limit is not None and len(tasks) >= limit:
            break
        if FIM_PREFIX not in text:
            continue
        language = languages.get(task_id) if languages is not None else None
        tasks.append(parse_fim_record(task_id, text, language))
    return tasks


def parse_chat_record(task_id: str, text: str) -> ChatTask:
    """The chat task in one rendered ChatML record: the last assistant turn is the reference."""
    head, found, answer = text.rpartition(ASSISTANT_START)
    if not found:
        raise TaskFormatError(
            f"record {task_id}: no {ASSISTANT_START!r} turn: not a rendered instruction pair"
        )
    prompt = head + ASSISTANT_START
    reference = answer.partition(IM_END)[0]
    messages = tuple((role, content) for role, content in _CHAT_TURN.findall(head))
    if not messages or _CHAT_TURN.sub("", head).strip():
        raise TaskFormatError(
            f"record {task_id}: the turns before the answer are not ChatML "
            f"({IM_START}role\\n...{IM_END}); render pairs with core.dataset.formatting.render_pair"
        )
    return ChatTask(task_id, prompt, reference, messages)


def chat_tasks_from_records(
    records: Iterable[tuple[str, str]], limit: int | None = None
) -> list[ChatTask]:
    """Chat tasks from (record id, text) pairs, in order, at most `limit` (None: all).

    Records without `<|im_start|>` (FIM records) are skipped. Raises `TaskFormatError` for a
    ChatML record without an assistant turn.
    """
    _check_limit(limit)
    tasks: list[ChatTask] = []
    for task_id, text in records:
        if limit is not None and len(tasks) >= limit:
            break
        if IM_START not in text:
            continue
        tasks.append(parse_chat_record(task_id, text))
    return tasks


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest occurrence of any stop string, and whether one occurred."""
    cuts = [at for at in (text.find(s) for s in stop) if at >= 0]
    if not cuts:
        return text, False
    return text[: min(cuts)], True


def load_model_tokenizer(model_dir: Path) -> Any:
    """The tokenizer of the model in `model_dir` exactly as `mlx_lm.load` builds it (EOS ids from
    its config.json), without loading the weights: enough to render prompts."""
    from mlx_lm.utils import load_tokenizer

    model_dir = Path(model_dir)
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise GenerationError(
            f"{model_dir} has no config.json: not an mlx model directory (build the dev model "
            "or point at a converted model)"
        )
    eos = json.loads(config_file.read_text("utf-8")).get("eos_token_id")
    return load_tokenizer(model_dir, eos_token_ids=eos)


class InProcessGenerator:
    """The model in `model_dir`, with the LoRA adapter in `adapter_dir` when given, loaded once
    into this process. `load_seconds` is how long loading took."""

    def __init__(self, model_dir: Path, adapter_dir: Path | None = None) -> None:
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise GenerationError(
                f"{model_dir} has no config.json: not an mlx model directory (build the dev model "
                "or point at a converted model)"
            )
        if adapter_dir is not None:
            adapter_dir = Path(adapter_dir)
            if not (adapter_dir / "adapter_config.json").is_file():
                raise GenerationError(
                    f"{adapter_dir} has no adapter_config.json: not an adapter directory (train "
                    "one with core.training.lora.train_lora, or pass adapter_dir=None for the base)"
                )
        import mlx_lm

        self.model_dir = model_dir
        self.adapter_dir = adapter_dir
        started = time.perf_counter()
        self.model, self.tokenizer = mlx_lm.load(
            str(model_dir), adapter_path=str(adapter_dir) if adapter_dir is not None else None
        )
        self.load_seconds = time.perf_counter() - started
        self.generated_tokens = 0  # decoded tokens (EOS included) of every completion so far

    def complete(self, prompt: str, max_tokens: int, stop: Sequence[str] = FIM_STOP) -> str:
        """The greedy continuation of `prompt`: at most `max_tokens` tokens, ending before EOS or
        the first stop string (which is not part of the result)."""
        from mlx_lm.generate import stream_generate
        from mlx_lm.sample_utils import make_sampler

        _check_request(max_tokens, stop)
        longest = max((len(s) for s in stop), default=0)
        text = ""
        for response in stream_generate(
            self.model,
            self.tokenizer,
            prompt,
            max_tokens=max_tokens,
            sampler=make_sampler(temp=0.0),
        ):
            # One response per decoded token (the EOS token included).
            self.generated_tokens += 1
            # Only the new text and the few characters before it can complete a stop string.
            seen = max(0, len(text) - longest)
            text += response.text
            cut, stopped = cut_at_stop(text[seen:], stop)
            if stopped:
                return text[:seen] + cut
        return text

    def complete_batch(
        self,
        prompts: Sequence[str],
        max_tokens: int,
        stop: Sequence[str] = FIM_STOP,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_done: Callable[[int, str], None] | None = None,
    ) -> list[str]:
        """`complete` for many prompts at once: up to `batch_size` sequences decoded together
        with mlx-lm's `BatchGenerator` (continuous batching: a finished sequence's place goes
        to the next prompt, whose prompt is processed on its own: padded batch prefill of long
        FIM prompts was slower than one prompt at a time on the CPU backend). Greedy, the same
        EOS and stop-string handling and the same streaming detokenizer as `complete`, so the
        texts are the same up to the numerics of batched matrix products (see the README's
        agreement figures). `on_done(index, text)` is called as each prompt finishes.
        `batch_size` 1 is `complete`, one prompt after the other."""
        _check_request(max_tokens, stop)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise GenerationError(f"batch_size={batch_size!r}: must be a whole number ≥ 1")
        texts: list[str | None] = [None] * len(prompts)
        if batch_size == 1:
            for index, prompt in enumerate(prompts):
                texts[index] = self.complete(prompt, max_tokens, stop)
                if on_done is not None:
                    on_done(index, texts[index])
            return [text or "" for text in texts]
        if not prompts:
            return []
        from mlx_lm.generate import BatchGenerator
        from mlx_lm.sample_utils import make_sampler

        encoded = [self._encode(prompt) for prompt in prompts]
        # Similar lengths side by side: less padding in each prefill batch.
        order = sorted(range(len(prompts)), key=lambda index: len(encoded[index]))
        longest = max((len(s) for s in stop), default=0)
        generator = BatchGenerator(
            self.model,
            max_tokens=max_tokens,
            stop_tokens=[[token] for token in sorted(self.tokenizer.eos_token_ids)],
            sampler=make_sampler(temp=0.0),
            completion_batch_size=batch_size,
            prefill_batch_size=1,
        )
        try:
            uids = generator.insert([encoded[index] for index in order], [max_tokens] * len(order))
            index_of = dict(zip(uids, order, strict=True))
            detokenizers = {uid: self.tokenizer.detokenizer for uid in uids}
            partial = dict.fromkeys(uids, "")

            def finish(uid: int, text: str) -> None:
                index = index_of[uid]
                texts[index] = text
                if on_done is not None:
                    on_done(index, text)

            while sum(text is None for text in texts):
                responses = generator.next_generated()
                if not responses:
                    raise GenerationError(
                        "mlx-lm's BatchGenerator stopped with prompts left unfinished; "
                        "evaluate with batch_size 1 and report the mlx-lm version"
                    )
                finished_by_text = []
                for response in responses:
                    uid = response.uid
                    self.generated_tokens += 1
                    detokenizer = detokenizers[uid]
                    if response.finish_reason == "stop":  # EOS: not part of the text
                        detokenizer.finalize()
                        text = partial[uid] + detokenizer.last_segment
                        finish(uid, cut_at_stop(text, stop)[0])
                        continue
                    detokenizer.add_token(response.token)
                    if response.finish_reason == "length":
                        detokenizer.finalize()
                    seen = max(0, len(partial[uid]) - longest)
                    text = partial[uid] + detokenizer.last_segment
                    partial[uid] = text
                    cut, stopped = cut_at_stop(text[seen:], stop)
                    if stopped:
                        finish(uid, text[:seen] + cut)
                        if response.finish_reason is None:
                            finished_by_text.append(uid)
                    elif response.finish_reason == "length":
                        finish(uid, text)
                if finished_by_text:
                    generator.remove(finished_by_text)
        finally:
            generator.close()
        return [text or "" for text in texts]

    def _encode(self, prompt: str) -> list[int]:
        """The prompt's token ids, as `stream_generate` encodes a string prompt."""
        bos = self.tokenizer.bos_token
        add_special_tokens = bos is None or not prompt.startswith(bos)
        return list(self.tokenizer.encode(prompt, add_special_tokens=add_special_tokens))

    def loss(self, texts: Iterable[str], max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH) -> float:
        """Mean next-token negative log-likelihood (nats per token) over all tokens of `texts`.

        Each text is tokenized as mlx-lm's text dataset does for training: the encoding plus the
        EOS token (`tokenizer.eos_token_id`) unless it already ends in it, cut to `max_seq_length`
        tokens. A text of n tokens contributes its n - 1 predicted tokens; the mean weighs every
        token equally, as the trainer's validation loss does. (The trainer's loss mask also counts
        one padding target after EOS whenever a row is padded, see mlx-lm PR #1697, so its
        validation loss is slightly off this number; on rows cut to max_seq_length both agree.)
        Raises `GenerationError` when no text has two tokens.
        """
        return mean_loss(self.text_losses(texts, max_seq_length))

    def text_losses(
        self, texts: Iterable[str], max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH
    ) -> list[tuple[float, int]]:
        """(summed NLL in nats, predicted tokens) of each text, tokenized as `loss` says; a text
        with fewer than two tokens gives (0.0, 0). `loss` is the sum of the first over the sum of
        the second, added up in order."""
        import mlx.core as mx
        import mlx.nn as nn

        eos = self.tokenizer.eos_token_id
        parts: list[tuple[float, int]] = []
        for text in texts:
            ids = list(self.tokenizer.encode(text))
            if not ids or ids[-1] != eos:
                ids.append(eos)
            ids = ids[:max_seq_length]
            if len(ids) < 2:
                parts.append((0.0, 0))
                continue
            tokens = mx.array(ids)[None]
            logits = self.model(tokens[:, :-1]).astype(mx.float32)
            nll = nn.losses.cross_entropy(logits, tokens[:, 1:], reduction="sum")
            parts.append((nll.item(), len(ids) - 1))
        return parts

    def perplexity(
        self, texts: Iterable[str], max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH
    ) -> float:
        """exp(`loss`)."""
        return math.exp(self.loss(texts, max_seq_length))


class ServerGenerator:
    """Greedy completions from a running `mlx_lm.server` at `base_url` (e.g.
    `http://127.0.0.1:8080`).

    `model` is the exact `--model` string the server was started with (or another model path,
    which the server then loads); `adapter` the exact `--adapter-path` string, or None for the
    base model. "default_model" stands for whatever the server was started with, adapter
    included, and cannot be combined with `adapter`. Every request waits at most `timeout`
    seconds; the first request after a switch of model or adapter includes a full model load.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        adapter: str | None = None,
        timeout: float = 300.0,
        *,
        api_key: str | None = None,
        verify: bool | str = True,
    ) -> None:
        if model == DEFAULT_MODEL and adapter is not None:
            raise GenerationError(
                f"ServerGenerator(model={DEFAULT_MODEL!r}, adapter={adapter!r}): mlx_lm.server "
                f"ignores the adapter of a request for {DEFAULT_MODEL!r} and serves the one it "
                "was started with; name the model by its --model path instead"
            )
        if not timeout > 0:
            raise GenerationError(f"ServerGenerator timeout={timeout!r}: must be positive seconds")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.adapter = adapter
        self.timeout = timeout
        self._session = requests.Session()
        # The model server's proxy wants a key; `verify` may name the CA bundle of its TLS cert
        # (passed with each request: REQUESTS_CA_BUNDLE would override a session's `verify`).
        self.verify = verify
        if api_key:
            self._session.headers["Authorization"] = f"Bearer {api_key}"

    def complete(self, prompt: str, max_tokens: int, stop: Sequence[str] = FIM_STOP) -> str:
        """The greedy continuation of the raw `prompt` (`POST /v1/completions`), ending before
        EOS or the first stop string."""
        _check_request(max_tokens, stop)
        choice = self._post("/v1/completions", {"prompt": prompt}, max_tokens, stop)
        text = choice.get("text")
        if not isinstance(text, str):
            raise ServerRequestError(
                f"{self.base_url}/v1/completions answered a choice without text: "
                f"{json.dumps(choice)[:200]}",
                url=f"{self.base_url}/v1/completions",
                status=200,
            )
        return cut_at_stop(text, stop)[0]

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        max_tokens: int,
        stop: Sequence[str] = CHAT_STOP,
    ) -> str:
        """The greedy assistant answer to `messages` (`POST /v1/chat/completions`; the server
        renders them with the model's chat template). Tool calls are not returned."""
        _check_request(max_tokens, stop)
        choice = self._post(
            "/v1/chat/completions", {"messages": [dict(m) for m in messages]}, max_tokens, stop
        )
        message = choice.get("message")
        if not isinstance(message, dict):
            raise ServerRequestError(
                f"{self.base_url}/v1/chat/completions answered a choice without a message: "
                f"{json.dumps(choice)[:200]}",
                url=f"{self.base_url}/v1/chat/completions",
                status=200,
            )
        # The server sends null content for an empty answer.
        return cut_at_stop(message.get("content") or "", stop)[0]

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    def __enter__(self) -> ServerGenerator:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _post(
        self, path: str, payload: dict[str, Any], max_tokens: int, stop: Sequence[str]
    ) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        body = {
            **payload,
            "model": self.model,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            # Plain-text stop strings are cut here, not by the server (see the module docstring).
            "stop": [s for s in stop if _SPECIAL_TOKEN.fullmatch(s)],
        }
        if self.adapter is not None:
            body["adapters"] = self.adapter
        try:
            response = self._session.post(url, json=body, timeout=self.timeout, verify=self.verify)
        except requests.Timeout as exc:
            raise ServerRequestError(
                f"POST {url} got no answer within {self.timeout:g} s: the server is busy, or "
                "loading a model for a switched model/adapter; raise the timeout",
                url=url,
            ) from exc
        except requests.RequestException as exc:
            raise ServerRequestError(
                f"POST {url} failed ({type(exc).__name__}): is mlx_lm.server running there?",
                url=url,
            ) from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code != 200:
            detail = data.get("error") if isinstance(data, dict) else response.text[:200]
            hint = (
                " (mlx_lm.server answers 404 when it cannot load the requested model or adapter: "
                f"model={self.model!r}, adapter={self.adapter!r})"
                if response.status_code == 404
                else ""
            )
            raise ServerRequestError(
                f"POST {url} answered {response.status_code}: {detail}{hint}",
                url=url,
                status=response.status_code,
            )
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not isinstance(choices[0], dict):
            raise ServerRequestError(
                f"POST {url} answered 200 without choices: {response.text[:200]}",
                url=url,
                status=200,
            )
        return choices[0]


def _check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise TaskFormatError(f"limit={limit!r}: must be a whole number ≥ 0, or None for all")


def _check_request(max_tokens: int, stop: Sequence[str]) -> None:
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise GenerationError(f"max_tokens={max_tokens!r}: must be a whole number ≥ 1")
    if isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop):
        raise GenerationError(f"stop={stop!r}: must be a list of non-empty strings (e.g. FIM_STOP)")


def mean_loss(parts: Iterable[tuple[float, int]]) -> float:
    """The mean NLL per predicted token of `(summed NLL, predicted tokens)` parts, added up in
    order. Raises `GenerationError` when no part predicts a token."""
    total = 0.0
    count = 0
    for nll, tokens in parts:
        total += nll
        count += tokens
    if count == 0:
        raise GenerationError(
            "loss: no text with at least two tokens (EOS included) to predict; pass the "
            "test split's texts"
        )
    return total / count
