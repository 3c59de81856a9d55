"""Tests for FIM sample generation in Qwen2.5-Coder's format (coder_assets.core.samples.fim)."""

from __future__ import annotations

import ast
import functools
import hashlib
import re
import textwrap
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from coder_assets.core.languages import language_of
from coder_assets.core.samples.fim import (
    ENDOFTEXT,
    ESCAPE_CHAR,
    FILE_SEP,
    FIM_MIDDLE,
    FIM_PAD,
    FIM_PREFIX,
    FIM_STRATEGIES,
    FIM_SUFFIX,
    IM_END,
    IM_START,
    MAX_LINE_SPAN_LINES,
    QWEN_SPECIAL_TOKENS,
    REPO_NAME,
    FimConfig,
    FimConfigError,
    FimFormatError,
    FimSample,
    FimSpan,
    choose_spans,
    contains_special_tokens,
    context_chars,
    escape_special_tokens,
    fim_documents,
    fim_samples_for_file,
    format_fim,
    format_repo_fim,
    select_context,
)
from coder_assets.demo.sample_repos import create_sample_repos

# Any `<|name|>` string, as a test-side oracle independent of the module's own pattern.
TOKEN_RE = re.compile(r"<\|[A-Za-z0-9_]+\|>")

PYTHON = '''"""Retry helpers for the order events handler."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a failed publish."""

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry `attempt` (1-based)."""
        if attempt < 1:
            return 0.0
        return min(self.cap, self.base * 2 ** (attempt - 1))


def retry(policy: RetryPolicy, action) -> bool:
    for attempt in range(1, policy.attempts + 1):
        try:
            action()
        except ConnectionError:
            time.sleep(policy.delay(attempt))
            continue
        else:
            return True
    return False
'''

PYTHON_UNICODE = '''"""Größenangaben für Bestellungen — Übersicht 📦."""

EINHEITEN = {"größe": "Größe", "straße": "Straße", "naïve": "naïve café"}


def beschriftung(schlüssel: str, menge: int = 1) -> str:
    """Die Beschriftung für `schlüssel` mit Menge."""
    if menge > 1:
        return f"{menge}× {EINHEITEN[schlüssel]}"
    return "→ " + EINHEITEN.get(schlüssel, "unbekannt ✗").upper()
'''

GO = """package handler

import (
	"errors"
	"time"
)

// RetryPolicy says how often to retry a failed publish.
type RetryPolicy struct {
	Attempts  int
	BaseDelay time.Duration
	MaxDelay  time.Duration
}

// Delay returns the wait before retry attempt n.
func (p RetryPolicy) Delay(n int) time.Duration {
	if n < 1 {
		return 0
	}
	d := p.BaseDelay << (n - 1)
	if d <= 0 || d > p.MaxDelay {
		return p.MaxDelay
	}
	return d
}

var ErrGivingUp = errors.New("giving up")

func Retry(p RetryPolicy, action func() error) error {
	for i := 1; i <= p.Attempts; i++ {
		if err := action(); err == nil { return nil }
		time.Sleep(p.Delay(i))
	}
	return ErrGivingUp
}
"""

GO_UNICODE = """package labels

import "strings"

// Größe — die Beschriftung einer Bestellung 📦.
func Größe(name string) string {
	prefix := "→ größe: "
	return prefix + strings.ToUpper("straße " + name)
}

func Naïve(n int) int {
	return n*2 + len("café")
}
"""

YAML = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: order-events-handler
  namespace: orders
spec:
  replicas: 2
  template:
    spec:
      containers:
        - name: handler
          image: registry.homelab/order-events-handler:1.4.0
"""

MARKDOWN = """# ADR 0003: Use NATS for order events

## Context and Problem Statement

We need a message bus for order events. The homelab already runs NATS JetStream.

## Decision Outcome

Chosen option: NATS JetStream, because it is already operated and backed up.
"""

CRLF_COMBINING = (
    "line one cafe\u0301\r\n"
    "line two nai\u0308ve\r\n"
    "emoji 👩\u200d💻 and flags\r\n"
    "last line without break"
)

SOURCES = {
    "python": (PYTHON, "src/retry.py"),
    "python_unicode": (PYTHON_UNICODE, "src/beschriftung.py"),
    "go": (GO, "internal/handler/retry.go"),
    "go_unicode": (GO_UNICODE, "internal/labels/labels.go"),
    "yaml": (YAML, "deploy/deployment.yaml"),
    "markdown": (MARKDOWN, "docs/adr/0003-nats.md"),
    "crlf_combining": (CRLF_COMBINING, "notes.txt"),
    "python_syntax_error": ("def broken(:\n    return 1\n" + PYTHON, "src/broken.py"),
    "go_syntax_error": ("package x\nfunc f( {\n\treturn\n}\n" + GO, "broken.go"),
}

ALL_SYNTAX = FimConfig(fim_rate=1.0, samples_per_file=3, strategy_weights=(("syntax_span", 1.0),))


def blob_sha(text: str) -> str:
    """The git blob id of `text`, as the snapshot would give it."""
    data = text.encode("utf-8")
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def assert_sample_is_consistent(sample: FimSample, text: str, config: FimConfig) -> None:
    assert sample.prefix + sample.middle + sample.suffix == text
    assert sample.middle
    assert config.min_middle_chars <= len(sample.middle) <= config.max_middle_chars
    assert sample.strategy in FIM_STRATEGIES
    if config.repo_context:
        assert sample.text.endswith(format_fim(sample.prefix, sample.suffix, sample.middle))
    else:
        assert sample.text == format_fim(sample.prefix, sample.suffix, sample.middle)
    # The lines point at the middle: it starts on start_line and ends on end_line.
    assert sample.start_line == sample.prefix.count("\n") + 1
    assert sample.end_line == sample.start_line + sample.middle[:-1].count("\n")
    lines = text.split("\n")
    assert sample.middle.split("\n")[0] in lines[sample.start_line - 1]
    last = sample.middle[:-1] if sample.middle.endswith("\n") else sample.middle
    assert last.split("\n")[-1] in lines[sample.end_line - 1]


# --------------------------------------------------------------------------------------------
# Tokens and formats
# --------------------------------------------------------------------------------------------


def test_special_token_constants_are_qwens() -> None:
    assert QWEN_SPECIAL_TOKENS == (
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
    )
    assert (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, FIM_PAD) == QWEN_SPECIAL_TOKENS[:4]
    assert (REPO_NAME, FILE_SEP, ENDOFTEXT, IM_START, IM_END) == QWEN_SPECIAL_TOKENS[4:]


def test_format_fim_is_prefix_suffix_middle() -> None:
    assert format_fim("def f():\n", "\nprint(f())\n", "    return 1") == (
        "<|fim_prefix|>def f():\n<|fim_suffix|>\nprint(f())\n<|fim_middle|>    return 1"
    )


def test_format_repo_fim_puts_context_first_and_the_target_last_in_fim_form() -> None:
    text = format_repo_fim(
        "homelab/orders",
        [("go.mod", "module orders\n"), ("README.md", "# Orders")],
        "main.go",
        "package main\n",
        "}\n",
        "func main() {\n",
    )
    assert text == (
        "<|repo_name|>homelab/orders\n"
        "<|file_sep|>go.mod\nmodule orders\n\n"
        "<|file_sep|>README.md\n# Orders\n"
        "<|file_sep|>main.go\n"
        "<|fim_prefix|>package main\n<|fim_suffix|>}\n<|fim_middle|>func main() {\n"
    )
    assert format_repo_fim("r", [], "a.py", "p", "s", "m") == (
        "<|repo_name|>r\n<|file_sep|>a.py\n<|fim_prefix|>p<|fim_suffix|>s<|fim_middle|>m"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain code", False),
        ("x = '<|fim_middle|>'", True),
        ("prompt = f'{a}<|im_start|>user'", True),
        ("<|box_start|>", True),
        ("a <| b |> c", False),
        ("<|not a token|>", False),
        ("<\u200b|fim_middle|>", False),
        ("<|endoftext|", False),
    ],
)
def test_contains_special_tokens(text: str, expected: bool) -> None:
    assert contains_special_tokens(text) is expected


@pytest.mark.parametrize(
    "text",
    [
        "x = '<|fim_middle|>'",
        "".join(QWEN_SPECIAL_TOKENS),
        "<|<|im_end|>|>\n<|endoftext|><|endoftext|>",
        "no tokens at all",
    ],
)
def test_escape_special_tokens_leaves_no_token_and_only_adds_zero_width_spaces(text: str) -> None:
    escaped = escape_special_tokens(text)
    assert not contains_special_tokens(escaped)
    assert not TOKEN_RE.search(escaped)
    assert escaped.replace(ESCAPE_CHAR, "") == text
    assert escaped.count(ESCAPE_CHAR) == len(TOKEN_RE.findall(text))


# --------------------------------------------------------------------------------------------
# The invariant over many sources and seeds
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_sample_reassembles_the_file_and_points_at_its_middle(name: str) -> None:
    text, path = SOURCES[name]
    language = language_of(path)
    strategies: Counter[str] = Counter()
    for seed in range(40):
        config = FimConfig(fim_rate=1.0, samples_per_file=3, seed=seed, max_middle_chars=400)
        samples, skip = fim_samples_for_file(text, path, language, blob_sha(text), config)
        assert skip is None
        assert 1 <= len(samples) <= 3
        assert len({(len(s.prefix), len(s.middle)) for s in samples}) == len(samples)
        for sample in samples:
            assert_sample_is_consistent(sample, text, config)
            strategies[sample.strategy] += 1
    expected = {"random_span", "line_span"}
    if name in {"python", "python_unicode", "go", "go_unicode"}:
        expected.add("syntax_span")
    assert set(strategies) == expected


def test_an_unchanged_file_yields_byte_identical_samples() -> None:
    config = FimConfig(fim_rate=1.0, samples_per_file=4)
    first = fim_samples_for_file(PYTHON, "src/retry.py", "python", blob_sha(PYTHON), config)
    second = fim_samples_for_file(PYTHON, "src/retry.py", "python", blob_sha(PYTHON), config)
    assert first == second
    assert [s.text for s in first[0]] == [s.text for s in second[0]]


def test_spans_depend_on_blob_sha_and_seed() -> None:
    config = FimConfig(samples_per_file=2)
    base = choose_spans(GO, "go", "a" * 40, config)
    assert base == choose_spans(GO, "go", "a" * 40, config)
    other_shas = {tuple(choose_spans(GO, "go", f"{i:040x}", config)) for i in range(10)}
    other_seeds = {
        tuple(choose_spans(GO, "go", "a" * 40, FimConfig(samples_per_file=2, seed=seed)))
        for seed in range(10)
    }
    assert len(other_shas) > 5
    assert len(other_seeds) > 5


@pytest.mark.parametrize("samples_per_file", [0, 1, 2, 5])
def test_choose_spans_gives_distinct_non_empty_spans(samples_per_file: int) -> None:
    config = FimConfig(samples_per_file=samples_per_file)
    spans = choose_spans(PYTHON, "python", blob_sha(PYTHON), config)
    assert len(spans) == samples_per_file
    assert len({(span.start, span.end) for span in spans}) == samples_per_file
    assert all(0 <= span.start < span.end <= len(PYTHON) for span in spans)


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------


@functools.cache
def spans_of(text: str, language: str | None, strategy: str, seeds: int = 200) -> list[FimSpan]:
    """The spans of `strategy` alone over many seeds (cached: several tests read the same)."""
    config = FimConfig(samples_per_file=3, strategy_weights=((strategy, 1.0),))
    return [
        span
        for seed in range(seeds)
        for span in choose_spans(text, language, f"{seed:040x}", config)
    ]


def test_line_spans_cut_at_line_starts() -> None:
    for span in spans_of(YAML, "yaml", "line_span"):
        assert span.strategy == "line_span"
        assert span.start == 0 or YAML[span.start - 1] == "\n"
        assert span.end == len(YAML) or YAML[span.end - 1] == "\n"
        assert 1 <= YAML[span.start : span.end].count("\n") <= MAX_LINE_SPAN_LINES


def test_random_spans_keep_characters_together() -> None:
    spans = spans_of(CRLF_COMBINING, None, "random_span")
    assert {span.strategy for span in spans} == {"random_span"}
    for span in spans:
        for cut in (span.start, span.end):
            if 0 < cut < len(CRLF_COMBINING):
                assert CRLF_COMBINING[cut - 1 : cut + 1] != "\r\n"
                assert not unicodedata.combining(CRLF_COMBINING[cut])
                assert "\u200d" not in CRLF_COMBINING[cut - 1 : cut + 1]


@pytest.mark.parametrize("text", [PYTHON, PYTHON_UNICODE], ids=["ascii", "unicode"])
def test_python_syntax_spans_are_parseable_code(text: str) -> None:
    middles = [text[s.start : s.end] for s in spans_of(text, "python", "syntax_span")]
    assert middles
    for middle in middles:
        try:
            ast.parse(middle.strip(), mode="eval")
        except SyntaxError:
            ast.parse(textwrap.dedent(middle))  # a body or block of whole statements


def test_python_syntax_spans_include_bodies_blocks_and_expressions() -> None:
    middles = {PYTHON[s.start : s.end] for s in spans_of(PYTHON, "python", "syntax_span")}
    # The docstring stays in the prefix, the body is whole lines.
    assert (
        "        if attempt < 1:\n"
        "            return 0.0\n"
        "        return min(self.cap, self.base * 2 ** (attempt - 1))\n"
    ) in middles
    assert "            return True\n" in middles  # an else block
    assert "self.base * 2 ** (attempt - 1)" in middles


def test_python_syntax_offsets_handle_non_ascii_text() -> None:
    middles = {
        PYTHON_UNICODE[s.start : s.end] for s in spans_of(PYTHON_UNICODE, "python", "syntax_span")
    }
    assert 'EINHEITEN.get(schlüssel, "unbekannt ✗").upper()' in middles
    assert '"→ " + EINHEITEN.get(schlüssel, "unbekannt ✗").upper()' in middles


def test_go_syntax_spans_are_bodies_blocks_and_expressions() -> None:
    middles = {GO[s.start : s.end] for s in spans_of(GO, "go", "syntax_span")}
    assert "\t\treturn p.MaxDelay\n" in middles  # a block, whole lines between braces
    assert "return nil" in middles  # a one-line block, trimmed
    assert "p.BaseDelay << (n - 1)" in middles  # an expression
    for middle in middles:
        assert middle.count("{") == middle.count("}")
        assert middle.count("(") == middle.count(")")


def test_go_syntax_offsets_handle_non_ascii_text() -> None:
    middles = {GO_UNICODE[s.start : s.end] for s in spans_of(GO_UNICODE, "go", "syntax_span")}
    assert 'strings.ToUpper("straße " + name)' in middles
    assert 'n*2 + len("café")' in middles
    assert '\tprefix := "→ größe: "\n\treturn prefix + strings.ToUpper("straße " + name)\n' in (
        middles
    )


@pytest.mark.parametrize(
    ("name", "language"),
    [
        ("yaml", "yaml"),
        ("markdown", "markdown"),
        ("python_syntax_error", "python"),
        ("go_syntax_error", "go"),
        ("python", None),
    ],
)
def test_syntax_spans_fall_back_to_line_spans(name: str, language: str | None) -> None:
    text, path = SOURCES[name]
    samples, skip = fim_samples_for_file(text, path, language, blob_sha(text), ALL_SYNTAX)
    assert skip is None
    assert samples
    assert {sample.strategy for sample in samples} == {"line_span"}


def test_syntax_spans_fall_back_when_no_node_fits() -> None:
    text = "a = b\nc = d\n" * 5
    config = FimConfig(fim_rate=1.0, strategy_weights=(("syntax_span", 1.0),), max_middle_chars=8)
    samples, skip = fim_samples_for_file(text, "names.py", "python", "0" * 40, config)
    assert skip is None
    assert [sample.strategy for sample in samples] == ["line_span", "line_span"]


def test_max_middle_chars_bounds_every_strategy() -> None:
    for strategy in FIM_STRATEGIES:
        config = FimConfig(
            fim_rate=1.0,
            samples_per_file=3,
            strategy_weights=((strategy, 1.0),),
            max_middle_chars=60,
        )
        for seed in range(20):
            for span in choose_spans(PYTHON, "python", f"{seed:040x}", config):
                assert 1 <= span.end - span.start <= 60


# --------------------------------------------------------------------------------------------
# Skips
# --------------------------------------------------------------------------------------------

WITH_TOKEN = (
    'PROMPT = "<|fim_prefix|>" + before + "<|fim_suffix|>" + after + "<|fim_middle|>"\n' + PYTHON
)


def test_a_file_with_special_tokens_is_dropped_by_default() -> None:
    config = FimConfig(fim_rate=1.0)
    samples, skip = fim_samples_for_file(WITH_TOKEN, "fim.py", "python", "f" * 40, config)
    assert (samples, skip) == ([], "special_tokens")


def test_escaped_samples_carry_only_our_own_fim_markers() -> None:
    config = FimConfig(fim_rate=1.0, samples_per_file=4, special_tokens="escape")
    for seed in range(20):
        samples, skip = fim_samples_for_file(WITH_TOKEN, "fim.py", "python", f"{seed:040x}", config)
        assert skip is None
        escaped = escape_special_tokens(WITH_TOKEN)
        for sample in samples:
            assert_sample_is_consistent(sample, escaped, config)
            assert TOKEN_RE.findall(sample.text) == [FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE]
            assert sample.text.index(FIM_SUFFIX) == len(FIM_PREFIX) + len(sample.prefix)
            assert sample.text.index(FIM_MIDDLE) == (
                len(FIM_PREFIX) + len(sample.prefix) + len(FIM_SUFFIX) + len(sample.suffix)
            )


@pytest.mark.parametrize(
    ("fim_rate", "expected"), [(0.0, "not_selected"), (1.0, None)], ids=["never", "always"]
)
def test_fim_rate_selects_files(fim_rate: float, expected: str | None) -> None:
    _, skip = fim_samples_for_file(GO, "a.go", "go", "0" * 40, FimConfig(fim_rate=fim_rate))
    assert skip == expected


def test_fim_rate_is_a_deterministic_fraction_of_files() -> None:
    config = FimConfig(fim_rate=0.5, samples_per_file=1)

    def selected() -> list[bool]:
        return [
            fim_samples_for_file(YAML, "d.yaml", "yaml", f"{i:040x}", config)[1] is None
            for i in range(200)
        ]

    first = selected()
    assert first == selected()
    assert 70 <= sum(first) <= 130


@pytest.mark.parametrize(
    ("text", "config"),
    [
        ("", FimConfig(fim_rate=1.0)),
        ("\n\n   \n", FimConfig(fim_rate=1.0)),
        ("x = 1\n", FimConfig(fim_rate=1.0, min_middle_chars=50, max_middle_chars=60)),
    ],
    ids=["empty", "blank", "shorter-than-min-middle"],
)
def test_files_without_a_middle_are_too_short(text: str, config: FimConfig) -> None:
    assert fim_samples_for_file(text, "a.py", "python", "0" * 40, config) == ([], "too_short")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fim_rate": 1.5},
        {"samples_per_file": -1},
        {"min_middle_chars": 0},
        {"min_middle_chars": 10, "max_middle_chars": 5},
        {"special_tokens": "keep"},
        {"strategy_weights": (("ast_span", 1.0),)},
        {"strategy_weights": (("line_span", -1.0),)},
        {"strategy_weights": (("line_span", 0.0),)},
        {"repo_context_chars": -1},
    ],
)
def test_fim_config_refuses_bad_settings(kwargs: dict) -> None:
    with pytest.raises(FimConfigError):
        FimConfig(**kwargs)


# --------------------------------------------------------------------------------------------
# Repository context
# --------------------------------------------------------------------------------------------

REPO_FILES = [
    ("internal/handler/retry.go", GO),
    ("README.md", MARKDOWN),
    ("internal/handler/handler.go", "package handler\n\nfunc Handle() {}\n"),
    ("internal/labels/labels.go", GO_UNICODE),
    ("deploy/deployment.yaml", YAML),
    ("internal/handler/testdata/empty.go", "   \n"),
    ("internal/handler/doc.md", "Handler docs.\n"),
]


def test_select_context_ranks_directory_then_language_then_the_rest() -> None:
    chosen = select_context("internal/handler/retry.go", REPO_FILES, 100_000)
    assert [path for path, _ in chosen] == [
        "internal/handler/handler.go",
        "internal/handler/doc.md",
        "internal/labels/labels.go",
        "README.md",
        "deploy/deployment.yaml",
    ]
    assert select_context("internal/handler/retry.go", REPO_FILES[::-1], 100_000) == chosen


def test_select_context_keeps_whole_files_within_the_budget() -> None:
    files = dict(REPO_FILES)
    wanted = ["internal/handler/handler.go", "internal/handler/doc.md", "README.md"]
    budget = sum(context_chars(path, files[path]) for path in wanted)
    assert context_chars("internal/labels/labels.go", GO_UNICODE) > context_chars(
        "README.md", MARKDOWN
    )
    chosen = select_context("internal/handler/retry.go", REPO_FILES, budget)
    # labels.go is ranked before README.md but does not fit in what is left; README.md does.
    assert [path for path, _ in chosen] == wanted
    assert all(content == dict(REPO_FILES)[path] for path, content in chosen)
    assert sum(context_chars(path, content) for path, content in chosen) <= budget
    assert select_context("internal/handler/retry.go", REPO_FILES, 10) == []


def test_repo_context_samples_use_the_repo_format_within_the_budget() -> None:
    budget = 400
    config = FimConfig(fim_rate=1.0, repo_context=True, repo_context_chars=budget)
    samples, skip = fim_samples_for_file(
        GO,
        "internal/handler/retry.go",
        "go",
        blob_sha(GO),
        config,
        repo_name="homelab/order-events-handler",
        neighbours=REPO_FILES,
    )
    assert skip is None
    assert samples
    header = "<|repo_name|>homelab/order-events-handler\n"
    for sample in samples:
        assert_sample_is_consistent(sample, GO, config)
        assert sample.text.startswith(header)
        target = f"{FILE_SEP}internal/handler/retry.go\n" + format_fim(
            sample.prefix, sample.suffix, sample.middle
        )
        assert sample.text.endswith(target)
        context_part = sample.text[len(header) : -len(target)]
        assert 0 < len(context_part) <= budget
        assert context_part.count(FILE_SEP) == 2  # handler.go and doc.md
        assert "internal/handler/retry.go" not in context_part


@pytest.mark.parametrize("mode", ["drop", "escape"])
def test_repo_context_never_carries_a_neighbours_special_tokens(mode: str) -> None:
    neighbours = [("internal/handler/prompt.go", 'package handler\n\nconst P = "<|im_start|>"\n')]
    config = FimConfig(fim_rate=1.0, repo_context=True, special_tokens=mode)
    samples, _ = fim_samples_for_file(
        GO,
        "internal/handler/retry.go",
        "go",
        blob_sha(GO),
        config,
        repo_name="r",
        neighbours=neighbours,
    )
    assert samples
    for sample in samples:
        assert TOKEN_RE.findall(sample.text)[:1] == [REPO_NAME]
        assert IM_START not in sample.text
        assert ("prompt.go" in sample.text) is (mode == "escape")


# --------------------------------------------------------------------------------------------
# The demo's sample repositories
# --------------------------------------------------------------------------------------------


def test_sample_repos_yield_all_strategies_and_keep_the_invariant(tmp_path: Path) -> None:
    config = FimConfig(fim_rate=1.0, samples_per_file=2)
    strategies: Counter[str] = Counter()
    files = 0
    for repo in create_sample_repos(tmp_path):
        for file in sorted(repo.rglob("*")):
            if ".git" in file.parts or file.suffix not in {".py", ".go", ".yaml", ".md"}:
                continue
            text = file.read_text(encoding="utf-8")
            path = file.relative_to(repo).as_posix()
            samples, skip = fim_samples_for_file(
                text, path, language_of(path), blob_sha(text), config, repo_name=repo.name
            )
            assert skip is None, path
            files += 1
            for sample in samples:
                assert_sample_is_consistent(sample, text, config)
                strategies[sample.strategy] += 1
    assert files >= 20
    assert set(strategies) == set(FIM_STRATEGIES)
    assert sum(strategies.values()) == 2 * files


@pytest.mark.parametrize("strategy", ["random_span", "line_span", "syntax_span"])
def test_spans_never_start_or_end_inside_a_placeholder(strategy: str) -> None:
    text = "".join(
        f'def connect_{n}(url):\n    token = "<SECRET_GITEA_TOKEN_{n}>"\n'
        f"    headers = {{'Authorization': '<SECRET_AUTH_HEADER_{n}>'}}\n"
        f"    return call(url, token, headers)\n\n"
        for n in range(1, 6)
    )
    placeholders = [m.span() for m in re.finditer(r"<SECRET_[A-Z_]+_\d+>", text)]
    config = FimConfig(
        samples_per_file=4,
        strategy_weights=((strategy, 1.0),),
        max_middle_chars=60,
    )
    spans = [
        span for seed in range(150) for span in choose_spans(text, "python", f"{seed:040x}", config)
    ]
    assert len(spans) > 300
    for span in spans:
        for at in (span.start, span.end):
            assert not any(start < at < end for start, end in placeholders), (strategy, at)


def test_fim_documents_read_the_files_in_file_order() -> None:
    plain = format_fim("a\n", "c\n", "b\n")
    assert fim_documents(plain) == [("", "a\nb\nc\n")]
    with_context = format_repo_fim("homelab/app", [("x.py", "x = 1")], "y.py", "a", "c", "b")
    assert fim_documents(with_context) == [("x.py", "x = 1"), ("y.py", "abc")]
    with pytest.raises(FimFormatError):
        fim_documents("no markers here")


def test_a_middle_of_only_punctuation_is_never_chosen() -> None:
    text = "".join(f".rule-{n} {{\n  color: red;\n}}\n\n" for n in range(30))
    config = FimConfig(samples_per_file=4, strategy_weights=(("line_span", 1.0),))
    spans = [s for seed in range(100) for s in choose_spans(text, "css", f"{seed:040x}", config)]
    assert len(spans) > 300
    assert all(any(c.isalnum() for c in text[s.start : s.end]) for s in spans)
