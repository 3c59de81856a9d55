"""The training-data audit: the repo and dataset stages over a folder of git repositories, then
one table of what the adapter would learn, and records printed in full for a person to read.

    .venv/bin/python benchmarks/dataset_quality.py REPOS_FOLDER [--records 20] [--seed 0]

The stages run as `coder-assets demo --until dataset` runs them, on a throwaway instance and home
folder (the repositories are only read). Every figure is computed here from what the dataset
stage wrote (the JSONL lines, the provenance and dropped sidecars, the stored samples), not from
the pipeline's own counters. Goals (issue: training data an ML engineer would sign off): 0
fragments, 0 cross-split duplicate records, at most 1% of records with a licence header, at most
5% of FIM samples dropped for length, at least 60% of kept Go and Python files yielding a pair.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
LICENCE = re.compile(
    r"copyright (?:\(c\) )?\d{4}|spdx-license-identifier|licensed under the|all rights reserved"
    r"|permission is hereby granted",
    re.IGNORECASE,
)
PLACEHOLDER = re.compile(r"<SECRET_[A-Z0-9_]+_\d+>")
ASSISTANT = "<|im_start|>assistant\n"


def run_stages(repos: Path, home: Path) -> Path:
    """repo_job for every repository in `repos`, then dataset_job; the dataset's folder."""
    os.environ.update(
        CODER_ASSETS_HOME=str(home / "home"),
        CODER_ASSETS_REPOS_DIR=str(repos),
        DAGSTER_HOME=str(home / "dagster_home"),
    )
    for name in list(os.environ):
        if name.startswith("GITEA_"):
            del os.environ[name]
    (home / "dagster_home").mkdir(parents=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster_home" / "dagster.yaml")
    import dagster as dg

    from coder_assets.demo.run import run_demo

    with dg.DagsterInstance.get() as instance:
        results = run_demo(instance, "dataset", sample_repos=False)
    for result in results:
        if not result.success:
            print(f"FAILED {result.partition_key}: {result.summary}")
    versions = [p for p in (home / "home" / "datasets").iterdir() if not p.name.startswith(".")]
    if len(versions) != 1:
        raise SystemExit("the dataset stage built no dataset; see the failures above")
    return versions[0]


def answer(text: str) -> str | None:
    """The assistant's answer of a chat record, None for a FIM record."""
    if ASSISTANT not in text:
        return None
    return text.rsplit(ASSISTANT, 1)[1].removesuffix("\n").removesuffix("<|im_end|>")


def coverage(storage: Path) -> tuple[int, int]:
    """(kept Go and Python files that yield a pair other than a commit pair, kept such files)."""
    yielding = kept = 0
    for snapshot in sorted((storage / "repo_snapshots").glob("*.parquet")):
        files = pq.read_table(snapshot).to_pylist()
        code = {
            f["path"]
            for f in files
            if f["skip_reason"] is None and f["language"] in ("go", "python")
        }
        pairs_file = storage / "instruction_pairs" / snapshot.name
        pairs = pq.read_table(pairs_file).to_pylist() if pairs_file.exists() else []
        with_pair = {p["path"] for p in pairs if p["kind"] != "commit_change"}
        kept += len(code)
        yielding += len(code & with_pair)
    return yielding, kept


def percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0


def audit(dataset: Path, storage: Path, records_shown: int, seed: int) -> None:
    from coder_assets.core.dataset.checks import cross_split_duplicates

    provenance = pq.read_table(dataset / "provenance.parquet").to_pylist()
    dropped = pq.read_table(dataset / "dropped.parquet").to_pylist()
    texts: dict[tuple[str, int], str] = {}
    for split in ("train", "valid", "test"):
        lines = (dataset / f"{split}.jsonl").read_text("utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            texts[(split, number)] = json.loads(line)["text"]
    rows = [{**row, "text": texts[(row["split"], row["line"])]} for row in provenance]
    total = len(rows)

    print(f"\ndataset {dataset.name[:12]}: {total} records")
    print("\n| kind | records | | language | records |\n|---|---:|---|---|---:|")
    kinds = Counter(r["kind"] for r in rows).most_common()
    languages = Counter(r["language"] for r in rows).most_common()
    for index in range(max(len(kinds), len(languages))):
        kind = kinds[index] if index < len(kinds) else ("", "")
        language = languages[index] if index < len(languages) else ("", "")
        print(f"| {kind[0]} | {kind[1]} | | {language[0]} | {language[1]} |")

    records_of = Counter(r["sample_id"] for r in rows)
    fragments = sum(n for n in records_of.values() if n > 1)
    duplicates = sum(n - 1 for n in Counter(r["text"] for r in rows).values() if n > 1)
    cross_split = cross_split_duplicates(dataset)
    licence = sum(1 for r in rows if LICENCE.search(r["text"]))
    fim_kept = sum(1 for r in rows if r["kind"] == "fim")
    fim_length = sum(1 for d in dropped if d["kind"] == "fim" and d["stage"] == "length")
    lines = sum(r["text"].count("\n") + 1 for r in rows)
    placeholders = sum(len(PLACEHOLDER.findall(r["text"])) for r in rows)
    answers = [a for a in (answer(r["text"]) for r in rows) if a is not None]
    trivial = sum(1 for a in answers if sum(1 for x in a.splitlines() if x.strip()) <= 2)
    yielding, kept_code = coverage(storage)
    tokens = [r["tokens"] for r in rows]

    def share(part: int, whole: int) -> str:
        return f"{part} ({100 * part / whole:.1f}%)" if whole else "0"

    print("\n| measure | value | goal |\n|---|---:|---:|")
    print(
        f"| coverage: kept Go/Python files yielding a pair | {share(yielding, kept_code)} | ≥ 60% |"
    )
    print(f"| records with a licence header | {share(licence, total)} | ≤ 1% |")
    print(f"| fragments (records of split samples) | {fragments} | 0 |")
    print(f"| exact duplicate records | {duplicates} | 0 |")
    print(f"| cross-split near-duplicate records (Jaccard ≥ 0.7) | {len(cross_split)} | 0 |")
    print(f"| FIM samples dropped for length | {share(fim_length, fim_kept + fim_length)} | ≤ 5% |")
    print(f"| redactions per 1,000 lines | {1000 * placeholders / max(1, lines):.2f} | — |")
    print(f"| chat answers of two lines or fewer | {share(trivial, len(answers))} | — |")
    print(
        f"| tokens p50 / p90 / p99 / max | {percentile(tokens, 0.5)} / "
        f"{percentile(tokens, 0.9)} / {percentile(tokens, 0.99)} / {max(tokens, default=0)} | — |"
    )
    drops = Counter((d["stage"], d["reason"]) for d in dropped).most_common()
    print("\n| dropped at | reason | samples |\n|---|---|---:|")
    for (stage, reason), count in drops:
        print(f"| {stage} | {reason} | {count} |")

    for row in random.Random(seed).sample(rows, min(records_shown, total)):
        where = (
            f"{row['repo']}:{row['path']} ({row['kind']}, {row['split']}, {row['tokens']} tokens)"
        )
        shown = row["text"].splitlines()
        print(f"\n{'=' * 100}\n{where}\n{'-' * 100}")
        print(
            "\n".join(shown[:60]) + (f"\n… {len(shown) - 60} more lines" if len(shown) > 60 else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repos", type=Path, help="a folder of git repositories")
    parser.add_argument("--records", type=int, default=20, help="records printed in full")
    parser.add_argument("--seed", type=int, default=0, help="which records are printed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dataset-quality-") as scratch:
        dataset = run_stages(args.repos.resolve(), Path(scratch))
        audit(dataset, Path(scratch) / "home" / "storage", args.records, args.seed)


if __name__ == "__main__":
    main()
