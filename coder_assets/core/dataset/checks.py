"""Validators behind the blocking checks on a built dataset directory (see `core.dataset.build`).

Each returns a list of problems, one string per problem naming the file and line (or the units)
at fault; an empty list means the property holds. They read the files as mlx-lm will, and never
trust what the builder believed it wrote.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coder_assets.core.dataset.decontam import Decontaminator
from coder_assets.core.dataset.dedup import similarity_join
from coder_assets.core.dataset.formatting import TEXT_KEY, count_tokens
from coder_assets.core.dataset.splits import SPLITS
from coder_assets.core.samples.fim import FimFormatError, fim_documents
from coder_assets.core.samples.secrets import SecretScanner

MAX_PROBLEMS = 50


def split_files(directory: Path) -> dict[str, Path]:
    return {split: directory / f"{split}.jsonl" for split in SPLITS}


def _raw_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open("r", encoding="utf-8", newline="\n") as handle:
        for number, line in enumerate(handle, start=1):
            yield number, line.rstrip("\n")


def _texts(directory: Path) -> Iterator[tuple[str, int, str]]:
    """(file name, line number, text) of every line that holds a text record."""
    for path in split_files(directory).values():
        if not path.is_file():
            continue
        for number, line in _raw_lines(path):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get(TEXT_KEY), str):
                yield path.name, number, record[TEXT_KEY]


def _capped(problems: list[str]) -> list[str]:
    if len(problems) > MAX_PROBLEMS:
        return [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more"]
    return problems


def format_problems(directory: Path) -> list[str]:
    """Each split file exists, and every line has exactly the keys of the file's first line, which
    must be `text` alone: mlx-lm reads the whole file in the format of its first line."""
    problems: list[str] = []
    for path in split_files(directory).values():
        if not path.is_file():
            problems.append(f"{path.name}: missing")
            continue
        first: frozenset[str] | None = None
        for number, line in _raw_lines(path):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # reported by line_problems
            keys = frozenset(record) if isinstance(record, dict) else frozenset()
            if first is None:
                first = keys
                if keys != {TEXT_KEY}:
                    problems.append(f"{path.name}:1: keys {sorted(keys)}, expected ['text']")
            elif keys != first:
                problems.append(
                    f"{path.name}:{number}: keys {sorted(keys)} differ from line 1's "
                    f"{sorted(first)}"
                )
        if first is None:
            problems.append(f"{path.name}: no records")
    return _capped(problems)


def line_problems(directory: Path) -> list[str]:
    """Every line is a JSON object whose `text` is a non-empty string."""
    problems: list[str] = []
    for path in split_files(directory).values():
        if not path.is_file():
            continue
        for number, line in _raw_lines(path):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{path.name}:{number}: invalid JSON ({exc.msg})")
                continue
            text = record.get(TEXT_KEY) if isinstance(record, dict) else None
            if not isinstance(text, str) or not text.strip():
                problems.append(f"{path.name}:{number}: 'text' is missing, empty or not a string")
    return _capped(problems)


def over_length_lines(directory: Path, tokenizer: Any, max_tokens: int) -> list[str]:
    """Lines longer than `max_tokens` with the base model's tokenizer (EOS included)."""
    problems = []
    for name, number, text in _texts(directory):
        tokens = count_tokens(tokenizer, text)
        if tokens > max_tokens:
            problems.append(f"{name}:{number}: {tokens} tokens, over max_seq_length {max_tokens}")
    return _capped(problems)


# The record-level duplicate check's own view of a text: word and punctuation tokens, special
# tokens and ChatML role lines dropped, so that the template every record shares is not counted.
_CHECK_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_SPECIAL_TOKEN_RE = re.compile(r"<\|[A-Za-z0-9_]+\|>(?:system|user|assistant)?")
DUPLICATE_JACCARD = 0.7
DUPLICATE_SHINGLE = 5


def record_shingles(text: str, size: int = DUPLICATE_SHINGLE) -> frozenset[tuple[str, ...]]:
    """The set of `size`-token shingles of a record's text, as the duplicate check sees it (a
    text shorter than `size` tokens is one shingle)."""
    tokens = _CHECK_TOKEN_RE.findall(_SPECIAL_TOKEN_RE.sub(" ", text))
    if len(tokens) <= size:
        return frozenset([tuple(tokens)]) if tokens else frozenset()
    return frozenset(tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1))


def duplicate_record_pairs(
    records: list[tuple[str, str]], threshold: float = DUPLICATE_JACCARD
) -> list[tuple[int, int, float]]:
    """Every pair (i, j, jaccard) of `records` ((group, text) each) in DIFFERENT groups whose
    shingle sets (`record_shingles`) have exact Jaccard >= `threshold`, all of them."""
    sets = [record_shingles(text) for _, text in records]
    return similarity_join(sets, threshold, [group for group, _ in records])


def cross_split_duplicates(directory: Path, threshold: float = DUPLICATE_JACCARD) -> list[str]:
    """Pairs of records in different split files that are exact or near duplicates: computed
    from the JSONL lines alone (their text, this module's own shingling, exact Jaccard), never
    from the dedup units or signatures the builder used, so a leak the builder cannot see (the
    same text kept at two paths) is still found."""
    rows = list(_texts(directory))
    where = [f"{name}:{number}" for name, number, _ in rows]
    problems = []
    for i, j, similarity in duplicate_record_pairs([(n, t) for n, _, t in rows], threshold):
        kind = (
            "exact duplicate" if similarity == 1.0 else f"near duplicate (Jaccard {similarity:.2f})"
        )
        problems.append(f"{kind} across splits: {where[i]} and {where[j]}")
    return _capped(problems)


def contaminated(
    directory: Path, units: list[dict[str, str]], decontaminator: Decontaminator
) -> list[str]:
    """Lines and kept units (whole files of FIM samples) that overlap a benchmark problem."""
    problems = []
    for name, number, text in _texts(directory):
        hit = decontaminator.check(f"{name}:{number}", text)
        if hit is not None:
            problems.append(f"{name}:{number}: {hit.task_id} {hit.reason} ({hit.detail})")
    for row in units:
        hit = decontaminator.check(row["unit_id"], row["text"])
        if hit is not None:
            problems.append(f"unit {row['unit_id']}: {hit.task_id} {hit.reason} ({hit.detail})")
    return _capped(problems)


def secret_findings(
    directory: Path, scanner: SecretScanner | None = None, paths: dict[str, str] | None = None
) -> list[str]:
    """Secrets the scanner finds in any line; the finding's type only, never its value. A FIM
    record is read as its files are (the middle back between prefix and suffix, each file on its
    own), with the rules of its file type when `paths` ("train.jsonl:7" -> repo path, from the
    provenance sidecar) names it; other records are scanned whole as source code."""
    scanner = scanner or SecretScanner()
    paths = paths or {}
    problems = []
    for name, number, text in _texts(directory):
        try:
            pieces = fim_documents(text)
        except FimFormatError:
            pieces = [("", text)]
        else:
            target = paths.get(f"{name}:{number}", "")
            pieces = [(path or target, content) for path, content in pieces]
        for path, content in pieces:
            for finding in scanner.scan(content, path):
                problems.append(f"{name}:{number}: {finding.secret_type}")
    return _capped(problems)
