"""A tiny Qwen2-architecture model with a locally trained tokenizer, and model directory versions.

No model weights can be downloaded in development and CI, yet training, evaluation and serving must
run against something that mlx-lm loads exactly like the production model
(Qwen2.5-Coder-32B-Instruct, MLX, 8-bit). `build_dev_model` writes such a directory:

    config.json                   qwen2 config (mlx_lm.models.qwen2.ModelArgs), tied embeddings
    generation_config.json        EOS ids as Qwen2.5-Instruct: <|im_end|> and <|endoftext|>
    model.safetensors             random init from a fixed seed, float32, saved by mlx
    model.safetensors.index.json  weight map as mlx-lm writes it, plus the weights' sha256
    tokenizer.json                byte-level BPE trained on the given corpus, Qwen special tokens
    tokenizer_config.json         ChatML chat template, eos `<|im_end|>`, pad `<|endoftext|>`

The same corpus and config give byte-identical files, so `model_version` of the dev model is stable
across runs and machines. The model is random: it produces tokens, not sense;
`core.training.pretrain` builds the same kind of directory with weights trained on real code (the
embedded default's base).

`model_version` hashes the small files of a model directory (config, tokenizer, weight index) and
never opens the weights, so it also serves as the observed version of the 35 GB production model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coder_assets.core.errors import CoderAssetsError

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

# Qwen2's pre-tokenizer split: contractions, letter runs with one leading non-letter, single
# digits, punctuation runs, newlines and other whitespace. Byte-level BPE runs inside each piece.
_QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# ChatML as Qwen2.5-Instruct renders it (without tool calls): a default system turn when the
# conversation has none, `<|im_start|>role\ncontent<|im_end|>\n` per message, and
# `<|im_start|>assistant\n` as the generation prompt.
DEFAULT_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
CHAT_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

WEIGHTS_FILE = "model.safetensors"
WEIGHT_INDEX_FILE = "model.safetensors.index.json"
# The files besides the weights that decide how a model directory behaves. Absent ones are skipped.
_VERSIONED_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    WEIGHT_INDEX_FILE,
)


# Trains a freshly initialised model in place: (mlx-lm model, `tokenizers.Tokenizer`, special
# token ids by token).
Trainer = Callable[[Any, Any, dict[str, int]], None]


class DevModelError(CoderAssetsError, ValueError):
    """A dev model configuration that cannot make a working Qwen2 model."""


class ModelDirectoryError(CoderAssetsError, FileNotFoundError):
    """A model directory without the files that every mlx-lm model has."""


@dataclass(frozen=True)
class DevModelConfig:
    """Shape of the dev model. The defaults build in about a second and take ~1.5 MB."""

    vocab_size: int = 2048  # BPE vocab incl. special tokens; also the embedding rows
    hidden_size: int = 64
    num_hidden_layers: int = 4
    intermediate_size: int = 128
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        # 256 byte-level symbols plus the special tokens are the least a byte-level BPE can have.
        least = 256 + len(QWEN_SPECIAL_TOKENS)
        if self.vocab_size < least:
            raise DevModelError(f"DevModelConfig.vocab_size={self.vocab_size}: must be ≥ {least}")
        if self.hidden_size % self.num_attention_heads:
            raise DevModelError(
                f"DevModelConfig.hidden_size={self.hidden_size} must be a multiple of "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise DevModelError(
                "DevModelConfig: hidden_size / num_attention_heads must be even for RoPE"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise DevModelError(
                f"DevModelConfig.num_attention_heads={self.num_attention_heads} must be a "
                f"multiple of num_key_value_heads={self.num_key_value_heads}"
            )


def build_dev_model(
    out_dir: Path,
    corpus: Iterable[str],
    config: DevModelConfig = DevModelConfig(),
    *,
    trainer: Trainer | None = None,
) -> Path:
    """Build the dev model into `out_dir` and return `out_dir`.

    The tokenizer is trained on `corpus` (strings, e.g. source files); the weights are random from
    `config.seed`, then trained by `trainer(model, tokenizer, special token ids)` when one is given
    (`core.training.pretrain`). The directory is assembled next to `out_dir` and moved into place,
    so readers see either the previous model or the complete new one. `mlx_lm.load(str(out_dir))`
    loads it as is. Seeds mlx's global random state.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.build-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        tokenizer = _train_tokenizer(corpus, config.vocab_size)
        token_id = {token: tokenizer.token_to_id(token) for token in QWEN_SPECIAL_TOKENS}
        (tmp / "tokenizer.json").write_text(tokenizer.to_str(pretty=True) + "\n", "utf-8")
        _write_json(tmp / "tokenizer_config.json", _tokenizer_config(token_id))
        model_config = _model_config(config, token_id)
        _write_json(tmp / "config.json", model_config)
        _write_json(
            tmp / "generation_config.json",
            {
                "bos_token_id": token_id[PAD_TOKEN],
                "eos_token_id": [token_id[EOS_TOKEN], token_id[PAD_TOKEN]],
                "pad_token_id": token_id[PAD_TOKEN],
                "do_sample": False,
            },
        )
        _write_weights(
            tmp,
            model_config,
            config.seed,
            None if trainer is None else (lambda model: trainer(model, tokenizer, token_id)),
        )
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def model_version(model_dir: Path) -> str:
    """sha256 (hex) of a model directory's config, tokenizer and weight index files.

    Without a weight index, the names and sizes of the `*.safetensors` files stand in for it.
    Weight bytes are never read, so this is cheap for a 35 GB model; a change of weights that keeps
    names, shapes and the index goes unnoticed (the dev model's index carries its weights' sha256).
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelDirectoryError(
            f"{model_dir} has no config.json: not a model directory (build the dev model with "
            "build_dev_model, or point the model path at a converted mlx model)"
        )
    digest = hashlib.sha256()
    for name in _VERSIONED_FILES:
        path = model_dir / name
        if path.is_file():
            data = path.read_bytes()
            digest.update(f"{name}\0{len(data)}\0".encode())
            digest.update(data)
    if not (model_dir / WEIGHT_INDEX_FILE).is_file():
        for path in sorted(model_dir.glob("*.safetensors")):
            digest.update(f"weights:{path.name}\0{path.stat().st_size}\0".encode())
    return digest.hexdigest()


def _train_tokenizer(corpus: Iterable[str], vocab_size: int) -> Any:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    tokenizer = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False)
    trainer = BpeTrainer(
        vocab_size=vocab_size - len(QWEN_SPECIAL_TOKENS),
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    # Added after training, the special tokens get the top ids as in Qwen's vocabulary, and each
    # is matched whole before BPE runs, so it always encodes to exactly one id.
    tokenizer.add_special_tokens(
        [
            AddedToken(token, special=True, normalized=False, lstrip=False, rstrip=False)
            for token in QWEN_SPECIAL_TOKENS
        ]
    )
    return tokenizer


def _tokenizer_config(token_id: dict[str, int]) -> dict[str, Any]:
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(token_id[token]): {
                "content": token,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for token in QWEN_SPECIAL_TOKENS
        },
        "additional_special_tokens": [
            token for token in QWEN_SPECIAL_TOKENS if token not in (EOS_TOKEN, PAD_TOKEN)
        ],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS_TOKEN,
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": PAD_TOKEN,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def _model_config(config: DevModelConfig, token_id: dict[str, int]) -> dict[str, Any]:
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": token_id[PAD_TOKEN],
        "eos_token_id": token_id[EOS_TOKEN],
        "hidden_act": "silu",
        "hidden_size": config.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.max_position_embeddings,
        "max_window_layers": config.num_hidden_layers,
        "model_type": "qwen2",
        "num_attention_heads": config.num_attention_heads,
        "num_hidden_layers": config.num_hidden_layers,
        "num_key_value_heads": config.num_key_value_heads,
        "rms_norm_eps": 1e-6,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": config.vocab_size,
    }


def _write_weights(
    model_dir: Path,
    model_config: dict[str, Any],
    seed: int,
    train: Callable[[Any], None] | None = None,
) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models.qwen2 import Model, ModelArgs

    mx.random.seed(seed)
    model = Model(ModelArgs.from_dict(model_config))
    if train is not None:
        train(model)
    weights = dict(sorted(tree_flatten(model.parameters())))
    mx.eval(weights)
    mx.save_safetensors(str(model_dir / WEIGHTS_FILE), weights, metadata={"format": "mlx"})
    weights_bytes = (model_dir / WEIGHTS_FILE).read_bytes()
    _write_json(
        model_dir / WEIGHT_INDEX_FILE,
        {
            "metadata": {
                "total_size": sum(w.nbytes for w in weights.values()),
                "total_parameters": sum(w.size for w in weights.values()),
                # Lets model_version tell dev weights apart without reading them.
                "weights_sha256": hashlib.sha256(weights_bytes).hexdigest(),
            },
            "weight_map": {name: WEIGHTS_FILE for name in weights},
        },
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    # rename(2) does not replace a non-empty directory: move the old model aside first.
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.replace(out_dir, old / out_dir.name)
    try:
        os.replace(tmp, out_dir)
    except OSError:
        os.replace(old / out_dir.name, out_dir)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def random_lora_adapter(
    model_dir: Path, out_dir: Path, *, seed: int, rank: int = 4, scale: float = 0.5
) -> Path:
    """A LoRA adapter for every layer of the model in `model_dir`, in mlx-lm's format, with random
    (non-zero) `lora_b` weights: it changes the model's output without any training. For tests and
    benchmarks of serving and deploying adapters. Returns `out_dir`."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    model, _ = load(str(model_dir))
    model.freeze()
    layers = json.loads((Path(model_dir) / "config.json").read_text("utf-8"))["num_hidden_layers"]
    parameters = {"rank": rank, "scale": 2.0, "dropout": 0.0}
    linear_to_lora_layers(model, layers, parameters)
    mx.random.seed(seed)
    weights = {
        name: mx.random.normal(value.shape) * scale if name.endswith("lora_b") else value
        for name, value in tree_flatten(model.trainable_parameters())
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True)
    mx.save_safetensors(str(out_dir / "adapters.safetensors"), weights)
    config = {"fine_tune_type": "lora", "num_layers": layers, "lora_parameters": parameters}
    (out_dir / "adapter_config.json").write_text(json.dumps(config), "utf-8")
    return out_dir
