"""Evaluating one model (base, new adapter, deployed adapter) and deciding on promotion.

`evaluate_model` runs the same evaluation for each model it is given, one model at a time (so
only one is in memory, and a server would never switch models mid-batch):

- HumanEval pass@1 on the configured problems, with EvalPlus's instruct prompt (what Qwen reports
  for Qwen2.5-Coder-Instruct), greedy, each completion run in the sandbox; per-problem results
  are a resumable JSONL file per model;
- the held-out `test` split of the dataset: FIM exact match, edit similarity and identifier F1
  (CrossCodeEval definitions), edit similarity of generated answers to instruction pairs, and the
  test loss (mean token NLL, EOS appended as in training) of all lines and of the pair lines.

`promotion_decision` compares the new adapter with the deployed one (or the base model when
nothing is deployed yet) on the same problems: HumanEval pass@1 may drop by at most `margin`
(paired: only problems both were evaluated on count), and the project eval must improve: FIM edit
similarity up and test loss down.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coder_assets.core.files import atomic_writer, write_json_atomic
from coder_assets.core.generation import (
    CHAT_STOP,
    FIM_STOP,
    chat_tasks_from_records,
    fim_tasks_from_records,
)
from coder_assets.core.humaneval import (
    chat_messages,
    evaluate,
    load_problems,
    outcomes,
    paired_comparison,
    pass_at_1,
)
from coder_assets.core.metrics import aggregate, edit_similarity, score_completion

SUMMARY_METRICS = (
    "humaneval_pass_at_1",
    "fim_exact_match",
    "fim_edit_similarity",
    "fim_identifier_f1",
    "chat_edit_similarity",
    "test_loss",
    "test_perplexity",
    "pair_test_loss",
)


@dataclass(frozen=True)
class EvalSettings:
    """How much to evaluate; None means everything (the production default)."""

    humaneval_problems: int | None = None
    humaneval_max_tokens: int = 512
    fim_tasks: int | None = None
    fim_max_tokens: int = 128
    chat_tasks: int | None = 100
    chat_max_tokens: int = 512
    timeout: float = 10.0
    max_seq_length: int = 2048


class Generator:
    """What `evaluate_model` needs of a model (see core.generation.InProcessGenerator)."""

    tokenizer: Any

    def complete(self, prompt: str, max_tokens: int, stop: Sequence[str]) -> str: ...

    def loss(self, texts: Sequence[str], max_seq_length: int) -> float: ...


def evaluate_model(
    label: str,
    generator: Generator,
    test_records: Sequence[tuple[str, str]],
    settings: EvalSettings,
    results_dir: Path,
    *,
    languages: Mapping[str, str | None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate one model; returns its summary (metrics, task counts, per-problem outcomes).

    `test_records` are (record id, text) of the dataset's test split. Per-task results go to
    `results_dir/<label>-*.jsonl`; HumanEval resumes from its file after a crash."""
    say = progress or (lambda _message: None)
    results_dir.mkdir(parents=True, exist_ok=True)

    problems = load_problems(limit=settings.humaneval_problems)
    say(f"{label}: HumanEval on {len(problems)} problems")

    def complete_problem(problem) -> str:
        prompt = generator.tokenizer.apply_chat_template(
            chat_messages(problem), tokenize=False, add_generation_prompt=True
        )
        return generator.complete(prompt, settings.humaneval_max_tokens, CHAT_STOP)

    results = evaluate(
        problems,
        complete_problem,
        results_dir / f"{label}-humaneval.jsonl",
        timeout=settings.timeout,
    )

    fim = fim_tasks_from_records(test_records, limit=settings.fim_tasks, languages=languages)
    say(f"{label}: {len(fim)} FIM tasks from the test split")
    fim_rows = []
    fim_lines = []
    for task in fim:
        prediction = generator.complete(task.prompt, settings.fim_max_tokens, FIM_STOP)
        scores = score_completion(prediction, task.reference, task.language)
        fim_rows.append(scores)
        fim_lines.append({"task_id": task.task_id, "prediction": prediction, **scores})
    _write_jsonl(results_dir / f"{label}-fim.jsonl", fim_lines)

    chat = chat_tasks_from_records(test_records, limit=settings.chat_tasks)
    say(f"{label}: {len(chat)} instruction pairs from the test split")
    chat_scores = []
    for task in chat:
        answer = generator.complete(task.prompt, settings.chat_max_tokens, CHAT_STOP)
        chat_scores.append(edit_similarity(answer, task.reference))

    texts = [text for _, text in test_records]
    pair_texts = [text for _, text in test_records if text.startswith("<|im_start|>")]
    test_loss = generator.loss(texts, settings.max_seq_length) if texts else float("nan")
    pair_loss = generator.loss(pair_texts, settings.max_seq_length) if pair_texts else float("nan")
    fim_means = aggregate(fim_rows) if fim_rows else {}
    return {
        "label": label,
        "humaneval_pass_at_1": pass_at_1(results),
        "humaneval_problems": len(results),
        "humaneval_outcomes": outcomes(results),
        "fim_tasks": len(fim_rows),
        "fim_exact_match": float(fim_means.get("exact_match", float("nan"))),
        "fim_edit_similarity": float(fim_means.get("edit_similarity", float("nan"))),
        "fim_identifier_f1": float(fim_means.get("identifier_f1", float("nan"))),
        "chat_tasks": len(chat_scores),
        "chat_edit_similarity": (
            sum(chat_scores) / len(chat_scores) if chat_scores else float("nan")
        ),
        "test_loss": test_loss,
        "test_perplexity": math.exp(test_loss) if test_loss == test_loss else float("nan"),
        "pair_test_loss": pair_loss,
    }


@dataclass(frozen=True)
class Decision:
    passed: bool
    reference: str  # "deployed" or "base"
    reasons: list[str]
    numbers: dict[str, float]


def promotion_decision(
    base: Mapping[str, Any],
    adapter: Mapping[str, Any],
    deployed: Mapping[str, Any] | None,
    *,
    humaneval_margin: float = 0.02,
    fim_must_improve: bool = True,
) -> Decision:
    """Whether the new adapter may be released and deployed, with the reasons either way.

    Passes when HumanEval pass@1 drops by at most `humaneval_margin`, FIM edit similarity
    improves (with `fim_must_improve=False`: does not get worse) and test loss goes down."""
    reference = deployed if deployed is not None else base
    name = "deployed adapter" if deployed is not None else "base model"
    paired = paired_comparison(reference["humaneval_outcomes"], adapter["humaneval_outcomes"])
    reasons: list[str] = []
    passed = True
    delta = paired["delta"]
    if delta < -humaneval_margin:
        passed = False
        reasons.append(
            f"HumanEval pass@1 drops by {-delta:.3f} against the {name} on the same "
            f"{paired['n']} problems ({paired['pass_rate_a']:.3f} → {paired['pass_rate_b']:.3f}), "
            f"more than the margin {humaneval_margin:.3f}"
        )
    else:
        reasons.append(
            f"HumanEval pass@1 {paired['pass_rate_b']:.3f} vs {paired['pass_rate_a']:.3f} for the "
            f"{name} on the same {paired['n']} problems (delta {delta:+.3f}, margin "
            f"{humaneval_margin:.3f}, McNemar p={paired['p_value']:.3f})"
        )
    es_new, es_ref = adapter["fim_edit_similarity"], reference["fim_edit_similarity"]
    if fim_must_improve and not es_new > es_ref:
        passed = False
        reasons.append(f"FIM edit similarity does not improve: {es_new:.4f} vs {es_ref:.4f}")
    elif not es_new >= es_ref:
        passed = False
        reasons.append(f"FIM edit similarity gets worse: {es_new:.4f} vs {es_ref:.4f}")
    elif not es_new > es_ref:
        reasons.append(
            f"FIM edit similarity does not get worse: {es_new:.4f} vs {es_ref:.4f} (the policy "
            "does not require it to improve)"
        )
    else:
        reasons.append(f"FIM edit similarity improves: {es_new:.4f} vs {es_ref:.4f}")
    loss_new, loss_ref = adapter["test_loss"], reference["test_loss"]
    if not loss_new < loss_ref:
        passed = False
        reasons.append(f"test loss does not go down: {loss_new:.4f} vs {loss_ref:.4f}")
    else:
        reasons.append(f"test loss goes down: {loss_new:.4f} vs {loss_ref:.4f}")
    numbers = {
        "humaneval_delta": float(delta),
        "humaneval_paired_problems": float(paired["n"]),
        "humaneval_p_value": float(paired["p_value"]),
        "fim_edit_similarity_delta": float(es_new - es_ref),
        "test_loss_delta": float(loss_new - loss_ref),
    }
    return Decision(passed, "deployed" if deployed is not None else "base", reasons, numbers)


def summary_table(
    base: Mapping[str, Any], adapter: Mapping[str, Any], deployed: Mapping[str, Any] | None
) -> str:
    """A markdown table: metric, base, adapter, delta (adapter − base), deployed."""
    lines = [
        "| metric | base | adapter | delta | deployed |",
        "|---|---:|---:|---:|---:|",
    ]
    for metric in SUMMARY_METRICS:
        b, a = float(base[metric]), float(adapter[metric])
        d = f"{float(deployed[metric]):.4f}" if deployed is not None else "—"
        lines.append(f"| {metric} | {b:.4f} | {a:.4f} | {a - b:+.4f} | {d} |")
    counts = (
        f"| tasks | {base['humaneval_problems']} HumanEval, {base['fim_tasks']} FIM, "
        f"{base['chat_tasks']} pairs | | | |"
    )
    lines.append(counts)
    return "\n".join(lines)


def write_summary(path: Path, data: Mapping[str, Any]) -> None:
    write_json_atomic(path, data)


def _write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with atomic_writer(path) as out:
        for row in rows:
            out.write(json.dumps(row, sort_keys=True, default=float) + "\n")
