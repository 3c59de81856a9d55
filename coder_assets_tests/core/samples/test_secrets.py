"""Secret scanning and redaction (coder_assets.core.samples.secrets).

Every secret below is invented for these tests (keys are generated afresh when `cryptography` is
installed); the assertions name the exact strings that must never reach a dataset.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections import Counter

import pytest

from coder_assets.core.samples.secrets import (
    _LINE_TRIGGERS,
    DETECT_SECRETS_TYPES,
    Finding,
    Redactor,
    SecretScanConfig,
    SecretScanner,
    _DetectSecrets,
    _Text,
    contains_secret,
)
from coder_assets.demo.sample_repos import create_sample_repos

# --------------------------------------------------------------------------------------------
# Planted secrets
# --------------------------------------------------------------------------------------------

BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _b64url(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _fake_pem(label: str, seed: str, lines: int = 12) -> str:
    """A syntactically valid-looking PEM block (used when `cryptography` is missing)."""
    body = base64.b64encode(
        b"".join(hashlib.sha512(f"{seed}{i}".encode()).digest() for i in range(lines))
    )
    rows = [body[i : i + 64].decode() for i in range(0, len(body), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(rows) + f"\n-----END {label}-----\n"


def _private_keys() -> dict[str, str | bytes]:
    """Throwaway private keys in each PEM flavour homelab repos hold."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    except ImportError:  # pragma: no cover - cryptography is a dev convenience only
        return {
            "rsa": _fake_pem("RSA PRIVATE KEY", "rsa"),
            "openssh": _fake_pem("OPENSSH PRIVATE KEY", "openssh"),
            "ec": _fake_pem("EC PRIVATE KEY", "ec", 3),
            "pkcs8": _fake_pem("PRIVATE KEY", "pkcs8", 3),
            "encrypted": _fake_pem("ENCRYPTED PRIVATE KEY", "encrypted", 4),
        }
    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    return {
        "rsa": rsa_key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, none),
        "openssh": ed25519.Ed25519PrivateKey.generate().private_bytes(
            pem, serialization.PrivateFormat.OpenSSH, none
        ),
        "ec": ec_key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, none),
        "pkcs8": ec_key.private_bytes(pem, pkcs8, none),
        "encrypted": ec_key.private_bytes(
            pem, pkcs8, serialization.BestAvailableEncryption(b"throwaway-passphrase")
        ),
    }


KEYS = {
    name: key.decode() if isinstance(key, bytes) else key for name, key in _private_keys().items()
}

AWS_KEY_ID = "AKIAQ3HOMELABX7Z2K9D"
AWS_SECRET = "r8Vq2nT5yLw0pK3sXe7Hj9GbZc4Ud1MfNa6QoRiE"
AGE_KEY = "AGE-SECRET-KEY-1" + "".join(BECH32[(i * 7 + 3) % 32] for i in range(58)).upper()
AGE_PUBLIC = "age1" + "".join(BECH32[(i * 5 + 1) % 32] for i in range(58))
JWT = ".".join(
    [
        _b64url({"alg": "HS256", "typ": "JWT"}),
        _b64url({"sub": "dagster", "iss": "homelab", "iat": 1717171717}),
        "Xk3pQ9vT2mWc8RzL5nYb1GfH7sJd4Ue6Ao0Ki_Ny-Zw",
    ]
)
SA_TOKEN = ".".join(
    [
        _b64url({"alg": "RS256", "kid": "homelab"}),
        _b64url({"sub": "system:serviceaccount:ci:deployer"}),
        "Q2x8Vb5Nm1Kc7Jd3Hf9Gs4La6Pz0Wq2Er8Ty5Ui1Op7As3Df9Gh",
    ]
)
GITEA_TOKEN = "b7e4c1d9a3f60852e7c4a1b9d3f0e6c2a8b5d147"
GITEA_TOKEN_2 = "5d0c9a7e3b1f4862a0d7c5e9b3f1a8264c0e7d93"
GITHUB_TOKEN = "ghp_" + "R7kQ2mX9vL4pT8nW3cZ6yB1hJ5dF0gS2aE4u"
URL_PASSWORD = "Wq7-hunter2-Zx"
URL = f"postgres://gitea:{URL_PASSWORD}@db.homelab.lan:5432/gitea"
YAML_PASSWORD = "Tr0ub4dor-homelab-nats"
ENV_PASSWORD = "s3cr3t-Pa55w0rd-for-postgres"
ENV_PAIR_PASSWORD = "hunter2-homelab-db"
DOCKER_PASSWORD = "nats-Zq81-docker"
K8S_DATA = base64.b64encode(b"rustfs-Adm1n-secret").decode()
K8S_STRING_DATA = "plain-string-data-9Xq"
CLIENT_KEY_DATA = base64.b64encode(KEYS["ec"].encode()).decode()
CLIENT_CERT_DATA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIBcert\n").decode()
COMMIT_SHA = "3f2a9c0d7e1b4a6c8d5e2f9a0b7c4d1e6f3a8b5c"

# Each planted file: repository path -> text.
FILES: dict[str, str] = {
    ".env": f"""\
# local development settings
DB_HOST=db.homelab.lan
DB_PASSWORD={ENV_PASSWORD}
REPLICA_PASSWORD=${{DB_PASSWORD}}
GITEA_TOKEN={GITEA_TOKEN}
AWS_ACCESS_KEY_ID={AWS_KEY_ID}
AWS_SECRET_ACCESS_KEY={AWS_SECRET}
GITHUB_TOKEN={GITHUB_TOKEN}
EMPTY_TOKEN=
LOG_LEVEL=info
""",
    "charts/gitea/values.yaml": f"""\
postgresql:
  auth:
    username: gitea
    password: {YAML_PASSWORD}
    existingSecret: ""
  url: {URL}
nats:
  password: "{{{{ .Values.natsPassword }}}}"
image:
  tag: 1.21.4
""",
    "apps/gitea/deployment.yaml": f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: gitea
spec:
  template:
    spec:
      containers:
        - name: gitea
          image: gitea/gitea:1.21.4
          env:
            - name: DB_PASSWORD
              value: {ENV_PAIR_PASSWORD}
            - name: API_TOKEN
              valueFrom:
                secretKeyRef:
                  name: gitea-secrets
                  key: api-token
            - name: REPLICA_PASSWORD
              value: "${{DB_PASSWORD}}"
            - name: LOG_LEVEL
              value: info
""",
    "apps/rustfs/secret.yaml": f"""\
apiVersion: v1
kind: Secret
metadata:
  name: rustfs-credentials
  namespace: storage
type: Opaque
data:
  root-password: {K8S_DATA}
stringData:
  root-user: {K8S_STRING_DATA}
  ssh-privatekey: |
{"".join("    " + line + chr(10) for line in KEYS["openssh"].splitlines())}---
apiVersion: v1
kind: ConfigMap
metadata:
  name: rustfs-settings
data:
  region: homelab-1
""",
    "kube/config": f"""\
apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: {CLIENT_CERT_DATA}
    server: https://10.0.0.10:6443
  name: homelab
users:
- name: admin
  user:
    client-certificate-data: {CLIENT_CERT_DATA}
    client-key-data: {CLIENT_KEY_DATA}
- name: ci
  user:
    token: {SA_TOKEN}
current-context: admin@homelab
""",
    "settings/aws.py": f'''\
"""Storage settings for the training jobs."""

import os

AWS_ACCESS_KEY_ID = "{AWS_KEY_ID}"
AWS_SECRET_ACCESS_KEY = "{AWS_SECRET}"
DAGSTER_JWT = "{JWT}"
DB_PASSWORD = os.environ["DB_PASSWORD"]


def connect(password: str = "") -> str:
    return f"postgres://gitea:{{password}}@db.homelab.lan/gitea"
''',
    "keys/id_rsa": KEYS["rsa"],
    "keys/id_ed25519": KEYS["openssh"],
    "keys/ec.pem": KEYS["ec"] + KEYS["pkcs8"] + KEYS["encrypted"],
    "sops/age.key": f"""\
# created: 2024-03-01T10:00:00Z
# public key: {AGE_PUBLIC}
{AGE_KEY}
""",
    "scripts/mirror.sh": f"""\
#!/usr/bin/env bash
set -euo pipefail
curl -fsS -H "Authorization: token {GITEA_TOKEN_2}" https://gitea.homelab.lan/api/v1/repos
git clone "{URL}"
""",
    "Dockerfile": f"""\
FROM golang:1.22 AS build
ENV NATS_PASSWORD {DOCKER_PASSWORD}
ENV NATS_URL=nats://nats.messaging.svc.cluster.local:4222
""",
    ".gitea/workflows/ci.yaml": f"""\
on: push
jobs:
  build:
    steps:
      - uses: actions/checkout@{COMMIT_SHA}
      - run: make test
        env:
          GITEA_TOKEN: ${{{{ secrets.GITEA_TOKEN }}}}
""",
}

# (path, planted value, secret type its finding must have)
PLANTED: list[tuple[str, str, str]] = [
    (".env", ENV_PASSWORD, "env_assignment"),
    (".env", GITEA_TOKEN, "gitea_token"),
    (".env", AWS_KEY_ID, "aws_access_key"),
    (".env", AWS_SECRET, "aws_secret_key"),
    (".env", GITHUB_TOKEN, "github_token"),
    ("charts/gitea/values.yaml", YAML_PASSWORD, "yaml_secret"),
    ("charts/gitea/values.yaml", f"gitea:{URL_PASSWORD}", "url_credentials"),
    ("apps/gitea/deployment.yaml", ENV_PAIR_PASSWORD, "env_assignment"),
    ("apps/rustfs/secret.yaml", K8S_DATA, "k8s_secret_data"),
    ("apps/rustfs/secret.yaml", K8S_STRING_DATA, "k8s_secret_data"),
    ("kube/config", CLIENT_KEY_DATA, "kubeconfig_client_key"),
    ("kube/config", SA_TOKEN, "kubeconfig_token"),
    ("settings/aws.py", AWS_KEY_ID, "aws_access_key"),
    ("settings/aws.py", AWS_SECRET, "aws_secret_key"),
    ("settings/aws.py", JWT, "jwt"),
    ("keys/id_rsa", KEYS["rsa"].strip(), "private_key"),
    ("keys/id_ed25519", KEYS["openssh"].strip(), "private_key"),
    ("keys/ec.pem", KEYS["ec"].strip(), "private_key"),
    ("keys/ec.pem", KEYS["pkcs8"].strip(), "private_key"),
    ("keys/ec.pem", KEYS["encrypted"].strip(), "private_key"),
    ("sops/age.key", AGE_KEY, "age_key"),
    ("scripts/mirror.sh", GITEA_TOKEN_2, "gitea_token"),
    ("scripts/mirror.sh", f"gitea:{URL_PASSWORD}", "url_credentials"),
    ("Dockerfile", DOCKER_PASSWORD, "env_assignment"),
]

# Strings that are not secrets and must survive redaction unchanged.
KEPT: list[tuple[str, str]] = [
    (".env", "REPLICA_PASSWORD=${DB_PASSWORD}"),
    (".env", "LOG_LEVEL=info"),
    (".env", "EMPTY_TOKEN=\n"),
    ("charts/gitea/values.yaml", 'existingSecret: ""'),
    ("charts/gitea/values.yaml", 'password: "{{ .Values.natsPassword }}"'),
    ("charts/gitea/values.yaml", "postgres://"),
    ("charts/gitea/values.yaml", "@db.homelab.lan:5432/gitea"),
    ("apps/gitea/deployment.yaml", "secretKeyRef:\n                  name: gitea-secrets"),
    ("apps/gitea/deployment.yaml", 'value: "${DB_PASSWORD}"'),
    ("apps/rustfs/secret.yaml", "region: homelab-1"),
    ("apps/rustfs/secret.yaml", "name: rustfs-credentials"),
    ("kube/config", f"client-certificate-data: {CLIENT_CERT_DATA}"),
    ("kube/config", f"certificate-authority-data: {CLIENT_CERT_DATA}"),
    ("settings/aws.py", 'DB_PASSWORD = os.environ["DB_PASSWORD"]'),
    ("settings/aws.py", 'def connect(password: str = "") -> str:'),
    ("settings/aws.py", "postgres://gitea:{password}@db.homelab.lan/gitea"),
    ("sops/age.key", f"# public key: {AGE_PUBLIC}"),
    ("scripts/mirror.sh", "https://gitea.homelab.lan/api/v1/repos"),
    ("Dockerfile", "ENV NATS_URL=nats://nats.messaging.svc.cluster.local:4222"),
    (".gitea/workflows/ci.yaml", f"actions/checkout@{COMMIT_SHA}"),
    (".gitea/workflows/ci.yaml", "GITEA_TOKEN: ${{ secrets.GITEA_TOKEN }}"),
]

# Ordinary text without any secret: scanning it finds nothing.
NOT_SECRETS: list[tuple[str, str]] = [
    ("deploy.yaml", "env:\n  - name: DB_PASSWORD\n    valueFrom:\n      secretKeyRef:\n"),
    (".env", "DB_PASSWORD=${DB_PASSWORD}\nAPI_TOKEN=$(cat /run/secrets/api)\nEMPTY_KEY=\n"),
    ("flux/sync.yaml", f"status:\n  commit: {COMMIT_SHA}\n  sha: {COMMIT_SHA}\n"),
    ("notes.md", f"Reverted in {COMMIT_SHA}; run `git checkout {COMMIT_SHA}`.\n"),
    ("values.yaml", "auth:\n  existingSecret: gitea-admin\n  secretName: gitea-tls\n"),
    ("values.yaml", 'password: ""\ntoken: ~\nsecret: true\napiKey: <your-api-key>\n'),
    ("values.yaml", "password: changeme-${ENV}\ntoken: {{ .Values.token }}\n"),
    ("main.go", 'if v := os.Getenv(key); v != "" {\n\treturn v\n}\n'),
    ("main.go", 'token := os.Getenv("GITEA_TOKEN")\npassword := cfg.Password\n'),
    ("app.py", "def login(password: str, token: str | None = None) -> None:\n    pass\n"),
    ("app.py", 'API_KEY_ENV = "GITEA_TOKEN"\nmax_new_tokens = 256\neos_token = "</s>"\n'),
    ("app.py", 'DEFAULT_IO_MANAGER_KEY = "io_manager"\nPASS = "PASS"\n'),
    ("Makefile", "test:\n\tpytest -q\n\nTOKEN ?= $(shell cat .token)\n"),
    ("run.sh", "docker run -u 1000:1000 app\ngit push -u origin main\n"),
    ("README.md", "    token: str\n    password: Optional[str]\n    api_key: str | None\n"),
    ("crlf.env", "DB_PASSWORD=${DB_PASSWORD}\r\n"),
    ("", "password = get_password()\nsecret = request.headers['x-secret']\n"),
]


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def scanner() -> SecretScanner:
    return SecretScanner()


@pytest.fixture(scope="module")
def redacted(scanner: SecretScanner) -> tuple[dict[str, str], Redactor]:
    """Every planted file, redacted by one Redactor in FILES order (one repository)."""
    redactor = Redactor(scanner)
    return {path: redactor.redact(text, path)[0] for path, text in FILES.items()}, redactor


# --------------------------------------------------------------------------------------------
# Findings
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "secret_type"),
    PLANTED,
    ids=[f"{path}:{kind}" for path, _, kind in PLANTED],
)
def test_each_planted_secret_is_found_with_its_type(
    scanner: SecretScanner, path: str, value: str, secret_type: str
) -> None:
    text = FILES[path]
    start = text.index(value)
    covering = [
        f for f in scanner.scan(text, path) if f.start <= start and start + len(value) <= f.end
    ]
    assert [f.secret_type for f in covering] == [secret_type]


def test_findings_are_sorted_and_disjoint(scanner: SecretScanner) -> None:
    for path, text in FILES.items():
        findings = scanner.scan(text, path)
        assert findings == sorted(findings, key=lambda f: (f.start, f.end))
        assert all(a.end <= b.start for a, b in zip(findings, findings[1:], strict=False))
        assert all(0 <= f.start < f.end <= len(text) for f in findings)


def test_overlapping_findings_merge_into_the_widest(scanner: SecretScanner) -> None:
    # detect-secrets' private-key plugin finds "BEGIN RSA PRIVATE KEY" inside our PEM block.
    text = FILES["keys/id_rsa"]
    assert scanner.scan(text, "keys/id_rsa") == [Finding("private_key", 0, len(text.rstrip("\n")))]


@pytest.mark.parametrize(("path", "text"), NOT_SECRETS, ids=[t[:30] for _, t in NOT_SECRETS])
def test_non_secrets_are_not_findings(scanner: SecretScanner, path: str, text: str) -> None:
    assert scanner.scan(text, path) == []


def test_commit_shas_are_kept_but_the_same_hex_as_a_token_is_not(scanner: SecretScanner) -> None:
    kept = f"commit: {COMMIT_SHA}\nrevision: {COMMIT_SHA}\nparent_sha = '{COMMIT_SHA}'\n"
    assert [f for f in scanner.scan(kept, "state.yaml") if f.secret_type == "gitea_token"] == []
    # Quoted, detect-secrets' hex entropy plugin finds it; it counts only under a secret's key.
    quoted = f'{{"ref": "{COMMIT_SHA}"}}'
    assert scanner.scan(quoted, "release.json") == []
    keyed = f'{{"webhook_secret": "{COMMIT_SHA}"}}'
    assert scanner.scan(keyed, "release.json") != []
    for text in (
        f"token: {COMMIT_SHA}\n",
        f'GITEA_TOKEN = "{COMMIT_SHA}"\n',
        f"Authorization: token {COMMIT_SHA}\n",
        f"https://gitea.lan/api/v1/repos?access_token={COMMIT_SHA}\n",
    ):
        assert "gitea_token" in {f.secret_type for f in scanner.scan(text, "x.yaml")}, text


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("nats://app:Zq9-pass@nats.lan:4222", "app:Zq9-pass"),
        ("redis://:R3dis-pw@redis.lan/0", ":R3dis-pw"),
        ("https://oauth2:glpat-abc123DEF@gitlab.lan/x.git", "oauth2:glpat-abc123DEF"),
    ],
)
def test_url_credentials_keep_scheme_and_host(
    scanner: SecretScanner, text: str, value: str
) -> None:
    findings = scanner.scan(text, "notes.md")
    assert [text[f.start : f.end] for f in findings] == [value]
    redacted, _ = Redactor(scanner).redact(text, "notes.md")
    assert redacted.split("://")[0] == text.split("://")[0]
    assert redacted.endswith(text[text.index("@") :])


@pytest.mark.parametrize(
    ("path", "text", "value"),
    [
        ("a.env", "export API_KEY=k-91x7Qm2\n", "k-91x7Qm2"),
        ("compose.yaml", "environment:\n  - MINIO_SECRET_KEY=m1n10-s3cret\n", "m1n10-s3cret"),
        ("compose.yaml", "environment:\n  POSTGRES_PASSWORD: pg-Pw-77\n", "pg-Pw-77"),
        ("app.ini", "[db]\npassword = ini-pa55\n", "ini-pa55"),
        ("pyproject.toml", 'token = "toml-t0ken-1"\n', "toml-t0ken-1"),
        ("unit.service", 'Environment="NATS_TOKEN=svc-tok-42"\n', "svc-tok-42"),
        ("main.go", 'const apiToken = "go-tok-8812"\n', "go-tok-8812"),
        ("main.go", 'cfg := Config{Password: "go-pw-struct"}\n', "go-pw-struct"),
        ("conn.py", 'client = connect(password="py-kwarg-pw")\n', "py-kwarg-pw"),
        (".netrc", "machine gitea.lan login ci password netrc-Pw-1\n", "netrc-Pw-1"),
        ("k.yaml", "auth-provider:\n  config:\n    client-secret: oidc-S3cret\n", "oidc-S3cret"),
        (
            "docker.json",
            '{"auths": {"r.lan": {"auth": "Y2k6cmVnaXN0cnktcHc="}}}',
            "Y2k6cmVnaXN0cnktcHc=",
        ),
        ("values.yaml", "adminPassword: &pw helm-Adm1n\nreplica: *pw\n", "helm-Adm1n"),
        ("values.yaml", "config:\n  password: |\n    multi-line-pw-1\n", "multi-line-pw-1"),
        ("backup.sh", "curl -fsS -u backup:cUrl-pw-3 https://rustfs.lan/\n", "backup:cUrl-pw-3"),
        ("crlf.yaml", "db:\r\n  password: crlf-Pw-1\r\n  user: app\r\n", "crlf-Pw-1"),
        ("crlf.env", "DB_PASSWORD=crlf-env-2\r\nX=1\r\n", "crlf-env-2"),
    ],
)
def test_assignment_styles_are_found(
    scanner: SecretScanner, path: str, text: str, value: str
) -> None:
    redacted, counts = Redactor(scanner).redact(text, path)
    assert value not in redacted
    assert sum(counts.values()) >= 1
    assert redacted.count("\n") == text.count("\n")
    assert scanner.scan(redacted, path) == scanner.scan(redacted) == []


def test_unterminated_pem_block_is_covered_from_begin_on(scanner: SecretScanner) -> None:
    head = "\n".join(KEYS["rsa"].splitlines()[:6])
    text = f"notes: the key was\n{head}\n(truncated)\n"
    redacted, counts = Redactor(scanner).redact(text, "notes.md")
    assert counts == Counter({"private_key": 1})
    assert all(line not in redacted for line in _lines(head))
    assert redacted.endswith("(truncated)\n")


def test_pem_block_in_a_one_line_json_string_is_covered(scanner: SecretScanner) -> None:
    escaped = json.dumps({"ssh_key": KEYS["openssh"]})
    redacted, counts = Redactor(scanner).redact(escaped, "secrets.json")
    assert counts == Counter({"private_key": 1})
    assert all(line not in redacted for line in _lines(KEYS["openssh"]))


def test_config_switches_choose_the_detectors() -> None:
    only_plugins = SecretScanner(SecretScanConfig(custom_rules=False))
    only_rules = SecretScanner(SecretScanConfig(detect_secrets_plugins=False))
    aws = f'key = "{AWS_KEY_ID}"\n'
    assert [f.secret_type for f in only_plugins.scan(aws, "x.py")] == ["aws_access_key"]
    assert only_rules.scan(aws, "x.py") == []
    assert only_plugins.scan(AGE_KEY, "age.key") == []
    assert [f.secret_type for f in only_rules.scan(AGE_KEY, "age.key")] == ["age_key"]


def test_contains_secret(scanner: SecretScanner) -> None:
    assert contains_secret(FILES[".env"], scanner)
    assert not contains_secret("def add(a, b):\n    return a + b\n", scanner)


def test_scanning_never_calls_the_network(
    monkeypatch: pytest.MonkeyPatch, scanner: SecretScanner
) -> None:
    import requests

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a plugin tried to verify a secret over the network")

    monkeypatch.setattr(requests.Session, "request", refuse)
    monkeypatch.setattr(requests, "request", refuse)
    assert all(
        scanner.scan(text, path) for path, text in FILES.items() if not path.startswith(".gitea")
    )


def test_every_detect_secrets_plugin_has_a_stable_name_and_a_line_trigger() -> None:
    plugins = _DetectSecrets().plugins
    assert {type(p.instance).__name__ for p in plugins} == set(_LINE_TRIGGERS)
    assert {str(p.instance.secret_type) for p in plugins} == set(DETECT_SECRETS_TYPES)
    assert len(set(DETECT_SECRETS_TYPES.values())) == len(DETECT_SECRETS_TYPES)


# Lines on which each detect-secrets plugin finds something (examples from their own patterns).
PLUGIN_EXAMPLES = [
    "artifactory: AKCp5bueTFpfypEqQbGJPp7BHWNwdB2KskY8Sq2oLVYkqkZxeS8ywJzC3LmzNAbMqXpuQ8FG4\n",
    f'aws_secret = "{AWS_SECRET}"\n',
    f"key_id: {AWS_KEY_ID}\n",
    "AccountKey=" + "a" * 44 + "b" * 42 + "==\n",
    "https://ci:pa55word@jenkins.lan\n",
    "cloudant_password='" + "a1b2c3d4" * 8 + "'\n",
    "https://acct:" + "abcdefabcdef" * 2 + "@acct.cloudant.com\n",
    "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs\n",
    f"token: {GITHUB_TOKEN}\n",
    "glpat-" + "x1Y2z3" * 4 + "\n",
    "ibm_cloud_iam_key = " + "A" * 10 + "b1_-" * 8 + "c2\n",
    "ibm_cos_hmac_secret_access_key = " + "0a1b2c3d" * 6 + "\n",
    "dns: 8.8.4.4\n",
    f"session = '{JWT}'\n",
    'db_password = "Sup3r-pw"\n',
    "mailchimp = 'a" + "b1c2" * 7 + "d3e-us12'\n",
    "//registry.npmjs.org/:_authToken=npm_" + "A1b2" * 9 + "\n",
    "sk-" + "A1b2C3d4E5" * 2 + "T3BlbkFJ" + "Z9y8X7w6V5" * 2 + "\n",
    "-----BEGIN DSA PRIVATE KEY-----\n",
    "PuTTY-User-Key-File-2: ssh-rsa\n",
    "pypi-AgEIcHlwaS5vcmc" + "Ab1_" * 18 + "\n",
    "SG." + "a" * 22 + "." + "b" * 43 + "\n",
    "xoxb-123456789012-abcdefghijkl\n",
    "https://hooks.slack.com/services/T0000/B0000/XXXXXXXX\n",
    "softlayer_api_key = " + "a1b2c3d4" * 8 + "\n",
    "sq0csp-" + "A1b2C" * 8 + "xyz\n",
    "sk_live_" + "a1B2c3D4" * 3 + "\n",
    "bot 123456789:" + "AAb1_" * 7 + "\n",
    "AC" + "a1b2" * 8 + "\n",
    "SK" + "c3d4" * 8 + "\n",
    # hex counts only under a secret's key (a bare `sha = "..."` is a commit)
    'signing_key = "' + hashlib.sha1(b"x").hexdigest() + '"\n',
    'blob = "' + base64.b64encode(hashlib.sha256(b"y").digest()).decode() + '"\n',
    "contraseña = 'Qwerty-1234'\n",
]


@pytest.mark.parametrize("path", ["x.py", "x.yaml", "x.go", "x.env", ""])
def test_line_triggers_hide_no_finding(path: str) -> None:
    """The line filters only skip work: every plugin finds the same with and without them."""
    corpus = "".join(PLUGIN_EXAMPLES) + "".join(FILES.values())
    with_triggers = sorted(_DetectSecrets().candidates(_Text(corpus, path)))
    without = sorted(_DetectSecrets(line_triggers=False).candidates(_Text(corpus, path)))
    assert with_triggers == without
    found = {secret_type for _, _, secret_type, _ in with_triggers}
    # Public IPs have no letter, so detect-secrets' own filters always drop them.
    assert found == set(DETECT_SECRETS_TYPES.values()) - {"public_ip"}


# --------------------------------------------------------------------------------------------
# Redaction
# --------------------------------------------------------------------------------------------


def test_every_planted_secret_is_absent_after_redaction(
    redacted: tuple[dict[str, str], Redactor],
) -> None:
    texts, _ = redacted
    everything = "\n".join(texts.values())
    for path, value, _ in PLANTED:
        assert value not in texts[path], (path, value)
        for line in _lines(value):
            assert line not in everything, (path, line)
    for value in (AWS_KEY_ID, AWS_SECRET, AGE_KEY, JWT, SA_TOKEN, GITEA_TOKEN, GITHUB_TOKEN):
        assert value not in everything
    for key in KEYS.values():
        assert all(line not in everything for line in _lines(key)[1:-1])


@pytest.mark.parametrize(("path", "kept"), KEPT, ids=[k[:30] for _, k in KEPT])
def test_non_secrets_survive_redaction(
    redacted: tuple[dict[str, str], Redactor], path: str, kept: str
) -> None:
    assert kept in FILES[path]
    assert kept in redacted[0][path]


def test_redacted_text_rescans_clean(
    scanner: SecretScanner, redacted: tuple[dict[str, str], Redactor]
) -> None:
    for path, text in redacted[0].items():
        assert scanner.scan(text, path) == [], path
        # The blocking checks re-scan finished samples without a path.
        assert scanner.scan(text) == [], path


def test_placeholders_cut_by_a_fim_span_rescan_clean(
    scanner: SecretScanner, redacted: tuple[dict[str, str], Redactor]
) -> None:
    """FIM samples cut files at any character, also inside a placeholder."""
    for path in (".env", "settings/aws.py", "charts/gitea/values.yaml", "scripts/mirror.sh"):
        text = redacted[0][path]
        for placeholder in re.finditer(r"<SECRET_[A-Z0-9_]+>", text):
            for cut in range(placeholder.start() + 1, placeholder.end()):
                middle_end = min(len(text), cut + 17)
                sample = (
                    f"<|fim_prefix|>{text[:cut]}<|fim_suffix|>{text[middle_end:]}"
                    f"<|fim_middle|>{text[cut:middle_end]}"
                )
                assert scanner.scan(sample) == [], (path, cut)


def test_placeholders_are_stable_per_value_and_numbered_per_type(
    redacted: tuple[dict[str, str], Redactor],
) -> None:
    texts, _ = redacted
    # The same value twice in one file, and in two files, gets one placeholder.
    assert texts["charts/gitea/values.yaml"].count("postgres://<SECRET_URL_CREDENTIALS_1>@") == 1
    assert (
        'git clone "postgres://<SECRET_URL_CREDENTIALS_1>@db.homelab.lan'
        in texts["scripts/mirror.sh"]
    )
    assert 'AWS_ACCESS_KEY_ID = "<SECRET_AWS_ACCESS_KEY_1>"' in texts["settings/aws.py"]
    assert "AWS_ACCESS_KEY_ID=<SECRET_AWS_ACCESS_KEY_1>" in texts[".env"]
    assert "AWS_SECRET_ACCESS_KEY=<SECRET_AWS_SECRET_KEY_1>" in texts[".env"]
    # Different values of one type get different numbers, in order of first appearance.
    assert "GITEA_TOKEN=<SECRET_GITEA_TOKEN_1>" in texts[".env"]
    assert "Authorization: token <SECRET_GITEA_TOKEN_2>" in texts["scripts/mirror.sh"]
    assert "DB_PASSWORD=<SECRET_ENV_ASSIGNMENT_1>" in texts[".env"]
    assert "value: <SECRET_ENV_ASSIGNMENT_2>" in texts["apps/gitea/deployment.yaml"]
    # The OpenSSH key in the Secret (indented) and in its own file is one key.
    assert "ssh-privatekey: |\n    <SECRET_PRIVATE_KEY_1>\n" in texts["apps/rustfs/secret.yaml"]
    assert texts["keys/id_ed25519"].startswith("<SECRET_PRIVATE_KEY_1>\n")
    assert texts["keys/id_rsa"].startswith("<SECRET_PRIVATE_KEY_2>\n")
    for text in texts.values():
        assert "<|" not in text and "|>" not in text
        assert re.findall(r"<SECRET_[A-Z0-9_]+_\d+>", text) == re.findall(r"<SECRET_[^>]*>", text)


def test_same_secret_twice_in_one_file_gets_one_placeholder(scanner: SecretScanner) -> None:
    text = f"A_TOKEN={GITHUB_TOKEN}\nB_TOKEN={GITHUB_TOKEN}\nC_TOKEN=ghp_{'Z' * 36}\n"
    redacted, counts = Redactor(scanner).redact(text, ".env")
    assert redacted == (
        "A_TOKEN=<SECRET_GITHUB_TOKEN_1>\nB_TOKEN=<SECRET_GITHUB_TOKEN_1>\n"
        "C_TOKEN=<SECRET_GITHUB_TOKEN_2>\n"
    )
    assert counts == Counter({"github_token": 3})


def test_a_found_token_is_redacted_where_it_reappears_without_a_rule(
    scanner: SecretScanner,
) -> None:
    redactor = Redactor(scanner)
    redactor.redact(f"GITEA_TOKEN={GITEA_TOKEN}\n", ".env")
    later, counts = redactor.redact(f"# paste: {GITEA_TOKEN} (rotated)\n", "NOTES.md")
    assert later == "# paste: <SECRET_GITEA_TOKEN_1> (rotated)\n"
    assert counts == Counter({"gitea_token": 1})


def test_pem_blocks_keep_line_numbers(redacted: tuple[dict[str, str], Redactor]) -> None:
    texts, _ = redacted
    for path, text in FILES.items():
        assert texts[path].count("\n") == text.count("\n"), path
    secret = FILES["apps/rustfs/secret.yaml"].splitlines()
    after = texts["apps/rustfs/secret.yaml"].splitlines()
    assert secret.index("kind: ConfigMap") == after.index("kind: ConfigMap")
    assert texts["keys/id_rsa"] == "<SECRET_PRIVATE_KEY_2>" + "\n" * FILES["keys/id_rsa"].count(
        "\n"
    )


def test_counts_per_type(redacted: tuple[dict[str, str], Redactor]) -> None:
    _, redactor = redacted
    assert redactor.counts == Counter(
        {
            "private_key": 6,  # rsa, openssh (in its file and in the Secret), ec, pkcs8, encrypted
            "env_assignment": 3,
            "gitea_token": 2,
            "aws_access_key": 2,
            "aws_secret_key": 2,
            "github_token": 1,
            "yaml_secret": 1,
            "url_credentials": 2,
            "k8s_secret_data": 2,
            "kubeconfig_client_key": 1,
            "kubeconfig_token": 1,
            "jwt": 1,
            "age_key": 1,
        }
    )


def test_redact_returns_the_counts_of_its_own_text(scanner: SecretScanner) -> None:
    redactor = Redactor(scanner)
    _, first = redactor.redact(FILES[".env"], ".env")
    _, second = redactor.redact(FILES["sops/age.key"], "sops/age.key")
    assert second == Counter({"age_key": 1})
    assert redactor.counts == first + second


def test_redaction_is_deterministic() -> None:
    def run() -> list[str]:
        redactor = Redactor(SecretScanner())
        return [redactor.redact(text, path)[0] for path, text in FILES.items()]

    assert run() == run()


def test_text_without_secrets_is_returned_unchanged(scanner: SecretScanner) -> None:
    for path, text in NOT_SECRETS:
        assert Redactor(scanner).redact(text, path) == (text, Counter())


# --------------------------------------------------------------------------------------------
# The sample repositories and speed
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    """(path, text) of every text file in the demo's sample repositories' working trees."""
    root = tmp_path_factory.mktemp("sample-repos")
    files = []
    for repo in create_sample_repos(root):
        for file in sorted(repo.rglob("*")):
            if ".git" in file.relative_to(repo).parts or not file.is_file():
                continue
            try:
                files.append((f"{repo.name}/{file.relative_to(repo)}", file.read_text()))
            except UnicodeDecodeError:
                continue
    return files


# The sample repos hold one planted slip: development MinIO credentials committed in
# kfp-training-pipelines/dev/ (the demo shows them redacted). Every other finding there is a false
# positive: hashes and digests flagged by the entropy plugins are accepted; nothing else is.
PLANTED_DIR = "kfp-training-pipelines/dev/"
PLANTED_VALUE = "kfp-dev-m1n10-Pa55word"
ACCEPTED_FALSE_POSITIVES = {"high_entropy_string", "high_entropy_hex_string", "public_ip"}


def test_sample_repos_have_the_planted_secret_and_few_false_positives(
    scanner: SecretScanner, sample_files: list[tuple[str, str]]
) -> None:
    planted: Counter[str] = Counter()
    false_positives: Counter[str] = Counter()
    for path, text in sample_files:
        for finding in scanner.scan(text, path):
            value = text[finding.start : finding.end]
            if path.startswith(PLANTED_DIR) and value == PLANTED_VALUE:
                planted[path] += 1
                continue
            false_positives[finding.secret_type] += 1
            print(f"{finding.secret_type:24} {path}: {value!r}")
    print(
        f"sample repos: {len(sample_files)} files, planted {dict(planted)}, "
        f"false positives {dict(false_positives)}"
    )
    assert set(planted) == {f"{PLANTED_DIR}.env", f"{PLANTED_DIR}docker-compose.yaml"}
    assert set(false_positives) <= ACCEPTED_FALSE_POSITIVES
    assert sum(false_positives.values()) <= 10


def test_scanning_fifty_thousand_lines_takes_seconds(
    scanner: SecretScanner, sample_files: list[tuple[str, str]]
) -> None:
    corpus = sample_files * (50_000 // sum(t.count("\n") + 1 for _, t in sample_files) + 1)
    lines = sum(text.count("\n") + 1 for _, text in corpus)
    started = time.perf_counter()
    for path, text in corpus:
        scanner.scan(text, path)
    elapsed = time.perf_counter() - started
    print(f"scanned {lines} lines in {elapsed:.2f} s: {lines / elapsed:,.0f} lines/s")
    assert lines >= 50_000
    assert elapsed < 10


def test_redacted_sample_repos_are_unchanged_or_only_lose_hashes(
    scanner: SecretScanner, sample_files: list[tuple[str, str]]
) -> None:
    redactor = Redactor(scanner)
    for path, text in sample_files:
        clean, _ = redactor.redact(text, path)
        assert clean.count("\n") == text.count("\n"), path
        assert scanner.scan(clean, path) == []


def test_empty_text(scanner: SecretScanner) -> None:
    assert scanner.scan("") == []
    assert Redactor(scanner).redact("") == ("", Counter())


def test_unknown_file_types_are_scanned(scanner: SecretScanner) -> None:
    assert contains_secret(f"token {GITEA_TOKEN}\n", scanner, path="weird/file.xyz")
