"""The linguist attributes of `.gitattributes` files (root and nested) that mark vendored and
generated files."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from coder_assets.core.globs import glob_matches

LINGUIST_ATTRIBUTES = ("linguist-vendored", "linguist-generated")


@dataclass(frozen=True)
class AttributeRule:
    base: str  # directory of the .gitattributes file, "" for the root
    pattern: str
    attribute: str
    value: bool | None  # None: `!attr`, back to unspecified


def parse_gitattributes(text: str, base: str = "") -> list[AttributeRule]:
    """The linguist rules of one `.gitattributes` file whose directory is `base`."""
    rules: list[AttributeRule] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern, *attrs = line.split()
        for attr in attrs:
            name, value = attr, True
            if attr.startswith("-"):
                name, value = attr[1:], False
            elif attr.startswith("!"):
                name, value = attr[1:], None
            elif "=" in attr:
                name, _, raw_value = attr.partition("=")
                value = raw_value.lower() not in ("false", "0", "no")
            if name in LINGUIST_ATTRIBUTES:
                rules.append(AttributeRule(base, pattern, name, value))
    return rules


def rules_from_files(files: Mapping[str, str]) -> list[AttributeRule]:
    """Rules from `{path of .gitattributes: text}`, ordered so later rules take precedence: deeper
    files override shallower ones, later lines override earlier ones."""
    ordered = sorted(files, key=lambda p: (p.count("/"), p))
    rules: list[AttributeRule] = []
    for path in ordered:
        base = posixpath.dirname(path)
        rules.extend(parse_gitattributes(files[path], base))
    return rules


def linguist_flags(path: str, rules: list[AttributeRule]) -> dict[str, bool]:
    """`{attribute: value}` that `rules` set for repo-relative `path`."""
    flags: dict[str, bool] = {}
    for rule in rules:
        if rule.base:
            if not path.startswith(rule.base + "/"):
                continue
            relative = path[len(rule.base) + 1 :]
        else:
            relative = path
        if glob_matches(rule.pattern, relative):
            if rule.value is None:
                flags.pop(rule.attribute, None)
            else:
                flags[rule.attribute] = rule.value
    return flags
