"""The trained dev model: the dev model's Qwen2 architecture and tokenizer, pretrained from scratch
on the running interpreter's standard library, so that it completes code.

The embedded default (the demo) and the end-to-end tests evaluate, gate and serve a base model;
when that model is random, every completion is noise and the gate decides on nothing. Every
machine with Python has a few megabytes of real code: the standard library's `*.py` files (tests,
IDLE, tkinter, lib2to3 and site-packages left out). `build_trained_dev_model` trains the dev
model's tokenizer on them, then the model itself, for a few minutes on two CPU cores:

- plain next-token prediction on chunks of the source, and
- fill-in-the-middle in Qwen's PSM format on the same kind of chunks
  (`<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>{middle}`), the middle one to
  `MAX_FIM_LINES` whole lines or a random character span, as `core.samples.fim` cuts the dataset;

every example ends in the tokenizer's EOS, as mlx-lm's `text` records do. Never HumanEval, never
the sample repositories: the evaluation's problems and the demo's test split stay unseen.

Training uses mlx (autograd, AdamW) on the mlx-lm Qwen2 parameters, with one substitution: the
matrix products go through numpy. mlx's Linux CPU wheel multiplies matrices with the reference
BLAS (about 4 GFLOP/s on the development machine), numpy with OpenBLAS (tens of GFLOP/s); the same
training is four to nine times faster this way (more for larger shapes). `_forward` is mlx-lm's
Qwen2 forward pass written out with those products; a test pins it to `mlx_lm.models.qwen2.Model`
on the same weights. The products run on one BLAS thread (see `pretrain`).

`cached_dev_model` keeps one built model per content key, sha256 of the corpus digest, the config,
the seed and `PRETRAIN_CODE_VERSION`, under a cache folder the demo and the tests share
(`CODER_ASSETS_DEV_MODEL_CACHE`, default `~/.cache/coder-assets/dev-models`): built once per
interpreter, assembled in a temporary folder and renamed into place, a file lock keeping two
builders from doing the same work twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import random
import shutil
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from coder_assets.core.errors import CoderAssetsError
from coder_assets.core.training.dev_model import (
    EOS_TOKEN,
    PAD_TOKEN,
    DevModelConfig,
    build_dev_model,
)

# Bump when a change to this module changes what a build produces: it is part of the cache key.
PRETRAIN_CODE_VERSION = "1"
CACHE_ENV = "CODER_ASSETS_DEV_MODEL_CACHE"
BUILD_INFO_FILE = "dev_model_build.json"  # not a versioned file: build time differs per machine

# Standard library folders that are not library code, or that repeat one kind of file many times.
_EXCLUDED_TOP = frozenset(
    {
        "site-packages",
        "dist-packages",
        "test",
        "idlelib",
        "lib2to3",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "pydoc_data",
        "config-3.11-x86_64-linux-gnu",
    }
)
_EXCLUDED_PARTS = frozenset({"test", "tests", "__pycache__"})
MAX_FIM_LINES = 8


class PretrainError(CoderAssetsError):
    """A pretraining setting or corpus that cannot build the trained dev model."""


@dataclass(frozen=True)
class PretrainConfig:
    """How the trained dev model is built. The defaults take about five minutes on two cores."""

    # Small and fast rather than big: in five minutes on two cores the model sees about 1.2 M
    # tokens, and at that budget a 0.33 M parameter model ends with a lower loss than a 0.5 M or
    # 1 M one (the step time here is mostly fixed overhead, not arithmetic).
    model: DevModelConfig = field(
        default_factory=lambda: DevModelConfig(
            vocab_size=2048,
            hidden_size=64,
            num_hidden_layers=4,
            intermediate_size=192,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    steps: int = 1100
    batch_size: int = 6
    seq_length: int = 192  # tokens per example, EOS included
    learning_rate: float = 4e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    fim_rate: float = 0.5  # fraction of examples in FIM form
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.seq_length < 16:
            raise PretrainError(
                f"PretrainConfig needs steps ≥ 1, batch_size ≥ 1 and seq_length ≥ 16, got "
                f"{self.steps}, {self.batch_size} and {self.seq_length}"
            )
        if not 0.0 <= self.fim_rate <= 1.0:
            raise PretrainError(f"PretrainConfig.fim_rate must be in [0, 1], got {self.fim_rate}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative to the standard library folder, POSIX separators
    text: str


def stdlib_sources(root: Path | None = None) -> list[SourceFile]:
    """The standard library's Python source files, sorted by path (tests and the folders in
    `_EXCLUDED_TOP` left out). `root`: the folder, default the running interpreter's."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in _EXCLUDED_TOP or _EXCLUDED_PARTS.intersection(rel.parts[:-1]):
            continue
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if text.strip():
            files.append(SourceFile(rel.as_posix(), text))
    if not files:
        raise PretrainError(f"no Python source files under {root}: cannot pretrain the dev model")
    return files


def corpus_digest(sources: Sequence[SourceFile]) -> str:
    """sha256 (hex) of the corpus: every path and text, in order."""
    digest = hashlib.sha256()
    for source in sources:
        data = source.text.encode("utf-8")
        digest.update(f"{source.path}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def cache_key(sources: Sequence[SourceFile], config: PretrainConfig) -> str:
    """The content address of a build: corpus, settings, seed and builder version."""
    payload = {
        "corpus": corpus_digest(sources),
        "config": config.to_dict(),
        "code_version": PRETRAIN_CODE_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def default_cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return Path(xdg or Path.home() / ".cache").expanduser() / "coder-assets" / "dev-models"


def cached_dev_model(
    cache_dir: Path | None = None,
    config: PretrainConfig | None = None,
    *,
    sources: Sequence[SourceFile] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """The trained dev model's directory in the cache, built first when it is not there.

    The directory is `cache_dir/<cache_key>/` and is complete whenever it exists."""
    config = config or PretrainConfig()
    sources = list(sources) if sources is not None else stdlib_sources()
    cache_dir = Path(cache_dir or default_cache_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(sources, config)
    target = cache_dir / key
    if target.is_dir():
        return target
    with open(cache_dir / f".{key}.lock", "w") as lock:
        # A second builder waits for the first instead of training the same model again.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_dir():
            staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.build-", dir=cache_dir))
            try:
                build_trained_dev_model(
                    staging / "model", sources, config, progress=progress, cache_key=key
                )
                os.replace(staging / "model", target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return target


def build_trained_dev_model(
    out_dir: Path,
    sources: Sequence[SourceFile],
    config: PretrainConfig = PretrainConfig(),
    *,
    progress: Callable[[str], None] | None = None,
    cache_key: str = "",
) -> Path:
    """Build the trained dev model into `out_dir` (written atomically by `build_dev_model`)."""
    started, started_cpu = time.monotonic(), time.process_time()
    stats: dict[str, Any] = {}

    def trainer(model: Any, tokenizer: Any, token_id: dict[str, int]) -> None:
        stats.update(pretrain(model, tokenizer, token_id, sources, config, progress=progress))

    texts = [source.text for source in sources]
    build_dev_model(out_dir, texts, config.model, trainer=trainer)
    info = {
        "cache_key": cache_key,
        "corpus_files": len(sources),
        "corpus_chars": sum(len(source.text) for source in sources),
        "corpus_sha256": corpus_digest(sources),
        "config": config.to_dict(),
        "code_version": PRETRAIN_CODE_VERSION,
        **stats,
        "build_seconds": round(time.monotonic() - started, 1),
        # CPU time of this process: the build's cost on a machine that other work shares.
        "build_cpu_seconds": round(time.process_time() - started_cpu, 1),
    }
    (Path(out_dir) / BUILD_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", "utf-8")
    return Path(out_dir)


def build_info(model_dir: Path) -> dict[str, Any] | None:
    """What `build_trained_dev_model` recorded about a build, or None for other models."""
    path = Path(model_dir) / BUILD_INFO_FILE
    return json.loads(path.read_text("utf-8")) if path.is_file() else None


# --------------------------------------------------------------------------------------------
# Examples
# --------------------------------------------------------------------------------------------


def pretrain_examples(
    tokenizer: Any,
    token_id: dict[str, int],
    sources: Sequence[SourceFile],
    config: PretrainConfig,
    count: int,
) -> np.ndarray:
    """`count` training rows of `seq_length` + 1 token ids (padded with `<|endoftext|>`, which the
    loss ignores), each one example: a chunk of a source file, plain or in FIM form, then EOS.

    Chunks are cut from the token ids of each file at line starts, so their text is exactly
    what the tokenizer produced; which chunks, and which become FIM, follows `config.seed`."""
    rng = random.Random(f"pretrain:{config.seed}")
    eos, pad = token_id[EOS_TOKEN], token_id[PAD_TOKEN]
    budget = config.seq_length - 8  # room for EOS, the FIM tokens and re-tokenized cut points
    chunks: list[str] = []
    encodings = tokenizer.encode_batch([source.text for source in sources])
    for source, encoding in zip(sources, encodings, strict=True):
        offsets = encoding.offsets
        start = 0
        while start < len(offsets):
            end = min(start + budget, len(offsets))
            # End at the last line start inside the window, when the window has one.
            if end < len(offsets):
                for cut in range(end, start + budget // 2, -1):
                    char = offsets[cut][0]
                    if char > 0 and source.text[char - 1] == "\n":
                        end = cut
                        break
            text = source.text[offsets[start][0] : offsets[end - 1][1]]
            if text.strip():
                chunks.append(text)
            start = end
    if not chunks:
        raise PretrainError("the pretraining corpus yields no chunks")
    picked = [chunks[rng.randrange(len(chunks))] for _ in range(count)]
    texts = [_fim_form(text, rng) if rng.random() < config.fim_rate else text for text in picked]
    rows = np.full((count, config.seq_length + 1), pad, dtype=np.int32)
    for i, encoding in enumerate(tokenizer.encode_batch(texts)):
        ids = [*encoding.ids[: config.seq_length], eos]
        rows[i, : len(ids)] = ids
    return rows


def _fim_form(text: str, rng: random.Random) -> str:
    """`text` as one PSM FIM example: a whole-line span or a random character span as middle."""
    lines = text.splitlines(keepends=True)
    if rng.random() < 0.5 and len(lines) > 1:
        first = rng.randrange(len(lines))
        last = min(len(lines), first + rng.randint(1, MAX_FIM_LINES))
        start = sum(len(line) for line in lines[:first])
        end = start + sum(len(line) for line in lines[first:last])
    else:
        start, end = sorted(rng.sample(range(len(text) + 1), 2))  # never an empty middle
    prefix, middle, suffix = text[:start], text[start:end], text[end:]
    return f"<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>{middle}"


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def pretrain(
    model: Any,
    tokenizer: Any,
    token_id: dict[str, int],
    sources: Sequence[SourceFile],
    config: PretrainConfig,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train `model` (mlx-lm Qwen2, freshly initialised) in place; returns loss figures."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten

    say = progress or (lambda _message: None)
    rows = pretrain_examples(tokenizer, token_id, sources, config, config.steps * config.batch_size)
    pad = token_id[PAD_TOKEN]
    args = model.args
    schedule = optim.join_schedules(
        [
            optim.linear_schedule(
                config.learning_rate / 20, config.learning_rate, config.warmup_steps
            ),
            optim.cosine_decay(
                config.learning_rate, config.steps - config.warmup_steps, config.learning_rate / 10
            ),
        ],
        [config.warmup_steps],
    )
    optimizer = optim.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
    params = model.trainable_parameters()

    def loss_fn(params: Any, inputs: Any, targets: Any, mask: Any) -> Any:
        logits = _forward(params, inputs, args)
        losses = nn.losses.cross_entropy(logits, targets) * mask
        return losses.sum() / mask.sum()

    loss_and_grad = mx.value_and_grad(loss_fn)
    losses: list[float] = []
    tokens = 0
    started, started_cpu = time.monotonic(), time.process_time()
    # One BLAS thread: the products are small, and two threads on a busy two-core machine run
    # ten times slower than one (OpenBLAS threads wait for each other); also the same
    # summation order everywhere.
    with threadpool_limits(limits=1, user_api="blas"):
        for step in range(config.steps):
            batch = rows[step * config.batch_size : (step + 1) * config.batch_size]
            inputs, targets = mx.array(batch[:, :-1]), mx.array(batch[:, 1:])
            # Every example ends in EOS (learned); the padding after it is not.
            mask = (targets != pad).astype(mx.float32)
            loss, grads = loss_and_grad(params, inputs, targets, mask)
            params = optimizer.apply_gradients(grads, params)
            mx.eval(params, optimizer.state, loss)
            losses.append(loss.item())
            tokens += int(mask.sum().item())
            if (step + 1) % 50 == 0 or step + 1 == config.steps:
                recent = losses[-50:]
                say(
                    f"pretraining step {step + 1}/{config.steps}: loss "
                    f"{sum(recent) / len(recent):.3f} "
                    f"({tokens / (time.monotonic() - started):.0f} tok/s)"
                )
    model.update(params)
    window = max(1, min(20, len(losses) // 2))  # mean loss of the first and of the last steps
    first, last = losses[:window], losses[-window:]
    return {
        "steps": config.steps,
        "trained_tokens": tokens,
        "train_seconds": round(time.monotonic() - started, 1),
        "train_cpu_seconds": round(time.process_time() - started_cpu, 1),
        "first_loss": round(sum(first) / len(first), 4),
        "final_loss": round(sum(last) / len(last), 4),
        "parameters": sum(v.size for _, v in tree_flatten(params)),
        "final_loss_is_finite": math.isfinite(losses[-1]),
    }


def _matmul():
    """`a @ b` as an mlx custom function whose product and gradient products run in numpy."""
    import mlx.core as mx

    @mx.custom_function
    def matmul(a: Any, b: Any) -> Any:
        return mx.array(np.matmul(np.asarray(a), np.asarray(b)))

    @matmul.vjp
    def matmul_vjp(primals: Any, cotangent: Any, output: Any) -> tuple[Any, Any]:
        a, b = (np.asarray(p) for p in primals)
        c = np.asarray(cotangent)
        grad_a = np.matmul(c, np.swapaxes(b, -1, -2))
        grad_b = np.matmul(np.swapaxes(a, -1, -2), c)
        return _unbroadcast(grad_a, a.shape), _unbroadcast(grad_b, b.shape)

    def _unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> Any:
        # An operand broadcast over leading dims gets the sum of its gradients over them.
        while grad.ndim > len(shape):
            grad = grad.sum(axis=0)
        return mx.array(grad)

    return matmul


_MATMUL: Any = None


def _forward(params: Any, tokens: Any, args: Any) -> Any:
    """Logits of mlx-lm's Qwen2 `Model` (tied embeddings, no cache) for `tokens`, with its
    parameters as a tree, the matrix products through numpy (see the module docstring)."""
    import mlx.core as mx
    import mlx.nn as nn

    global _MATMUL
    if _MATMUL is None:
        _MATMUL = _matmul()
    matmul = _MATMUL

    def linear(x: Any, p: Any) -> Any:
        y = matmul(x, p["weight"].T)
        return y + p["bias"] if "bias" in p else y

    model = params["model"]
    batch, length = tokens.shape
    heads, kv_heads = args.num_attention_heads, args.num_key_value_heads
    head_dim = args.hidden_size // heads
    eps = args.rms_norm_eps
    causal = mx.triu(mx.full((length, length), -1e9, dtype=mx.float32), k=1)
    h = model["embed_tokens"]["weight"][tokens]
    for layer in model["layers"]:
        attn = layer["self_attn"]
        x = mx.fast.rms_norm(h, layer["input_layernorm"]["weight"], eps)
        q, k, v = (
            linear(x, attn[name]).reshape(batch, length, n, head_dim).transpose(0, 2, 1, 3)
            for name, n in (("q_proj", heads), ("k_proj", kv_heads), ("v_proj", kv_heads))
        )
        q = mx.fast.rope(q, head_dim, traditional=False, base=args.rope_theta, scale=1.0, offset=0)
        k = mx.fast.rope(k, head_dim, traditional=False, base=args.rope_theta, scale=1.0, offset=0)
        if heads != kv_heads:
            k = mx.repeat(k, heads // kv_heads, axis=1)
            v = mx.repeat(v, heads // kv_heads, axis=1)
        scores = matmul(q * head_dim**-0.5, k.transpose(0, 1, 3, 2)) + causal
        out = matmul(mx.softmax(scores, axis=-1), v).transpose(0, 2, 1, 3)
        h = h + linear(out.reshape(batch, length, -1), attn["o_proj"])
        x = mx.fast.rms_norm(h, layer["post_attention_layernorm"]["weight"], eps)
        mlp = layer["mlp"]
        gated = nn.silu(linear(x, mlp["gate_proj"])) * linear(x, mlp["up_proj"])
        h = h + linear(gated, mlp["down_proj"])
    h = mx.fast.rms_norm(h, model["norm"]["weight"], eps)
    return matmul(h, model["embed_tokens"]["weight"].T)
