"""lora_adapter's start_from: which adapter a training continues from (the deployed one when it
fits, else none, with the reason in the log) and the adapter version that follows from it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dagster as dg
import pytest

from coder_assets.assets.training import LoraAdapterConfig, _starting_adapter, adapter_version
from coder_assets.core.training.adapter_files import adapter_digests
from coder_assets.core.training.dev_model import build_dev_model, model_version
from coder_assets.core.training.lora import LoraSettings, train_lora
from coder_assets.resources.service import ModelServerResource

SETTINGS = LoraSettings(
    rank=4, num_layers=2, iters=2, steps_per_report=1, steps_per_eval=2, save_every=2,
    max_seq_length=128, val_batches=1, learning_rate=1e-3,
)  # fmt: skip


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model dir, adapter dir) of a trained adapter, as the deployment installs it."""
    root = tmp_path_factory.mktemp("start")
    model = build_dev_model(
        root / "model", [f"def f{i}(x):\n    return x + {i}\n" for i in range(20)]
    )
    data = root / "data"
    data.mkdir()
    line = '{"text": "def add(a, b):\\n    return a + b\\n"}\n'
    (data / "train.jsonl").write_text(line * 8)
    (data / "valid.jsonl").write_text(line * 2)
    adapter = root / "deployed" / "d41d8cd98f00-1a2b3c4d"
    train_lora(model, data, adapter, SETTINGS)
    return model, adapter


def _server(model: Path, link: Path, tmp_path: Path) -> ModelServerResource:
    return ModelServerResource(
        model_path=str(model), adapter_link=str(link), state_dir=str(tmp_path / "state")
    )


def _choose(config: dict, server: ModelServerResource, base: str, settings=SETTINGS):
    context = dg.build_asset_context()
    return _starting_adapter(context, LoraAdapterConfig(**config), server, base, settings)


def test_start_from_deployed_continues_from_the_adapter_the_link_points_at(
    deployed: tuple[Path, Path], tmp_path: Path
) -> None:
    model, adapter = deployed
    link = tmp_path / "current"
    link.symlink_to(adapter)
    server = _server(model, link, tmp_path)
    base = model_version(model)
    assert _choose({"start_from": "deployed"}, server, base) == adapter.resolve()
    assert _choose({}, server, base) is None  # production's default: a fresh adapter


def test_start_from_deployed_trains_fresh_without_a_fitting_deployed_adapter(
    deployed: tuple[Path, Path], tmp_path: Path
) -> None:
    model, adapter = deployed
    base = model_version(model)
    nothing = _server(model, tmp_path / "no-link", tmp_path)
    assert _choose({"start_from": "deployed"}, nothing, base) is None
    link = tmp_path / "current"
    link.symlink_to(adapter)
    server = _server(model, link, tmp_path)
    other_rank = LoraSettings(**{**SETTINGS.to_dict(), "rank": 8})
    assert _choose({"start_from": "deployed"}, server, base, other_rank) is None
    assert _choose({"start_from": "deployed"}, server, "0" * 64) is None


def test_an_unknown_start_from_is_refused_naming_the_choices(
    deployed: tuple[Path, Path], tmp_path: Path
) -> None:
    model, _ = deployed
    with pytest.raises(dg.Failure, match=r"'newest'.*'base'.*'deployed'"):
        _choose({"start_from": "newest"}, _server(model, tmp_path / "x", tmp_path), "0" * 64)


def test_the_adapter_version_names_the_adapter_a_training_continues_from(
    deployed: tuple[Path, Path],
) -> None:
    _, adapter = deployed
    fresh = adapter_version("a" * 64, "b" * 64, SETTINGS)
    continued = adapter_version("a" * 64, "b" * 64, SETTINGS, adapter_digests(adapter))
    assert fresh != continued and fresh[:12] == continued[:12] == "a" * 12
    # A fresh adapter keeps the version it had before start_from existed.
    inputs = {"dataset": "a" * 64, "base": "b" * 64, "lora": SETTINGS.to_dict()}
    before = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode())
    assert fresh == f"{'a' * 12}-{before.hexdigest()[:8]}"
