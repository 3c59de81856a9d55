"""Python extractor: documented functions, methods, classes and small modules become pairs whose
line numbers point at the definition in the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from coder_assets.core.samples.extract_common import Extraction
from coder_assets.core.samples.extract_python import extract
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


UNDOCUMENTED = """import json
from dataclasses import dataclass, field

from .storage import upload


@dataclass
class EvalReport:
    model: str
    scores: dict[str, float] = field(default_factory=dict)

    def passed(self, thresholds: dict[str, float]) -> bool:
        missing = set(thresholds) - set(self.scores)
        if missing:
            raise KeyError(f"no score for {sorted(missing)}")
        return all(self.scores[name] >= floor for name, floor in thresholds.items())

    def publish(self, bucket: str) -> str:
        key = f"{bucket}/{self.model}.json"
        upload(key, json.dumps(self.scores))
        return key

    @property
    def best(self) -> float:
        return max(self.scores.values())


def load_report(text: str) -> EvalReport:
    data = json.loads(text)
    scores = {str(k): float(v) for k, v in data.get("scores", {}).items()}
    return EvalReport(model=data["model"], scores=scores)


def test_load_report():
    report = load_report('{"model": "m", "scores": {"a": 1}}')
    assert report.model == "m"
    assert report.scores == {"a": 1.0}


class TestEvalReport:
    def test_passed(self):
        report = EvalReport("m", {"a": 1.0})
        assert report.passed({"a": 0.5})
        assert not report.passed({"a": 2.0})


class Marker:
    def __repr__(self):
        return "Marker()"
"""


@pytest.mark.parametrize(
    ("fragment", "kind", "expected"),
    [
        ("`load_report(text: str) -> EvalReport`", "python_function_undocumented",
         ["function", "`pipelines/report.py`", "`kfp-training-pipelines`", "`json.loads`",
          "`EvalReport`"]),
        ("`passed(thresholds: dict[str, float]) -> bool`", "python_function_undocumented",
         ["method", "class `EvalReport`", "`KeyError`", "before `publish`"]),
        ("`publish(bucket: str) -> str`", "python_function_undocumented",
         ["`upload`", "`json.dumps`", "after `passed`"]),
        ("class `EvalReport` (decorated", "python_class_undocumented",
         ["`@dataclass`", "fields `model` and `scores`", "methods `passed`, `publish` and `best`"]),
    ],
)  # fmt: skip
def test_undocumented_definition_is_asked_from_what_the_code_shows(
    fragment: str, kind: str, expected: list[str]
) -> None:
    extraction = extract(UNDOCUMENTED, "pipelines/report.py", repo="homelab/kfp-training-pipelines")
    assert_outputs_within_lines(UNDOCUMENTED, extraction.pairs)
    pair = one_pair_mentioning(extraction.pairs, fragment)
    assert pair.kind == kind
    for text in expected:
        assert text in pair.instruction
    # The instruction names the code around the answer, never a line of its body.
    body = [line.strip() for line in pair.output.splitlines()[1:] if len(line.strip()) > 8]
    assert not [line for line in body if line in pair.instruction]


@pytest.mark.parametrize(
    "name",
    [
        "`best`",  # property returning a field
        "test_load_report",  # a test function
        "test_passed",  # a test method
        "TestEvalReport",  # a test class
        "`Marker`",  # nothing to name but a dunder
    ],
)
def test_undocumented_tests_accessors_and_dunder_only_classes_give_no_pair(name: str) -> None:
    pairs = extract(UNDOCUMENTED, "pipelines/report.py").pairs
    assert [p.instruction for p in pairs if name in p.instruction.split(". It")[0]] == []


@pytest.mark.parametrize(
    "body",
    ["    return x + 1\n", "    y = x + 1\n    return y\n", "    pass\n"],
)
def test_undocumented_bodies_of_two_lines_or_fewer_give_no_pair(body: str) -> None:
    assert extract(f"def step(x):\n{body}", "m.py").pairs == []


def test_undocumented_pairs_are_the_same_for_the_same_file() -> None:
    first = extract(UNDOCUMENTED, "pipelines/report.py", repo="homelab/kfp-training-pipelines")
    again = extract(UNDOCUMENTED, "pipelines/report.py", repo="homelab/kfp-training-pipelines")
    assert first == again
    assert {p.kind for p in first.pairs} == {
        "python_function_undocumented",
        "python_class_undocumented",
    }
