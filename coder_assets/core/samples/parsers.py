"""Parsers shared by the extractors and the syntax-aware FIM spans."""

from __future__ import annotations

from functools import lru_cache

import tree_sitter
import tree_sitter_go


@lru_cache(maxsize=1)
def go_language() -> tree_sitter.Language:
    return tree_sitter.Language(tree_sitter_go.language())


def parse_go(source: str) -> tree_sitter.Tree:
    """A tree-sitter parse of Go `source`. Check `tree.root_node.has_error` for syntax errors.
    Node positions are byte offsets into `source.encode("utf-8")`."""
    # A Parser is cheap and not thread-safe, so each call gets its own.
    return tree_sitter.Parser(go_language()).parse(source.encode("utf-8"))
