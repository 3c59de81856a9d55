"""Python extractor: documented functions, methods, classes and small modules become pairs whose
line numbers point at the definition in the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from coder_assets.core.extract_common import Extraction
from coder_assets.core.extract_python import extract
from coder_assets_tests.conftest import (
    assert_outputs_within_lines,
    lines_of,
    one_pair_mentioning,
    sample_repo_kinds,
)

SOURCE = '''"""Helpers for object-store paths."""

import re


def join(bucket: str, *parts: str, sep: str = "/") -> str:
    """Join a bucket and key parts into one object path."""
    return sep.join([bucket, *parts])


async def fetch(url, timeout=5):
    """Fetch a URL and return the response body."""
    return await get(url, timeout=timeout)


class Location:
    """A bucket and a key prefix in the object store."""

    def __init__(self, bucket: str) -> None:
        """Create a location for the given bucket name."""
        self.bucket = bucket

    def __repr__(self) -> str:
        """Show the bucket in the representation string."""
        return f"Location({self.bucket!r})"

    @classmethod
    def parse(cls, uri: str) -> "Location":
        """Parse an s3 URI into a location object."""
        return cls(uri.removeprefix("s3://"))

    @staticmethod
    def valid(name: str) -> bool:
        """Tell whether a bucket name is valid for S3."""
        return bool(re.match(r"^[a-z0-9-]+$", name))

    @property
    def uri(self) -> str:
        """This location as an s3 URI string."""
        return f"s3://{self.bucket}"

    def todo(self) -> None:
        """Not written yet, only a placeholder here."""
        ...

    def undocumented(self) -> None:
        return None


def _private_helper(x):
    """Double the value that was passed in."""
    return x * 2
'''


def test_documented_definitions_become_pairs_with_exact_lines() -> None:
    extraction = extract(SOURCE, "pkg/paths.py")
    assert extraction.error is None
    assert_outputs_within_lines(SOURCE, extraction.pairs)
    kinds = sorted(p.kind for p in extraction.pairs)
    # join, fetch, __init__, parse, valid, uri, _private_helper; Location; the module.
    assert kinds == ["python_class"] + ["python_function"] * 7 + ["python_module"]


@pytest.mark.parametrize(
    ("fragment", "kind", "expected", "first_line"),
    [
        ('`join(bucket: str, *parts: str, sep: str = "/") -> str`', "python_function",
         ["function", "Join a bucket and key parts into one object path."],
         "def join(bucket: str, *parts: str, sep: str = \"/\") -> str:"),
        ("`fetch(url, timeout=5)`", "python_function", ["async function"],
         "async def fetch(url, timeout=5):"),
        ("`__init__(bucket: str) -> None`", "python_function", ["method", "`Location`"],
         "    def __init__(self, bucket: str) -> None:"),
        ("`parse(uri: str) -> \"Location\"`", "python_function", ["classmethod", "`Location`"],
         "    @classmethod"),
        ("`valid(name: str) -> bool`", "python_function", ["static method"],
         "    @staticmethod"),
        ("property `uri`", "python_function", ["returning `str`"], "    @property"),
        ("Python class `Location`", "python_class",
         ["A bucket and a key prefix", "`__init__`, `parse`, `valid`, `uri`"],
         "class Location:"),
        ("`_private_helper(x)`", "python_function", ["Double the value"],
         "def _private_helper(x):"),
    ],
)  # fmt: skip
def test_pair_instruction_names_signature_and_docstring(
    fragment: str, kind: str, expected: list[str], first_line: str
) -> None:
    pair = one_pair_mentioning(extract(SOURCE, "pkg/paths.py").pairs, fragment)
    assert pair.kind == kind
    for text in expected:
        assert text in pair.instruction
    assert pair.output.splitlines()[0] == first_line
    assert SOURCE.splitlines()[pair.start_line - 1] == first_line


def test_decorators_are_part_of_the_output_and_named_in_the_instruction() -> None:
    text = (
        "import functools\n\n\n"
        "@functools.lru_cache(maxsize=8)\n"
        "@trace\n"
        "def square(n: int) -> int:\n"
        '    """Square a number and cache the answer."""\n'
        "    return n * n\n"
    )
    (pair,) = extract(text, "m.py").pairs
    assert (pair.start_line, pair.end_line) == (4, 8)
    assert pair.output.startswith("@functools.lru_cache(maxsize=8)\n@trace\ndef square")
    assert "`@functools.lru_cache(maxsize=8)` `@trace`" in pair.instruction


@pytest.mark.parametrize(
    "body",
    [
        "    pass\n",
        "    ...\n",
        "",
    ],
)
def test_trivial_bodies_are_skipped(body: str) -> None:
    text = f'def stub(x):\n    """Does something important later on."""\n{body}'
    assert extract(text, "m.py").pairs == []


@pytest.mark.parametrize(
    "text",
    [
        "def f(x):\n    return x\n",
        'class A:\n    def __eq__(self, other):\n        """Compare two things for equality."""\n'
        "        return True\n",
        'def f(x):\n    """Short."""\n    return x\n',
    ],
)
def test_undocumented_dunder_and_thin_docstrings_give_nothing(text: str) -> None:
    extraction = extract(text, "m.py")
    assert extraction == Extraction([])


def test_nested_functions_are_not_pairs() -> None:
    text = (
        "def outer():\n"
        '    """Build a counter function for the caller."""\n'
        "    def inner():\n"
        '        """Count one more call of the counter."""\n'
        "        return 1\n"
        "    return inner\n"
    )
    (pair,) = extract(text, "m.py").pairs
    assert "outer" in pair.instruction
    assert (pair.start_line, pair.end_line) == (1, 6)


def test_short_documented_module_is_one_pair_with_the_whole_file() -> None:
    text = '"""Settings for the dataset builder."""\n\nLIMIT = 10\n__version__ = "1.0"\n'
    (pair,) = extract(text, "pkg/settings.py").pairs
    assert pair.kind == "python_module"
    assert "`pkg/settings.py`" in pair.instruction
    assert "Settings for the dataset builder." in pair.instruction
    assert "`LIMIT` and `__version__`" in pair.instruction
    assert pair.output == text.rstrip("\n")
    assert (pair.start_line, pair.end_line) == (1, 4)


def test_long_module_gives_no_module_pair() -> None:
    text = '"""Settings for the dataset builder."""\n' + "".join(
        f"VALUE_{i} = {i}\n" for i in range(130)
    )
    assert extract(text, "pkg/settings.py").pairs == []


@pytest.mark.parametrize(
    "newline",
    ["\n", "\r\n", "\r"],
)
def test_line_numbers_follow_splitlines_for_any_line_ending(newline: str) -> None:
    text = newline.join(
        [
            "import os",
            "",
            "",
            "def f(a):",
            '    """Return the absolute path of a."""',
            "    return a",
        ]
    )
    (pair,) = extract(text, "m.py").pairs
    assert (pair.start_line, pair.end_line) == (4, 6)
    assert pair.output == lines_of(text, 4, 6)


def test_form_feed_and_line_separators_do_not_shift_line_numbers() -> None:
    # splitlines() breaks on \x0c and U+2028 where Python's tokenizer does not.
    text = (
        "x = 1\n\x0c\n"
        's = "a\u2028b"\n'
        "def f(a):\n"
        '    """Return the value it was given."""\n'
        "    return a\n"
    )
    extraction = extract(text, "m.py")
    assert_outputs_within_lines(text, extraction.pairs)
    (pair,) = extraction.pairs
    assert text.splitlines()[pair.start_line - 1] == "def f(a):"


def test_non_ascii_source_keeps_line_numbers() -> None:
    text = (
        '"""Grüße."""\n'
        'GREETING = "héllo wörld"\n\n'
        "def greet(name: str) -> str:\n"
        '    """Greet someone by name, with an umlaut: ä."""\n'
        '    return f"{GREETING}, {name}"\n'
    )
    extraction = extract(text, "m.py")
    assert_outputs_within_lines(text, extraction.pairs)
    (pair,) = [p for p in extraction.pairs if p.kind == "python_function"]
    assert (pair.start_line, pair.end_line) == (4, 6)


@pytest.mark.parametrize(
    "text",
    [
        "def f(:\n    pass\n",
        "print 'python 2'\n",
        "class A\n",
        "x = (\n",
        "x = 1\x00\n",
        "s = '\udcff'\n",
        "def f():\n\treturn 1\n        return 2\n",
    ],
)
def test_malformed_python_is_a_parse_error(text: str) -> None:
    assert extract(text, "broken.py") == Extraction([], "parse_error")


def test_same_input_gives_identical_output() -> None:
    assert extract(SOURCE, "pkg/paths.py") == extract(SOURCE, "pkg/paths.py")


def test_phrasing_varies_between_functions() -> None:
    text = "".join(
        f'def func_{i}(x):\n    """Compute the value number {i} from x."""\n    return x + {i}\n\n'
        for i in range(12)
    )
    openings = {p.instruction.split("`")[0] for p in extract(text, "m.py").pairs}
    assert len(openings) >= 2


def test_sample_repo_yields_every_python_kind(tmp_path: Path) -> None:
    counts = sample_repo_kinds(extract, "kfp-training-pipelines", "*.py", tmp_path)
    assert counts.get("python_function", 0) >= 1
    assert counts.get("python_class", 0) >= 1
    assert counts.get("python_module", 0) >= 1
