"""A labelled set for redaction precision: snippets of homelab files (written for the project)
that hold true secrets, and snippets that only look like they do.

Every secret value is made here from a fixed seed, in the shape the real thing has (an AWS key
id starts with AKIA and has 16 more characters, a Gitea token is 40 lowercase hex, ...), so no
credential of anyone's is ever written down. `labelled_cases()` returns the same cases every time.

A case is a file path (its type chooses the scanner's rules), the text, and the secret values in
it: a secret case must lose every value to a placeholder, a lookalike case (no values) must come
out of redaction unchanged.
"""

from __future__ import annotations

import base64
import json
import random
import string
from dataclasses import dataclass

HEX = "0123456789abcdef"
ALNUM = string.ascii_letters + string.digits
BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
CONFIG_JSON = json.dumps({"logLevel": "info", "listen": ":8080"}).encode()


@dataclass(frozen=True)
class Case:
    kind: str  # the secret kind, or the lookalike's family
    path: str
    text: str
    secrets: tuple[str, ...] = ()

    @property
    def is_secret(self) -> bool:
        return bool(self.secrets)


class _Maker:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def chars(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def aws_key_id(self) -> str:
        return "AKIA" + self.chars(string.ascii_uppercase + "234567", 16)

    def nkey(self, kind: str) -> str:
        return kind + self.chars(string.ascii_uppercase + "234567", 56)

    def aws_secret(self) -> str:
        return self.chars(ALNUM + "/+", 40)

    def hex40(self) -> str:
        return self.chars(HEX, 40)

    def github(self) -> str:
        return "ghp_" + self.chars(ALNUM, 36)

    def github_pat(self) -> str:
        return "github_pat_" + self.chars(ALNUM, 22) + "_" + self.chars(ALNUM, 59)

    def age(self) -> str:
        return "AGE-SECRET-KEY-1" + self.chars(BECH32.upper(), 58)

    def password(self) -> str:
        return self.chars(ALNUM, 6) + self.rng.choice("!#%&*-_") + self.chars(ALNUM, 9)

    def b64(self, n: int) -> str:
        return base64.b64encode(self.rng.randbytes(n)).decode()

    def pem(self, label: str, lines: int = 10) -> str:
        body = "\n".join(self.chars(ALNUM + "+/", 64) for _ in range(lines))
        return f"-----BEGIN {label}-----\n{body}\n{self.chars(ALNUM, 20)}==\n-----END {label}-----"

    def jwt(self) -> str:
        def part(data: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

        header = part({"alg": "RS256", "kid": self.chars(ALNUM, 8)})
        payload = part({"sub": "system:serviceaccount:ci:" + self.chars(string.ascii_lowercase, 6)})
        return f"{header}.{payload}.{self.chars(ALNUM + '-_', 43)}"

    def uuid(self) -> str:
        h = self.chars(HEX, 32)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _secret_cases(m: _Maker) -> list[Case]:
    cases: list[Case] = []

    def add(kind: str, path: str, text: str, *secrets: str) -> None:
        cases.append(Case(kind, path, text, secrets))

    for n in range(5):
        key_id, secret = m.aws_key_id(), m.aws_secret()
        add(
            "aws_keys",
            [".env", "deploy/backup.env", "scripts/s3.py", "terraform/providers.tf", "ops.sh"][n],
            [
                f"AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY={secret}\n",
                f"export AWS_ACCESS_KEY_ID={key_id}\nexport AWS_SECRET_ACCESS_KEY={secret}\n",
                f'session = boto3.Session(\n    aws_access_key_id="{key_id}",\n'
                f'    aws_secret_access_key="{secret}",\n)\n',
                f'provider "aws" {{\n  access_key = "{key_id}"\n  secret_key = "{secret}"\n}}\n',
                f"aws configure set aws_access_key_id {key_id}\n"
                f"AWS_SECRET_ACCESS_KEY='{secret}' restic backup /data\n",
            ][n],
            key_id,
            secret,
        )
    for n in range(5):
        token = m.hex40()
        add(
            "gitea_token",
            ["scripts/mirror.sh", ".env", "tools/gitea.py", "deploy/renovate.yaml", "Makefile"][n],
            [
                f'curl -H "Authorization: token {token}" https://git.lan/api/v1/user\n',
                f"GITEA_TOKEN={token}\n",
                f'headers = {{"Authorization": "token {token}"}}\n',
                f"env:\n  RENOVATE_TOKEN: {token}\n",
                f"GITEA_TOKEN ?= {token}\n",
            ][n],
            token,
        )
    for n in range(5):
        token = m.github() if n % 2 == 0 else m.github_pat()
        add(
            "github_token",
            ["scripts/release.sh", "cmd/sync/main.go", ".env", "ci/config.yaml", "notes.md"][n],
            [
                f"gh auth login --with-token <<< {token}\n",
                f'const githubToken = "{token}"\n',
                f"GH_TOKEN={token}\n",
                f"github:\n  token: {token}\n",
                f"Temporary token for the runner: {token}\n",
            ][n],
            token,
        )
    for n, label in enumerate(("RSA PRIVATE KEY", "OPENSSH PRIVATE KEY", "EC PRIVATE KEY")):
        key = m.pem(label)
        add(
            "private_key", ["keys/deploy_rsa", "keys/id_ed25519", "tls/tls.key"][n], key + "\n", key
        )
    key = m.pem("PRIVATE KEY", lines=6)
    indented = "\n".join("    " + line for line in key.splitlines())
    add(
        "private_key",
        "deploy/ssh-secret.yaml",
        f"stringData:\n  identity: |\n{indented}\n",
        *[line.strip() for line in indented.splitlines() if "-----" not in line],
    )
    for n in range(5):
        age = m.age()
        add(
            "age_key",
            ["age.key", ".sops/age.agekey", "talos/age.txt", "README.md", ".env"][n],
            [
                f"# created: 2026-03-01T10:00:00Z\n# public key: age1{m.chars(BECH32, 58)}\n"
                f"{age}\n",
                f"{age}\n",
                f"# recovery key\n{age}\n",
                f"Restore with `export SOPS_AGE_KEY={age}`.\n",
                f"SOPS_AGE_KEY={age}\n",
            ][n],
            age,
        )
    for n in range(4):
        token, client_key = m.jwt(), m.b64(96)
        add(
            "kubeconfig",
            ["talos/kubeconfig", "kubeconfig.yaml", ".kube/config", "clusters/main/kubeconfig"][n],
            "apiVersion: v1\nkind: Config\ncurrent-context: admin@main\nusers:\n- name: admin\n"
            f"  user:\n    client-certificate-data: {m.b64(60)}\n"
            f"    client-key-data: {client_key}\n    token: {token}\n",
            client_key,
            token,
        )
    for n in range(5):
        password, token = m.password(), m.b64(24)
        add(
            "k8s_secret_data",
            f"kubernetes/apps/app{n}/secret.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n"
            f"  name: app{n}-credentials\ntype: Opaque\n"
            + (
                f"data:\n  password: {base64.b64encode(password.encode()).decode()}\n"
                f"  api-token: {token}\n"
                if n % 2
                else f"stringData:\n  DB_PASSWORD: {password}\n  API_TOKEN: {token}\n"
            ),
            base64.b64encode(password.encode()).decode() if n % 2 else password,
            token,
        )
    for n in range(5):
        password = m.password().replace("#", "x").replace("%", "y")
        add(
            "url_credentials",
            ["docker-compose.yaml", ".env", "app/settings.py", "values.yaml", "backup.sh"][n],
            [
                f"      DATABASE_URL: postgres://app:{password}@db:5432/app\n",
                f"REDIS_URL=redis://default:{password}@redis.lan:6379/0\n",
                f'BROKER = "amqp://worker:{password}@rabbit.lan:5672/"\n',
                f"nats:\n  url: nats://orders:{password}@nats.nats.svc:4222\n",
                f"git clone https://backup:{password}@git.lan/homelab/vault.git\n",
            ][n],
            password,
        )
    for n in range(6):
        password = m.password()
        add(
            "env_password",
            [".env", "docker-compose.yaml", "Dockerfile", ".env.local", "compose.yaml", "run.sh"][
                n
            ],
            [
                f"POSTGRES_USER=app\nPOSTGRES_PASSWORD={password}\n",
                f"    environment:\n      - MYSQL_ROOT_PASSWORD={password}\n      - TZ=UTC\n",
                f"ENV ADMIN_PASSWORD {password}\n",
                f"GRAFANA_ADMIN_PASSWORD='{password}'\n",
                f'    environment:\n      DB_PASSWORD: "{password}"\n',
                f"export RESTIC_PASSWORD={password}\n",
            ][n],
            password,
        )
    for n in range(5):
        password = m.password()
        add(
            "yaml_password",
            f"kubernetes/apps/app{n}/helmrelease.yaml",
            [
                f"    values:\n      auth:\n        username: admin\n"
                f"        password: {password}\n",
                f"  redis:\n    password: '{password}'\n",
                f'  smtp:\n    host: mail.lan\n    password: "{password}"\n',
                f"  oidc:\n    clientID: grafana\n    clientSecret: {password}\n",
                f"  adminPassword: {password}\n",
            ][n],
            password,
        )
    for n in range(5):
        token = m.jwt()
        add(
            "jwt",
            ["scripts/call.sh", "tests/fixtures.py", "deploy/job.yaml", "notes.md", "api.http"][n],
            [
                f'curl -H "Authorization: Bearer {token}" https://api.lan/v1/jobs\n',
                f'SERVICE_JWT = "{token}"\n',
                f"          - --token={token}\n",
                f"The CI service account token is {token}.\n",
                f"GET https://api.lan/v1/me\nAuthorization: Bearer {token}\n",
            ][n],
            token,
        )
    for n in range(3):
        auth = base64.b64encode(f"robot:{m.password()}".encode()).decode()
        add(
            "docker_auth",
            ["docker/config.json", "deploy/regcred.json", ".docker/config.json"][n],
            f'{{\n  "auths": {{\n    "ghcr.io": {{\n      "auth": "{auth}"\n    }}\n  }}\n}}\n',
            auth,
        )
    # a passphrase of plain words is a password all the same
    add(
        "yaml_password",
        "apps/z/values.yaml",
        "  admin:\n    password: homelab-admin-pass\n",
        "homelab-admin-pass",
    )
    for n in range(4):
        seed = m.nkey("SU" if n % 2 == 0 else "SA")
        add(
            "nkey_seed",
            ["nats/app.creds", "nats/sys.nkey", "internal/auth/auth_test.go", "nats/values.yaml"][
                n
            ],
            [
                f"-----BEGIN NATS USER JWT-----\n{m.jwt()}\n------END NATS USER JWT------\n\n"
                f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n",
                f"{seed}\n",
                f'const testSeed = "{seed}"\n',
                f"accounts:\n  SYS:\n    seed: {seed}\n",
            ][n],
            seed,
        )
    for _ in range(2):
        password = m.password()
        add(
            "netrc",
            ".netrc",
            f"machine git.lan\n  login backup\n  password {password}\n",
            password,
        )
    return cases


# Lookalikes: what real GitOps, CI, Go and Python repositories hold that names or resembles a
# secret without being one.
def _lookalike_cases(m: _Maker) -> list[Case]:
    sha = [m.hex40() for _ in range(8)]
    digest = [m.chars(HEX, 64) for _ in range(6)]
    cases: list[tuple[str, str, str]] = [
        # secretKeyRef / secretRef names and keys
        (
            "secret_ref",
            "apps/a/deployment.yaml",
            "        env:\n          - name: DB_PASSWORD\n            valueFrom:\n"
            "              secretKeyRef:\n                name: postgres-app\n"
            "                key: password\n",
        ),
        (
            "secret_ref",
            "apps/b/deployment.yaml",
            "          envFrom:\n            - secretRef:\n"
            "                name: paperless-secret\n",
        ),
        (
            "secret_ref",
            "apps/c/helmrelease.yaml",
            "      envFrom:\n        - secretRef:\n"
            "            name: '{{ .Release.Name }}-secret'\n",
        ),
        (
            "secret_ref",
            "apps/d/helmrelease.yaml",
            "    controllers:\n      main:\n        containers:\n          app:\n            env:\n"
            "              TOKEN:\n                valueFrom:\n                  secretKeyRef:\n"
            "                    name: bot-secret\n                    key: TOKEN\n",
        ),
        # keys that name a Secret, or a key inside one
        (
            "secret_name",
            "apps/e/helmrelease.yaml",
            "    values:\n      githubConfigSecret: home-operations-runner-secret\n",
        ),
        (
            "secret_name",
            "apps/f/helmrelease.yaml",
            "      admin:\n        existingSecret: grafana-admin\n"
            "        userKey: admin-user\n        passwordKey: admin-password\n",
        ),
        (
            "secret_name",
            "apps/g/ingress.yaml",
            '  tls:\n    - hosts: ["app.lan"]\n      secretName: wildcard-tls\n',
        ),
        (
            "secret_name",
            "apps/h/helmrelease.yaml",
            "      auth:\n        existingSecret: nats-auth\n        tokenSecretKey: token\n",
        ),
        (
            "secret_name",
            "apps/i/helmrelease.yaml",
            "    adminPasswordSecret: grafana-admin-secret\n",
        ),
        (
            "secret_name",
            "apps/j/certificate.yaml",
            "spec:\n  secretName: home-lan-tls\n  issuerRef:\n    name: letsencrypt-production\n",
        ),
        (
            "secret_name",
            "apps/k/helmrelease.yaml",
            "    persistence:\n      config:\n        type: secret\n"
            "        name: app-config-secret\n",
        ),
        (
            "secret_name",
            "apps/l/helmrelease.yaml",
            "      oidc:\n        clientSecretRef:\n          name: oidc-grafana\n"
            "          key: client-secret\n",
        ),
        # ExternalSecrets reference a store, never a value
        (
            "external_secret",
            "apps/m/externalsecret.yaml",
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata:\n  name: runner\n"
            "spec:\n  secretStoreRef:\n    kind: ClusterSecretStore\n    name: onepassword\n"
            "  data:\n    - secretKey: github_app_id\n      remoteRef:\n"
            "        key: actions-runner\n"
            "        property: app_id\n    - secretKey: github_app_private_key\n"
            "      remoteRef:\n        key: actions-runner\n        property: private_key\n",
        ),
        (
            "external_secret",
            "apps/n/externalsecret.yaml",
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata:\n  name: db\n"
            "spec:\n  target:\n    template:\n      data:\n"
            "        DATABASE_URL: 'postgres://{{ .username }}:{{ .password }}@db:5432/app'\n"
            "        API_TOKEN: '{{ .api_token }}'\n  dataFrom:\n    - extract:\n        key: db\n",
        ),
        (
            "external_secret",
            "apps/o/externalsecret.yaml",
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nspec:\n  data:\n"
            "    - secretKey: password\n      remoteRef:\n        key: postgres\n"
            "    - secretKey: token\n      remoteRef:\n        key: cloudflare\n"
            "        property: api_token\n",
        ),
        # GitHub Actions
        (
            "github_actions",
            ".github/workflows/release.yaml",
            "permissions:\n  contents: write\n  id-token: write\n  packages: write\n",
        ),
        (
            "github_actions",
            ".github/workflows/ci.yaml",
            "jobs:\n  build:\n    uses: ./.github/workflows/build.yaml\n    secrets: inherit\n",
        ),
        (
            "github_actions",
            ".github/workflows/pr.yaml",
            "    permissions:\n      id-token: none\n      pull-requests: read\n",
        ),
        (
            "github_actions",
            ".github/workflows/lint.yaml",
            "      - name: Generate token\n        uses: actions/create-github-app-token@"
            f"{sha[0]} # v1\n        with:\n          app-id: ${{{{ secrets.BOT_APP_ID }}}}\n"
            "          private-key: ${{ secrets.BOT_APP_PRIVATE_KEY }}\n",
        ),
        (
            "github_actions",
            ".github/workflows/docker.yaml",
            "        with:\n          password: ${{ secrets.GITHUB_TOKEN }}\n"
            "          username: ${{ github.actor }}\n",
        ),
        # pinned commits
        (
            "pinned_sha",
            ".github/workflows/ci.yaml",
            f"      - uses: actions/checkout@{sha[1]} # v4.2.2\n",
        ),
        (
            "pinned_sha",
            ".github/workflows/ci.yaml",
            f'      - uses: actions/checkout@v4\n        with:\n          ref: "{sha[2]}"\n',
        ),
        ("pinned_sha", "flake.lock", f'      "rev": "{sha[3]}",\n      "type": "github"\n'),
        ("pinned_sha", "cmd/version.go", f'const commit = "{sha[4]}"\n'),
        ("pinned_sha", "build/version.py", f'GIT_SHA = "{sha[5]}"\n'),
        (
            "pinned_sha",
            "docs/adr/0007-pin-actions.md",
            f"We pinned the action at commit {sha[6]} after the tag was moved.\n",
        ),
        (
            "pinned_sha",
            "kustomization.yaml",
            f"resources:\n  - https://github.com/org/repo//deploy?ref={sha[7]}\n",
        ),
        (
            "pinned_sha",
            "renovate.json5",
            '{\n  "packageRules": [\n'
            f'    {{"matchDigest": "{digest[0][:40]}", "enabled": false}}\n  ]\n}}\n',
        ),
        # image digests and checksums
        (
            "digest",
            "apps/p/helmrelease.yaml",
            f"        image:\n          repository: ghcr.io/home-operations/sonarr\n"
            f"          tag: 4.0.14@sha256:{digest[1]}\n",
        ),
        ("digest", "Dockerfile", f"FROM python:3.12-slim@sha256:{digest[2]}\n"),
        (
            "digest",
            "talos/talconfig.yaml",
            f"talosImageURL: factory.talos.dev/installer/{digest[3]}\n",
        ),
        ("digest", "scripts/install.sh", f'EXPECTED_SHA256="{digest[4]}"\n'),
        ("digest", "deploy/values.yaml", f'checksum: "{digest[5]}"\n'),
        ("digest", "checksums.txt", f"{digest[0]}  talosctl-linux-amd64\n"),
        (
            "lockfile",
            "go.sum",
            f"github.com/nats-io/nats.go v1.37.0 h1:{m.b64(32)}\n"
            f"github.com/nats-io/nats.go v1.37.0/go.mod h1:{m.b64(32)}\n",
        ),
        (
            "lockfile",
            "package-lock.json",
            f'    "node_modules/yaml": {{\n      "version": "2.4.1",\n'
            f'      "integrity": "sha512-{m.b64(64)}"\n    }},\n',
        ),
        (
            "lockfile",
            "poetry.lock",
            'files = [\n    {file = "pyyaml-6.0.1.tar.gz", '
            f'hash = "sha256:{m.chars(HEX, 64)}"}},\n]\n',
        ),
        (
            "lockfile",
            "Cargo.lock",
            f'[[package]]\nname = "serde"\nversion = "1.0.200"\nchecksum = "{m.chars(HEX, 64)}"\n',
        ),
        (
            "lockfile",
            "uv.lock",
            f'sdist = {{ url = "https://x/y.tar.gz", hash = "sha256:{m.chars(HEX, 64)}" }}\n',
        ),
        ("lockfile", "flake.lock", f'      "narHash": "sha256-{m.b64(32)}",\n'),
        # ids
        ("uuid", "apps/q/helmrelease.yaml", f"      dashboardUid: {m.uuid()}\n"),
        ("uuid", "terraform/main.tf", f'  tenant_id = "{m.uuid()}"\n'),
        ("uuid", "talos/talconfig.yaml", f"  clusterId: {m.uuid()}\n"),
        ("uuid", "apps/r/values.yaml", f"  apiKeyId: {m.uuid()}\n"),
        # public material
        (
            "public",
            "kubeconfig.yaml",
            f"clusters:\n- cluster:\n    certificate-authority-data: {m.b64(90)}\n"
            "    server: https://10.0.0.10:6443\n  name: main\n",
        ),
        (
            "public",
            ".sops.yaml",
            "creation_rules:\n  - path_regex: .*\\.sops\\.yaml\n"
            f"    age: age1{m.chars(BECH32, 58)}\n",
        ),
        (
            "public",
            "ansible/authorized_keys",
            f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{m.chars(ALNUM, 43)} admin@laptop\n",
        ),
        (
            "public",
            "keys/deploy.pub",
            f"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ{m.chars(ALNUM, 60)} deploy\n",
        ),
        # base64 in ConfigMaps
        (
            "configmap_data",
            "apps/s/configmap.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dashboards\nbinaryData:\n"
            f"  logo.png: {m.b64(60)}\n",
        ),
        (
            "configmap_data",
            "apps/t/configmap.yaml",
            "apiVersion: v1\nkind: ConfigMap\ndata:\n"
            f"  config.json: {base64.b64encode(CONFIG_JSON).decode()}\n"
            "  LOG_LEVEL: info\n",
        ),
        # templates, references, and names of things
        (
            "reference",
            "apps/u/helmrelease.yaml",
            "        password: ${DB_PASSWORD}\n        user: app\n",
        ),
        (
            "reference",
            "charts/app/templates/secret.yaml",
            "stringData:\n  token: {{ .Values.token | quote }}\n",
        ),
        (
            "reference",
            "docker-compose.yaml",
            "    environment:\n      - POSTGRES_PASSWORD_FILE=/run/secrets/db_password\n",
        ),
        (
            "reference",
            "app/config.py",
            'TOKEN_ENV = "GITEA_TOKEN"\ntoken = os.environ[TOKEN_ENV]\n',
        ),
        (
            "reference",
            "cmd/server/main.go",
            'token := os.Getenv("NATS_TOKEN")\nif token == "" {\n\treturn errMissingToken\n}\n',
        ),
        (
            "reference",
            "apps/v/helmrelease.yaml",
            '    secret:\n      create: false\n      name: ""\n',
        ),
        (
            "reference",
            "pipelines/train.py",
            "max_tokens = 512\neos_token = tokenizer.eos_token\n"
            "next_page_token = resp.next_page_token\n",
        ),
        (
            "reference",
            "app/auth.py",
            'def verify(token: str) -> bool:\n    """Check the token."""\n'
            "    return token in ALLOWED\n",
        ),
        (
            "reference",
            "docs/adr/0003-secrets.md",
            "Secrets are stored in 1Password and synced by external-secrets; the password of the\n"
            "database never appears in git.\n",
        ),
        (
            "reference",
            "apps/w/helmrelease.yaml",
            "      passwordFile: /run/secrets/grafana-admin\n",
        ),
        ("reference", "apps/x/values.yaml", '  auth:\n    enabled: true\n    token: ""\n'),
        (
            "reference",
            "tests/test_login.py",
            'PASSWORD = "PASSWORD"\nassert login("admin", PASSWORD)\n',
        ),
        ("reference", "app/settings.py", 'SECRET_KEY_NAME = "django-secret-key"\n'),
        ("reference", "README.md", 'secret=Secret(group="openai-secret", key="api-key"),\n'),
        ("reference", "pipelines/eager.py", 'EAGER_TAG_ROOT_KEY = "eager-root-exec"\n'),
        ("reference", "pipelines/secrets.py", 'ctx = SecretsManager(secrets_prefix="_UNION_")\n'),
        ("reference", "config/auth.yaml", "  clientSecretLocation: configs/fake_secret\n"),
        ("reference", "plugins/wandb.py", 'WANDB_SECRET_GROUP = "wandb-api-group"\n'),
        ("reference", "docs/cli.md", "flyte-cli -u ex:flyteexamples:development:train-wf\n"),
        ("pinned_sha", "tests/test_remote.py", f'wf = remote.fetch_workflow(version="{sha[0]}")\n'),
        (
            "public",
            "nats/accounts.yaml",
            "users:\n  - user: U" + m.chars(string.ascii_uppercase + "234567", 55) + "\n",
        ),
    ]
    return [Case(kind, path, text) for kind, path, text in cases]


def labelled_cases(seed: int = 2026) -> list[Case]:
    """The labelled set: secret cases first, then lookalikes; the same every call."""
    maker = _Maker(seed)
    return _secret_cases(maker) + _lookalike_cases(maker)


@dataclass(frozen=True)
class Outcome:
    case: Case
    missed: tuple[str, ...]  # secret values still in the redacted text
    changed: bool  # the redacted text differs from the original


def evaluate(cases: list[Case]) -> list[Outcome]:
    """Redact each case on its own (a fresh Redactor: no token learnt from another case)."""
    from coder_assets.core.samples.secrets import Redactor, SecretScanner

    scanner = SecretScanner()
    outcomes = []
    for case in cases:
        redacted, _ = Redactor(scanner).redact(case.text, case.path)
        missed = tuple(value for value in case.secrets if value in redacted)
        outcomes.append(Outcome(case, missed, redacted != case.text))
    return outcomes
