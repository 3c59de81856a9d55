"""LoRA training with mlx-lm's trainer on the CPU: adapters mlx-lm loads, progress reports,
resumes from checkpoints, refusals, settings validation and the loss curve."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from coder_assets.core.training.dev_model import build_dev_model
from coder_assets.core.training.lora import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_FILE,
    COMPLETION_MARKER,
    TRAINING_LOG_FILE,
    LoraSettings,
    LoraSettingsError,
    ProgressCallback,
    TrainingError,
    TrainingResult,
    completed_training,
    continuation_problem,
    find_checkpoints,
    interruptible,
    plot_loss_curve,
    train_lora,
)

TINY = LoraSettings(
    rank=4,
    num_layers=2,
    iters=6,
    steps_per_report=2,
    steps_per_eval=3,
    save_every=2,
    max_seq_length=256,
    # The whole validation set: the loss then does not depend on the batch order, so a resumed
    # run must reproduce the interrupted run's validation loss at the checkpoint exactly.
    val_batches=-1,
    learning_rate=1e-3,
)

NAMES = ["add", "scale", "clamp", "merge", "parse", "render", "count", "split", "join", "load"]


def _code(i: int) -> str:
    name = NAMES[i % len(NAMES)]
    return (
        f"def {name}_{i}(values, limit={i}):\n"
        f'    """Return the {name} of values up to {i}."""\n'
        f"    total = 0\n"
        f"    for value in values[:limit]:\n"
        f"        total += value * {i % 7 + 1}\n"
        f"    return total\n"
    )


def _write_records(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), "utf-8")


class Recorder:
    """An emit function that keeps every event and can cancel the run at one train report."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.stop_at = stop_at

    def __call__(self, kind: str, fields: dict[str, Any]) -> None:
        self.events.append((kind, fields))
        if kind == "train" and fields["iteration"] == self.stop_at:
            raise KeyboardInterrupt(f"cancelled at iteration {self.stop_at}")

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [fields for k, fields in self.events if k == kind]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = [_code(i) for i in range(40)]
    return build_dev_model(tmp_path_factory.mktemp("models") / "dev-model", corpus)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    _write_records(root / "train.jsonl", [_code(i) for i in range(24)])
    _write_records(root / "valid.jsonl", [_code(i) for i in range(100, 106)])
    return root


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path, data_dir: Path
) -> tuple[Path, TrainingResult, Recorder]:
    adapter_dir = tmp_path_factory.mktemp("adapters") / "v1"
    recorder = Recorder()
    result = train_lora(
        model_dir, data_dir, adapter_dir, TINY, ProgressCallback(recorder, TINY.iters)
    )
    return adapter_dir, result, recorder


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_training_writes_adapters_config_checkpoints_and_marker_that_mlx_lm_loads(
    trained: tuple[Path, TrainingResult, Recorder], model_dir: Path
) -> None:
    import mlx_lm

    adapter_dir, result, _ = trained
    assert (adapter_dir / ADAPTER_FILE).stat().st_size == result.adapter_bytes > 0
    assert sorted(find_checkpoints(adapter_dir)) == [2, 4, 6]
    assert completed_training(adapter_dir) == result
    assert result.iterations == 6 and result.resumed_from == 0
    assert result.trained_tokens > 0 and result.tokens_per_second > 0
    assert result.final_train_loss == result.train_points[-1][1]
    assert result.final_val_loss == result.val_points[-1][1]

    config = json.loads((adapter_dir / ADAPTER_CONFIG_FILE).read_text())
    assert config["fine_tune_type"] == "lora" and config["num_layers"] == 2
    assert config["lora_parameters"]["rank"] == 4 and config["lora_parameters"]["scale"] == 2.0
    assert "self_attn.q_proj" in config["lora_parameters"]["keys"]

    model, _ = mlx_lm.load(str(model_dir), adapter_path=str(adapter_dir))
    lora = {
        name: value
        for name, value in tree_flatten(model.parameters())
        if name.endswith((".lora_a", ".lora_b"))
    }
    # LoRA sits in the top two of the four layers only, and it was trained (lora_b starts at 0).
    assert {name.split(".")[2] for name in lora} == {"2", "3"}
    saved = mx.load(str(adapter_dir / ADAPTER_FILE))
    assert set(saved) == set(lora)
    assert any(mx.abs(value).max().item() > 0 for name, value in lora.items() if "lora_b" in name)


def test_callback_reports_offset_iterations_percent_and_finite_eta(
    trained: tuple[Path, TrainingResult, Recorder],
) -> None:
    _, result, recorder = trained
    train, val = recorder.of("train"), recorder.of("val")
    assert [r["iteration"] for r in train] == [2, 4, 6]
    # mlx-lm validates before the step of iterations 1, 3 and 6, reported as the one before.
    assert [r["iteration"] for r in val] == [0, 2, 5]
    assert train[-1]["percent"] == 100.0 and train[-1]["eta_seconds"] == 0.0
    assert all(math.isfinite(r["eta_seconds"]) and r["eta_seconds"] >= 0 for r in train)
    assert val[0]["eta_seconds"] is None  # nothing done yet to estimate from
    for report in train:
        assert set(report) >= {
            "train_loss",
            "learning_rate",
            "iterations_per_second",
            "tokens_per_second",
            "trained_tokens",
            "peak_memory",
        }
    assert [(r["iteration"], r["train_loss"]) for r in train] == list(result.train_points)
    assert [(r["iteration"], r["val_loss"]) for r in val] == list(result.val_points)


def test_progress_callback_offsets_iterations_and_estimates_eta_from_elapsed_time() -> None:
    now = [100.0]
    recorder = Recorder()
    callback = ProgressCallback(recorder, total_iters=10, start_iteration=4, clock=lambda: now[0])
    now[0] += 6.0  # two iterations of this run in 6 s: 3 s each, 4 left after iteration 6
    callback.on_train_loss_report(
        {
            "iteration": 2,
            "train_loss": 1.5,
            "learning_rate": 1e-5,
            "iterations_per_second": 0.5,
            "tokens_per_second": 100.0,
            "trained_tokens": 600,
            "peak_memory": 1.25,
        }
    )
    callback.on_val_loss_report({"iteration": 0, "val_loss": 2.0, "val_time": 0.5})
    (train,), (val,) = recorder.of("train"), recorder.of("val")
    assert train["iteration"] == 6 and train["percent"] == 60.0 and train["eta_seconds"] == 12.0
    assert val["iteration"] == 4 and val["percent"] == 40.0 and val["eta_seconds"] is None
    assert callback.train_points == [(6, 1.5)] and callback.val_points == [(4, 2.0)]


def test_loss_goes_down_on_repetitive_data_and_the_adapter_changes_the_output(
    tmp_path: Path, model_dir: Path
) -> None:
    import mlx_lm

    line = "def add(a, b):\n    return a + b\n"
    _write_records(tmp_path / "data" / "train.jsonl", [line] * 24)
    _write_records(tmp_path / "data" / "valid.jsonl", [line] * 6)
    settings = LoraSettings(
        rank=4,
        num_layers=2,
        iters=20,
        steps_per_report=5,
        steps_per_eval=10,
        save_every=10,
        max_seq_length=256,
        val_batches=2,
        learning_rate=1e-3,
    )
    result = train_lora(model_dir, tmp_path / "data", tmp_path / "adapter", settings)
    # From ~8.2 to ~5 on every seed tried; a margin of 1 nat leaves room for platform noise.
    assert result.val_points[-1][1] < result.val_points[0][1] - 1.0
    assert result.train_points[-1][1] < result.train_points[0][1]

    base, tokenizer = mlx_lm.load(str(model_dir))
    tuned, _ = mlx_lm.load(str(model_dir), adapter_path=str(tmp_path / "adapter"))
    prompt = mx.array([tokenizer.encode("def add(a, b):\n")])
    assert not mx.allclose(base(prompt), tuned(prompt), atol=1e-3).item()


def test_interrupted_run_resumes_from_latest_checkpoint_and_trains_only_the_rest(
    tmp_path: Path, model_dir: Path, data_dir: Path
) -> None:
    adapter_dir = tmp_path / "v1"
    first = Recorder(stop_at=4)
    with pytest.raises(KeyboardInterrupt):
        train_lora(model_dir, data_dir, adapter_dir, TINY, ProgressCallback(first, TINY.iters))
    # The report of iteration 4 comes before its checkpoint: the cancel keeps checkpoint 2 only.
    assert sorted(find_checkpoints(adapter_dir)) == [2]
    assert not (adapter_dir / COMPLETION_MARKER).exists()
    checkpoint_2 = _sha256(adapter_dir / "0000002_adapters.safetensors")

    second = Recorder()
    callback = ProgressCallback(second, TINY.iters)
    result = train_lora(model_dir, data_dir, adapter_dir, TINY, callback)

    assert result.resumed_from == 2 and result.iterations == 6
    assert [r["iteration"] for r in second.of("train")] == [4, 6]  # 4 iterations, not 6
    assert second.of("val")[0]["iteration"] == 2
    # The resumed run starts from checkpoint 2's weights: same validation loss as back then.
    assert second.of("val")[0]["val_loss"] == pytest.approx(first.of("val")[1]["val_loss"])
    assert first.of("val")[1]["iteration"] == 2
    # Checkpoints carry overall iteration numbers; mlx-lm's own numbering restarts at 1.
    assert sorted(find_checkpoints(adapter_dir)) == [2, 4, 6]
    assert _sha256(adapter_dir / "0000002_adapters.safetensors") == checkpoint_2
    assert not [p for p in adapter_dir.iterdir() if p.name.startswith(".resume-from-")]
    # The whole loss curve, the first attempt's report up to the checkpoint included.
    assert [i for i, _ in result.train_points] == [2, 4, 6]
    assert result.trained_tokens == second.of("train")[-1]["trained_tokens"]
    assert result.trained_tokens > first.of("train")[0]["trained_tokens"]
    assert completed_training(adapter_dir) == result
    assert (adapter_dir / TRAINING_LOG_FILE).is_file()


def test_checkpoints_a_hard_killed_resume_left_in_staging_are_used(
    unfinished: Path, tmp_path: Path, model_dir: Path, data_dir: Path
) -> None:
    adapter_dir = tmp_path / "v1"
    shutil.copytree(unfinished, adapter_dir)
    # A resume from 2 killed with SIGKILL after its own checkpoint 2 (overall 4): no clean-up ran.
    stage = adapter_dir / ".resume-from-0000002"
    stage.mkdir()
    shutil.copy(
        adapter_dir / "0000002_adapters.safetensors", stage / "0000002_adapters.safetensors"
    )
    assert sorted(find_checkpoints(adapter_dir)) == [2, 4]

    result = train_lora(model_dir, data_dir, adapter_dir, TINY)
    assert result.resumed_from == 4
    assert sorted(find_checkpoints(adapter_dir)) == [2, 4, 6]
    assert not stage.exists()


def test_run_killed_after_its_last_checkpoint_finishes_without_training_again(
    unfinished: Path, tmp_path: Path, model_dir: Path, data_dir: Path
) -> None:
    adapter_dir = tmp_path / "v1"
    shutil.copytree(unfinished, adapter_dir)
    # As if killed between the last checkpoint and the completion marker.
    last = adapter_dir / "0000006_adapters.safetensors"
    shutil.copy(adapter_dir / "0000002_adapters.safetensors", last)
    recorder = Recorder()
    result = train_lora(model_dir, data_dir, adapter_dir, TINY, ProgressCallback(recorder, 6))
    assert result.resumed_from == 6 and result.iterations == 6
    assert recorder.events == []
    final, checkpoint = mx.load(str(adapter_dir / ADAPTER_FILE)), mx.load(str(last))
    assert set(final) == set(checkpoint)
    assert all(mx.array_equal(final[name], checkpoint[name]).item() for name in final)
    assert completed_training(adapter_dir) == result


def test_finished_version_refuses_to_train_again(
    trained: tuple[Path, TrainingResult, Recorder], model_dir: Path, data_dir: Path
) -> None:
    adapter_dir, _, _ = trained
    before = {p.name: _sha256(p) for p in adapter_dir.iterdir()}
    with pytest.raises(TrainingError, match="already holds a finished training"):
        train_lora(model_dir, data_dir, adapter_dir, TINY)
    assert {p.name: _sha256(p) for p in adapter_dir.iterdir()} == before


def _weights(adapter_dir: Path) -> dict[str, Any]:
    return mx.load(str(adapter_dir / "adapters.safetensors"))


def test_continuing_starts_from_the_given_adapters_weights(
    trained: tuple[Path, TrainingResult, Recorder],
    model_dir: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    parent, _, _ = trained
    # A learning rate too small to move anything: what comes out is what the training started
    # from.
    still = LoraSettings(**{**TINY.to_dict(), "iters": 2, "learning_rate": 1e-12})
    continued = tmp_path / "continued"
    train_lora(model_dir, data_dir, continued, still, start_from=parent)
    fresh = tmp_path / "fresh"
    train_lora(model_dir, data_dir, fresh, still)

    want = _weights(parent)
    for name, value in _weights(continued).items():
        assert mx.allclose(value, want[name], atol=1e-6).item(), name
    assert any(
        not mx.allclose(value, want[name], atol=1e-3).item()
        for name, value in _weights(fresh).items()
    )
    stored = json.loads((continued / ADAPTER_CONFIG_FILE).read_text())["coder_assets"]
    assert stored["start_from"]["adapters.safetensors"] == _sha256(parent / "adapters.safetensors")
    assert "start_from" not in json.loads((fresh / ADAPTER_CONFIG_FILE).read_text())["coder_assets"]


def test_a_killed_continued_training_resumes_from_its_own_checkpoint(
    trained: tuple[Path, TrainingResult, Recorder],
    model_dir: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    parent, _, _ = trained
    adapter_dir = tmp_path / "continued"
    first = Recorder(stop_at=4)
    with pytest.raises(KeyboardInterrupt):
        train_lora(
            model_dir,
            data_dir,
            adapter_dir,
            TINY,
            ProgressCallback(first, TINY.iters),
            start_from=parent,
        )
    assert sorted(find_checkpoints(adapter_dir)) == [2]
    second = Recorder()
    result = train_lora(
        model_dir,
        data_dir,
        adapter_dir,
        TINY,
        ProgressCallback(second, TINY.iters),
        start_from=parent,
    )
    assert result.resumed_from == 2 and result.iterations == TINY.iters
    # The retry starts from checkpoint 2's weights, not from the parent's again.
    assert second.of("val")[0]["val_loss"] == pytest.approx(first.of("val")[1]["val_loss"])
    assert first.of("val")[0]["val_loss"] != pytest.approx(first.of("val")[1]["val_loss"])
    # A retry into that folder that names no starting adapter is another training: refused.
    other = tmp_path / "other"
    with pytest.raises(KeyboardInterrupt):
        train_lora(
            model_dir,
            data_dir,
            other,
            TINY,
            ProgressCallback(Recorder(stop_at=4), TINY.iters),
            start_from=parent,
        )
    with pytest.raises(TrainingError, match="the adapter it starts from"):
        train_lora(model_dir, data_dir, other, TINY)


@pytest.mark.parametrize(
    ("changes", "named"),
    [({"rank": 8}, "rank 4 → 8"), ({"num_layers": 1}, "num_layers 2 → 1")],
    ids=["rank", "layers"],
)
def test_continuing_from_an_adapter_of_another_shape_is_refused_naming_it(
    trained: tuple[Path, TrainingResult, Recorder],
    model_dir: Path,
    data_dir: Path,
    tmp_path: Path,
    changes: dict[str, Any],
    named: str,
) -> None:
    parent, _, _ = trained
    settings = LoraSettings(**{**TINY.to_dict(), **changes})
    with pytest.raises(TrainingError, match="cannot start from the adapter") as caught:
        train_lora(model_dir, data_dir, tmp_path / "v2", settings, start_from=parent)
    assert named in str(caught.value) and "start_from: base" in str(caught.value)
    assert not (tmp_path / "v2" / "adapters.safetensors").exists()


def test_continuation_needs_the_same_base_model_and_an_adapter_of_ours(
    trained: tuple[Path, TrainingResult, Recorder], tmp_path: Path
) -> None:
    parent, _, _ = trained
    version = json.loads((parent / ADAPTER_CONFIG_FILE).read_text())["coder_assets"][
        "base_model_version"
    ]
    assert continuation_problem(parent, version, TINY) is None
    assert "base model" in (continuation_problem(parent, "f" * 64, TINY) or "")
    assert "has no adapters.safetensors" in (continuation_problem(tmp_path, version, TINY) or "")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    shutil.copy(parent / "adapters.safetensors", foreign)
    (foreign / ADAPTER_CONFIG_FILE).write_text('{"fine_tune_type": "lora"}')
    assert "not written by train_lora" in (continuation_problem(foreign, version, TINY) or "")
    (foreign / ADAPTER_CONFIG_FILE).write_bytes(b"\xff\xfe not text")
    assert "cannot be read" in (continuation_problem(foreign, version, TINY) or "")


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, data_dir: Path) -> Path:
    adapter_dir = tmp_path_factory.mktemp("unfinished") / "v1"
    with pytest.raises(KeyboardInterrupt):
        train_lora(
            model_dir,
            data_dir,
            adapter_dir,
            TINY,
            ProgressCallback(Recorder(stop_at=4), TINY.iters),
        )
    return adapter_dir


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"rank": 8}, "rank: 4 → 8"),
        ({"learning_rate": 1e-4, "iters": 8}, "iters: 6 → 8; learning_rate: 0.001 → 0.0001"),
        ({"keys": ("self_attn.q_proj",)}, "keys: None → ['self_attn.q_proj']"),
    ],
    ids=["rank", "iters-and-learning-rate", "keys"],
)
def test_resume_with_other_settings_is_refused_naming_them(
    unfinished: Path, model_dir: Path, data_dir: Path, changes: dict[str, Any], named: str
) -> None:
    settings = LoraSettings(**{**TINY.to_dict(), **changes})
    with pytest.raises(TrainingError, match="unfinished training with other inputs") as caught:
        train_lora(model_dir, data_dir, unfinished, settings)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (b"\xff\xfe not text", "cannot be read"),
        (b'{"fine_tune_type": "lora"}', "was not written by train_lora"),
    ],
    ids=["not-utf8", "foreign"],
)
def test_resume_into_a_folder_whose_config_is_not_ours_is_refused_naming_it(
    unfinished: Path,
    model_dir: Path,
    data_dir: Path,
    tmp_path: Path,
    config: bytes,
    named: str,
) -> None:
    adapter_dir = tmp_path / "v1"
    shutil.copytree(unfinished, adapter_dir)
    (adapter_dir / ADAPTER_CONFIG_FILE).write_bytes(config)
    with pytest.raises(TrainingError, match="resume cannot be checked") as caught:
        train_lora(model_dir, data_dir, adapter_dir, TINY)
    assert named in str(caught.value) and ADAPTER_CONFIG_FILE in str(caught.value)
    # The interrupted training's checkpoints are left as they were.
    assert sorted(find_checkpoints(adapter_dir)) == sorted(find_checkpoints(unfinished))


def test_resume_with_other_data_is_refused(
    unfinished: Path, model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    other = tmp_path / "data"
    shutil.copytree(data_dir, other)
    with (other / "train.jsonl").open("a") as handle:
        handle.write(json.dumps({"text": "one more line\n"}) + "\n")
    with pytest.raises(TrainingError, match="training data"):
        train_lora(model_dir, other, unfinished, TINY)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("rank", 0),
        ("iters", 0),
        ("num_layers", 0),
        ("batch_size", True),
        ("save_every", 0),
        ("max_seq_length", 1),
        ("seed", -1),
        ("val_batches", 0),
        ("scale", 0.0),
        ("learning_rate", float("nan")),
        ("dropout", 1.0),
        ("grad_checkpoint", "yes"),
        pytest.param("keys", (), id="keys-empty"),
        ("keys", "self_attn.q_proj"),
    ],
)
def test_settings_validation_errors_name_the_setting(setting: str, value: Any) -> None:
    with pytest.raises(LoraSettingsError, match=rf"^LoraSettings\.{setting}="):
        LoraSettings(**{setting: value})


def test_settings_keys_from_a_list_become_a_tuple() -> None:
    assert LoraSettings(keys=["self_attn.q_proj"]).keys == ("self_attn.q_proj",)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_layers": 5}, r"num_layers=5: the model in .* has only 4 layers"),
        ({"keys": ("self_attn.q_proj", "attn.nope")}, r"\['attn.nope'\] name no linear module"),
    ],
    ids=["num_layers", "keys"],
)
def test_settings_that_do_not_fit_the_model_are_refused(
    tmp_path: Path, model_dir: Path, data_dir: Path, changes: dict[str, Any], message: str
) -> None:
    settings = LoraSettings(**{**TINY.to_dict(), **changes})
    with pytest.raises(LoraSettingsError, match=message):
        train_lora(model_dir, data_dir, tmp_path / "v1", settings)
    assert not (tmp_path / "v1" / COMPLETION_MARKER).exists()


def test_mixed_record_formats_are_refused_naming_the_line(tmp_path: Path, model_dir: Path) -> None:
    data = tmp_path / "data"
    _write_records(data / "train.jsonl", [_code(i) for i in range(4)])
    with (data / "train.jsonl").open("a") as handle:
        handle.write(json.dumps({"prompt": "p", "completion": "c"}) + "\n")
    with pytest.raises(TrainingError, match=r"train\.jsonl:5: keys \['completion', 'prompt'\]"):
        train_lora(model_dir, data, tmp_path / "v1", TINY)


def test_gradient_checkpointing_runs_on_cpu_and_changes_no_loss(
    trained: tuple[Path, TrainingResult, Recorder],
    tmp_path: Path,
    model_dir: Path,
    data_dir: Path,
) -> None:
    from mlx_lm.models import qwen2

    _, with_checkpointing, _ = trained
    assert TINY.grad_checkpoint
    # mlx-lm patches the block class for the whole process; train_lora puts it back.
    assert qwen2.TransformerBlock.__call__.__qualname__ == "TransformerBlock.__call__"
    settings = LoraSettings(**{**TINY.to_dict(), "grad_checkpoint": False})
    without = train_lora(model_dir, data_dir, tmp_path / "v1", settings)
    for (i, a), (j, b) in zip(with_checkpointing.train_points, without.train_points, strict=True):
        assert i == j and a == pytest.approx(b, rel=1e-4)


def test_plot_loss_curve_writes_a_png_atomically(tmp_path: Path) -> None:
    path = plot_loss_curve(
        [(2, 3.0), (4, 2.5), (6, 2.0)], [(0, 3.2), (5, 2.2)], tmp_path / "loss.png", "v1"
    )
    assert path == tmp_path / "loss.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = plot_loss_curve([], [], tmp_path / "empty.png", "no reports yet")
    assert empty.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.png", "loss.png"]


def test_interruptible_turns_sigterm_into_keyboard_interrupt_and_restores_the_handler() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with interruptible():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises as soon as the signal arrives, cutting this short
    assert signal.getsignal(signal.SIGTERM) == before


def test_training_result_json_round_trips() -> None:
    result = TrainingResult(
        iterations=6,
        resumed_from=2,
        final_train_loss=2.0,
        final_val_loss=None,
        trained_tokens=123,
        tokens_per_second=45.5,
        peak_memory_gb=0.01,
        wall_seconds=1.5,
        adapter_bytes=999,
        train_points=((2, 3.0), (4, 2.0)),
        val_points=(),
    )
    assert TrainingResult.from_json(result.to_json()) == result
    with pytest.raises(TrainingError, match="lacks"):
        TrainingResult.from_json("{}")
