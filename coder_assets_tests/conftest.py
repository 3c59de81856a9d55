"""Shared fixtures: real git repos, a Gitea API server of ours, resources on tmp paths."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from coder_assets.constants import COMMIT_SHA_TAG
from coder_assets.core.training.pretrain import CACHE_ENV, cached_dev_model
from coder_assets.resources.repos import RepoSourceResource
from coder_assets.resources.service import ModelServerResource
from coder_assets.resources.storage import ParquetIOManager, RepoMirrorsResource
from coder_assets.sensors import gitea_change_sensor
from coder_assets_tests.gitea_server import GiteaTestServer
from coder_assets_tests.mlflow_server import mlflow_server  # noqa: F401
from coder_assets_tests.s3_server import s3_server  # noqa: F401
from coder_assets_tests.sshd_server import sshd  # noqa: F401

# mlx-lm goes through huggingface_hub and transformers: nothing may be fetched from a hub in tests.
# A suite started from a background shell or a supervisor can inherit SIGTERM/SIGINT/SIGHUP as
# ignored, and every server and job the tests start would inherit that too: stopping them would
# then wait for the SIGKILL after each grace period. The tests run as if started from a terminal;
# the product's own handling of an ignored SIGTERM has tests of its own.
signal.signal(signal.SIGTERM, signal.SIG_DFL)
signal.signal(signal.SIGHUP, signal.SIG_DFL)
signal.signal(signal.SIGINT, signal.default_int_handler)

# Set before any test module imports mlx_lm, which reads these at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Looks like a real Gitea token (40 hex); tests assert it never shows up anywhere.
GITEA_TOKEN = "4f9a1c0ffee0ddba11c0ffee0ddba11c0ffee0dd"
GITEA_ORG = "homelab"
REPO_ROOT = Path(__file__).resolve().parents[1]

GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@homelab.example",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@homelab.example",
}


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with an isolated config and return stdout."""
    env = {**os.environ, **GIT_ENV}
    proc = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def file_at(repo: Path, sha: str, path: str) -> str:
    """The exact content of `path` at commit `sha` (no whitespace stripped)."""
    env = {**os.environ, **GIT_ENV}
    proc = subprocess.run(
        ["git", "show", f"{sha}:{path}"], cwd=repo, env=env, capture_output=True, check=True
    )
    return proc.stdout.decode("utf-8")


def init_repo(path: Path, *, bare: bool = False) -> Path:
    """A new, empty repository with default branch `main`."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main", "--template=", *(["--bare"] if bare else []), ".")
    return path


def commit(repo: Path, files: dict[str, str | bytes | None], message: str = "Change files") -> str:
    """Write (or delete, for None) `files` in working repo `repo`, commit, return the SHA."""
    for rel, content in files.items():
        target = repo / rel
        if content is None:
            git(repo, "rm", "-q", "--", rel)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
        git(repo, "add", "--", rel)
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def add_symlink(repo: Path, rel: str, target: str) -> None:
    (repo / rel).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, repo / rel)
    git(repo, "add", "--", rel)


def add_gitlink(repo: Path, rel: str, sha: str) -> None:
    """Stage a submodule entry (mode 160000) pointing at `sha`, as `git submodule add` would."""
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{sha},{rel}")


def lines_of(text: str, start: int, end: int) -> str:
    """Lines `start`..`end` (1-based, inclusive) of `text`, as provenance numbers them."""
    return "\n".join(text.splitlines()[start - 1 : end])


def assert_outputs_within_lines(text: str, pairs) -> None:
    """Every extracted pair's output stands within the lines its provenance names."""
    for pair in pairs:
        assert 1 <= pair.start_line <= pair.end_line <= len(text.splitlines())
        assert pair.output in lines_of(text, pair.start_line, pair.end_line)


def one_pair_mentioning(pairs, fragment: str):
    """The single pair whose instruction mentions `fragment`."""
    matches = [p for p in pairs if fragment in p.instruction]
    assert len(matches) == 1, [p.instruction for p in pairs]
    return matches[0]


def sample_repo_kinds(extract, repo_name: str, pattern: str, tmp_path: Path) -> Counter[str]:
    """Pair kinds that `extract` finds in the files matching `pattern` of one demo sample repo,
    asserting on the way that no file errors and every output stands within its lines."""
    from coder_assets.demo.sample_repos import create_sample_repos

    root = {path.name: path for path in create_sample_repos(tmp_path)}[repo_name]
    counts: Counter[str] = Counter()
    for file in sorted(root.rglob(pattern)):
        text = file.read_text(encoding="utf-8")
        extraction = extract(text, file.relative_to(root).as_posix())
        assert extraction.error is None, file
        assert_outputs_within_lines(text, extraction.pairs)
        counts.update(pair.kind for pair in extraction.pairs)
    return counts


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_demo_cli(
    root: Path, until: str = "training"
) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """`coder-assets demo --until UNTIL` in a subprocess on a fresh instance under `root` (home/,
    dagster_home/), with no Gitea or coder_assets settings inherited and the model server on a
    free port. Returns the process and its environment; stop the server with `stop_server(env)`."""
    home, dagster_home = root / "home", root / "dagster_home"
    dagster_home.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GITEA_", "CODER_ASSETS_", "DAGSTER_")) or key == CACHE_ENV
    }
    env.update(
        {
            "CODER_ASSETS_HOME": str(home),
            "DAGSTER_HOME": str(dagster_home),
            "CODER_ASSETS_SERVER_PORT": str(free_port()),
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "coder_assets.cli", "demo", "--until", until],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return proc, env


def stop_server(env: dict[str, str]) -> None:
    """Stop the model server a demo or job started with the settings in `env`."""
    subprocess.run(
        [sys.executable, "-m", "coder_assets.cli", "server", "stop"],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="session")
def trained_dev_model() -> Path:
    """The dev model pretrained on the standard library, from the cache the demo shares (built
    there first when missing: minutes). Tests that need a model that completes code use it; tests
    that need speed build the tiny random one."""
    return cached_dev_model()


@pytest.fixture(scope="session")
def full_demo(
    tmp_path_factory: pytest.TempPathFactory, trained_dev_model: Path
) -> Iterator[tuple[subprocess.CompletedProcess[str], dict[str, str], Path]]:
    """The whole `coder-assets demo` once per session (it takes minutes): test_demo checks what
    it made, the browser test looks at it in the UI. Yields (process, environment, root). The
    trained dev model is in the cache before the demo starts, so its time limit covers the demo
    alone."""
    root = tmp_path_factory.mktemp("demo")
    proc, env = run_demo_cli(root)
    try:
        yield proc, env, root
    finally:
        stop_server(env)


def resources_for(source: RepoSourceResource, tmp_path: Path) -> dict[str, object]:
    """The resources of repo_snapshots, on folders under `tmp_path`."""
    return {
        "repo_source": source,
        "repo_mirrors": RepoMirrorsResource(path=str(tmp_path / "mirrors")),
        "parquet_io_manager": ParquetIOManager(base_path=str(tmp_path / "storage")),
    }


class Tick:
    """Evaluates the sensor as the daemon would: the cursor carries over between ticks and
    dynamic partition requests are applied to the instance."""

    def __init__(self, instance: dg.DagsterInstance, source: RepoSourceResource) -> None:
        self.instance = instance
        self.source = source
        self.cursor: str | None = None

    def __call__(self) -> dg.SensorResult | dg.SkipReason:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"repo_source": self.source}
        )
        result = gitea_change_sensor(context)
        if isinstance(result, dg.SensorResult):
            for request in result.dynamic_partitions_requests or []:
                if isinstance(request, dg.AddDynamicPartitionsRequest):
                    self.instance.add_dynamic_partitions("repos", list(request.partition_keys))
                else:
                    for key in request.partition_keys:
                        self.instance.delete_dynamic_partition("repos", key)
            self.cursor = result.cursor
        return result

    @property
    def partitions(self) -> list[str]:
        return sorted(self.instance.get_dynamic_partitions("repos"))


def requested_shas(result: dg.SensorResult | dg.SkipReason) -> dict[str, str]:
    """`{partition key: pinned SHA}` of the runs a sensor result requests."""
    if isinstance(result, dg.SkipReason):
        return {}
    return {r.partition_key: r.tags[COMMIT_SHA_TAG] for r in result.run_requests}


@pytest.fixture
def repos_root(tmp_path: Path) -> Path:
    root = tmp_path / "repos"
    root.mkdir()
    return root


@pytest.fixture
def gitea(tmp_path: Path) -> Iterator[GiteaTestServer]:
    server = GiteaTestServer(tmp_path / "gitea", token=GITEA_TOKEN, org=GITEA_ORG)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def model_server(site) -> Iterator[ModelServerResource]:
    """A real mlx_lm.server on the module's `site` (its base model, port and home), serving
    until the test ends; no desired state left from before."""
    server = ModelServerResource(
        model_path=site.env["CODER_ASSETS_BASE_MODEL"],
        port=int(site.env["CODER_ASSETS_SERVER_PORT"]),
        state_dir=str(site.home / "server"),
        adapter_link=str(site.home / "deployed" / "homelab-coder" / "latest"),
    )
    server.desired_state_file().unlink(missing_ok=True)
    server.start()
    server.wait_ready()
    try:
        yield server
    finally:
        server.stop()
