"""LoRA fine-tuning through mlx-lm's trainer API: resumable, with progress reports.

`train_lora` loads the base model with `mlx_lm.load`, converts the top `num_layers` transformer
blocks to LoRA (`mlx_lm.tuner.utils.linear_to_lora_layers`), builds mlx-lm text datasets from
`train.jsonl` / `valid.jsonl` and runs `mlx_lm.tuner.trainer.train` with Adam. It does not go
through `mlx_lm.lora.run()`, which replaces any training callback with its own reporters; here a
`ProgressCallback` receives every train and validation report.

An adapter directory holds one trained version:

    adapter_config.json           what mlx_lm.load(..., adapter_path=DIR) and mlx_lm.server need,
                                  plus our settings, base model version and data digest
    adapters.safetensors          the adapter weights (the final ones once training is complete)
    NNNNNNN_adapters.safetensors  checkpoints every `save_every` iterations, named by iteration
    training_log.jsonl            every train / validation report, to draw the whole loss curve
    training_complete.json        the completion marker: the `TrainingResult`, written last

A directory with checkpoints and no marker is an interrupted training: `train_lora` resumes it
from the latest checkpoint. A directory with the marker is finished and is never trained again.

Importing this module imports mlx-lm, about 2 s (transformers comes with it): an asset should
import it in its body, not when the code location loads.

Facts about mlx-lm 0.32's trainer that this module relies on (all but the last pinned by tests):

- `train()` counts iterations from 1 on every call and names checkpoints by that count, so a
  second call would overwrite the first call's checkpoints with later weights. A resumed run
  therefore trains in a staging directory (`.resume-from-NNNNNNN/`) whose checkpoints are moved
  into place under their overall iteration number.
- In one iteration the train report comes before the checkpoint save: a run cancelled from the
  report callback at iteration k keeps the checkpoint before k, not k.
- Validation runs before the step of iterations 1, every `steps_per_eval`-th, and the last, and
  is reported as the iteration before (0, steps_per_eval - 1, ..., iters - 1): the last
  validation loss is that of the weights before the final step.
- With `grad_checkpoint` it replaces `__call__` on the transformer block CLASS, for the whole
  process; `train_lora` puts the original back afterwards. It works on the CPU backend.
- `iterations_per_second` of the last report of a run whose `iters` is not a multiple of
  `steps_per_report` is overstated (it divides a full report interval by a shorter time);
  `tokens_per_second` is right. Both count only training steps, not validation or saving.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlx.core as mx
import mlx.optimizers as optim
import mlx_lm
import numpy as np
from mlx.utils import tree_flatten
from mlx_lm.tuner.callbacks import TrainingCallback
from mlx_lm.tuner.datasets import CacheDataset, create_dataset
from mlx_lm.tuner.trainer import TrainingArgs, train
from mlx_lm.tuner.utils import linear_to_lora_layers

from coder_assets.core.errors import CoderAssetsError
from coder_assets.core.files import write_text_atomic
from coder_assets.core.training.adapter_files import adapter_digests
from coder_assets.core.training.dev_model import model_version

ADAPTER_FILE = "adapters.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
COMPLETION_MARKER = "training_complete.json"
TRAINING_LOG_FILE = "training_log.jsonl"
TRAIN_FILE = "train.jsonl"
VALID_FILE = "valid.jsonl"

# Our own block inside adapter_config.json; mlx-lm's loader reads only the keys it knows.
_OWN_CONFIG_KEY = "coder_assets"
_CHECKPOINT_PATTERN = re.compile(r"^(\d{7})_adapters\.safetensors$")
_STAGING_PATTERN = re.compile(r"^\.resume-from-(\d{7})$")

Point = tuple[int, float]


class TrainingError(CoderAssetsError):
    """Training cannot start or continue: a finished version, a mismatched resume, bad inputs."""


class LoraSettingsError(TrainingError, ValueError):
    """A LoRA setting out of range, or one that does not fit the model."""


@dataclass(frozen=True)
class LoraSettings:
    """Everything that decides a LoRA training run. Defaults are the production settings.

    `scale` is mlx-lm's LoRA scale, alpha / rank: 2.0 is alpha 32 at rank 16. `keys` names the
    modules inside a transformer block that get LoRA (e.g. `("self_attn.q_proj",
    "self_attn.v_proj")`); None takes mlx-lm's default, every linear layer of the block.
    `val_batches=-1` validates on the whole validation set.
    """

    rank: int = 16
    scale: float = 2.0
    dropout: float = 0.0
    num_layers: int = 16
    batch_size: int = 1
    iters: int = 1000
    learning_rate: float = 1e-5
    val_batches: int = 25
    steps_per_report: int = 10
    steps_per_eval: int = 200
    save_every: int = 100
    grad_checkpoint: bool = True
    max_seq_length: int = 2048
    seed: int = 0
    keys: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name, least in (
            ("rank", 1),
            ("num_layers", 1),
            ("batch_size", 1),
            ("iters", 1),
            ("steps_per_report", 1),
            ("steps_per_eval", 1),
            ("save_every", 1),
            ("max_seq_length", 2),
            ("seed", 0),
        ):
            value = getattr(self, name)
            if not _is_int(value) or value < least:
                raise LoraSettingsError(
                    f"LoraSettings.{name}={value!r}: must be a whole number ≥ {least}"
                )
        if not _is_int(self.val_batches) or not (self.val_batches >= 1 or self.val_batches == -1):
            raise LoraSettingsError(
                f"LoraSettings.val_batches={self.val_batches!r}: must be ≥ 1, or -1 for the "
                "whole validation set"
            )
        if not _is_number(self.scale) or not self.scale > 0:
            raise LoraSettingsError(
                f"LoraSettings.scale={self.scale!r}: must be a positive number (alpha / rank)"
            )
        if not _is_number(self.learning_rate) or not self.learning_rate > 0:
            raise LoraSettingsError(
                f"LoraSettings.learning_rate={self.learning_rate!r}: must be a positive number"
            )
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise LoraSettingsError(
                f"LoraSettings.dropout={self.dropout!r}: must be a number in [0, 1)"
            )
        if not isinstance(self.grad_checkpoint, bool):
            raise LoraSettingsError(
                f"LoraSettings.grad_checkpoint={self.grad_checkpoint!r}: must be true or false"
            )
        if self.keys is not None:
            if isinstance(self.keys, str) or not isinstance(self.keys, Sequence):
                raise LoraSettingsError(
                    f"LoraSettings.keys={self.keys!r}: must be a list of module names such as "
                    "'self_attn.q_proj', or None for mlx-lm's default"
                )
            keys = tuple(self.keys)
            if not keys or not all(isinstance(key, str) and key for key in keys):
                raise LoraSettingsError(
                    f"LoraSettings.keys={self.keys!r}: must name at least one module, each a "
                    "non-empty string, or be None for mlx-lm's default"
                )
            # A list from a config file becomes a tuple, so settings stay hashable and comparable.
            object.__setattr__(self, "keys", keys)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (`keys` as a list or None)."""
        data = asdict(self)
        data["keys"] = list(self.keys) if self.keys is not None else None
        return data


@dataclass(frozen=True)
class TrainingResult:
    """What a finished training produced; also the content of the completion marker.

    `iterations` counts every iteration of the version, before and after a resume;
    `resumed_from` is the checkpoint iteration the last attempt started from (0 when fresh).
    `train_points` / `val_points` cover the whole version as far as the reports of earlier
    attempts reached their checkpoint. `trained_tokens` likewise; tokens trained after an
    attempt's last report before its checkpoint are not counted. `tokens_per_second` (mean over
    the train reports), `peak_memory_gb` and `wall_seconds` describe the last attempt only.
    `final_val_loss` is the last validation, taken before the final step (mlx-lm's schedule);
    None without a validation set. `final_train_loss` is None only when no train report exists.
    """

    iterations: int
    resumed_from: int
    final_train_loss: float | None
    final_val_loss: float | None
    trained_tokens: int
    tokens_per_second: float
    peak_memory_gb: float
    wall_seconds: float
    adapter_bytes: int
    train_points: tuple[Point, ...]
    val_points: tuple[Point, ...]

    def to_json(self) -> str:
        """The result as a JSON document (points as [iteration, loss] pairs)."""
        data = asdict(self)
        data["train_points"] = [list(point) for point in self.train_points]
        data["val_points"] = [list(point) for point in self.val_points]
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TrainingResult:
        """Parse what `to_json` wrote."""
        data = json.loads(text)
        names = {field.name for field in fields(cls)}
        missing = names - data.keys()
        if missing:
            raise TrainingError(
                f"training result JSON lacks {sorted(missing)}: not written by this version "
                "of coder_assets; retrain into a fresh adapter directory"
            )
        data = {name: data[name] for name in names}
        data["train_points"] = tuple((int(i), float(v)) for i, v in data["train_points"])
        data["val_points"] = tuple((int(i), float(v)) for i, v in data["val_points"])
        return cls(**data)


class ProgressCallback(TrainingCallback):
    """mlx-lm training callback that turns reports into `emit(kind, fields)` calls.

    `emit("train", {...})` carries mlx-lm's train report (iteration, train_loss, learning_rate,
    iterations_per_second, tokens_per_second, trained_tokens, peak_memory in GB) and
    `emit("val", {...})` its validation report (iteration, val_loss, val_time), both with
    `percent` of `total_iters` done and `eta_seconds`: time since `begin` (or construction)
    per iteration done in this run, times the iterations left; None before the first
    iteration of the run. Iterations (and trained_tokens) continue from `start_iteration`
    (and the tokens before it) in a resumed run. `train_points` / `val_points` keep
    (iteration, loss) of this run's reports.
    """

    def __init__(
        self,
        emit: Callable[[str, dict[str, Any]], None],
        total_iters: int,
        start_iteration: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.emit = emit
        self.total_iters = total_iters
        self.start_iteration = start_iteration
        self.tokens_before = 0
        self.clock = clock
        self.started_at = clock()
        self.train_points: list[Point] = []
        self.val_points: list[Point] = []

    def begin(self, start_iteration: int, total_iters: int, tokens_before: int = 0) -> None:
        """Set where this run starts and restart the clock (`train_lora` calls it first)."""
        self.start_iteration = start_iteration
        self.total_iters = total_iters
        self.tokens_before = tokens_before
        self.started_at = self.clock()

    def on_train_loss_report(self, train_info: dict[str, Any]) -> None:
        """Emit one train report (mlx-lm calls this every `steps_per_report` iterations)."""
        iteration = self.start_iteration + int(train_info["iteration"])
        loss = float(train_info["train_loss"])
        self.train_points.append((iteration, loss))
        self.emit(
            "train",
            {
                "iteration": iteration,
                "train_loss": loss,
                "learning_rate": float(train_info["learning_rate"]),
                "iterations_per_second": float(train_info["iterations_per_second"]),
                "tokens_per_second": float(train_info["tokens_per_second"]),
                "trained_tokens": self.tokens_before + int(train_info["trained_tokens"]),
                "peak_memory": float(train_info["peak_memory"]),
                **self._progress(iteration),
            },
        )

    def on_val_loss_report(self, val_info: dict[str, Any]) -> None:
        """Emit one validation report."""
        iteration = self.start_iteration + int(val_info["iteration"])
        loss = float(val_info["val_loss"])
        self.val_points.append((iteration, loss))
        self.emit(
            "val",
            {
                "iteration": iteration,
                "val_loss": loss,
                "val_time": float(val_info["val_time"]),
                **self._progress(iteration),
            },
        )

    def _progress(self, iteration: int) -> dict[str, float | None]:
        total = max(self.total_iters, 1)
        percent = min(100.0, max(0.0, 100.0 * iteration / total))
        done = iteration - self.start_iteration
        eta = None
        if done > 0:
            elapsed = max(0.0, self.clock() - self.started_at)
            eta = elapsed / done * max(0, self.total_iters - iteration)
        return {"percent": percent, "eta_seconds": eta}


def find_checkpoints(adapter_dir: Path) -> dict[int, Path]:
    """The numbered checkpoints in `adapter_dir` by iteration (checkpoints a hard-killed resume
    left in its staging directory included, under their overall iteration number)."""
    adapter_dir = Path(adapter_dir)
    found: dict[int, Path] = {}
    if not adapter_dir.is_dir():
        return found
    for path in adapter_dir.iterdir():
        match = _CHECKPOINT_PATTERN.match(path.name)
        if match and path.is_file():
            found[int(match[1])] = path
    for stage in sorted(adapter_dir.iterdir()):
        base = _STAGING_PATTERN.match(stage.name)
        if base and stage.is_dir():
            for path in stage.iterdir():
                match = _CHECKPOINT_PATTERN.match(path.name)
                if match and path.is_file():
                    found[int(base[1]) + int(match[1])] = path
    return dict(sorted(found.items()))


def completed_training(adapter_dir: Path) -> TrainingResult | None:
    """The result recorded in `adapter_dir`'s completion marker, or None when not finished."""
    marker = Path(adapter_dir) / COMPLETION_MARKER
    if not marker.is_file():
        return None
    return TrainingResult.from_json(marker.read_text("utf-8"))


def train_lora(
    model_dir: Path,
    data_dir: Path,
    adapter_dir: Path,
    settings: LoraSettings,
    callback: ProgressCallback | None = None,
    *,
    start_from: Path | None = None,
) -> TrainingResult:
    """Train a LoRA adapter of the model in `model_dir` on `data_dir` into `adapter_dir`.

    `start_from`: a trained adapter of the same base model and LoRA shape whose weights the
    training starts from instead of mlx-lm's initialisation (continuous fine-tuning); its file
    digests are part of the training's identity. None: a fresh adapter.

    `data_dir` holds mlx-lm `train.jsonl` and, optionally, `valid.jsonl` (one record format per
    file, as mlx-lm decides from the first record). Seeds Python's, numpy's and mlx's global
    random state from `settings.seed`. `callback` gets every report (its `begin` is called with
    the resume point first). Returns the result, which is also written to the completion
    marker, last.

    Resume: when `adapter_dir` holds checkpoints of an unfinished training with the same
    settings, base model and data, the latest readable checkpoint's weights are loaded and only
    the remaining iterations run. A resume does NOT restore the optimizer state (Adam's moments
    start from zero again) nor the data order (batches are drawn from the seed again, so the
    first batches are seen again, not those the interrupted run would have taken next), and the
    report, validation and save cadence counts from the resume point.

    Cancelling: nothing is caught. KeyboardInterrupt (SIGTERM becomes one inside `interruptible`)
    or an exception raised by the callback propagates; checkpoints saved so far stay usable.

    Raises `TrainingError` when `adapter_dir` already holds a finished training (never retrained:
    the caller decides what to do), when an unfinished one there used other settings, base model
    or data, or when the data is unusable; `LoraSettingsError` when `num_layers` exceeds the
    model's layers.
    """
    started = time.monotonic()
    model_dir, data_dir, adapter_dir = Path(model_dir), Path(data_dir), Path(adapter_dir)
    finished = completed_training(adapter_dir)
    if finished is not None:
        raise TrainingError(
            f"{adapter_dir} already holds a finished training ({COMPLETION_MARKER}, "
            f"{finished.iterations} iterations): this version is trained and is never trained "
            "again; use it as it is, or train into a fresh adapter directory"
        )
    identity = {
        "settings": settings.to_dict(),
        "base_model_version": model_version(model_dir),
        "data_sha256": _data_digest(data_dir),
    }
    if start_from is not None:
        start_from = Path(start_from)
        problem = continuation_problem(start_from, identity["base_model_version"], settings)
        if problem is not None:
            raise TrainingError(
                f"cannot start from the adapter in {start_from}: {problem}; train a fresh "
                "adapter instead (lora_adapter's start_from: base)"
            )
        identity["start_from"] = adapter_digests(start_from)
    adapter_dir.mkdir(parents=True, exist_ok=True)
    _refuse_other_training(adapter_dir, identity)
    _promote_staged(adapter_dir)

    random.seed(settings.seed)
    np.random.seed(settings.seed)
    model, tokenizer = mlx_lm.load(str(model_dir))
    layer_count = len(model.layers)
    if settings.num_layers > layer_count:
        raise LoraSettingsError(
            f"LoraSettings.num_layers={settings.num_layers}: the model in {model_dir} has only "
            f"{layer_count} layers; set num_layers to at most {layer_count}"
        )
    train_set = _load_split(data_dir / TRAIN_FILE, tokenizer, settings, required=True)
    valid_set = _load_split(data_dir / VALID_FILE, tokenizer, settings, required=False)

    # Seeded after loading, as `mlx_lm lora` does, so both draw the same LoRA initialisation.
    mx.random.seed(settings.seed)
    model.freeze()
    lora_parameters: dict[str, Any] = {
        "rank": settings.rank,
        "scale": settings.scale,
        "dropout": settings.dropout,
    }
    if settings.keys is not None:
        lora_parameters["keys"] = list(settings.keys)
    linear_to_lora_layers(model, settings.num_layers, lora_parameters)
    # Record the modules that did get LoRA, so the adapter loads the same way even if a later
    # mlx-lm picks different default keys.
    lora_parameters["keys"] = _lora_keys(model, settings.num_layers)
    unmatched = sorted(set(settings.keys or ()) - set(lora_parameters["keys"]))
    if unmatched or not lora_parameters["keys"]:
        raise LoraSettingsError(
            f"LoraSettings.keys: {unmatched or list(settings.keys or ())} name no linear "
            f"module inside the top {settings.num_layers} layers of the model in {model_dir}; "
            "name modules inside a block, e.g. 'self_attn.q_proj', or use None for mlx-lm's "
            "default"
        )

    start = 0
    trainable = dict(tree_flatten(model.trainable_parameters()))
    for iteration, path in sorted(find_checkpoints(adapter_dir).items(), reverse=True):
        if iteration <= settings.iters and _load_checkpoint(model, path, trainable):
            start = iteration
            break
    if start == 0 and start_from is not None:
        if not _load_checkpoint(model, start_from / ADAPTER_FILE, trainable):
            raise TrainingError(
                f"the adapter weights in {start_from / ADAPTER_FILE} do not fit this model's "
                "LoRA layers (other modules or shapes); train a fresh adapter instead"
            )

    _write_json_atomic(
        adapter_dir / ADAPTER_CONFIG_FILE,
        _adapter_config(model_dir, data_dir, adapter_dir, settings, lora_parameters, identity),
    )
    earlier = _read_log(adapter_dir / TRAINING_LOG_FILE, start)
    tokens_before = max((r["trained_tokens"] for r in earlier if r["kind"] == "train"), default=0)
    recorder = _Recorder(adapter_dir / TRAINING_LOG_FILE, start, tokens_before, earlier, callback)
    if callback is not None:
        callback.begin(start, settings.iters, tokens_before=tokens_before)

    remaining = settings.iters - start
    work_dir = adapter_dir if start == 0 else adapter_dir / f".resume-from-{start:07d}"
    work_dir.mkdir(exist_ok=True)
    try:
        if remaining > 0:
            with _layer_class_restored(model.layers[0]):
                train(
                    model=model,
                    optimizer=optim.Adam(learning_rate=settings.learning_rate),
                    train_dataset=CacheDataset(train_set),
                    val_dataset=CacheDataset(valid_set) if valid_set is not None else None,
                    args=TrainingArgs(
                        batch_size=settings.batch_size,
                        iters=remaining,
                        val_batches=settings.val_batches,
                        steps_per_report=settings.steps_per_report,
                        steps_per_eval=settings.steps_per_eval,
                        steps_per_save=settings.save_every,
                        max_seq_length=settings.max_seq_length,
                        adapter_file=str(work_dir / ADAPTER_FILE),
                        grad_checkpoint=settings.grad_checkpoint,
                    ),
                    training_callback=recorder,
                )
        else:
            # Every iteration was done before the interruption; only the final save is missing.
            weights = dict(tree_flatten(model.trainable_parameters()))
            mx.save_safetensors(str(work_dir / ADAPTER_FILE), weights)
    finally:
        if work_dir != adapter_dir:
            _promote_staged(adapter_dir)

    result = recorder.result(
        iterations=settings.iters,
        resumed_from=start,
        wall_seconds=time.monotonic() - started,
        adapter_bytes=(adapter_dir / ADAPTER_FILE).stat().st_size,
    )
    write_text_atomic(adapter_dir / COMPLETION_MARKER, result.to_json())
    return result


def plot_loss_curve(
    train_points: Sequence[Point], val_points: Sequence[Point], path: Path, title: str
) -> Path:
    """Draw train and validation loss over iterations into a PNG at `path` and return `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A bare Figure with the Agg canvas: no pyplot global state, safe in any thread.
    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if train_points:
        xs, ys = zip(*train_points, strict=True)
        axes.plot(xs, ys, label="train", color="tab:blue", linewidth=1.5)
    if val_points:
        xs, ys = zip(*val_points, strict=True)
        axes.plot(xs, ys, label="validation", color="tab:orange", marker="o", linewidth=1.5)
    if train_points or val_points:
        axes.legend()
    else:
        axes.text(0.5, 0.5, "no reports", ha="center", va="center", transform=axes.transAxes)
    axes.set_title(title)
    axes.set_xlabel("iteration")
    axes.set_ylabel("loss")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            figure.savefig(out, format="png")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (as Ctrl-C does) in the main thread.

    Python's default SIGTERM ends the process at once; as an exception it unwinds `train_lora`
    like a cancel, so its clean-up runs. Outside the main thread (signal handlers can only be set
    there) this does nothing. The previous handler is put back on exit. Dagster runs need no
    such block: Dagster turns a run termination into an exception of its own.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"{signal.Signals(signum).name} received")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class _Recorder(TrainingCallback):
    """Keeps every report (overall iteration numbers) in memory and in the training log, then
    hands mlx-lm's report on to the caller's callback."""

    def __init__(
        self,
        log_path: Path,
        start: int,
        tokens_before: int,
        earlier: list[dict[str, Any]],
        forward: TrainingCallback | None,
    ) -> None:
        self.log_path = log_path
        self.start = start
        self.tokens_before = tokens_before
        self.forward = forward
        self.reports: list[dict[str, Any]] = list(earlier)
        self.first_own = len(self.reports)  # reports from here on belong to this attempt
        self._write_log()

    def on_train_loss_report(self, train_info: dict[str, Any]) -> None:
        report = {key: _plain(value) for key, value in train_info.items()}
        report["iteration"] = self.start + int(train_info["iteration"])
        report["trained_tokens"] = self.tokens_before + int(train_info["trained_tokens"])
        self.reports.append({"kind": "train", **report})
        self._write_log()
        if self.forward is not None:
            self.forward.on_train_loss_report(train_info)

    def on_val_loss_report(self, val_info: dict[str, Any]) -> None:
        report = {key: _plain(value) for key, value in val_info.items()}
        report["iteration"] = self.start + int(val_info["iteration"])
        self.reports.append({"kind": "val", **report})
        self._write_log()
        if self.forward is not None:
            self.forward.on_val_loss_report(val_info)

    def result(
        self, *, iterations: int, resumed_from: int, wall_seconds: float, adapter_bytes: int
    ) -> TrainingResult:
        """The result of the whole version from the reports kept."""
        train = [r for r in self.reports if r["kind"] == "train"]
        val = [r for r in self.reports if r["kind"] == "val"]
        own_train = [r for r in self.reports[self.first_own :] if r["kind"] == "train"]
        speeds = [r["tokens_per_second"] for r in own_train]
        return TrainingResult(
            iterations=iterations,
            resumed_from=resumed_from,
            final_train_loss=train[-1]["train_loss"] if train else None,
            final_val_loss=val[-1]["val_loss"] if val else None,
            trained_tokens=max((r["trained_tokens"] for r in train), default=0),
            tokens_per_second=sum(speeds) / len(speeds) if speeds else 0.0,
            peak_memory_gb=max((r["peak_memory"] for r in own_train), default=0.0),
            wall_seconds=wall_seconds,
            adapter_bytes=adapter_bytes,
            train_points=tuple((r["iteration"], r["train_loss"]) for r in train),
            val_points=tuple((r["iteration"], r["val_loss"]) for r in val),
        )

    def _write_log(self) -> None:
        # Rewritten whole (it is small) rather than appended, so a kill never leaves half a line.
        text = "".join(json.dumps(report, sort_keys=True) + "\n" for report in self.reports)
        write_text_atomic(self.log_path, text)


def _read_log(path: Path, start: int) -> list[dict[str, Any]]:
    """Reports of earlier attempts up to the checkpoint a resume starts from."""
    if start == 0 or not path.is_file():
        return []
    kept = []
    for line in path.read_text("utf-8").splitlines():
        try:
            report = json.loads(line)
        except json.JSONDecodeError:
            continue  # the log is a convenience for the loss curve; a bad line only loses a point
        if not isinstance(report, dict) or report.get("kind") not in ("train", "val"):
            continue
        iteration = report.get("iteration")
        if not isinstance(iteration, int):
            continue
        # The resumed run validates again at its first iteration (`start`) itself.
        if iteration <= start if report["kind"] == "train" else iteration < start:
            kept.append(report)
    return kept


def _load_split(path: Path, tokenizer: Any, settings: LoraSettings, *, required: bool) -> Any:
    """An mlx-lm dataset of one JSONL file, or None for a missing optional file."""
    if not path.is_file():
        if required:
            raise TrainingError(
                f"{path} does not exist: the training data directory must hold mlx-lm "
                f"{TRAIN_FILE} (and {VALID_FILE}); point data_dir at a dataset version"
            )
        return None
    records = []
    first_keys: set[str] | None = None
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise TrainingError(
                    f"{path}:{number}: not a JSON line ({error.msg}); rebuild the dataset"
                ) from None
            if not isinstance(record, dict):
                raise TrainingError(f"{path}:{number}: a record must be a JSON object")
            # mlx-lm picks the record format from the first line only; a later line in another
            # format would fail mid-training or train on the wrong fields.
            if first_keys is None:
                first_keys = set(record)
            elif set(record) != first_keys:
                raise TrainingError(
                    f"{path}:{number}: keys {sorted(record)} differ from the first record's "
                    f"{sorted(first_keys)}; use one record format per file"
                )
            records.append(record)
    if len(records) < settings.batch_size:
        if not required and not records:
            return None
        raise TrainingError(
            f"{path} has {len(records)} records, fewer than LoraSettings.batch_size="
            f"{settings.batch_size}; add data or lower the batch size"
        )
    try:
        return create_dataset(records, tokenizer, SimpleNamespace(mask_prompt=False))
    except ValueError as error:
        raise TrainingError(f"{path}: mlx-lm cannot use these records: {error}") from None


def _lora_keys(model: Any, num_layers: int) -> list[str]:
    """Names (inside a block) of the modules the LoRA conversion replaced in the top layers."""
    keys: set[str] = set()
    for layer in model.layers[-num_layers:]:
        for name, module in layer.named_modules():
            if hasattr(module, "lora_a") and hasattr(module, "lora_b"):
                keys.add(name)
    return sorted(keys)


def _load_checkpoint(model: Any, path: Path, trainable: Mapping[str, Any]) -> bool:
    """Load a checkpoint's adapter weights; False when it is unreadable or does not match the
    model's LoRA parameters (mlx-lm writes checkpoints in place, so a kill can truncate one)."""
    try:
        weights = mx.load(str(path))
    except (OSError, RuntimeError, ValueError):
        return False
    if set(weights) != set(trainable) or any(
        weights[name].shape != trainable[name].shape for name in weights
    ):
        return False
    model.load_weights(list(weights.items()), strict=False)
    return True


@contextmanager
def _layer_class_restored(layer: Any) -> Iterator[None]:
    # mlx-lm's grad checkpointing swaps `__call__` on the block's class for the whole process;
    # without restoring it, a second training in one process would checkpoint twice and
    # inference afterwards would run the training wrapper.
    cls = type(layer)
    had_own = "__call__" in cls.__dict__
    original = cls.__dict__.get("__call__")
    try:
        yield
    finally:
        if had_own:
            cls.__call__ = original
        elif "__call__" in cls.__dict__:
            del cls.__call__


def _promote_staged(adapter_dir: Path) -> None:
    """Move what resumed runs trained in staging directories into `adapter_dir`: numbered
    checkpoints under their overall iteration, and their latest adapters.safetensors."""
    stages = sorted(
        (int(match[1]), path)
        for path in adapter_dir.iterdir()
        if (match := _STAGING_PATTERN.match(path.name)) and path.is_dir()
    )
    for base, stage in stages:
        for path in sorted(stage.iterdir()):
            match = _CHECKPOINT_PATTERN.match(path.name)
            if match:
                target = adapter_dir / f"{base + int(match[1]):07d}_adapters.safetensors"
                os.replace(path, target)
        if (stage / ADAPTER_FILE).is_file():
            os.replace(stage / ADAPTER_FILE, adapter_dir / ADAPTER_FILE)
        shutil.rmtree(stage)


def _refuse_other_training(adapter_dir: Path, identity: Mapping[str, Any]) -> None:
    """Raise unless `adapter_dir` is new or holds an attempt with the same identity."""
    config_path = adapter_dir / ADAPTER_CONFIG_FILE
    if not config_path.is_file():
        if find_checkpoints(adapter_dir):
            raise TrainingError(
                f"{adapter_dir} holds checkpoints but no {ADAPTER_CONFIG_FILE}: not a training "
                "of train_lora; train into a fresh adapter directory"
            )
        return
    stored = _own_block(config_path)
    if isinstance(stored, str):
        raise TrainingError(
            f"{config_path} {stored}, so a resume cannot be checked; train into a fresh adapter "
            "directory"
        )
    differences = []
    old_settings = stored.get("settings") or {}
    for name, new in identity["settings"].items():
        old = old_settings.get(name)
        if old != new:
            differences.append(f"{name}: {old!r} → {new!r}")
    for name, what in (("base_model_version", "base model"), ("data_sha256", "training data")):
        if stored.get(name) != identity[name]:
            differences.append(f"{what}: {str(stored.get(name))[:12]} → {identity[name][:12]}")
    if stored.get("start_from") != identity.get("start_from"):
        differences.append("the adapter it starts from")
    if differences:
        raise TrainingError(
            f"{adapter_dir} holds an unfinished training with other inputs "
            f"({'; '.join(differences)}); resuming would mix two trainings. Train into a "
            "fresh adapter directory, or delete this one to start over"
        )


def _own_block(config_path: Path) -> dict[str, Any] | str:
    """`train_lora`'s block of an adapter_config.json, or why it has none (the end of a
    sentence that names the file)."""
    try:
        stored = json.loads(config_path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"cannot be read ({error})"
    own = stored.get(_OWN_CONFIG_KEY) if isinstance(stored, dict) else None
    if not isinstance(own, dict):
        return f"was not written by train_lora (no '{_OWN_CONFIG_KEY}' block)"
    return own


def _adapter_config(
    model_dir: Path,
    data_dir: Path,
    adapter_dir: Path,
    settings: LoraSettings,
    lora_parameters: Mapping[str, Any],
    identity: Mapping[str, Any],
) -> dict[str, Any]:
    """adapter_config.json with the keys `mlx_lm lora` writes for the same run, and ours."""
    return {
        "adapter_path": str(adapter_dir),
        "batch_size": settings.batch_size,
        "data": str(data_dir),
        "fine_tune_type": "lora",
        "grad_accumulation_steps": 1,
        "grad_checkpoint": settings.grad_checkpoint,
        "iters": settings.iters,
        "learning_rate": settings.learning_rate,
        "lora_parameters": dict(lora_parameters),
        "lr_schedule": None,
        "mask_prompt": False,
        "max_seq_length": settings.max_seq_length,
        "model": str(model_dir),
        "num_layers": settings.num_layers,
        "optimizer": "adam",
        "save_every": settings.save_every,
        "seed": settings.seed,
        "steps_per_eval": settings.steps_per_eval,
        "steps_per_report": settings.steps_per_report,
        "train": True,
        "val_batches": settings.val_batches,
        _OWN_CONFIG_KEY: dict(identity),
    }


def continuation_problem(
    adapter_dir: Path, base_model_version: str, settings: LoraSettings
) -> str | None:
    """Why a training with `settings` on the base model `base_model_version` cannot start from
    the adapter in `adapter_dir`, or None when it can: that needs the adapter's weights, a
    `train_lora` adapter_config.json, the same base model and the same LoRA shape (rank,
    layers, modules, scale)."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / ADAPTER_FILE).is_file():
        return f"it has no {ADAPTER_FILE}"
    own = _own_block(adapter_dir / ADAPTER_CONFIG_FILE)
    if isinstance(own, str):
        return f"its {ADAPTER_CONFIG_FILE} {own}"
    if own.get("base_model_version") != base_model_version:
        return (
            f"it was trained on base model {str(own.get('base_model_version'))[:12]}, this "
            f"training uses {base_model_version[:12]}"
        )
    old, new = own.get("settings") or {}, settings.to_dict()
    differences = [
        f"{name} {old.get(name)!r} → {new[name]!r}"
        for name in ("rank", "num_layers", "keys", "scale")
        if old.get(name) != new[name]
    ]
    if differences:
        return f"its LoRA shape differs ({', '.join(differences)})"
    return None


def _data_digest(data_dir: Path) -> str:
    """sha256 over the names and bytes of the train and validation files."""
    digest = hashlib.sha256()
    for name in (TRAIN_FILE, VALID_FILE):
        path = data_dir / name
        if not path.is_file():
            continue
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """mlx / numpy scalars as Python numbers, for JSON."""
    if hasattr(value, "item"):
        return value.item()
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=4, sort_keys=True) + "\n")
