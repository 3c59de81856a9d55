"""The layout of coder_assets/core: one package per pipeline stage, named like the asset groups;
no stage imports a later stage, no top-level core module imports a stage; the tests mirror the
packages, and the map in definitions.py's docstring names every asset with its group."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest

import coder_assets.definitions
from coder_assets import constants

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "coder_assets" / "core"
# Pipeline order: a stage may import only the stages before it (and core's top-level modules).
STAGES = ("sources", "samples", "dataset", "training", "evaluation", "deployment")


def _imported(node: ast.AST, package: list[str]) -> list[str]:
    """The dotted modules (and possible submodules) an import statement, or an
    `importlib.import_module("...")` / `__import__("...")` call with a literal name, brings in."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = package[: len(package) - (node.level - 1)]
            module = ".".join(base + (node.module.split(".") if node.module else []))
        else:
            module = node.module or ""
        return [module] + [f"{module}.{alias.name}" for alias in node.names]
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        first = node.args[0]
        if name in ("import_module", "__import__") and isinstance(first, ast.Constant):
            return [str(first.value)]
    return []


def _stage_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] == ["coder_assets", "core"] and len(parts) > 2 and parts[2] in STAGES:
        return parts[2]
    return None


def layering_problems(core: Path) -> list[str]:
    """One line per import in `core` (a copy of coder_assets/core) that breaks the stage order:
    a stage importing a later stage, or a top-level module importing any stage."""
    problems = []
    for path in sorted(core.rglob("*.py")):
        relative = path.relative_to(core)
        own = relative.parts[0] if len(relative.parts) > 1 else None
        package = ["coder_assets", "core", *relative.parts[:-1]]
        for node in ast.walk(ast.parse(path.read_text("utf-8"), filename=str(path))):
            for module in _imported(node, package):
                stage = _stage_of(module)
                if stage is None or stage == own:
                    continue
                if own is None or STAGES.index(stage) > STAGES.index(own):
                    where = f"the {own} stage" if own else "a top-level core module"
                    problems.append(
                        f"core/{relative.as_posix()}:{node.lineno}: {where} imports {module} "
                        f"(the {stage} stage)"
                    )
    return sorted(set(problems))


def test_no_stage_imports_a_later_stage_and_no_top_level_module_imports_a_stage():
    assert layering_problems(CORE) == []


PLANTS = {
    "a stage imports a later stage": (
        "samples/fim.py",
        "from coder_assets.core.deployment.deploy import DeployDir\n",
        "the samples stage imports coder_assets.core.deployment.deploy",
    ),
    "a stage imports a later stage's package": (
        "sources/git.py",
        "from coder_assets.core import training\n",
        "the sources stage imports coder_assets.core.training",
    ),
    "a plain import of a later stage": (
        "training/lora.py",
        "import coder_assets.core.evaluation.metrics\n",
        "the training stage imports coder_assets.core.evaluation.metrics",
    ),
    "a relative import of a later stage": (
        "dataset/dedup.py",
        "from ..evaluation import metrics\n",
        "the dataset stage imports coder_assets.core.evaluation",
    ),
    "a lazy import inside a function": (
        "evaluation/metrics.py",
        "def _late():\n    from coder_assets.core.deployment import smoke\n",
        "the evaluation stage imports coder_assets.core.deployment",
    ),
    "an import by name": (
        "samples/quality.py",
        "import importlib\n\nimportlib.import_module('coder_assets.core.dataset.dedup')\n",
        "the samples stage imports coder_assets.core.dataset.dedup",
    ),
    "a top-level module imports a stage": (
        "errors.py",
        "from coder_assets.core.sources.git import GitError\n",
        "a top-level core module imports coder_assets.core.sources.git",
    ),
}


@pytest.mark.parametrize("planted", PLANTS.values(), ids=PLANTS.keys())
def test_a_planted_import_against_the_stage_order_is_found(tmp_path, planted):
    relative, line, expected = planted
    core = tmp_path / "core"
    shutil.copytree(CORE, core, ignore=shutil.ignore_patterns("__pycache__"))
    with open(core / relative, "a", encoding="utf-8") as handle:
        handle.write("\n\n" + line)

    problems = layering_problems(core)

    assert problems, f"the import planted in core/{relative} was not found"
    assert all(problem.startswith(f"core/{relative}:") for problem in problems)
    assert any(expected in problem for problem in problems), problems


def test_an_import_of_an_earlier_stage_is_allowed(tmp_path):
    core = tmp_path / "core"
    shutil.copytree(CORE, core, ignore=shutil.ignore_patterns("__pycache__"))
    with open(core / "deployment" / "smoke.py", "a", encoding="utf-8") as handle:
        handle.write("\n\nfrom coder_assets.core.sources.git import GitError\n")
        handle.write("from ..samples import fim\nfrom coder_assets.core import errors\n")

    assert layering_problems(core) == []


def test_the_stage_packages_are_the_asset_groups_and_hold_every_core_module():
    groups = (
        constants.SOURCES_GROUP,
        constants.SAMPLES_GROUP,
        constants.DATASET_GROUP,
        constants.TRAINING_GROUP,
        constants.EVALUATION_GROUP,
        constants.DEPLOYMENT_GROUP,
    )
    packages = sorted(p.name for p in CORE.iterdir() if (p / "__init__.py").is_file())

    assert groups == STAGES
    assert packages == sorted(STAGES)
    for path in CORE.rglob("*.py"):
        relative = path.relative_to(CORE)
        assert len(relative.parts) <= 2, f"core/{relative} is nested below a stage package"


def test_every_stage_package_lists_its_modules_in_its_docstring():
    for stage in STAGES:
        package = CORE / stage
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text("utf-8"))) or ""
        listed = set(re.findall(r"^    (\w+)\s", doc, re.MULTILINE))
        modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
        assert listed == modules, f"core/{stage}/__init__.py lists {sorted(listed)}"


def test_the_core_tests_mirror_the_stage_packages():
    tests = ROOT / "coder_assets_tests" / "core"
    folders = sorted(p.name for p in tests.iterdir() if p.is_dir() and p.name != "__pycache__")

    assert folders == sorted(STAGES)
    for stage in STAGES:
        # a package: test modules of the same name in two folders stay apart under pytest
        assert (tests / stage / "__init__.py").is_file()
        assert list((tests / stage).glob("test_*.py")), f"no tests for core/{stage}/"


def test_the_map_in_definitions_names_every_asset_with_its_group():
    doc = coder_assets.definitions.__doc__ or ""
    blocks: dict[str, str] = {}
    group = None
    for line in doc.splitlines():
        first = line[4:].split(" ", 1)[0] if line.startswith("    ") else ""
        if first in STAGES:
            group = first
        elif not line.startswith("        "):
            group = None
        if group:
            blocks[group] = blocks.get(group, "") + line + "\n"
    specs = coder_assets.definitions.defs.resolve_all_asset_specs()

    assert sorted(blocks) == sorted(STAGES)
    for spec in specs:
        name = spec.key.to_user_string()
        assert re.search(rf"\b{name}\b", blocks[spec.group_name]), (
            f"{name} (group {spec.group_name}) is missing from the map in definitions.py"
        )
    for stage, block in blocks.items():
        assert (CORE / stage).is_dir() and f"{stage}/" in block
        assert (ROOT / "coder_assets_tests" / "core" / stage).is_dir()
        for module in re.findall(r"\b(\w+\.py)\b", block):
            assert (ROOT / "coder_assets" / "assets" / module).is_file() or (
                ROOT / "coder_assets_tests" / module
            ).is_file(), f"the map names {module}, which is neither an assets module nor a test"
