"""The code-location image's locked dependencies, generated from pyproject.toml.

`deploy/constraints.txt` pins every package the image installs: pyproject's runtime
dependencies and everything they require, as resolved in this checkout's environment, for the
image's platform (Python 3.11 on Linux). Its header records the sha256 of the dependency list it
was generated from, so a change to pyproject.toml without regenerating is caught by a test, and
the Dockerfile installs the project itself (`.`) under these constraints: the image's dependency
list is pyproject's, never a second copy.

    python -m coder_assets.core.constraints write deploy/constraints.txt
    python -m coder_assets.core.constraints check deploy/constraints.txt
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from coder_assets.core.errors import CoderAssetsError
from coder_assets.core.files import write_text_atomic

# The image's platform (Dockerfile: python:3.11-slim on the cluster's Linux nodes).
IMAGE_ENVIRONMENT = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
HEADER_PREFIX = "# pyproject-dependencies-sha256: "
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


class ConstraintsError(CoderAssetsError):
    """The constraints file and pyproject.toml disagree, or a dependency is not installed."""


@dataclass(frozen=True)
class Constraints:
    """A parsed constraints file: the dependency-list hash it records and its pins."""

    dependencies_sha256: str
    pins: dict[str, str]


def project_dependencies(pyproject_text: str) -> list[str]:
    """`[project].dependencies` of pyproject.toml text, as written."""
    data = tomllib.loads(pyproject_text)
    try:
        deps = data["project"]["dependencies"]
    except KeyError:
        raise ConstraintsError("pyproject.toml has no [project].dependencies") from None
    return list(deps)


def dependencies_sha256(dependencies: list[str]) -> str:
    """sha256 of the dependency list, independent of its order and spacing."""
    canonical = sorted(str(Requirement(dep)) for dep in dependencies)
    return hashlib.sha256(json.dumps(canonical).encode("utf-8")).hexdigest()


def _applies(requirement: Requirement, extra: str = "") -> bool:
    if requirement.marker is None:
        return True
    environment = {**default_environment(), **IMAGE_ENVIRONMENT, "extra": extra}
    return requirement.marker.evaluate(environment)


def resolve_installed(dependencies: list[str]) -> dict[str, str]:
    """{canonical name: installed version} of `dependencies` and all they require on the image's
    platform, read from the installed distributions' metadata."""
    pins: dict[str, str] = {}
    pending = [Requirement(dep) for dep in dependencies if _applies(Requirement(dep))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            raise ConstraintsError(
                f"{requirement.name} (required as {requirement}) is not installed; install the "
                "project (`pip install -e .`) before generating the constraints"
            ) from None
        pins[name] = dist.version
        for raw in dist.requires or []:
            sub = Requirement(raw)
            if (
                sub.marker is None
                or _applies(sub)
                or any(_applies(sub, extra) for extra in requirement.extras)
            ):
                sub_plain = Requirement(str(sub).split(";")[0].strip())
                pending.append(sub_plain)
    return pins


def render(dependencies: list[str], pins: dict[str, str]) -> str:
    """The constraints file's text."""
    lines = [
        "# The code-location image's locked dependencies (Python 3.11, Linux). Generated from",
        "# pyproject.toml by `python -m coder_assets.core.constraints write "
        "deploy/constraints.txt`;",
        "# do not edit: change pyproject.toml and generate it again.",
        f"{HEADER_PREFIX}{dependencies_sha256(dependencies)}",
        *(f"{name}=={pins[name]}" for name in sorted(pins)),
    ]
    return "\n".join(lines) + "\n"


def parse(text: str, where: str = "constraints file") -> Constraints:
    """Parse a constraints file written by `render`."""
    digest = ""
    pins: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith(HEADER_PREFIX):
            digest = line[len(HEADER_PREFIX) :].strip()
            continue
        if not line.strip() or line.startswith("#"):
            continue
        match = _PIN.match(line.strip())
        if not match:
            raise ConstraintsError(
                f"{where} line {number}: {line!r} is not `name==version`; generate the file again"
            )
        pins[canonicalize_name(match.group(1))] = match.group(2)
    if not digest:
        raise ConstraintsError(
            f"{where} has no `{HEADER_PREFIX.strip()}` line; generate it again with "
            "`python -m coder_assets.core.constraints write deploy/constraints.txt`"
        )
    return Constraints(dependencies_sha256=digest, pins=pins)


def drift(pyproject_text: str, constraints_text: str) -> list[str]:
    """Every way the constraints file no longer follows pyproject.toml (empty when in step)."""
    dependencies = project_dependencies(pyproject_text)
    constraints = parse(constraints_text)
    problems = []
    if constraints.dependencies_sha256 != dependencies_sha256(dependencies):
        problems.append(
            "pyproject.toml's dependencies changed since deploy/constraints.txt was generated"
        )
    for raw in dependencies:
        requirement = Requirement(raw)
        if not _applies(requirement):
            continue
        name = canonicalize_name(requirement.name)
        pinned = constraints.pins.get(name)
        if pinned is None:
            problems.append(f"{requirement.name} is a dependency but has no pin")
        elif not requirement.specifier.contains(Version(pinned), prereleases=True):
            problems.append(f"{requirement.name}=={pinned} does not satisfy {requirement}")
    return problems


def main(argv: list[str]) -> int:
    usage = "usage: python -m coder_assets.core.constraints write|check <constraints file>"
    if len(argv) != 2 or argv[0] not in ("write", "check"):
        sys.stderr.write(usage + "\n")
        return 2
    command, target = argv[0], Path(argv[1])
    pyproject = Path("pyproject.toml")
    if not pyproject.is_file():
        sys.stderr.write("run it from the repository root (pyproject.toml not found)\n")
        return 2
    pyproject_text = pyproject.read_text("utf-8")
    if command == "write":
        dependencies = project_dependencies(pyproject_text)
        write_text_atomic(target, render(dependencies, resolve_installed(dependencies)))
        return 0
    problems = drift(pyproject_text, target.read_text("utf-8"))
    for problem in problems:
        sys.stderr.write(
            f"{target}: {problem}; run `python -m coder_assets.core.constraints write {target}`\n"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
