"""Tests for the HumanEval pass@1 harness (coder_assets.core.evaluation.humaneval)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from coder_assets.core.evaluation.humaneval import (
    INSTRUCTION_PREFIX,
    RESPONSE_PREFIX,
    HumanEvalArgumentError,
    Problem,
    ProblemResult,
    ResultsFileError,
    chat_messages,
    evaluate,
    extract_code,
    load_problems,
    outcomes,
    paired_comparison,
    pass_at_1,
    pass_at_k,
    program_for,
)

ADD_PROMPT = (
    'from typing import List\n\n\ndef add(a: int, b: int) -> int:\n    """Add a and b."""\n'
)
ADD = Problem(
    task_id="Toy/0",
    prompt=ADD_PROMPT,
    entry_point="add",
    test="def check(candidate):\n    assert candidate(1, 2) == 3\n",
    canonical_solution="    return a + b\n",
)
ADD_DEFINITION = "def add(a, b):\n    return a + b"


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return load_problems()


def _canonical(problem: Problem) -> str:
    """A base model's kind of answer: the body that continues the prompt."""
    return problem.canonical_solution


def _wrong_constant(problem: Problem) -> str:
    return f"```python\ndef {problem.entry_point}(*args, **kwargs):\n    return 42\n```\n"


def _result_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_load_problems_gives_all_164_in_task_order(problems: list[Problem]) -> None:
    assert len(problems) == 164
    assert [problem.task_id for problem in problems] == [f"HumanEval/{i}" for i in range(164)]
    assert problems[0].entry_point == "has_close_elements"
    assert all(problem.test and problem.canonical_solution for problem in problems)


def test_load_problems_filters_by_task_ids_in_dataset_order_then_limits() -> None:
    chosen = load_problems(task_ids=["HumanEval/10", "HumanEval/2", "HumanEval/7"], limit=2)

    assert [problem.task_id for problem in chosen] == ["HumanEval/2", "HumanEval/7"]
    assert [problem.task_id for problem in load_problems(limit=3)] == [
        "HumanEval/0",
        "HumanEval/1",
        "HumanEval/2",
    ]


def test_load_problems_rejects_unknown_task_ids() -> None:
    with pytest.raises(HumanEvalArgumentError, match="HumanEval/999"):
        load_problems(task_ids=["HumanEval/1", "HumanEval/999"])


def test_canonical_solutions_pass_through_the_sandbox(
    problems: list[Problem], tmp_path: Path
) -> None:
    results = evaluate(problems[:5], _canonical, tmp_path / "results.jsonl")

    assert [result.passed for result in results] == [True] * 5, [r.error_tail for r in results]
    assert pass_at_1(results) == 1.0


def test_wrong_constant_fails_every_problem(problems: list[Problem], tmp_path: Path) -> None:
    # The canary: an evaluator that passed everything would pass these.
    results = evaluate(problems[:3], _wrong_constant, tmp_path / "results.jsonl")

    assert [result.passed for result in results] == [False] * 3
    assert all("AssertionError" in result.error_tail for result in results)
    assert pass_at_1(results) == 0.0


def test_infinite_loop_times_out_and_the_run_continues(
    problems: list[Problem], tmp_path: Path
) -> None:
    def complete(problem: Problem) -> str:
        if problem.task_id == "HumanEval/0":
            return "    while True:\n        pass\n"
        return _canonical(problem)

    results = evaluate(problems[:2], complete, tmp_path / "results.jsonl", timeout=1.0)

    assert results[0].timed_out and not results[0].passed
    assert results[0].error_tail.startswith("timed out after 1 s")
    assert results[1].passed and not results[1].timed_out


def test_rerun_after_a_crash_completes_only_the_unrecorded_problems(
    problems: list[Problem], tmp_path: Path
) -> None:
    results_path = tmp_path / "results.jsonl"
    calls: list[str] = []

    def crashing(problem: Problem) -> str:
        calls.append(problem.task_id)
        if len(calls) == 3:
            raise RuntimeError("the model server went away")
        return _canonical(problem)

    with pytest.raises(RuntimeError, match="went away"):
        evaluate(problems[:4], crashing, results_path)
    assert [line["task_id"] for line in _result_lines(results_path)] == [
        "HumanEval/0",
        "HumanEval/1",
    ]

    calls.clear()
    seen: list[str] = []

    def recording(problem: Problem) -> str:
        calls.append(problem.task_id)
        return _canonical(problem)

    results = evaluate(
        problems[:4], recording, results_path, on_result=lambda r: seen.append(r.task_id)
    )

    assert calls == ["HumanEval/2", "HumanEval/3"]
    assert seen == ["HumanEval/2", "HumanEval/3"]
    assert [result.task_id for result in results] == [f"HumanEval/{i}" for i in range(4)]
    assert all(result.passed for result in results)
    assert len(_result_lines(results_path)) == 4


def test_torn_last_line_is_dropped_and_its_problem_redone(
    problems: list[Problem], tmp_path: Path
) -> None:
    results_path = tmp_path / "results.jsonl"
    evaluate(problems[:2], _canonical, results_path)
    with open(results_path, "a", encoding="utf-8") as handle:
        handle.write('{"task_id": "HumanEval/2", "passed": tr')  # the crash hit mid-write
    calls: list[str] = []

    def recording(problem: Problem) -> str:
        calls.append(problem.task_id)
        return _canonical(problem)

    results = evaluate(problems[:3], recording, results_path)

    assert calls == ["HumanEval/2"]
    assert [result.passed for result in results] == [True, True, True]
    assert [line["task_id"] for line in _result_lines(results_path)] == [
        "HumanEval/0",
        "HumanEval/1",
        "HumanEval/2",
    ]


def test_corrupt_line_before_the_last_raises_results_file_error(
    problems: list[Problem], tmp_path: Path
) -> None:
    results_path = tmp_path / "results.jsonl"
    evaluate(problems[:1], _canonical, results_path)
    good = results_path.read_text(encoding="utf-8")
    results_path.write_text("not json\n" + good, encoding="utf-8")

    with pytest.raises(ResultsFileError, match="line 1"):
        evaluate(problems[:2], _canonical, results_path)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (10, 0, 1, 0.0),
        (10, 0, 5, 0.0),
        (10, 10, 1, 1.0),
        (3, 3, 3, 1.0),
        (5, 1, 1, 0.2),
        (1, 1, 1, 1.0),
        # 1 - C(7, 5) / C(10, 5) = 1 - 21 / 252 = 11 / 12
        (10, 3, 5, 11 / 12),
        # n - c < k: every draw of k contains a correct sample
        (10, 8, 3, 1.0),
        # the product form against the binomial definition, where the binomials are huge
        (200, 10, 10, 1 - math.comb(190, 10) / math.comb(200, 10)),
    ],
)
def test_pass_at_k_matches_hand_computed_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(("n", "c", "k"), [(0, 0, 1), (5, 6, 1), (5, -1, 1), (5, 1, 0), (5, 1, 6)])
def test_pass_at_k_rejects_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(HumanEvalArgumentError, match="pass_at_k needs"):
        pass_at_k(n, c, k)


def test_pass_at_1_averages_per_task_over_samples() -> None:
    def result(task_id: str, passed: bool) -> ProblemResult:
        return ProblemResult(task_id, passed, False, "", "", 0.1)

    results = [result("T/0", True), result("T/0", False), result("T/1", True)]

    # T/0: 1 of 2, T/1: 1 of 1 -> (0.5 + 1) / 2
    assert pass_at_1(results) == 0.75
    with pytest.raises(HumanEvalArgumentError):
        pass_at_1([])


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        pytest.param(
            f"Here is the solution:\n```python\n{ADD_DEFINITION}\n```\nIt adds.",
            f"{ADD_PROMPT.rstrip()}\n\n\n{ADD_DEFINITION}\n",
            id="fenced-python-block",
        ),
        pytest.param(
            f"{ADD_DEFINITION}\n",
            f"{ADD_PROMPT.rstrip()}\n\n\n{ADD_DEFINITION}\n",
            id="raw-definition",
        ),
        pytest.param(
            "    return a + b\n",
            f"{ADD_PROMPT}    return a + b\n",
            id="body-without-def-gets-the-prompt",
        ),
        pytest.param(
            f"```python\n{ADD_DEFINITION}\n\n\n"
            "if __name__ == '__main__':\n    print(add(1, 2))\n```",
            f"{ADD_PROMPT.rstrip()}\n\n\n{ADD_DEFINITION}\n",
            id="main-guard-stripped",
        ),
        pytest.param(
            f"{ADD_DEFINITION}\n```\n\nThis function adds two numbers.",
            f"{ADD_PROMPT.rstrip()}\n\n\n{ADD_DEFINITION}\n",
            id="prefilled-continuation-ends-at-its-fence",
        ),
        pytest.param(
            f"Usage:\n```python\nprint(add(1, 2))\n```\nCode:\n```python\n{ADD_DEFINITION}\n```",
            f"{ADD_PROMPT.rstrip()}\n\n\n{ADD_DEFINITION}\n",
            id="block-defining-the-entry-point-preferred",
        ),
        pytest.param(
            f"```bash\npip install nothing\n```\n```\n{ADD_DEFINITION}\n```",
            f"{ADD_PROMPT.rstrip()}\n\n\n{ADD_DEFINITION}\n",
            id="untagged-block-over-other-languages",
        ),
        pytest.param(
            f"```python\n{ADD_DEFINITION}\n",
            f"{ADD_PROMPT.rstrip()}\n\n\n{ADD_DEFINITION}\n",
            id="unclosed-block-from-a-truncated-answer",
        ),
    ],
)
def test_extract_code(response: str, expected: str) -> None:
    assert extract_code(ADD, response) == expected


def test_extracted_restated_function_keeps_the_prompts_imports_and_runs(tmp_path: Path) -> None:
    # The restated function uses List without importing it; the prompt in front supplies it.
    response = "```python\ndef add(a: List[int], b) -> int:\n    return a + b\n```"

    results = evaluate([ADD], lambda _problem: response, tmp_path / "results.jsonl")

    assert results[0].passed, results[0].error_tail
    assert results[0].completion == response


def test_program_for_appends_the_tests_and_the_check_call() -> None:
    program = program_for(ADD, ADD_PROMPT + ADD.canonical_solution)

    assert program.startswith(ADD_PROMPT + ADD.canonical_solution)
    assert "def check(candidate):" in program
    assert program.endswith("\n\ncheck(add)\n")


def test_chat_messages_follow_evalplus_instruct_prompt() -> None:
    messages = chat_messages(ADD)

    assert messages == [
        {"role": "user", "content": f"{INSTRUCTION_PREFIX}\n```\n{ADD_PROMPT.strip()}\n```\n"}
    ]
    assert INSTRUCTION_PREFIX.startswith("Please provide a self-contained Python script")
    assert chat_messages(ADD, prefill=True)[1] == {
        "role": "assistant",
        "content": f"{RESPONSE_PREFIX}\n```python\n",
    }


def test_paired_comparison_counts_only_common_tasks() -> None:
    a = {"T/0": True, "T/1": True, "T/2": False, "T/3": False, "T/4": True}
    b = {"T/0": True, "T/1": False, "T/2": True, "T/3": False, "T/5": True}

    comparison = paired_comparison(a, b)

    assert comparison == {
        "n": 4,
        "pass_rate_a": 0.5,
        "pass_rate_b": 0.5,
        "delta": 0.0,
        "both": 1,
        "only_a": 1,
        "only_b": 1,
        "neither": 1,
        "p_value": 1.0,
    }


@pytest.mark.parametrize(
    ("only_a", "only_b", "p_value"),
    [
        (0, 0, 1.0),
        # two-sided exact: 2 * P(X <= 0), X ~ Binomial(5, 1/2) = 2 / 32
        (0, 5, 0.0625),
        # 2 * (C(10,0) + C(10,1)) / 2**10 = 22 / 1024
        (1, 9, 0.021484375),
        (9, 1, 0.021484375),
        (3, 3, 1.0),
    ],
)
def test_paired_comparison_gives_the_exact_mcnemar_p_value(
    only_a: int, only_b: int, p_value: float
) -> None:
    ids = [f"T/{i}" for i in range(only_a + only_b + 4)]
    a = {task: i < only_a or i >= only_a + only_b + 2 for i, task in enumerate(ids)}
    b = {
        task: only_a <= i < only_a + only_b or i >= only_a + only_b + 2
        for i, task in enumerate(ids)
    }

    comparison = paired_comparison(a, b)

    assert (comparison["only_a"], comparison["only_b"]) == (only_a, only_b)
    assert (comparison["both"], comparison["neither"]) == (2, 2)
    assert comparison["p_value"] == pytest.approx(p_value, abs=1e-12)
    assert comparison["delta"] == pytest.approx((only_b - only_a) / len(ids))


def test_paired_comparison_without_common_tasks_raises() -> None:
    with pytest.raises(HumanEvalArgumentError, match="share none"):
        paired_comparison({"T/0": True}, {"T/1": True})


def test_outcomes_maps_task_ids_to_passed() -> None:
    results = [
        ProblemResult("T/0", True, False, "", "", 0.1),
        ProblemResult("T/1", False, True, "", "x", 1.0),
    ]

    assert outcomes(results) == {"T/0": True, "T/1": False}
