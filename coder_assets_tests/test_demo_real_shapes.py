"""End to end: `coder-assets demo --until dataset` on the sample repos plus synthetic repos with
the shapes real repositories have and the samples lack (written for the project): multi-document
YAML mixing a Secret and a ConfigMap in many files, one YAML at five paths, one Go file in two
repos, the labelled secrets and lookalikes, a key file. The dataset builds, and a record-level
check written here (its own tokens, exact Jaccard of every cross-split pair) finds no duplicate."""

from __future__ import annotations

import json
import re
from itertools import combinations
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from coder_assets.demo.sample_repos import commit_files
from coder_assets_tests.conftest import init_repo, run_demo_cli
from coder_assets_tests.secret_cases import labelled_cases
from coder_assets_tests.test_assets_samples import _pem_keys

pytestmark = pytest.mark.slow

FIXTURE_YAML = (
    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: testing\n"
    "resources:\n  - ./deployment.yaml\n  - ./service.yaml\nlabels:\n  - pairs:\n"
    "      app.kubernetes.io/name: fixture\n      app.kubernetes.io/part-of: conformance\n"
    "configMapGenerator:\n  - name: fixture-settings\n    literals:\n      - MODE=replay\n"
    "      - RETRIES=3\n"
)
SHARED_GO = """package natsutil

import (
\t"context"
\t"fmt"
\t"time"

\t"github.com/nats-io/nats.go"
)

// Connect dials the NATS server at url and retries until ctx is done.
func Connect(ctx context.Context, url string, name string) (*nats.Conn, error) {
\tfor attempt := 1; ; attempt++ {
\t\tnc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1))
\t\tif err == nil {
\t\t\treturn nc, nil
\t\t}
\t\tselect {
\t\tcase <-ctx.Done():
\t\t\treturn nil, fmt.Errorf("connect to %s after %d attempts: %w", url, attempt, err)
\t\tcase <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
\t\t}
\t}
}

// Drain flushes pending messages and closes the connection within timeout.
func Drain(nc *nats.Conn, timeout time.Duration) error {
\tdone := make(chan struct{})
\tnc.SetClosedHandler(func(*nats.Conn) { close(done) })
\tif err := nc.Drain(); err != nil {
\t\treturn fmt.Errorf("drain: %w", err)
\t}
\tselect {
\tcase <-done:
\t\treturn nil
\tcase <-time.After(timeout):
\t\treturn fmt.Errorf("drain: timed out after %s", timeout)
\t}
}
"""


def _secret_and_configmap(app: str, n: int) -> str:
    return (
        f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {app}-creds\n  namespace: {app}\n"
        f"type: Opaque\nstringData:\n  DB_PASSWORD: Qx{n}9-vLq2-{app}-Zr7\n"
        "---\n"
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {app}-settings\n"
        f"  namespace: {app}\ndata:\n  LOG_LEVEL: info\n  LISTEN_ADDR: ':{8000 + n}'\n"
        f"  CACHE_TTL: {n + 1}0s\n  UPSTREAM: http://{app}-api.{app}.svc:8080\n"
    )


def _go_service(name: str, topic: str) -> dict[str, str]:
    return {
        "go.mod": (
            f"module git.lan/homelab/{name}\n\ngo 1.22\n\n"
            "require github.com/nats-io/nats.go v1.37.0\n"
        ),
        "internal/natsutil/conn.go": SHARED_GO,
        "cmd/server/main.go": (
            f'package main\n\nimport (\n\t"context"\n\t"log"\n\t"os"\n\t"os/signal"\n\n'
            f'\t"git.lan/homelab/{name}/internal/natsutil"\n)\n\n'
            "func main() {\n"
            "\tctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)\n"
            "\tdefer stop()\n"
            f'\tnc, err := natsutil.Connect(ctx, os.Getenv("NATS_URL"), "{name}")\n'
            "\tif err != nil {\n\t\tlog.Fatal(err)\n\t}\n"
            f'\tsub, err := nc.SubscribeSync("{topic}")\n'
            "\tif err != nil {\n\t\tlog.Fatal(err)\n\t}\n\tdefer sub.Unsubscribe()\n"
            f'\tlog.Printf("listening on {topic}")\n\t<-ctx.Done()\n}}\n'
        ),
    }


def _shape_repos(repos: Path) -> dict[str, object]:
    """The synthetic repos; returns what the assertions need to know about them."""
    gitops = init_repo(repos / "shapes-gitops")
    apps = [f"app{n:02d}" for n in range(14)]
    files: dict[str, str] = {
        f"kubernetes/apps/{app}/resources.yaml": _secret_and_configmap(app, n)
        for n, app in enumerate(apps)
    }
    fixtures = [f"tests/conformance/case_{n}/kustomization.yaml" for n in range(5)]
    files.update({path: FIXTURE_YAML for path in fixtures})
    files["keys/deploy_rsa"] = _pem_keys()["rsa"]
    commit_files(gitops, files, "Add apps, fixtures and the deploy key")
    cases = labelled_cases()
    commit_files(
        gitops,
        {f"labelled/{n:03d}/{case.path}": case.text for n, case in enumerate(cases)},
        "Add labelled configuration",
    )
    for name, topic in (("shapes-orders", "orders.created"), ("shapes-billing", "invoices.paid")):
        commit_files(init_repo(repos / name), _go_service(name, topic), "Add the service")
    return {"fixtures": fixtures, "cases": cases}


def _records(dataset: Path) -> list[tuple[str, int, str, str]]:
    """(split, line, kind:repo:path, text) of every record, from the provenance sidecar."""
    paths = {
        (row["split"], row["line"]): f"{row['kind']}:{row['repo']}:{row['path']}"
        for row in pq.read_table(dataset / "provenance.parquet").to_pylist()
    }
    records = []
    for split in ("train", "valid", "test"):
        lines = (dataset / f"{split}.jsonl").read_text("utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            records.append((split, number, paths[(split, number)], json.loads(line)["text"]))
    return records


def _words(text: str) -> set[tuple[str, ...]]:
    tokens = re.findall(r"[A-Za-z0-9_]+|\S", text)
    return {tuple(tokens[i : i + 4]) for i in range(max(1, len(tokens) - 3))}


@pytest.fixture(scope="module")
def shapes_demo(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("shapes")
    shapes = _shape_repos(root / "home" / "repos")
    proc, _ = run_demo_cli(root, until="dataset")
    return proc, root, shapes


def test_the_dataset_builds_with_every_check_passing(shapes_demo) -> None:
    proc, root, _ = shapes_demo
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6/6 checks passed" in proc.stdout
    for name in ("shapes-gitops", "shapes-orders", "shapes-billing"):
        assert f"ok     homelab~{name}" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def records(shapes_demo) -> list[tuple[str, int, str, str]]:
    _, root, _ = shapes_demo
    (dataset,) = [p for p in (root / "home" / "datasets").iterdir() if not p.name.startswith(".")]
    return _records(dataset)


def test_no_two_records_in_different_splits_are_duplicates(records) -> None:
    """Every cross-split pair compared, exact Jaccard of word 4-grams: nothing at 0.7 or above."""
    shingles = [_words(text) for *_, text in records]
    leaks = [
        (records[i][2], records[j][2], round(len(a & b) / len(a | b), 2))
        for (i, a), (j, b) in combinations(enumerate(shingles), 2)
        if records[i][0] != records[j][0] and len(a & b) / len(a | b) >= 0.7
    ]
    assert leaks == []


def test_copies_are_kept_once_in_one_split(records, shapes_demo) -> None:
    """FIM samples of one copy only; whatever else the copies yield shares their split."""
    fixtures = shapes_demo[2]["fixtures"]
    copies = [r for r in records if r[2].split(":", 2)[2] in fixtures]
    assert len({path for _, _, path, _ in copies if path.startswith("fim:")}) <= 1
    assert len({split for split, *_ in copies}) == 1
    go = [r for r in records if r[2].endswith("internal/natsutil/conn.go")]
    assert go and len({path for _, _, path, _ in go if path.startswith("fim:")}) <= 1
    assert len({split for split, *_ in go}) == 1


def test_redaction_is_precise_and_whole(records, shapes_demo) -> None:
    cases = shapes_demo[2]["cases"]
    everything = "\n".join(text for *_, text in records)
    for case in cases:
        for value in case.secrets:
            assert value not in everything, case.kind
    assert "BEGIN RSA PRIVATE KEY" not in everything
    assert not any(path.endswith(":keys/deploy_rsa") for *_, path, _ in records)
    for *_, path, text in records:
        # a placeholder is never cut, and a ConfigMap next to a Secret keeps its values
        assert all(
            re.match(r"<SECRET_[A-Z0-9_]+_[0-9]+>", text[m.start() :])
            for m in re.finditer("<SECRET_", text)
        ), path
        assert "LOG_LEVEL: <SECRET" not in text and "CACHE_TTL: <SECRET" not in text, path
    lookalike_paths = {
        f"labelled/{n:03d}/{case.path}" for n, case in enumerate(cases) if not case.is_secret
    }
    redacted_lookalikes = [
        path
        for *_, path, text in records
        if path.split(":", 2)[2] in lookalike_paths and "<SECRET_" in text
    ]
    assert redacted_lookalikes == []
