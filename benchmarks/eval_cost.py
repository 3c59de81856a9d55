"""What `eval_scores` costs for a first adapter and then a second one trained on a changed
dataset: today's behaviour (every model evaluated again, one prompt at a time) against the new
one (batched generation and the evaluation cache), side by side in one run on the dev model;
then tokens/s of batched generation against one prompt at a time; then a projection for
waterdeep.

    .venv/bin/python benchmarks/eval_cost.py [--humaneval 20] [--max-tokens 128] [--modules 5]

Setup (not timed): the demo's dataset (the sample repositories through repo_job and
dataset_job in a temporary coder_assets home), a LoRA adapter trained on it with the demo's
training settings; then one commit to a sample repository (five small helper modules in
`kfp-training-pipelines`), the dataset made again (a new version whose test split shares most
tasks with the first) and a second adapter trained on it.

Timed, as `eval_scores` evaluates (`evaluate_model`, the demo's test split in full, the first
`--humaneval` HumanEval problems, max tokens `--max-tokens` for HumanEval and answers, a quarter
of it for FIM middles):

- first adapter: the base model and adapter 1 (nothing deployed yet);
- second adapter: the base model, adapter 2, and adapter 1 as the deployed one (its installed
  copy: the same files in another folder).

"old" generates everything one prompt at a time and loads every model; "new" uses batch size
`--batch-size` and one cache shared by both evaluations, loading a model only for a miss.

Then tokens/s of `InProcessGenerator.complete_batch` at batch sizes 1 (one at a time), 4, 8
and 16, with the share of completions identical to one-at-a-time generation, on three prompt
sets: HumanEval problems as code to continue (short prompts, long answers: decode-bound, as the
32B model's long answers make a production evaluation; the dev model, trained on Python source,
continues code at length but answers the instruct prompt with a few tokens), the HumanEval
instruct prompts as evaluated, and the test split's FIM prompts (long prompts, short middles:
prefill-bound).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Waterdeep: Qwen2.5-Coder-32B-Instruct at 8 bits (about 34 GB of weights) on an M4 Pro with
# 273 GB/s of memory bandwidth: one decode step reads every weight once.
WATERDEEP_WEIGHTS_GB = 34.0
WATERDEEP_BANDWIDTH_GBS = 273.0
PRODUCTION_TASKS = {"humaneval": (164, 512), "chat": (100, 512)}  # tasks, max tokens

NEW_MODULES = {
    "pipelines/retry.py": '''"""Retry helpers for pipeline steps that call flaky services."""

import time


def retry(call, attempts=3, delay=0.5):
    """Call `call` until it returns without raising, at most `attempts` times.

    Waits `delay` seconds between attempts, doubling each time, and raises the
    last error when every attempt failed.
    """
    for attempt in range(attempts):
        try:
            return call()
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(delay)
            delay *= 2
''',
    "pipelines/chunks.py": '''"""Batching of work items for parallel pipeline steps."""


def chunked(items, size):
    """Split `items` into lists of at most `size` items, in order."""
    if size < 1:
        raise ValueError("size must be at least 1")
    return [items[start : start + size] for start in range(0, len(items), size)]


def interleave(*sequences):
    """Yield one item of each sequence in turn until all are exhausted."""
    iterators = [iter(sequence) for sequence in sequences]
    while iterators:
        for iterator in list(iterators):
            try:
                yield next(iterator)
            except StopIteration:
                iterators.remove(iterator)
''',
    "pipelines/naming.py": '''"""Names of Kubeflow runs and artifacts derived from git metadata."""

import re

_UNSAFE = re.compile(r"[^a-z0-9-]+")


def run_name(pipeline: str, branch: str, sha: str) -> str:
    """A DNS-safe run name: pipeline, branch and the short commit sha."""
    slug = _UNSAFE.sub("-", f"{pipeline}-{branch}".lower()).strip("-")
    return f"{slug[:50]}-{sha[:8]}"


def artifact_path(bucket: str, run: str, name: str) -> str:
    """Where a run stores an artifact in the object store."""
    return f"s3://{bucket}/runs/{run}/{name}"
''',
    "pipelines/thresholds.py": '''"""Promotion thresholds for trained models."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    min_accuracy: float = 0.9
    max_latency_ms: float = 250.0

    def accepts(self, accuracy: float, latency_ms: float) -> bool:
        """Whether a model with these figures may be promoted."""
        return accuracy >= self.min_accuracy and latency_ms <= self.max_latency_ms
''',
    "pipelines/schedule.py": '''"""Cron expressions for recurring pipeline runs."""

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def weekly(day: str, hour: int, minute: int = 0) -> str:
    """The cron expression of a weekly run on `day` at `hour`:`minute`."""
    if day not in WEEKDAYS:
        raise ValueError(f"unknown day {day!r}")
    if not 0 <= hour < 24 or not 0 <= minute < 60:
        raise ValueError("hour must be 0-23 and minute 0-59")
    return f"{minute} {hour} * * {(WEEKDAYS.index(day) + 1) % 7}"
''',
}


def _datasets(home: Path, modules: int) -> tuple[Path, Path]:
    """The demo's dataset, then the one after a commit to a sample repository."""
    import dagster as dg

    from coder_assets.demo.run import repos_dir, run_demo

    with dg.instance_for_test() as instance:
        results = run_demo(instance, until="dataset")
        if not all(result.success for result in results):
            raise SystemExit(f"the demo's dataset failed: {results}")
        first = _versions(home)
        repo = repos_dir() / "kfp-training-pipelines"
        for path, text in list(NEW_MODULES.items())[:modules]:
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            (repo / path).write_text(text, "utf-8")
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "Bench",
            "GIT_AUTHOR_EMAIL": "bench@homelab.example",
            "GIT_COMMITTER_NAME": "Bench",
            "GIT_COMMITTER_EMAIL": "bench@homelab.example",
        }
        for command in (["add", "-A"], ["commit", "-q", "-m", "Add pipeline helpers"]):
            subprocess.run(["git", "-C", str(repo), *command], env=env, check=True)
        results = run_demo(instance, until="dataset", sample_repos=False)
        if not all(result.success for result in results):
            raise SystemExit(f"the changed dataset failed: {results}")
        (second,) = _versions(home) - first
    (first,) = first
    return first, second


def _versions(home: Path) -> set[Path]:
    return {p for p in (home / "datasets").iterdir() if (p / "manifest.json").is_file()}


def _train(model: Path, data: Path, out: Path) -> Path:
    import contextlib
    import io

    from coder_assets.assets.training import LoraAdapterConfig
    from coder_assets.core.training.lora import train_lora
    from coder_assets.demo.run import DEMO_TRAINING_CONFIG

    settings = LoraAdapterConfig(**DEMO_TRAINING_CONFIG).settings(2048)
    with contextlib.redirect_stdout(io.StringIO()):
        train_lora(model, data, out, settings)
    return out


def _evaluation(
    models: list[tuple[str, Path | None]],
    model_dir: Path,
    data: Path,
    settings,
    out: Path,
    cache,
) -> dict:
    """Evaluate `models` as eval_scores does; returns tokens, loads, seconds and summaries."""
    from coder_assets.assets.evaluation import _test_records
    from coder_assets.core.evaluation.cache import ModelIdentity, adapter_content_digest
    from coder_assets.core.evaluation.evaluate import EvalModel, evaluate_model
    from coder_assets.core.evaluation.generation import InProcessGenerator, load_model_tokenizer
    from coder_assets.core.training.dev_model import model_version

    records, languages = _test_records(data)
    started = time.perf_counter()
    tokenizer = load_model_tokenizer(model_dir) if cache is not None else None
    summaries = {}
    for label, adapter in models:
        if cache is None:
            model = EvalModel.of(label, InProcessGenerator(model_dir, adapter))
            model.loads = 1
        else:
            model = EvalModel(
                label,
                lambda adapter=adapter: InProcessGenerator(model_dir, adapter),
                tokenizer=tokenizer,
                identity=ModelIdentity(
                    model_version(model_dir), adapter_content_digest(adapter) if adapter else None
                ),
                cache=cache,
            )
        summary = evaluate_model(label, model, records, settings, out, languages=languages)
        summary["cost"] = model.cost()
        summaries[label] = summary
        model.release()
    return {
        "seconds": time.perf_counter() - started,
        "tokens": sum(s["cost"]["generated_tokens"] for s in summaries.values()),
        "loads": sum(s["cost"]["loads"] for s in summaries.values()),
        "hits": sum(s["cost"]["cache"]["hits"] for s in summaries.values()),
        "misses": sum(s["cost"]["cache"]["misses"] for s in summaries.values()),
        "summaries": summaries,
    }


def _throughput(model_dir: Path, prompts: list[str], max_tokens: int, stop) -> list[tuple]:
    from coder_assets.core.evaluation.generation import InProcessGenerator

    generator = InProcessGenerator(model_dir)
    rows = []
    reference = None
    for batch_size in (1, 4, 8, 16):
        generator.generated_tokens = 0
        started = time.perf_counter()
        texts = generator.complete_batch(prompts, max_tokens, stop, batch_size=batch_size)
        seconds = time.perf_counter() - started
        if reference is None:
            reference = texts
        same = sum(a == b for a, b in zip(reference, texts, strict=True))
        rows.append((batch_size, generator.generated_tokens, seconds, same, len(prompts)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--humaneval", type=int, default=20, help="HumanEval problems")
    parser.add_argument("--max-tokens", type=int, default=128, help="HumanEval/answer tokens")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=32, help="prompts per throughput row")
    parser.add_argument(
        "--modules",
        type=int,
        default=len(NEW_MODULES),
        choices=range(1, len(NEW_MODULES) + 1),
        help="helper modules the commit adds (1: the test split stays as it was)",
    )
    args = parser.parse_args()

    from coder_assets.assets.evaluation import EvalScoresConfig, _test_records
    from coder_assets.core.evaluation.cache import EvalCache
    from coder_assets.core.evaluation.generation import (
        CHAT_STOP,
        FIM_STOP,
        fim_tasks_from_records,
        load_model_tokenizer,
    )
    from coder_assets.core.evaluation.humaneval import chat_messages, load_problems
    from coder_assets.core.training.pretrain import cached_dev_model

    with tempfile.TemporaryDirectory(prefix="eval-cost-bench-") as tmp:
        root = Path(tmp)
        home = root / "home"
        os.environ["CODER_ASSETS_HOME"] = str(home)
        model = cached_dev_model(progress=print)
        os.environ["CODER_ASSETS_BASE_MODEL"] = str(model)
        data1, data2 = _datasets(home, args.modules)
        adapter1 = _train(model, data1, root / "adapter-1")
        adapter2 = _train(model, data2, root / "adapter-2")
        deployed = root / "deployed" / "adapter-1"
        shutil.copytree(adapter1, deployed, ignore=shutil.ignore_patterns("eval"))
        tests1, tests2 = (len(_test_records(d)[0]) for d in (data1, data2))
        shared = len(
            {t for _, t in _test_records(data1)[0]} & {t for _, t in _test_records(data2)[0]}
        )
        config = {
            "humaneval_problems": args.humaneval,
            "fim_tasks": None,
            "chat_tasks": None,
            "humaneval_max_tokens": args.max_tokens,
            "chat_max_tokens": args.max_tokens,
            "fim_max_tokens": max(1, args.max_tokens // 4),
        }
        old_settings = EvalScoresConfig(**config, batch_size=1).settings(2048)
        new_settings = EvalScoresConfig(**config, batch_size=args.batch_size).settings(2048)
        first_models = [("base", None), ("adapter", adapter1)]
        second_models = [("base", None), ("adapter", adapter2), ("deployed", deployed)]
        cache = EvalCache(root / "eval-cache")
        rows = {}
        for name, settings, use_cache in (
            ("old", old_settings, None),
            ("new", new_settings, cache),
        ):
            rows[(name, 1)] = _evaluation(
                first_models, model, data1, settings, root / f"{name}-1", use_cache
            )
            rows[(name, 2)] = _evaluation(
                second_models, model, data2, settings, root / f"{name}-2", use_cache
            )

        tokenizer = load_model_tokenizer(model)
        humaneval_prompts = [
            tokenizer.apply_chat_template(
                chat_messages(problem), tokenize=False, add_generation_prompt=True
            )
            for problem in load_problems(limit=args.prompts)
        ]
        fim_prompts = [task.prompt for task in fim_tasks_from_records(_test_records(data2)[0])][
            : args.prompts
        ]
        code_prompts = [problem.prompt for problem in load_problems(limit=args.prompts)]
        throughput = {
            "HumanEval problems as code to continue (decode-bound)": _throughput(
                model, code_prompts, args.max_tokens, FIM_STOP
            ),
            "HumanEval instruct prompts": _throughput(
                model, humaneval_prompts, args.max_tokens, CHAT_STOP
            ),
            "FIM prompts (test split)": _throughput(
                model, fim_prompts, max(1, args.max_tokens // 4), FIM_STOP
            ),
        }

    print(
        f"dev model (CPU), demo dataset: test split {tests1} records, after the commit {tests2} "
        f"({shared} unchanged); {args.humaneval} HumanEval problems, max tokens "
        f"{args.max_tokens} (FIM {max(1, args.max_tokens // 4)}); new: batch size "
        f"{args.batch_size} and the cache\n"
    )
    print(
        "| evaluation | models | old: generated tokens | old: loads | old: wall s "
        "| new: generated tokens | new: loads | new: wall s | new: cache hits / misses "
        "| new tokens / old |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for number, models in ((1, first_models), (2, second_models)):
        old, new = rows[("old", number)], rows[("new", number)]
        print(
            f"| adapter {number} | {', '.join(label for label, _ in models)} "
            f"| {old['tokens']:,} | {old['loads']} | {old['seconds']:.1f} "
            f"| {new['tokens']:,} | {new['loads']} | {new['seconds']:.1f} "
            f"| {new['hits']} / {new['misses']} | {new['tokens'] / max(1, old['tokens']):.0%} |"
        )
    old_adapter = rows[("old", 2)]["summaries"]["adapter"]["cost"]["generated_tokens"]
    print(
        f"\nthe new adapter alone (another digest: nothing of it can be cached) generates "
        f"{old_adapter / max(1, rows[('old', 2)]['tokens']):.0%} of today's tokens for the second "
        "adapter"
    )
    print("per model, second adapter (new): generated tokens, loads, hits / misses")
    for label, summary in rows[("new", 2)]["summaries"].items():
        cost = summary["cost"]
        print(
            f"  {label:9} {cost['generated_tokens']:>7,} tokens, {cost['loads']} load(s), "
            f"{cost['cache']['hits']} / {cost['cache']['misses']}"
        )
    same_gate = all(
        rows[("old", n)]["summaries"][label][metric] == rows[("new", n)]["summaries"][label][metric]
        for n in (1, 2)
        for label in rows[("old", n)]["summaries"]
        for metric in ("humaneval_outcomes", "fim_edit_similarity", "test_loss")
    )
    print(
        f"  old and new give the same HumanEval outcomes, FIM similarity and test loss: {same_gate}"
    )

    for title, table in throughput.items():
        print(f"\n{title}: {table[0][4]} prompts, tokens/s of complete_batch")
        print(
            "| batch size | generated tokens | wall s | tokens/s | vs one at a time | identical |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        base_rate = table[0][1] / table[0][2]
        for batch_size, tokens, seconds, same, n in table:
            rate = tokens / seconds
            print(
                f"| {batch_size} | {tokens:,} | {seconds:.1f} | {rate:.0f} | "
                f"{rate / base_rate:.2f}x | {same}/{n} |"
            )

    ratio = rows[("new", 2)]["tokens"] / max(1, rows[("old", 2)]["tokens"])
    per_model = sum(tasks * limit for tasks, limit in PRODUCTION_TASKS.values())
    single = WATERDEEP_BANDWIDTH_GBS / WATERDEEP_WEIGHTS_GB
    old_tokens = 3 * per_model
    new_tokens = ratio * old_tokens
    print(
        f"\nwaterdeep projection: one sequence decodes at most {single:.1f} tokens/s "
        f"({WATERDEEP_BANDWIDTH_GBS:.0f} GB/s over {WATERDEEP_WEIGHTS_GB:.0f} GB of weights). "
        f"At most {per_model:,} tokens per model (164 HumanEval x 512 + 100 answers x 512; FIM "
        f"middles of 128 tokens add a few thousand):"
    )
    print(
        f"  today, second adapter (3 models, one at a time): {old_tokens:,} tokens, "
        f"{old_tokens / single / 3600:.1f} h of decode"
    )
    print(
        f"  new, the same share as measured here ({ratio:.0%}): {new_tokens:,.0f} tokens, "
        f"{new_tokens / single / 3600:.1f} h one at a time; a decode step of 8 sequences reads "
        f"the weights once, so while bandwidth-bound batch 8 approaches 8x: "
        f"{new_tokens / (8 * single) / 3600:.1f} h"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
