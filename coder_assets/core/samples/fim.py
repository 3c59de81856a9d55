"""Fill-in-the-middle (FIM) samples in Qwen2.5-Coder's format.

A FIM sample cuts a file into prefix, middle and suffix and trains the model to write the middle
after seeing both sides, in prefix-suffix-middle (PSM) order:

    <|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>{middle}

With repository context, neighbouring files of the same repo come first and the target file last:

    <|repo_name|>{name}
    <|file_sep|>{path}
    {content}
    <|file_sep|>{target path}
    <|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>{middle}

The samples are mlx-lm `text` records; mlx-lm appends the EOS token (`<|endoftext|>` for the
Qwen2.5-Coder base models) itself, so the text does not end with it.

Middles come from three strategies:

- random_span: two uniform cut points in the file, as in the FIM paper (Bavarian et al., 2022),
  on Python str offsets, never between `\\r` and `\\n` or before a combining mark;
- line_span: 1..MAX_LINE_SPAN_LINES whole lines, cut at line starts;
- syntax_span: a function body, a block (if/for/with/... body) or an expression node, from
  Python's `ast` or tree-sitter Go; other languages and files that do not parse fall back to
  line_span (and the span says so).

No strategy cuts through a redaction placeholder (`<SECRET_..._1>`): a middle that ends inside
one would teach the model half a placeholder. A middle of only punctuation and whitespace (a lone
`}`) is never chosen; another span is drawn instead.

All randomness comes from `random.Random(f"{blob_sha}:{seed}:{i}")`, so an unchanged file yields
byte-identical samples in every run.
"""

from __future__ import annotations

import ast
import random
import re
import unicodedata
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

import tree_sitter

from coder_assets.core.errors import CoderAssetsError
from coder_assets.core.languages import language_of
from coder_assets.core.samples.parsers import parse_go
from coder_assets.core.samples.secrets import placeholder_spans

FIM_PREFIX = "<|fim_prefix|>"
FIM_SUFFIX = "<|fim_suffix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_PAD = "<|fim_pad|>"
REPO_NAME = "<|repo_name|>"
FILE_SEP = "<|file_sep|>"
ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
QWEN_SPECIAL_TOKENS = (
    FIM_PREFIX,
    FIM_SUFFIX,
    FIM_MIDDLE,
    FIM_PAD,
    REPO_NAME,
    FILE_SEP,
    ENDOFTEXT,
    IM_START,
    IM_END,
)

FIM_STRATEGIES = ("random_span", "line_span", "syntax_span")
FIM_SKIP_REASONS = ("special_tokens", "not_selected", "too_short")
SPECIAL_TOKEN_MODES = ("drop", "escape")

# Longest whole-line middle; HumanEval-infilling's multi-line spans are of this order.
MAX_LINE_SPAN_LINES = 8

# Qwen2.5's tokenizer reserves more `<|name|>` strings than the nine above (`<|box_start|>`,
# `<|vision_pad|>`, ...), all of which a file could smuggle in, so detection takes the whole
# family rather than a fixed list.
_SPECIAL_TOKEN_RE = re.compile(r"<\|[A-Za-z0-9_]+\|>")

# A zero-width space after `<` keeps the text readable while no tokenizer's added-token matcher
# sees `<|name|>` any more; the byte-level BPE encodes it as ordinary bytes.
ESCAPE_CHAR = "\u200b"

_ATTEMPTS = 8


class FimConfigError(CoderAssetsError, ValueError):
    """A FimConfig setting is out of range."""


class FimFormatError(CoderAssetsError, ValueError):
    """A text that should be a FIM training text lacks one of its markers."""


@dataclass(frozen=True)
class FimConfig:
    """How FIM samples are cut from kept files."""

    fim_rate: float = 0.9  # fraction of kept files that yield FIM samples (decided per file)
    samples_per_file: int = 2
    strategy_weights: tuple[tuple[str, float], ...] = (
        ("random_span", 1.0),
        ("line_span", 1.0),
        ("syntax_span", 1.0),
    )
    seed: int = 0
    max_middle_chars: int = 2000
    min_middle_chars: int = 1
    repo_context: bool = False
    repo_context_chars: int = 6000  # budget for neighbouring files' text
    special_tokens: str = "drop"  # "drop" the file, or "escape" the strings (see ESCAPE_CHAR)

    def __post_init__(self) -> None:
        if not 0.0 <= self.fim_rate <= 1.0:
            raise FimConfigError(f"FimConfig.fim_rate must be in [0, 1], got {self.fim_rate}")
        if self.samples_per_file < 0:
            raise FimConfigError(
                f"FimConfig.samples_per_file must be >= 0, got {self.samples_per_file}"
            )
        if self.min_middle_chars < 1 or self.max_middle_chars < self.min_middle_chars:
            raise FimConfigError(
                "FimConfig needs 1 <= min_middle_chars <= max_middle_chars, got "
                f"{self.min_middle_chars} and {self.max_middle_chars}"
            )
        if self.repo_context_chars < 0:
            raise FimConfigError(
                f"FimConfig.repo_context_chars must be >= 0, got {self.repo_context_chars}"
            )
        if self.special_tokens not in SPECIAL_TOKEN_MODES:
            raise FimConfigError(
                f"FimConfig.special_tokens must be one of {SPECIAL_TOKEN_MODES}, "
                f"got {self.special_tokens!r}"
            )
        for name, weight in self.strategy_weights:
            if name not in FIM_STRATEGIES:
                raise FimConfigError(
                    f"FimConfig.strategy_weights names unknown strategy {name!r}; "
                    f"use one of {FIM_STRATEGIES}"
                )
            if not weight >= 0.0:
                raise FimConfigError(
                    f"FimConfig.strategy_weights gives {name!r} the weight {weight}; "
                    "weights must be >= 0"
                )
        if not sum(weight for _, weight in self.strategy_weights) > 0.0:
            raise FimConfigError("FimConfig.strategy_weights must give some strategy a weight > 0")


@dataclass(frozen=True)
class FimSpan:
    """A FIM middle: `text[start:end]` (str offsets), and the strategy that chose it."""

    start: int
    end: int
    strategy: str


@dataclass(frozen=True)
class FimSample:
    """One FIM training text and its parts; `prefix + middle + suffix` is the file's text (after
    escaping, in "escape" mode). Lines are 1-based and inclusive, counted in "\\n" line breaks."""

    text: str
    prefix: str
    middle: str
    suffix: str
    strategy: str
    start_line: int
    end_line: int


# --------------------------------------------------------------------------------------------
# Special tokens and formats
# --------------------------------------------------------------------------------------------


def contains_special_tokens(text: str) -> bool:
    """Whether `text` contains a `<|name|>` string that Qwen's tokenizer would read as a special
    token (the nine of QWEN_SPECIAL_TOKENS and the rest of the family)."""
    return _SPECIAL_TOKEN_RE.search(text) is not None


def escape_special_tokens(text: str) -> str:
    """`text` with ESCAPE_CHAR (U+200B ZERO WIDTH SPACE) inserted after the `<` of every
    `<|name|>` string: `<|fim_middle|>` becomes `<\\u200b|fim_middle|>`, which tokenizes as
    ordinary text. Nothing else changes (line breaks included); the result contains no special
    token string. One-way: there is no unescape."""
    return _SPECIAL_TOKEN_RE.sub(lambda match: "<" + ESCAPE_CHAR + match.group(0)[1:], text)


def format_fim(prefix: str, suffix: str, middle: str) -> str:
    """A FIM training text in prefix-suffix-middle order."""
    return f"{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{middle}"


def fim_documents(text: str) -> list[tuple[str, str]]:
    """The files of a FIM training text as (path, content), in the order a reader of the
    repository sees them: the context files, then the target file with its middle back between
    prefix and suffix. The target's path is "" without repository context. Special tokens inside
    file content are escaped by the samples stage, so the last `<|fim_prefix|>` starts the
    target. Raises FimFormatError when a marker is missing."""
    start = text.rfind(FIM_PREFIX)
    suffix_at = text.find(FIM_SUFFIX, start)
    middle_at = text.find(FIM_MIDDLE, suffix_at)
    if start < 0 or suffix_at < 0 or middle_at < 0:
        raise FimFormatError(
            "the text lacks <|fim_prefix|>, <|fim_suffix|> or <|fim_middle|>: rematerialize "
            "fim_samples for its repo"
        )
    prefix = text[start + len(FIM_PREFIX) : suffix_at]
    suffix = text[suffix_at + len(FIM_SUFFIX) : middle_at]
    middle = text[middle_at + len(FIM_MIDDLE) :]
    documents: list[tuple[str, str]] = []
    target_path = ""
    if text.startswith(REPO_NAME):
        for part in text[:start].split(FILE_SEP)[1:]:
            path, _, content = part.partition("\n")
            documents.append((path, content.removesuffix("\n")))
        target_path = documents.pop()[0] if documents else ""
    documents.append((target_path, prefix + middle + suffix))
    return documents


def format_repo_fim(
    repo_name: str,
    context: list[tuple[str, str]],
    path: str,
    prefix: str,
    suffix: str,
    middle: str,
) -> str:
    """A repository-level FIM training text: the repo name, the context files as
    (path, content), then the target file at `path` in FIM form."""
    parts = [f"{REPO_NAME}{repo_name}\n"]
    parts.extend(f"{FILE_SEP}{other}\n{content}\n" for other, content in context)
    parts.append(f"{FILE_SEP}{path}\n{format_fim(prefix, suffix, middle)}")
    return "".join(parts)


def context_chars(path: str, content: str) -> int:
    """How many chars a context file adds to a repository-level text (what the budget counts)."""
    return len(FILE_SEP) + len(path) + 1 + len(content) + 1


def select_context(
    path: str, files: list[tuple[str, str]], budget_chars: int
) -> list[tuple[str, str]]:
    """Neighbours of the file at `path` from the same repo, as (path, content), to put before it.

    Ranked by: same directory first, then same language (or extension when the language is
    unknown), then the rest, each tier by path. Taken greedily in that order, whole files only: a
    file that does not fit in what is left of `budget_chars` (counted by `context_chars`) is
    skipped and smaller ones after it may still fit. Never the target itself, no blank files, and
    each path once."""
    target = PurePosixPath(path)
    target_language = language_of(path)
    target_suffix = target.suffix.lower()
    ranked: list[tuple[int, int, str, str]] = []
    seen: set[str] = set()
    for other, content in files:
        if other == path or other in seen or not content.strip():
            continue
        seen.add(other)
        candidate = PurePosixPath(other)
        other_language = language_of(other)
        if target_language is not None:
            same_kind = other_language == target_language
        else:
            same_kind = bool(target_suffix) and candidate.suffix.lower() == target_suffix
        ranked.append(
            (0 if candidate.parent == target.parent else 1, 0 if same_kind else 1, other, content)
        )
    ranked.sort(key=lambda row: (row[0], row[1], row[2]))
    chosen: list[tuple[str, str]] = []
    left = budget_chars
    for _, _, other, content in ranked:
        cost = context_chars(other, content)
        if cost <= left:
            chosen.append((other, content))
            left -= cost
    return chosen


# --------------------------------------------------------------------------------------------
# Spans
# --------------------------------------------------------------------------------------------


def choose_spans(
    text: str, language: str | None, blob_sha: str, config: FimConfig
) -> list[FimSpan]:
    """Up to `config.samples_per_file` distinct, non-empty middles for `text`, deterministic in
    (text, language, blob_sha, config). Fewer, possibly none, when the file is too short."""
    names = [name for name, _ in config.strategy_weights]
    weights = [weight for _, weight in config.strategy_weights]
    placeholders = placeholder_spans(text)
    syntax: _SyntaxCandidates | None = None
    spans: list[FimSpan] = []
    seen: set[tuple[int, int]] = set()
    for i in range(config.samples_per_file):
        rng = random.Random(f"{blob_sha}:{config.seed}:{i}")
        for _ in range(_ATTEMPTS):
            strategy = rng.choices(names, weights)[0]
            if strategy == "random_span":
                span = _random_span(text, rng, config)
            elif strategy == "line_span":
                span = _line_span(text, rng, config)
            else:
                if syntax is None:
                    syntax = _SyntaxCandidates.build(text, language, config)
                # No parser, no parse, or nothing that fits: whole lines instead, and said so.
                span = syntax.pick(rng) if syntax.by_kind else _line_span(text, rng, config)
            if (
                span is not None
                and (span.start, span.end) not in seen
                and not _cuts_any(placeholders, span)
                and _has_word(text, span)
            ):
                seen.add((span.start, span.end))
                spans.append(span)
                break
    return spans


def _has_word(text: str, span: FimSpan) -> bool:
    """Whether the middle holds a letter or digit: a lone `}` or `)` teaches nothing."""
    return any(char.isalnum() for char in text[span.start : span.end])


def _cuts_any(spans: list[tuple[int, int]], span: FimSpan) -> bool:
    """Whether `span` starts or ends strictly inside one of `spans`."""
    return any(start < at < end for start, end in spans for at in (span.start, span.end))


def _clean_cut(text: str, at: int) -> bool:
    """Whether cutting `text` at `at` keeps characters together: not inside a CRLF, not before
    a combining mark, variation selector or zero-width joiner, not after a joiner."""
    if at <= 0 or at >= len(text):
        return True
    before, after = text[at - 1], text[at]
    if before == "\r" and after == "\n":
        return False
    if before == "\u200d" or after in "\u200d\ufe0e\ufe0f":
        return False
    return not unicodedata.combining(after)


def _random_span(text: str, rng: random.Random, config: FimConfig) -> FimSpan | None:
    size = len(text)
    low, high = config.min_middle_chars, min(config.max_middle_chars, size)
    if high < low:
        return None
    # The FIM paper's two uniform cut points first; long files rarely give a middle within
    # max_middle_chars that way, so then a uniform length at a uniform start.
    for _ in range(_ATTEMPTS):
        start, end = sorted((rng.randint(0, size), rng.randint(0, size)))
        if low <= end - start <= high and _clean_cut(text, start) and _clean_cut(text, end):
            return FimSpan(start, end, "random_span")
    for _ in range(_ATTEMPTS):
        length = rng.randint(low, high)
        start = rng.randint(0, size - length)
        if _clean_cut(text, start) and _clean_cut(text, start + length):
            return FimSpan(start, start + length, "random_span")
    return None


def _line_starts(text: str) -> list[int]:
    """Offsets where the lines of `text` start, and len(text) last (no empty last line)."""
    starts = [0]
    starts.extend(match.end() for match in re.finditer("\n", text))
    if starts[-1] != len(text):
        starts.append(len(text))
    return starts


def _line_span(text: str, rng: random.Random, config: FimConfig) -> FimSpan | None:
    bounds = _line_starts(text)
    lines = len(bounds) - 1
    if lines < 1:
        return None
    for _ in range(_ATTEMPTS):
        count = rng.randint(1, min(MAX_LINE_SPAN_LINES, lines))
        first = rng.randint(0, lines - count)
        while count > 1 and bounds[first + count] - bounds[first] > config.max_middle_chars:
            count -= 1
        start, end = bounds[first], bounds[first + count]
        if _fits(text, start, end, config):
            return FimSpan(start, end, "line_span")
    return None


def _fits(text: str, start: int, end: int, config: FimConfig) -> bool:
    """Whether text[start:end] is a middle worth learning: within the length limits and not
    only whitespace."""
    return (
        config.min_middle_chars <= end - start <= config.max_middle_chars
        and not text[start:end].isspace()
    )


# --------------------------------------------------------------------------------------------
# Syntax-aware spans
# --------------------------------------------------------------------------------------------

_SYNTAX_KINDS = ("function_body", "block", "expression")


@dataclass(frozen=True)
class _SyntaxCandidates:
    """The syntax spans of a file that fit the config, by kind (only kinds that have some); none
    when no parser applies or the file does not parse."""

    by_kind: tuple[tuple[str, tuple[tuple[int, int], ...]], ...]

    @classmethod
    def build(cls, text: str, language: str | None, config: FimConfig) -> _SyntaxCandidates:
        try:
            if language == "python":
                found = _python_spans(text)
            elif language == "go":
                found = _go_spans(text)
            else:
                found = None
        except (SyntaxError, ValueError, RecursionError, MemoryError, UnicodeError):
            found = None
        if found is None:
            return cls(by_kind=())
        by_kind = tuple(
            (kind, tuple(sorted(span for span in found[kind] if _fits(text, *span, config))))
            for kind in _SYNTAX_KINDS
        )
        return cls(by_kind=tuple(row for row in by_kind if row[1]))

    def pick(self, rng: random.Random) -> FimSpan:
        """A kind uniformly among those present, then one of its spans uniformly."""
        _, spans = rng.choice(self.by_kind)
        start, end = rng.choice(spans)
        return FimSpan(start, end, "syntax_span")


class _LineColumns:
    """Maps (line, UTF-8 byte column) positions, which `ast` and tree-sitter report, to str
    offsets of the same text. Lines are split at "\\n", as both parsers count them."""

    def __init__(self, text: str) -> None:
        self._lines = text.split("\n")
        self._starts = [0]
        for line in self._lines[:-1]:
            self._starts.append(self._starts[-1] + len(line) + 1)
        self._encoded: dict[int, bytes | None] = {}

    def at(self, row: int, col_byte: int) -> int:
        """The str offset of 0-based `row` and byte column `col_byte`."""
        line = self._lines[row]
        if row not in self._encoded:
            self._encoded[row] = None if line.isascii() else line.encode("utf-8")
        encoded = self._encoded[row]
        # A column inside a character fails to decode, which the caller treats as no parse.
        col = col_byte if encoded is None else len(encoded[:col_byte].decode("utf-8"))
        if col > len(line):
            raise ValueError(f"column {col_byte} is past the end of line {row + 1}")
        return self._starts[row] + col


def _whole_lines(text: str, start: int, end: int, comment: str) -> tuple[int, int]:
    """[start, end) widened to whole lines when only indentation precedes it on its first line and
    only whitespace or a comment follows it on its last; unchanged otherwise."""
    line_start = text.rfind("\n", 0, start) + 1
    if text[line_start:start].strip():
        return start, end
    newline = text.find("\n", end)
    line_end = len(text) if newline == -1 else newline + 1
    rest = text[end:line_end].strip()
    if rest and not rest.startswith(comment):
        return start, end
    return line_start, line_end


_PY_BLOCK_NODES = (
    ast.If,
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.With,
    ast.AsyncWith,
    ast.Try,
    ast.TryStar,
    ast.ExceptHandler,
    ast.ClassDef,
    ast.match_case,
)


def _python_spans(text: str) -> dict[str, set[tuple[int, int]]] | None:
    # ast counts a lone "\r" as a line break and our offsets count "\n" only; such files get
    # line spans instead.
    if "\r" in text.replace("\r\n", ""):
        return None
    with warnings.catch_warnings():
        # Invalid escape sequences in the file are its business, not a warning of ours.
        warnings.simplefilter("ignore")
        tree = ast.parse(text)
    offsets = _LineColumns(text)
    found: dict[str, set[tuple[int, int]]] = {kind: set() for kind in _SYNTAX_KINDS}

    def add_block(kind: str, body: list[ast.stmt]) -> None:
        start = offsets.at(body[0].lineno - 1, body[0].col_offset)
        last = body[-1]
        if last.end_lineno is None or last.end_col_offset is None:
            return
        end = offsets.at(last.end_lineno - 1, last.end_col_offset)
        found[kind].add(_whole_lines(text, start, end, "#"))

    for node in _walk_python(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            # The docstring stays in the prefix: it is what the body is written from.
            if len(body) > 1 and ast.get_docstring(node, clean=False) is not None:
                body = body[1:]
            add_block("function_body", body)
        elif isinstance(node, _PY_BLOCK_NODES):
            for field in ("body", "orelse", "finalbody"):
                stmts = getattr(node, field, None)
                # An `elif` is an If alone in `orelse`, starting at the `elif` keyword.
                if not stmts or (
                    field == "orelse" and len(stmts) == 1 and isinstance(stmts[0], ast.If)
                ):
                    continue
                add_block("block", stmts)
        elif (
            isinstance(node, ast.expr)
            and not isinstance(node, ast.Name)
            and not isinstance(getattr(node, "ctx", None), ast.Store | ast.Del)
            and node.end_lineno is not None
            and node.end_col_offset is not None
        ):
            start = offsets.at(node.lineno - 1, node.col_offset)
            end = offsets.at(node.end_lineno - 1, node.end_col_offset)
            found["expression"].add((start, end))
    return found


def _walk_python(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of `tree`, but not the insides of f-strings, whose positions Python before
    3.12 does not report reliably."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, ast.JoinedStr):
            stack.extend(ast.iter_child_nodes(node))


_GO_FUNCTIONS = ("function_declaration", "method_declaration", "func_literal")
_GO_EXPRESSIONS = ("composite_literal", "func_literal")


def _go_spans(text: str) -> dict[str, set[tuple[int, int]]] | None:
    tree = parse_go(text)
    if tree.root_node.has_error:
        return None
    offsets = _LineColumns(text)
    found: dict[str, set[tuple[int, int]]] = {kind: set() for kind in _SYNTAX_KINDS}
    function_bodies: set[tuple[int, int]] = set()
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.type in _GO_FUNCTIONS:
            body = node.child_by_field_name("body")
            if body is not None:
                function_bodies.add((body.start_byte, body.end_byte))
                inner = _go_block_inside(text, body, offsets)
                if inner is not None:
                    found["function_body"].add(inner)
        # A function node is popped before its body, so the body is known by the time it comes.
        if node.type == "block" and (node.start_byte, node.end_byte) not in function_bodies:
            inner = _go_block_inside(text, node, offsets)
            if inner is not None:
                found["block"].add(inner)
        if node.is_named and (node.type.endswith("_expression") or node.type in _GO_EXPRESSIONS):
            found["expression"].add((_start(node, offsets), _end(node, offsets)))
    return found


def _start(node: tree_sitter.Node, offsets: _LineColumns) -> int:
    return offsets.at(node.start_point.row, node.start_point.column)


def _end(node: tree_sitter.Node, offsets: _LineColumns) -> int:
    return offsets.at(node.end_point.row, node.end_point.column)


def _go_block_inside(
    text: str, block: tree_sitter.Node, offsets: _LineColumns
) -> tuple[int, int] | None:
    """The statements between a Go block's braces: whole lines when the braces sit on lines of
    their own, else the trimmed inside. None for an empty block."""
    children = block.children
    if len(children) < 2 or children[0].type != "{" or children[-1].type != "}":
        return None
    open_end = _end(children[0], offsets)
    close_start = _start(children[-1], offsets)
    inside = text[open_end:close_start]
    if not inside.strip():
        return None
    first_newline = text.find("\n", open_end, close_start)
    if first_newline == -1:
        lead = len(inside) - len(inside.lstrip())
        trail = len(inside) - len(inside.rstrip())
        return open_end + lead, close_start - trail
    after_brace = text[open_end:first_newline].strip()
    if not after_brace or after_brace.startswith("//"):
        start = first_newline + 1
    else:
        start = open_end + len(inside) - len(inside.lstrip())
    last_line = text.rfind("\n", open_end, close_start) + 1
    end = last_line if not text[last_line:close_start].strip() else close_start
    if end <= start:
        return None
    return start, end


# --------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------


def fim_samples_for_file(
    text: str,
    path: str,
    language: str | None,
    blob_sha: str,
    config: FimConfig,
    *,
    repo_name: str = "",
    neighbours: list[tuple[str, str]] | None = None,
) -> tuple[list[FimSample], str | None]:
    """The FIM samples of one kept file, and None; or no samples and why (one of
    FIM_SKIP_REASONS): "special_tokens" (the file holds one and the mode is "drop"),
    "not_selected" (left out by `fim_rate`, decided from blob_sha and seed), "too_short" (no
    middle fits). `neighbours` are the repo's other files as (path, content), used when
    `config.repo_context` is on; in "drop" mode those holding special tokens are left out of the
    context, in "escape" mode they are escaped."""
    if contains_special_tokens(text):
        if config.special_tokens == "drop":
            return [], "special_tokens"
        text = escape_special_tokens(text)
    if random.Random(f"{blob_sha}:{config.seed}:fim_rate").random() >= config.fim_rate:
        return [], "not_selected"
    if text.isspace() or not text:
        return [], "too_short"
    spans = choose_spans(text, language, blob_sha, config)
    if not spans:
        return [], "too_short"
    context: list[tuple[str, str]] = []
    if config.repo_context:
        usable = []
        for other, content in neighbours or []:
            if contains_special_tokens(content):
                if config.special_tokens == "drop":
                    continue
                content = escape_special_tokens(content)
            usable.append((escape_special_tokens(other), content))
        context = select_context(escape_special_tokens(path), usable, config.repo_context_chars)
    samples = []
    for span in spans:
        prefix, middle, suffix = text[: span.start], text[span.start : span.end], text[span.end :]
        if config.repo_context:
            formatted = format_repo_fim(
                escape_special_tokens(repo_name),
                context,
                escape_special_tokens(path),
                prefix,
                suffix,
                middle,
            )
        else:
            formatted = format_fim(prefix, suffix, middle)
        samples.append(
            FimSample(
                text=formatted,
                prefix=prefix,
                middle=middle,
                suffix=suffix,
                strategy=span.strategy,
                start_line=text.count("\n", 0, span.start) + 1,
                end_line=text.count("\n", 0, span.end - 1) + 1,
            )
        )
    return samples, None
