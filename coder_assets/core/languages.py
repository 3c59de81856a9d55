"""File language by name, and the well-known paths that are vendored, generated or lockfiles."""

from __future__ import annotations

from pathlib import PurePosixPath

LANGUAGE_BY_EXTENSION: dict[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".go": "go",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".md": "markdown",
    ".markdown": "markdown",
    ".proto": "protobuf",
    ".sh": "shell",
    ".bash": "shell",
    ".json": "json",
    ".toml": "toml",
    ".ini": "ini",
    ".cfg": "ini",
    ".js": "javascript",
    ".mjs": "javascript",
    ".ts": "typescript",
    ".tsx": "typescript",
    ".rs": "rust",
    ".sql": "sql",
    ".tf": "terraform",
    ".hcl": "hcl",
    ".lua": "lua",
    ".nix": "nix",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".hpp": "cpp",
    ".java": "java",
    ".rb": "ruby",
    ".html": "html",
    ".css": "css",
    ".txt": "text",
    ".rst": "restructuredtext",
}

LANGUAGE_BY_NAME: dict[str, str] = {
    "Dockerfile": "dockerfile",
    "Containerfile": "dockerfile",
    "Makefile": "make",
    "Justfile": "just",
    "Jenkinsfile": "groovy",
    "go.mod": "go-mod",
}

VENDORED_DIRS = ("vendor", "node_modules", "third_party", "third-party", "bower_components")

GENERATED_GLOBS = (
    "*.pb.go",
    "*.pb.gw.go",
    "*_grpc.pb.go",
    "zz_generated*.go",
    "*_pb2.py",
    "*_pb2.pyi",
    "*_pb2_grpc.py",
    "*.min.js",
    "*.min.css",
    "*.map",
)

LOCKFILE_NAMES = frozenset(
    {
        "go.sum",
        "package-lock.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "poetry.lock",
        "uv.lock",
        "Pipfile.lock",
        "Cargo.lock",
        "Gemfile.lock",
        "composer.lock",
        "flake.lock",
        ".terraform.lock.hcl",
    }
)


def language_of(path: str) -> str | None:
    """The language of repo-relative `path`, or None when it is not a language we know."""
    pure = PurePosixPath(path)
    if pure.name in LANGUAGE_BY_NAME:
        return LANGUAGE_BY_NAME[pure.name]
    if pure.name.startswith("Dockerfile."):
        return "dockerfile"
    return LANGUAGE_BY_EXTENSION.get(pure.suffix.lower())
