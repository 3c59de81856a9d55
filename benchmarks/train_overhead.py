"""What `coder_assets.core.training.lora.train_lora` costs on top of mlx-lm: tokens/s of
`train_lora` against `python -m mlx_lm lora` on the same model, data and settings, side by side.

    .venv/bin/python benchmarks/train_overhead.py [--repeats 3] [--iters 60] [--lines 200]
        [--model DIR --data DIR] [--batch-size 1] [--num-layers 16] [--no-grad-checkpoint]

Without --model / --data it builds the dev model and a generated dataset of Python functions
(`--lines` train records, a fifth as many validation records) in a temporary directory.

Fairness: every run is a fresh process, ours and mlx-lm's alternately, so both pay the same
interpreter start, imports and model load, neither inherits the other's compiled graphs or
allocator cache, and mlx-lm's process-wide grad-checkpoint patch of the block class cannot leak
from one into the other. Both train with Adam, the same LoRA rank / scale / dropout / layers,
batch size, iterations, validation and save cadence, sequence length and seed (mlx-lm gets the
LoRA parameters through a `-c` YAML file, the rest as flags), and the same batches, so the
final train loss must agree. Figures:

- trainer tok/s: mlx-lm's own per-report tokens/s (tokens over training-step time, no
  validation or saving), mean over the reports, read from the progress table both runs print;
- end to end tok/s: trained tokens over the whole process's wall time (start, imports, model
  load, hashing inputs, training, validation, checkpoints, our log and marker).

Goal: ours / direct >= 0.98 on both.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from coder_assets.core.training.dev_model import DevModelConfig, build_dev_model
from coder_assets.core.training.lora import LoraSettings

# mlx-lm's progress row: iteration, train loss and arrow, tok/s, trained tokens in thousands.
REPORT_ROW = re.compile(r"^\s*(\d+)\s+(\d+\.\d+)\s+[▼▲]\s+([\d,]+)\s+(\d+\.\d)k\s*$")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # mlx-lm's console colours even into a pipe
RESULT_PREFIX = "TRAIN_LORA_RESULT "
WORDS = [
    "value", "total", "items", "limit", "record", "cache", "index", "buffer", "result", "count",
    "name", "path", "parts", "token", "batch", "entry", "chunk", "state", "offset", "scale",
]  # fmt: skip


def function(rng: random.Random) -> str:
    """A generated Python function of 6-30 lines."""
    name = "_".join(rng.sample(WORDS, 2))
    args = rng.sample(WORDS, 3)
    lines = [f"def {name}({', '.join(args)}):", f'    """Return the {rng.choice(WORDS)}."""']
    for _ in range(rng.randint(4, 28)):
        a, b = rng.sample(args + WORDS, 2)
        lines.append(
            rng.choice(
                [
                    f"    {a} = {b} + {rng.randint(0, 99)}",
                    f"    if {a} > {b}:\n        {a} = {b}",
                    f"    for {a} in range({rng.randint(1, 9)}):\n        {b} += {a}",
                    f"    {a} = [{b} for {b} in {a} if {b}]",
                ]
            )
        )
    lines.append(f"    return {rng.choice(args)}")
    return "\n".join(lines) + "\n"


def build_inputs(root: Path, lines: int, seed: int) -> tuple[Path, Path]:
    """The dev model (its tokenizer trained on the generated code) and a dataset directory."""
    rng = random.Random(seed)
    texts = [function(rng) for _ in range(lines + lines // 5)]
    model = build_dev_model(root / "model", texts, DevModelConfig())
    (root / "data").mkdir()
    for name, part in (("train", texts[:lines]), ("valid", texts[lines:])):
        records = "".join(json.dumps({"text": text}) + "\n" for text in part)
        (root / "data" / f"{name}.jsonl").write_text(records, "utf-8")
    return model, root / "data"


def direct_command(model: Path, data: Path, adapters: Path, s: LoraSettings) -> list[str]:
    config = adapters.parent / f"{adapters.name}.yaml"
    config.write_text(
        json.dumps(  # JSON is YAML; the CLI flags below take precedence over this file
            {
                "fine_tune_type": "lora",
                "optimizer": "adam",
                "lora_parameters": {"rank": s.rank, "scale": s.scale, "dropout": s.dropout},
            }
        )
    )
    command = [sys.executable, "-m", "mlx_lm", "lora", "--train", "-c", str(config)]
    command += ["--model", str(model), "--data", str(data), "--adapter-path", str(adapters)]
    for flag, value in (
        ("--num-layers", s.num_layers),
        ("--batch-size", s.batch_size),
        ("--iters", s.iters),
        ("--learning-rate", s.learning_rate),
        ("--val-batches", s.val_batches),
        ("--steps-per-report", s.steps_per_report),
        ("--steps-per-eval", s.steps_per_eval),
        ("--save-every", s.save_every),
        ("--max-seq-length", s.max_seq_length),
        ("--seed", s.seed),
    ):
        command += [flag, str(value)]
    return command + (["--grad-checkpoint"] if s.grad_checkpoint else [])


def ours_command(model: Path, data: Path, adapters: Path, s: LoraSettings) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--worker",
        json.dumps({"model": str(model), "data": str(data), "adapters": str(adapters)}),
        json.dumps(s.to_dict()),
    ]


def run_once(command: list[str]) -> dict[str, float]:
    """Run one training process; its wall time and what its progress table says."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{command[:4]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = ANSI_ESCAPE.sub("", proc.stdout).splitlines()
    rows = [m.groups() for m in map(REPORT_ROW.match, lines) if m]
    if not rows:
        raise SystemExit(f"no progress rows in the output of {command[:4]}:\n{proc.stdout[-2000:]}")
    figures = {
        "wall": wall,
        "trainer_tps": statistics.mean(float(r[2].replace(",", "")) for r in rows),
        "final_loss": float(rows[-1][1]),
        "tokens": float(rows[-1][3]) * 1000,
    }
    for line in lines:
        if line.startswith(RESULT_PREFIX):
            figures["tokens"] = json.loads(line[len(RESULT_PREFIX) :])["trained_tokens"]
    return figures


def worker(paths_json: str, settings_json: str) -> None:
    """The `ours` process: one train_lora run, its result printed as one JSON line."""
    from coder_assets.core.training.lora import train_lora

    paths = json.loads(paths_json)
    settings = LoraSettings(**json.loads(settings_json))
    result = train_lora(
        Path(paths["model"]), Path(paths["data"]), Path(paths["adapters"]), settings
    )
    print(RESULT_PREFIX + json.dumps({"trained_tokens": result.trained_tokens}), flush=True)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="an mlx model directory (default: dev model)")
    parser.add_argument("--data", type=Path, help="a directory with train.jsonl and valid.jsonl")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--lines", type=int, default=200, help="generated train records")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-layers", type=int, default=16)
    parser.add_argument("--no-grad-checkpoint", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if (args.model is None) != (args.data is None):
        parser.error("give both --model and --data, or neither")

    with tempfile.TemporaryDirectory(prefix="train-overhead-") as tmp:
        root = Path(tmp)
        if args.model is None:
            model, data = build_inputs(root, args.lines, args.seed)
            layers = DevModelConfig().num_hidden_layers
        else:
            model, data = args.model, args.data
            layers = json.loads((model / "config.json").read_text())["num_hidden_layers"]
        settings = LoraSettings(
            num_layers=min(args.num_layers, layers),
            batch_size=args.batch_size,
            iters=args.iters,
            steps_per_report=10,
            steps_per_eval=max(1, args.iters // 3),
            val_batches=5,
            save_every=max(1, args.iters // 3),
            grad_checkpoint=not args.no_grad_checkpoint,
        )
        runs: dict[str, list[dict[str, float]]] = {"direct": [], "ours": []}
        for repeat in range(args.repeats):
            # Alternate which goes first, so drift (thermal, caches) favours neither side.
            order = ["direct", "ours"] if repeat % 2 == 0 else ["ours", "direct"]
            for name in order:
                adapters = root / f"adapters-{name}-{repeat}"
                build = direct_command if name == "direct" else ours_command
                runs[name].append(run_once(build(model, data, adapters, settings)))

    tokens = runs["ours"][0]["tokens"]
    print(
        f"model: {args.model or 'dev model (generated)'}, {layers} layers; rank {settings.rank}, "
        f"scale {settings.scale}, num_layers {settings.num_layers}, batch {settings.batch_size}, "
        f"{settings.iters} iters, grad_checkpoint {settings.grad_checkpoint}; {tokens:.0f} "
        f"trained tokens per run; {args.repeats} runs each, alternating, fresh process per run\n"
    )
    print(
        "| runner | trainer tok/s (mean ± sd) | end to end tok/s (mean ± sd) | wall s "
        "| final train loss |"
    )
    print("|---|---:|---:|---:|---:|")
    means = {}
    for name, label in (("direct", "python -m mlx_lm lora"), ("ours", "train_lora")):
        trainer = [r["trainer_tps"] for r in runs[name]]
        e2e = [tokens / r["wall"] for r in runs[name]]
        walls = [r["wall"] for r in runs[name]]
        losses = sorted({f"{r['final_loss']:.3f}" for r in runs[name]})
        means[name] = (statistics.mean(trainer), statistics.mean(e2e))
        print(
            f"| {label} | {means[name][0]:,.0f} ± {_sd(trainer):,.0f} | "
            f"{means[name][1]:,.0f} ± {_sd(e2e):,.0f} | {statistics.mean(walls):.1f} | "
            f"{', '.join(losses)} |"
        )
    print(
        f"| ours / direct | {means['ours'][0] / means['direct'][0]:.3f} | "
        f"{means['ours'][1] / means['direct'][1]:.3f} | | |"
    )
    direct_tokens = {round(r["tokens"], -2) for r in runs["direct"]}
    if direct_tokens != {round(tokens, -2)}:
        print(f"\nwarning: mlx-lm reported {direct_tokens} trained tokens, ours {tokens}")


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


if __name__ == "__main__":
    main()
