"""Tests for the demo's sample git repositories (coder_assets.demo.sample_repos)."""

from __future__ import annotations

import ast
import hashlib
import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from coder_assets.demo import sample_repos
from coder_assets.demo.sample_repos import (
    SAMPLE_REPO_FILES,
    SAMPLE_REPO_NAMES,
    SampleRepoError,
    commit_files,
    create_sample_repos,
    sample_corpus,
)

MADR_HEADINGS = (
    "## Context and Problem Statement",
    "## Considered Options",
    "## Decision Outcome",
    "### Consequences",
    "## Pros and Cons of the Options",
)


# Every commit and tree SHA of the sample repos, oldest first, as `git log --reverse
# --format='%H %T'` prints them. The README's figures (and every cached demo run) depend on these,
# so a changed byte, file mode, date, author, message or step order anywhere in the sample repos
# must show up here. Change them only on purpose, together with the README.
PINNED_HISTORY: dict[str, tuple[str, ...]] = {
    "order-events-handler": (
        "be908078e2de105d2a204a9f70dfa842c440863b f92c9650ad0b9cddc46b54938c87d2c72b1bc0d7",
        "d93c5363ca5b0e61559c9e7ad9c743a17ba66f65 47d1f5b06bb01912836ff491401be3820c93f14e",
        "e5d05eb472a820b165e65aed8a238cbf631fe6a0 2c82ff328c0f9f73f34b44e5e3f2bbdb67f4cf31",
        "45186a626d86535caae800fe5129925cb45564ff 5534279c03580c76aeb90b4a5826d641714e25ee",
        "55dc7a622f612785181572f1604774c83e99a685 b844d98cfb534677602cd612495c8bafec9fdffb",
        "2f06a472ffe7c0e5e85b23f5464d2d85d8e17ab7 2c0c30490cba739bbe210537b1c86377d9bbeb29",
        "a3f1b076c8e9d222b9325ccff9755c86fc58443e f62a9099407b2133b1f78f5a42821ca57e114993",
        "3efc1a328abef2d63c81954cebc44fbe79584d41 d0a7e9e6ef7504cdfb288056d81edd5c0c253b9a",
    ),
    "kfp-training-pipelines": (
        "bf009f347930ae10e4857a5aafba327ad2c0c74e 37aaa24466ee69d9905f8058c9665692424da803",
        "09586843949bb3bed5e93dd20e13bd7a6cda2d99 43a0f61e82ba33fefb1274c95df2bcff9ce20adf",
        "95905cfc0779ef98d6122c438547896152a3ce59 0ee291e215fc5c463f88426f0f1962bacbb64baa",
        "f77dea265744486a39c3bfbf7736c33a401d306e 95e6474bcf547572ec3a2394d9cd98ac3cbc5fdb",
        "a7e7fe7382518f2386d63bac75b3b18707aaf427 f3035a9f4ca9d88c7335f12514dc231e53dfbd9c",
        "ffa78e06eb5255f21208f2b88c352b70585047ca f6d05ec5029135d8196b17148801954b39d0489b",
        "aa2eec0c976f4575f19b720ec6181e73d7ed9618 a4a2abcb5551e098910310a01a54f7fd97cdf245",
        "12bf187df83e1d3edec562277a2e5e0162b52a0f 7778902c6b24b06776b2823187377224f6049ac5",
    ),
    "homelab-flux": (
        "74414a8474964f56e74d221daae534eb42623713 f0ad71d066f7ce3600c223d9a3eb8196998f7415",
        "74abeea7e1b5c2278dbc9b734abc053cb5f50a70 e29d502a82a90110788bda16101f6beb79daac55",
        "1e3aec696c17ffa00bb1a6e599692bb12a0ac931 e3eb6ba7cc44d0fd5f6dac408ef05dd2d2a85b5f",
        "9834d37297b011f407ef07141487de136a3433c2 e89eb8310cfef84baca08f5f059c7ce0db999ae4",
        "12efcd1ffd37376f72982006aab69c384babf9db 29457f14c4d30235e4e2546436d7f19613ce4f5f",
        "92d288ff31eaba7e88f46ca12c88c72e502b7250 d7ab528e28127eca1d4eb71a96971ce6c753d445",
        "0b024122230ceca71e975860819e38477d94982e c8a8bb61c93f12c852f49715637c58bba0ca19a9",
        "20a0da0217f7f66d042b000fb16d39d5bac6c2c2 652ee75f5911c8e8e45add6d1b62cf5f6cc2e1ea",
        "32022181fba7846e7d79ea3da3289efb3fcb73a6 8e531b4291507688c41fe7515fb1b84df5d3053b",
    ),
    "homelab-adrs": (
        "f3769692e96713e001046a29ff5089c6ac681b14 387a38c7f61d46befc71b4440bfb77fefdcf9b2d",
        "8775c990073baf619dddfd7675c05997b5fd0705 ff8d879a94aee5adc97f17221cbd5e493fae5339",
        "6752fdf504ad61618199b87f26c2aa01bf771128 557ea9e829a3b79d2c886ace6a04017e7092d0b7",
        "2342d81263209c8dcb4216d0d6f8f16707e4a217 4813e8d63ca6c4554fef1cd6861df0bc88cf0c82",
        "f6d19d578a1584f7677917b3b0b13558e3d698a5 4b02ab1e6e5b9d13e8bb84f222edeee8e3ed7a1d",
        "b246fdf2ec80377d1527264412ce093b2c956d5b def32f0f2ad063ad463c72f3f4e6ed5c7d568c05",
        "7179b858105e2b0945398fd45b01d0f06fe53ec2 b4cd661cf47958e14085966aa7f00ad9795732c2",
        "c3ab002ea850779687090fadfc0d94b528845569 95467828816a8387e9cb0529ed52be525e6855c6",
        "710af1f641c55a7d2afe59ba3ee3289b79d36134 8c3bce08a822fa001d94ee8f035982e6f13e57ba",
    ),
}

# The dev model's tokenizer is trained on sample_corpus(): the count and the SHA-256 of the texts,
# each followed by a NUL byte, in their order.
PINNED_CORPUS = (75, "8600f1966f3ff4a2e2ebb8b88db9ba72c7168c185f283cc2632f2efb8af471f6")


def git(repo: Path, *args: str) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    result = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return result.stdout.strip()


def heads(paths: list[Path]) -> dict[str, str]:
    return {path.name: git(path, "rev-parse", "HEAD") for path in paths}


def tracked(repo: Path) -> list[str]:
    return git(repo, "ls-files").splitlines()


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sample repos, built once for the read-only tests of this module."""
    paths = create_sample_repos(tmp_path_factory.mktemp("sample-repos"))
    return {path.name: path for path in paths}


def test_creates_the_four_named_repos_in_order(tmp_path: Path) -> None:
    paths = create_sample_repos(tmp_path)
    assert SAMPLE_REPO_NAMES == (
        "order-events-handler",
        "kfp-training-pipelines",
        "homelab-flux",
        "homelab-adrs",
    )
    assert paths == [tmp_path / name for name in SAMPLE_REPO_NAMES]
    for path in paths:
        assert (path / ".git").is_dir()
        assert git(path, "rev-parse", "--is-bare-repository") == "false"
        assert git(path, "symbolic-ref", "--short", "HEAD") == "main"
        assert git(path, "status", "--porcelain") == ""
    # The temporary build directories were all moved into place.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SAMPLE_REPO_NAMES)


@pytest.mark.parametrize("name", SAMPLE_REPO_NAMES)
def test_history_has_several_commits_by_one_author_with_increasing_dates(
    repos: dict[str, Path], name: str
) -> None:
    repo = repos[name]
    assert int(git(repo, "rev-list", "--count", "HEAD")) >= 4
    assert git(repo, "rev-list", "--merges", "HEAD") == ""
    identities = set(git(repo, "log", "--format=%an <%ae>|%cn <%ce>").splitlines())
    assert len(identities) == 1
    author, committer = identities.pop().split("|")
    assert author == committer
    author_dates = [int(d) for d in git(repo, "log", "--reverse", "--format=%at").splitlines()]
    committer_dates = [int(d) for d in git(repo, "log", "--reverse", "--format=%ct").splitlines()]
    assert author_dates == committer_dates
    assert all(a < b for a, b in zip(author_dates, author_dates[1:], strict=False))


@pytest.mark.parametrize("name", SAMPLE_REPO_NAMES)
def test_history_has_wip_bump_and_single_file_edit_commits(
    repos: dict[str, Path], name: str
) -> None:
    repo = repos[name]
    subjects = git(repo, "log", "--format=%s").splitlines()
    assert "wip" in subjects
    assert any(re.match(r"Bump \S+.* to v?\d+\.\d+\.\d+$", s) for s in subjects), subjects
    single_file_edits = 0
    for sha in git(repo, "rev-list", "--no-merges", "HEAD^").splitlines() + [
        git(repo, "rev-parse", "HEAD")
    ]:
        changes = git(repo, "show", "--format=", "--name-status", sha).splitlines()
        if len(changes) == 1 and changes[0].startswith("M\t"):
            single_file_edits += 1
    assert single_file_edits >= 2


def test_order_events_handler_is_a_go_nats_service(repos: dict[str, Path]) -> None:
    repo = repos["order-events-handler"]
    files = tracked(repo)
    assert {"go.mod", "go.sum", "main.go", "Dockerfile", "README.md", ".gitattributes"} <= set(
        files
    )
    assert any(f.endswith(".proto") for f in files)
    main = (repo / "main.go").read_text()
    assert "NATS_URL" in main and "syscall.SIGTERM" in main and "Drain()" in main
    assert (repo / "go.mod").read_text().startswith("module ")
    handler = (repo / "internal/handler/handler.go").read_text()
    for signature in (r"func Validate\(", r"func \(h \*Handler\) Handle\(", r"type Handler "):
        assert re.search(r"^// \w+ .*\n(//.*\n)*" + signature, handler, re.MULTILINE), signature
    assert "\n\t" in handler, "Go sources are indented with tabs"
    assert "tests := []struct" in (repo / "internal/handler/handler_test.go").read_text()
    generated = (repo / "proto/orders/v1/orders.pb.go").read_text()
    assert generated.startswith("// Code generated by protoc-gen-go. DO NOT EDIT.\n")
    assert "*.pb.go linguist-generated=true" in (repo / ".gitattributes").read_text()


def test_kfp_training_pipelines_is_a_documented_python_package(repos: dict[str, Path]) -> None:
    repo = repos["kfp-training-pipelines"]
    package = repo / "src/kfp_training_pipelines"
    assert (repo / "pyproject.toml").is_file() and (repo / "tests/test_components.py").is_file()
    assert ast.get_docstring(ast.parse((package / "__init__.py").read_text()))

    decorators: set[str] = set()
    documented: dict[type, int] = {ast.FunctionDef: 0, ast.ClassDef: 0}
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and ast.get_docstring(node):
                documented[type(node)] += 1
            if isinstance(node, ast.FunctionDef):
                decorators.update(ast.unparse(d).split("(")[0] for d in node.decorator_list)
    assert {"dsl.component", "dsl.pipeline"} <= decorators
    assert documented[ast.FunctionDef] >= 6 and documented[ast.ClassDef] >= 2

    png = (repo / "docs/diagram.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and b"\x00" in png


def test_homelab_flux_holds_flux_helm_and_argo_manifests(repos: dict[str, Path]) -> None:
    repo = repos["homelab-flux"]
    docs_by_file = {
        path: [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        for path in repo.rglob("*.yaml")
        if ".git" not in path.parts
    }
    docs = [doc for file_docs in docs_by_file.values() for doc in file_docs]
    kinds = {doc["kind"] for doc in docs}
    assert {"Namespace", "HelmRepository", "HelmRelease", "Kustomization"} <= kinds
    assert any(len(file_docs) > 1 for file_docs in docs_by_file.values())
    assert (repo / "clusters/homelab/flux-system/kustomization.yaml").is_file()
    assert (repo / "README.md").is_file()

    releases = [doc for doc in docs if doc["kind"] == "HelmRelease"]
    assert all(
        r["spec"]["chart"]["spec"]["chart"] and r["spec"]["chart"]["spec"]["version"]
        for r in releases
    )
    assert any(r["spec"].get("values") for r in releases)

    app_kustomizations = [
        doc
        for path, file_docs in docs_by_file.items()
        if path.relative_to(repo).parts[0] == "apps"
        for doc in file_docs
        if doc["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1"
    ]
    assert app_kustomizations
    assert all({"path", "interval", "prune"} <= set(k["spec"]) for k in app_kustomizations)

    templates = [doc for doc in docs if doc["kind"] == "WorkflowTemplate"]
    entrypoints = {t["spec"]["entrypoint"] for t in templates}
    assert entrypoints <= {tpl["name"] for t in templates for tpl in t["spec"]["templates"]}
    assert entrypoints


def test_homelab_adrs_are_madr_records(repos: dict[str, Path]) -> None:
    decisions = repos["homelab-adrs"] / "docs/decisions"
    records = sorted(decisions.glob("[0-9][0-9][0-9][0-9]-*.md"))
    assert records[0].name == "0000-use-markdown-architectural-decision-records.md"
    assert len(records) >= 5
    for record in records:
        text = record.read_text()
        assert text.startswith("---\nstatus: "), record.name
        assert re.search(r"^# \S", text, re.MULTILINE), record.name
        for heading in MADR_HEADINGS:
            assert f"\n{heading}\n" in text, (record.name, heading)
        assert re.search(r'^Chosen option: ".+", because ', text, re.MULTILINE), record.name
        assert "* Good, because" in text and "* Bad, because" in text, record.name


@pytest.mark.parametrize("name", SAMPLE_REPO_NAMES)
def test_every_yaml_and_python_file_parses(repos: dict[str, Path], name: str) -> None:
    repo = repos[name]
    for relpath in tracked(repo):
        path = repo / relpath
        if path.suffix in {".yaml", ".yml"}:
            list(yaml.safe_load_all(path.read_text()))
        elif path.suffix == ".py":
            ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("name", SAMPLE_REPO_NAMES)
def test_every_commit_and_tree_sha_is_the_pinned_one(repos: dict[str, Path], name: str) -> None:
    history = git(repos[name], "log", "--reverse", "--format=%H %T").splitlines()
    subjects = git(repos[name], "log", "--reverse", "--format=%h %s")
    assert tuple(history) == PINNED_HISTORY[name], f"history of {name} changed:\n{subjects}"


def test_the_pinned_shas_cover_every_sample_repo() -> None:
    assert tuple(PINNED_HISTORY) == SAMPLE_REPO_NAMES


def test_sample_corpus_is_the_pinned_one() -> None:
    texts = sample_corpus()
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    assert (len(texts), digest.hexdigest()) == PINNED_CORPUS


def test_same_call_gives_identical_commit_shas(tmp_path: Path) -> None:
    first = create_sample_repos(tmp_path / "a")
    second = create_sample_repos(tmp_path / "b")
    assert heads(first) == heads(second)
    for one, two in zip(first, second, strict=True):
        assert git(one, "rev-list", "HEAD") == git(two, "rev-list", "HEAD")


def test_second_call_leaves_existing_repos_untouched(tmp_path: Path) -> None:
    paths = create_sample_repos(tmp_path)
    before = heads(paths)
    assert create_sample_repos(tmp_path) == paths
    assert heads(paths) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SAMPLE_REPO_NAMES)


def test_commit_files_writes_and_deletes_files_in_a_new_commit(tmp_path: Path) -> None:
    repo = create_sample_repos(tmp_path)[0]
    parent = git(repo, "rev-parse", "HEAD")
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    sha = commit_files(
        repo,
        {
            "internal/handler/limits.go": "package handler\n\nconst maxItems = 100\n",
            "Makefile": None,
        },
        "Cap the number of line items per order",
        when=when,
    )

    assert git(repo, "rev-parse", "HEAD") == sha != parent
    assert git(repo, "rev-parse", f"{sha}^") == parent
    files = tracked(repo)
    assert "internal/handler/limits.go" in files and "Makefile" not in files
    assert not (repo / "Makefile").exists()
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "log", "-1", "--format=%s|%an|%at|%ct") == (
        f"Cap the number of line items per order|Homelab Operator|{int(when.timestamp())}|"
        f"{int(when.timestamp())}"
    )


def test_commit_files_defaults_to_now_and_accepts_bytes(tmp_path: Path) -> None:
    repo = create_sample_repos(tmp_path)[1]
    before = datetime.now(UTC).timestamp()
    sha = commit_files(repo, {"docs/diagram.png": b"\x89PNG\r\n\x1a\n\x00\x00"}, "Shrink diagram")
    assert git(repo, "rev-parse", "HEAD") == sha
    assert int(git(repo, "log", "-1", "--format=%ct")) >= int(before)
    assert (repo / "docs/diagram.png").read_bytes() == b"\x89PNG\r\n\x1a\n\x00\x00"


def test_commit_files_rejects_paths_outside_the_working_tree(tmp_path: Path) -> None:
    repo = create_sample_repos(tmp_path)[2]
    head = git(repo, "rev-parse", "HEAD")
    for bad in ("../escape.txt", "/etc/passwd", ".git/config"):
        with pytest.raises(SampleRepoError, match="refusing path"):
            commit_files(repo, {"notes.md": "fine\n", bad: "x"}, "Escape")
    assert git(repo, "rev-parse", "HEAD") == head
    assert not (tmp_path / "escape.txt").exists()
    # Paths are all checked before the first write, so the good entry was not written either.
    assert not (repo / "notes.md").exists()
    assert git(repo, "status", "--porcelain") == ""


def test_git_failure_raises_sample_repo_error_naming_the_repo(tmp_path: Path) -> None:
    repo = create_sample_repos(tmp_path)[3]
    unchanged = (repo / "README.md").read_text()
    with pytest.raises(
        SampleRepoError, match=r"git commit failed in sample repo 'homelab-adrs'.*nothing to commit"
    ):
        commit_files(repo, {"README.md": unchanged}, "No-op")
    with pytest.raises(SampleRepoError, match="no such file"):
        commit_files(repo, {"does/not/exist.md": None}, "Delete nothing")


def test_refuses_to_overwrite_a_directory_that_is_not_a_repo(tmp_path: Path) -> None:
    (tmp_path / "homelab-flux").mkdir()
    (tmp_path / "homelab-flux" / "notes.txt").write_text("keep me\n")
    with pytest.raises(SampleRepoError, match="homelab-flux"):
        create_sample_repos(tmp_path)
    assert (tmp_path / "homelab-flux" / "notes.txt").read_text() == "keep me\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------------------------
# The folders the sample repos are built from (coder_assets/demo/sample_repo_files/)
# --------------------------------------------------------------------------------------------

STEP_HEADER = 'author = "Dana Example <dana@homelab.example>"\n'


def write_step(
    folder: Path, step: str, files: dict[str, bytes], manifest: str, *, day: int = 1
) -> None:
    """Write one commit of a sample repo folder: <step>.toml and the files in <step>/."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{step}.toml").write_text(
        f"date = 2024-05-{day:02d}T10:00:00+02:00\n{STEP_HEADER}{manifest}"
    )
    for relpath, data in files.items():
        path = folder / step / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def build_folder(folder: Path, out: Path) -> Path:
    """Build the sample repo `folder` holds at out/<folder name>, as create_sample_repos does."""
    (repo,) = sample_repos._create([sample_repos._load_repo(folder, folder.name)], out)
    return repo


def small_repo(folder: Path) -> None:
    """Two commits with the awkward kinds of file: executable, empty, CRLF, no newline at the
    end, not UTF-8, dotfiles; the second deletes one and rewrites the executable."""
    write_step(
        folder,
        "01-start",
        {
            "run.sh": b"#!/bin/sh\necho run\n",
            "empty.txt": b"",
            "windows.bat": b"@echo off\r\necho hi\r\n",
            "no-newline.txt": b"last line",
            "latin1.txt": b"caf\xe9\n",
            ".gitignore": b"/bin/\n",
            ".config/settings.yaml": b"a: 1\n",
            "go.mod": b"module example\n\nrequire (\n\texample.com/x v1.2.3\n)\n",
        },
        'message = "Start"\nexecutable = ["run.sh"]\n\n[generated]\n"go.sum" = "go-sum"\n',
    )
    write_step(
        folder,
        "02-tidy",
        {"run.sh": b"#!/bin/sh\necho run twice\n"},
        "message = '''\nTidy up\n\nThe notes moved elsewhere.'''\ndelete = [\"empty.txt\"]\n",
        day=2,
    )


def test_a_sample_repo_folder_becomes_commits_byte_for_byte_with_modes(tmp_path: Path) -> None:
    small_repo(tmp_path / "src" / "demo")
    repo = build_folder(tmp_path / "src" / "demo", tmp_path / "out")

    first_commit = git(repo, "log", "-1", "--format=%an <%ae>|%ad|%cd|%s", "--date=iso", "HEAD^")
    assert first_commit == (
        "Dana Example <dana@homelab.example>|2024-05-01 10:00:00 +0200|"
        "2024-05-01 10:00:00 +0200|Start"
    )
    assert git(repo, "log", "-1", "--format=%B") == "Tidy up\n\nThe notes moved elsewhere."
    first = {
        line.split("\t")[1]: line.split()[0]
        for line in git(repo, "ls-tree", "-r", "HEAD^").splitlines()
    }
    assert first == {
        ".config/settings.yaml": "100644",
        ".gitignore": "100644",
        "empty.txt": "100644",
        "go.mod": "100644",
        "go.sum": "100644",
        "latin1.txt": "100644",
        "no-newline.txt": "100644",
        "run.sh": "100755",
        "windows.bat": "100644",
    }
    # The executable bit outlives the rewrite of the second commit; the deletion happened.
    assert git(repo, "ls-tree", "HEAD", "run.sh").split()[0] == "100755"
    assert "empty.txt" not in tracked(repo)
    assert git(repo, "status", "--porcelain") == ""
    for relpath, data in {
        "windows.bat": b"@echo off\r\necho hi\r\n",
        "no-newline.txt": b"last line",
        "latin1.txt": b"caf\xe9\n",
        "run.sh": b"#!/bin/sh\necho run twice\n",
    }.items():
        blob = subprocess.run(
            ["git", "cat-file", "blob", f"HEAD:{relpath}"], cwd=repo, capture_output=True
        ).stdout
        assert blob == data, relpath
    assert git(repo, "cat-file", "blob", "HEAD^:empty.txt") == ""
    go_sum = git(repo, "cat-file", "blob", "HEAD:go.sum").splitlines()
    assert [line.split(" h1:")[0] for line in go_sum] == [
        "example.com/x v1.2.3",
        "example.com/x v1.2.3/go.mod",
    ]


def test_modes_on_disk_and_tool_leftovers_do_not_change_the_commits(tmp_path: Path) -> None:
    small_repo(tmp_path / "clean" / "demo")
    small_repo(tmp_path / "used" / "demo")
    used = tmp_path / "used" / "demo"
    (used / "01-start" / "no-newline.txt").chmod(0o755)
    (used / "01-start" / "run.sh").chmod(0o644)
    (used / "01-start" / "src" / "__pycache__").mkdir(parents=True)
    (used / "01-start" / "src" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (used / "02-tidy" / ".ruff_cache").mkdir()
    (used / "02-tidy" / ".ruff_cache" / "CACHEDIR.TAG").write_text("Signature: 8a477f59\n")
    (used / "02-tidy" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (used / "__pycache__").mkdir()

    clean = build_folder(tmp_path / "clean" / "demo", tmp_path / "out-clean")
    built = build_folder(used, tmp_path / "out-used")

    assert git(built, "rev-list", "HEAD") == git(clean, "rev-list", "HEAD")


def test_sample_repos_are_built_from_the_package_folders() -> None:
    """Every sample repo has a folder, and nothing else in the folders is read."""
    assert sorted(p.name for p in SAMPLE_REPO_FILES.iterdir() if p.is_dir()) == sorted(
        SAMPLE_REPO_NAMES
    )


@pytest.mark.parametrize(
    ("plant", "message"),
    [
        (lambda f: (f / "02-tidy.toml").unlink(), r"missing \['02-tidy.toml'\]"),
        (lambda f: (f / "02-tidy.toml").rename(f / "03-tidy.toml"), "misnumbered"),
        (lambda f: (f / "notes.txt").write_text("x"), "unexpected .*notes.txt"),
        (lambda f: (f / "01-start" / "link").symlink_to("run.sh"), "symbolic link"),
        (lambda f: append(f / "02-tidy.toml", "tags = []\n"), "unknown key.*tags"),
        (lambda f: replace(f / "02-tidy.toml", "+02:00", ""), "`date` must be"),
        (lambda f: replace(f / "02-tidy.toml", " <dana@", " dana@"), "`author` must"),
        (lambda f: replace(f / "02-tidy.toml", "'''\nTidy", "'''\n\nTidy\n"), None),
        (lambda f: replace(f / "02-tidy.toml", '"empty.txt"', '"gone.txt"'), "'gone.txt'.*no such"),
        (lambda f: replace(f / "01-start.toml", '"go-sum"', '"go-mod"'), "unknown generator"),
        (lambda f: replace(f / "01-start.toml", "run.sh", "../run.sh"), "refusing path"),
        (lambda f: replace(f / "02-tidy.toml", "message", "messages"), "unknown key"),
        (lambda f: append(f / "02-tidy.toml", "= broken"), "cannot read the commit"),
    ],
)
def test_a_bad_sample_repo_folder_is_refused_naming_what_to_fix(
    tmp_path: Path, plant, message: str | None
) -> None:
    folder = tmp_path / "demo"
    small_repo(folder)
    plant(folder)
    if message is None:  # a harmless variation that must still load
        build_folder(folder, tmp_path / "out")
        return
    with pytest.raises(SampleRepoError, match=message):
        build_folder(folder, tmp_path / "out")
    assert not (tmp_path / "out" / "demo").exists()


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, (path, old)
    path.write_text(text.replace(old, new))


def test_every_sample_repo_file_is_package_data() -> None:
    """pyproject.toml's package-data globs, expanded as setuptools does, find every file of the
    sample repos' folders (dotfiles included), so an installed package builds the same SHAs."""
    import glob
    import tomllib

    root = Path(__file__).resolve().parents[1]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["coder_assets"]
    shipped = {
        Path(path)
        for pattern in patterns
        for path in glob.glob(str(root / "coder_assets" / pattern), recursive=True)
        if Path(path).is_file()
    }
    files = {path for path in SAMPLE_REPO_FILES.rglob("*") if path.is_file()}
    files = {path for path in files if not any(sample_repos._ignored(p) for p in path.parents)}
    assert any(path.name.startswith(".") for path in files)
    assert sorted(files - shipped) == []
