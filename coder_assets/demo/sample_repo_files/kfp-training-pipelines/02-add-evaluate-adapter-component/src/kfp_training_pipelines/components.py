"""Lightweight KFP components: dataset preparation, LoRA training, evaluation and publishing.

KFP ships the source of each component function into its container, so every import a component
needs lives inside the function body; module globals are not visible there.
"""

from kfp import dsl

BASE_IMAGE = "python:3.11-slim"
TRAINER_IMAGE = "registry.homelab.example/ml/lora-trainer:0.4.1"
S3_PACKAGES = ["boto3==1.34.131"]


@dsl.component(base_image=BASE_IMAGE, packages_to_install=S3_PACKAGES)
def prepare_dataset(
    source_uri: str,
    max_samples: int,
    valid_fraction: float,
    seed: int,
    train_split: dsl.Output[dsl.Dataset],
    valid_split: dsl.Output[dsl.Dataset],
) -> int:
    """Download JSONL samples, drop exact duplicates and write a seeded train/validation split.

    Returns the number of samples kept.
    """
    import hashlib
    import json
    import random

    import boto3

    bucket, _, key = source_uri.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")

    seen: set[str] = set()
    samples = []
    for line in body.splitlines():
        if not line.strip():
            continue
        digest = hashlib.sha256(line.encode("utf-8")).hexdigest()
        if digest not in seen:
            seen.add(digest)
            samples.append(json.loads(line))

    random.Random(seed).shuffle(samples)
    samples = samples[:max_samples]
    n_valid = max(1, int(len(samples) * valid_fraction))
    for artifact, rows in ((valid_split, samples[:n_valid]), (train_split, samples[n_valid:])):
        with open(artifact.path, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        artifact.metadata["samples"] = len(rows)
    return len(samples)


@dsl.component(base_image=TRAINER_IMAGE)
def train_adapter(
    base_model: str,
    iterations: int,
    learning_rate: float,
    lora_rank: int,
    train_split: dsl.Input[dsl.Dataset],
    valid_split: dsl.Input[dsl.Dataset],
    adapter: dsl.Output[dsl.Model],
) -> None:
    """Fine-tune a LoRA adapter on the training split with the in-house ``lora-trainer`` CLI."""
    import subprocess

    subprocess.run(
        [
            "lora-trainer", "train",
            "--base-model", base_model,
            "--train", train_split.path,
            "--valid", valid_split.path,
            "--iterations", str(iterations),
            "--learning-rate", str(learning_rate),
            "--rank", str(lora_rank),
            "--output", adapter.path,
        ],
        check=True,
    )
    adapter.metadata.update({"base_model": base_model, "iterations": iterations})


@dsl.component(base_image=TRAINER_IMAGE)
def evaluate_adapter(
    base_model: str,
    max_new_tokens: int,
    adapter: dsl.Input[dsl.Model],
    valid_split: dsl.Input[dsl.Dataset],
    metrics: dsl.Output[dsl.Metrics],
) -> float:
    """Complete every validation prompt with the adapter and score the exact-match pass rate.

    Returns the pass rate in ``[0, 1]`` so that the pipeline can gate publishing on it.
    """
    import json
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        subprocess.run(
            [
                "lora-trainer", "evaluate",
                "--base-model", base_model,
                "--adapter", adapter.path,
                "--data", valid_split.path,
                "--max-new-tokens", str(max_new_tokens),
                "--report", report.name,
            ],
            check=True,
        )
        with open(report.name, encoding="utf-8") as fh:
            result = json.load(fh)
    pass_rate = result["passed"] / result["total"] if result["total"] else 0.0
    metrics.log_metric("pass_rate", pass_rate)
    metrics.log_metric("samples", result["total"])
    return pass_rate


@dsl.component(base_image=BASE_IMAGE, packages_to_install=S3_PACKAGES)
def publish_adapter(adapter: dsl.Input[dsl.Model], destination_uri: str) -> str:
    """Upload every file of the adapter directory below ``destination_uri``; return its URI."""
    import os

    import boto3

    bucket, _, prefix = destination_uri.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")
    for dirpath, _dirs, names in os.walk(adapter.path):
        for name in sorted(names):
            local = os.path.join(dirpath, name)
            relative = os.path.relpath(local, adapter.path)
            key = f"{prefix.rstrip('/')}/{relative}" if prefix else relative
            s3.upload_file(local, bucket, key)
    return destination_uri.rstrip("/")
