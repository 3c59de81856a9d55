"""Training records in mlx-lm's JSONL `text` format, fitted to the training sequence length.

Every record we write is `{"text": ...}`. mlx-lm picks a dataset class from the FIRST record of a
file only (`prompt`+`completion`, `messages`, or `text`), and its chat and completions classes push
every record through the chat template, which would wrap FIM samples in ChatML. So:

- instruction pairs are rendered to ChatML here, with the base model's own chat template
  (`render_pair`), and stored as plain text;
- FIM samples are stored as they are (`<|fim_prefix|>...<|fim_suffix|>...<|fim_middle|>...`);
- one format per file, checked by `validate_jsonl`.

mlx-lm's text dataset tokenizes `text` and appends EOS when the last id is not EOS already;
`count_tokens` counts the same way. Its trainer truncates sequences over `max_seq_length` (with a
warning), which would cut the end, i.e. the answer, off a pair. `fit_records` keeps every record
within the budget instead. An answer is never split across records (a second record that repeats
the instruction and starts mid-call teaches nothing but fragments): a pair over the budget is
dropped. A FIM sample over it keeps its middle and as many whole lines of prefix and suffix
around it as fit (a window), its repository context within half the budget.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coder_assets.core.errors import CoderAssetsError
from coder_assets.core.samples.fim import FILE_SEP, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, format_fim

TEXT_KEY = "text"

# Reasons `fit_records` gives for dropping a sample.
DROP_OVER_LENGTH = "over_length"  # an instruction pair over the budget
DROP_OVER_LENGTH_FIM = "over_length_fim"  # a FIM middle that does not fit even without context

_MAX_PROBLEMS = 100
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class FormattingError(CoderAssetsError, ValueError):
    """A formatting setting or argument that cannot produce valid training records."""


@dataclass(frozen=True)
class FormatConfig:
    """How samples become training records."""

    max_seq_length: int = 2048  # tokens per record, EOS included; the trainer's max_seq_length
    system_prompt: str = "You are a coding assistant for this homelab's repositories."

    def __post_init__(self) -> None:
        if self.max_seq_length < 1:
            raise FormattingError(
                f"FormatConfig.max_seq_length={self.max_seq_length}: must be a positive number "
                "of tokens (use the trainer's max_seq_length)"
            )


@dataclass(frozen=True)
class Record:
    """One line of a training file."""

    sample_id: str
    text: str  # the mlx-lm `text` record value
    tokens: int  # length with the base tokenizer, EOS included (mlx-lm appends EOS)


def render_pair(
    tokenizer: Any, instruction: str, input: str, output: str, config: FormatConfig
) -> str:
    """An instruction pair as one ChatML conversation, rendered by the tokenizer's chat template:
    system (`config.system_prompt`), user (the instruction, and the input in a fenced block when
    there is one), assistant (the output). No generation prompt: the answer is part of the text."""
    user = instruction
    if input:
        fence = _fence_for(input)
        body = input if input.endswith("\n") else input + "\n"
        user = f"{instruction}\n\n{fence}\n{body}{fence}"
    messages = [
        {"role": "system", "content": config.system_prompt},
        {"role": "user", "content": user},
        {"role": "assistant", "content": output},
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens mlx-lm trains on for a `text` record: the encoding plus the EOS it appends (it
    appends none when the text already ends in EOS)."""
    ids = tokenizer.encode(text)
    if ids and ids[-1] == tokenizer.eos_token_id:
        return len(ids)
    return len(ids) + 1


def fit_records(
    sample_id: str,
    kind: str,
    text: str,
    tokenizer: Any,
    config: FormatConfig,
    *,
    render: Callable[[str], str] | None = None,
) -> tuple[list[Record], str | None]:
    """The record of one sample within `config.max_seq_length`, or none and the reason.

    `text` is the content and `render` makes the record text out of it; without `render` the
    text is the record (FIM samples: `kind == "fim"`, passed raw). For an instruction pair pass
    its output as `text` and
    `render=lambda output: render_pair(tokenizer, instruction, input, output, config)`.

    A pair over the budget is dropped (`"over_length"`): its answer is never split. A FIM sample
    over it becomes a window: the middle whole, the repository context (if any) cut to whole
    files within half the budget, and the most lines of prefix (nearest the middle) and suffix
    that fit, in step; when the middle does not fit even alone, it is dropped
    (`"over_length_fim"`).
    """
    whole = render(text) if render is not None else text
    tokens = count_tokens(tokenizer, whole)
    if tokens <= config.max_seq_length:
        return [Record(sample_id, whole, tokens)], None
    if kind != "fim":
        return [], DROP_OVER_LENGTH
    window = fim_window(text, tokenizer, config.max_seq_length)
    if window is None:
        return [], DROP_OVER_LENGTH_FIM
    return [Record(sample_id, *window)], None


def fim_window(text: str, tokenizer: Any, budget: int) -> tuple[str, int] | None:
    """`text` (a FIM training text) cut to `budget` tokens around its middle (see
    `fit_records`), with its token count; None when the middle does not fit."""
    start = text.rfind(FIM_PREFIX)
    suffix_at = text.find(FIM_SUFFIX, start)
    middle_at = text.find(FIM_MIDDLE, suffix_at)
    if start < 0 or suffix_at < 0 or middle_at < 0:
        raise FormattingError("fim_window: the text lacks a FIM marker")
    header = _header_within(text[:start], tokenizer, budget // 2)
    prefix = _lines(text[start + len(FIM_PREFIX) : suffix_at])
    suffix = _lines(text[suffix_at + len(FIM_SUFFIX) : middle_at])
    middle = text[middle_at + len(FIM_MIDDLE) :]

    def build(taken: int) -> str:
        before = prefix[max(0, len(prefix) - taken) :]
        return header + format_fim("".join(before), "".join(suffix[:taken]), middle)

    def fits(_start: int, taken: int) -> bool:
        return count_tokens(tokenizer, build(taken)) <= budget

    if not fits(0, 0):
        return None
    taken = _longest_fit(0, max(len(prefix), len(suffix)), fits) if fits(0, 1) else 0
    windowed = build(taken)
    return windowed, count_tokens(tokenizer, windowed)


def _header_within(header: str, tokenizer: Any, budget: int) -> str:
    """A repository-context header (`<|repo_name|>`, context files, the target's
    `<|file_sep|>path` line) without its last context files until it fits `budget` tokens."""
    if not header or count_tokens(tokenizer, header) <= budget:
        return header
    parts = header.split(FILE_SEP)
    name, files, target = parts[0], parts[1:-1], parts[-1]
    while files and count_tokens(tokenizer, FILE_SEP.join([name, *files, target])) > budget:
        files.pop()
    return FILE_SEP.join([name, *files, target])


def write_jsonl(path: Path, records: Iterable[Record]) -> tuple[str, int]:
    """Write `{"text": ...}` lines atomically and return (sha256 hex of the bytes, line count).

    Deterministic bytes: `json.dumps(ensure_ascii=False, sort_keys=True)`, UTF-8, "\\n" line ends.
    The file is written next to `path` under a temporary name and moved into place, so readers
    see the previous file or the complete new one; a failure leaves the previous file as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    count = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for record in records:
                line = json.dumps({TEXT_KEY: record.text}, ensure_ascii=False, sort_keys=True)
                data = (line + "\n").encode("utf-8")
                out.write(data)
                digest.update(data)
                count += 1
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return digest.hexdigest(), count


def dataset_version(files: Mapping[str, str]) -> str:
    """sha256 (hex) over the sorted (name, file sha256) pairs of a dataset's files, e.g.
    `{"train": ..., "valid": ..., "test": ...}`: the same files give the same version."""
    if not files:
        raise FormattingError("dataset_version: no files given (expected train/valid/test)")
    digest = hashlib.sha256()
    for name, sha in sorted(files.items()):
        if not _SHA256_HEX.fullmatch(sha):
            raise FormattingError(
                f"dataset_version: {name!r} has {sha!r}, not a sha256 hex digest "
                "(pass the digest write_jsonl returned)"
            )
        digest.update(f"{name}\0{sha}\n".encode())
    return digest.hexdigest()


def validate_jsonl(
    path: Path, *, max_tokens: int | None = None, tokenizer: Any = None
) -> list[str]:
    """Problems that would make mlx-lm fail on, or train wrong from, a JSONL file; empty when fine.

    The first line's keys define the file's format (as mlx-lm decides it) and must be exactly
    `text`; every line must be a JSON object with exactly the first line's keys and a non-empty
    string `text`. With `max_tokens` and `tokenizer`, no line may exceed `max_tokens` tokens
    (counted as `count_tokens` does). Each problem names the file and line.
    """
    if (max_tokens is None) != (tokenizer is None):
        raise FormattingError(
            "validate_jsonl: pass max_tokens and tokenizer together to check lengths"
        )
    path = Path(path)
    try:
        content = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return [f"{path}: no such file"]
    except UnicodeDecodeError as exc:
        return [f"{path}: not UTF-8 ({exc})"]
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final line end
    if not lines:
        # mlx-lm indexes the first record to pick a format and fails on an empty file.
        return [f"{path}: no records (leave the file out instead of writing it empty)"]

    problems: list[str] = []
    keys: frozenset[str] | None = None
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: invalid JSON ({exc.msg})")
            continue
        if not isinstance(record, dict):
            problems.append(f"{where}: a JSON {type(record).__name__}, not an object")
            continue
        if keys is None:
            keys = frozenset(record)
            if keys != {TEXT_KEY}:
                problems.append(
                    f"{where}: keys {sorted(keys)} make it a non-text format; "
                    f"our files hold only {{{TEXT_KEY!r}: ...}} records"
                )
        elif frozenset(record) != keys:
            problems.append(
                f"{where}: keys {sorted(record)} differ from the first line's {sorted(keys)} "
                "(mlx-lm reads every line in the first line's format)"
            )
            continue
        if TEXT_KEY in record:
            text = record[TEXT_KEY]
            if not isinstance(text, str) or not text:
                problems.append(f"{where}: {TEXT_KEY!r} is empty or not a string")
            elif tokenizer is not None and max_tokens is not None:
                tokens = count_tokens(tokenizer, text)
                if tokens > max_tokens:
                    problems.append(f"{where}: {tokens} tokens, over max_tokens={max_tokens}")
        if len(problems) >= _MAX_PROBLEMS:
            problems.append(f"{path}: stopped after {_MAX_PROBLEMS} problems")
            break
    return problems


def _identity(text: str) -> str:
    return text


def _fence_for(text: str) -> str:
    # A fence longer than any backtick run inside keeps the block closed where we close it.
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _lines(text: str) -> list[str]:
    """Lines with their "\\n" kept, so joining them gives back `text`. Only "\\n" ends a line
    ("\\r\\n" stays one line end; form feeds and Unicode separators do not split)."""
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


def _longest_fit(start: int, stop: int, fits: Callable[[int, int], bool]) -> int:
    """The largest `end` in (start, stop] with `fits(start, end)`, given `fits(start, start + 1)`.

    Gallops then bisects, so a part costs O(log n) renderings of about its own size. Token counts
    grow with the lines taken (BPE may merge across a line end, so not strictly additively); the
    part chosen always fits, as it was measured.
    """
    good, step = start + 1, 1
    bad = stop + 1
    while good < stop:
        probe = min(good + step, stop)
        if fits(start, probe):
            good = probe
            step *= 2
        else:
            bad = probe
            break
    while bad - good > 1:
        middle = (good + bad) // 2
        if fits(start, middle):
            good = middle
        else:
            bad = middle
    return good
