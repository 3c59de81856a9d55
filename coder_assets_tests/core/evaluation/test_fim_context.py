"""FIM prompts cut to the model's context (core.evaluation.generation.fit_fim_task) and the
evaluation that cuts them (EvalSettings.context_tokens): the lines nearest the middle stay, the
prompt fits the budget, and a prompt that fits is left alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from coder_assets.core.evaluation.evaluate import EvalSettings, evaluate_model
from coder_assets.core.evaluation.generation import FimTask, GenerationError, fit_fim_task
from coder_assets.core.samples.fim import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX


def words(text: str) -> int:
    """A stand-in tokenizer: one token per word and per FIM token."""
    return len(text.split()) + sum(
        text.count(token) for token in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)
    )


PREFIX = "".join(f"p{i} a b\n" for i in range(20))  # 3 tokens a line
SUFFIX = "".join(f"s{i} c d\n" for i in range(20))
TASK = FimTask("test:1", PREFIX, SUFFIX, "middle\n", "yaml")


def test_a_prompt_within_the_budget_is_the_task_itself() -> None:
    assert fit_fim_task(TASK, words, words(TASK.prompt)) is TASK


@pytest.mark.parametrize("budget", [20, 41, 64, 100, 122])
def test_the_cut_prompt_fits_and_keeps_the_lines_nearest_the_middle(budget: int) -> None:
    fitted = fit_fim_task(TASK, words, budget)
    assert words(fitted.prompt) <= budget
    assert PREFIX.endswith(fitted.prefix) and SUFFIX.startswith(fitted.suffix)
    assert fitted.prefix.endswith("p19 a b\n")  # the line just before the middle
    assert fitted.reference == TASK.reference and fitted.language == TASK.language
    # The suffix keeps a quarter of the room, or what the whole prefix leaves; the prefix uses
    # what is left, up to one line short.
    room = budget - 3
    assert words(fitted.suffix) <= max(room // 4, room - words(PREFIX))
    assert words(fitted.prefix) + words(fitted.suffix) > room - 3


def test_the_repository_context_goes_first() -> None:
    task = FimTask("test:2", PREFIX[:40], SUFFIX[:40], "m", "yaml", "<|repo_name|>r\n" * 30)
    fitted = fit_fim_task(task, words, words(task.prompt) - 1)
    assert fitted.context == "" and fitted.prefix == task.prefix and fitted.suffix == task.suffix


def test_one_long_line_keeps_its_characters_nearest_the_middle() -> None:
    task = FimTask("test:3", "x " * 100 + "near", "far " * 3, "m", None)
    fitted = fit_fim_task(task, words, 12)
    assert words(fitted.prompt) <= 12
    assert fitted.prefix.endswith("x near") and task.prefix.endswith(fitted.prefix)


def test_a_budget_below_the_fim_tokens_names_the_task_and_what_to_change() -> None:
    with pytest.raises(GenerationError, match=r"test:1.*fim_max_tokens"):
        fit_fim_task(TASK, words, 2)


class Echo:
    """A generator that records the prompts it is given and answers every one with nothing;
    its tokenizer is `words`."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.tokenizer = self

    def encode(self, text: str) -> list[int]:
        return [0] * words(text)

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True) -> str:
        return "chat"

    def complete(self, prompt: str, max_tokens: int, stop) -> str:
        self.prompts.append(prompt)
        return ""

    def loss(self, texts, max_seq_length: int) -> float:
        return 1.0


@pytest.mark.parametrize(("context", "cut"), [(None, 0), (1000, 0), (40, 1)])
def test_the_evaluation_cuts_only_prompts_over_the_models_context(
    tmp_path: Path, context: int | None, cut: int
) -> None:
    short = f"{FIM_PREFIX}a\n{FIM_SUFFIX}b\n{FIM_MIDDLE}m\n"
    long = f"{FIM_PREFIX}{PREFIX}{FIM_SUFFIX}{SUFFIX}{FIM_MIDDLE}m\n"
    settings = EvalSettings(
        humaneval_problems=1, chat_tasks=0, fim_max_tokens=8, context_tokens=context
    )
    echo = Echo()
    summary = evaluate_model(
        "base", echo, [("test:1", short), ("test:2", long)], settings, tmp_path
    )
    assert summary["fim_prompts_cut"] == cut
    prompts = [prompt for prompt in echo.prompts if FIM_PREFIX in prompt]
    whole = [text.partition(FIM_MIDDLE)[0] + FIM_MIDDLE for text in (short, long)]
    assert prompts[0] == whole[0]  # fits: never cut
    if cut:
        assert prompts[1] != whole[1] and words(prompts[1]) <= context - 8
    else:
        assert prompts[1] == whole[1]
