"""ADR extractor: a MADR record gives a decision pair (context in, Decision Outcome out) and a
rationale pair (why the chosen option won), both taken verbatim from the record."""

from __future__ import annotations

from pathlib import Path

import pytest

from coder_assets.core.samples.extract_adr import extract
from coder_assets.core.samples.extract_common import Extraction
from coder_assets.demo.sample_repos import create_sample_repos
from coder_assets_tests.conftest import lines_of

RECORD = """---
status: accepted
date: 2024-05-01
---
# Use Caddy as the reverse proxy

## Context and Problem Statement

Every service terminates TLS itself, and certificates expire unnoticed.
Which reverse proxy should front the homelab services?

## Considered Options

* Caddy
* [Traefik](https://traefik.io)
* nginx with certbot

## Decision Outcome

Chosen option: "Caddy", because it renews certificates on its own and its
configuration fits on one screen.

### Consequences

* Good, because certificates no longer expire
* Bad, because the team has to learn the Caddyfile syntax

## Pros and Cons of the Options

### Caddy

* Good, because automatic HTTPS is the default
* Bad, because fewer examples exist than for nginx

### Traefik

* Good, because it discovers services from labels
"""


def assert_provenance(text: str, extraction: Extraction) -> None:
    for pair in extraction.pairs:
        window = lines_of(text, pair.start_line, pair.end_line)
        # A rationale joins the decision paragraph and the option's pros and cons.
        for part in pair.output.split("\n\n"):
            assert part in window


def pair_of(extraction: Extraction, kind: str):
    (pair,) = [p for p in extraction.pairs if p.kind == kind]
    return pair


def test_madr_record_gives_a_decision_and_a_rationale() -> None:
    extraction = extract(RECORD, "docs/decisions/0007-use-caddy.md")
    assert extraction.error is None
    assert sorted(p.kind for p in extraction.pairs) == ["adr_decision", "adr_rationale"]
    assert_provenance(RECORD, extraction)


def test_decision_pair_has_the_context_as_input_and_the_outcome_as_output() -> None:
    pair = pair_of(extract(RECORD, "docs/decisions/0007-use-caddy.md"), "adr_decision")
    assert '"Use Caddy as the reverse proxy"' in pair.instruction
    assert '"Caddy", "Traefik" and "nginx with certbot"' in pair.instruction
    assert pair.input == (
        "Every service terminates TLS itself, and certificates expire unnoticed.\n"
        "Which reverse proxy should front the homelab services?"
    )
    assert (pair.start_line, pair.end_line) == (18, 26)
    assert pair.output == lines_of(RECORD, 18, 26)
    assert pair.output.startswith("## Decision Outcome\n")
    assert pair.output.endswith("* Bad, because the team has to learn the Caddyfile syntax")


def test_rationale_pair_asks_why_and_answers_with_because_and_pros_and_cons() -> None:
    pair = pair_of(extract(RECORD, "docs/decisions/0007-use-caddy.md"), "adr_rationale")
    assert '"Caddy"' in pair.instruction
    assert '"Traefik" and "nginx with certbot"' in pair.instruction
    assert "Use Caddy as the reverse proxy" in pair.instruction
    assert pair.output == (
        'Chosen option: "Caddy", because it renews certificates on its own and its\n'
        "configuration fits on one screen.\n\n"
        "* Good, because automatic HTTPS is the default\n"
        "* Bad, because fewer examples exist than for nginx"
    )
    assert (pair.start_line, pair.end_line) == (20, 33)


MINIMAL = """# Pick a backup tool

## Context and Problem Statement

Backups are copied by hand.

## Decision Outcome

Chosen option: restic, because it deduplicates and encrypts.
"""


def test_missing_optional_sections_are_tolerated() -> None:
    extraction = extract(MINIMAL, "adr/0001-backup.md")
    assert_provenance(MINIMAL, extraction)
    decision = pair_of(extraction, "adr_decision")
    assert decision.input == "Backups are copied by hand."
    assert (decision.start_line, decision.end_line) == (7, 9)
    rationale = pair_of(extraction, "adr_rationale")
    assert '"restic"' in rationale.instruction
    assert rationale.output == "Chosen option: restic, because it deduplicates and encrypts."
    assert (rationale.start_line, rationale.end_line) == (9, 9)


def test_no_because_and_no_pros_and_cons_gives_only_the_decision() -> None:
    text = MINIMAL.replace(", because it deduplicates and encrypts.", ".")
    assert [p.kind for p in extract(text, "adr/0001-backup.md").pairs] == ["adr_decision"]


def test_rejected_record_gives_no_rationale() -> None:
    text = RECORD.replace("status: accepted", "status: rejected")
    assert [p.kind for p in extract(text, "adr/0007.md").pairs] == ["adr_decision"]


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("# Notes\n\nJust some notes.\n\n## Context\n\nNothing was decided.\n", "notes.md"),
        ("# Readme\n\n```markdown\n## Decision Outcome\n\nChosen option: x\n```\n", "README.md"),
        ("", "empty.md"),
        ("---\nstatus: [broken\n---\nno headings at all\n", "odd.md"),
        (RECORD, "docs/decisions/adr-template.md"),
    ],
)
def test_non_adr_markdown_gives_no_pairs_and_no_error(text: str, path: str) -> None:
    assert extract(text, path) == Extraction([])


def test_crlf_record_keeps_lines_right() -> None:
    text = RECORD.replace("\n", "\r\n")
    extraction = extract(text, "adr/0007.md")
    assert_provenance(text, extraction)
    assert len(extraction.pairs) == 2


def test_same_input_gives_identical_output() -> None:
    assert extract(RECORD, "adr/0007.md") == extract(RECORD, "adr/0007.md")


def test_sample_repo_yields_both_adr_kinds(tmp_path: Path) -> None:
    repos = {path.name: path for path in create_sample_repos(tmp_path)}
    root = repos["homelab-adrs"]
    counts: dict[str, int] = {}
    for file in sorted(root.rglob("*.md")):
        text = file.read_text(encoding="utf-8")
        extraction = extract(text, file.relative_to(root).as_posix())
        assert extraction.error is None
        assert_provenance(text, extraction)
        for pair in extraction.pairs:
            counts[pair.kind] = counts.get(pair.kind, 0) + 1
    assert counts.get("adr_decision", 0) >= 1
    assert counts.get("adr_rationale", 0) >= 1
