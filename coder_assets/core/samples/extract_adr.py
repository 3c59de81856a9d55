"""Instruction pairs from architecture decision records in MADR format: the decision itself
(context in, Decision Outcome section out) and its rationale (why the chosen option won). Outputs
are the record's own text; Markdown without a Decision Outcome section gives nothing."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from coder_assets.core.samples.extract_common import Extraction, SourceLines, code_pair, pick
from coder_assets.core.samples.records import ExtractedPair

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)")
_BULLET = re.compile(r"^[ \t]*(?:[*+-]|\d+[.)])[ \t]+(.*\S)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_CHOSEN = re.compile(
    r"chosen option:?\s*(?P<option>\"[^\"]+\"|“[^”]+”|\[[^\]]+\](?:\([^)]*\))?|[^,]+?)"
    r"\s*(?:,\s*(?P<because>because\b.*))?$",
    re.IGNORECASE,
)
_STATUS_LINE = re.compile(r"^[ \t]*[*-]?[ \t]*status:[ \t]*(.+)$", re.IGNORECASE)

_DECISION_TEMPLATES = (
    'Write an architecture decision record about "{title}".',
    'Write the decision outcome of the architecture decision record "{title}", '
    "with its consequences.",
    'Record the architecture decision "{title}" in MADR form: the chosen option, the reason '
    "and the consequences.",
)
_RATIONALE_TEMPLATES = (
    'Why was "{chosen}" chosen over {others} in the architecture decision "{title}"?',
    'In the decision record "{title}", why was "{chosen}" preferred to {others}?',
    'What was the rationale for choosing "{chosen}" over {others} ("{title}")?',
)
_RATIONALE_TEMPLATES_ALONE = (
    'Why was "{chosen}" chosen in the architecture decision "{title}"?',
    'In the decision record "{title}", what was the rationale for "{chosen}"?',
)


@dataclass
class _Section:
    title: str
    heading: int  # 0-based line index of the heading
    end: int  # exclusive, trailing blank lines trimmed
    children: list[_Section] = field(default_factory=list)

    @property
    def body(self) -> tuple[int, int]:
        """The 0-based [start, end) range of the lines after the heading."""
        return self.heading + 1, self.end


@dataclass
class _Record:
    title: str
    status: str
    sections: list[_Section]

    def section(self, pattern: str) -> _Section | None:
        regex = re.compile(pattern, re.IGNORECASE)
        return next((s for s in self.sections if regex.fullmatch(s.title.strip())), None)


def extract(text: str, path: str) -> Extraction:
    """An adr_decision and an adr_rationale pair from a MADR record. Markdown without a Decision
    Outcome section, and the ADR template itself, give nothing."""
    if "template" in posixpath.basename(path).lower():
        return Extraction([])
    lines = SourceLines(text)
    try:
        record = _parse(lines, path)
    except Exception:  # Markdown always "parses"; an oddity here just means no record
        return Extraction([], None, 1)
    decision = record.section(r"decision outcome")
    if decision is None:
        return Extraction([])
    pairs: list[ExtractedPair] = []
    skipped = 0
    for build in (_decision_pair, _rationale_pair):
        try:
            pair = build(record, decision, lines, path)
        except Exception:  # one odd section costs that pair only
            pair, skipped = None, skipped + 1
        if pair is not None:
            pairs.append(pair)
    return Extraction(pairs, None, skipped)


# ----------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------


def _front_matter(lines: list[str]) -> tuple[dict[str, Any], int]:
    """The YAML front matter (empty when absent or broken) and the index of the first body line."""
    if not lines or lines[0].strip() != "---":
        return {}, 0
    for index in range(1, len(lines)):
        if lines[index].strip() in {"---", "..."}:
            try:
                loaded = yaml.safe_load("\n".join(lines[1:index]))
            except yaml.YAMLError:
                loaded = None
            return (loaded if isinstance(loaded, dict) else {}), index + 1
    return {}, 0


def _trim_end(lines: list[str], start: int, end: int) -> int:
    while end > start and not lines[end - 1].strip():
        end -= 1
    return end


def _parse(source: SourceLines, path: str) -> _Record:
    lines = source.lines
    meta, first = _front_matter(lines)
    headings: list[tuple[int, str, int]] = []
    in_fence = False
    for index in range(first, len(lines)):
        if _FENCE.match(lines[index]):
            in_fence = not in_fence
            continue
        match = None if in_fence else _HEADING.match(lines[index])
        if match:
            headings.append((len(match.group(1)), match.group(2), index))
    title = next((text for level, text, _ in headings if level == 1), "")
    title = title or str(meta.get("title") or "") or _title_from_path(path)
    sections: list[_Section] = []
    for position, (level, text, index) in enumerate(headings):
        if level not in (2, 3):
            continue
        end = next((i for lvl, _, i in headings[position + 1 :] if lvl <= level), len(lines))
        section = _Section(text, index, _trim_end(lines, index, end))
        if level == 2:
            sections.append(section)
        elif sections and sections[-1].heading < index < sections[-1].end:
            sections[-1].children.append(section)
    status = str(meta.get("status") or "")
    if not status:
        before_sections = headings[1][2] if len(headings) > 1 else len(lines)
        for line in lines[first:before_sections]:
            match = _STATUS_LINE.match(line)
            if match:
                status = match.group(1)
                break
    return _Record(_clean(title), status.strip().lower(), sections)


def _title_from_path(path: str) -> str:
    stem = posixpath.splitext(posixpath.basename(path))[0]
    stem = re.sub(r"^\d+[-_]", "", stem)
    return stem.replace("-", " ").replace("_", " ").strip().capitalize()


def _clean(text: str) -> str:
    """Link markup and surrounding quotes removed, whitespace collapsed."""
    text = _LINK.sub(r"\1", text)
    text = " ".join(text.split())
    if len(text) >= 2 and text[0] + text[-1] in {'""', "“”", "[]"}:
        text = text[1:-1].strip()
    return text


def _normalise(text: str) -> str:
    return re.sub(r"[\W_]+", " ", _clean(text)).strip().lower()


def _body_text(lines: list[str], start: int, end: int) -> tuple[int, int]:
    while start < end and not lines[start].strip():
        start += 1
    return start, _trim_end(lines, start, end)


# ----------------------------------------------------------------------------------------------
# Pairs
# ----------------------------------------------------------------------------------------------


def _options(record: _Record, lines: list[str]) -> list[str]:
    section = record.section(r"considered options")
    if section is None:
        return []
    start, end = section.body
    options = []
    for line in lines[start:end]:
        match = _BULLET.match(line)
        if match and not line.startswith((" ", "\t")):
            options.append(_clean(match.group(1)))
    return [option for option in options if option]


def _decision_pair(
    record: _Record, decision: _Section, lines: SourceLines, path: str
) -> ExtractedPair | None:
    output = lines.slice(decision.heading + 1, decision.end)
    context = record.section(r"context( and problem statement)?")
    context_text = ""
    if context is not None:
        start, end = _body_text(lines.lines, *context.body)
        context_text = "\n".join(lines.lines[start:end])
    instruction = pick(_DECISION_TEMPLATES, "adr_decision", path).format(title=record.title)
    options = _options(record, lines.lines)
    if options:
        instruction += f" The options considered were {_quoted(options)}."
    return code_pair(
        lines,
        kind="adr_decision",
        instruction=instruction,
        output=output,
        input=context_text,
        start_line=decision.heading + 1,
        end_line=decision.end,
    )


def _quoted(items: list[str]) -> str:
    quoted = [f'"{item}"' for item in items]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _chosen_paragraph(decision: _Section, lines: list[str]) -> tuple[int, int] | None:
    """The 0-based [start, end) lines of the paragraph that starts with "Chosen option"."""
    start, end = decision.body
    for index in range(start, end):
        if lines[index].strip().lower().startswith("chosen option"):
            stop = index
            while stop < end and lines[stop].strip() and not _HEADING.match(lines[stop]):
                stop += 1
            return index, stop
    return None


def _pros_and_cons(record: _Record, chosen: str, lines: list[str]) -> tuple[int, int] | None:
    section = record.section(r"pros and cons of the options")
    if section is None:
        return None
    wanted = _normalise(chosen)
    for child in section.children:
        if _normalise(child.title) == wanted:
            start, end = _body_text(lines, *child.body)
            return (start, end) if start < end else None
    return None


def _rationale_pair(
    record: _Record, decision: _Section, lines: SourceLines, path: str
) -> ExtractedPair | None:
    if record.status.startswith("rejected"):
        return None
    paragraph = _chosen_paragraph(decision, lines.lines)
    if paragraph is None:
        return None
    start, end = paragraph
    match = _CHOSEN.match(" ".join(" ".join(lines.lines[start:end]).split()))
    if match is None:
        return None
    chosen = _clean(match.group("option"))
    pros_cons = _pros_and_cons(record, chosen, lines.lines)
    if not chosen or (match.group("because") is None and pros_cons is None):
        return None
    output = lines.slice(start + 1, end)
    last = end
    if pros_cons is not None:
        output += "\n\n" + lines.slice(pros_cons[0] + 1, pros_cons[1])
        last = pros_cons[1]
    others = [o for o in _options(record, lines.lines) if _normalise(o) != _normalise(chosen)]
    if others:
        template = pick(_RATIONALE_TEMPLATES, "adr_rationale", path)
    else:
        template = pick(_RATIONALE_TEMPLATES_ALONE, "adr_rationale", path)
    instruction = template.format(chosen=chosen, others=_quoted(others), title=record.title)
    if not _parts_in_range(lines, start + 1, last, output):
        return None
    return ExtractedPair(
        kind="adr_rationale",
        instruction=instruction,
        output=output,
        start_line=start + 1,
        end_line=last,
    )


def _parts_in_range(lines: SourceLines, start_line: int, end_line: int, output: str) -> bool:
    """Whether each paragraph of the composed rationale lies verbatim in its line range."""
    return all(lines.contains(start_line, end_line, part) for part in output.split("\n\n"))
