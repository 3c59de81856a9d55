"""YAML extractor: one pair per manifest document, exactly as written; never a Secret, never a
SOPS file."""

from __future__ import annotations

from pathlib import Path

import pytest

from coder_assets.core.samples.extract_common import Extraction
from coder_assets.core.samples.extract_yaml import extract, is_secret_document, is_sops_encrypted
from coder_assets.demo.sample_repos import create_sample_repos
from coder_assets_tests.conftest import lines_of

HELM_RELEASE = """apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: redis
  namespace: cache
spec:
  interval: 15m
  chart:
    spec:
      chart: redis
      version: 1.20
      sourceRef:
        kind: HelmRepository
        name: bitnami
        namespace: flux-system
  values:
    architecture: standalone
    auth:
      enabled: false
"""

HELM_REPOSITORY = """apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata:
  name: bitnami
  namespace: flux-system
spec:
  interval: 12h
  url: https://charts.bitnami.com/bitnami
"""

FLUX_KUSTOMIZATION = """apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: apps
  namespace: flux-system
spec:
  dependsOn:
    - name: infrastructure
  interval: 10m
  path: ./apps
  prune: true
  sourceRef:
    kind: GitRepository
    name: flux-system
"""

KUSTOMIZE = """apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - deployment.yaml
  - service.yaml
"""

NAMESPACE = """apiVersion: v1
kind: Namespace
metadata:
  name: cache
"""

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 3
  template:
    spec:
      containers:
        - name: web
          image: nginx:1.27
          ports:
            - containerPort: 8080
"""

SERVICE = """apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: ClusterIP
  ports:
    - port: 80
      targetPort: 8080
"""

CONFIG_MAP = """apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  LOG_LEVEL: info
  nginx.conf: |
    server {}
"""

WORKFLOW_TEMPLATE = """apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata:
  name: build
spec:
  entrypoint: main
  templates:
    - name: main
      container:
        image: alpine:3.20
    - name: notify
      container:
        image: alpine:3.20
"""

CRON_WORKFLOW = """apiVersion: argoproj.io/v1alpha1
kind: CronWorkflow
metadata:
  name: nightly
spec:
  schedule: "0 3 * * *"
  workflowSpec:
    workflowTemplateRef:
      name: build
"""

GENERIC = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
spec:
  podSelector: {}
  policyTypes: [Ingress]
"""

SECRET = """apiVersion: v1
kind: Secret
metadata:
  name: db
stringData:
  password: hunter2
"""


def assert_provenance(text: str, extraction: Extraction) -> None:
    for pair in extraction.pairs:
        # Manifests are whole documents: the output IS the lines, not just inside them.
        assert pair.output == lines_of(text, pair.start_line, pair.end_line)


@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        (HELM_RELEASE, "infra/redis.yaml",
         ["Flux HelmRelease", "`redis`", "namespace `cache`", "chart `redis`", "version `1.20`",
          "HelmRepository `bitnami`", "`architecture` and `auth`"]),
        (HELM_REPOSITORY, "infra/sources.yaml",
         ["HelmRepository", "`https://charts.bitnami.com/bitnami`"]),
        (FLUX_KUSTOMIZATION, "clusters/apps.yaml",
         ["Flux Kustomization", "path `./apps`", "GitRepository `flux-system`", "interval `10m`",
          "prune `true`", "depends on `infrastructure`"]),
        (KUSTOMIZE, "apps/web/kustomization.yaml",
         ["`apps/web/`", "`deployment.yaml` and `service.yaml`"]),
        (NAMESPACE, "ns.yaml", ["Kubernetes Namespace", "`cache`"]),
        (DEPLOYMENT, "web.yaml",
         ["Deployment", "namespace `shop`", "`3` replicas", "`nginx:1.27`", "port `8080`"]),
        (SERVICE, "svc.yaml", ["Service", "type `ClusterIP`", "`80` to target port `8080`"]),
        (CONFIG_MAP, "cm.yaml", ["ConfigMap", "`LOG_LEVEL` and `nginx.conf`"]),
        (WORKFLOW_TEMPLATE, "wf.yaml",
         ["Argo WorkflowTemplate", "entrypoint is `main`", "`main` and `notify`"]),
        (CRON_WORKFLOW, "cron.yaml",
         ["Argo CronWorkflow", "schedule `0 3 * * *`", "WorkflowTemplate `build`"]),
        (GENERIC, "np.yaml", ["NetworkPolicy", "`deny-all`", "`podSelector` and `policyTypes`"]),
    ],
)  # fmt: skip
def test_manifest_instruction_states_what_matters_for_its_kind(
    text: str, path: str, expected: list[str]
) -> None:
    extraction = extract(text, path)
    assert extraction.error is None
    (pair,) = extraction.pairs
    assert pair.kind == "k8s_manifest"
    for fragment in expected:
        assert fragment in pair.instruction
    assert pair.output == text.rstrip("\n")
    assert (pair.start_line, pair.end_line) == (1, len(text.splitlines()))


def test_multi_document_file_keeps_each_documents_own_lines() -> None:
    text = (
        "# Shop manifests\n---\n"
        + NAMESPACE
        + "---\n\n"
        + DEPLOYMENT
        + "\n---\n"
        + SERVICE
        + "---\n"
    )
    extraction = extract(text, "shop.yaml")
    assert_provenance(text, extraction)
    assert [(p.start_line, p.end_line) for p in extraction.pairs] == [(3, 6), (9, 22), (25, 33)]
    assert [p.output for p in extraction.pairs] == [
        NAMESPACE.rstrip("\n"),
        DEPLOYMENT.rstrip("\n"),
        SERVICE.rstrip("\n"),
    ]


def test_secret_documents_are_skipped_and_the_rest_kept() -> None:
    text = NAMESPACE + "---\n" + SECRET + "---\n" + SERVICE
    extraction = extract(text, "mixed.yaml")
    assert extraction.error is None
    assert [p.output for p in extraction.pairs] == [NAMESPACE.rstrip("\n"), SERVICE.rstrip("\n")]
    assert all("hunter2" not in p.output + p.instruction for p in extraction.pairs)


@pytest.mark.parametrize(
    ("doc", "secret"),
    [
        ({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}, True),
        ({"apiVersion": "example.com/v1", "kind": "Secret"}, True),
        ({"apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret"}, True),
        ({"apiVersion": "v1", "kind": "List", "items": [{"kind": "Secret"}]}, True),
        ({"apiVersion": "v1", "kind": "Config", "users": [{"name": "admin"}]}, True),
        ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, False),
        ({"apiVersion": "external-secrets.io/v1beta1", "kind": "ExternalSecret"}, False),
        ({"kind": "List", "items": [{"kind": "Service"}]}, False),
        ("kind: Secret", False),
        (None, False),
    ],
)
def test_is_secret_document(doc: object, secret: bool) -> None:
    assert is_secret_document(doc) is secret


SOPS_VALUE = """apiVersion: v1
kind: ConfigMap
metadata:
  name: creds
data:
  token: ENC[AES256_GCM,data:q1w2e3,iv:abc=,tag:def=,type:str]
"""

SOPS_METADATA = """apiVersion: v1
kind: ConfigMap
metadata:
  name: creds
data:
  token: plain
sops:
  version: 3.8.1
"""


@pytest.mark.parametrize(
    ("text", "encrypted"),
    [
        (SOPS_VALUE, True),
        (SOPS_METADATA, True),
        ('{"data": "ENC[AES256_GCM,data:x,iv:y,tag:z,type:str]"}', True),
        ("API_KEY=ENC[AES256_GCM,data:x,iv:y,tag:z,type:str]\n", True),
        (NAMESPACE, False),
        ("metadata:\n  sops: documented here\n", False),
        ("ENC is an abbreviation\n", False),
    ],
)
def test_is_sops_encrypted(text: str, encrypted: bool) -> None:
    assert is_sops_encrypted(text) is encrypted


@pytest.mark.parametrize("text", [SOPS_VALUE, SOPS_METADATA, NAMESPACE + "---\n" + SOPS_VALUE])
def test_sops_files_produce_nothing(text: str) -> None:
    assert extract(text, "secrets/creds.sops.yaml") == Extraction([], "sops_encrypted")


def test_sops_mapping_in_flow_style_is_refused_too() -> None:
    text = NAMESPACE + "---\n" + "{sops: {version: 3.8.1}, apiVersion: v1, kind: Namespace}\n"
    assert extract(text, "x.yaml") == Extraction([], "sops_encrypted")


@pytest.mark.parametrize(
    "text",
    [
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: [unclosed\n",
        "key: value\n  bad indent: here\n",
        "a: [\n---\nb: {\n",
        "x: !custom tag\n",
        "\t- tab indented\n",
    ],
)
def test_malformed_yaml_is_a_parse_error(text: str) -> None:
    extraction = extract(text, "broken.yaml")
    assert extraction.error == "parse_error"
    assert extraction.pairs == []
    assert extraction.skipped >= 1


def test_one_broken_document_costs_only_itself() -> None:
    text = NAMESPACE + "---\nmetadata: [unclosed\n---\n" + SERVICE
    extraction = extract(text, "partly.yaml")
    assert extraction.error is None
    assert extraction.skipped == 1
    assert len(extraction.pairs) == 2
    assert_provenance(text, extraction)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only a comment\n",
        "repos:\n  - repo: https://example.com/hooks\n    rev: v1\n",
        "apiVersion: v1\nkind: Pod\n",  # no metadata.name
        "- a\n- b\n",
        "just a string\n",
    ],
)
def test_yaml_that_is_not_a_manifest_gives_no_pairs_and_no_error(text: str) -> None:
    assert extract(text, "config.yaml") == Extraction([])


def test_alias_bomb_is_harmless() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\n"
    text += "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for index in range(1, 12):
        prev = "a" if index == 1 else f"a{index - 1}"
        text += f"a{index}: &a{index} [{', '.join([f'*{prev}'] * 10)}]\n"
    (pair,) = extract(text, "bomb.yaml").pairs
    assert pair.kind == "k8s_manifest"


def test_same_input_gives_identical_output() -> None:
    text = HELM_RELEASE + "---\n" + DEPLOYMENT
    assert extract(text, "x.yaml") == extract(text, "x.yaml")


def test_sample_repo_yields_helm_release_flux_kustomization_and_workflow_template(
    tmp_path: Path,
) -> None:
    repos = {path.name: path for path in create_sample_repos(tmp_path)}
    root = repos["homelab-flux"]
    kinds: dict[str, int] = {}
    for file in sorted(root.rglob("*.yaml")):
        text = file.read_text(encoding="utf-8")
        extraction = extract(text, file.relative_to(root).as_posix())
        assert extraction.error is None
        assert_provenance(text, extraction)
        for pair in extraction.pairs:
            assert pair.kind == "k8s_manifest"
            label = pair.instruction
            for kind in ("Flux HelmRelease", "Flux Kustomization", "Argo WorkflowTemplate"):
                if kind in label:
                    kinds[kind] = kinds.get(kind, 0) + 1
    assert kinds.get("Flux HelmRelease", 0) >= 1
    assert kinds.get("Flux Kustomization", 0) >= 1
    assert kinds.get("Argo WorkflowTemplate", 0) >= 1
