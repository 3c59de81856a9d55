"""Greedy FIM generation for evaluation: in process (`InProcessGenerator`) against a running
`mlx_lm.server` (`ServerGenerator`), base model then adapter, on the dev model, CPU backend.

    .venv/bin/python benchmarks/generation.py [--prompts 40] [--max-tokens 32] [--iters 20]

Setup (not timed): the dev model is built with its tokenizer trained on the demo sample repos'
files, and a LoRA adapter is trained on FIM samples cut from the first half of those files
(`core.samples.fim.fim_samples_for_file`, no repository context). The prompts are FIM samples of the
other half, up to `--prompts` of them.

Timed, the way an evaluation would run:

- in process: load the base model, complete every prompt, then load base + adapter and complete
  every prompt again (load times included in the totals);
- server: start one `mlx_lm.server --model M --adapter-path A` and wait until a one-token
  completion succeeds (the start), then every prompt for the base (`model` = M, no adapter), then
  every prompt for the adapter (`model` = M, `adapters` = A). The server holds one model, so the
  first base request reloads it without the adapter and the first adapter request reloads it
  with the adapter: the "first request" column shows that switch.

The last column counts completions identical to the in-process text for the same prompt.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

from coder_assets.core.evaluation.generation import (
    FimTask,
    InProcessGenerator,
    ServerGenerator,
    fim_tasks_from_records,
)
from coder_assets.core.samples.fim import FimConfig, fim_samples_for_file
from coder_assets.core.training.dev_model import build_dev_model
from coder_assets.core.training.lora import LoraSettings, train_lora
from coder_assets.demo.sample_repos import sample_corpus

MAX_FILE_CHARS = 4000  # keeps prompts within the adapter's training length
SERVER_START_SECONDS = 120


def fim_texts(files: list[str]) -> list[str]:
    """FIM sample texts of `files`, in order."""
    config = FimConfig(fim_rate=1.0, samples_per_file=2, max_middle_chars=400)
    texts = []
    for text in files:
        sha = hashlib.sha1(text.encode()).hexdigest()
        samples, _ = fim_samples_for_file(text, "file.txt", None, sha, config)
        texts.extend(sample.text for sample in samples)
    return texts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, adapter: Path, state: Path) -> tuple[subprocess.Popen[bytes], str]:
    (state / "hf-hub-cache").mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [sys.executable, "-m", "mlx_lm", "server", "--model", str(model)]
    command += ["--adapter-path", str(adapter), "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(state / "hf-hub-cache")}
    with (state / "server.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"mlx_lm.server exited with {process.returncode}:\n{log.read_text()}")
        try:
            answer = requests.post(
                f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 1}, timeout=10
            )
            if answer.status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"mlx_lm.server not ready within {SERVER_START_SECONDS} s:\n{log.read_text()}")


def timed_run(
    complete: Callable[[str], str], tasks: list[FimTask]
) -> tuple[list[str], list[float]]:
    """Every task's completion and its wall time in seconds."""
    outputs, seconds = [], []
    for task in tasks:
        started = time.perf_counter()
        outputs.append(complete(task.prompt))
        seconds.append(time.perf_counter() - started)
    return outputs, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--iters", type=int, default=20, help="adapter training iterations")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-generation-") as tmp:
        root = Path(tmp)
        files = [text for text in sample_corpus() if len(text) <= MAX_FILE_CHARS]
        half = len(files) // 2
        model = build_dev_model(root / "model", sample_corpus())
        data = root / "data"
        data.mkdir()
        train = fim_texts(files[:half])
        for name, texts in (("train.jsonl", train), ("valid.jsonl", train[:8])):
            lines = "".join(json.dumps({"text": text}) + "\n" for text in texts)
            (data / name).write_text(lines, "utf-8")
        settings = LoraSettings(
            rank=8, num_layers=4, iters=args.iters, learning_rate=5e-3, val_batches=1,
            steps_per_report=args.iters, steps_per_eval=args.iters, save_every=args.iters,
            max_seq_length=2048, grad_checkpoint=False,
        )  # fmt: skip
        adapter = root / "adapter"
        # mlx-lm's trainer prints its own progress; only the table belongs on stdout.
        with contextlib.redirect_stdout(io.StringIO()):
            train_lora(model, data, adapter, settings)
        records = [(f"fim-{i}", text) for i, text in enumerate(fim_texts(files[half:]))]
        tasks = fim_tasks_from_records(records, limit=args.prompts)
        n = len(tasks)

        def local(generator: InProcessGenerator) -> Callable[[str], str]:
            return lambda prompt: generator.complete(prompt, args.max_tokens)

        rows = []
        expected: dict[str, list[str]] = {}
        started = time.perf_counter()
        for name, adapter_dir in (("base", None), ("adapter", adapter)):
            generator = InProcessGenerator(model, adapter_dir)
            outputs, seconds = timed_run(local(generator), tasks)
            expected[name] = outputs
            rows.append(("in process", name, generator.load_seconds, seconds, n))
            del generator
        in_process_total = time.perf_counter() - started

        started = time.perf_counter()
        process, url = start_server(model, adapter, root / "server")
        try:
            wait_ready(url, process, root / "server" / "server.log")
            start_seconds = time.perf_counter() - started
            for name, adapter_name in (("base", None), ("adapter", str(adapter))):
                with ServerGenerator(url, str(model), adapter_name) as remote:
                    outputs, seconds = timed_run(
                        lambda prompt, remote=remote: remote.complete(prompt, args.max_tokens),
                        tasks,
                    )
                same = sum(a == b for a, b in zip(outputs, expected[name], strict=True))
                load = start_seconds if name == "base" else 0.0
                rows.append(("mlx_lm.server", name, load, seconds, same))
        finally:
            process.terminate()
            process.wait(timeout=30)
        server_total = time.perf_counter() - started

    prompt_chars = statistics.mean(len(task.prompt) for task in tasks)
    print(
        f"dev model (CPU), {n} FIM prompts (mean {prompt_chars:,.0f} chars), greedy, max_tokens "
        f"{args.max_tokens}; adapter: rank {settings.rank}, {settings.num_layers} layers, "
        f"{settings.iters} iters\n"
    )
    print(
        "| way | model | load / start s | total s | s per prompt | first request s "
        "| median request s | identical to in process |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for way, name, load, seconds, same in rows:
        total = load + sum(seconds)
        print(
            f"| {way} | {name} | {load:.2f} | {total:.2f} | {total / n:.3f} | {seconds[0]:.3f} "
            f"| {statistics.median(seconds):.3f} | {same}/{n} |"
        )
    print(
        f"\nend to end (both models): in process {in_process_total:.2f} s, mlx_lm.server "
        f"{server_total:.2f} s (start, requests and shutdown); "
        f"{'in process' if in_process_total < server_total else 'mlx_lm.server'} is faster by "
        f"{abs(server_total - in_process_total):.2f} s"
    )


if __name__ == "__main__":
    main()
