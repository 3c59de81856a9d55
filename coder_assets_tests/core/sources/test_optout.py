"""The per-repository opt-out file `.coder-assets.yaml`."""

from __future__ import annotations

import pytest

from coder_assets.core.errors import OptOutFileError
from coder_assets.core.sources.optout import OPT_OUT_FILE, OptOut, parse_opt_out

REPO = "homelab/order-events-handler"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("exclude: true\n", OptOut(whole_repo=True)),
        ("exclude: false\n", OptOut()),
        ("exclude: yes\n", OptOut(whole_repo=True)),
        ("exclude:\n  - 'secrets/**'\n  - '*.sql'\n", OptOut(globs=("secrets/**", "*.sql"))),
        ("exclude: ['secrets/**', '*.sql']\n", OptOut(globs=("secrets/**", "*.sql"))),
        ("exclude: ['  padded/  ']\n", OptOut(globs=("padded/",))),
        ("exclude: '*.sql'\n", OptOut(globs=("*.sql",))),
        ("exclude: []\n", OptOut()),
        ("", OptOut()),
        ("\n", OptOut()),
        ("# nothing to exclude yet\n", OptOut()),
        ("---\n", OptOut()),
        ("{}\n", OptOut()),
    ],
)
def test_parse_opt_out_reads_exclude(text: str, expected: OptOut) -> None:
    assert parse_opt_out(text, repo=REPO) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("exclude: [unclosed\n", id="invalid-yaml"),
        pytest.param("exclude: true\n  bad: indent\n", id="invalid-yaml-indent"),
        pytest.param("- secrets/**\n", id="list-not-mapping"),
        pytest.param("just a string\n", id="string-not-mapping"),
        pytest.param("42\n", id="number-not-mapping"),
        pytest.param("exclude: true\ninclude: ['src/**']\n", id="unknown-key"),
        pytest.param("Exclude: true\n", id="unknown-key-case"),
        pytest.param("1: true\n", id="unknown-non-string-key"),
        pytest.param("exclude: 3\n", id="wrong-type-int"),
        pytest.param("exclude:\n", id="wrong-type-null"),
        pytest.param("exclude: {a: b}\n", id="wrong-type-mapping"),
        pytest.param("exclude: [1, 2]\n", id="wrong-type-list-of-ints"),
        pytest.param("exclude: ['ok', '']\n", id="empty-glob"),
        pytest.param("exclude: '   '\n", id="blank-string"),
    ],
)
def test_unreadable_opt_out_raises_naming_file_and_repo(text: str) -> None:
    with pytest.raises(OptOutFileError) as raised:
        parse_opt_out(text, repo=REPO)
    message = str(raised.value)
    assert OPT_OUT_FILE in message
    assert REPO in message


def test_unknown_key_error_names_the_key() -> None:
    with pytest.raises(OptOutFileError, match="include"):
        parse_opt_out("exclude: true\ninclude: x\n", repo=REPO)


@pytest.mark.parametrize(
    ("opt_out", "path", "excluded"),
    [
        (OptOut(), "src/main.py", False),
        (OptOut(whole_repo=True), "src/main.py", True),
        (OptOut(whole_repo=True), "README.md", True),
        (OptOut(globs=("secrets/**",)), "secrets/prod.env", True),
        (OptOut(globs=("secrets/**",)), "src/secrets.py", False),
        (OptOut(globs=("*.sql",)), "db/migrations/001.sql", True),
        (OptOut(globs=("*.sql",)), "db/migrations/001.py", False),
        (OptOut(globs=("docs/", "*.sql")), "docs/a/b.md", True),
        (OptOut(globs=("docs/", "*.sql")), "src/docs.md", False),
    ],
)
def test_opt_out_excludes_whole_repo_or_matching_globs(
    opt_out: OptOut, path: str, excluded: bool
) -> None:
    assert opt_out.excludes(path) is excluded


def test_parsed_globs_exclude_with_gitignore_semantics() -> None:
    opt_out = parse_opt_out("exclude:\n  - 'secrets/**'\n  - '*.sql'\n", repo=REPO)
    assert [opt_out.excludes(p) for p in ("secrets/k", "a/b.sql", "src/app.py")] == [
        True,
        True,
        False,
    ]
