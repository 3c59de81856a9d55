"""Tests for benchmark decontamination (coder_assets.core.dataset.decontam)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from coder_assets.core.dataset.decontam import (
    Benchmark,
    BenchmarkDataError,
    BenchmarkProblem,
    ContaminationHit,
    Decontaminator,
    load_humaneval,
    normalise,
)
from coder_assets.demo.sample_repos import create_sample_repos


@pytest.fixture(scope="module")
def humaneval() -> Benchmark:
    return load_humaneval()


@pytest.fixture(scope="module")
def decontaminator(humaneval: Benchmark) -> Decontaminator:
    return Decontaminator(humaneval)


def _problem(benchmark: Benchmark, task_id: str) -> BenchmarkProblem:
    return next(p for p in benchmark.problems if p.task_id == task_id)


def test_load_humaneval_has_164_problems_with_docstrings(humaneval: Benchmark) -> None:
    assert humaneval.name == "humaneval"
    assert len(humaneval.problems) == 164
    assert len({p.task_id for p in humaneval.problems}) == 164
    assert all(p.prompt and p.canonical_solution for p in humaneval.problems)
    assert all(p.docstring.strip() for p in humaneval.problems)
    first = _problem(humaneval, "HumanEval/0")
    assert "closer to each other than" in first.docstring
    assert "def has_close_elements" not in first.docstring


def test_docstring_found_below_other_statements(humaneval: Benchmark) -> None:
    # HumanEval/115 puts `import math` above its docstring
    assert "rectangular grid of wells" in _problem(humaneval, "HumanEval/115").docstring


def test_unreadable_data_file_raises_benchmark_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "HumanEval.jsonl.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(BenchmarkDataError, match="HumanEval.jsonl.gz"):
        load_humaneval(bad)


def test_record_missing_field_raises_benchmark_data_error(tmp_path: Path) -> None:
    path = tmp_path / "problems.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"task_id": "X/0", "prompt": "def f():\n"}) + "\n")
    with pytest.raises(BenchmarkDataError, match="entry_point|canonical_solution"):
        load_humaneval(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  Return  A\n\t+ b  ", "return a + b"),
        ("x\r\n\r\n    y", "x y"),
        ("", ""),
    ],
)
def test_normalise_lowercases_and_collapses_whitespace(text: str, expected: str) -> None:
    assert normalise(text) == expected


def test_reindented_recased_canonical_solution_is_caught(
    humaneval: Benchmark, decontaminator: Decontaminator
) -> None:
    solution = _problem(humaneval, "HumanEval/0").canonical_solution
    reindented = "\n".join(
        "  " + line.replace("    ", "\t").upper() for line in solution.splitlines()
    )
    sample = f"class Checker:\n  def close(self, numbers, threshold):\n{reindented}\n"
    hit = decontaminator.check("sample-1", sample)
    assert hit == ContaminationHit(
        sample_id="sample-1",
        task_id="HumanEval/0",
        reason="solution_substring",
        detail=hit.detail if hit else "",
    )
    assert hit is not None and hit.detail.startswith("for idx, elem in enumerate(numbers)")


def test_copied_docstring_is_caught(humaneval: Benchmark, decontaminator: Decontaminator) -> None:
    docstring = _problem(humaneval, "HumanEval/0").docstring
    sample = f'def nearby(values, eps=0.1):\n    """{docstring}"""\n    return sorted(values)\n'
    hit = decontaminator.check("doc", sample)
    assert hit is not None
    assert (hit.task_id, hit.reason) == ("HumanEval/0", "docstring_substring")


def test_whole_prompt_is_reported_as_prompt_substring(
    humaneval: Benchmark, decontaminator: Decontaminator
) -> None:
    problem = _problem(humaneval, "HumanEval/12")
    hit = decontaminator.check("p", "# a header\n" + problem.prompt + problem.canonical_solution)
    assert hit is not None
    assert (hit.task_id, hit.reason) == ("HumanEval/12", "prompt_substring")


def test_thirteen_gram_overlap_is_caught(decontaminator: Decontaminator) -> None:
    # HumanEval/0's docstring words with the comma dropped and reflowed: no substring rule fires
    sample = (
        "// Check if in given list of numbers are any two numbers\n"
        "// closer to each other than given threshold -- homelab version\n"
        "func Close(xs []float64) bool { return false }\n"
    )
    hit = decontaminator.check("go", sample)
    assert hit is not None
    assert (hit.task_id, hit.reason) == ("HumanEval/0", "ngram_overlap")
    assert hit.detail.startswith("check if in given list of")


def test_twelve_shared_words_are_not_an_overlap(decontaminator: Decontaminator) -> None:
    sample = "# check if in given list of numbers are any two numbers closer -- something else\n"
    assert decontaminator.check("twelve", sample) is None


def test_tiny_solutions_below_min_substring_chars_are_ignored(
    humaneval: Benchmark, decontaminator: Decontaminator
) -> None:
    # HumanEval/53 is `return x + y`: matching it would drop half of all Python code
    tiny = _problem(humaneval, "HumanEval/53").canonical_solution
    assert len(normalise(tiny)) < 40
    assert decontaminator.check("tiny", f"def total(x, y):\n{tiny}") is None


def test_min_substring_chars_is_configurable() -> None:
    problem = BenchmarkProblem(
        task_id="T/0",
        prompt="def add(x, y):\n",
        docstring="",
        canonical_solution="    return x + y\n",
    )
    sample = "def plus(x, y):\n    RETURN X  +  Y\n"
    assert Decontaminator(Benchmark("tiny", [problem])).check("s", sample) is None
    hit = Decontaminator(Benchmark("tiny", [problem]), min_substring_chars=5).check("s", sample)
    assert hit is not None and hit.reason == "solution_substring"


def test_every_humaneval_problem_is_caught_when_embedded(
    humaneval: Benchmark, decontaminator: Decontaminator
) -> None:
    missed = [
        p.task_id
        for p in humaneval.problems
        if decontaminator.check(p.task_id, "import os\n\n" + p.prompt + p.canonical_solution)
        is None
    ]
    assert missed == []


def test_homelab_sample_repos_have_no_hits(tmp_path: Path, decontaminator: Decontaminator) -> None:
    checked = 0
    hits = []
    for repo in create_sample_repos(tmp_path):
        for path in sorted(repo.rglob("*")):
            if ".git" in path.relative_to(repo).parts or not path.is_file():
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            checked += 1
            hit = decontaminator.check(str(path.relative_to(tmp_path)), text)
            if hit is not None:
                hits.append(hit)
    assert checked >= 20
    assert hits == []


@pytest.mark.parametrize(("field", "value"), [("ngram", 0), ("min_substring_chars", 0)])
def test_bad_settings_raise_value_error_naming_the_setting(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        Decontaminator(Benchmark("empty", []), **{field: value})
