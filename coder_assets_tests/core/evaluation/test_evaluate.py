"""One model's evaluation (with a scripted generator) and the promotion decision."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from coder_assets.core.evaluation.evaluate import (
    EvalSettings,
    evaluate_model,
    promotion_decision,
    summary_table,
)
from coder_assets.core.evaluation.humaneval import load_problems
from coder_assets.core.evaluation.metrics import edit_similarity
from coder_assets.core.samples.fim import format_fim


def _summary(outcomes: dict[str, bool], es: float, loss: float) -> dict:
    return {
        "humaneval_outcomes": outcomes,
        "humaneval_pass_at_1": sum(outcomes.values()) / len(outcomes),
        "humaneval_problems": len(outcomes),
        "fim_tasks": 10,
        "chat_tasks": 5,
        "fim_exact_match": 0.1,
        "fim_edit_similarity": es,
        "fim_identifier_f1": 0.2,
        "chat_edit_similarity": 0.3,
        "test_loss": loss,
        "test_perplexity": math.exp(loss),
        "pair_test_loss": loss,
    }


TASKS = [f"HumanEval/{i}" for i in range(10)]
BASE = _summary({t: i < 5 for i, t in enumerate(TASKS)}, es=0.40, loss=1.50)


def test_a_better_adapter_passes_the_gate_against_the_base() -> None:
    adapter = _summary({t: i < 5 for i, t in enumerate(TASKS)}, es=0.55, loss=1.20)
    decision = promotion_decision(BASE, adapter, None, humaneval_margin=0.02)
    assert decision.passed and decision.reference == "base"
    assert any("improves" in reason for reason in decision.reasons)


def test_an_adapter_worse_on_humaneval_than_the_margin_is_rejected() -> None:
    adapter = _summary({t: i < 3 for i, t in enumerate(TASKS)}, es=0.55, loss=1.20)
    decision = promotion_decision(BASE, adapter, None, humaneval_margin=0.1)
    assert not decision.passed
    assert "drops by 0.200" in decision.reasons[0] and "margin 0.100" in decision.reasons[0]


def test_humaneval_is_compared_on_the_same_problems_only() -> None:
    # The adapter was only evaluated on the first 5 problems, which the base all passed.
    adapter = _summary({t: True for t in TASKS[:5]}, es=0.55, loss=1.20)
    decision = promotion_decision(BASE, adapter, None)
    assert decision.passed and decision.numbers["humaneval_paired_problems"] == 5


@pytest.mark.parametrize(
    ("es", "loss", "failing"),
    [(0.40, 1.20, "FIM edit similarity does not improve"), (0.55, 1.50, "test loss does not")],
)
def test_the_project_eval_must_improve(es: float, loss: float, failing: str) -> None:
    adapter = _summary(dict(BASE["humaneval_outcomes"]), es=es, loss=loss)
    decision = promotion_decision(BASE, adapter, None)
    assert not decision.passed and any(failing in reason for reason in decision.reasons)


def test_the_deployed_adapter_is_the_bar_when_there_is_one() -> None:
    deployed = _summary(dict(BASE["humaneval_outcomes"]), es=0.60, loss=1.10)
    adapter = _summary(dict(BASE["humaneval_outcomes"]), es=0.55, loss=1.20)
    assert promotion_decision(BASE, adapter, None).passed
    decision = promotion_decision(BASE, adapter, deployed)
    assert not decision.passed and decision.reference == "deployed"


def test_summary_table_has_base_adapter_delta_and_deployed() -> None:
    adapter = _summary(dict(BASE["humaneval_outcomes"]), es=0.55, loss=1.20)
    table = summary_table(BASE, adapter, None)
    assert table.splitlines()[0] == "| metric | base | adapter | delta | deployed |"
    assert "| fim_edit_similarity | 0.4000 | 0.5500 | +0.1500 | — |" in table


class ScriptedGenerator:
    """Answers HumanEval with the canonical solution or a wrong one, FIM with the reference."""

    class tokenizer:  # noqa: N801 - stands in for a tokenizer object
        @staticmethod
        def apply_chat_template(messages, tokenize, add_generation_prompt):
            return messages[0]["content"]

    def __init__(self, correct: bool) -> None:
        self.correct = correct
        self.solutions = {p.prompt.strip(): p.canonical_solution for p in load_problems(limit=3)}

    def complete(self, prompt: str, max_tokens: int, stop) -> str:
        for problem_prompt, solution in self.solutions.items():
            if problem_prompt in prompt:
                body = solution if self.correct else "    return None\n"
                return f"```python\n{problem_prompt}\n{body}```"
        if prompt.endswith("<|fim_middle|>"):
            return "    total = a + b\n" if self.correct else "pass\n"
        return "an answer"

    def loss(self, texts, max_seq_length: int) -> float:
        return 1.0 if self.correct else 2.0


def test_evaluate_model_scores_humaneval_fim_and_loss(tmp_path: Path) -> None:
    records = [
        ("test:1", format_fim("def add(a, b):\n", "    return total\n", "    total = a + b\n")),
        ("test:2", "<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\nhi<|im_end|>\n"),
    ]
    settings = EvalSettings(humaneval_problems=3, fim_tasks=5, chat_tasks=5)
    good = evaluate_model("good", ScriptedGenerator(True), records, settings, tmp_path)
    bad = evaluate_model("bad", ScriptedGenerator(False), records, settings, tmp_path)
    assert good["humaneval_pass_at_1"] == 1.0 and bad["humaneval_pass_at_1"] == 0.0
    assert good["fim_exact_match"] == 1.0 and good["fim_edit_similarity"] == 1.0
    assert bad["fim_edit_similarity"] < 0.5
    assert good["test_loss"] < bad["test_loss"] and good["chat_tasks"] == 1
    lines = (tmp_path / "good-humaneval.jsonl").read_text().splitlines()
    assert [json.loads(line)["task_id"] for line in lines] == [f"HumanEval/{i}" for i in range(3)]
    assert promotion_decision(bad, good, None).passed
    assert not promotion_decision(good, bad, None).passed
    # The copy baseline answers with the prefix's last line, "def add(a, b):", for both models.
    expected = edit_similarity("def add(a, b):", "total = a + b")
    assert good["fim_copy_baseline_edit_similarity"] == bad["fim_copy_baseline_edit_similarity"]
    assert good["fim_copy_baseline_edit_similarity"] == pytest.approx(expected)
    rows = [json.loads(line) for line in (tmp_path / "bad-fim.jsonl").read_text().splitlines()]
    assert rows[0]["copy_baseline_edit_similarity"] == pytest.approx(expected)
    table = summary_table(bad, good, None)
    assert f"(no model) | {expected:.4f} | {expected:.4f} | | — |" in table


def test_the_verdict_notes_an_adapter_below_the_copy_baseline_without_failing_on_it() -> None:
    adapter = _summary(dict(BASE["humaneval_outcomes"]), es=0.55, loss=1.20)
    below = promotion_decision(BASE, {**adapter, "fim_copy_baseline_edit_similarity": 0.6}, None)
    above = promotion_decision(BASE, {**adapter, "fim_copy_baseline_edit_similarity": 0.5}, None)
    assert below.passed and above.passed
    assert any("below that of copying the lines above the gap (0.6000)" in r for r in below.reasons)
    assert not any("copying" in reason for reason in above.reasons)
    # A summary from before the baseline existed: the table leaves the row out.
    assert "(no model)" not in summary_table(BASE, adapter, None)
