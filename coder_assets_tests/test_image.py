"""The code-location image (Dockerfile) installs the project from this checkout under
deploy/constraints.txt, which is generated from pyproject.toml: the image's dependency list is
pyproject's and cannot drift from it. The image itself is not built here (no Docker daemon)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from coder_assets.core.constraints import (
    ConstraintsError,
    dependencies_sha256,
    drift,
    project_dependencies,
    render,
    resolve_installed,
)

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
CONSTRAINTS = ROOT / "deploy" / "constraints.txt"
PYPROJECT = ROOT / "pyproject.toml"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_constraints_follow_pyprojects_dependencies():
    assert drift(PYPROJECT.read_text("utf-8"), CONSTRAINTS.read_text("utf-8")) == []


def test_constraints_are_what_the_generator_writes_from_this_environment():
    dependencies = project_dependencies(PYPROJECT.read_text("utf-8"))
    generated = render(dependencies, resolve_installed(dependencies))
    # The pins are this environment's; the names are the closure of pyproject's dependencies.
    assert _names(generated) == _names(CONSTRAINTS.read_text("utf-8"))


def _names(text: str) -> set[str]:
    return {line.split("==")[0] for line in text.splitlines() if "==" in line}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda deps: [*deps, "rich>=13"], "dependencies changed"),
        (
            lambda deps: [d if not d.startswith("pandas") else "pandas>=99" for d in deps],
            "does not satisfy pandas>=99",
        ),
    ],
    ids=["dependency added", "pin outside the range"],
)
def test_a_pyproject_change_without_regenerating_is_caught(change, expected):
    text = PYPROJECT.read_text("utf-8")
    dependencies = project_dependencies(text)
    changed = change(dependencies)
    listing = "\n".join(f"    {d!r}," for d in changed)
    planted = re.sub(
        r"dependencies = \[\n.*?\n\]", f"dependencies = [\n{listing}\n]", text, count=1, flags=re.S
    )
    assert project_dependencies(planted) == changed

    problems = drift(planted, CONSTRAINTS.read_text("utf-8"))

    assert any(expected in problem for problem in problems), problems


def test_a_hand_edited_constraints_file_is_refused_naming_the_line():
    text = CONSTRAINTS.read_text("utf-8") + "pandas>=2\n"
    with pytest.raises(ConstraintsError, match="'pandas>=2' is not `name==version`"):
        drift(PYPROJECT.read_text("utf-8"), text)


def test_the_dependency_hash_ignores_order_and_spacing():
    assert dependencies_sha256(["b>=1", "a >= 2"]) == dependencies_sha256(["a>=2", "b>=1"])


def test_dockerfile_installs_only_this_checkout_under_the_generated_constraints():
    instructions = _instructions(DOCKERFILE.read_text("utf-8"))

    assert instructions[0] == ("FROM", "python:3.11-slim")
    installs = [args for word, args in instructions if word == "RUN" and "pip install" in args]
    assert len(installs) == 1
    words = shlex.split(installs[0])
    packages = [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
    assert "--constraint" in words or "-c" in words
    flag = "--constraint" if "--constraint" in words else "-c"
    constraint_file = words[words.index(flag) + 1]
    assert constraint_file == "deploy/constraints.txt"
    packages.remove(constraint_file)
    # Only the project: every other package comes in as pyproject's dependency, pinned.
    assert packages == ["."]
    copied = " ".join(args for word, args in instructions if word == "COPY")
    assert "pyproject.toml" in copied and "deploy/constraints.txt" in copied


def test_dockerfile_runs_the_code_server_as_a_non_root_user_with_git_lfs_and_ssh():
    instructions = _instructions(DOCKERFILE.read_text("utf-8"))
    runs = " ".join(args for word, args in instructions if word == "RUN")
    users = [args for word, args in instructions if word == "USER"]
    command = [args for word, args in instructions if word == "CMD"]

    for package in ("git", "git-lfs", "openssh-client"):
        assert re.search(rf"apt-get install[^&]*\s{re.escape(package)}(\s|$)", runs), package
    assert users and users[-1] not in ("root", "0")
    # USER comes after every RUN: nothing later runs as root.
    last_user = max(i for i, (word, _) in enumerate(instructions) if word == "USER")
    assert all(word != "RUN" for word, _ in instructions[last_user:])
    assert command and '"dagster", "code-server", "start"' in command[-1]
    assert '"coder_assets.definitions"' in command[-1]


def test_every_pyproject_dependency_for_linux_is_pinned_exactly():
    pins = {
        line.split("==")[0]: line.split("==")[1]
        for line in CONSTRAINTS.read_text("utf-8").splitlines()
        if "==" in line and not line.startswith("#")
    }
    for raw in project_dependencies(PYPROJECT.read_text("utf-8")):
        requirement = Requirement(raw)
        if requirement.marker and "darwin" in str(requirement.marker):
            continue
        assert requirement.name.lower().replace("_", "-") in pins, raw
