"""Atomic writes leave the previous file or the complete new one, and no temp files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coder_assets.core.files import atomic_writer, write_json_atomic, write_text_atomic


def test_a_write_replaces_the_file_with_mode_0644(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    write_json_atomic(target, {"b": 1, "a": 2.5})
    assert json.loads(target.read_text()) == {"a": 2.5, "b": 1}
    assert target.read_text().startswith('{\n  "a"') and oct(target.stat().st_mode)[-3:] == "644"
    write_text_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_writer(target) as out:
        out.write("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
