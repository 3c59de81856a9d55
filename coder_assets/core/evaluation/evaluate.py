"""Evaluating one model (base, new adapter, deployed adapter) and deciding on promotion.

`evaluate_model` runs the same evaluation for each model it is given, one model at a time (so
only one is in memory, and a server would never switch models mid-batch), each task kind's
prompts generated in batches (`EvalSettings.batch_size` sequences decoded together), and every
result looked up in and stored to the evaluation cache (`core.evaluation.cache`) when the model is
an `EvalModel` with one: a model is loaded only when something is not in the cache.

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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coder_assets.core.evaluation.cache import (
    CacheCounts,
    EvalCache,
    ModelIdentity,
    generation_settings,
)
from coder_assets.core.evaluation.generation import (
    CHAT_STOP,
    DEFAULT_BATCH_SIZE,
    FIM_STOP,
    chat_tasks_from_records,
    fim_tasks_from_records,
    fit_fim_task,
    mean_loss,
)
from coder_assets.core.evaluation.humaneval import (
    ProblemResult,
    chat_messages,
    evaluate,
    load_problems,
    load_results,
    outcomes,
    paired_comparison,
    pass_at_1,
)
from coder_assets.core.evaluation.metrics import (
    aggregate,
    copy_baseline,
    edit_similarity,
    score_completion,
)
from coder_assets.core.files import atomic_writer, write_json_atomic
from coder_assets.core.samples.fim import IM_START

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
    batch_size: int = DEFAULT_BATCH_SIZE  # sequences decoded together; 1: one at a time
    # The model's context (its config's max_position_embeddings): a FIM prompt is cut to this
    # minus fim_max_tokens (core.evaluation.generation.fit_fim_task). None: prompts are never cut.
    context_tokens: int | None = None


class Generator:
    """What `evaluate_model` needs of a model (see core.evaluation.generation.InProcessGenerator).

    `complete_batch` (many prompts at once) and `text_losses` (per text) are used when the
    generator has them; `generated_tokens` (a running count), when it has it, is reported."""

    tokenizer: Any

    def complete(self, prompt: str, max_tokens: int, stop: Sequence[str]) -> str: ...

    def loss(self, texts: Sequence[str], max_seq_length: int) -> float: ...


class EvalModel:
    """One model under evaluation: its generator, loaded on first need (a model whose every
    result is in the cache is never loaded), the cache and its identity there, and what the
    evaluation cost: loads, load seconds, generated tokens, cache hits and misses.

    Without a cache (or an identity) every lookup is a miss and nothing is stored."""

    def __init__(
        self,
        label: str,
        load: Callable[[], Generator],
        *,
        tokenizer: Any | None = None,
        identity: ModelIdentity | None = None,
        cache: EvalCache | None = None,
    ) -> None:
        self.label = label
        self._load = load
        self._tokenizer = tokenizer
        self._generator: Generator | None = None
        self.identity = identity
        self.cache = cache if identity is not None else None
        self.counts = CacheCounts()
        self.loads = 0
        self.load_seconds = 0.0
        self.generated_tokens = 0

    @classmethod
    def of(cls, label: str, generator: Generator) -> EvalModel:
        """An already loaded generator, without a cache (every task generated)."""
        model = cls(label, lambda: generator, tokenizer=generator.tokenizer)
        model._generator = generator
        return model

    @property
    def generator(self) -> Generator:
        if self._generator is None:
            started = time.perf_counter()
            self._generator = self._load()
            self.loads += 1
            self.load_seconds += time.perf_counter() - started
        return self._generator

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer if self._tokenizer is not None else self.generator.tokenizer

    def release(self) -> None:
        """Drop the loaded generator (its memory goes with the last reference)."""
        self._generator = None

    def lookup(
        self,
        kind: str,
        prompt: str,
        settings: Mapping[str, Any],
        valid: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> dict[str, Any] | None:
        if self.cache is None or self.identity is None:
            self.counts.count(kind, False)
            return None
        return self.cache.get(self.identity, kind, prompt, settings, self.counts, valid)

    def store(
        self, kind: str, prompt: str, settings: Mapping[str, Any], result: Mapping[str, Any]
    ) -> None:
        if self.cache is not None and self.identity is not None:
            self.cache.put(self.identity, kind, prompt, settings, result)

    def generate(
        self,
        prompts: Sequence[str],
        max_tokens: int,
        stop: Sequence[str],
        batch_size: int,
        on_done: Callable[[int, str], None] | None = None,
    ) -> list[str]:
        """Completions of `prompts` from the model itself (no cache)."""
        generator = self.generator
        before = getattr(generator, "generated_tokens", 0)
        batch = getattr(generator, "complete_batch", None)
        if batch is not None:
            texts = batch(prompts, max_tokens, stop, batch_size=batch_size, on_done=on_done)
        else:
            texts = []
            for index, prompt in enumerate(prompts):
                texts.append(generator.complete(prompt, max_tokens, stop))
                if on_done is not None:
                    on_done(index, texts[-1])
        self.generated_tokens += getattr(generator, "generated_tokens", 0) - before
        return texts

    def complete_many(
        self,
        kind: str,
        prompts: Sequence[str],
        max_tokens: int,
        stop: Sequence[str],
        batch_size: int,
    ) -> list[str]:
        """Completions of `prompts`: from the cache where it has them, the rest generated (in
        batches of `batch_size`) and stored as each one finishes."""
        settings = generation_settings(max_tokens, stop)
        texts: list[str | None] = []
        for prompt in prompts:
            hit = self.lookup(kind, prompt, settings, _has_completion)
            texts.append(hit["completion"] if hit is not None else None)
        missing = [index for index, text in enumerate(texts) if text is None]

        def done(position: int, text: str) -> None:
            index = missing[position]
            texts[index] = text
            self.store(kind, prompts[index], settings, {"completion": text})

        if missing:
            self.generate([prompts[i] for i in missing], max_tokens, stop, batch_size, done)
        return [text or "" for text in texts]

    def text_losses(
        self, texts: Sequence[str], max_seq_length: int
    ) -> list[tuple[float, int]] | None:
        """(summed NLL, predicted tokens) of each text (see InProcessGenerator.text_losses), from
        the cache where it has them; None for a generator without per-text losses and no cache
        (then `loss` asks the generator for the mean)."""
        if self.cache is None and not hasattr(self.generator, "text_losses"):
            return None
        settings = {"max_seq_length": max_seq_length}
        parts: list[tuple[float, int] | None] = []
        for text in texts:
            hit = self.lookup("loss", text, settings, _has_loss)
            parts.append((float(hit["nll"]), int(hit["tokens"])) if hit is not None else None)
        missing = [index for index, part in enumerate(parts) if part is None]
        if missing:
            computed = self.generator.text_losses([texts[i] for i in missing], max_seq_length)
            for index, (nll, tokens) in zip(missing, computed, strict=True):
                parts[index] = (nll, tokens)
                self.store("loss", texts[index], settings, {"nll": nll, "tokens": tokens})
        return [part for part in parts if part is not None]

    def loss(self, texts: Sequence[str], max_seq_length: int) -> float:
        """Mean next-token NLL over `texts` (see InProcessGenerator.loss)."""
        parts = self.text_losses(texts, max_seq_length)
        return self.generator.loss(texts, max_seq_length) if parts is None else mean_loss(parts)

    def cost(self) -> dict[str, Any]:
        """What evaluating this model cost, for metadata and benchmarks."""
        return {
            "loads": self.loads,
            "load_seconds": round(self.load_seconds, 3),
            "generated_tokens": self.generated_tokens,
            "cache": self.counts.to_dict(),
        }


def evaluate_model(
    label: str,
    model: EvalModel | Generator,
    test_records: Sequence[tuple[str, str]],
    settings: EvalSettings,
    results_dir: Path,
    *,
    languages: Mapping[str, str | None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate one model; returns its summary (metrics, task counts, per-problem outcomes, and
    `cost`: loads, generated tokens, cache hits and misses).

    `model` is an `EvalModel` (with the evaluation cache) or a loaded generator (no cache).
    `test_records` are (record id, text) of the dataset's test split. Per-task results go to
    `results_dir/<label>-*.jsonl`; HumanEval resumes from its file after a crash."""
    say = progress or (lambda _message: None)
    if not isinstance(model, EvalModel):
        model = EvalModel.of(label, model)
    results_dir.mkdir(parents=True, exist_ok=True)
    batch = settings.batch_size

    problems = load_problems(limit=settings.humaneval_problems)
    say(f"{label}: HumanEval on {len(problems)} problems")
    results_path = results_dir / f"{label}-humaneval.jsonl"
    recorded = load_results(results_path)
    he_settings = generation_settings(
        settings.humaneval_max_tokens, CHAT_STOP, sandbox_timeout=settings.timeout
    )
    prompts = {
        problem.task_id: model.tokenizer.apply_chat_template(
            chat_messages(problem), tokenize=False, add_generation_prompt=True
        )
        for problem in problems
        if problem.task_id not in recorded
    }
    known: dict[str, ProblemResult] = {}
    completions: dict[str, str] = {}
    for task_id, prompt in prompts.items():
        hit = model.lookup("humaneval", prompt, he_settings, _has_completion)
        if hit is None:
            continue
        if isinstance(hit.get("verdict"), dict):
            known[task_id] = ProblemResult(
                task_id=task_id, completion=hit["completion"], **hit["verdict"]
            )
        else:  # generated before a crash, never run in the sandbox
            completions[task_id] = hit["completion"]
    to_generate = [task_id for task_id in prompts if task_id not in known | completions]

    def generated(position: int, text: str) -> None:
        task_id = to_generate[position]
        completions[task_id] = text
        model.store("humaneval", prompts[task_id], he_settings, {"completion": text})

    if to_generate:
        model.generate(
            [prompts[task_id] for task_id in to_generate],
            settings.humaneval_max_tokens,
            CHAT_STOP,
            batch,
            generated,
        )

    def scored(result: ProblemResult) -> None:
        verdict = {
            "passed": result.passed,
            "timed_out": result.timed_out,
            "error_tail": result.error_tail,
            "seconds": result.seconds,
        }
        model.store(
            "humaneval",
            prompts[result.task_id],
            he_settings,
            {"completion": result.completion, "verdict": verdict},
        )

    results = evaluate(
        problems,
        lambda problem: completions[problem.task_id],
        results_path,
        timeout=settings.timeout,
        on_result=scored,
        known=known,
    )

    fim = fim_tasks_from_records(test_records, limit=settings.fim_tasks, languages=languages)
    fim_cut = 0
    if settings.context_tokens is not None:
        budget = settings.context_tokens - settings.fim_max_tokens
        whole = fim
        fim = [
            fit_fim_task(task, lambda text: len(model.tokenizer.encode(text)), budget)
            for task in fim
        ]
        fim_cut = sum(fitted is not task for fitted, task in zip(fim, whole, strict=True))
    say(
        f"{label}: {len(fim)} FIM tasks from the test split"
        + (
            f", {fim_cut} cut to the model's context of {settings.context_tokens} tokens"
            if fim_cut
            else ""
        )
    )
    predictions = model.complete_many(
        "fim", [task.prompt for task in fim], settings.fim_max_tokens, FIM_STOP, batch
    )
    fim_rows = []
    fim_lines = []
    copy_scores = []
    for task, prediction in zip(fim, predictions, strict=True):
        scores = score_completion(prediction, task.reference, task.language)
        copied = copy_baseline(task.prefix, task.reference, task.language)
        copy_scores.append(score_completion(copied, task.reference, task.language))
        fim_rows.append(scores)
        fim_lines.append(
            {
                "task_id": task.task_id,
                "prediction": prediction,
                **scores,
                "copy_baseline_edit_similarity": copy_scores[-1]["edit_similarity"],
            }
        )
    _write_jsonl(results_dir / f"{label}-fim.jsonl", fim_lines)

    chat = chat_tasks_from_records(test_records, limit=settings.chat_tasks)
    say(f"{label}: {len(chat)} instruction pairs from the test split")
    answers = model.complete_many(
        "chat", [task.prompt for task in chat], settings.chat_max_tokens, CHAT_STOP, batch
    )
    chat_scores = [
        edit_similarity(answer, task.reference) for task, answer in zip(chat, answers, strict=True)
    ]

    texts = [text for _, text in test_records]
    pair_texts = [text for _, text in test_records if text.startswith("<|im_start|>")]
    parts = model.text_losses(texts, settings.max_seq_length) if texts else []
    if parts is None:  # a generator with only a mean loss
        test_loss = model.loss(texts, settings.max_seq_length)
        pair_loss = model.loss(pair_texts, settings.max_seq_length) if pair_texts else math.nan
    else:
        test_loss = mean_loss(parts) if texts else math.nan
        pair_parts = [
            part for part, text in zip(parts, texts, strict=True) if text.startswith(IM_START)
        ]
        pair_loss = mean_loss(pair_parts) if pair_texts else math.nan
    fim_means = aggregate(fim_rows) if fim_rows else {}
    copy_means = aggregate(copy_scores) if copy_scores else {}
    return {
        "label": label,
        "humaneval_pass_at_1": pass_at_1(results),
        "humaneval_problems": len(results),
        "humaneval_outcomes": outcomes(results),
        "fim_tasks": len(fim_rows),
        "fim_prompts_cut": fim_cut,
        "fim_exact_match": float(fim_means.get("exact_match", float("nan"))),
        "fim_edit_similarity": float(fim_means.get("edit_similarity", float("nan"))),
        "fim_identifier_f1": float(fim_means.get("identifier_f1", float("nan"))),
        # The same tasks answered by no model: the prefix's last lines (`copy_baseline`).
        "fim_copy_baseline_edit_similarity": float(copy_means.get("edit_similarity", float("nan"))),
        "chat_tasks": len(chat_scores),
        "chat_edit_similarity": (
            sum(chat_scores) / len(chat_scores) if chat_scores else float("nan")
        ),
        "test_loss": test_loss,
        "test_perplexity": math.exp(test_loss) if test_loss == test_loss else float("nan"),
        "pair_test_loss": pair_loss,
        "cost": model.cost(),
    }


def _has_completion(result: Mapping[str, Any]) -> bool:
    verdict = result.get("verdict")
    return isinstance(result.get("completion"), str) and (
        verdict is None
        or (
            isinstance(verdict, dict)
            and isinstance(verdict.get("passed"), bool)
            and isinstance(verdict.get("timed_out"), bool)
            and isinstance(verdict.get("error_tail"), str)
            and isinstance(verdict.get("seconds"), int | float)
        )
    )


def _has_loss(result: Mapping[str, Any]) -> bool:
    return isinstance(result.get("nll"), int | float) and isinstance(result.get("tokens"), int)


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
    copied = adapter.get("fim_copy_baseline_edit_similarity")
    if isinstance(copied, int | float) and es_new < copied:
        # Not a condition of the policy: what the reader needs to weigh the comparison above.
        reasons.append(
            f"note: the adapter's FIM edit similarity {es_new:.4f} is below that of copying "
            f"the lines above the gap ({copied:.4f}): on these tasks it completes less than a "
            "copy does, so the FIM comparison is close to noise"
        )
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
    """A markdown table: metric, base, adapter, delta (adapter − base), deployed; then the FIM
    edit similarity of copying the lines above the gap, on each model's tasks (no model)."""
    lines = [
        "| metric | base | adapter | delta | deployed |",
        "|---|---:|---:|---:|---:|",
    ]
    for metric in SUMMARY_METRICS:
        b, a = float(base[metric]), float(adapter[metric])
        d = f"{float(deployed[metric]):.4f}" if deployed is not None else "—"
        lines.append(f"| {metric} | {b:.4f} | {a:.4f} | {a - b:+.4f} | {d} |")
    copy = "fim_copy_baseline_edit_similarity"
    if copy in base and copy in adapter:  # evaluate_model's summaries have it; others may not
        d = f"{float(deployed[copy]):.4f}" if deployed is not None and copy in deployed else "—"
        lines.append(
            f"| {copy} (no model) | {float(base[copy]):.4f} | {float(adapter[copy]):.4f} | | {d} |"
        )
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
