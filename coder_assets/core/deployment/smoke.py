"""The smoke test of a freshly (re)started model server, and the fingerprint that proves which
adapter it serves.

`/health` and `/v1/models` say nothing about the adapter: older mlx-lm could ignore
`--adapter-path` and a mismatched adapter could load without error. So evaluation records a
fingerprint: a few fixed prompts from the test split with the greedy output of the base model and
of the adapter, computed in-process. After a deploy the served greedy output for the same prompts
must equal the adapter's and, for at least one prompt, differ from the base model's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import requests

from coder_assets.core.evaluation.generation import (
    CHAT_STOP,
    DEFAULT_MODEL,
    FIM_STOP,
    ChatTask,
    FimTask,
    GenerationError,
    ServerGenerator,
)

FINGERPRINT_MAX_TOKENS = 16
# mlx_lm.server drops a final "<" or "<|" that could begin a stop token when generation ends at
# EOS, and a final whitespace token when it ends at max_tokens; in-process generation keeps both
# (see core.evaluation.generation). Compared without them.
_STOP_PREFIX_CHARS = "<| \t\n"


class Completer(Protocol):
    def complete(self, prompt: str, max_tokens: int, stop: Sequence[str] = ...) -> str: ...


@dataclass(frozen=True)
class FingerprintPrompt:
    """One fixed prompt: raw FIM text for `/v1/completions`, or chat messages (with the same
    conversation rendered by the chat template in `prompt`) for `/v1/chat/completions`."""

    kind: str  # "fim" | "chat"
    task_id: str
    prompt: str
    messages: tuple[tuple[str, str], ...] = ()
    max_tokens: int = FINGERPRINT_MAX_TOKENS

    @property
    def stop(self) -> tuple[str, ...]:
        return FIM_STOP if self.kind == "fim" else CHAT_STOP


@dataclass(frozen=True)
class Fingerprint:
    """Fixed prompts with the base model's and the adapter's greedy outputs."""

    prompts: tuple[FingerprintPrompt, ...]
    base: tuple[str, ...]
    adapter: tuple[str, ...]

    def distinguishing(self) -> list[int]:
        """Indices of the prompts whose adapter output differs from the base output."""
        return [
            i
            for i, (b, a) in enumerate(zip(self.base, self.adapter, strict=True))
            if not same(a, b)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompts": [asdict(p) for p in self.prompts],
            "base": list(self.base),
            "adapter": list(self.adapter),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        prompts = tuple(
            FingerprintPrompt(
                kind=p["kind"],
                task_id=p["task_id"],
                prompt=p["prompt"],
                messages=tuple((role, content) for role, content in p.get("messages", ())),
                max_tokens=int(p.get("max_tokens", FINGERPRINT_MAX_TOKENS)),
            )
            for p in data["prompts"]
        )
        return cls(prompts, tuple(data["base"]), tuple(data["adapter"]))


def same(a: str, b: str) -> bool:
    return a.rstrip(_STOP_PREFIX_CHARS) == b.rstrip(_STOP_PREFIX_CHARS)


def fingerprint_prompts(
    fim_tasks: Sequence[FimTask],
    chat_tasks: Sequence[ChatTask],
    *,
    fim: int = 4,
    chat: int = 2,
    max_tokens: int = FINGERPRINT_MAX_TOKENS,
) -> list[FingerprintPrompt]:
    """Up to `fim` FIM and `chat` chat prompts, the first ones of the test split."""
    prompts = [FingerprintPrompt("fim", t.task_id, t.prompt, (), max_tokens) for t in fim_tasks]
    chats = [
        FingerprintPrompt("chat", t.task_id, t.prompt, t.messages, max_tokens) for t in chat_tasks
    ]
    return prompts[:fim] + chats[:chat]


def outputs(generator: Completer, prompts: Sequence[FingerprintPrompt]) -> tuple[str, ...]:
    """The greedy output of `generator` (in-process) for every prompt."""
    return tuple(generator.complete(p.prompt, p.max_tokens, p.stop) for p in prompts)


@dataclass
class SmokeReport:
    """Every check of one smoke test: (name, passed, detail)."""

    url: str
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)

    def failures(self) -> list[str]:
        return [f"{name}: {detail}" for name, ok, detail in self.checks if not ok]

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append((name, ok, detail))
        return ok

    def markdown(self) -> str:
        rows = ["| check | result | detail |", "|---|---|---|"]
        for name, ok, detail in self.checks:
            cell = detail.replace("|", "\\|").replace("\n", "⏎")
            rows.append(f"| {name} | {'pass' if ok else 'FAIL'} | {cell} |")
        return "\n".join(rows)


def smoke_test(
    base_url: str,
    model_id: str,
    fingerprint: Fingerprint | None,
    *,
    expect: str = "adapter",
    prove_adapter: bool = True,
    require_text: bool = True,
    timeout: float = 120.0,
    log: Callable[[str], None] | None = None,
    api_key: str | None = None,
    verify: bool | str = True,
) -> SmokeReport:
    """Smoke-test the server at `base_url`, which must serve `model_id` (its `--model`).

    Checks: `/v1/models` lists the model; a chat completion and a FIM completion (explicit stop
    tokens) return non-empty text (unless `require_text` is False: a rollback to a model that
    answers nothing is verified by equal output alone); and, with a fingerprint, the served output
    of every fixed prompt equals the `expect`ed model's ("adapter", or "base" when no adapter is
    deployed) and, when expecting the adapter (and `prove_adapter`), differs from the base
    model's for at least one prompt. `api_key` and `verify` are for the proxy in front of the
    server (see ModelServerResource.client_options).
    """
    report = SmokeReport(base_url)
    url = base_url.rstrip("/")
    try:
        response = requests.get(
            f"{url}/v1/models",
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            verify=verify,
            timeout=min(timeout, 30),
        )
        ids = [str(m.get("id")) for m in response.json().get("data", []) if isinstance(m, dict)]
    except (requests.RequestException, ValueError, AttributeError) as exc:
        report.add("models", False, f"GET {url}/v1/models failed: {type(exc).__name__}")
        return report
    if not report.add(
        "models",
        model_id in ids,
        f"/v1/models lists {model_id}" if model_id in ids else f"lists {ids}, not {model_id}",
    ):
        return report
    expected = None
    if fingerprint is not None:
        expected = fingerprint.adapter if expect == "adapter" else fingerprint.base
    with ServerGenerator(
        url, DEFAULT_MODEL, timeout=timeout, api_key=api_key, verify=verify
    ) as server:
        served: list[str | None] = []
        for prompt in fingerprint.prompts if fingerprint else ():
            try:
                if prompt.kind == "chat":
                    messages = [{"role": r, "content": c} for r, c in prompt.messages]
                    served.append(server.chat(messages, prompt.max_tokens, prompt.stop))
                else:
                    served.append(server.complete(prompt.prompt, prompt.max_tokens, prompt.stop))
            except GenerationError as exc:
                served.append(None)
                report.add(f"{prompt.kind} {prompt.task_id}", False, str(exc))
        for kind in ("chat", "fim") if require_text else ():
            answers = [
                s
                for p, s in zip(fingerprint.prompts if fingerprint else (), served, strict=False)
                if p.kind == kind and s is not None
            ]
            if not answers:
                answers = [_fallback(server, kind, report)]
            text = next((a for a in answers if a), "")
            report.add(
                f"{kind} completion",
                bool(text),
                f"{text[:80]!r}" if text else "empty text for every prompt",
            )
        if fingerprint is not None and expected is not None:
            mismatches = [
                f"{p.task_id}: served {s!r}, expected {e!r}"
                for p, s, e in zip(fingerprint.prompts, served, expected, strict=True)
                if s is not None and not same(s, e)
            ]
            report.add(
                f"served output equals the {expect}'s",
                not mismatches and None not in served,
                f"{len(served) - len(mismatches)}/{len(served)} prompts identical"
                + (f"; {mismatches[0]}" if mismatches else ""),
            )
            if expect == "adapter" and prove_adapter:
                differing = fingerprint.distinguishing()
                report.add(
                    "adapter differs from the base model",
                    bool(differing),
                    f"{len(differing)}/{len(fingerprint.prompts)} prompts answered differently"
                    if differing
                    else "base and adapter answer every fixed prompt identically, so serving "
                    "cannot prove the adapter is loaded",
                )
    if log is not None:
        for name, ok, detail in report.checks:
            log(f"smoke test {'pass' if ok else 'FAIL'}: {name}: {detail}")
    return report


_FALLBACK_CHAT = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
_FALLBACK_FIM = "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n<|fim_middle|>"


def _fallback(server: ServerGenerator, kind: str, report: SmokeReport) -> str:
    """A fixed prompt of `kind` when the fingerprint has none."""
    try:
        if kind == "chat":
            return server.chat(_FALLBACK_CHAT, FINGERPRINT_MAX_TOKENS)
        return server.complete(_FALLBACK_FIM, FINGERPRINT_MAX_TOKENS, FIM_STOP)
    except GenerationError as exc:
        report.add(f"{kind} request", False, str(exc))
        return ""
