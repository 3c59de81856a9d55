"""The builder of the demo's sample git repositories, standing in for the homelab's Gitea
organisation.

`create_sample_repos` builds four small but realistic repositories with a fixed, deterministic
history (same content, identities and dates, hence the same commit SHAs on every machine):

- `order-events-handler`: a Go NATS handler service with protobuf messages and generated code;
- `kfp-training-pipelines`: a Python Kubeflow Pipelines package with tests and a binary file;
- `homelab-flux`: Flux / Kustomize manifests, Helm releases and an Argo WorkflowTemplate;
- `homelab-adrs`: architectural decision records in MADR format.

Each history holds multi-file feature commits, small single-file edits of existing files, one
`wip` commit and one version bump, because the extraction stages downstream treat those
differently. All content is original demo material; the Go module hashes and the generated
protobuf file are illustrative and never compiled or verified.

The repositories' files live next to this module, one folder per repository and commit:

    sample_repo_files/<repo>/<NN>-<name>.toml   the commit: date, author, message, and optionally
                                                `delete`, `executable` and `[generated]`
    sample_repo_files/<repo>/<NN>-<name>/...     the files the commit adds or changes, byte for byte

Commits are applied in the order of their two-digit numbers, starting at 01. A step folder
holds each file as it is after that commit, so comparing two step folders shows a change as it
was made. The few files that are generated or binary (go.sum, the protobuf Go code, a PNG) are
built by the generators below, named in the commit's `[generated]` table. File modes come from
the `executable` lists only (never from the mode a file has on disk), so a checkout or an install
that loses or adds permission bits still builds the same commits. What tools leave behind in
the folders is ignored: `__pycache__` (installing the package compiles the sample Python files),
cache folders tagged with a CACHEDIR.TAG (ruff, pytest) and macOS's `.DS_Store`.

`commit_files` adds further commits to a working repository (tests, and the README's "make a
change and watch the sensor" walkthrough).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import os
import re
import shutil
import struct
import subprocess
import tempfile
import tomllib
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

from coder_assets.core.errors import CoderAssetsError

__all__ = [
    "SAMPLE_REPO_NAMES",
    "SampleRepoError",
    "commit_files",
    "create_sample_repos",
    "sample_corpus",
]

SAMPLE_REPO_NAMES: tuple[str, ...] = (
    "order-events-handler",
    "kfp-training-pipelines",
    "homelab-flux",
    "homelab-adrs",
)

SAMPLE_REPO_FILES = Path(__file__).with_name("sample_repo_files")

FileContent = str | bytes
FileChanges = Mapping[str, FileContent | None]

_log = logging.getLogger(__name__)


class SampleRepoError(CoderAssetsError, RuntimeError):
    """Building or committing to a demo sample repository failed."""


# --------------------------------------------------------------------------------------------
# Git plumbing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Identity:
    name: str
    email: str


@dataclass(frozen=True)
class _Commit:
    author: _Identity
    when: datetime
    message: str
    files: FileChanges
    # Paths that are mode 100755 from this commit on (until deleted).
    executable: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _RepoSpec:
    name: str
    commits: tuple[_Commit, ...]


_OPERATOR = _Identity("Homelab Operator", "operator@homelab.example")


def _git_date(when: datetime) -> str:
    """`when` in git's internal `<unix seconds> <+hhmm>` form; naive datetimes are UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    offset = when.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{int(when.timestamp())} {sign}{minutes // 60:02d}{minutes % 60:02d}"


def _git_env(identity: _Identity, when: datetime) -> dict[str, str]:
    # Inherited GIT_* variables (GIT_DIR, GIT_INDEX_FILE, ... set when running inside a hook)
    # would point our commands at someone else's repository, so none are passed on.
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    date = _git_date(when)
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME=identity.name,
        GIT_AUTHOR_EMAIL=identity.email,
        GIT_AUTHOR_DATE=date,
        GIT_COMMITTER_NAME=identity.name,
        GIT_COMMITTER_EMAIL=identity.email,
        GIT_COMMITTER_DATE=date,
    )
    return env


def _git(repo: Path, args: Sequence[str], env: Mapping[str, str], *, name: str) -> str:
    """Run `git <args>` in `repo`; raise SampleRepoError naming the repo and git's message."""
    try:
        result = subprocess.run(
            ["git", *args],
            cwd=repo,
            env=env,
            check=True,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
    except FileNotFoundError as exc:
        raise SampleRepoError(
            f"cannot build sample repo {name!r}: the git executable was not found on PATH; "
            "install git and retry"
        ) from exc
    except subprocess.CalledProcessError as exc:
        # `git commit` reports "nothing to commit" on stdout, everything else on stderr.
        output = (exc.stderr or "").strip() or (exc.stdout or "").strip()
        detail = "; ".join(line.strip() for line in output.splitlines() if line.strip())
        subcommand = next((a for a in args if not a.startswith("-") and "=" not in a), "")
        raise SampleRepoError(
            f"git {subcommand} failed in sample repo {name!r} ({repo}) "
            f"with exit code {exc.returncode}: {detail or 'no output'}"
        ) from exc
    return result.stdout.strip()


def _commit_all(repo: Path, message: str, env: Mapping[str, str], name: str) -> str:
    _git(repo, ["-c", "commit.gpgsign=false", "commit", "--quiet", "-m", message], env, name=name)
    return _git(repo, ["rev-parse", "HEAD"], env, name=name)


def _check_relpath(relpath: str, *, name: str) -> PurePosixPath:
    """`relpath` as a path, refusing paths that are absolute, escape the repo or touch `.git`."""
    pure = PurePosixPath(relpath)
    if not relpath or pure.is_absolute() or ".." in pure.parts or pure.parts[0] == ".git":
        raise SampleRepoError(
            f"refusing path {relpath!r} in sample repo {name!r}: use a relative path inside the "
            "working tree, outside .git"
        )
    return pure


def _repo_relative(repo: Path, relpath: str, *, name: str) -> Path:
    """`repo / relpath`, refusing paths that are absolute, escape the repo or touch `.git`."""
    return repo.joinpath(*_check_relpath(relpath, name=name).parts)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        # mkstemp creates 0600; a checked-out file is normally 0644.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _apply(repo: Path, files: FileChanges, *, name: str) -> list[str]:
    """Write or delete `files` in the working tree; return the paths to stage.

    Every path is checked before anything is written, so a bad entry leaves the tree unchanged.
    """
    targets = {relpath: _repo_relative(repo, relpath, name=name) for relpath in files}
    for relpath, path in targets.items():
        if files[relpath] is None and not path.is_file():
            raise SampleRepoError(
                f"cannot delete {relpath!r} from sample repo {name!r}: no such file"
            )
    for relpath, path in targets.items():
        content = files[relpath]
        if content is None:
            path.unlink()
        else:
            _write_atomic(path, content.encode("utf-8") if isinstance(content, str) else content)
    return list(targets)


def _build(spec: _RepoSpec, target: Path) -> None:
    """Build `spec` in a temporary directory next to `target`, then move it into place."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise SampleRepoError(
            f"{target} exists but is not a git repository; remove it so the sample repo "
            f"{spec.name!r} can be created there"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", suffix=".tmp", dir=target.parent))
    try:
        first = spec.commits[0]
        _git(
            tmp,
            ["init", "--quiet", "-b", "main", "--template="],
            _git_env(first.author, first.when),
            name=spec.name,
        )
        executable: set[str] = set()
        for commit in spec.commits:
            env = _git_env(commit.author, commit.when)
            _apply(tmp, commit.files, name=spec.name)
            executable |= commit.executable
            executable -= {path for path, content in commit.files.items() if content is None}
            for relpath in executable:
                # Rewritten files come back 0644; the mode is set on disk (so the work tree is
                # clean) and in the index (so it holds where core.fileMode is false).
                os.chmod(_repo_relative(tmp, relpath, name=spec.name), 0o755)
            _git(tmp, ["add", "--all"], env, name=spec.name)
            if executable:
                _git(tmp, ["add", "--chmod=+x", "--", *sorted(executable)], env, name=spec.name)
            _commit_all(tmp, commit.message, env, spec.name)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished the same repo first: keep theirs, it is identical.
            if not (target / ".git").is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------------------------
# Reading the repositories' folders
# --------------------------------------------------------------------------------------------

_STEP_NAME = re.compile(r"^(?P<number>\d{2})-[a-z0-9][a-z0-9-]*$")
_AUTHOR = re.compile(r"^(?P<name>[^<>]*[^<>\s]) <(?P<email>[^<>\s]+@[^<>\s]+)>$")
_MANIFEST_KEYS = frozenset({"date", "author", "message", "delete", "executable", "generated"})
_STEP_FORMAT = (
    "each commit is <NN>-<name>.toml (date, author, message) with an optional <NN>-<name>/ "
    "folder of the files it adds or changes, numbered 01, 02, ... without gaps"
)


def _ignored(path: Path) -> bool:
    """Whether `path` is something a tool left in the sample repos' folders (see the docstring)."""
    if path.is_dir() and not path.is_symlink():
        return path.name == "__pycache__" or (path / "CACHEDIR.TAG").is_file()
    return path.name == ".DS_Store"


def _step_files(folder: Path, *, name: str) -> dict[str, FileContent]:
    """The files under a step folder by repo-relative POSIX path: text (UTF-8) as str, the rest
    as bytes."""
    files: dict[str, FileContent] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not _ignored(here / d))
        filenames = sorted(f for f in filenames if not _ignored(here / f))
        for entry in [*dirnames, *filenames]:
            path = here / entry
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                raise SampleRepoError(
                    f"{path} is a symbolic link or a special file; the sample repo {name!r} "
                    "holds regular files only: replace it with the file itself"
                )
        for filename in filenames:
            relpath = (here / filename).relative_to(folder).as_posix()
            _check_relpath(relpath, name=name)
            data = (here / filename).read_bytes()
            try:
                files[relpath] = data.decode("utf-8")
            except UnicodeDecodeError:
                files[relpath] = data
    return files


def _path_list(manifest: Mapping[str, object], key: str, toml: Path, name: str) -> list[str]:
    value = manifest.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SampleRepoError(f"{toml}: `{key}` must be a list of repo-relative paths")
    for relpath in value:
        _check_relpath(relpath, name=name)
    return value


def _read_manifest(toml: Path, name: str) -> dict[str, object]:
    try:
        manifest = tomllib.loads(toml.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SampleRepoError(
            f"cannot read the commit {toml} of sample repo {name!r}: {exc}; fix the file"
        ) from exc
    unknown = sorted(set(manifest) - _MANIFEST_KEYS)
    if unknown:
        raise SampleRepoError(
            f"{toml}: unknown key(s) {', '.join(unknown)}; a commit may have "
            f"{', '.join(sorted(_MANIFEST_KEYS))}"
        )
    when = manifest.get("date")
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise SampleRepoError(
            f"{toml}: `date` must be a TOML date-time with its offset, for example "
            "date = 2024-02-05T09:14:00Z"
        )
    author = manifest.get("author")
    if not isinstance(author, str) or not _AUTHOR.match(author):
        raise SampleRepoError(
            f'{toml}: `author` must read like author = "Homelab Operator '
            '<operator@homelab.example>"'
        )
    message = manifest.get("message")
    if not isinstance(message, str) or not message.strip():
        raise SampleRepoError(f"{toml}: `message` must be the commit message, a non-empty string")
    generated = manifest.get("generated", {})
    if not isinstance(generated, dict) or not all(
        isinstance(generator, str) for generator in generated.values()
    ):
        raise SampleRepoError(
            f"{toml}: `[generated]` must map repo-relative paths to generator names, like "
            f'"go.sum" = "go-sum"'
        )
    return manifest


def _load_repo(folder: Path, name: str) -> _RepoSpec:
    """The commits of the sample repo whose folder is `folder` (see the module docstring)."""
    if not folder.is_dir():
        raise SampleRepoError(
            f"the files of sample repo {name!r} are missing: {folder} is not a folder; restore "
            "it from the coder_assets checkout or reinstall the package"
        )
    steps: dict[str, bool] = {}
    for entry in sorted(folder.iterdir()):
        if _ignored(entry):
            continue
        is_toml = entry.is_file() and entry.suffix == ".toml"
        stem = entry.name.removesuffix(".toml") if is_toml else entry.name
        if entry.is_symlink() or not (is_toml or entry.is_dir()) or not _STEP_NAME.match(stem):
            raise SampleRepoError(f"unexpected {entry} in sample repo {name!r}: {_STEP_FORMAT}")
        steps[stem] = steps.get(stem, False) or is_toml
    numbers = [int(_STEP_NAME.match(stem)["number"]) for stem in steps]
    missing = [f"{stem}.toml" for stem, has_toml in steps.items() if not has_toml]
    if missing or numbers != list(range(1, len(numbers) + 1)):
        raise SampleRepoError(
            f"the commits of sample repo {name!r} in {folder} are incomplete or misnumbered "
            f"(steps {sorted(steps)}, missing {missing or 'nothing'}): {_STEP_FORMAT}"
        )

    tree: dict[str, FileContent] = {}
    commits = []
    for stem in steps:
        toml = folder / f"{stem}.toml"
        manifest = _read_manifest(toml, name)
        step_folder = folder / stem
        files: dict[str, FileContent | None] = {}
        if step_folder.is_dir():
            files.update(_step_files(step_folder, name=name))
        for relpath in _path_list(manifest, "delete", toml, name):
            if relpath in files or relpath not in tree:
                raise SampleRepoError(
                    f"{toml}: cannot delete {relpath!r}: "
                    + ("the step folder also holds it" if relpath in files else "no such file")
                )
            files[relpath] = None
        for relpath, content in files.items():
            if content is None:
                del tree[relpath]
            else:
                tree[relpath] = content
        generated: dict[str, str] = manifest.get("generated", {})
        for relpath, generator in sorted(generated.items()):
            _check_relpath(relpath, name=name)
            if relpath in files:
                raise SampleRepoError(
                    f"{toml}: {relpath!r} is both generated and in the step folder; keep one"
                )
            if generator not in _GENERATORS:
                raise SampleRepoError(
                    f"{toml}: unknown generator {generator!r} for {relpath!r}; known are "
                    f"{', '.join(sorted(_GENERATORS))}"
                )
            files[relpath] = tree[relpath] = _GENERATORS[generator](tree, toml)
        executable = _path_list(manifest, "executable", toml, name)
        for relpath in executable:
            if relpath not in tree:
                raise SampleRepoError(f"{toml}: cannot make {relpath!r} executable: no such file")
        if not files and not executable:
            raise SampleRepoError(
                f"{toml}: the commit changes nothing; add its files to {step_folder}"
            )
        author = _AUTHOR.match(manifest["author"])
        commits.append(
            _Commit(
                author=_Identity(author["name"], author["email"]),
                when=manifest["date"],
                message=manifest["message"],
                files=files,
                executable=frozenset(executable),
            )
        )
    return _RepoSpec(name, tuple(commits))


@functools.cache
def _sample_specs() -> tuple[_RepoSpec, ...]:
    return tuple(_load_repo(SAMPLE_REPO_FILES / name, name) for name in SAMPLE_REPO_NAMES)


# --------------------------------------------------------------------------------------------
# Building and committing
# --------------------------------------------------------------------------------------------


def _create(specs: Sequence[_RepoSpec], root: Path) -> list[Path]:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in specs:
        target = root / spec.name
        if (target / ".git").exists():
            _log.debug(
                "sample repo %s already exists at %s; leaving it as it is", spec.name, target
            )
        else:
            _build(spec, target)
            _log.info("created sample repo %s with %d commits", target, len(spec.commits))
        paths.append(target)
    return paths


def create_sample_repos(root: Path) -> list[Path]:
    """Create the sample repositories as normal (non-bare) git repos at root/<name>.

    Each repo has the default branch `main` and a fixed history, so every call anywhere produces
    the same commit SHAs. Idempotent: a repo that already exists (root/<name>/.git present) is
    left untouched. Returns the repo paths in SAMPLE_REPO_NAMES order.
    """
    return _create(_sample_specs(), root)


def commit_files(
    repo: Path,
    files: dict[str, str | bytes | None],
    message: str,
    *,
    when: datetime | None = None,
) -> str:
    """Write (str/bytes) or delete (None) repo-relative files in a working repo and commit them.

    The commit uses the author of the current HEAD (the repo's one identity) and `when` as both
    author and committer date; `when` defaults to now (UTC), naive datetimes count as UTC.
    Returns the new commit SHA.
    """
    repo = Path(repo)
    name = repo.name
    if not (repo / ".git").exists():
        raise SampleRepoError(
            f"{repo} is not a working git repository; create it with create_sample_repos first"
        )
    if not files:
        raise SampleRepoError(f"nothing to commit to sample repo {name!r}: no files were given")
    when = when or datetime.now(UTC)
    env = _git_env(_OPERATOR, when)
    if _git(repo, ["rev-list", "--all", "--max-count=1"], env, name=name):
        author = _git(repo, ["log", "-1", "--format=%an%n%ae"], env, name=name).split("\n")
        env = _git_env(_Identity(author[0], author[1]), when)
    paths = _apply(repo, files, name=name)
    _git(repo, ["add", "--all", "--", *paths], env, name=name)
    return _commit_all(repo, message, env, name)


def sample_corpus() -> list[str]:
    """Every text file version the sample repos ever hold, in a fixed order: the corpus the dev
    model's tokenizer is trained on (no git needed, so it is the same everywhere)."""
    texts: list[str] = []
    for spec in _sample_specs():
        for change in spec.commits:
            for _, content in sorted(change.files.items(), key=lambda item: item[0]):
                if isinstance(content, str) and content:
                    texts.append(content)
    return texts


# --------------------------------------------------------------------------------------------
# Generated files: named in a commit's [generated] table, built from the tree at that commit
# --------------------------------------------------------------------------------------------

Tree = Mapping[str, FileContent]

_GO_REQUIREMENT = re.compile(r"^\t(?P<path>\S+) (?P<version>v\S+)(?: // indirect)?$", re.MULTILINE)


def _go_sum(tree: Tree, toml: Path) -> str:
    """go.sum for the requirements of the commit's go.mod.

    The hashes are synthetic, derived from path and version: the demo never downloads modules,
    the lockfile only has to look and diff like one.
    """
    go_mod = tree.get("go.mod")
    if not isinstance(go_mod, str):
        raise SampleRepoError(f"{toml}: go.sum is generated from go.mod, which the repo lacks")
    requirements = {m["path"]: m["version"] for m in _GO_REQUIREMENT.finditer(go_mod)}
    sums = []
    for path, version in sorted(requirements.items()):
        for suffix in ("", "/go.mod"):
            digest = hashlib.sha256(f"{path}@{version}{suffix}".encode()).digest()
            sums.append(f"{path} {version}{suffix} h1:{base64.b64encode(digest).decode()}")
    return "\n".join(sums) + "\n"


def _diagram_png(tree: Tree, toml: Path) -> bytes:
    """docs/diagram.png: a 32x16 grayscale gradient."""
    return _png(32, 16)


def _png(width: int, height: int) -> bytes:
    """A valid grayscale PNG with a horizontal gradient.

    The image data goes into a stored (uncompressed) deflate block rather than through
    zlib.compress, whose output may differ between zlib builds and would change commit SHAs.
    """
    row = b"\x00" + bytes(x * 255 // (width - 1) for x in range(width))
    raw = row * height
    deflate = b"\x01" + struct.pack("<HH", len(raw), len(raw) ^ 0xFFFF) + raw
    idat = b"\x78\x01" + deflate + struct.pack(">I", zlib.adler32(raw))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _orders_pb_go_file(tree: Tree, toml: Path) -> str:
    """proto/orders/v1/orders.pb.go, as protoc-gen-go writes it for orders.proto."""
    return _orders_pb_go()


@dataclass(frozen=True)
class _PbField:
    name: str
    number: int
    go_type: str
    zero: str
    wire: str = "bytes"
    repeated: bool = False


_ORDER_MESSAGES: tuple[tuple[str, str, tuple[_PbField, ...]], ...] = (
    (
        "OrderCreated",
        "OrderCreated is published by the storefront when a customer places an order.",
        (
            _PbField("order_id", 1, "string", '""'),
            _PbField("customer_id", 2, "string", '""'),
            _PbField("items", 3, "[]*LineItem", "nil", repeated=True),
            _PbField("total_cents", 4, "int64", "0", wire="varint"),
            _PbField("currency", 5, "string", '""'),
            _PbField("created_at", 6, "*timestamppb.Timestamp", "nil"),
        ),
    ),
    (
        "LineItem",
        "LineItem is one product line of an order.",
        (
            _PbField("sku", 1, "string", '""'),
            _PbField("quantity", 2, "int32", "0", wire="varint"),
            _PbField("unit_price_cents", 3, "int64", "0", wire="varint"),
        ),
    ),
    (
        "OrderAccepted",
        "OrderAccepted is republished once an order passed validation.",
        (
            _PbField("order_id", 1, "string", '""'),
            _PbField("total_cents", 2, "int64", "0", wire="varint"),
            _PbField("accepted_at", 3, "*timestamppb.Timestamp", "nil"),
        ),
    ),
)

_PB_METHODS = """
func (x *{msg}) Reset() {{
\t*x = {msg}{{}}
\tif protoimpl.UnsafeEnabled {{
\t\tmi := &file_orders_v1_orders_proto_msgTypes[{index}]
\t\tms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
\t\tms.StoreMessageInfo(mi)
\t}}
}}

func (x *{msg}) String() string {{
\treturn protoimpl.X.MessageStringOf(x)
}}

func (*{msg}) ProtoMessage() {{}}

func (x *{msg}) ProtoReflect() protoreflect.Message {{
\tmi := &file_orders_v1_orders_proto_msgTypes[{index}]
\tif protoimpl.UnsafeEnabled && x != nil {{
\t\tms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
\t\tif ms.LoadMessageInfo() == nil {{
\t\t\tms.StoreMessageInfo(mi)
\t\t}}
\t\treturn ms
\t}}
\treturn mi.MessageOf(x)
}}
"""


def _orders_pb_go() -> str:
    """proto/orders/v1/orders.pb.go in the shape protoc-gen-go writes it (types and accessors)."""
    out = [
        "// Code generated by protoc-gen-go. DO NOT EDIT.",
        "// versions:",
        "// \tprotoc-gen-go v1.34.1",
        "// \tprotoc        v5.27.1",
        "// source: orders/v1/orders.proto",
        "",
        "package ordersv1",
        "",
        "import (",
        '\tprotoreflect "google.golang.org/protobuf/reflect/protoreflect"',
        '\tprotoimpl "google.golang.org/protobuf/runtime/protoimpl"',
        '\ttimestamppb "google.golang.org/protobuf/types/known/timestamppb"',
        ")",
        "",
        "const (",
        "\t// Verify that this generated code is sufficiently up-to-date.",
        "\t_ = protoimpl.EnforceVersion(20 - protoimpl.MinVersion)",
        "\t// Verify that runtime/protoimpl is sufficiently up-to-date.",
        "\t_ = protoimpl.EnforceVersion(protoimpl.MaxVersion - 20)",
        ")",
    ]
    for index, (msg, comment, fields) in enumerate(_ORDER_MESSAGES):
        go_names = ["".join(p.capitalize() for p in f.name.split("_")) for f in fields]
        name_width = max(len(n) for n in go_names)
        type_width = max(len(f.go_type) for f in fields)
        out += ["", f"// {comment}", f"type {msg} struct {{"]
        out += [
            "\tstate         protoimpl.MessageState",
            "\tsizeCache     protoimpl.SizeCache",
            "\tunknownFields protoimpl.UnknownFields",
            "",
        ]
        for go_name, field in zip(go_names, fields, strict=True):
            parts = field.name.split("_")
            json_name = parts[0] + "".join(p.capitalize() for p in parts[1:])
            label = "rep" if field.repeated else "opt"
            json_attr = f",json={json_name}" if json_name != field.name else ""
            tag = (
                f'`protobuf:"{field.wire},{field.number},{label},name={field.name}{json_attr},'
                f'proto3" json:"{field.name},omitempty"`'
            )
            out.append(f"\t{go_name.ljust(name_width)} {field.go_type.ljust(type_width)} {tag}")
        out.append("}")
        out.append(_PB_METHODS.format(msg=msg, index=index).rstrip("\n"))
        for go_name, field in zip(go_names, fields, strict=True):
            out += [
                "",
                f"func (x *{msg}) Get{go_name}() {field.go_type} {{",
                "\tif x != nil {",
                f"\t\treturn x.{go_name}",
                "\t}",
                f"\treturn {field.zero}",
                "}",
            ]
    out += [
        "",
        "var File_orders_v1_orders_proto protoreflect.FileDescriptor",
        "",
        f"var file_orders_v1_orders_proto_msgTypes = "
        f"make([]protoimpl.MessageInfo, {len(_ORDER_MESSAGES)})",
        "var file_orders_v1_orders_proto_goTypes = []any{",
    ]
    go_types = [f"(*{msg})(nil)" for msg, _, _ in _ORDER_MESSAGES] + [
        "(*timestamppb.Timestamp)(nil)"
    ]
    full_names = [f"orders.v1.{msg}" for msg, _, _ in _ORDER_MESSAGES]
    full_names.append("google.protobuf.Timestamp")
    width = max(len(t) for t in go_types) + 1
    for index, (go_type, full_name) in enumerate(zip(go_types, full_names, strict=True)):
        out.append(f"\t{(go_type + ',').ljust(width)} // {index}: {full_name}")
    out.append("}")
    return "\n".join(out) + "\n"


_GENERATORS: dict[str, Callable[[Tree, Path], FileContent]] = {
    "go-sum": _go_sum,
    "orders-pb-go": _orders_pb_go_file,
    "diagram-png": _diagram_png,
}
