"""Why a manifest entry is skipped: from its path, mode and size, and from its first bytes."""

from __future__ import annotations

import pytest

from coder_assets.core.sources.manifest import (
    BINARY_SNIFF_BYTES,
    LFS_POINTER_MAX_BYTES,
    MODE_GITLINK,
    MODE_SYMLINK,
    ManifestConfig,
    TreeEntry,
    content_skip_reason,
    path_skip_reason,
)
from coder_assets.core.sources.optout import OptOut

SHA = "0123456789abcdef0123456789abcdef01234567"
CONFIG = ManifestConfig(max_file_bytes=1000)
LFS_POINTER = (
    b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    b"size 12345\n"
)


def blob(path: str, size: int | None = 10, mode: str = "100644") -> TreeEntry:
    return TreeEntry(path=path, mode=mode, object_type="blob", sha=SHA, size=size)


def reason(
    entry: TreeEntry,
    opt_out: OptOut = OptOut(),  # noqa: B008 - frozen dataclass, never mutated
    linguist: dict[str, bool] | None = None,
    config: ManifestConfig = CONFIG,
) -> str | None:
    return path_skip_reason(entry, opt_out, linguist or {}, config)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (TreeEntry("libs/shared", MODE_GITLINK, "commit", SHA, None), "submodule"),
        (TreeEntry("libs/shared", MODE_GITLINK, "blob", SHA, None), "submodule"),
        (TreeEntry("libs/shared", "040000", "commit", SHA, None), "submodule"),
        (blob("link", mode=MODE_SYMLINK), "symlink"),
        (blob("src/app.py", mode="100755"), None),
    ],
)
def test_mode_gives_submodule_and_symlink(entry: TreeEntry, expected: str | None) -> None:
    assert reason(entry) == expected


@pytest.mark.parametrize(
    ("path", "opt_out", "exclude_globs", "expected"),
    [
        ("secrets/prod.env", OptOut(globs=("secrets/**",)), (), "opted_out"),
        ("db/dump.sql", OptOut(globs=("*.sql",)), (), "opted_out"),
        ("src/app.py", OptOut(whole_repo=True), (), "opted_out"),
        ("src/app.py", OptOut(globs=("secrets/**",)), (), None),
        ("fixtures/big.json", OptOut(), ("fixtures/",), "opted_out"),
        ("src/app.py", OptOut(), ("fixtures/",), None),
    ],
)
def test_opt_out_and_configured_globs_give_opted_out(
    path: str, opt_out: OptOut, exclude_globs: tuple[str, ...], expected: str | None
) -> None:
    config = ManifestConfig(max_file_bytes=1000, exclude_globs=exclude_globs)
    assert reason(blob(path), opt_out=opt_out, config=config) == expected


@pytest.mark.parametrize(
    ("path", "linguist", "expected"),
    [
        ("vendor/github.com/x/y.go", {}, "vendored"),
        ("pkg/vendor/lib.go", {}, "vendored"),
        ("web/node_modules/left-pad/index.js", {}, "vendored"),
        ("third_party/zlib/zlib.h", {}, "vendored"),
        ("lib/jquery.js", {"linguist-vendored": True}, "vendored"),
        ("vendor", {}, None),
        ("src/vendor.go", {}, None),
        ("vendored/lib.go", {}, None),
        ("lib/jquery.js", {"linguist-vendored": False}, None),
    ],
)
def test_vendored_by_directory_or_linguist(
    path: str, linguist: dict[str, bool], expected: str | None
) -> None:
    assert reason(blob(path), linguist=linguist) == expected


@pytest.mark.parametrize(
    ("path", "linguist", "expected"),
    [
        ("api/v1/service.pb.go", {}, "generated"),
        ("api/v1/service_grpc.pb.go", {}, "generated"),
        ("pkg/apis/zz_generated.deepcopy.go", {}, "generated"),
        ("proto/service_pb2.py", {}, "generated"),
        ("static/app.min.js", {}, "generated"),
        ("static/app.min.css", {}, "generated"),
        ("src/schema.go", {"linguist-generated": True}, "generated"),
        ("api/v1/service.go", {}, None),
        ("static/app.js", {}, None),
        ("src/schema.go", {"linguist-generated": False}, None),
    ],
)
def test_generated_by_name_or_linguist(
    path: str, linguist: dict[str, bool], expected: str | None
) -> None:
    assert reason(blob(path), linguist=linguist) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("go.sum", "lockfile"),
        ("tools/go.sum", "lockfile"),
        ("package-lock.json", "lockfile"),
        ("web/yarn.lock", "lockfile"),
        ("uv.lock", "lockfile"),
        ("Cargo.lock", "lockfile"),
        ("go.mod", None),
        ("package.json", None),
    ],
)
def test_lockfiles_by_name(path: str, expected: str | None) -> None:
    assert reason(blob(path)) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (1001, "too_large"),
        (10**9, "too_large"),
        (1000, None),
        (1, None),
        (0, "empty"),
        (None, None),
    ],
)
def test_size_gives_too_large_and_empty(size: int | None, expected: str | None) -> None:
    assert reason(blob("src/app.py", size=size)) == expected


@pytest.mark.parametrize(
    ("entry", "opt_out", "linguist", "expected"),
    [
        pytest.param(
            blob("vendor/link", mode=MODE_SYMLINK), OptOut(), {}, "symlink", id="symlink-in-vendor"
        ),
        pytest.param(
            TreeEntry("vendor/mod", MODE_GITLINK, "commit", SHA, None),
            OptOut(whole_repo=True),
            {},
            "submodule",
            id="submodule-before-opt-out",
        ),
        pytest.param(
            blob("x.sql", mode=MODE_SYMLINK),
            OptOut(globs=("*.sql",)),
            {},
            "symlink",
            id="symlink-before-opt-out",
        ),
        pytest.param(
            blob("vendor/x.sql"), OptOut(globs=("*.sql",)), {}, "opted_out", id="opt-out-first"
        ),
        pytest.param(
            blob("vendor/api.pb.go"), OptOut(), {}, "vendored", id="vendored-before-generated"
        ),
        pytest.param(
            blob("gen/go.sum"),
            OptOut(),
            {"linguist-generated": True},
            "generated",
            id="generated-before-lockfile",
        ),
        pytest.param(
            blob("go.sum", size=10**6), OptOut(), {}, "lockfile", id="lockfile-before-too-large"
        ),
        pytest.param(
            blob("node_modules/x.js", size=0), OptOut(), {}, "vendored", id="vendored-before-empty"
        ),
    ],
)
def test_first_applicable_reason_wins(
    entry: TreeEntry, opt_out: OptOut, linguist: dict[str, bool], expected: str
) -> None:
    assert reason(entry, opt_out=opt_out, linguist=linguist) == expected


@pytest.mark.parametrize(
    ("path", "linguist"),
    [
        ("third_party/ours/main.go", {"linguist-vendored": False}),
        ("api/service.pb.go", {"linguist-generated": False}),
    ],
)
def test_explicit_false_linguist_flag_overrides_path_heuristic(
    path: str, linguist: dict[str, bool]
) -> None:
    assert reason(blob(path), linguist=linguist) is None


@pytest.mark.parametrize(
    ("head", "size", "expected"),
    [
        pytest.param(LFS_POINTER, len(LFS_POINTER), "lfs_pointer", id="lfs-pointer"),
        pytest.param(LFS_POINTER, None, "lfs_pointer", id="lfs-pointer-size-unknown"),
        pytest.param(
            LFS_POINTER, LFS_POINTER_MAX_BYTES + 1, None, id="lfs-prefix-in-large-file-is-text"
        ),
        pytest.param(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16, "binary", id="nul-bytes"),
        pytest.param(b"text then \0 a nul", 17, "binary", id="one-nul"),
        pytest.param(b"\xff\xfe\xfd" + b"a" * 100, 103, "binary", id="invalid-utf8-at-start"),
        pytest.param(b"a" * 100 + b"\xe9t\xe9" + b"a" * 100, 203, "binary", id="latin1-in-middle"),
        pytest.param(b"def main():\n    return 0\n", 25, None, id="ascii-text"),
        pytest.param("größe = '東京'\n".encode(), 20, None, id="utf8-text"),
        pytest.param(b"", 0, None, id="empty-head"),
    ],
)
def test_content_skip_reason_from_first_bytes(
    head: bytes, size: int | None, expected: str | None
) -> None:
    assert content_skip_reason(head, size) == expected


@pytest.mark.parametrize(
    ("char", "kept"), [("é", 1), ("€", 1), ("€", 2), ("😀", 1), ("😀", 2), ("😀", 3)]
)
def test_multibyte_character_cut_at_sniff_boundary_is_still_text(char: str, kept: int) -> None:
    # `kept` bytes of the character fall inside the sniff window, the rest after it.
    head = b"a" * (BINARY_SNIFF_BYTES - kept) + char.encode() + b"more text"
    assert content_skip_reason(head, len(head)) is None


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"a" * (BINARY_SNIFF_BYTES - 1) + b"\0", id="nul-as-last-sniffed-byte"),
        pytest.param(b"a" * (BINARY_SNIFF_BYTES - 5) + b"\xff" + b"a" * 10, id="ff-before-cut"),
    ],
)
def test_invalid_bytes_inside_sniff_window_are_binary(head: bytes) -> None:
    assert content_skip_reason(head, len(head)) == "binary"


def test_bytes_after_sniff_window_are_not_inspected() -> None:
    head = b"a" * BINARY_SNIFF_BYTES + b"\0\xff"
    assert content_skip_reason(head, len(head)) is None


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"caf\xe9", id="latin1-e-acute-at-end"),
        pytest.param(b"abc\xff", id="invalid-start-byte-at-end"),
        pytest.param(b"\xff\xfe\xfd", id="three-invalid-bytes"),
        pytest.param(b"price: 5\xe2\x82", id="complete-blob-ends-mid-character"),
    ],
)
def test_invalid_utf8_at_end_of_short_blob_is_binary(head: bytes) -> None:
    assert content_skip_reason(head, len(head)) == "binary"
