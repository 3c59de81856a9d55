"""Small training records for the tests that train LoRA adapters on the dev model: four
functions that share one loop, as code and as FIM records whose middle is the loop."""

from __future__ import annotations

import json
from pathlib import Path

from coder_assets.core.samples.fim import format_fim

NAMES = ["add", "scale", "clamp", "merge"]


def code(i: int) -> str:
    """The i-th function: a loop summing the values times a factor."""
    name = NAMES[i % len(NAMES)]
    return (
        f"def {name}(values):\n"
        f"    total = 0\n"
        f"    for value in values:\n"
        f"        total += value * {i % len(NAMES) + 1}\n"
        f"    return total\n"
    )


def fim_record(i: int) -> str:
    """A FIM record whose middle is the loop of `code(i)`."""
    text = code(i)
    start, end = text.index("    for value"), text.index("    return")
    return format_fim(text[:start], text[end:], text[start:end])


def write_records(path: Path, texts: list[str]) -> None:
    """An mlx-lm `text` JSONL file of `texts`."""
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), "utf-8")
