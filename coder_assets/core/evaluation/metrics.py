"""Code completion metrics as CrossCodeEval / RepoBench define them, in pure Python.

Per completion (`score_completion`), with `language` choosing the comment and string syntax:

- exact match: after `normalise_code` (comments removed, every line stripped of surrounding
  whitespace, blank lines dropped) the prediction, trimmed to as many lines as the reference has
  (`trim_to_reference`), equals the reference line for line. CrossCodeEval references are one
  statement and its evaluation cuts the prediction to the first statement; trimming to the
  reference's line count is that rule for one-line references and its natural extension to the
  multi-line middles of our FIM samples. A reference with no code lines (empty, or only a
  comment) is matched only by a prediction with no code lines: the prediction is then not trimmed.
- edit similarity: `1 - levenshtein(a, b) / max(len(a), len(b))` over characters, 1.0 for two
  empty strings. `score_completion` applies it to the same normalised, trimmed texts that exact
  match compares, so indentation and comments do not count.
- identifier exact match, precision, recall and F1 (`identifier_match`): the identifiers of the
  trimmed prediction and of the reference (`identifiers`: names only, without keywords, string
  literals and comments); exact match is equality of the two lists in order, precision / recall
  count the multiset overlap.

`copy_baseline` is the prediction of no model at all (the lines above the gap), the floor
against which a model's scores mean something. `aggregate` averages rows of these scores.
Everything here is deterministic and needs no model.

Lexing is by a small hand-written scanner, not a parser, because FIM middles and predictions are
fragments that rarely parse. A fragment that begins inside a string or a block comment is lexed
as if it began in code. Python f-strings count as strings as a whole, the names inside their
`{...}` included. In the `#`-comment languages (YAML, shell, ...) a lone apostrophe opens a
string to the end of its line. Languages without an entry in the syntax table (and None) are
compared as plain text: nothing is removed as a comment or string, and there are no keywords.
"""

from __future__ import annotations

import keyword
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from coder_assets.core.errors import CoderAssetsError

# Levenshtein runs the two-row DP, O(len(a) * len(b)) time in pure Python (about 10 M cells/s).
# Beyond this many cells (after the common prefix and suffix are removed) it refuses rather than
# stall an evaluation for minutes: a 2,000 by 2,000 character pair is the most it computes.
MAX_LEVENSHTEIN_CELLS = 4_000_000

PYTHON_KEYWORDS = frozenset(keyword.kwlist)
GO_KEYWORDS = frozenset(
    """break case chan const continue default defer else fallthrough for func go goto if import
    interface map package range return select struct switch type var""".split()
)

METRIC_NAMES = (
    "exact_match",
    "edit_similarity",
    "identifier_exact_match",
    "identifier_precision",
    "identifier_recall",
    "identifier_f1",
)


class MetricsError(CoderAssetsError, ValueError):
    """Inputs the metrics cannot score: texts too long to compare, or rows that do not agree."""


@dataclass(frozen=True)
class _Syntax:
    """Comment and string syntax of one language, for the scanner."""

    line_comments: tuple[str, ...] = ()
    block_comments: tuple[tuple[str, str], ...] = ()
    # (delimiter, backslash escapes, may span lines); longer delimiters first.
    strings: tuple[tuple[str, bool, bool], ...] = ()
    string_prefix: re.Pattern[str] | None = None  # letters that may precede a quote (r"", b'')
    keywords: frozenset[str] = frozenset()


_C_STRINGS = (('"', True, False), ("'", True, False))
_PYTHON = _Syntax(
    line_comments=("#",),
    strings=(('"""', True, True), ("'''", True, True), ('"', True, False), ("'", True, False)),
    string_prefix=re.compile(r"(?<![\w])(?:[rRbBuUfF]|[rR][bBfF]|[bBfF][rR])$"),
    keywords=PYTHON_KEYWORDS,
)
_GO = _Syntax(
    line_comments=("//",),
    block_comments=(("/*", "*/"),),
    strings=(*_C_STRINGS, ("`", False, True)),
    keywords=GO_KEYWORDS,
)
_C_LIKE = _Syntax(line_comments=("//",), block_comments=(("/*", "*/"),), strings=_C_STRINGS)
_JS_LIKE = _Syntax(
    line_comments=("//",), block_comments=(("/*", "*/"),), strings=(*_C_STRINGS, ("`", True, True))
)
_HASH = _Syntax(line_comments=("#",), strings=_C_STRINGS)
_HCL = _Syntax(line_comments=("#", "//"), block_comments=(("/*", "*/"),), strings=_C_STRINGS[:1])
_DASH_DASH = _Syntax(line_comments=("--",), strings=_C_STRINGS)
_PLAIN = _Syntax()

_SYNTAX: dict[str, _Syntax] = {
    "python": _PYTHON,
    "go": _GO,
    **dict.fromkeys(("c", "cpp", "java", "rust", "protobuf", "groovy"), _C_LIKE),
    **dict.fromkeys(("javascript", "typescript"), _JS_LIKE),
    **dict.fromkeys(("shell", "yaml", "toml", "dockerfile", "make", "just", "ruby", "nix"), _HASH),
    **dict.fromkeys(("terraform", "hcl"), _HCL),
    **dict.fromkeys(("sql", "lua"), _DASH_DASH),
}

# Numbers are matched first so that `0x1f` or `1e10` do not yield the names `x1f` and `e10`.
_WORD = re.compile(r"\d[\w.]*|[^\W\d]\w*")
_OPENERS: dict[_Syntax, re.Pattern[str]] = {}


def _syntax(language: str | None) -> _Syntax:
    return _SYNTAX.get(language or "", _PLAIN)


def _opener(syntax: _Syntax) -> re.Pattern[str] | None:
    """A pattern that finds the next comment or string opener of `syntax`."""
    if syntax not in _OPENERS:
        tokens = [*syntax.line_comments, *(o for o, _ in syntax.block_comments)]
        tokens += [delimiter for delimiter, _, _ in syntax.strings]
        tokens.sort(key=len, reverse=True)
        _OPENERS[syntax] = re.compile("|".join(map(re.escape, tokens))) if tokens else None
    return _OPENERS[syntax]


def _string_end(text: str, start: int, delimiter: str, escapes: bool, multiline: bool) -> int:
    """The end (exclusive) of a string whose delimiter opens at `start`. An unterminated string
    ends at the line's end (single-line kinds) or at the end of the text."""
    i = start + len(delimiter)
    n = len(text)
    while i < n:
        if escapes and text[i] == "\\":
            i += 2
            continue
        if text.startswith(delimiter, i):
            return i + len(delimiter)
        if text[i] == "\n" and not multiline:
            return i
        i += 1
    return n


def _segments(text: str, language: str | None) -> list[tuple[str, str]]:
    """`text` cut into ("code" | "string" | "comment", piece) in order; the pieces join to it."""
    syntax = _syntax(language)
    opener = _opener(syntax)
    if opener is None:
        return [("code", text)] if text else []
    out: list[tuple[str, str]] = []
    code_start = pos = 0
    while True:
        match = opener.search(text, pos)
        if match is None:
            break
        token, at = match.group(0), match.start()
        if token in syntax.line_comments:
            end = text.find("\n", at)
            kind, start, end = "comment", at, len(text) if end < 0 else end
        else:
            close = next((c for o, c in syntax.block_comments if o == token), None)
            if close is not None:
                end = text.find(close, at + len(token))
                kind, start, end = "comment", at, len(text) if end < 0 else end + len(close)
            else:
                _, escapes, multiline = next(s for s in syntax.strings if s[0] == token)
                # A prefix (r"...", f'...') belongs to the string, not to the code's names.
                prefix = syntax.string_prefix and syntax.string_prefix.search(text, code_start, at)
                start = prefix.start() if prefix else at
                kind, end = "string", _string_end(text, at, token, escapes, multiline)
        if start > code_start:
            out.append(("code", text[code_start:start]))
        out.append((kind, text[start:end]))
        code_start = pos = end
    if code_start < len(text):
        out.append(("code", text[code_start:]))
    return out


def strip_comments(text: str, language: str | None) -> str:
    """`text` without its comments. A removed comment leaves its line breaks behind, so code
    before and after a multi-line block comment stays on separate lines; strings are kept."""
    return "".join(
        "\n" * piece.count("\n") if kind == "comment" else piece
        for kind, piece in _segments(text, language)
    )


def first_line(text: str) -> str:
    """The first line of `text` that is not blank, stripped; "" when there is none."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def normalise_code(text: str, language: str | None) -> str:
    """`text` without comments, each line stripped of surrounding whitespace, blank lines dropped,
    joined with "\\n"."""
    lines = (line.strip() for line in strip_comments(text, language).splitlines())
    return "\n".join(line for line in lines if line)


def trim_to_reference(prediction: str, reference: str, language: str | None) -> str:
    """The normalised prediction cut to as many lines as the normalised reference has; the whole
    normalised prediction when the reference has no code lines."""
    wanted = normalise_code(reference, language)
    predicted = normalise_code(prediction, language)
    if not wanted:
        return predicted
    return "\n".join(predicted.split("\n")[: wanted.count("\n") + 1])


def copy_baseline(prefix: str, reference: str, language: str | None) -> str:
    """The completion of a model that knows nothing but the prompt: the prefix's last code lines,
    as many as the reference has (the metrics keep no more of any prediction). What it scores is
    the floor a model's FIM scores are read against: a model below it completes less than a copy
    of the lines above the gap does."""
    wanted = normalise_code(reference, language)
    lines = [line for line in normalise_code(prefix, language).split("\n") if line]
    return "\n".join(lines[-(wanted.count("\n") + 1) :]) if wanted and lines else ""


def exact_match(prediction: str, reference: str, language: str | None = "python") -> bool:
    """Whether the prediction, trimmed to the reference's lines, equals the reference once both
    are normalised (comments, surrounding whitespace and blank lines do not count)."""
    return trim_to_reference(prediction, reference, language) == normalise_code(reference, language)


def levenshtein(a: str, b: str, max_cells: int = MAX_LEVENSHTEIN_CELLS) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each) of a and b.

    Raises `MetricsError` when the DP table, after removing the common prefix and suffix, would
    exceed `max_cells` cells.
    """
    start = 0
    while start < len(a) and start < len(b) and a[start] == b[start]:
        start += 1
    end_a, end_b = len(a), len(b)
    while end_a > start and end_b > start and a[end_a - 1] == b[end_b - 1]:
        end_a -= 1
        end_b -= 1
    a, b = a[start:end_a], b[start:end_b]
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    if len(a) * len(b) > max_cells:
        raise MetricsError(
            f"edit distance of texts of {len(a)} and {len(b)} differing characters needs "
            f"{len(a) * len(b):,} DP cells, over the limit of {max_cells:,}: trim the prediction "
            "to the reference first (trim_to_reference), or pass a larger max_cells"
        )
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(
                min(
                    previous[j] + 1,
                    current[j - 1] + 1,
                    previous[j - 1] + (char_a != char_b),
                )
            )
        previous = current
    return previous[-1]


def edit_similarity(prediction: str, reference: str) -> float:
    """1 - levenshtein / max(len(prediction), len(reference)); 1.0 for two empty strings."""
    longest = max(len(prediction), len(reference))
    if longest == 0:
        return 1.0
    return 1.0 - levenshtein(prediction, reference) / longest


def identifiers(text: str, language: str | None) -> list[str]:
    """The identifier tokens of `text` in order, repeats kept; keywords, numbers, string literals
    and comments left out."""
    syntax = _syntax(language)
    names: list[str] = []
    for kind, piece in _segments(text, language):
        if kind != "code":
            continue
        for word in _WORD.findall(piece):
            if not word[0].isdigit() and word not in syntax.keywords:
                names.append(word)
    return names


def identifier_match(prediction: str, reference: str, language: str | None) -> dict[str, float]:
    """Identifier exact match (the two identifier lists are equal, in order) and precision, recall
    and F1 of their multiset overlap. Two texts without identifiers score 1.0 throughout; when
    only one of them has none, precision, recall and F1 are 0.0."""
    predicted = identifiers(prediction, language)
    wanted = identifiers(reference, language)
    if not predicted and not wanted:
        precision = recall = f1 = 1.0
    else:
        overlap = sum((Counter(predicted) & Counter(wanted)).values())
        precision = overlap / len(predicted) if predicted else 0.0
        recall = overlap / len(wanted) if wanted else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "identifier_exact_match": float(predicted == wanted),
        "identifier_precision": precision,
        "identifier_recall": recall,
        "identifier_f1": f1,
    }


def score_completion(prediction: str, reference: str, language: str | None) -> dict[str, float]:
    """Every metric of one completion (`METRIC_NAMES`), as floats: exact match on the trimmed,
    normalised texts; edit similarity between the same texts; identifier scores between the
    trimmed prediction (comments removed, trimmed the same way) and the reference."""
    wanted = normalise_code(reference, language)
    trimmed = trim_to_reference(prediction, reference, language)
    return {
        "exact_match": float(trimmed == wanted),
        "edit_similarity": edit_similarity(trimmed, wanted),
        **identifier_match(trimmed, wanted, language),
    }


def aggregate(rows: Iterable[Mapping[str, float | bool]]) -> dict[str, float]:
    """The mean of every metric over `rows` (booleans count as 0 / 1), and `count`: the number of
    rows. Only `{"count": 0}` for no rows. Every row must have the same metric names."""
    totals: dict[str, float] = {}
    names: set[str] | None = None
    count = 0
    for row in rows:
        if names is None:
            names = set(row)
        elif set(row) != names:
            raise MetricsError(
                f"row {count} has metrics {sorted(row)}, the rows before it {sorted(names)}: "
                "aggregate rows of one kind (score_completion's) at a time"
            )
        for name, value in row.items():
            totals[name] = totals.get(name, 0.0) + float(value)
        count += 1
    means = {name: total / count for name, total in sorted(totals.items())}
    return {**means, "count": count}
