"""instruction_pairs and fim_samples (with their blocking secret checks) materialized from real
git repositories: the sample repos, and fixture repos with planted secrets and broken files."""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from coder_assets.assets.samples import fim_samples, instruction_pairs
from coder_assets.assets.snapshots import repo_snapshots
from coder_assets.checks import fim_samples_free_of_secrets, instruction_pairs_free_of_secrets
from coder_assets.core.samples.fim import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX
from coder_assets.core.samples.records import PAIR_KINDS
from coder_assets.demo.sample_repos import SAMPLE_REPO_NAMES, create_sample_repos
from coder_assets.resources.repos import LocalReposResource
from coder_assets.resources.storage import read_parquet
from coder_assets_tests.conftest import commit, file_at, git, init_repo, resources_for

PLAIN_MODULE = (
    '"""Arithmetic helpers."""\n\n\ndef add(a: int, b: int) -> int:\n'
    '    """Add two numbers."""\n    total = a + b\n    return total\n'
)

SAMPLES_GRAPH = [
    repo_snapshots,
    instruction_pairs,
    fim_samples,
    instruction_pairs_free_of_secrets,
    fim_samples_free_of_secrets,
]


def _run(instance, tmp_path, repos_root, name, *, run_config=None, raise_on_error=True):
    key = f"homelab~{name}"
    if not instance.has_dynamic_partition("repos", key):
        instance.add_dynamic_partitions("repos", [key])
    source = LocalReposResource(root=str(repos_root), owner="homelab")
    return dg.materialize(
        SAMPLES_GRAPH,
        partition_key=key,
        instance=instance,
        resources=resources_for(source, tmp_path),
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def _frame(tmp_path: Path, asset: str, name: str) -> pd.DataFrame:
    return read_parquet(tmp_path / "storage" / asset / f"homelab~{name}.parquet")


def _checks(result) -> dict[str, bool]:
    return {
        evaluation.check_name: evaluation.passed
        for evaluation in result.get_asset_check_evaluations()
    }


def _split_fim(text: str) -> tuple[str, str, str]:
    body = text[text.index(FIM_PREFIX) + len(FIM_PREFIX) :]
    prefix, rest = body.split(FIM_SUFFIX, 1)
    suffix, middle = rest.split(FIM_MIDDLE, 1)
    return prefix, middle, suffix


def _redacted_pattern(sample: str) -> str:
    """A regex for the source text that `sample` shows, secrets standing as placeholders."""
    parts = re.split(r"<SECRET_[A-Z_]+_\d+>", sample)
    return ".+?".join(re.escape(part) for part in parts)


def _same_but_redacted(sample: str, source: str) -> bool:
    """`sample` equals `source` exactly, except that secrets may stand as placeholders."""
    return re.fullmatch(_redacted_pattern(sample), source, flags=re.DOTALL) is not None


@pytest.fixture(scope="module")
def sample_outputs(tmp_path_factory):
    """Every sample repo through snapshots, pairs and FIM once, shared by the tests below."""
    tmp_path = tmp_path_factory.mktemp("samples")
    repos_root = tmp_path / "repos"
    create_sample_repos(repos_root)
    results = {}
    with dg.instance_for_test() as instance:
        for name in SAMPLE_REPO_NAMES:
            results[name] = _run(instance, tmp_path, repos_root, name)
    return tmp_path, repos_root, results


def test_sample_repos_yield_every_source_kind(sample_outputs):
    tmp_path, _, _ = sample_outputs
    kinds = Counter()
    for name in SAMPLE_REPO_NAMES:
        kinds.update(_frame(tmp_path, "instruction_pairs", name)["kind"])
        assert len(_frame(tmp_path, "fim_samples", name)) > 0, name

    expected = set(PAIR_KINDS)
    assert expected <= {kind for kind, count in kinds.items() if count > 0}, kinds


def test_secret_checks_pass_on_the_sample_repos(sample_outputs):
    _, _, results = sample_outputs
    for name, result in results.items():
        assert _checks(result) == {
            "instruction_pairs_free_of_secrets": True,
            "fim_samples_free_of_secrets": True,
        }, name


def test_fim_samples_reassemble_exactly_into_the_file(sample_outputs):
    tmp_path, repos_root, _ = sample_outputs
    for name in SAMPLE_REPO_NAMES:
        for row in _frame(tmp_path, "fim_samples", name).itertuples():
            source = file_at(repos_root / name, row.commit_sha, row.path)
            prefix, middle, suffix = _split_fim(row.text)
            assert _same_but_redacted(prefix + middle + suffix, source), row.path
            lines = source.splitlines()
            shown = "\n".join(lines[row.start_line - 1 : row.end_line])
            first = middle.strip().splitlines()[0].strip() if middle.strip() else ""
            assert re.search(_redacted_pattern(first), shown, flags=re.DOTALL), row.path


def test_provenance_lines_point_at_the_code(sample_outputs):
    tmp_path, repos_root, _ = sample_outputs
    checked = 0
    for name in SAMPLE_REPO_NAMES:
        pairs = _frame(tmp_path, "instruction_pairs", name)
        code = pairs[pairs["kind"].isin(["python_function", "python_class", "go_function"])]
        for row in code.itertuples():
            source = git(repos_root / name, "show", f"{row.commit_sha}:{row.path}").splitlines()
            assert "\n".join(source[row.start_line - 1 : row.end_line]).strip() == (
                row.output.strip()
            ), (row.path, row.start_line)
            checked += 1
    assert checked > 5


def test_history_pairs_carry_the_commit_and_its_parent(sample_outputs):
    tmp_path, repos_root, _ = sample_outputs
    for name in SAMPLE_REPO_NAMES:
        pairs = _frame(tmp_path, "instruction_pairs", name)
        history = pairs[pairs["kind"] == "commit_change"]
        for row in history.itertuples():
            assert git(repos_root / name, "rev-parse", f"{row.commit_sha}^") == row.parent_sha
            after = git(repos_root / name, "show", f"{row.commit_sha}:{row.path}") + "\n"
            before = git(repos_root / name, "show", f"{row.parent_sha}:{row.path}") + "\n"
            # The hunks, before and after, are pieces of the two versions of the file.
            for hunks, text in ((row.input, before), (row.output, after)):
                pieces = re.split(r"^@@ [-+]\d+,\d+ @@\n", hunks, flags=re.M)
                assert pieces[0] == "" and len(pieces) > 1
                assert all(piece in text for piece in pieces[1:])
            subject = git(repos_root / name, "log", "-1", "--format=%s", row.commit_sha)
            assert row.instruction.startswith(subject + "\n\n")
            assert f"`{row.path}`" in row.instruction
            assert not subject.lower().startswith(("wip", "bump", "merge"))


def test_running_twice_gives_identical_bytes(tmp_path):
    repos_root = tmp_path / "repos"
    create_sample_repos(repos_root)
    outputs = []
    for attempt in range(2):
        with dg.instance_for_test() as instance:
            _run(instance, tmp_path / f"run{attempt}", repos_root, "order-events-handler")
        outputs.append(
            [
                (
                    tmp_path
                    / f"run{attempt}"
                    / "storage"
                    / asset
                    / "homelab~order-events-handler.parquet"
                ).read_bytes()
                for asset in ("instruction_pairs", "fim_samples")
            ]
        )
    assert outputs[0] == outputs[1]


def _pem_keys() -> dict[str, str]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    ssh_pem = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )
    return {"rsa": rsa_pem, "openssh": ssh_pem}


def _jwt() -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    header = part({"alg": "HS256", "typ": "JWT"})
    payload = part({"sub": "homelab-ci", "iat": 1767225600, "scope": "deploy"})
    return f"{header}.{payload}.Q2hhbmdlTWVQbGVhc2VUaGlzSXNBU2lnbmF0dXJlMTIz"


PLANTED = {
    "aws_key_id": "AKIAZ7Q3HOMELAB2X9KD",
    "aws_secret": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYHOMELAB3x9",
    "age": "AGE-SECRET-KEY-1QQPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L2Z4Y8N3QH6R9T5V7W0XJC3D",
    "kube_token": "eyJhbGciOiJSUzI1NiIsImtpZCI6ImhvbWVsYWIifQ.c2VydmljZWFjY291bnQ.c2lnbmF0dXJlCg",
    "kube_client_key": base64.b64encode(b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE...\n").decode(),
    "yaml_password": "Tr0ub4dor&3-homelab-nats",
    "env_password": "s3cr3t-Pa55w0rd-for-postgres",
    "gitea_token": "9c2f4e6a8b0d1f3e5a7c9b1d3f5e7a9c0b2d4f6a",
    "url_password": "Sup3rS3cretGitPass",
}


def _secret_repo(repos_root: Path) -> tuple[Path, list[str]]:
    repo = init_repo(repos_root / "leaky")
    keys = _pem_keys()
    jwt = _jwt()
    files = {
        "src/settings.py": (
            '"""Settings of the deploy helper."""\n\n'
            f'AWS_ACCESS_KEY_ID = "{PLANTED["aws_key_id"]}"\n'
            f'AWS_SECRET_ACCESS_KEY = "{PLANTED["aws_secret"]}"\n'
            f'API_JWT = "{jwt}"\n\n\n'
            "def connect(url: str) -> str:\n"
            '    """Connect to the Gitea API and return the session id."""\n'
            f'    mirror = "https://admin:{PLANTED["url_password"]}@gitea.homelab.lan/x.git"\n'
            "    return url + mirror\n"
        ),
        "deploy/values.yaml": (
            "nats:\n  auth:\n    user: app\n"
            f'    password: "{PLANTED["yaml_password"]}"\n'
            f"gitea:\n  token: {PLANTED['gitea_token']}\n"
        ),
        ".env": f"DB_USER=app\nDB_PASSWORD={PLANTED['env_password']}\n",
        "deploy/kubeconfig.yaml": (
            "apiVersion: v1\nkind: Config\nusers:\n- name: ci\n  user:\n"
            f"    token: {PLANTED['kube_token']}\n"
            f"    client-key-data: {PLANTED['kube_client_key']}\n"
        ),
        "keys/age.txt": f"# created: 2026-01-01\n# public key: age1xyz\n{PLANTED['age']}\n",
        "keys/id_rsa": keys["rsa"],
        "keys/id_ed25519": keys["openssh"],
        "deploy/secret.yaml": (
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: nats-creds\n  namespace: nats\n"
            "type: Opaque\ndata:\n  password: " + base64.b64encode(b"nats-pass-42").decode() + "\n"
        ),
        "deploy/secrets.enc.yaml": (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: sops-config\n"
            "data:\n  key: ENC[AES256_GCM,data:q83Fg==,iv:abc=,tag:def=,type:str]\n"
            "sops:\n  age:\n  - recipient: age1xyz\n  version: 3.9.0\n"
        ),
    }
    commit(repo, files, "Add deploy helper")
    secrets = list(PLANTED.values()) + [jwt]
    for pem in keys.values():
        secrets += [line for line in pem.splitlines() if line and "-----" not in line]
    return repo, secrets


def _all_strings(tmp_path: Path, name: str) -> list[str]:
    strings: list[str] = []
    for asset in ("instruction_pairs", "fim_samples"):
        frame = _frame(tmp_path, asset, name)
        for column in frame.columns:
            strings += [str(v) for v in frame[column].tolist()]
    return strings


def test_planted_secrets_are_absent_from_every_output(instance, tmp_path, repos_root):
    _, secrets = _secret_repo(repos_root)

    result = _run(instance, tmp_path, repos_root, "leaky")

    outputs = "\n".join(_all_strings(tmp_path, "leaky"))
    logs = "\n".join(str(entry) for entry in instance.all_logs(result.run_id))
    for secret in secrets:
        assert secret not in outputs, secret[:12]
        assert secret not in logs, secret[:12]
    assert "<SECRET_" in outputs
    assert _checks(result) == {
        "instruction_pairs_free_of_secrets": True,
        "fim_samples_free_of_secrets": True,
    }
    paths = set(_frame(tmp_path, "instruction_pairs", "leaky")["path"]) | set(
        _frame(tmp_path, "fim_samples", "leaky")["path"]
    )
    assert "deploy/secrets.enc.yaml" not in paths
    manifests = _frame(tmp_path, "instruction_pairs", "leaky")
    assert not manifests["output"].str.contains("kind: Secret").any()


def test_the_same_secret_gets_the_same_placeholder_across_files(instance, tmp_path, repos_root):
    repo = init_repo(repos_root / "reuse")
    token = "ghp_" + "Z" * 10 + "homelab0000reuse00000000000"
    commit(
        repo,
        {
            "a.py": f'"""Client A."""\n\nTOKEN = "{token}"\n\n\ndef a():\n    return TOKEN\n',
            "b.py": f'"""Client B."""\n\nTOKEN = "{token}"\n\n\ndef b():\n    return TOKEN\n',
        },
    )

    _run(instance, tmp_path, repos_root, "reuse")

    fim = _frame(tmp_path, "fim_samples", "reuse")
    placeholders = {
        line.split('"')[1]
        for text in fim["text"]
        for line in text.splitlines()
        if line.startswith("TOKEN = ")
    }
    assert len(placeholders) == 1 and next(iter(placeholders)).startswith("<SECRET_")


def test_secret_check_fails_when_redaction_is_switched_off(instance, tmp_path, repos_root):
    _secret_repo(repos_root)
    keep = {"config": {"secret_action": "keep"}}

    result = _run(
        instance,
        tmp_path,
        repos_root,
        "leaky",
        run_config={"ops": {"instruction_pairs": keep, "fim_samples": keep}},
        raise_on_error=False,
    )

    assert _checks(result) == {
        "instruction_pairs_free_of_secrets": False,
        "fim_samples_free_of_secrets": False,
    }


def test_special_token_text_is_never_emitted_raw(instance, tmp_path, repos_root):
    repo = init_repo(repos_root / "tokens")
    commit(
        repo,
        {
            "prompts.py": (
                '"""Prompt templates for the coding model."""\n\n\n'
                "def fim_prompt(prefix: str, suffix: str) -> str:\n"
                '    """Build a FIM prompt from a prefix and a suffix."""\n'
                '    return ("<|fim_prefix|>" + prefix + "<|fim_suffix|>" + suffix\n'
                '            + "<|fim_middle|>")\n'
            ),
            "plain.py": PLAIN_MODULE,
        },
    )

    result = _run(instance, tmp_path, repos_root, "tokens")

    fim = _frame(tmp_path, "fim_samples", "tokens")
    assert "prompts.py" not in set(fim["path"]) and "plain.py" in set(fim["path"])
    for text in fim["text"]:
        assert text.count(FIM_MIDDLE) == 1
    pairs = _frame(tmp_path, "instruction_pairs", "tokens")
    for column in ("instruction", "input", "output"):
        assert not pairs[column].str.contains("<|fim_middle|>", regex=False).any()
    meta = result.asset_materializations_for_node("fim_samples")[0].metadata
    assert "special_tokens" in meta["rejections_by_reason"].value


def test_malformed_files_are_skipped_with_a_counted_reason(instance, tmp_path, repos_root):
    repo = init_repo(repos_root / "broken")
    commit(
        repo,
        {
            "bad.py": '"""Broken module."""\n\ndef oops(:\n    return 1\n' + "x = 1\n" * 5,
            "bad.go": "package main\n\n// Run runs.\nfunc Run( {\n\treturn\n}\n" + "// pad\n" * 5,
            "bad.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n" + "# pad\n" * 5,
            "good.py": PLAIN_MODULE,
        },
    )

    result = _run(instance, tmp_path, repos_root, "broken")

    assert result.success
    meta = result.asset_materializations_for_node("instruction_pairs")[0].metadata
    table = meta["rejections_by_reason"].value
    for reason in ("parse_error:python", "parse_error:go", "parse_error:yaml"):
        assert reason in table, table
    assert "good.py" in set(_frame(tmp_path, "instruction_pairs", "broken")["path"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("short `code` stays", "short `code` stays"),
        ("a " * 10 + "`inline code that is cut`", "a a a a a a a a a a `inline` …"),
    ],
)
def test_preview_instructions_are_shortened_with_balanced_code_spans(text, expected):
    from coder_assets.assets.samples import _shorten

    assert _shorten(text, limit=28) == expected


def _secret_and_configmap(n: int) -> str:
    return (
        "apiVersion: v1\nkind: Secret\nmetadata:\n"
        f"  name: app-{n}-creds\ntype: Opaque\nstringData:\n"
        f"  DB_PASSWORD: hunter-{n}-Xk29vLq\n"
        "---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
        f"  name: app-{n}-settings\ndata:\n"
        "  LOG_LEVEL: info\n  LISTEN_ADDR: ':8080'\n  CACHE_TTL: 30s\n"
    )


def test_fim_samples_of_a_secret_and_configmap_file_all_show_one_redaction(
    instance, tmp_path, repos_root
):
    """A FIM span on the `---` between a Secret and a ConfigMap puts the ConfigMap's data after
    `kind: Secret` in PSM order; scanned that way, one sample got the ConfigMap redacted and the
    dataset saw two texts of one file. Scanned in file order, every sample shows the file."""
    repo = init_repo(repos_root / "gitops")
    files = {f"apps/app-{n}/resources.yaml": _secret_and_configmap(n) for n in range(12)}
    commit(repo, files, "Add apps")
    many = {"config": {"samples_per_file": 12, "max_middle_chars": 120}}

    result = _run(
        instance, tmp_path, repos_root, "gitops", run_config={"ops": {"fim_samples": many}}
    )

    fim = _frame(tmp_path, "fim_samples", "gitops")
    assert len(fim) > 60
    documents: dict[str, set[str]] = {}
    for row in fim.itertuples():
        prefix, middle, suffix = _split_fim(row.text)
        documents.setdefault(row.path, set()).add(prefix + middle + suffix)
    assert all(len(texts) == 1 for texts in documents.values())
    for path, (text,) in documents.items():
        assert "LOG_LEVEL: info" in text and "CACHE_TTL: 30s" in text, path
        assert "DB_PASSWORD: <SECRET_" in text and "hunter-" not in text, path
    assert any("---" in _split_fim(row.text)[1] for row in fim.itertuples())
    assert _checks(result)["fim_samples_free_of_secrets"]


def test_a_key_file_yields_no_samples_and_is_counted(instance, tmp_path, repos_root):
    _secret_repo(repos_root)

    result = _run(instance, tmp_path, repos_root, "leaky")

    fim = _frame(tmp_path, "fim_samples", "leaky")
    pairs = _frame(tmp_path, "instruction_pairs", "leaky")
    for path in ("keys/id_rsa", "keys/id_ed25519"):
        assert path not in set(fim["path"]) and path not in set(pairs["path"])
    materialization = result.asset_materializations_for_node("fim_samples")[0]
    rejected = materialization.metadata["rejected_files"].value.records
    reasons = {record.data["path"]: record.data["reason"] for record in rejected}
    assert reasons["keys/id_rsa"] == "mostly_redacted"
    assert "mostly_redacted" in materialization.metadata["rejections_by_reason"].value


def test_low_value_pairs_are_left_out_and_counted(instance, tmp_path, repos_root):
    repo = init_repo(repos_root / "quality")
    module = (
        '"""Inventory of the homelab\'s hosts."""\n\n\n'
        "class Inventory:\n"
        '    """Hosts by name, with their roles."""\n\n'
        "    def __init__(self, hosts):\n        self._hosts = dict(hosts)\n\n"
        "    def hosts(self):\n"
        '        """All hosts, by name.\n\n'
        "        The value of each lists the roles of that host, in the order they were\n"
        '        given; a host without a role has an empty list.\n        """\n'
        "        # The dict itself: a copy would cost more than it protects.\n"
        "        return self._hosts\n\n"
        "    def with_role(self, role):\n"
        '        """Names of the hosts that have `role`, sorted."""\n'
        "        found = [name for name, roles in self._hosts.items() if role in roles]\n"
        "        found.sort()\n"
        "        return found\n"
    )
    commit(repo, {"inventory.py": module}, "Add the inventory")

    result = _run(instance, tmp_path, repos_root, "quality")

    pairs = _frame(tmp_path, "instruction_pairs", "quality")
    outputs = "\n".join(pairs["output"])
    assert "def with_role" in outputs
    assert not any(o.lstrip().startswith("def hosts") for o in pairs["output"])
    materialization = result.asset_materializations_for_node("instruction_pairs")[0]
    assert "| trivial_accessor | 1 |" in materialization.metadata["rejections_by_reason"].value


def test_licence_headers_are_taken_off_and_lines_still_point_at_the_code(
    instance, tmp_path, repos_root
):
    repo = init_repo(repos_root / "licensed")
    header = (
        "# Copyright 2026 The Homelab Authors\n#\n"
        '# Licensed under the Apache License, Version 2.0 (the "License");\n'
        "# you may not use this file except in compliance with the License.\n\n"
    )
    body = (
        '"""Backoff for the homelab\'s API clients."""\n\nimport random\n\n\n'
        "def backoff(attempt: int, cap: float = 30.0) -> float:\n"
        '    """Seconds to wait before retry `attempt`: exponential, capped, jittered."""\n'
        "    delay = min(cap, 2.0**attempt)\n"
        "    return delay / 2 + random.uniform(0, delay / 2)\n"
    )
    files = {
        f"lib/backoff_{n}.py": header + body.replace("backoff(", f"backoff_{n}(") for n in range(3)
    }
    files["LICENSE"] = "Apache License\nVersion 2.0, January 2004\n" * 30
    sha = commit(repo, files, "Add backoff helpers")

    result = _run(instance, tmp_path, repos_root, "licensed")

    for asset, column in (("instruction_pairs", "output"), ("fim_samples", "text")):
        frame = _frame(tmp_path, asset, "licensed")
        assert len(frame) and not frame[column].str.contains("Copyright|Apache License").any()
        assert "LICENSE" not in set(frame["path"])
    pairs = _frame(tmp_path, "instruction_pairs", "licensed")
    function = pairs[pairs["kind"] == "python_function"].iloc[0]
    source = git(repo, "show", f"{sha}:{function.path}").splitlines()
    code = "\n".join(source[function.start_line - 1 : function.end_line])
    assert code.strip() == function.output.strip()
    metadata = result.asset_materializations_for_node("fim_samples")[0].metadata
    assert metadata["licence_headers_removed"].value == 3
