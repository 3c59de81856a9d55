"""repo_snapshots materialized with real git repositories through the local-folder source."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from coder_assets.assets.snapshots import repo_snapshots
from coder_assets.constants import COMMIT_SHA_TAG
from coder_assets.core.sources.repos import partition_key_for
from coder_assets.partitions import repo_partitions
from coder_assets.resources.repos import LocalReposResource
from coder_assets.resources.storage import read_parquet
from coder_assets_tests.conftest import (
    add_gitlink,
    add_symlink,
    commit,
    git,
    init_repo,
    resources_for,
)


def _materialize(
    instance: dg.DagsterInstance,
    tmp_path: Path,
    repos_root: Path,
    name: str,
    *,
    tags: dict[str, str] | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    key = partition_key_for("homelab", name)
    if not instance.has_dynamic_partition("repos", key):
        instance.add_dynamic_partitions("repos", [key])
    source = LocalReposResource(root=str(repos_root), owner="homelab")
    return dg.materialize(
        [repo_snapshots],
        partition_key=key,
        instance=instance,
        resources=resources_for(source, tmp_path),
        tags=tags,
        raise_on_error=raise_on_error,
    )


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    materialization = result.asset_materializations_for_node("repo_snapshots")[0]
    return {key: value.value for key, value in materialization.metadata.items()}


def _frame(tmp_path: Path, name: str):
    return read_parquet(tmp_path / "storage" / "repo_snapshots" / f"homelab~{name}.parquet")


def test_snapshot_records_commit_branch_and_manifest(instance, tmp_path, repos_root):
    repo = init_repo(repos_root / "svc")
    sha = commit(repo, {"main.go": "package main\n", "README.md": "# svc\n"}, "Add service")

    result = _materialize(instance, tmp_path, repos_root, "svc")

    meta = _metadata(result)
    assert meta["commit_sha"] == sha
    assert meta["default_branch"] == "main"
    assert meta["commit_chosen_by"] == "branch head at run time"
    assert meta["files_total"] == 2 and meta["files_kept"] == 2
    assert "| go | 1 |" in meta["files_by_language"]
    frame = _frame(tmp_path, "svc")
    assert list(frame.columns) == ["path", "size", "blob_sha", "mode", "language", "skip_reason"]
    assert frame.attrs["commit_sha"] == sha
    assert frame.attrs["commit_date"].startswith("20")
    event = instance.get_latest_data_version_record(
        dg.AssetKey("repo_snapshots"), partition_key="homelab~svc"
    )
    assert event.asset_materialization.tags["dagster/data_version"] == sha


def test_snapshot_records_skip_reason_for_every_excluded_file(instance, tmp_path, repos_root):
    sub = init_repo(tmp_path / "elsewhere" / "sub")
    sub_sha = commit(sub, {"lib.go": "package lib\n"})
    repo = init_repo(repos_root / "mixed")
    add_symlink(repo, "passwd", "/etc/passwd")
    add_gitlink(repo, "third/sub", sub_sha)
    big = os.urandom(5 * 1024 * 1024)
    commit(
        repo,
        {
            "app.py": "print('hello')\n",
            "model.bin": b"version https://git-lfs.github.com/spec/v1\noid sha256:"
            + b"a" * 64
            + b"\nsize 123456789\n",
            "weights.dat": big,
            "logo.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
            "vendor/github.com/x/y.go": "package y\n",
            "node_modules/left-pad/index.js": "module.exports = 1;\n",
            "api/orders.pb.go": "// Code generated. DO NOT EDIT.\npackage api\n",
            "api/orders_pb2.py": "# generated\n",
            "web/app.min.js": "var a=1;\n",
            "go.sum": "example.com/x v1.0.0 h1:abc=\n",
            "gen/models.go": "package gen\n",
            ".gitattributes": "gen/** linguist-generated\nlegacy/** linguist-vendored\n",
            "legacy/old.py": "x = 1\n",
            "empty.txt": "",
        },
        "Add everything",
    )

    _materialize(instance, tmp_path, repos_root, "mixed")

    reasons = dict(
        zip(*[_frame(tmp_path, "mixed")[c] for c in ("path", "skip_reason")], strict=True)
    )
    assert reasons == {
        ".gitattributes": None,
        "api/orders.pb.go": "generated",
        "api/orders_pb2.py": "generated",
        "app.py": None,
        "empty.txt": "empty",
        "gen/models.go": "generated",
        "go.sum": "lockfile",
        "legacy/old.py": "vendored",
        "logo.png": "binary",
        "model.bin": "lfs_pointer",
        "node_modules/left-pad/index.js": "vendored",
        "passwd": "symlink",
        "third/sub": "submodule",
        "vendor/github.com/x/y.go": "vendored",
        "weights.dat": "too_large",
        "web/app.min.js": "generated",
    }
    frame = _frame(tmp_path, "mixed").set_index("path")
    # The symlink is recorded with the size of its own blob (the target path), never the target's.
    assert frame.loc["passwd", "size"] == len("/etc/passwd")
    assert frame.loc["weights.dat", "size"] == 5 * 1024 * 1024


def test_submodules_are_not_fetched(instance, tmp_path, repos_root):
    sub = init_repo(tmp_path / "elsewhere" / "sub")
    sub_sha = commit(sub, {"lib.go": "package lib\n"})
    repo = init_repo(repos_root / "parent")
    add_gitlink(repo, "sub", sub_sha)
    commit(repo, {".gitmodules": f'[submodule "sub"]\n\tpath = sub\n\turl = {sub}\n'})

    _materialize(instance, tmp_path, repos_root, "parent")

    mirror = tmp_path / "mirrors" / "homelab~parent.git"
    assert git(mirror, "cat-file", "-t", "HEAD") == "commit"
    with pytest.raises(subprocess.CalledProcessError):
        git(mirror, "cat-file", "-e", sub_sha)
    assert not (mirror / "modules").exists()


def test_second_snapshot_fetches_into_the_existing_mirror(instance, tmp_path, repos_root):
    repo = init_repo(repos_root / "svc")
    commit(repo, {"a.py": "a = 1\n"}, "Add a")
    first = _metadata(_materialize(instance, tmp_path, repos_root, "svc"))
    mirror = tmp_path / "mirrors" / "homelab~svc.git"
    inode = mirror.stat().st_ino
    (mirror / "coder-assets-marker").write_text("kept")

    new_sha = commit(repo, {"b.py": "b = 2\n"}, "Add b")
    second = _metadata(_materialize(instance, tmp_path, repos_root, "svc"))

    assert first["mirror"] == "cloned"
    assert second["mirror"] == "fetched"
    assert second["commit_sha"] == new_sha and second["files_total"] == 2
    assert mirror.stat().st_ino == inode
    assert (mirror / "coder-assets-marker").read_text() == "kept"


def test_pinned_sha_is_snapshotted_even_when_the_branch_moved(instance, tmp_path, repos_root):
    repo = init_repo(repos_root / "svc")
    pinned = commit(repo, {"a.py": "a = 1\n"}, "Add a")
    commit(repo, {"b.py": "b = 2\n"}, "Add b")

    meta = _metadata(
        _materialize(instance, tmp_path, repos_root, "svc", tags={COMMIT_SHA_TAG: pinned})
    )

    assert meta["commit_sha"] == pinned
    assert meta["commit_chosen_by"].startswith("pinned by")
    assert list(_frame(tmp_path, "svc")["path"]) == ["a.py"]


def test_pinned_sha_missing_from_the_branch_fails_with_a_clear_reason(
    instance, tmp_path, repos_root
):
    repo = init_repo(repos_root / "svc")
    commit(repo, {"a.py": "a = 1\n"})
    result = _materialize(
        instance,
        tmp_path,
        repos_root,
        "svc",
        tags={COMMIT_SHA_TAG: "0" * 40},
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert "0" * 40 in failure.description and "not on branch 'main'" in failure.description


@pytest.mark.parametrize(
    ("opt_out", "expected"),
    [
        ("exclude: true\n", {"a.py": "opted_out", "docs/x.md": "opted_out"}),
        ("exclude:\n  - docs/\n", {"a.py": None, "docs/x.md": "opted_out"}),
        ("", {"a.py": None, "docs/x.md": None}),
    ],
)
def test_opt_out_file_is_honoured(instance, tmp_path, repos_root, opt_out, expected):
    repo = init_repo(repos_root / "private")
    commit(repo, {"a.py": "a = 1\n", "docs/x.md": "# x\n", ".coder-assets.yaml": opt_out})

    _materialize(instance, tmp_path, repos_root, "private")

    frame = _frame(tmp_path, "private")
    reasons = dict(zip(frame["path"], frame["skip_reason"], strict=True))
    assert {path: reasons[path] for path in expected} == expected


def test_malformed_opt_out_file_fails_the_repo_and_names_the_file(instance, tmp_path, repos_root):
    repo = init_repo(repos_root / "private")
    commit(repo, {"a.py": "a = 1\n", ".coder-assets.yaml": "exclude: [unclosed\n"})

    result = _materialize(instance, tmp_path, repos_root, "private", raise_on_error=False)

    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert ".coder-assets.yaml in homelab/private is not valid YAML" in failure.description
    assert not (tmp_path / "storage" / "repo_snapshots" / "homelab~private.parquet").exists()


def test_empty_repo_is_skipped_with_a_clear_error(instance, tmp_path, repos_root):
    init_repo(repos_root / "empty")

    result = _materialize(instance, tmp_path, repos_root, "empty", raise_on_error=False)

    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert "homelab/empty is empty" in failure.description


def test_failing_repo_does_not_stop_the_others(instance, tmp_path, repos_root):
    good = init_repo(repos_root / "good")
    good_sha = commit(good, {"a.py": "a = 1\n"})
    broken = init_repo(repos_root / "broken")
    commit(broken, {"a.py": "a = 1\n"})
    # Corrupt the object store: every object the branch needs is gone.
    for obj in (broken / ".git" / "objects").glob("??"):
        for item in obj.iterdir():
            item.unlink()
    keys = [partition_key_for("homelab", n) for n in ("broken", "good")]
    instance.add_dynamic_partitions("repos", keys)
    source = LocalReposResource(root=str(repos_root), owner="homelab")
    job = dg.Definitions(
        assets=[repo_snapshots],
        jobs=[
            dg.define_asset_job(
                "snapshots_only", selection=[repo_snapshots], partitions_def=repo_partitions
            )
        ],
        resources=resources_for(source, tmp_path),
    ).resolve_job_def("snapshots_only")

    outcomes = {
        key: job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False)
        for key in keys
    }

    assert not outcomes["homelab~broken"].success
    assert outcomes["homelab~good"].success
    assert _frame(tmp_path, "good").attrs["commit_sha"] == good_sha
