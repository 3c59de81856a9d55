"""What every extractor returns, and the helpers they share: line bookkeeping that agrees with
`str.splitlines()`, deterministic phrasing, and docstring / doc-comment clean-up."""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from coder_assets.core.samples.records import ExtractedPair

PARSE_ERROR = "parse_error"
SOPS_ENCRYPTED = "sops_encrypted"


@dataclass(frozen=True)
class Extraction:
    """The pairs found in one file. `error` is set when the file as a whole was refused
    (`"parse_error"`, `"sops_encrypted"`); `pairs` is then empty. `skipped` counts units (functions,
    documents, ...) that were left out because they could not be parsed or handled."""

    pairs: list[ExtractedPair]
    error: str | None = None
    skipped: int = 0


class SourceLines:
    """The lines of a text as `text.splitlines()` sees them, with a map from character offsets to
    1-based line numbers. Parsers count lines their own way (Python also breaks on a lone `\\r`,
    tree-sitter only on `\\n`, `splitlines` also on form feeds and U+2028), so every line number an
    extractor reports goes through here."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.splitlines()
        self._starts: list[int] = []
        offset = 0
        for piece in text.splitlines(keepends=True):
            self._starts.append(offset)
            offset += len(piece)

    def __len__(self) -> int:
        return len(self.lines)

    def line_at(self, offset: int) -> int:
        """The 1-based line that holds character `offset` (clamped to the text)."""
        if not self._starts:
            return 1
        return max(1, bisect.bisect_right(self._starts, max(offset, 0)))

    def span(self, start_offset: int, end_offset: int) -> tuple[int, int]:
        """The 1-based inclusive line range of the characters `[start_offset, end_offset)`."""
        last = max(start_offset, end_offset - 1)
        return self.line_at(start_offset), self.line_at(last)

    def slice(self, start_line: int, end_line: int) -> str:
        """Lines `start_line..end_line` (1-based, inclusive) joined with `\\n`."""
        return "\n".join(self.lines[start_line - 1 : end_line])

    def contains(self, start_line: int, end_line: int, fragment: str) -> bool:
        """Whether `fragment` appears verbatim in lines `start_line..end_line`."""
        if not fragment or not 1 <= start_line <= end_line <= len(self.lines):
            return False
        return fragment in self.slice(start_line, end_line)


def row_starts(text: str, pattern: str) -> list[int]:
    """Character offsets at which each row begins when rows are split on regex `pattern`."""
    return [0, *(match.end() for match in re.finditer(pattern, text))]


def code_pair(
    lines: SourceLines,
    *,
    kind: str,
    instruction: str,
    output: str,
    start_line: int,
    end_line: int,
    input: str = "",
) -> ExtractedPair | None:
    """An ExtractedPair, or None when `output` is not verbatim inside its claimed line range, so
    that a bookkeeping slip drops one pair instead of publishing wrong provenance."""
    if not instruction.strip() or not lines.contains(start_line, end_line, output):
        return None
    return ExtractedPair(
        kind=kind,
        instruction=instruction,
        output=output,
        input=input,
        start_line=start_line,
        end_line=end_line,
    )


def pick(options: Sequence[str], *key: str) -> str:
    """One of `options`, always the same one for the same `key` (no randomness, no seed)."""
    digest = hashlib.sha256("\x1f".join(key).encode("utf-8")).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


_RST_ROLE = re.compile(r":[a-zA-Z:]+:`~?\.?([^`]+)`")
_RST_LITERAL = re.compile(r"``([^`]+)``")
_SENTENCE_END = re.compile(r"[.!?:;)`\"']$")


def first_paragraph(doc: str) -> str:
    """The first paragraph of a docstring or doc comment on one line, with reStructuredText roles
    and double-backtick literals turned into Markdown code."""
    paragraph: list[str] = []
    for raw in doc.strip().splitlines():
        line = raw.strip()
        if not line:
            if paragraph:
                break
            continue
        paragraph.append(line)
    text = " ".join(paragraph)
    text = _RST_ROLE.sub(r"`\1`", text)
    text = _RST_LITERAL.sub(r"`\1`", text)
    return re.sub(r"\s+", " ", text).strip()


def as_sentence(text: str) -> str:
    """`text` capitalised and ending in punctuation, so that it can follow another sentence."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if _SENTENCE_END.search(text) else text + "."


def word_count(text: str) -> int:
    return len(re.findall(r"[A-Za-z]{2,}", text))


def code_list(names: Iterable[str], *, limit: int = 8) -> str:
    """`a`, `b` and `c` (at most `limit` names, then "and N more")."""
    items = [f"`{name}`" for name in names]
    if len(items) > limit:
        rest = len(items) - limit
        items = [*items[:limit], f"{rest} more"]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def neighbours(names: Sequence[str], name: str, *, skip: Iterable[str] = ()) -> str:
    """Where `name` sits among the definitions `names` of its file or class, as "after `a` and
    before `b`", leaving out tests, dunders other than `__init__` and the names in `skip`."""
    skipped = set(skip)

    def shown(other: str) -> bool:
        dunder = other.startswith("__") and other != "__init__"
        test = other.startswith(("test_", "Test"))
        return other != name and other not in skipped and not dunder and not test

    if name not in names:
        return ""
    at = names.index(name)
    before = next((n for n in reversed(names[:at]) if shown(n)), "")
    after = next((n for n in names[at + 1 :] if shown(n)), "")
    parts = [f"after `{before}`" if before else "", f"before `{after}`" if after else ""]
    return " and ".join(p for p in parts if p)
