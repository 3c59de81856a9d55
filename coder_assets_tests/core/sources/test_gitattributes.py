"""The linguist attributes of root and nested `.gitattributes` files."""

from __future__ import annotations

import pytest

from coder_assets.core.sources.gitattributes import (
    AttributeRule,
    linguist_flags,
    parse_gitattributes,
    rules_from_files,
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("gen/* linguist-generated", [("gen/*", "linguist-generated", True)]),
        ("gen/* linguist-generated=true", [("gen/*", "linguist-generated", True)]),
        ("gen/* linguist-generated=TRUE", [("gen/*", "linguist-generated", True)]),
        ("gen/* linguist-generated=1", [("gen/*", "linguist-generated", True)]),
        ("lib/* -linguist-vendored", [("lib/*", "linguist-vendored", False)]),
        ("lib/* linguist-vendored=false", [("lib/*", "linguist-vendored", False)]),
        ("lib/* linguist-vendored=False", [("lib/*", "linguist-vendored", False)]),
        ("lib/* linguist-vendored=0", [("lib/*", "linguist-vendored", False)]),
        ("lib/* linguist-vendored=no", [("lib/*", "linguist-vendored", False)]),
        (
            "x.js linguist-vendored linguist-generated",
            [("x.js", "linguist-vendored", True), ("x.js", "linguist-generated", True)],
        ),
        (
            "x.js text eol=lf linguist-generated -diff",
            [("x.js", "linguist-generated", True)],
        ),
        ("  \t*.pb.go   linguist-generated  ", [("*.pb.go", "linguist-generated", True)]),
    ],
)
def test_parse_gitattributes_reads_linguist_values(
    line: str, expected: list[tuple[str, str, bool]]
) -> None:
    assert parse_gitattributes(line) == [
        AttributeRule("", pattern, attribute, value) for pattern, attribute, value in expected
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "# gen/* linguist-generated",
        "   # indented comment linguist-vendored",
        "*.sh text eol=lf",
        "*.png binary",
        "*.md linguist-documentation linguist-language=Markdown",
        "lonely-pattern",
    ],
)
def test_parse_gitattributes_ignores_comments_blanks_and_unrelated_attributes(text: str) -> None:
    assert parse_gitattributes(text) == []


def test_parse_gitattributes_keeps_line_order_and_base() -> None:
    text = "# header\n*.js linguist-vendored\n\nsrc/*.js -linguist-vendored\n"
    assert parse_gitattributes(text, base="web") == [
        AttributeRule("web", "*.js", "linguist-vendored", True),
        AttributeRule("web", "src/*.js", "linguist-vendored", False),
    ]


ROOT_AND_NESTED = {
    ".gitattributes": "*.js linguist-vendored\n",
    "app/.gitattributes": "*.js -linguist-vendored\n",
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("lib/jquery.js", {"linguist-vendored": True}),
        ("jquery.js", {"linguist-vendored": True}),
        ("app/main.js", {"linguist-vendored": False}),
        ("app/deep/er/main.js", {"linguist-vendored": False}),
        ("application/main.js", {"linguist-vendored": True}),
        ("app.js", {"linguist-vendored": True}),
        ("app/main.py", {}),
    ],
)
def test_nested_gitattributes_overrides_root_for_its_subtree_only(
    path: str, expected: dict[str, bool]
) -> None:
    assert linguist_flags(path, rules_from_files(ROOT_AND_NESTED)) == expected


def test_rules_from_files_orders_deeper_files_last_whatever_the_mapping_order() -> None:
    files = {
        "a/b/.gitattributes": "* linguist-generated=false\n",
        "a/.gitattributes": "* linguist-generated\n",
        ".gitattributes": "* -linguist-generated\n",
    }
    rules = rules_from_files(files)
    assert [rule.base for rule in rules] == ["", "a", "a/b"]
    assert linguist_flags("x", rules) == {"linguist-generated": False}
    assert linguist_flags("a/x", rules) == {"linguist-generated": True}
    assert linguist_flags("a/b/x", rules) == {"linguist-generated": False}


@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        ("gen/* linguist-generated\ngen/keep.go -linguist-generated\n", "gen/keep.go", False),
        ("gen/* linguist-generated\ngen/keep.go -linguist-generated\n", "gen/other.go", True),
        ("gen/keep.go -linguist-generated\ngen/* linguist-generated\n", "gen/keep.go", True),
        ("*.go linguist-generated=false\n*.go linguist-generated\n", "x.go", True),
    ],
)
def test_last_matching_line_wins(text: str, path: str, expected: bool) -> None:
    rules = rules_from_files({".gitattributes": text})
    assert linguist_flags(path, rules) == {"linguist-generated": expected}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("sub/a.txt", {"linguist-generated": True}),
        ("sub/x/a.txt", {}),
        ("a.txt", {}),
    ],
)
def test_anchored_pattern_in_nested_file_is_relative_to_its_directory(
    path: str, expected: dict[str, bool]
) -> None:
    rules = rules_from_files({"sub/.gitattributes": "/a.txt linguist-generated\n"})
    assert linguist_flags(path, rules) == expected


def test_bang_attribute_unsets_an_earlier_value() -> None:
    rules = rules_from_files(
        {".gitattributes": "gen/* linguist-generated\ngen/keep.go !linguist-generated\n"}
    )
    assert linguist_flags("gen/keep.go", rules) == {}


def test_linguist_flags_without_rules_is_empty() -> None:
    assert linguist_flags("any/path.go", []) == {}
