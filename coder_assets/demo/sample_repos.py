"""Sample git repositories for the embedded demo, standing in for the homelab's Gitea organisation.

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

`commit_files` adds further commits to a working repository (tests, and the README's "make a
change and watch the sensor" walkthrough).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

from coder_assets.core.errors import CoderAssetsError

__all__ = ["SAMPLE_REPO_NAMES", "SampleRepoError", "commit_files", "create_sample_repos"]

SAMPLE_REPO_NAMES: tuple[str, ...] = (
    "order-events-handler",
    "kfp-training-pipelines",
    "homelab-flux",
    "homelab-adrs",
)

FileChanges = Mapping[str, str | bytes | None]

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
    when: datetime
    message: str
    files: FileChanges


@dataclass(frozen=True)
class _RepoSpec:
    name: str
    author: _Identity
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


def _repo_relative(repo: Path, relpath: str, *, name: str) -> Path:
    """`repo / relpath`, refusing paths that are absolute, escape the repo or touch `.git`."""
    pure = PurePosixPath(relpath)
    if not relpath or pure.is_absolute() or ".." in pure.parts or pure.parts[0] == ".git":
        raise SampleRepoError(
            f"refusing path {relpath!r} in sample repo {name!r}: use a relative path inside the "
            "working tree, outside .git"
        )
    return repo.joinpath(*pure.parts)


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
            _git_env(spec.author, first.when),
            name=spec.name,
        )
        for commit in spec.commits:
            env = _git_env(spec.author, commit.when)
            _apply(tmp, commit.files, name=spec.name)
            _git(tmp, ["add", "--all"], env, name=spec.name)
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


def create_sample_repos(root: Path) -> list[Path]:
    """Create the sample repositories as normal (non-bare) git repos at root/<name>.

    Each repo has the default branch `main` and a fixed history, so every call anywhere produces
    the same commit SHAs. Idempotent: a repo that already exists (root/<name>/.git present) is
    left untouched. Returns the repo paths in SAMPLE_REPO_NAMES order.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in _SPECS:
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


# --------------------------------------------------------------------------------------------
# Content helpers
# --------------------------------------------------------------------------------------------


def _src(text: str, *, tabs: bool = False) -> str:
    """A content literal without its leading newline; with `tabs`, indented with tabs.

    The literals here are indented with spaces so they read the same in every editor; Go and
    Makefiles need tabs, so their leading groups of four spaces are converted.
    """
    text = text.removeprefix("\n")
    if tabs:
        text = re.sub(r"(?m)^(?: {4})+", lambda m: "\t" * (len(m.group(0)) // 4), text)
    return text


def _edit(text: str, *changes: tuple[str, str]) -> str:
    """Apply (old, new) replacements to `text`; each `old` must occur exactly once."""
    for old, new in changes:
        count = text.count(old)
        if count != 1:
            raise ValueError(f"sample content edit matched {count} times, expected 1: {old[:60]!r}")
        text = text.replace(old, new)
    return text


def _at(stamp: str) -> datetime:
    """A fixed UTC commit date from 'YYYY-MM-DD HH:MM'."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


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


# --------------------------------------------------------------------------------------------
# order-events-handler: Go NATS handler service ("handler-base" style)
# --------------------------------------------------------------------------------------------

_GO_MODULE = "gitea.homelab.example/homelab/order-events-handler"


def _go_module_files(direct: Mapping[str, str], indirect: Mapping[str, str]) -> dict[str, str]:
    """go.mod and go.sum for the given direct and indirect requirements (path -> version).

    The go.sum hashes are synthetic, derived from path and version: the demo never downloads
    modules, the lockfile only has to look and diff like one.
    """
    mod = [f"module {_GO_MODULE}", "", "go 1.22", "", "require ("]
    mod += [f"\t{path} {version}" for path, version in direct.items()]
    mod += [")", "", "require ("]
    mod += [f"\t{path} {version} // indirect" for path, version in indirect.items()]
    mod += [")"]
    sums = []
    for path, version in sorted({**direct, **indirect}.items()):
        for suffix in ("", "/go.mod"):
            digest = hashlib.sha256(f"{path}@{version}{suffix}".encode()).digest()
            sums.append(f"{path} {version}{suffix} h1:{base64.b64encode(digest).decode()}")
    return {"go.mod": "\n".join(mod) + "\n", "go.sum": "\n".join(sums) + "\n"}


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


_ORDERS_PROTO = _src("""
syntax = "proto3";

package orders.v1;

import "google/protobuf/timestamp.proto";

option go_package = "gitea.homelab.example/homelab/order-events-handler/proto/orders/v1;ordersv1";

// OrderCreated is published by the storefront when a customer places an order.
message OrderCreated {
  string order_id = 1;
  string customer_id = 2;
  repeated LineItem items = 3;
  // Sum of quantity * unit_price_cents over items, in the smallest currency unit.
  int64 total_cents = 4;
  // ISO 4217 code, for example "EUR".
  string currency = 5;
  google.protobuf.Timestamp created_at = 6;
}

// LineItem is one product line of an order.
message LineItem {
  string sku = 1;
  int32 quantity = 2;
  int64 unit_price_cents = 3;
}

// OrderAccepted is republished once an order passed validation.
message OrderAccepted {
  string order_id = 1;
  int64 total_cents = 2;
  google.protobuf.Timestamp accepted_at = 3;
}
""")

# Most of the homelab's code has no doc comments; the extractors ask for it from what it shows.
_GO_STATS = _src(
    r"""
package handler

import (
    "sync"
    "time"
)

type Stats struct {
    mu       sync.Mutex
    Accepted int
    Rejected int
    LastSeen time.Time
}

func (s *Stats) Record(accepted bool, at time.Time) {
    s.mu.Lock()
    defer s.mu.Unlock()
    if accepted {
        s.Accepted++
    } else {
        s.Rejected++
    }
    s.LastSeen = at
}
""",
    tabs=True,
)


_GO_MAIN = _src(
    r"""
// Command order-events-handler consumes order events from NATS, validates them
// and republishes accepted orders for the fulfilment services.
package main

import (
    "context"
    "errors"
    "fmt"
    "log/slog"
    "os"
    "os/signal"
    "syscall"
    "time"

    "github.com/nats-io/nats.go"

    "gitea.homelab.example/homelab/order-events-handler/internal/handler"
)

const (
    defaultSubject = "orders.created"
    queueGroup     = "order-events-handler"
    drainTimeout   = 10 * time.Second
)

func main() {
    logger := slog.New(slog.NewJSONHandler(os.Stdout, nil))
    if err := run(logger); err != nil {
        logger.Error("order-events-handler stopped", "error", err)
        os.Exit(1)
    }
}

func run(logger *slog.Logger) error {
    url := envOr("NATS_URL", nats.DefaultURL)
    subject := envOr("ORDERS_SUBJECT", defaultSubject)

    closed := make(chan struct{})
    nc, err := nats.Connect(url,
        nats.Name("order-events-handler"),
        nats.MaxReconnects(-1),
        nats.ReconnectWait(2*time.Second),
        nats.DrainTimeout(drainTimeout),
        nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
            logger.Warn("disconnected from NATS", "error", err)
        }),
        nats.ReconnectHandler(func(c *nats.Conn) {
            logger.Info("reconnected to NATS", "url", c.ConnectedUrl())
        }),
        nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
    )
    if err != nil {
        return fmt.Errorf("connect to %s: %w", url, err)
    }

    h := handler.New(handler.NewNATSPublisher(nc), logger)
    sub, err := nc.QueueSubscribe(subject, queueGroup, h.HandleMsg)
    if err != nil {
        nc.Close()
        return fmt.Errorf("subscribe to %s: %w", subject, err)
    }
    logger.Info("listening for orders", "subject", sub.Subject, "queue", queueGroup)

    ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
    defer stop()
    <-ctx.Done()

    // Drain rather than Close so that orders already received are republished
    // before the pod goes away; Kubernetes sends SIGTERM well before SIGKILL.
    logger.Info("shutdown requested, draining NATS connection")
    if err := nc.Drain(); err != nil {
        return fmt.Errorf("drain NATS connection: %w", err)
    }
    select {
    case <-closed:
        logger.Info("drained, exiting")
        return nil
    case <-time.After(drainTimeout + time.Second):
        return errors.New("timed out waiting for the NATS connection to drain")
    }
}

// envOr returns the value of the environment variable key, or fallback when it
// is unset or empty.
func envOr(key, fallback string) string {
    if v := os.Getenv(key); v != "" {
        return v
    }
    return fallback
}
""",
    tabs=True,
)

_GO_MAIN_BEFORE_DRAIN = _edit(
    _GO_MAIN,
    ('\t"errors"\n', ""),
    ('\t"syscall"\n', ""),
    ("\tdrainTimeout   = 10 * time.Second\n", ""),
    ("\tclosed := make(chan struct{})\n", ""),
    ("\t\tnats.DrainTimeout(drainTimeout),\n", ""),
    ("\t\tnats.ClosedHandler(func(*nats.Conn) { close(closed) }),\n", ""),
    ("os.Interrupt, syscall.SIGTERM)", "os.Interrupt)"),
    (
        _GO_MAIN[_GO_MAIN.index("\t// Drain rather") : _GO_MAIN.index("// envOr")],
        '\tlogger.Info("shutting down")\n\tnc.Close()\n\treturn nil\n}\n\n',
    ),
)

_GO_HANDLER = _src(
    r"""
// Package handler validates order events received over NATS and republishes
// accepted orders for the fulfilment services.
package handler

import (
    "context"
    "errors"
    "fmt"
    "log/slog"
    "time"

    "github.com/nats-io/nats.go"
    "google.golang.org/protobuf/proto"
    "google.golang.org/protobuf/types/known/timestamppb"

    ordersv1 "gitea.homelab.example/homelab/order-events-handler/proto/orders/v1"
)

// AcceptedSubject is the subject that validated orders are republished on.
const AcceptedSubject = "orders.accepted"

// handleTimeout bounds the work done for a single message, retries included.
const handleTimeout = 5 * time.Second

// ErrInvalidOrder is wrapped by every validation failure so that callers can
// tell bad input apart from transport errors.
var ErrInvalidOrder = errors.New("invalid order")

// Publisher sends an encoded payload to a NATS subject.
type Publisher interface {
    Publish(ctx context.Context, subject string, data []byte) error
}

// RetryPolicy controls how often, and how far apart, a failed publish is retried.
type RetryPolicy struct {
    Attempts  int
    BaseDelay time.Duration
    MaxDelay  time.Duration
}

// DefaultRetryPolicy makes three attempts, starting 100ms apart.
var DefaultRetryPolicy = RetryPolicy{
    Attempts:  3,
    BaseDelay: 100 * time.Millisecond,
    MaxDelay:  2 * time.Second,
}

// Backoff returns the delay before retry number attempt (1 for the first
// retry), doubling each time and capped at MaxDelay.
func (p RetryPolicy) Backoff(attempt int) time.Duration {
    if attempt < 1 {
        return 0
    }
    d := p.BaseDelay << (attempt - 1)
    if d <= 0 || d > p.MaxDelay {
        return p.MaxDelay
    }
    return d
}

// Handler validates order events and republishes the accepted ones.
type Handler struct {
    pub    Publisher
    logger *slog.Logger
    retry  RetryPolicy
    now    func() time.Time
}

// New returns a Handler that republishes accepted orders through pub.
func New(pub Publisher, logger *slog.Logger) *Handler {
    return &Handler{
        pub:    pub,
        logger: logger,
        retry:  DefaultRetryPolicy,
        now:    time.Now,
    }
}

// HandleMsg adapts Handle to a nats.MsgHandler. Rejected orders are logged and
// dropped: replaying them would fail the same way.
func (h *Handler) HandleMsg(msg *nats.Msg) {
    ctx, cancel := context.WithTimeout(context.Background(), handleTimeout)
    defer cancel()
    if err := h.Handle(ctx, msg.Data); err != nil {
        h.logger.Error("order event rejected", "subject", msg.Subject, "error", err)
    }
}

// Handle decodes one OrderCreated event, validates it and publishes an
// OrderAccepted event on AcceptedSubject.
func (h *Handler) Handle(ctx context.Context, data []byte) error {
    var order ordersv1.OrderCreated
    if err := proto.Unmarshal(data, &order); err != nil {
        return fmt.Errorf("%w: decode: %v", ErrInvalidOrder, err)
    }
    if err := Validate(&order); err != nil {
        return err
    }
    accepted := &ordersv1.OrderAccepted{
        OrderId:    order.GetOrderId(),
        TotalCents: order.GetTotalCents(),
        AcceptedAt: timestamppb.New(h.now()),
    }
    payload, err := proto.Marshal(accepted)
    if err != nil {
        return fmt.Errorf("encode accepted order %s: %w", order.GetOrderId(), err)
    }
    return h.publishWithRetry(ctx, AcceptedSubject, payload)
}

// publishWithRetry retries failed publishes with exponential backoff and gives
// up early once ctx is done.
func (h *Handler) publishWithRetry(ctx context.Context, subject string, data []byte) error {
    var err error
    for attempt := 0; attempt < h.retry.Attempts; attempt++ {
        if attempt > 0 {
            select {
            case <-ctx.Done():
                return fmt.Errorf("publish to %s: %w (last error: %v)", subject, ctx.Err(), err)
            case <-time.After(h.retry.Backoff(attempt)):
            }
        }
        if err = h.pub.Publish(ctx, subject, data); err == nil {
            return nil
        }
        h.logger.Warn("publish failed", "subject", subject, "attempt", attempt+1, "error", err)
    }
    return fmt.Errorf("publish to %s after %d attempts: %w", subject, h.retry.Attempts, err)
}

// Validate reports whether order carries everything fulfilment needs. Every
// error it returns wraps ErrInvalidOrder.
func Validate(order *ordersv1.OrderCreated) error {
    switch {
    case order.GetOrderId() == "":
        return fmt.Errorf("%w: missing order_id", ErrInvalidOrder)
    case order.GetCustomerId() == "":
        return fmt.Errorf("%w: order %s has no customer_id", ErrInvalidOrder, order.GetOrderId())
    case len(order.GetItems()) == 0:
        return fmt.Errorf("%w: order %s has no items", ErrInvalidOrder, order.GetOrderId())
    }
    for i, item := range order.GetItems() {
        if item.GetQuantity() <= 0 {
            return fmt.Errorf("%w: order %s item %d has quantity %d",
                ErrInvalidOrder, order.GetOrderId(), i, item.GetQuantity())
        }
    }
    if got, want := order.GetTotalCents(), TotalCents(order.GetItems()); got != want {
        return fmt.Errorf("%w: order %s total is %d cents but its items add up to %d",
            ErrInvalidOrder, order.GetOrderId(), got, want)
    }
    return nil
}

// TotalCents returns the sum of quantity times unit price over items.
func TotalCents(items []*ordersv1.LineItem) int64 {
    var total int64
    for _, item := range items {
        total += int64(item.GetQuantity()) * item.GetUnitPriceCents()
    }
    return total
}

// NATSPublisher publishes through a core NATS connection.
type NATSPublisher struct {
    nc *nats.Conn
}

// NewNATSPublisher wraps nc as a Publisher.
func NewNATSPublisher(nc *nats.Conn) *NATSPublisher {
    return &NATSPublisher{nc: nc}
}

// Publish sends data on subject. Core NATS publishes are fire-and-forget, so
// ctx is only checked before sending.
func (p *NATSPublisher) Publish(ctx context.Context, subject string, data []byte) error {
    if err := ctx.Err(); err != nil {
        return err
    }
    return p.nc.Publish(subject, data)
}
""",
    tabs=True,
)


def _slice(text: str, start: str, end: str) -> str:
    """The part of `text` from the first `start` up to (not including) the next `end`."""
    begin = text.index(start)
    return text[begin : text.index(end, begin + len(start))]


_GO_HANDLER_BEFORE_TOTAL = _edit(
    _GO_HANDLER,
    (_slice(_GO_HANDLER, "\tif got, want :=", "\treturn nil\n}"), ""),
)

_GO_HANDLER_BEFORE_RETRY = _edit(
    _GO_HANDLER_BEFORE_TOTAL,
    (_slice(_GO_HANDLER, "// RetryPolicy controls", "// Handler validates"), ""),
    ("\tretry  RetryPolicy\n", ""),
    ("\t\tretry:  DefaultRetryPolicy,\n", ""),
    ("return h.publishWithRetry(ctx,", "return h.pub.Publish(ctx,"),
    (_slice(_GO_HANDLER, "// publishWithRetry retries", "// Validate reports"), ""),
)

_GO_HANDLER_TEST = _src(
    r"""
package handler

import (
    "context"
    "errors"
    "io"
    "log/slog"
    "testing"
    "time"

    "google.golang.org/protobuf/proto"

    ordersv1 "gitea.homelab.example/homelab/order-events-handler/proto/orders/v1"
)

// recordingPublisher fails the first failures publishes, then records the rest.
type recordingPublisher struct {
    failures int
    subjects []string
    payloads [][]byte
}

func (p *recordingPublisher) Publish(_ context.Context, subject string, data []byte) error {
    if p.failures > 0 {
        p.failures--
        return errors.New("nats: connection closed")
    }
    p.subjects = append(p.subjects, subject)
    p.payloads = append(p.payloads, data)
    return nil
}

func validOrder() *ordersv1.OrderCreated {
    return &ordersv1.OrderCreated{
        OrderId:    "ord-1001",
        CustomerId: "cus-42",
        Currency:   "EUR",
        Items: []*ordersv1.LineItem{
            {Sku: "KB-75", Quantity: 1, UnitPriceCents: 8900},
            {Sku: "USB-C-2M", Quantity: 2, UnitPriceCents: 1250},
        },
        TotalCents: 11400,
    }
}

func newTestHandler(pub Publisher) *Handler {
    h := New(pub, slog.New(slog.NewTextHandler(io.Discard, nil)))
    h.now = func() time.Time { return time.Date(2024, 2, 5, 9, 0, 0, 0, time.UTC) }
    return h
}

func TestValidate(t *testing.T) {
    tests := []struct {
        name    string
        mutate  func(o *ordersv1.OrderCreated)
        wantErr bool
    }{
        {"valid order", func(*ordersv1.OrderCreated) {}, false},
        {"missing order id", func(o *ordersv1.OrderCreated) { o.OrderId = "" }, true},
        {"missing customer", func(o *ordersv1.OrderCreated) { o.CustomerId = "" }, true},
        {"no items", func(o *ordersv1.OrderCreated) { o.Items = nil }, true},
        {"zero quantity", func(o *ordersv1.OrderCreated) { o.Items[0].Quantity = 0 }, true},
        {"total mismatch", func(o *ordersv1.OrderCreated) { o.TotalCents++ }, true},
    }
    for _, tt := range tests {
        t.Run(tt.name, func(t *testing.T) {
            order := validOrder()
            tt.mutate(order)
            err := Validate(order)
            if (err != nil) != tt.wantErr {
                t.Fatalf("Validate() error = %v, wantErr %v", err, tt.wantErr)
            }
            if err != nil && !errors.Is(err, ErrInvalidOrder) {
                t.Errorf("Validate() error = %v, want it to wrap ErrInvalidOrder", err)
            }
        })
    }
}

func TestHandlePublishesAcceptedOrder(t *testing.T) {
    pub := &recordingPublisher{}
    data, err := proto.Marshal(validOrder())
    if err != nil {
        t.Fatal(err)
    }
    if err := newTestHandler(pub).Handle(context.Background(), data); err != nil {
        t.Fatalf("Handle() error = %v", err)
    }
    if len(pub.subjects) != 1 || pub.subjects[0] != AcceptedSubject {
        t.Fatalf("published to %v, want [%s]", pub.subjects, AcceptedSubject)
    }
    var accepted ordersv1.OrderAccepted
    if err := proto.Unmarshal(pub.payloads[0], &accepted); err != nil {
        t.Fatal(err)
    }
    if accepted.GetOrderId() != "ord-1001" || accepted.GetTotalCents() != 11400 {
        t.Errorf("accepted = %v, want ord-1001 with 11400 cents", &accepted)
    }
}

func TestHandleRejectsUndecodablePayload(t *testing.T) {
    err := newTestHandler(&recordingPublisher{}).Handle(context.Background(), []byte{0xff, 0x01})
    if !errors.Is(err, ErrInvalidOrder) {
        t.Fatalf("Handle() error = %v, want ErrInvalidOrder", err)
    }
}

func TestRetryPolicyBackoff(t *testing.T) {
    p := RetryPolicy{Attempts: 5, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second}
    tests := []struct {
        attempt int
        want    time.Duration
    }{
        {0, 0},
        {1, 100 * time.Millisecond},
        {2, 200 * time.Millisecond},
        {3, 400 * time.Millisecond},
        {4, 800 * time.Millisecond},
        {5, time.Second},
        {10, time.Second},
    }
    for _, tt := range tests {
        if got := p.Backoff(tt.attempt); got != tt.want {
            t.Errorf("Backoff(%d) = %v, want %v", tt.attempt, got, tt.want)
        }
    }
}

func TestHandleRetriesTransientFailures(t *testing.T) {
    // TODO: inject the backoff, this sleeps for 300ms
    pub := &recordingPublisher{failures: 2}
    data, _ := proto.Marshal(validOrder())
    if err := newTestHandler(pub).Handle(context.Background(), data); err != nil {
        t.Fatalf("Handle() error = %v", err)
    }
    if len(pub.subjects) != 1 {
        t.Fatalf("published %d times, want 1", len(pub.subjects))
    }
}
""",
    tabs=True,
)

_GO_HANDLER_TEST_BEFORE_TOTAL = _edit(
    _GO_HANDLER_TEST,
    ('\t\t{"total mismatch", func(o *ordersv1.OrderCreated) { o.TotalCents++ }, true},\n', ""),
)
_GO_HANDLER_TEST_BEFORE_WIP = _edit(
    _GO_HANDLER_TEST_BEFORE_TOTAL,
    ("\n" + _GO_HANDLER_TEST[_GO_HANDLER_TEST.index("func TestHandleRetriesTransient") :], ""),
)
_GO_HANDLER_TEST_BEFORE_BACKOFF = _edit(
    _GO_HANDLER_TEST_BEFORE_WIP,
    ("\n" + _GO_HANDLER_TEST_BEFORE_WIP[_GO_HANDLER_TEST_BEFORE_WIP.index("func TestRetry") :], ""),
)

_GO_DOCKERFILE = _src("""
# syntax=docker/dockerfile:1.7
FROM golang:1.22-alpine AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \\
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/order-events-handler .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/order-events-handler /order-events-handler
ENV NATS_URL=nats://nats.messaging.svc.cluster.local:4222
USER nonroot:nonroot
ENTRYPOINT ["/order-events-handler"]
""")

_GO_MAKEFILE = _src(
    """
.PHONY: test lint proto image

IMAGE ?= registry.homelab.example/apps/order-events-handler
TAG ?= $(shell git describe --tags --always --dirty)

test:
    go test -race ./...

lint:
    go vet ./...

proto:
    protoc -I proto --go_out=proto --go_opt=paths=source_relative orders/v1/orders.proto

image:
    docker build -t $(IMAGE):$(TAG) .
""",
    tabs=True,
)

_GO_README = _src("""
# order-events-handler

Consumes `OrderCreated` events from NATS, validates them and republishes accepted orders as
`OrderAccepted` on `orders.accepted`. Built from the homelab `handler-base` template: one binary,
one queue group, JSON logs on stdout and a graceful drain on SIGTERM.

## Configuration

| Variable         | Default                 | Meaning                                    |
|------------------|-------------------------|--------------------------------------------|
| `NATS_URL`       | `nats://127.0.0.1:4222` | NATS server to connect to                  |
| `ORDERS_SUBJECT` | `orders.created`        | Subject the order events are consumed from |

All replicas join the `order-events-handler` queue group, so every event is handled once.
Accepted orders always go to `orders.accepted`.

## Development

    make test     # go test -race ./...
    make proto    # regenerate proto/orders/v1/orders.pb.go after editing the .proto
    make image    # build registry.homelab.example/apps/order-events-handler:<git describe>

Against a throwaway NATS server:

    docker run --rm -p 4222:4222 nats:2.10 -js
    NATS_URL=nats://127.0.0.1:4222 go run .

## Deployment

Flux deploys the image from `homelab-flux/apps/order-events-handler`; bump the tag there.
""")

_GO_README_BEFORE_DOCS = _edit(
    _GO_README,
    (
        _slice(_GO_README, "## Configuration", "## Development"),
        "Set `NATS_URL` to point it at a server other than the local default.\n\n",
    ),
)

_GO_GITATTRIBUTES = _src("""
# Generated protobuf code: collapsed in diffs, left out of language statistics.
*.pb.go linguist-generated=true
""")

_GO_GITIGNORE = _src("""
/order-events-handler
/bin/
*.test
coverage.out
""")

_GO_DEPS_V1 = {
    "direct": {"github.com/nats-io/nats.go": "v1.36.0", "google.golang.org/protobuf": "v1.34.1"},
    "indirect": {
        "github.com/klauspost/compress": "v1.17.8",
        "github.com/nats-io/nkeys": "v0.4.7",
        "github.com/nats-io/nuid": "v1.0.1",
        "golang.org/x/crypto": "v0.23.0",
        "golang.org/x/sys": "v0.20.0",
    },
}
_GO_DEPS_V2 = {
    "direct": {"github.com/nats-io/nats.go": "v1.37.0", "google.golang.org/protobuf": "v1.34.1"},
    "indirect": {
        "github.com/klauspost/compress": "v1.17.9",
        "github.com/nats-io/nkeys": "v0.4.7",
        "github.com/nats-io/nuid": "v1.0.1",
        "golang.org/x/crypto": "v0.26.0",
        "golang.org/x/sys": "v0.24.0",
    },
}


def _order_events_handler() -> _RepoSpec:
    handler = "internal/handler/handler.go"
    handler_test = "internal/handler/handler_test.go"
    commits = (
        _Commit(
            _at("2024-02-05 09:14"),
            "Add order events handler service\n\n"
            "Start from the handler-base layout: main.go wires NATS, internal/handler holds the\n"
            "logic and proto/ the message schema shared with the storefront.",
            {
                ".gitattributes": _GO_GITATTRIBUTES,
                ".gitignore": _GO_GITIGNORE,
                "Dockerfile": _GO_DOCKERFILE,
                "Makefile": _GO_MAKEFILE,
                "README.md": _GO_README_BEFORE_DOCS,
                **_go_module_files(**_GO_DEPS_V1),
                "main.go": _GO_MAIN_BEFORE_DRAIN,
                handler: _GO_HANDLER_BEFORE_RETRY,
                "internal/handler/stats.go": _GO_STATS,
                handler_test: _GO_HANDLER_TEST_BEFORE_BACKOFF,
                "proto/orders/v1/orders.proto": _ORDERS_PROTO,
                "proto/orders/v1/orders.pb.go": _orders_pb_go(),
            },
        ),
        _Commit(
            _at("2024-02-06 18:40"),
            "Add retry to order publisher\n\n"
            "A NATS reconnect during a node restart made the first publish fail and the order\n"
            "was dropped. Retry up to three times with exponential backoff.",
            {handler: _GO_HANDLER_BEFORE_TOTAL},
        ),
        _Commit(
            _at("2024-02-07 08:55"),
            "Test retry backoff doubling and cap",
            {handler_test: _GO_HANDLER_TEST_BEFORE_WIP},
        ),
        _Commit(
            _at("2024-02-12 21:03"),
            "Drain NATS connection on SIGTERM\n\n"
            "Kubernetes stops pods with SIGTERM, which the handler ignored until SIGKILL.",
            {"main.go": _GO_MAIN},
        ),
        _Commit(_at("2024-02-13 19:27"), "wip", {handler_test: _GO_HANDLER_TEST_BEFORE_TOTAL}),
        _Commit(
            _at("2024-02-20 10:02"),
            "Bump nats.go to v1.37.0",
            _go_module_files(**_GO_DEPS_V2),
        ),
        _Commit(
            _at("2024-02-26 20:15"),
            "Reject orders whose total does not match their line items",
            {handler: _GO_HANDLER, handler_test: _GO_HANDLER_TEST},
        ),
        _Commit(
            _at("2024-03-02 11:30"),
            "Document NATS_URL and ORDERS_SUBJECT in README",
            {"README.md": _GO_README},
        ),
    )
    return _RepoSpec("order-events-handler", _OPERATOR, commits)


# --------------------------------------------------------------------------------------------
# kfp-training-pipelines: Python Kubeflow Pipelines package
# --------------------------------------------------------------------------------------------

_KFP_PYPROJECT = _src("""
[build-system]
requires = ["hatchling>=1.24"]
build-backend = "hatchling.build"

[project]
name = "kfp-training-pipelines"
version = "0.2.0"
description = "Kubeflow Pipelines that fine-tune LoRA adapters for the homelab coding model."
readme = "README.md"
requires-python = ">=3.11"
dependencies = [
    "kfp>=2.7,<3",
]

[project.optional-dependencies]
dev = ["pytest>=8", "ruff>=0.5"]

[tool.hatch.build.targets.wheel]
packages = ["src/kfp_training_pipelines"]

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["src"]

[tool.ruff]
line-length = 100
""")

_KFP_INIT = _src('''
"""Kubeflow Pipelines for the homelab coding model.

:mod:`.components` holds the lightweight KFP components, :mod:`.pipeline` chains them into the
fine-tuning pipeline and :mod:`.storage` addresses their inputs and outputs in the object store.
"""

__version__ = "0.2.0"
''')

# Undocumented, like much of the homelab's code.
_KFP_REPORT = _src(r"""
from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class EvalReport:
    model: str
    scores: dict[str, float] = field(default_factory=dict)

    def passed(self, thresholds: dict[str, float]) -> bool:
        missing = set(thresholds) - set(self.scores)
        if missing:
            raise KeyError(f"no score for {sorted(missing)}")
        return all(self.scores[name] >= floor for name, floor in thresholds.items())


def load_report(text: str) -> EvalReport:
    data = json.loads(text)
    scores = {str(k): float(v) for k, v in data.get("scores", {}).items()}
    return EvalReport(model=data["model"], scores=scores)
""")


_KFP_STORAGE = _src(r'''
"""Addresses of pipeline inputs and outputs in the homelab's S3-compatible object store."""

from __future__ import annotations

import re
from dataclasses import dataclass

# S3 bucket rules without the dotted names, which break virtual-host style addressing.
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Location:
    """A bucket and an optional key prefix, kept without surrounding slashes."""

    bucket: str
    prefix: str = ""

    def __post_init__(self) -> None:
        if not _BUCKET_NAME.match(self.bucket):
            raise ValueError(f"invalid bucket name {self.bucket!r}")
        object.__setattr__(self, "prefix", self.prefix.strip("/"))

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        """Parse ``s3://bucket[/prefix]``; raise ``ValueError`` for anything else."""
        if not uri.startswith("s3://"):
            raise ValueError(f"not an s3:// URI: {uri!r}")
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        return cls(bucket, prefix)

    @property
    def uri(self) -> str:
        """This location as an ``s3://`` URI."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def child(self, *parts: str) -> S3Location:
        """Return the location ``parts`` below this one."""
        keep = (part.strip("/") for part in (self.prefix, *parts))
        return S3Location(self.bucket, "/".join(part for part in keep if part))


def dataset_location(root: S3Location, dataset: str, version: str) -> S3Location:
    """Where one version of a dataset lives: ``<root>/datasets/<dataset>/<version>``."""
    return root.child("datasets", dataset, version)


def adapter_location(root: S3Location, run_id: str) -> S3Location:
    """Where the adapter trained by one pipeline run is published."""
    return root.child("adapters", run_id)
''')

_KFP_COMPONENTS = _src(r'''
"""Lightweight KFP components: dataset preparation, LoRA training, evaluation and publishing.

KFP ships the source of each component function into its container, so every import a component
needs lives inside the function body; module globals are not visible there.
"""

from kfp import dsl

BASE_IMAGE = "python:3.11-slim"
TRAINER_IMAGE = "registry.homelab.example/ml/lora-trainer:0.4.1"
S3_PACKAGES = ["boto3==1.34.131"]


@dsl.component(base_image=BASE_IMAGE, packages_to_install=S3_PACKAGES)
def prepare_dataset(
    source_uri: str,
    max_samples: int,
    valid_fraction: float,
    seed: int,
    train_split: dsl.Output[dsl.Dataset],
    valid_split: dsl.Output[dsl.Dataset],
) -> int:
    """Download JSONL samples, drop exact duplicates and write a seeded train/validation split.

    Returns the number of samples kept.
    """
    import hashlib
    import json
    import random

    import boto3
    from botocore.config import Config

    bucket, _, key = source_uri.removeprefix("s3://").partition("/")
    # The NAS object store throttles bursts with 503 SlowDown; back off instead of failing the run.
    s3 = boto3.client("s3", config=Config(retries={"max_attempts": 8, "mode": "adaptive"}))
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")

    seen: set[str] = set()
    samples = []
    for line in body.splitlines():
        if not line.strip():
            continue
        digest = hashlib.sha256(line.encode("utf-8")).hexdigest()
        if digest not in seen:
            seen.add(digest)
            samples.append(json.loads(line))

    random.Random(seed).shuffle(samples)
    samples = samples[:max_samples]
    n_valid = max(1, int(len(samples) * valid_fraction))
    for artifact, rows in ((valid_split, samples[:n_valid]), (train_split, samples[n_valid:])):
        with open(artifact.path, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        artifact.metadata["samples"] = len(rows)
    return len(samples)


@dsl.component(base_image=TRAINER_IMAGE)
def train_adapter(
    base_model: str,
    iterations: int,
    learning_rate: float,
    lora_rank: int,
    train_split: dsl.Input[dsl.Dataset],
    valid_split: dsl.Input[dsl.Dataset],
    adapter: dsl.Output[dsl.Model],
) -> None:
    """Fine-tune a LoRA adapter on the training split with the in-house ``lora-trainer`` CLI."""
    import subprocess

    subprocess.run(
        [
            "lora-trainer", "train",
            "--base-model", base_model,
            "--train", train_split.path,
            "--valid", valid_split.path,
            "--iterations", str(iterations),
            "--learning-rate", str(learning_rate),
            "--rank", str(lora_rank),
            "--output", adapter.path,
        ],
        check=True,
    )
    adapter.metadata.update({"base_model": base_model, "iterations": iterations})


@dsl.component(base_image=TRAINER_IMAGE)
def evaluate_adapter(
    base_model: str,
    max_new_tokens: int,
    adapter: dsl.Input[dsl.Model],
    valid_split: dsl.Input[dsl.Dataset],
    metrics: dsl.Output[dsl.Metrics],
) -> float:
    """Complete every validation prompt with the adapter and score the exact-match pass rate.

    Returns the pass rate in ``[0, 1]`` so that the pipeline can gate publishing on it.
    """
    import json
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        subprocess.run(
            [
                "lora-trainer", "evaluate",
                "--base-model", base_model,
                "--adapter", adapter.path,
                "--data", valid_split.path,
                "--max-new-tokens", str(max_new_tokens),
                "--report", report.name,
            ],
            check=True,
        )
        with open(report.name, encoding="utf-8") as fh:
            result = json.load(fh)
    pass_rate = result["passed"] / result["total"] if result["total"] else 0.0
    metrics.log_metric("pass_rate", pass_rate)
    metrics.log_metric("samples", result["total"])
    return pass_rate


@dsl.component(base_image=BASE_IMAGE, packages_to_install=S3_PACKAGES)
def publish_adapter(adapter: dsl.Input[dsl.Model], destination_uri: str) -> str:
    """Upload every file of the adapter directory below ``destination_uri``; return its URI."""
    import os

    import boto3

    bucket, _, prefix = destination_uri.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")
    for dirpath, _dirs, names in os.walk(adapter.path):
        for name in sorted(names):
            local = os.path.join(dirpath, name)
            relative = os.path.relpath(local, adapter.path)
            key = f"{prefix.rstrip('/')}/{relative}" if prefix else relative
            s3.upload_file(local, bucket, key)
    return destination_uri.rstrip("/")
''')

_KFP_COMPONENTS_BEFORE_RETRY = _edit(
    _KFP_COMPONENTS,
    ("    from botocore.config import Config\n", ""),
    (
        _slice(_KFP_COMPONENTS, "    # The NAS object store", "    body = s3"),
        '    s3 = boto3.client("s3")\n',
    ),
)
_KFP_COMPONENTS_BEFORE_EVAL = _edit(
    _KFP_COMPONENTS_BEFORE_RETRY,
    (_slice(_KFP_COMPONENTS, "@dsl.component(base_image=TRAINER_IMAGE)\ndef evaluate", "@dsl"), ""),
)

_KFP_PIPELINE = _src(r'''
"""The LoRA fine-tuning pipeline, and a command that compiles it to KFP IR YAML."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

from kfp import compiler, dsl

from kfp_training_pipelines.components import (
    evaluate_adapter,
    prepare_dataset,
    publish_adapter,
    train_adapter,
)
from kfp_training_pipelines.storage import S3Location

PIPELINE_NAME = "coder-lora-finetune"
ARTIFACT_ROOT = S3Location("training-data", "coder")


@dataclass(frozen=True)
class PipelineDefaults:
    """Default run arguments; each one can be overridden per run in the KFP UI."""

    source_uri: str = ARTIFACT_ROOT.child("datasets", "latest", "samples.jsonl").uri
    destination_uri: str = ARTIFACT_ROOT.child("adapters", "candidate").uri
    base_model: str = "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    max_samples: int = 20_000
    valid_fraction: float = 0.05
    seed: int = 17
    iterations: int = 600
    learning_rate: float = 1e-4
    lora_rank: int = 16
    max_new_tokens: int = 256
    min_pass_rate: float = 0.35

    def as_arguments(self) -> dict[str, object]:
        """Return the defaults as the ``arguments`` mapping of a KFP run."""
        return asdict(self)


DEFAULTS = PipelineDefaults()


@dsl.pipeline(name=PIPELINE_NAME, description="Fine-tune a LoRA adapter for the homelab coder.")
def finetune_pipeline(
    source_uri: str = DEFAULTS.source_uri,
    destination_uri: str = DEFAULTS.destination_uri,
    base_model: str = DEFAULTS.base_model,
    max_samples: int = DEFAULTS.max_samples,
    valid_fraction: float = DEFAULTS.valid_fraction,
    seed: int = DEFAULTS.seed,
    iterations: int = DEFAULTS.iterations,
    learning_rate: float = DEFAULTS.learning_rate,
    lora_rank: int = DEFAULTS.lora_rank,
    max_new_tokens: int = DEFAULTS.max_new_tokens,
    min_pass_rate: float = DEFAULTS.min_pass_rate,
) -> None:
    """Prepare the dataset, train an adapter, evaluate it and publish it only if it passes."""
    prepared = prepare_dataset(
        source_uri=source_uri, max_samples=max_samples, valid_fraction=valid_fraction, seed=seed
    )
    trained = train_adapter(
        base_model=base_model,
        iterations=iterations,
        learning_rate=learning_rate,
        lora_rank=lora_rank,
        train_split=prepared.outputs["train_split"],
        valid_split=prepared.outputs["valid_split"],
    )
    # The GPU node has a single card; caching would hide a changed trainer image.
    trained.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    trained.set_caching_options(False)
    evaluated = evaluate_adapter(
        base_model=base_model,
        max_new_tokens=max_new_tokens,
        adapter=trained.outputs["adapter"],
        valid_split=prepared.outputs["valid_split"],
    )
    evaluated.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    with dsl.If(evaluated.output >= min_pass_rate, name="pass-rate-gate"):
        publish_adapter(adapter=trained.outputs["adapter"], destination_uri=destination_uri)


def compile_pipeline(package_path: Path) -> Path:
    """Compile :func:`finetune_pipeline` to ``package_path`` and return that path."""
    package_path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(finetune_pipeline, package_path=str(package_path))
    return package_path


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m kfp_training_pipelines.pipeline -o build/pipeline.yaml``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-o", "--output", type=Path, default=Path("build/finetune_pipeline.yaml"))
    args = parser.parse_args(argv)
    compile_pipeline(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
''')

_KFP_PIPELINE_BEFORE_GATE = _edit(
    _KFP_PIPELINE,
    (
        _slice(_KFP_PIPELINE, "from kfp_training_pipelines.components import (", "from kfp_t"),
        "from kfp_training_pipelines.components import "
        "prepare_dataset, publish_adapter, train_adapter\n",
    ),
    ("    max_new_tokens: int = 256\n    min_pass_rate: float = 0.35\n", ""),
    (
        "    max_new_tokens: int = DEFAULTS.max_new_tokens,\n"
        "    min_pass_rate: float = DEFAULTS.min_pass_rate,\n",
        "",
    ),
    (
        "train an adapter, evaluate it and publish it only if it passes.",
        "train an adapter and publish it.",
    ),
    (
        _slice(_KFP_PIPELINE, "    evaluated = evaluate_adapter(", "\n\ndef compile_pipeline"),
        '    publish_adapter(adapter=trained.outputs["adapter"], '
        "destination_uri=destination_uri)\n",
    ),
)

_KFP_TESTS = _src(r'''
"""Tests for the helpers and the pipeline wiring that run without a KFP cluster."""

import pytest

from kfp_training_pipelines import components
from kfp_training_pipelines.pipeline import DEFAULTS, finetune_pipeline
from kfp_training_pipelines.storage import S3Location, adapter_location, dataset_location


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix"),
    [
        ("s3://training-data", "training-data", ""),
        ("s3://training-data/coder", "training-data", "coder"),
        ("s3://training-data/coder/datasets/", "training-data", "coder/datasets"),
    ],
)
def test_parse_splits_bucket_and_prefix(uri: str, bucket: str, prefix: str) -> None:
    location = S3Location.parse(uri)
    assert (location.bucket, location.prefix) == (bucket, prefix)
    assert S3Location.parse(location.uri) == location


@pytest.mark.parametrize("uri", ["https://rustfs.homelab.example/x", "s3://", "s3://Upper/case"])
def test_parse_rejects_other_schemes_and_bad_buckets(uri: str) -> None:
    with pytest.raises(ValueError):
        S3Location.parse(uri)


def test_locations_follow_the_bucket_layout() -> None:
    root = S3Location("training-data", "coder")
    assert dataset_location(root, "homelab", "2024-03-01").uri == (
        "s3://training-data/coder/datasets/homelab/2024-03-01"
    )
    assert adapter_location(root, "run-7f3a").uri == "s3://training-data/coder/adapters/run-7f3a"


def test_defaults_cover_every_pipeline_parameter() -> None:
    assert set(DEFAULTS.as_arguments()) == set(finetune_pipeline.component_spec.inputs)


def test_prepare_dataset_declares_both_splits() -> None:
    outputs = components.prepare_dataset.component_spec.outputs
    assert {"train_split", "valid_split"} <= set(outputs)


def test_child_strips_slashes():
    # TODO parametrize, and what about empty parts in the middle?
    assert S3Location("training-data").child("/a/", "b").uri == "s3://training-data/a/b"
''')

_KFP_TESTS_BEFORE_WIP = _KFP_TESTS[: _KFP_TESTS.index("\n\n\ndef test_child_strips")] + "\n"

_KFP_README = _src("""
# kfp-training-pipelines

Kubeflow Pipelines (KFP v2) that turn the homelab coding dataset into a LoRA adapter for the
coding model.

![pipeline](docs/diagram.png)

1. `prepare_dataset` reads `samples.jsonl` from the object store, drops exact duplicates and writes
   a seeded train/validation split.
2. `train_adapter` fine-tunes a LoRA adapter with the in-house `lora-trainer` image on the GPU node.
3. `evaluate_adapter` scores the adapter on the validation split (exact-match pass rate).
4. `publish_adapter` uploads the adapter to `s3://training-data/coder/adapters/`, but only when
   the pass rate reaches `min_pass_rate`.

## Usage

    pip install -e '.[dev]'
    pytest
    python -m kfp_training_pipelines.pipeline -o build/finetune_pipeline.yaml

Upload the compiled YAML through the KFP UI. The components find the object store through
`AWS_ENDPOINT_URL` and take credentials from the `rustfs-credentials` secret.
""")

_KFP_README_BEFORE_DIAGRAM = _edit(
    _KFP_README,
    ("![pipeline](docs/diagram.png)\n\n", ""),
    (
        _slice(_KFP_README, "3. `evaluate_adapter`", "## Usage"),
        "3. `publish_adapter` uploads the adapter to `s3://training-data/coder/adapters/`.\n\n",
    ),
)

_KFP_GITIGNORE = _src("""
__pycache__/
*.egg-info/
.venv/
.pytest_cache/
build/
""")


def _kfp_training_pipelines() -> _RepoSpec:
    package = "src/kfp_training_pipelines"
    commits = (
        _Commit(
            _at("2024-03-04 20:05"),
            "Add KFP fine-tuning pipeline package",
            {
                ".gitignore": _KFP_GITIGNORE,
                "README.md": _KFP_README_BEFORE_DIAGRAM,
                "pyproject.toml": _edit(_KFP_PYPROJECT, ('"0.2.0"', '"0.1.0"')),
                f"{package}/__init__.py": _edit(_KFP_INIT, ('"0.2.0"', '"0.1.0"')),
                f"{package}/components.py": _KFP_COMPONENTS_BEFORE_EVAL,
                f"{package}/pipeline.py": _KFP_PIPELINE_BEFORE_GATE,
                f"{package}/storage.py": _KFP_STORAGE,
                f"{package}/report.py": _KFP_REPORT,
                "tests/test_components.py": _KFP_TESTS_BEFORE_WIP,
            },
        ),
        _Commit(
            _at("2024-03-06 21:40"),
            "Add evaluate_adapter component",
            {f"{package}/components.py": _KFP_COMPONENTS_BEFORE_RETRY},
        ),
        _Commit(
            _at("2024-03-07 19:12"),
            "Gate adapter publishing on the evaluation pass rate\n\n"
            "A run with a broken trainer image published an adapter that answered every prompt\n"
            "with an empty string. Only publish when the pass rate reaches min_pass_rate.",
            {f"{package}/pipeline.py": _KFP_PIPELINE},
        ),
        _Commit(
            _at("2024-03-09 10:25"),
            "Add pipeline diagram and document the evaluation gate",
            {"docs/diagram.png": _png(32, 16), "README.md": _KFP_README},
        ),
        _Commit(_at("2024-03-11 22:48"), "wip", {"tests/test_components.py": _KFP_TESTS}),
        _Commit(
            _at("2024-03-14 18:31"),
            "Retry throttled S3 reads in prepare_dataset",
            {f"{package}/components.py": _KFP_COMPONENTS},
        ),
        _Commit(
            _at("2024-03-15 09:02"),
            "Bump version to 0.2.0",
            {"pyproject.toml": _KFP_PYPROJECT, f"{package}/__init__.py": _KFP_INIT},
        ),
        # The kind of slip a homelab repo really has: development credentials committed with a
        # compose file. The samples stage must redact them (the demo shows the count).
        _Commit(
            _at("2024-03-16 11:40"),
            "Add a local MinIO for pipeline development",
            {"dev/docker-compose.yaml": _KFP_DEV_COMPOSE, "dev/.env": _KFP_DEV_ENV},
        ),
    )
    return _RepoSpec("kfp-training-pipelines", _OPERATOR, commits)


_KFP_DEV_COMPOSE = _src("""
services:
  minio:
    image: quay.io/minio/minio:RELEASE.2024-03-15T01-07-19Z
    command: server /data --console-address ":9001"
    ports:
      - "9000:9000"
      - "9001:9001"
    environment:
      MINIO_ROOT_USER: pipelines
      MINIO_ROOT_PASSWORD: "kfp-dev-m1n10-Pa55word"
    volumes:
      - minio-data:/data
volumes:
  minio-data: {}
""")

_KFP_DEV_ENV = _src("""
# Local development only: points the pipeline components at the compose MinIO.
AWS_ENDPOINT_URL=http://127.0.0.1:9000
AWS_ACCESS_KEY_ID=pipelines
AWS_SECRET_ACCESS_KEY=kfp-dev-m1n10-Pa55word
DATASET_BUCKET=training-data
""")


# --------------------------------------------------------------------------------------------
# homelab-flux: Flux / Kustomize manifests
# --------------------------------------------------------------------------------------------


def _kustomize(*resources: str) -> str:
    """A kustomize.config.k8s.io Kustomization listing `resources`."""
    lines = ["apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization", "resources:"]
    return "\n".join([*lines, *(f"  - {resource}" for resource in resources)]) + "\n"


_FLUX_GOTK_COMPONENTS = _src("""
# This manifest was generated by flux. DO NOT EDIT.
# Flux Version: v2.3.0
# Components: source-controller,kustomize-controller,helm-controller,notification-controller
---
apiVersion: v1
kind: Namespace
metadata:
  labels:
    app.kubernetes.io/instance: flux-system
    app.kubernetes.io/part-of: flux
    app.kubernetes.io/version: v2.3.0
    pod-security.kubernetes.io/warn: restricted
    pod-security.kubernetes.io/warn-version: latest
  name: flux-system
""")

_FLUX_GOTK_SYNC = _src("""
# This manifest was generated by flux. DO NOT EDIT.
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata:
  name: flux-system
  namespace: flux-system
spec:
  interval: 1m0s
  ref:
    branch: main
  secretRef:
    name: flux-system
  url: ssh://git@gitea.homelab.example/homelab/homelab-flux.git
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: flux-system
  namespace: flux-system
spec:
  interval: 10m0s
  path: ./clusters/homelab
  prune: true
  sourceRef:
    kind: GitRepository
    name: flux-system
""")

_FLUX_INFRASTRUCTURE_KS = _src("""
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: infrastructure
  namespace: flux-system
spec:
  interval: 10m
  retryInterval: 1m
  timeout: 5m
  path: ./infrastructure
  prune: true
  wait: true
  sourceRef:
    kind: GitRepository
    name: flux-system
""")

_FLUX_APPS_KS = _src("""
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: apps
  namespace: flux-system
spec:
  # Apps need the namespaces, NATS and the Argo controller from infrastructure.
  dependsOn:
    - name: infrastructure
  interval: 10m
  path: ./apps
  prune: true
  sourceRef:
    kind: GitRepository
    name: flux-system
""")

_FLUX_NAMESPACES = _src("""
apiVersion: v1
kind: Namespace
metadata:
  name: messaging
  labels:
    homelab.example/tier: infrastructure
---
apiVersion: v1
kind: Namespace
metadata:
  name: argo
  labels:
    homelab.example/tier: infrastructure
---
apiVersion: v1
kind: Namespace
metadata:
  name: orders
  labels:
    homelab.example/tier: apps
    pod-security.kubernetes.io/enforce: restricted
""")

_FLUX_HELM_REPOSITORIES = _src("""
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata:
  name: nats
  namespace: flux-system
spec:
  interval: 12h
  url: https://nats-io.github.io/k8s/helm/charts/
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata:
  name: argo
  namespace: flux-system
spec:
  interval: 12h
  url: https://argoproj.github.io/argo-helm
""")

_FLUX_NATS_RELEASE = _src("""
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: nats
  namespace: messaging
spec:
  interval: 30m
  chart:
    spec:
      chart: nats
      version: 1.2.1
      sourceRef:
        kind: HelmRepository
        name: nats
        namespace: flux-system
      interval: 12h
  install:
    remediation:
      retries: 3
  upgrade:
    remediation:
      retries: 3
  values:
    config:
      cluster:
        enabled: false
      jetstream:
        enabled: true
        fileStore:
          pvc:
            size: 20Gi
            storageClassName: local-path
      monitor:
        enabled: true
    natsBox:
      enabled: true
    podTemplate:
      merge:
        spec:
          nodeSelector:
            homelab.example/storage: ssd
""")

_FLUX_NATS_RELEASE_BEFORE_RESIZE = _edit(_FLUX_NATS_RELEASE, ("size: 20Gi", "size: 10Gi"))
_FLUX_NATS_RELEASE_BEFORE_BUMP = _edit(
    _FLUX_NATS_RELEASE_BEFORE_RESIZE, ("version: 1.2.1", "version: 1.1.12")
)

_FLUX_ARGO_RELEASE = _src("""
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: argo-workflows
  namespace: argo
spec:
  interval: 30m
  chart:
    spec:
      chart: argo-workflows
      version: 0.41.14
      sourceRef:
        kind: HelmRepository
        name: argo
        namespace: flux-system
  values:
    controller:
      workflowNamespaces:
        - argo
      metricsConfig:
        enabled: true
    server:
      authModes:
        - server
      extraArgs:
        - --basehref=/argo/
    workflow:
      serviceAccount:
        create: true
        name: argo-workflow
""")

_FLUX_WORKFLOWS = _src("""
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata:
  name: nightly-dataset-refresh
  namespace: argo
  labels:
    app.kubernetes.io/part-of: coder-dataset
spec:
  entrypoint: refresh
  serviceAccountName: argo-workflow
  activeDeadlineSeconds: 7200  # FIXME: tighten once a week of runs is in
  ttlStrategy:
    secondsAfterCompletion: 86400
  arguments:
    parameters:
      - name: dagster-job
        value: refresh_dataset
      - name: since
        value: 24h
  templates:
    - name: refresh
      steps:
        - - name: launch
            template: launch-dagster-job
            arguments:
              parameters:
                - name: job
                  value: "{{workflow.parameters.dagster-job}}"
        - - name: notify
            template: notify
            arguments:
              parameters:
                - name: status
                  value: "{{steps.launch.status}}"
    - name: launch-dagster-job
      inputs:
        parameters:
          - name: job
      retryStrategy:
        limit: "2"
        retryPolicy: OnFailure
      container:
        image: registry.homelab.example/tools/dagster-launcher:1.2.0
        command: [dagster-launch]
        args: ["--job", "{{inputs.parameters.job}}", "--since", "{{workflow.parameters.since}}"]
        env:
          - name: DAGSTER_GRAPHQL_URL
            value: http://dagster-webserver.dagster.svc.cluster.local/graphql
    - name: notify
      inputs:
        parameters:
          - name: status
      container:
        image: natsio/nats-box:0.14.3
        command: [nats]
        args:
          - pub
          - --server=nats://nats.messaging.svc.cluster.local:4222
          - homelab.workflows.finished
          - "nightly-dataset-refresh {{inputs.parameters.status}}"
---
apiVersion: argoproj.io/v1alpha1
kind: CronWorkflow
metadata:
  name: nightly-dataset-refresh
  namespace: argo
spec:
  schedule: "30 2 * * *"
  timezone: Europe/Berlin
  concurrencyPolicy: Forbid
  workflowSpec:
    workflowTemplateRef:
      name: nightly-dataset-refresh
""")

_FLUX_WORKFLOWS_BEFORE_WIP = _edit(
    _FLUX_WORKFLOWS,
    ("  activeDeadlineSeconds: 7200  # FIXME: tighten once a week of runs is in\n", ""),
)

_FLUX_ORDERS_KS = _src("""
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: order-events-handler
  namespace: flux-system
spec:
  interval: 5m
  path: ./apps/order-events-handler/deploy
  prune: true
  targetNamespace: orders
  sourceRef:
    kind: GitRepository
    name: flux-system
  healthChecks:
    - apiVersion: apps/v1
      kind: Deployment
      name: order-events-handler
      namespace: orders
""")

_FLUX_ORDERS_DEPLOY_KUSTOMIZATION = _src("""
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - deployment.yaml
images:
  - name: registry.homelab.example/apps/order-events-handler
    newTag: 0.4.0
""")

_FLUX_ORDERS_DEPLOYMENT = _src("""
apiVersion: v1
kind: ServiceAccount
metadata:
  name: order-events-handler
automountServiceAccountToken: false
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: order-events-handler
  labels:
    app.kubernetes.io/name: order-events-handler
spec:
  replicas: 2
  selector:
    matchLabels:
      app.kubernetes.io/name: order-events-handler
  template:
    metadata:
      labels:
        app.kubernetes.io/name: order-events-handler
    spec:
      serviceAccountName: order-events-handler
      terminationGracePeriodSeconds: 30
      securityContext:
        runAsNonRoot: true
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: handler
          image: registry.homelab.example/apps/order-events-handler:0.4.0
          env:
            - name: NATS_URL
              value: nats://nats.messaging.svc.cluster.local:4222
            - name: ORDERS_SUBJECT
              value: orders.created
          resources:
            requests:
              cpu: 20m
              memory: 32Mi
            limits:
              memory: 128Mi
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
""")

_FLUX_README = _src("""
# homelab-flux

GitOps source of truth for the homelab Kubernetes cluster. Flux watches `main` and reconciles:

- `clusters/homelab/flux-system`: Flux itself, as written by `flux bootstrap`;
- `clusters/homelab/infrastructure.yaml` -> `infrastructure/`: namespaces, Helm repositories and
  the shared services (NATS with JetStream, Argo Workflows);
- `clusters/homelab/apps.yaml` -> `apps/`: workloads such as `order-events-handler` and the
  nightly dataset refresh WorkflowTemplate. Apps depend on infrastructure.

## Day to day

    flux get kustomizations
    flux reconcile kustomization apps --with-source
    flux diff kustomization apps --path ./apps

Chart upgrades are a one-line change of `spec.chart.spec.version` in the HelmRelease. Never edit
the generated `gotk-*.yaml` files by hand; rerun `flux bootstrap` instead.
""")


def _homelab_flux() -> _RepoSpec:
    nats = "infrastructure/nats/helmrelease.yaml"
    workflows = "apps/workflows/nightly-dataset-refresh.yaml"
    deployment = "apps/order-events-handler/deploy/deployment.yaml"
    infra = ("namespaces.yaml", "sources/helm-repositories.yaml")
    commits = (
        _Commit(
            _at("2024-01-13 15:20"),
            "Bootstrap Flux on the homelab cluster",
            {
                "README.md": _FLUX_README,
                "clusters/homelab/flux-system/gotk-components.yaml": _FLUX_GOTK_COMPONENTS,
                "clusters/homelab/flux-system/gotk-sync.yaml": _FLUX_GOTK_SYNC,
                "clusters/homelab/flux-system/kustomization.yaml": _kustomize(
                    "gotk-components.yaml", "gotk-sync.yaml"
                ),
            },
        ),
        _Commit(
            _at("2024-01-13 16:05"),
            "Add namespaces and Helm repositories",
            {
                "clusters/homelab/infrastructure.yaml": _FLUX_INFRASTRUCTURE_KS,
                "infrastructure/kustomization.yaml": _kustomize(*infra),
                "infrastructure/namespaces.yaml": _FLUX_NAMESPACES,
                "infrastructure/sources/helm-repositories.yaml": _FLUX_HELM_REPOSITORIES,
            },
        ),
        _Commit(
            _at("2024-01-14 11:47"),
            "Deploy NATS with JetStream",
            {
                nats: _FLUX_NATS_RELEASE_BEFORE_BUMP,
                "infrastructure/kustomization.yaml": _kustomize(*infra, "nats/helmrelease.yaml"),
            },
        ),
        _Commit(
            _at("2024-01-20 14:10"),
            "Add Argo Workflows and the nightly dataset refresh",
            {
                "clusters/homelab/apps.yaml": _FLUX_APPS_KS,
                "infrastructure/argo-workflows/helmrelease.yaml": _FLUX_ARGO_RELEASE,
                "infrastructure/kustomization.yaml": _kustomize(
                    *infra, "nats/helmrelease.yaml", "argo-workflows/helmrelease.yaml"
                ),
                "apps/kustomization.yaml": _kustomize("workflows/nightly-dataset-refresh.yaml"),
                workflows: _FLUX_WORKFLOWS_BEFORE_WIP,
            },
        ),
        _Commit(
            _at("2024-02-10 12:34"),
            "Deploy order-events-handler",
            {
                "apps/kustomization.yaml": _kustomize(
                    "order-events-handler/ks.yaml", "workflows/nightly-dataset-refresh.yaml"
                ),
                "apps/order-events-handler/ks.yaml": _FLUX_ORDERS_KS,
                "apps/order-events-handler/deploy/kustomization.yaml": (
                    _FLUX_ORDERS_DEPLOY_KUSTOMIZATION
                ),
                deployment: _edit(_FLUX_ORDERS_DEPLOYMENT, ("replicas: 2", "replicas: 1")),
            },
        ),
        _Commit(
            _at("2024-02-17 10:15"),
            "Bump NATS chart to 1.2.1",
            {nats: _FLUX_NATS_RELEASE_BEFORE_RESIZE},
        ),
        _Commit(
            _at("2024-02-24 16:40"),
            "Grow the JetStream file store to 20Gi\n\n"
            "The ORDERS stream hit its limit after three weeks of retained events.",
            {nats: _FLUX_NATS_RELEASE},
        ),
        _Commit(_at("2024-02-25 23:58"), "wip", {workflows: _FLUX_WORKFLOWS}),
        _Commit(
            _at("2024-03-03 13:05"),
            "Run two order-events-handler replicas",
            {deployment: _FLUX_ORDERS_DEPLOYMENT},
        ),
    )
    return _RepoSpec("homelab-flux", _OPERATOR, commits)


# --------------------------------------------------------------------------------------------
# homelab-adrs: architectural decision records in MADR format
# --------------------------------------------------------------------------------------------

_ADR_DIR = "docs/decisions"

_ADR_TEMPLATE = _src("""
---
status: proposed
date: YYYY-MM-DD
deciders: Homelab Operator
---
# Short title: the problem and the chosen solution, in a few words

## Context and Problem Statement

What forces a decision now? Two or three sentences, ending with the question being answered.

## Decision Drivers

* A property the solution must have
* A constraint of the homelab (power, noise, money, time to operate)

## Considered Options

* Option one
* Option two

## Decision Outcome

Chosen option: "Option one", because it is the only one that meets every driver.

### Consequences

* Good, because something gets simpler or cheaper
* Bad, because something else now needs care

## Pros and Cons of the Options

### Option one

* Good, because ...
* Bad, because ...

### Option two

* Good, because ...
* Bad, because ...

## More Information

Links to trials, benchmarks and the repositories that implement the decision.
""")

_ADR_0000 = _src("""
---
status: accepted
date: 2024-01-06
deciders: Homelab Operator
---
# Use Markdown Architectural Decision Records

## Context and Problem Statement

The homelab grew from a single Raspberry Pi into a small Kubernetes cluster, a Mac Mini that
serves the coding model, and a handful of services talking over a message bus. Decisions such as
"why NATS" or "why is training data not on the NAS" were made in chat threads and forgotten
within weeks. When something breaks late at night, the reasoning behind the setup is exactly what
is missing.

Where, and in what shape, should decisions be written down so that they can be found and trusted
months later?

## Decision Drivers

* Lives next to the code and manifests, versioned in the same Gitea instance
* Plain text that renders in Gitea and reads well in a terminal
* Low ceremony: a record must take minutes to write, not an evening
* A fixed structure, so that records can be compared and processed by tools

## Considered Options

* MADR files in `docs/decisions`
* Free-form ADRs with only context, decision and consequences
* Pages in the homelab wiki
* No records; rely on commit messages

## Decision Outcome

Chosen option: "MADR files in `docs/decisions`", because they are plain Markdown in git, the
template asks for the parts that were always skipped (rejected options, consequences) and its
optional sections can be left out for small decisions.

### Consequences

* Good, because decisions are reviewed and versioned like any other change
* Good, because the fixed headings make records quick to scan and easy to parse
* Bad, because the records are not linked from the wiki and must be found through the README
* Bad, because superseded records stay in the folder and their status must be kept current

## Pros and Cons of the Options

### MADR files in `docs/decisions`

* Good, because the template asks for alternatives and consequences explicitly
* Good, because the front matter (status, date) is machine-readable
* Neutral, because a record is longer than a free-form note

### Free-form ADRs with only context, decision and consequences

* Good, because they are short and quick to write
* Bad, because rejected alternatives have no section and tend to be left out

### Pages in the homelab wiki

* Good, because the wiki has search and is already bookmarked everywhere
* Bad, because wiki edits are not reviewed, and its database is one more thing to back up
* Bad, because pages drift away from the repositories they describe

### No records; rely on commit messages

* Good, because it costs nothing
* Bad, because commit messages say what changed, rarely why the alternatives lost
""")

_ADR_0001 = _src("""
---
status: accepted
date: 2024-01-09
deciders: Homelab Operator
---
# Use NATS with JetStream for service messaging

## Context and Problem Statement

The storefront, the order handlers and the home-automation bridge exchange events. Until now
they called each other over HTTP, so a restart of one service lost events for the others. Which
message broker should the homelab run for service-to-service events?

## Decision Drivers

* Fits on a three-node cluster of small machines next to everything else
* Durable streams for events that must survive restarts, plain pub/sub for the rest
* Request/reply for the few synchronous calls, without a second system
* Mature Go client, because the services are written from the Go `handler-base` template

## Considered Options

* NATS with JetStream
* Apache Kafka (KRaft mode)
* RabbitMQ

## Decision Outcome

Chosen option: "NATS with JetStream", because it covers pub/sub, request/reply and durable
streams in one small binary, and its Helm chart runs comfortably on the existing nodes.

### Consequences

* Good, because a single NATS server with JetStream idles at a few tens of MiB of memory
* Good, because subjects and queue groups map directly onto the handler-base layout
* Bad, because the Kafka ecosystem (Connect, ksqlDB) is not available and must not be assumed
* Bad, because JetStream streams and consumers are configured outside Helm and need their own
  bootstrap job
* Good, because the two-week JetStream trial lost no events across eleven node restarts

## Pros and Cons of the Options

### NATS with JetStream

* Good, because one binary provides core pub/sub, request/reply and persistence
* Good, because the `nats` CLI makes debugging a subject a one-liner
* Bad, because exactly-once delivery needs deduplication windows that must be tuned per stream

### Apache Kafka (KRaft mode)

* Good, because it is the industry default with the largest ecosystem
* Bad, because its JVM memory footprint alone would claim most of one node
* Bad, because request/reply would still need HTTP or a second broker

### RabbitMQ

* Good, because routing with exchanges is flexible and well documented
* Neutral, because streams exist but are newer than its classic queues
* Bad, because the Erlang runtime is one more thing nobody in this household can debug

## More Information

The NATS HelmRelease lives in `homelab-flux/infrastructure/nats`.
""")

_ADR_0001_PROPOSED = _edit(
    _ADR_0001,
    ("status: accepted", "status: proposed"),
    (
        "* Good, because the two-week JetStream trial lost no events across eleven node restarts\n",
        "",
    ),
)

_ADR_0002 = _src("""
---
status: accepted
date: 2024-01-12
deciders: Homelab Operator
---
# Use Flux for GitOps

## Context and Problem Statement

Cluster changes are made with `kubectl apply` and `helm upgrade` from a laptop, and the live
state has drifted from every file in git. Rebuilding a node took an afternoon of guessing. How
should the desired state of the cluster be kept in git and applied automatically?

## Decision Drivers

* Everything declarative and reviewable in Gitea, including Helm releases
* Small resource footprint; no extra database
* Works without a web UI; the terminal and Gitea are enough
* Pruning of resources removed from git

## Considered Options

* Flux
* Argo CD
* A CI job running `kubectl apply` on every push

## Decision Outcome

Chosen option: "Flux", because its controllers are small, Helm releases are plain custom
resources in git, and dependencies between layers (infrastructure before apps) are expressed in
the Kustomization objects themselves.

### Consequences

* Good, because a node rebuild is now `flux bootstrap` plus waiting
* Good, because chart upgrades are one-line pull requests that show up in the history
* Bad, because there is no built-in UI to see sync status; `flux get` has to do
* Bad, because secrets need SOPS or an external store before they can live in the repository

## Pros and Cons of the Options

### Flux

* Good, because HelmRelease and Kustomization are ordinary resources with health checks
* Good, because `dependsOn` orders infrastructure before apps without sync waves
* Bad, because troubleshooting means reading events from several controllers

### Argo CD

* Good, because its UI shows the diff between git and the cluster at a glance
* Bad, because the UI, repo server and Redis cost memory the small nodes do not have to spare
* Neutral, because Argo Workflows is used anyway, but it does not share anything with Argo CD

### A CI job running `kubectl apply` on every push

* Good, because it needs no controller in the cluster at all
* Bad, because nothing corrects drift between pushes
* Bad, because the CI runner would need cluster-admin credentials
""")

_ADR_0003 = _src("""
---
status: accepted
date: 2024-02-03
deciders: Homelab Operator
---
# Serve the coding model with MLX on a Mac Mini

## Context and Problem Statement

Editor completions and the chat assistant call a hosted model today. Private repositories leave
the house with every request, and the monthly bill grows with use. A local coding model has to
answer fast enough for inline completion. Where should it run?

## Decision Drivers

* Completion latency low enough for inline suggestions
* Enough memory for a 7B to 14B model with room for a LoRA adapter
* Quiet and frugal: the machine sits in the living room and runs all day
* Fine-tuning on the same machine, so that adapters can be trained at night

## Considered Options

* Mac Mini with Apple silicon, serving through MLX
* A GPU node in the cluster with a consumer NVIDIA card
* CPU inference on the existing cluster nodes
* Keep using a hosted model

## Decision Outcome

Chosen option: "Mac Mini with Apple silicon, serving through MLX", because its unified memory
holds a quantised 14B model and an adapter, it draws little power at idle, and `mlx-lm` both
serves and fine-tunes LoRA adapters on the same machine.

### Consequences

* Good, because completions stay inside the homelab
* Good, because nightly LoRA training can run on the idle machine
* Bad, because MLX needs macOS for Metal acceleration, so the Mac Mini is not a Kubernetes node
  and is managed with launchd instead of Flux
* Bad, because one machine is a single point of failure for completions

## Pros and Cons of the Options

### Mac Mini with Apple silicon, serving through MLX

* Good, because unified memory avoids the VRAM limit of consumer GPUs
* Good, because it is silent under load
* Bad, because raw token throughput is lower than a high-end GPU

### A GPU node in the cluster with a consumer NVIDIA card

* Good, because throughput is the highest of all options
* Bad, because 24 GB of VRAM limits model size and the card draws a lot of power
* Bad, because the fans are audible in the living room

### CPU inference on the existing cluster nodes

* Good, because it needs no new hardware
* Bad, because latency is far too high for inline completion

### Keep using a hosted model

* Good, because it has the best model quality and no maintenance
* Bad, because private code leaves the homelab with every request
""")

_ADR_0004 = _src("""
---
status: accepted
date: 2024-03-16
deciders: Homelab Operator
---
# Keep training data in RustFS

## Context and Problem Statement

The fine-tuning pipeline produces repository snapshots, extracted samples, dataset splits and
LoRA adapters. They were written to an NFS share on the NAS, which made concurrent writers
corrupt partially written files and gave no versioning. Where should training data and model
artifacts live?

## Decision Drivers

* S3 API, because Dagster, KFP components and the MLX tooling all speak it
* Runs on the NAS next to the disks, without a cluster of its own
* Objects can be versioned and retained by policy
* Restores must be tested, not assumed

## Considered Options

* RustFS on the NAS
* MinIO on the NAS
* The existing NFS share
* A hosted object store

## Decision Outcome

Chosen option: "RustFS on the NAS", because it provides the S3 API from a single binary on the
NAS, and a restore test of a full dataset version from its snapshot succeeded.

### Consequences

* Good, because every pipeline stage writes through the same S3 client configuration
* Good, because bucket versioning keeps every dataset version that a model was trained on
* Bad, because RustFS is younger than the alternatives and upgrades need a careful read of the
  release notes
* Bad, because credentials now have to be distributed to Dagster, KFP and the Mac Mini

## Pros and Cons of the Options

### RustFS on the NAS

* Good, because it is a single binary with a small memory footprint
* Good, because its S3 API worked unchanged with boto3 and the Dagster S3 resources
* Bad, because fewer people run it, so answers to odd problems are harder to find

### MinIO on the NAS

* Good, because it is widely deployed and well documented
* Neutral, because it would also have met every driver

### The existing NFS share

* Good, because it is already there
* Bad, because it has no atomic object writes and no versioning

### A hosted object store

* Good, because durability is somebody else's problem
* Bad, because uploading every snapshot costs bandwidth and money, and the data leaves the house
""")

_ADR_0004_PROPOSED = _edit(
    _ADR_0004, ("status: accepted", "status: proposed"), ("date: 2024-03-16", "date: 2024-03-10")
)
_ADR_0004_DRAFT = (
    _ADR_0004_PROPOSED[: _ADR_0004_PROPOSED.index("## Decision Outcome")]
    + "## Decision Outcome\n\nTODO: run the restore test before deciding.\n"
)

_ADR_README = _src("""
# homelab-adrs

Architectural decision records for the homelab, written in the MADR format. One file per
decision in `docs/decisions`, numbered in the order they were made; copy `adr-template.md` to
start a new one.

## Decisions

| ADR    | Decision                                      | Status   |
|--------|-----------------------------------------------|----------|
| [0000] | Use Markdown architectural decision records   | accepted |
| [0001] | Use NATS with JetStream (not Kafka)           | accepted |
| [0002] | Use Flux for GitOps (not Argo CD)             | accepted |
| [0003] | Serve the coding model with MLX on a Mac Mini | accepted |
| [0004] | Keep training data in RustFS                  | accepted |

[0000]: docs/decisions/0000-use-markdown-architectural-decision-records.md
[0001]: docs/decisions/0001-use-nats-with-jetstream-for-messaging.md
[0002]: docs/decisions/0002-use-flux-for-gitops.md
[0003]: docs/decisions/0003-serve-coding-model-with-mlx-on-mac-mini.md
[0004]: docs/decisions/0004-keep-training-data-in-rustfs.md

## Conventions

- `status` is one of proposed, accepted, rejected, deprecated or superseded by ADR-NNNN.
- A decision that changes gets a new record; the old one is marked superseded, never rewritten.
- `pre-commit run --all-files` lints the Markdown before pushing.
""")

_ADR_README_BEFORE_INDEX = _edit(
    _ADR_README, (_slice(_ADR_README, "## Decisions", "## Conventions"), "")
)

_ADR_PRECOMMIT = _src("""
repos:
  - repo: https://github.com/DavidAnson/markdownlint-cli2
    rev: v0.13.0
    hooks:
      - id: markdownlint-cli2
  - repo: https://github.com/pre-commit/pre-commit-hooks
    rev: v4.5.0
    hooks:
      - id: trailing-whitespace
      - id: end-of-file-fixer
""")


def _homelab_adrs() -> _RepoSpec:
    adr = {
        0: f"{_ADR_DIR}/0000-use-markdown-architectural-decision-records.md",
        1: f"{_ADR_DIR}/0001-use-nats-with-jetstream-for-messaging.md",
        2: f"{_ADR_DIR}/0002-use-flux-for-gitops.md",
        3: f"{_ADR_DIR}/0003-serve-coding-model-with-mlx-on-mac-mini.md",
        4: f"{_ADR_DIR}/0004-keep-training-data-in-rustfs.md",
    }
    commits = (
        _Commit(
            _at("2024-01-06 10:30"),
            "Adopt MADR for architectural decision records",
            {
                "README.md": _ADR_README_BEFORE_INDEX,
                ".pre-commit-config.yaml": _edit(_ADR_PRECOMMIT, ("v0.13.0", "v0.12.1")),
                f"{_ADR_DIR}/adr-template.md": _ADR_TEMPLATE,
                adr[0]: _ADR_0000,
            },
        ),
        _Commit(
            _at("2024-01-09 21:15"),
            "Propose NATS with JetStream for service messaging",
            {adr[1]: _ADR_0001_PROPOSED},
        ),
        _Commit(
            _at("2024-01-12 20:02"),
            "Record the decision to use Flux for GitOps",
            {adr[2]: _ADR_0002},
        ),
        _Commit(
            _at("2024-01-27 17:44"),
            "Accept the NATS decision after the JetStream trial",
            {adr[1]: _ADR_0001},
        ),
        _Commit(
            _at("2024-02-03 11:20"),
            "Record the decision to serve the coding model with MLX on a Mac Mini",
            {adr[3]: _ADR_0003},
        ),
        _Commit(_at("2024-03-10 22:31"), "wip", {adr[4]: _ADR_0004_DRAFT}),
        _Commit(
            _at("2024-03-16 14:05"),
            "Decide to keep training data in RustFS\n\n"
            "The restore test of a full dataset version from a snapshot passed.",
            {adr[4]: _ADR_0004},
        ),
        _Commit(
            _at("2024-03-18 19:50"),
            "Bump markdownlint-cli2 hook to v0.13.0",
            {".pre-commit-config.yaml": _ADR_PRECOMMIT},
        ),
        _Commit(
            _at("2024-03-18 20:10"),
            "Index the decisions in the README",
            {"README.md": _ADR_README},
        ),
    )
    return _RepoSpec("homelab-adrs", _OPERATOR, commits)


_SPECS: tuple[_RepoSpec, ...] = (
    _order_events_handler(),
    _kfp_training_pipelines(),
    _homelab_flux(),
    _homelab_adrs(),
)


def sample_corpus() -> list[str]:
    """Every text file version the sample repos ever hold, in a fixed order: the corpus the dev
    model's tokenizer is trained on (no git needed, so it is the same everywhere)."""
    texts: list[str] = []
    for spec in _SPECS:
        for change in spec.commits:
            for _, content in sorted(change.files.items()):
                if isinstance(content, str) and content:
                    texts.append(content)
    return texts
