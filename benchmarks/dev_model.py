"""The trained dev model: its size, build time, and its scores before and after the demo's LoRA
training on the sample repos' held-out test split.

    .venv/bin/python benchmarks/dev_model.py [--runs 2] [--rebuild]

Makes the demo's dataset (the sample repositories through repo_job and dataset_job, in a
temporary coder_assets home), takes the trained dev model from the shared cache (`--rebuild`:
builds it again in a temporary folder and times that), then evaluates the base model, trains the
demo's LoRA adapter (`DEMO_TRAINING_CONFIG`) and evaluates it with the demo's evaluation settings
(`DEMO_EVAL_CONFIG`), and decides with the production gate policy. `--runs 2` trains and evaluates
the adapter twice from scratch, to show the verdict does not change between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS = ("fim_exact_match", "fim_edit_similarity", "fim_identifier_f1", "test_loss")


def _dataset(home: Path) -> Path:
    """The demo's dataset version, made in a fresh coder_assets home and Dagster instance."""
    import dagster as dg

    from coder_assets.demo.run import run_demo

    with dg.instance_for_test() as instance:
        results = run_demo(instance, until="dataset")
    if not all(result.success for result in results):
        raise SystemExit(f"the demo's dataset failed: {results}")
    (version,) = [p for p in (home / "datasets").iterdir() if (p / "manifest.json").is_file()]
    return version


def _evaluate(label: str, model: Path, adapter: Path | None, data: Path, out: Path) -> dict:
    from coder_assets.assets.evaluation import _test_records
    from coder_assets.core.evaluation.evaluate import evaluate_model
    from coder_assets.core.evaluation.generation import InProcessGenerator
    from coder_assets.demo.run import DEMO_EVAL_CONFIG

    records, languages = _test_records(data)
    context = json.loads((model / "config.json").read_text("utf-8"))["max_position_embeddings"]
    settings = _eval_settings(DEMO_EVAL_CONFIG, context)
    return evaluate_model(
        label, InProcessGenerator(model, adapter), records, settings, out, languages=languages
    )


def _eval_settings(config: dict, context: int | None = None):
    """eval_scores' settings for `config`; `context`: the base model's, as eval_scores reads it."""
    from coder_assets.assets.evaluation import EvalScoresConfig

    manifest_length = 2048
    return EvalScoresConfig(**config).settings(manifest_length, context)


def _train(model: Path, data: Path, out: Path) -> tuple[Path, float]:
    from coder_assets.assets.training import LoraAdapterConfig
    from coder_assets.core.training.lora import train_lora
    from coder_assets.demo.run import DEMO_TRAINING_CONFIG

    settings = LoraAdapterConfig(**DEMO_TRAINING_CONFIG).settings(2048)
    started = time.monotonic()
    train_lora(model, data, out, settings)
    return out, time.monotonic() - started


def _weights_sha(model: Path) -> str:
    index = json.loads((model / "model.safetensors.index.json").read_text("utf-8"))
    return index["metadata"]["weights_sha256"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="adapter trainings (default 2)")
    parser.add_argument("--rebuild", action="store_true", help="build the model again, timed")
    parser.add_argument("--data", type=Path, help="an existing dataset version folder")
    parser.add_argument("--model", type=Path, help="an existing model folder instead of the cache")
    args = parser.parse_args()

    from coder_assets.core.evaluation.evaluate import promotion_decision
    from coder_assets.core.training.dev_model import model_version
    from coder_assets.core.training.pretrain import (
        PretrainConfig,
        build_info,
        build_trained_dev_model,
        cached_dev_model,
        stdlib_sources,
    )

    with tempfile.TemporaryDirectory(prefix="dev-model-bench-") as tmp:
        root = Path(tmp)
        os.environ["CODER_ASSETS_HOME"] = str(root / "home")
        if args.model:
            model = args.model
        elif args.rebuild:
            model = build_trained_dev_model(
                root / "model", stdlib_sources(), PretrainConfig(), progress=print
            )
        else:
            model = cached_dev_model(progress=print)
        os.environ["CODER_ASSETS_BASE_MODEL"] = str(model)
        data = args.data or _dataset(root / "home")
        info = build_info(model) or {}
        weights = model / "model.safetensors"
        print(f"model {model} (version {model_version(model)[:12]})")
        print(f"  weights sha256 {_weights_sha(model)}")
        if args.rebuild:
            cached = cached_dev_model()
            same = _weights_sha(cached) == _weights_sha(model)
            print(f"  the cached build {cached.name[:12]}: {'identical' if same else 'DIFFERENT'}")
        # CPU seconds: what the build costs when other work shares the machine (builds before
        # the build info recorded them show "?").
        print(
            f"  {info.get('parameters', 0):,} parameters, {weights.stat().st_size / 1e6:.1f} MB "
            f"weights, built in {info.get('build_seconds')} s wall, "
            f"{info.get('build_cpu_seconds', '?')} s CPU ({info.get('train_seconds')} s training, "
            f"{info.get('trained_tokens', 0):,} tokens, loss {info.get('first_loss')} → "
            f"{info.get('final_loss')}); corpus {info.get('corpus_files', 0):,} files, "
            f"{info.get('corpus_chars', 0):,} characters"
        )
        base = _evaluate("base", model, None, data, root / "eval-base")
        rows = [("base", base, None)]
        for run in range(1, args.runs + 1):
            adapter, seconds = _train(model, data, root / f"adapter-{run}")
            scores = _evaluate(f"adapter-{run}", model, adapter, data, root / f"eval-{run}")
            rows.append((f"adapter run {run} ({seconds:.0f} s)", scores, base))
        print(f"\n{base['fim_tasks']} FIM tasks, {base['humaneval_problems']} HumanEval problems")
        print("| model | " + " | ".join(METRICS) + " | HumanEval | gate |")
        print("|---|" + "---:|" * (len(METRICS) + 2))
        for label, scores, reference in rows:
            cells = [f"{scores[m]:.4f}" for m in METRICS]
            verdict = "—"
            if reference is not None:
                decision = promotion_decision(reference, scores, None)
                verdict = "promote" if decision.passed else "reject"
                new, old = scores["fim_edit_similarity"], reference["fim_edit_similarity"]
                cells[1] += f" ({new / old - 1:+.0%})" if old > 0 else " (base 0)"
            he = f"{scores['humaneval_pass_at_1']:.3f}"
            print(f"| {label} | " + " | ".join(cells) + f" | {he} | {verdict} |")
        copied = base.get("fim_copy_baseline_edit_similarity", float("nan"))
        print(f"| copy of the lines above the gap (no model) | | {copied:.4f} | | | | |")
        print(json.dumps({label: {m: s[m] for m in METRICS} for label, s, _ in rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
