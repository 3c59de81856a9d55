"""A content-addressed cache of evaluation results, so that no model answers the same prompt
twice with the same code.

An entry is one model's result for one prompt: a completion (with the sandbox verdict for a
HumanEval problem), or the summed NLL of one test text. Its key is the sha256 of

- the base model version (`core.training.dev_model.model_version`),
- the adapter's content digest (`adapter_content_digest`: sha256 over its files' sha256s), or
  none for the base model,
- the task kind (`humaneval`, `fim`, `chat`, `fingerprint`, `loss`),
- the prompt's sha256,
- the generation settings (max tokens, stop strings, greedy; the sandbox timeout for HumanEval;
  the sequence length for a loss),
- `GENERATOR_CODE_VERSION` of `core.evaluation.generation`.

So the base model is evaluated once per base version and task, an adapter that is later the
deployed one reuses what it answered as the candidate (its installed copy has the same files,
hence the same digest), and a new test split only costs the tasks not seen before. An adapter
whose files differ by one byte has another digest and shares nothing.

Entries are files `<root>/<key[:2]>/<key>.json`, written to a temp name and renamed. An entry
also holds its key's fields, checked on every read: an entry that does not parse, or names other
fields (a file copied or corrupted into the wrong place), is a miss, counted as `corrupt`, and
is overwritten by the regenerated result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coder_assets.core.errors import CoderAssetsError
from coder_assets.core.evaluation.generation import GENERATOR_CODE_VERSION
from coder_assets.core.files import write_json_atomic
from coder_assets.core.training.adapter_files import ADAPTER_FILES, adapter_digests

CACHE_FORMAT = 1
KINDS = ("humaneval", "fim", "chat", "fingerprint", "loss")


class EvalCacheError(CoderAssetsError):
    """A cache that cannot be used as asked (unknown task kind, adapter files missing)."""


@dataclass(frozen=True)
class ModelIdentity:
    """What decides a model's outputs: its base model version and adapter digest (None: the
    base model alone)."""

    base_version: str
    adapter_digest: str | None = None

    def describe(self) -> str:
        adapter = self.adapter_digest[:12] if self.adapter_digest else "none"
        return f"base {self.base_version[:12]}, adapter {adapter}"


def adapter_content_digest(adapter_dir: Path) -> str:
    """sha256 over the sha256s of an adapter's files
    (`core.training.adapter_files.ADAPTER_FILES`)."""
    digests = adapter_digests(Path(adapter_dir))
    missing = sorted(name for name, digest in digests.items() if digest == "missing")
    if missing:
        raise EvalCacheError(
            f"adapter {adapter_dir} lacks {', '.join(missing)}: not a complete adapter folder "
            f"(it needs {', '.join(ADAPTER_FILES)}); train it again or point at its release"
        )
    text = "".join(f"{name}\0{digests[name]}\n" for name in sorted(digests))
    return hashlib.sha256(text.encode()).hexdigest()


def prompt_sha256(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


@dataclass
class CacheCounts:
    """Lookups of one model: hits, misses (corrupt entries are misses too)."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, kind: str, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        row = self.by_kind.setdefault(kind, {"hits": 0, "misses": 0})
        row["hits" if hit else "misses"] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "corrupt": self.corrupt,
            "by_kind": {kind: dict(row) for kind, row in sorted(self.by_kind.items())},
        }


class EvalCache:
    """The cache folder at `root` (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def key_fields(
        self, model: ModelIdentity, kind: str, prompt: str, settings: Mapping[str, Any]
    ) -> dict[str, Any]:
        if kind not in KINDS:
            raise EvalCacheError(f"task kind {kind!r} is not one of {', '.join(KINDS)}")
        return {
            "format": CACHE_FORMAT,
            "base_model_version": model.base_version,
            "adapter_digest": model.adapter_digest,
            "kind": kind,
            "prompt_sha256": prompt_sha256(prompt),
            "settings": _plain(settings),
            "generator_code_version": GENERATOR_CODE_VERSION,
        }

    def key(self, model: ModelIdentity, kind: str, prompt: str, settings: Mapping[str, Any]) -> str:
        fields = self.key_fields(model, kind, prompt, settings)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(
        self,
        model: ModelIdentity,
        kind: str,
        prompt: str,
        settings: Mapping[str, Any],
        counts: CacheCounts | None = None,
        valid: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> dict[str, Any] | None:
        """The stored result, or None (a miss). An entry that does not parse, names another
        key, or whose result `valid` refuses, is a miss that counts as `corrupt` too."""
        fields = self.key_fields(model, kind, prompt, settings)
        path = self.path(self.key(model, kind, prompt, settings))
        result = None
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            data = None
        except (OSError, UnicodeDecodeError, ValueError):
            data = {}
        if data is not None:
            if (
                isinstance(data, dict)
                and data.get("key") == fields
                and isinstance(data.get("result"), dict)
                and (valid is None or valid(data["result"]))
            ):
                result = data["result"]
            elif counts is not None:
                counts.corrupt += 1
        if counts is not None:
            counts.count(kind, result is not None)
        return result

    def put(
        self,
        model: ModelIdentity,
        kind: str,
        prompt: str,
        settings: Mapping[str, Any],
        result: Mapping[str, Any],
    ) -> None:
        fields = self.key_fields(model, kind, prompt, settings)
        path = self.path(self.key(model, kind, prompt, settings))
        write_json_atomic(path, {"key": fields, "result": dict(result)}, indent=0)


def generation_settings(max_tokens: int, stop: Sequence[str], **more: Any) -> dict[str, Any]:
    """The settings part of a generation key: greedy always."""
    return {"max_tokens": max_tokens, "stop": list(stop), "sampler": "greedy", **more}


def _plain(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as JSON gives them back, so a stored key compares equal to a computed one."""
    return json.loads(json.dumps(dict(settings), sort_keys=True))
