"""Path globs with gitignore/gitattributes semantics: `*` stays within a directory, `**` crosses
directories, a pattern without a slash matches the basename at any depth."""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """A regex that matches repo-relative paths (no leading slash) selected by `pattern`.

    A pattern that matches a directory selects everything below it.
    """
    anchored = "/" in pattern.rstrip("/")
    pattern = pattern.strip("/")
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("/.*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif ch == "*":
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(ch))
                i += 1
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end + 1
        else:
            out.append(re.escape(ch))
            i += 1
    body = "".join(out)
    prefix = "" if anchored else "(?:.*/)?"
    # A match on a directory selects everything below it, as in .gitignore.
    return re.compile(f"^{prefix}{body}(?:/.*)?$", re.DOTALL)


def glob_matches(pattern: str, path: str) -> bool:
    """True when repo-relative `path` (or one of its parent directories) matches `pattern`."""
    return compile_glob(pattern).match(path) is not None
