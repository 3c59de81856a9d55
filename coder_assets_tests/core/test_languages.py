"""File language by name."""

from __future__ import annotations

import pytest

from coder_assets.core.languages import language_of


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("main.py", "python"),
        ("src/pkg/module.py", "python"),
        ("stubs/x.pyi", "python"),
        ("cmd/server/main.go", "go"),
        ("config.yaml", "yaml"),
        ("deploy/values.yml", "yaml"),
        ("README.md", "markdown"),
        ("docs/README.MD", "markdown"),
        ("CONFIG.YAML", "yaml"),
        ("Dockerfile", "dockerfile"),
        ("build/Dockerfile", "dockerfile"),
        ("Dockerfile.prod", "dockerfile"),
        ("docker/Dockerfile.dev", "dockerfile"),
        ("Containerfile", "dockerfile"),
        ("Makefile", "make"),
        ("go.mod", "go-mod"),
        ("tools/go.mod", "go-mod"),
        ("main.tf", "terraform"),
        ("script.sh", "shell"),
    ],
)
def test_language_of_known_files(path: str, language: str) -> None:
    assert language_of(path) == language


@pytest.mark.parametrize(
    "path",
    [
        "LICENSE",
        "data.xyz",
        "image.png",
        "archive.tar.gz",
        ".gitignore",
        "noext",
        "dockerfile.txt.bak",
        "go.sum",
    ],
)
def test_language_of_unknown_file_is_none(path: str) -> None:
    assert language_of(path) is None
