"""Finding and redacting secrets in repository text before any of it reaches a dataset.

Code models memorise and emit credentials from their training data (arXiv 2309.07639), so every
text file goes through a `Redactor` (one per repository) before it becomes a sample, and the
finished samples are re-scanned by a blocking check. `SecretScanner.scan` runs two detectors and
returns sorted, non-overlapping `Finding`s (overlaps are merged into their union, typed by the
widest member; on equal spans the more specific rule names it).

1. Every detect-secrets plugin with its default settings, including the keyword, private-key and
   basic-auth detectors that BigCode turned off. They are called in memory through their
   `analyze_string`, one line at a time; detect-secrets' global settings are never touched and
   no plugin's `verify` (network) is ever called. detect-secrets' default value filters apply
   (sequential strings, UUIDs, `{templated}` and `$prefixed` values, id-like names, values
   without a letter - which also drops every public IP -, indirect references for the keyword
   plugin); its file filters do not (allowlist pragmas, lock files, swagger files): a dataset
   cannot trust a comment in the code it protects, and a secret is a secret in any file. The
   keyword plugin uses the patterns of the file's language plus the quoted ones (a Go struct
   literal `Password: "..."`); in source code only its string literals count, and never the
   value of a key that names a reference (`secretName`, `existingSecret`, `*_FILE`, `*_PATH`),
   nor a name held by a key that ends in `secret` or `key` (`githubConfigSecret: runner-secret`,
   `passwordKey: admin-password`, an ExternalSecret's `secretKey: github_app_id`; `yaml_secret`
   skips those too), nor a value equal to the key's last word (`PASSWORD = "PASSWORD"`).
   Each plugin runs only on the lines that can hold one of its findings (`_LINE_TRIGGERS`).
2. Our rules for what homelab code holds and the plugins miss (`custom_rules`):

   - `private_key`: the whole `-----BEGIN ... PRIVATE KEY-----` ... `-----END ...-----` block
     (RSA, EC, DSA, OPENSSH, ENCRYPTED, PKCS#8, PGP, SSH2), also indented in a YAML block scalar
     or `\\n`-escaped in one string; a BEGIN without its END (truncated file, key assembled in
     code) is covered with the base64 lines that follow it. PuTTY keys up to `Private-MAC`.
   - `age_key`: `AGE-SECRET-KEY-1` and its bech32 characters (58 in a real key; shorter or
     longer runs are covered too).
   - `nkey_seed`: NATS nkey seeds (`SU...`, `SA...`, `SO...`: `S`, the key type, 56 more base32
     characters), also inside a `.creds` file's `NKEY SEED` block. Public nkeys (`U...`,
     `A...`) stay.
   - `kubeconfig_client_key`: the value of `client-key-data`. `client-certificate-data` and
     `certificate-authority-data` are public certificates and stay.
   - `kubeconfig_token`: `token` (and `id-token`, `refresh-token`, `access-token`,
     `client-secret`) in a text that looks like a kubeconfig (`kind: Config`, `users:`,
     `current-context:`). The same keys elsewhere are `yaml_secret`.
   - `k8s_secret_data`: every value under `data:` / `stringData:` of a `kind: Secret` document,
     block scalars whole (`SealedSecret` ciphertext is not covered: it is encrypted).
   - `github_token`: `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` and `github_pat_` tokens.
   - `jwt`: the whole `header.payload.signature` (the plugin's finding stops before the
     signature).
   - `gitea_token`: 40 lowercase hex characters that are a value: after `token ` / `Bearer `, or
     the whole right-hand side of an assignment (`KEY=`, `key:`, `"key": "`, `?key=`). Commit
     SHAs stay when the key names a git object or version (`commit`, `sha`, `ref`, `rev`,
     `revision`, `version`, `hash`, `digest`, `checksum`, `tree`, `parent`, `head`, `base`,
     `oid`, `tag`, `id`, `fingerprint`, `before`, `after`, `pin`, ...); a bare SHA in prose, in a
     command (`git checkout <sha>`) or pinned in `uses: owner/action@<sha>` is no token either.
     detect-secrets' hex entropy findings count only under a key that names a secret, so a
     quoted SHA, image digest or checksum stays; `sha512-...` integrity hashes stay too.
   - `url_credentials`: the `user:password` of `scheme://user:password@host`; scheme and host
     stay. `cli_credentials`: `curl -u user:password` (not `-u 1000:1000`).
   - `auth_header`: the literal value of `Authorization: Bearer|token|Basic <value>` (a 40-hex
     value is a `gitea_token`).
   - `env_assignment`: `NAME=value` (`export`, `ENV`, `ARG`, `:=`, `?=`, `- NAME=value` in compose
     files, `--db-password=...` flags, Dockerfile `ENV NAME value`, YAML `- name: NAME` /
     `value: ...` pairs) where NAME is secret-looking: its last word is password, passwd, pwd,
     pass, passphrase, secret, token, credential(s), apikey or jwt; or it ends in `_KEY` (any
     UPPER_SNAKE `*_KEY` in configuration files, only qualified ones such as `API_KEY`,
     `secretKey`, `accessKey`, `privateKey` in source code, where `*_KEY` constants are mostly
     lookup keys). Language-model and pagination tokens (`eos_token`, `max_tokens`,
     `next_page_token`) are not secrets. `AWS_SECRET_ACCESS_KEY` values are `aws_secret_key`.
     In source code only string literals count: an unquoted right-hand side is an expression.
   - `yaml_secret`: `password: value`-style YAML and pretty-printed JSON keys with the same
     names, in every file that is not source code; block scalars are covered whole.
   - `docker_auth`: the base64 `user:password` of `"auth": "..."` in Docker's config.json.
   - `netrc_password`: `password <value>` in `.netrc`.

   NOT secrets, for every rule: empty values; references and templates (`${VAR}`, `$VAR`,
   `$(cmd)`, `{{ .Values.x }}`, `{name}`, `%s`, `<your-token>`, our own `<SECRET_...>`
   placeholders); `secretKeyRef` / `valueFrom` references (they carry no value); booleans and
   null; masks (`****`, `xxxx`); SOPS and Ansible Vault ciphertext (`ENC[...]`,
   `$ANSIBLE_VAULT`) - dropping SOPS files whole is the repository filters' job; file paths
   (`/run/secrets/db`, `~/.ssh/id_ed25519`); secret-manager references (`vault:`, `op://`,
   `ref+`, `arn:`); an UPPER_SNAKE secret name used as a value (the name of an environment
   variable) or any capitals-only name (`_UNION_`); the name itself (`PASS = "PASS"`); values
   under four characters; lowercase words that describe a value (`openai-secret`,
   `neptune_api_token`, `your-secret-key`, `wandb-api-group`: joined by `-`, `_` or `.`, with
   a word such as secret, token, key, group, name, my, test, fake or example); in source code, a
   string with spaces (a message, not a credential) or lowercase words held by a `*_KEY`
   constant (a lookup key); in prose and configuration, an unquoted value that is code
   (`secret=Secret(group=...)`). Literal defaults such as `changeme`, `admin` or `password` ARE
   secrets: in homelab code they are usually the credential in use, and redacting them costs
   nothing; so is a passphrase of plain words (`homelab-admin-pass`).

A scan without a path treats the text as source code (see `_Text`); pass the repository path of
configuration files (`.env`, YAML, Dockerfile) to get their rules.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.filters import heuristic
from detect_secrets.plugins.base import BasePlugin, RegexBasedDetector
from detect_secrets.plugins.high_entropy_strings import HighEntropyStringsPlugin
from detect_secrets.plugins.keyword import (
    QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP,
    REGEX_BY_FILETYPE,
    KeywordDetector,
)
from detect_secrets.util.filetype import determine_file_type

__all__ = [
    "DETECT_SECRETS_TYPES",
    "PLACEHOLDER_RE",
    "Finding",
    "Redactor",
    "SecretScanConfig",
    "SecretScanner",
    "contains_secret",
    "placeholder_for",
    "placeholder_spans",
    "redacted_line_fraction",
]

# Our stable name for each detect-secrets plugin's `secret_type`. A plugin that a later
# detect-secrets release adds gets a name derived from its type (see `_type_for_plugin`).
DETECT_SECRETS_TYPES: dict[str, str] = {
    "Artifactory Credentials": "artifactory_token",
    "AWS Access Key": "aws_access_key",
    "Azure Storage Account access key": "azure_storage_key",
    "Basic Auth Credentials": "basic_auth",
    "Cloudant Credentials": "cloudant_credentials",
    "Discord Bot Token": "discord_token",
    "GitHub Token": "github_token",
    "GitLab Token": "gitlab_token",
    "Base64 High Entropy String": "high_entropy_string",
    "Hex High Entropy String": "high_entropy_hex_string",
    "IBM Cloud IAM Key": "ibm_cloud_iam_key",
    "IBM COS HMAC Credentials": "ibm_cos_hmac",
    "Public IP (ipv4)": "public_ip",
    "JSON Web Token": "jwt",
    "Secret Keyword": "keyword",
    "Mailchimp Access Key": "mailchimp_key",
    "NPM tokens": "npm_token",
    "OpenAI Token": "openai_token",
    "Private Key": "private_key",
    "PyPI Token": "pypi_token",
    "SendGrid API Key": "sendgrid_key",
    "Slack Token": "slack_token",
    "SoftLayer Credentials": "softlayer_credentials",
    "Square OAuth Secret": "square_oauth_secret",
    "Stripe Access Key": "stripe_key",
    "Telegram Bot Token": "telegram_token",
    "Twilio API Key": "twilio_key",
}


@dataclass(frozen=True)
class Finding:
    """One secret: its type (our stable name) and its character span in the scanned text."""

    secret_type: str
    start: int
    end: int


@dataclass(frozen=True)
class SecretScanConfig:
    """Which detectors `SecretScanner` runs. Both are on in production."""

    detect_secrets_plugins: bool = True
    custom_rules: bool = True


def placeholder_for(secret_type: str, number: int) -> str:
    """The text that replaces a secret, e.g. `<SECRET_AWS_ACCESS_KEY_1>`."""
    return f"<SECRET_{secret_type.upper()}_{number}>"


PLACEHOLDER_RE = re.compile(r"<SECRET_[A-Z0-9_]+_[0-9]+>")


def placeholder_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) of every redaction placeholder in `text`, in order."""
    return [m.span() for m in PLACEHOLDER_RE.finditer(text)] if "<SECRET_" in text else []


def redacted_line_fraction(text: str) -> float:
    """The share of `text`'s non-blank lines that hold a redaction placeholder (0.0 for a text
    without non-blank lines). A file that is mostly placeholders teaches nothing but them."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return 0.0
    return sum(1 for line in lines if PLACEHOLDER_RE.search(line)) / len(lines)


# --------------------------------------------------------------------------------------------
# Values and names
# --------------------------------------------------------------------------------------------

_NOT_SECRET_WORDS = frozenset(
    "null ~ none nil true false yes no on off undefined redacted [redacted] (redacted)"
    # GitHub Actions: `id-token: write` is a permission, `secrets: inherit` passes them on
    " read write read-all write-all inherit"
    # type annotations in documentation (`token: str`)
    " str string bytes int bool secretstr optional[str] str|none".split()
)
# Templates, ciphertext, and our own placeholders (also cut in two by a FIM span, where a special
# token such as `<|fim_suffix|>` follows the first half).
_PLACEHOLDER_MARKERS = ("{{", "{%", "<%", "${", "#{", "ENC[", "$ANSIBLE_VAULT", "<SECRET_", "<|")
_REFERENCE_PREFIXES = ("vault:", "op://", "ref+", "arn:", "secretref:", "file:")
_PATH_VALUE = re.compile(
    r"(?:~|\.{1,2})/[\w.\-/]*"
    r"|/(?:etc|run|var|home|tmp|usr|opt|root|mnt|srv|data|config|secrets|certs|keys|Users)"
    r"(?:/[\w.\-]*)*"
)
_ENV_NAME_VALUE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
# `_UNION_`, `_FSEC_`: prefixes and names in capitals, not credentials.
_CAPS_NAME = re.compile(r"_*[A-Z]+(?:_+[A-Z]+)*_*")
# Lowercase words that describe a value instead of being one: `openai-secret`,
# `neptune_api_token`, `your-secret-key`, `mocked_openai_api_key`, `wandb-api-group`. Words
# such as `pass` or `admin` do not count: `homelab-admin-pass` may well be the password in use.
_DESCRIPTIVE_NAME = re.compile(r"[a-z0-9]+(?:[-_.][a-z0-9]+)+")
_DESCRIPTIVE_WORDS = frozenset(
    "secret secrets token tokens key keys creds credentials group prefix name my your test"
    " fake dummy example sample mock mocked placeholder foo bar".split()
)


def _is_placeholder(value: str) -> bool:
    """True for values that stand for a secret without being one (see the module docstring)."""
    v = value.strip().strip("\"'`").strip().replace(" | ", "|")
    if not v or v[0] == "$" or len(set(v)) == 1:
        return True
    if any(marker in v for marker in _PLACEHOLDER_MARKERS):
        return True
    if v[0] == "{" or (v[0], v[-1]) in {("<", ">"), ("%", "%")} or v.startswith("%("):
        return True
    if v in {"%s", "%v", "%d", "%q", "{}", "[]", "()"}:
        return True
    if v.lower() in _NOT_SECRET_WORDS or v.lower().startswith(_REFERENCE_PREFIXES):
        return True
    if _PATH_VALUE.fullmatch(v) or len(v) < 4 or _CAPS_NAME.fullmatch(v):
        return True
    if _DESCRIPTIVE_NAME.fullmatch(v) and set(re.split(r"[-_.]", v)) & _DESCRIPTIVE_WORDS:
        return True
    return bool(_ENV_NAME_VALUE.fullmatch(v) and _is_secret_name(v))


_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NAME_SEPARATORS = re.compile(r"[^a-z0-9]+")
_SECRET_LAST_WORDS = frozenset(
    "password passwd pwd pass passphrase passcode secret token credential credentials"
    " apikey secretkey accesskey privatekey jwt".split()
)
# A secret word glued to another without a separator: `adminpassword`, `dbsecret`.
_SECRET_SUFFIXES = ("password", "passwd", "secret", "token", "apikey")
# `<qualifier>_key` is secret in any naming style; any other `*_KEY` only as an UPPER_SNAKE name.
_KEY_QUALIFIERS = frozenset(
    "api access secret private client auth master encryption encrypt signing sign license"
    " account service app webhook session hmac jwt db database storage admin root shared"
    " deploy sops age gpg pgp cookie csrf".split()
)
_KEY_NOT_SECRET = frozenset(
    "public pub sort partition primary foreign cache routing idempotency lookup group label"
    " selector index map dict object bucket s3 hash row column field config metadata host".split()
)
# Tokens of language models and of paginated APIs are not credentials.
_TOKEN_NOT_SECRET = frozenset(
    "max min num eos bos pad unk sep cls mask special start end stop page next continuation"
    " continue cancellation cancel sync input output".split()
)
_PASS_NOT_SECRET = frozenset("by first second multi single render compile".split())
# The last word of a name that points at a secret instead of holding it (`secretName`).
_REFERENCE_LAST_WORDS = frozenset(
    "name names ref file path dir env var arn id type kind length len count size ttl"
    " template label header field prompt location group prefix url uri endpoint provider store"
    " scope mount format mode source backend version".split()
)


def _name_parts(name: str) -> list[str]:
    name = name.rsplit(".", 1)[-1].rsplit("/", 1)[-1]
    spaced = _CAMEL_BOUNDARY.sub("_", name).lower()
    return [part for part in _NAME_SEPARATORS.split(spaced) if part]


def _is_secret_name(name: str, *, any_key: bool = True) -> bool:
    """Does an assignment to `name` hold a secret? (`DB_PASSWORD`, `apiKey`, `client-secret`)
    `any_key`: every UPPER_SNAKE `*_KEY` counts, as in `.env` files; in source code such
    constants are mostly lookup keys (`DEFAULT_IO_MANAGER_KEY`), so only qualified ones count."""
    parts = _name_parts(name)
    if not parts or parts[0] == "existing":
        return False
    last, before = parts[-1], (parts[-2] if len(parts) > 1 else "")
    if last == "key":
        if not before or before in _KEY_NOT_SECRET:
            return False
        bare = name.rsplit(".", 1)[-1]
        return before in _KEY_QUALIFIERS or any_key and bool(re.fullmatch(r"[A-Z0-9_]+", bare))
    if last == "token":
        return before not in _TOKEN_NOT_SECRET
    if last == "pass":
        return before not in _PASS_NOT_SECRET
    if last in _SECRET_LAST_WORDS:
        return True
    return len(parts) == 1 and last.endswith(_SECRET_SUFFIXES)


def _is_reference_name(name: str) -> bool:
    parts = _name_parts(name)
    return bool(parts) and (parts[0] == "existing" or parts[-1] in _REFERENCE_LAST_WORDS)


# A value that names a Kubernetes object or a key inside one: lowercase words joined by `-`,
# `_` or `.`, one of which says what it names (`home-operations-runner-secret`,
# `admin-password`, `github_app_id`, `token`).
_OBJECT_NAME = re.compile(r"[a-z0-9]+(?:[-_.][a-z0-9]+)*")
_OBJECT_NAME_WORDS = frozenset(
    "secret secrets creds cred credential credentials tls auth token tokens password passwords"
    " passwd pass key keys cert certs certificate id user username apikey private public"
    " client".split()
)


def _names_a_secret(key: str, value: str) -> bool:
    """Is `value`, held by the secret-looking `key`, the name of a Secret or of a key inside
    one rather than a credential? Only for keys whose last word is `secret` or `key`
    (`githubConfigSecret`, `passwordKey`, an ExternalSecret's `secretKey`), and only for
    lowercase names with a word that says what they name."""
    parts = _name_parts(key)
    if not parts or parts[-1] not in ("secret", "key") or not _OBJECT_NAME.fullmatch(value):
        return False
    return bool(set(re.split(r"[-_.]", value)) & _OBJECT_NAME_WORDS)


# Digests and checksums: hex of a hash's length, and Subresource-Integrity / Nix hashes.
_HASH_VALUE = re.compile(r"(?:sha1|sha256|sha384|sha512|md5)[-:][A-Za-z0-9+/=_\-]+")


def _is_hash_lookalike(secret_type: str, line: str, start: int, end: int) -> bool:
    """A high-entropy finding that is a commit SHA, image digest or checksum: hex only counts
    when its key names a secret (`SECRET_KEY = "<64 hex>"`); pinned SHAs and checksums
    (`ref: "<sha>"`, `checksum = "<hex>"`, `EXPECTED_SHA256=...`) do not, nor do `sha512-...`
    integrity hashes."""
    value = line[start:end]
    if secret_type not in ("high_entropy_string", "high_entropy_hex_string"):
        return False
    key = _KEY_BEFORE_VALUE.search(line, max(0, start - 200), start)
    if secret_type == "high_entropy_string":
        named_hash = key is not None and set(_name_parts(key["key"])) & _HASH_KEY_WORDS
        return bool(_HASH_VALUE.fullmatch(value) or named_hash)
    return key is None or not _is_secret_name(key["key"])


def _assignment_type(name: str, default: str) -> str:
    return "aws_secret_key" if "secret_access_key" in "_".join(_name_parts(name)) else default


# --------------------------------------------------------------------------------------------
# The text being scanned
# --------------------------------------------------------------------------------------------

# In these languages the right-hand side of an assignment is an expression: only a string
# literal there can be a secret value.
_CODE_SUFFIXES = frozenset(
    ".py .pyi .go .js .mjs .cjs .jsx .ts .tsx .java .kt .kts .scala .groovy .gradle .rb .rs .c"
    " .h .cc .cpp .hpp .cs .swift .php .lua .dart .ex .exs .erl .hs .ml .jl .r .tf .hcl .nix"
    " .proto .sql".split()
)


@dataclass
class _Text:
    """A text with what the rules need to know about it. `low` is the text lowercased with the
    same offsets, so that rules can search it with fast case-sensitive patterns.

    `code`: assignments are code, so only string literals can be secret values and YAML-style
    `key: value` lines are not configuration. A text without a path counts as code: the blocking
    re-scans of finished samples carry no path, and a scan with a path finds a superset of what
    the same scan without one finds, so redacted text re-scans clean either way.
    """

    text: str
    path: str
    low: str = field(init=False)
    code: bool = field(init=False)
    dockerfile: bool = field(init=False)
    netrc: bool = field(init=False)
    _line_starts: list[int] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        low = self.text.lower()
        if len(low) != len(self.text):  # a few characters lowercase to two (İ)
            low = "".join(c if len(c.lower()) != 1 else c.lower() for c in self.text)
        self.low = low
        name = PurePosixPath(self.path).name.lower()
        suffix = PurePosixPath(name).suffix
        self.code = suffix in _CODE_SUFFIXES or not self.path
        self.dockerfile = (
            name.startswith(("dockerfile", "containerfile")) or suffix == ".dockerfile"
        )
        self.netrc = name in {".netrc", "_netrc"}

    @property
    def line_starts(self) -> list[int]:
        if self._line_starts is None:
            self._line_starts = [0, *(m.end() for m in re.finditer("\n", self.text))]
        return self._line_starts

    def line_index(self, pos: int) -> int:
        return bisect_right(self.line_starts, pos) - 1

    def line_span(self, index: int) -> tuple[int, int]:
        starts = self.line_starts
        end = starts[index + 1] - 1 if index + 1 < len(starts) else len(self.text)
        return starts[index], end


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end == -1 else end


# --------------------------------------------------------------------------------------------
# YAML values without a YAML parser (the texts are often templates that do not parse)
# --------------------------------------------------------------------------------------------

_BLOCK_HEADER = re.compile(r"[|>][0-9+\-]*[ \t]*(?:#.*)?")
_YAML_PROPERTIES = re.compile(r"(?:[&!][^\s]*[ \t]+)+")
_DOUBLE_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_SINGLE_QUOTED = re.compile(r"'(?:[^']|'')*'")
_PLAIN_COMMENT = re.compile(r"[ \t]#")


def _yaml_value_span(text: str, start: int, key_column: int) -> tuple[int, int] | None:
    """The span of the scalar value that begins at `start` (just after `key: `), or None when
    the key holds no scalar (empty, a nested mapping, an alias). A block scalar (`|`, `>`) spans
    every following line indented deeper than the key; quotes are not part of the span."""
    end = _line_end(text, start)
    rest = text[start:end].rstrip()
    props = _YAML_PROPERTIES.match(rest)
    if props:  # `&anchor` and `!tag` come before the value itself
        start += props.end()
        rest = rest[props.end() :]
    if not rest or rest[0] in "#*":
        return None
    if _BLOCK_HEADER.fullmatch(rest):
        return _block_span(text, end + 1, key_column)
    if rest[0] in "\"'":
        quoted = (_DOUBLE_QUOTED if rest[0] == '"' else _SINGLE_QUOTED).match(text, start)
        if quoted is None:  # unterminated: up to the end of the line
            return start + 1, start + len(rest)
        return start + 1, quoted.end() - 1
    comment = _PLAIN_COMMENT.search(rest)
    value = rest[: comment.start()] if comment else rest
    return start, start + len(value.rstrip())


def _block_span(text: str, pos: int, key_column: int) -> tuple[int, int] | None:
    first = last = None
    while pos < len(text):
        line_end = _line_end(text, pos)
        line = text[pos:line_end]
        if line.strip():
            indent = len(line) - len(line.lstrip(" \t"))
            if indent <= key_column:
                break
            first = pos + indent if first is None else first
            last = pos + len(line.rstrip())
        pos = line_end + 1
    return None if first is None or last is None else (first, last)


# --------------------------------------------------------------------------------------------
# Custom rules: each yields (start, end, secret_type) candidates
# --------------------------------------------------------------------------------------------

_Candidate = tuple[int, int, str]

_PEM_BEGIN = re.compile(
    r"(?P<open>-----|---- )BEGIN (?P<label>[A-Z0-9 ]{0,40}?PRIVATE KEY(?: BLOCK)?)"
    r"(?P<close>-----| ----)"
)
# The body of a PEM block: base64, headers (`Proc-Type: 4,ENCRYPTED`), YAML indentation, and the
# quotes, `\n` escapes and `+` of a key written as string literals. A body with anything else
# (code between two strings) is not a block; `_PEM_TAIL` covers what it can of it.
_PEM_BODY = re.compile(r"[\w+/=\s\\\"',:.\-]*")
_PEM_MAX_BODY = 16384  # an 8192-bit RSA key is about 6,500 characters
# What follows a BEGIN line whose END is missing (a truncated file, a key assembled in code):
# the base64 and header lines, or `\n`-escaped chunks, right after it.
_PEM_TAIL = re.compile(r"(?:(?:\\n|\r?\n[ \t]*)(?:[A-Za-z0-9+/=]{16,}|[A-Za-z-]+: [^\n\\]*))*")
_PUTTY_KEY = re.compile(r"PuTTY-User-Key-File-\d+:[^\n]*\n(?:[^\n]*\n){0,80}?Private-MAC:[^\n]*")
_AGE_KEY = re.compile(r"AGE-SECRET-KEY-(?:PQ-)?1[0-9A-Za-z]{20,}")
_CLIENT_KEY_DATA = re.compile(
    r"client-key-data[\"']?[ \t]*:[ \t]*[\"']?(?P<value>[A-Za-z0-9+/=]{16,})"
)
# detect-secrets' JWT pattern stops before the signature; this one covers the whole token.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}={0,2}\.eyJ[A-Za-z0-9_-]{8,}={0,2}\.[A-Za-z0-9_\-+/=]*")
_DOCKER_AUTH = re.compile(
    r"(?<![\w-])[\"']?auth[\"']?[ \t]*:[ \t]*[\"']?(?P<value>[A-Za-z0-9+/=]{12,})"
)
_GITHUB_TOKEN = re.compile(r"(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,244})")
_HEX40 = re.compile(r"[0-9a-f]{40,}")
_HEX40_HEADER_CONTEXT = re.compile(r"\b(?:token|bearer)[ \t]+[\"']?$")
_HEX40_ASSIGNMENT_CONTEXT = re.compile(
    r"(?P<key>[A-Za-z_][\w.\-]*)[\"'\]]*[ \t]*(?:=|:=|:|=>|\?=)[ \t]*[\"']?$"
)
_GIT_OBJECT_WORDS = frozenset(
    "commit commits sha sha1 ref refs rev revision version hash digest checksum tree parent"
    " head base oid tag id fingerprint fp etag object blob before after merge pin pinned"
    " snapshot".split()
)
_HASH_KEY_WORDS = _GIT_OBJECT_WORDS | frozenset(
    "integrity sha256 sha512 md5 pbhash expected nar narhash".split()
)
_URL_CREDENTIALS = re.compile(
    r"://(?P<cred>(?P<user>[^\s:/?#@\"'`<>\[\]{}]*):(?P<password>[^\s/?#\"'`<>]*[^\s/?#\"'`<>@]))"
    r"@[A-Za-z0-9_.\-\[\]]+"
)
_CLI_USER = re.compile(  # curl -u user:password, --user=user:password
    r"(?<!\S)(?:-u|--user|--proxy-user)(?:[ \t]+|=)[\"']?(?P<cred>[^\s:\"'@]*:[^\s\"']+)"
)
_URL_SCHEME_BEFORE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*$")
_AUTH_HEADER = re.compile(  # searched in the lowercased text
    r"authorization[\"']?[ \t]*[:=,][ \t]*[\"']?(?:bearer|token|basic)[ \t]+"
    r"(?P<value>[a-z0-9._~+/=\-]{8,})"
)
_SECRET_WORD = r"(?:pass|pwd|secret|token|key|credential|jwt)"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")
_ENV_OPERATOR = re.compile(  # searched in the lowercased text
    _SECRET_WORD + r"[\w.\-]*(?P<op>[ \t]*(?:\?=|:=|\+=|=)(?![=~>])[ \t]*)"
)
_ENV_VALUE = re.compile(r"\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'|`[^`\n]*`|[^\s\"'`;|&]+")
_DOCKERFILE_ENV = re.compile(
    r"^[ \t]*ENV[ \t]+(?P<name>[A-Za-z_]\w*)[ \t]+(?P<value>[^\s=][^\n=]*?)[ \t]*\r?$",
    re.MULTILINE,
)
_YAML_SECRET_KEY = re.compile(  # searched in the lowercased text
    r"^(?P<lead>[ \t]*(?:-[ \t]+)*)(?P<q>[\"']?)"
    r"(?P<key>[\w.\-/]*" + _SECRET_WORD + r"[\w.\-/]*)(?P=q)[ \t]*:(?:[ \t]+|(?=\r?$))",
    re.MULTILINE,
)
_ENV_PAIR = re.compile(
    r"^(?P<lead>[ \t]*-[ \t]+)name:[ \t]*(?P<q>[\"']?)(?P<name>[\w.\-]+)(?P=q)[ \t]*(?:#.*)?\r?\n"
    r"(?P<indent>[ \t]+)value:[ \t]*",
    re.MULTILINE,
)
_ENV_PAIR_REVERSED = re.compile(
    r"^(?P<lead>[ \t]*-[ \t]+)value:[ \t]*(?P<value>.*)\r?\n"
    r"(?P<indent>[ \t]+)name:[ \t]*(?P<q>[\"']?)(?P<name>[\w.\-]+)(?P=q)",
    re.MULTILINE,
)
_KUBECONFIG_HINT = re.compile(
    r"^[\"']?(?:kind[\"']?[ \t]*:[ \t]*[\"']?Config\b|users[\"']?[ \t]*:|current-context)",
    re.MULTILINE,
)
_KUBECONFIG_TOKEN_KEYS = frozenset(
    "token id-token refresh-token access-token client-secret".split()
)
_YAML_DOCUMENT_SEPARATOR = re.compile(r"^(?:---|\.\.\.)[ \t]*(?:#.*)?\r?$", re.MULTILINE)
_K8S_SECRET_KIND = re.compile(r"^kind:[ \t]*[\"']?Secret[\"']?[ \t]*(?:#.*)?\r?$", re.MULTILINE)
_K8S_SECRET_DATA = re.compile(r"^(?:data|stringData):[ \t]*(?:#.*)?\r?$", re.MULTILINE)
_MAPPING_ENTRY = re.compile(r"[ \t]*(?:\"[^\"]*\"|'[^']*'|[^\s:#][^:#]*?)[ \t]*:(?:[ \t]+|$)")
_NETRC_PASSWORD = re.compile(r"\b(?:password|passwd)[ \t]+(?P<value>\S+)")


def _private_keys(t: _Text) -> Iterator[_Candidate]:
    text = t.text
    covered = 0
    for m in _PEM_BEGIN.finditer(text) if "PRIVATE KEY" in text else ():
        if m.start() < covered:
            continue
        end_marker = f"{m['open']}END {m['label']}{m['close']}"
        end = text.find(end_marker, m.end(), m.end() + _PEM_MAX_BODY + len(end_marker))
        if end != -1 and _PEM_BODY.fullmatch(text, m.end(), end):
            covered = end + len(end_marker)
        else:
            tail = _PEM_TAIL.match(text, m.end())
            covered = tail.end() if tail else m.end()
        yield m.start(), covered, "private_key"
    if "PuTTY-User-Key-File" in text:
        for m in _PUTTY_KEY.finditer(text):
            yield m.start(), m.end(), "private_key"


def _age_keys(t: _Text) -> Iterator[_Candidate]:
    if "AGE-SECRET-KEY-" in t.text:
        for m in _AGE_KEY.finditer(t.text):
            yield m.start(), m.end(), "age_key"


_NKEY_SEED = re.compile(r"(?<![A-Z2-7])S[UAONCX][A-Z2-7]{56}(?![A-Z2-7])")


def _nkey_seeds(t: _Text) -> Iterator[_Candidate]:
    for m in _NKEY_SEED.finditer(t.text):
        yield m.start(), m.end(), "nkey_seed"


def _kubeconfig_client_keys(t: _Text) -> Iterator[_Candidate]:
    if "client-key-data" in t.text:
        for m in _CLIENT_KEY_DATA.finditer(t.text):
            yield m.start("value"), m.end("value"), "kubeconfig_client_key"


def _jwts(t: _Text) -> Iterator[_Candidate]:
    if "eyJ" in t.text:
        for m in _JWT.finditer(t.text):
            yield m.start(), m.end(), "jwt"


def _docker_auths(t: _Text) -> Iterator[_Candidate]:
    if "auth" in t.text:
        for m in _DOCKER_AUTH.finditer(t.text):
            yield m.start("value"), m.end("value"), "docker_auth"


def _github_tokens(t: _Text) -> Iterator[_Candidate]:
    for m in _GITHUB_TOKEN.finditer(t.text):
        start, end = m.span()
        if not (start and _is_word_char(t.text[start - 1])) and not (
            end < len(t.text) and _is_word_char(t.text[end])
        ):
            yield start, end, "github_token"


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _gitea_tokens(t: _Text) -> Iterator[_Candidate]:
    text = t.text
    for m in _HEX40.finditer(text):
        start, end = m.span()
        if end - start != 40 or (start and text[start - 1].isalnum()):
            continue
        if end < len(text) and text[end].isalnum():
            continue
        line_start = text.rfind("\n", 0, start) + 1
        before = text[max(line_start, start - 120) : start]
        if _HEX40_HEADER_CONTEXT.search(before.lower()):
            yield start, end, "gitea_token"
            continue
        assignment = _HEX40_ASSIGNMENT_CONTEXT.search(before)
        if assignment and not set(_name_parts(assignment["key"])) & _GIT_OBJECT_WORDS:
            yield start, end, "gitea_token"


def _url_credentials(t: _Text) -> Iterator[_Candidate]:
    if "://" not in t.text:
        return
    for m in _URL_CREDENTIALS.finditer(t.text):
        scheme = _URL_SCHEME_BEFORE.search(t.text, max(0, m.start() - 40), m.start())
        if scheme and not _is_placeholder(m["password"]):
            yield m.start("cred"), m.end("cred"), "url_credentials"


def _cli_credentials(t: _Text) -> Iterator[_Candidate]:
    if "-u" in t.text:
        for m in _CLI_USER.finditer(t.text):
            password = m["cred"].split(":", 1)[1]
            # `-u 1000:1000` is a uid:gid, `-u ex:project:domain:name` an identifier
            if not _is_placeholder(password) and not password.isdigit() and ":" not in password:
                yield m.start("cred"), m.end("cred"), "cli_credentials"


def _auth_headers(t: _Text) -> Iterator[_Candidate]:
    if "authorization" not in t.low:
        return
    for m in _AUTH_HEADER.finditer(t.low):
        start, end = m.span("value")
        secret_type = "gitea_token" if re.fullmatch("[0-9a-f]{40}", t.text[start:end]) else None
        yield start, end, secret_type or "auth_header"


def _env_assignments(t: _Text) -> Iterator[_Candidate]:
    text, low = t.text, t.low
    for m in _ENV_OPERATOR.finditer(low):
        name_start = m.start()
        while name_start and low[name_start - 1] in _NAME_CHARS:
            name_start -= 1
        if name_start and text[name_start - 1] == "$":
            continue
        name = text[name_start : m.start("op")].lstrip("0123456789.-")
        if not name or not _is_secret_name(name, any_key=not t.code):
            continue
        value = _ENV_VALUE.match(text, m.end())
        if value is None:
            continue
        start, end = value.span()
        if text[start] in "\"'`":
            start, end = start + 1, end - 1
        elif t.code:
            continue
        else:
            # Code quoted in prose (`secret=Secret(group="x")`, `key=name)`): an expression.
            end = start + len(text[start:end].rstrip(",;)]}"))
            if "(" in text[start:end] or "[" in text[start:end]:
                continue
        if end > start and _is_assigned_secret(name, text[start:end], t.code):
            yield start, end, _assignment_type(name, "env_assignment")
    if t.dockerfile or not t.code:
        for m in _DOCKERFILE_ENV.finditer(text):
            value = m["value"].strip("\"'")
            if _is_secret_name(m["name"]) and not _is_placeholder(value):
                start = m.start("value") + (1 if m["value"][0] in "\"'" else 0)
                yield start, start + len(value), _assignment_type(m["name"], "env_assignment")


def _is_assigned_secret(name: str, value: str, code: bool) -> bool:
    """Is `value`, assigned to the secret-looking `name`, a secret? Not when it is a
    placeholder, the name itself (`PASS = "PASS"`), or in code a string with spaces (a message
    or a parser's token, not a credential) or lowercase words held by a `*_KEY` constant."""
    if _is_placeholder(value) or value.lower() == _name_parts(name)[-1]:
        return False
    if code and _name_parts(name)[-1] == "key" and _WORDS_NAME.fullmatch(value):
        return False  # `EAGER_TAG_ROOT_KEY = "eager-root-exec"`: a lookup key's name
    return not (code and any(c.isspace() for c in value))


_WORDS_NAME = re.compile(r"[a-z]+(?:[-_.][a-z]+)+")


def _env_pairs(t: _Text) -> Iterator[_Candidate]:
    if "name:" not in t.text:
        return
    pairs = [(m, m.end(), len(m["indent"])) for m in _ENV_PAIR.finditer(t.text)] + [
        (m, m.start("value"), len(m["lead"])) for m in _ENV_PAIR_REVERSED.finditer(t.text)
    ]
    for m, value_start, column in pairs:
        if len(m["indent"]) != len(m["lead"]) or not _is_secret_name(m["name"]):
            continue
        span = _yaml_value_span(t.text, value_start, column)
        if span and not _is_placeholder(t.text[span[0] : span[1]]):
            yield span[0], span[1], _assignment_type(m["name"], "env_assignment")


def _yaml_key_values(t: _Text) -> Iterator[tuple[str, int, int]]:
    """(key, start, end) of every literal value of a secret-looking YAML (or JSON) key."""
    if t.code:
        return
    for m in _YAML_SECRET_KEY.finditer(t.low):
        key = t.text[m.start("key") : m.end("key")]
        if _is_secret_name(key):
            span = _yaml_value_span(t.text, m.end(), len(m["lead"]))
            if span is None:
                continue
            value = t.text[span[0] : span[1]]
            if not _is_placeholder(value) and not _names_a_secret(key, value):
                yield key, span[0], span[1]


def _kubeconfig_tokens(t: _Text) -> Iterator[_Candidate]:
    if _KUBECONFIG_HINT.search(t.text):
        for key, start, end in _yaml_key_values(t):
            if key.lower() in _KUBECONFIG_TOKEN_KEYS:
                yield start, end, "kubeconfig_token"


def _yaml_secrets(t: _Text) -> Iterator[_Candidate]:
    for key, start, end in _yaml_key_values(t):
        yield start, end, _assignment_type(key, "yaml_secret")


def _yaml_documents(text: str) -> Iterator[tuple[int, int]]:
    start = 0
    for m in _YAML_DOCUMENT_SEPARATOR.finditer(text):
        yield start, m.start()
        start = m.end()
    yield start, len(text)


def _k8s_secret_data(t: _Text) -> Iterator[_Candidate]:
    if "Secret" not in t.text:
        return
    for doc_start, doc_end in _yaml_documents(t.text):
        if _K8S_SECRET_KIND.search(t.text, doc_start, doc_end):
            for block in _K8S_SECRET_DATA.finditer(t.text, doc_start, doc_end):
                yield from _mapping_values(t.text, block.end() + 1, doc_end)


def _mapping_values(text: str, pos: int, end: int) -> Iterator[_Candidate]:
    """Every scalar value of the indented mapping that starts at `pos`."""
    child_indent: int | None = None
    while pos < end:
        line_end = min(_line_end(text, pos), end)
        line = text[pos:line_end]
        content = line.strip()
        if content and not content.startswith("#"):
            indent = len(line) - len(line.lstrip(" \t"))
            if indent == 0:
                return
            child_indent = indent if child_indent is None else child_indent
            entry = _MAPPING_ENTRY.match(line) if indent == child_indent else None
            if entry:
                span = _yaml_value_span(text, pos + entry.end(), child_indent)
                if span and not _is_placeholder(text[span[0] : span[1]]):
                    yield span[0], span[1], "k8s_secret_data"
        pos = line_end + 1


def _netrc_passwords(t: _Text) -> Iterator[_Candidate]:
    if t.netrc:
        for m in _NETRC_PASSWORD.finditer(t.text):
            if not _is_placeholder(m["value"]):
                yield m.start("value"), m.end("value"), "netrc_password"


# In order of precedence: when findings cover the same span, the earlier rule names it.
_CUSTOM_RULES = (
    _private_keys,
    _age_keys,
    _nkey_seeds,
    _kubeconfig_client_keys,
    _kubeconfig_tokens,
    _k8s_secret_data,
    _github_tokens,
    _jwts,
    _gitea_tokens,
    _url_credentials,
    _cli_credentials,
    _auth_headers,
    _env_pairs,
    _yaml_secrets,
    _env_assignments,
    _docker_auths,
    _netrc_passwords,
)


# --------------------------------------------------------------------------------------------
# detect-secrets plugins
# --------------------------------------------------------------------------------------------

# For each plugin, patterns of which one matches somewhere in every line where the plugin can
# find a secret (necessary conditions read off the plugin's own patterns), so that the plugin
# runs only on those lines. `(?i)` patterns are searched in the lowercased text with their flag
# dropped. None of them can match a newline, so a search of the whole text finds exactly the
# lines they match. `test_line_triggers_hide_no_finding` checks them; a plugin without an entry
# (one that a later detect-secrets adds) runs on every line.
_LINE_TRIGGERS: dict[str, tuple[str, ...]] = {
    "ArtifactoryDetector": (r"AKC|AP[\dABCDEF]",),
    "AWSKeyDetector": (r"A3T|ABIA|ACCA|AKIA|ASIA", "(?i)aws"),
    "AzureStorageKeyDetector": (r"AccountKey=",),
    "BasicAuthDetector": (r"://",),
    "CloudantDetector": ("(?i)key", "(?i)pw", "(?i)pass", "(?i)token", "(?i)cloudant"),
    "DiscordBotTokenDetector": (r"\.[a-zA-Z\d_-]{6}\.",),
    "GitHubTokenDetector": (r"gh[pousr]_",),
    "GitLabTokenDetector": (r"gl(?:pat|dt|ft|soat|rt|cbt|imt|ptt|agent|oas)-", r"GR1348941"),
    "IbmCloudIamDetector": ("(?i)key", "(?i)pwd", "(?i)pass", "(?i)token"),
    "IbmCosHmacDetector": (r"(?i)secret[-_]?(?:access)?[-_]?key",),
    "IPPublicDetector": (r"\.\d{1,3}\.\d{1,3}\.\d",),
    "JwtTokenDetector": (r"eyJ",),
    "KeywordDetector": ("(?i)key", "(?i)pass", "(?i)pwd", "(?i)secret", "(?i)contras"),
    "MailchimpDetector": (r"-us\d",),
    "NpmDetector": (r":_authToken=",),
    "OpenAIDetector": (r"T3BlbkFJ",),
    "PrivateKeyDetector": (r"BEGIN [A-Z0-9 ]*PRIVATE KEY", r"PuTTY-User-Key-File-2"),
    "PypiTokenDetector": (r"pypi-AgE",),
    "SendGridDetector": (r"SG\.",),
    "SlackDetector": ("(?i)xox", r"(?i)hooks\.slack\.com"),
    "SoftlayerDetector": ("(?i)key", "(?i)pwd", "(?i)pass", "(?i)token", "(?i)softlayer"),
    "SquareOAuthDetector": (r"sq0csp-",),
    "StripeDetector": (r"k_live_",),
    "TelegramBotTokenDetector": (r":(?<=\d{8}:)",),
    "TwilioKeyDetector": (r"AC[a-z0-9]{32}", r"SK[a-z0-9]{32}"),
    # The entropy plugins need a run of their charset between equal quotes, long enough to pass
    # their limit: more than 8 distinct characters for 3.0 bits, more than 22 for 4.5 bits.
    "Base64HighEntropyString": (r'"[A-Za-z0-9+/=_\\\-]{23,}"', r"'[A-Za-z0-9+/=_\\\-]{23,}'"),
    "HexHighEntropyString": (r'"[0-9A-Fa-f]{9,}"', r"'[0-9A-Fa-f]{9,}'"),
}
# Precedence among plugins on equal spans: specific plugins, then generic ones, then the rest.
_GENERIC_PLUGIN_TYPES = ("basic_auth", "keyword", "high_entropy_string")
_LATE_PLUGIN_TYPES = ("high_entropy_hex_string", "public_ip")


def _type_for_plugin(plugin: BasePlugin) -> str:
    secret_type = str(plugin.secret_type)
    known = DETECT_SECRETS_TYPES.get(secret_type)
    return known or re.sub(r"[^a-z0-9]+", "_", secret_type.lower()).strip("_")


def _plugin_priority(secret_type: str) -> int:
    base = len(_CUSTOM_RULES)
    if secret_type in _LATE_PLUGIN_TYPES:
        return base + 2 + _LATE_PLUGIN_TYPES.index(secret_type)
    return base + (1 if secret_type in _GENERIC_PLUGIN_TYPES else 0)


@dataclass(frozen=True)
class _Plugin:
    instance: BasePlugin
    secret_type: str
    priority: int
    triggers: tuple[str, ...] | None  # None: run on every line


class _DetectSecrets:
    """Every detect-secrets plugin, instantiated once with its default settings."""

    def __init__(self, *, line_triggers: bool = True) -> None:
        classes = sorted(
            (
                plugin_class
                for plugin_class in get_mapping_from_secret_type_to_class().values()
                if plugin_class.__module__.startswith("detect_secrets.plugins.")
            ),
            key=lambda plugin_class: plugin_class.__name__,
        )
        self.plugins: list[_Plugin] = []
        for plugin_class in classes:
            instance = plugin_class()
            secret_type = _type_for_plugin(instance)
            self.plugins.append(
                _Plugin(
                    instance=instance,
                    secret_type=secret_type,
                    priority=_plugin_priority(secret_type),
                    triggers=_LINE_TRIGGERS.get(plugin_class.__name__) if line_triggers else None,
                )
            )
        self._patterns: dict[str, tuple[re.Pattern[str], bool]] = {
            trigger: (re.compile(trigger.removeprefix("(?i)")), trigger.startswith("(?i)"))
            for plugin in self.plugins
            for trigger in plugin.triggers or ()
        }

    def candidates(self, t: _Text) -> Iterator[tuple[int, int, str, int]]:
        # The keyword patterns of the file's language, and always the quoted ones: a Go struct
        # literal `Password: "..."` is a secret too, and a scan without a path uses those.
        keyword_groups = {
            **REGEX_BY_FILETYPE.get(determine_file_type(t.path), {}),
            **QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP,
        }
        lines_by_trigger: dict[str, set[int]] = {}
        for plugin in self.plugins:
            if plugin.triggers is None:
                lines: Iterable[int] = range(len(t.line_starts))
            else:
                hits: set[int] = set()
                for trigger in plugin.triggers:
                    if trigger not in lines_by_trigger:
                        pattern, lowercase = self._patterns[trigger]
                        haystack = t.low if lowercase else t.text
                        lines_by_trigger[trigger] = {
                            t.line_index(m.start()) for m in pattern.finditer(haystack)
                        }
                    hits |= lines_by_trigger[trigger]
                lines = sorted(hits)
            for index in lines:
                line_start, line_end = t.line_span(index)
                line = t.text[line_start:line_end].rstrip()
                for start, end in _plugin_spans(plugin.instance, line, t, keyword_groups):
                    yield line_start + start, line_start + end, plugin.secret_type, plugin.priority


def _plugin_spans(
    plugin: BasePlugin, line: str, t: _Text, keyword_groups: dict
) -> Iterator[tuple[int, int]]:
    """Where in `line` the values that `plugin` finds are, after detect-secrets' filters."""
    if isinstance(plugin, KeywordDetector):
        found = plugin.analyze_string(line, denylist_regex_to_group=keyword_groups)
    elif isinstance(plugin, HighEntropyStringsPlugin):
        # The plugin applies its entropy limit in analyze_line, which we do not call.
        found = (
            value
            for value in plugin.analyze_string(line)
            if plugin.calculate_shannon_entropy(value) > plugin.entropy_limit
        )
    else:
        found = plugin.analyze_string(line)
    values = {value for value in found if value and _passes_filters(plugin, value, line)}
    if not values:
        return
    located: set[str] = set()
    for start, end in _match_spans(plugin, line, keyword_groups):
        value = line[start:end]
        if _is_hash_lookalike(_type_for_plugin(plugin), line, start, end):
            located.add(value)
            continue
        if value in values and (
            not isinstance(plugin, KeywordDetector)
            or _keyword_occurrence_ok(line, start, end, t.code)
        ):
            located.add(value)
            yield start, end
    # A value the plugin's own patterns do not place (a plugin that rewrites its matches) is
    # covered wherever it occurs in the line.
    for value in values - located:
        if isinstance(plugin, KeywordDetector):
            continue  # placed above, or dropped there on purpose
        start = line.find(value)
        while start != -1:
            yield start, start + len(value)
            start = line.find(value, start + 1)


def _match_spans(plugin: BasePlugin, line: str, keyword_groups: dict) -> Iterator[tuple[int, int]]:
    """The spans of the strings that the plugin's `analyze_string` yields, from its patterns."""
    if isinstance(plugin, KeywordDetector):
        for regex, group in keyword_groups.items():
            m = regex.search(line)
            if m and m.group(group):
                yield m.span(group)
    elif isinstance(plugin, HighEntropyStringsPlugin):
        for m in plugin.regex.finditer(line):
            yield m.span(2)
    elif isinstance(plugin, RegexBasedDetector):
        for regex in plugin.denylist:
            for m in regex.finditer(line):
                if regex.groups == 0:
                    yield m.span()
                else:  # findall yields the groups that matched something
                    yield from (m.span(g) for g in range(1, regex.groups + 1) if m.group(g))


def _passes_filters(plugin: BasePlugin, value: str, line: str) -> bool:
    """detect-secrets' default filters as its own scan applies them, except for its file filters
    (lock files, swagger files, allowlist pragmas): a secret is a secret in any file."""
    if (
        heuristic.is_not_alphanumeric_string(value)
        or heuristic.is_sequential_string(value)
        or heuristic.is_potential_uuid(value)
        or heuristic.is_templated_secret(value)
        or heuristic.is_prefixed_with_dollar_sign(value)
    ):
        return False
    if not isinstance(plugin, RegexBasedDetector) and heuristic.is_likely_id_string(
        value, line, plugin
    ):
        return False
    return not (
        isinstance(plugin, KeywordDetector)
        and (heuristic.is_indirect_reference(line) or _is_placeholder(value))
    )


_KEY_BEFORE_VALUE = re.compile(
    r"(?P<key>[A-Za-z_][\w.\-]*)[\"'\]]*[ \t]*(?:[:=!]=?=?|=>)[ \t]*@?[\"'`]?$"
)


def _keyword_occurrence_ok(line: str, start: int, end: int, code: bool) -> bool:
    """Keyword values are short and generic: in source code only a string literal counts, and
    nowhere the value of a key that names a reference (`secretName: gitea-admin`)."""
    if code and (start == 0 or line[start - 1] not in "\"'`"):
        return False
    key = _KEY_BEFORE_VALUE.search(line, max(0, start - 200), start)
    if key is None:
        return True
    value, name = line[start:end], key["key"]
    if value.lower() == (_name_parts(name) or [""])[-1]:  # `PASSWORD = "PASSWORD"`
        return False
    return not _is_reference_name(name) and not _names_a_secret(name, value)


# --------------------------------------------------------------------------------------------
# Scanner
# --------------------------------------------------------------------------------------------


class SecretScanner:
    """Finds secrets in a text. Build one and reuse it: the plugins are set up once."""

    def __init__(self, config: SecretScanConfig = SecretScanConfig()) -> None:  # noqa: B008
        self.config = config
        self._detect_secrets = _DetectSecrets() if config.detect_secrets_plugins else None

    def scan(self, text: str, path: str = "") -> list[Finding]:
        """Sorted, non-overlapping findings in `text`; `path` (repository-relative) chooses the
        rules of its file type."""
        t = _Text(text, path)
        candidates: list[tuple[int, int, str, int]] = []
        if self.config.custom_rules:
            for priority, rule in enumerate(_CUSTOM_RULES):
                candidates.extend((start, end, kind, priority) for start, end, kind in rule(t))
        if self._detect_secrets is not None:
            candidates.extend(self._detect_secrets.candidates(t))
        return _merge(candidates)


def _merge(candidates: list[tuple[int, int, str, int]]) -> list[Finding]:
    """Union overlapping spans; a union takes the type of its widest member (on equal widths,
    of the most specific rule)."""
    groups: list[list] = []  # [start, end, type, width, priority] of the widest member
    for start, end, secret_type, priority in sorted(c for c in candidates if c[1] > c[0]):
        if groups and start < groups[-1][1]:
            group = groups[-1]
            group[1] = max(group[1], end)
            if (end - start, -priority) > (group[3], -group[4]):
                group[2:] = [secret_type, end - start, priority]
        else:
            groups.append([start, end, secret_type, end - start, priority])
    return [Finding(secret_type=g[2], start=g[0], end=g[1]) for g in groups]


def contains_secret(text: str, scanner: SecretScanner, path: str = "") -> bool:
    """Does `text` hold anything that `scanner` would redact?"""
    return bool(scanner.scan(text, path))


# --------------------------------------------------------------------------------------------
# Redactor
# --------------------------------------------------------------------------------------------

# Values this long, with letters and digits, are replaced wherever they reappear in the
# repository, also where no rule fires (a token found in `.env` and pasted into a test).
_SWEEP_MIN_LENGTH = 16


def _identity(value: str) -> str:
    """What makes two findings the same secret: the value without whitespace, so that a PEM
    block at another indentation is the same key."""
    return "".join(value.split())


def _is_sweepable(value: str) -> bool:
    return (
        len(value) >= _SWEEP_MIN_LENGTH
        and not any(c.isspace() for c in value)
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
    )


class Redactor:
    """Replaces each finding with a stable placeholder: the same secret value gets the same
    placeholder everywhere this Redactor sees it (use one Redactor per repository), and
    placeholders are numbered per type in order of first appearance (`<SECRET_JWT_1>`).

    A secret that spans lines (a PEM block) becomes its placeholder followed by as many newlines
    as it held, so the line numbers of everything after it stay. A token-like value (16 or more
    characters, letters and digits, no whitespace) once found is also replaced wherever it
    appears again as a whole token, also where no rule fires.
    """

    def __init__(self, scanner: SecretScanner) -> None:
        self._scanner = scanner
        self._placeholders: dict[str, str] = {}  # identity -> placeholder
        self._numbers: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()
        self._tokens = _KnownTokens()

    @property
    def counts(self) -> Counter[str]:
        """Secrets redacted so far, per secret type."""
        return Counter(self._counts)

    def redact(self, text: str, path: str = "") -> tuple[str, Counter[str]]:
        """`text` with every secret replaced, and the number of secrets replaced per type."""
        findings = self._scanner.scan(text, path)
        for finding in findings:
            self._tokens.add(text[finding.start : finding.end], finding.secret_type)
        candidates = [(f.start, f.end, f.secret_type, 0) for f in findings]
        candidates += [(s, e, kind, 1) for s, e, kind in self._tokens.occurrences(text)]
        pieces: list[str] = []
        counts: Counter[str] = Counter()
        last = 0
        for finding in _merge(candidates):
            value = text[finding.start : finding.end]
            placeholder = self._placeholder(value, finding.secret_type)
            pieces += [text[last : finding.start], placeholder, "\n" * value.count("\n")]
            counts[finding.secret_type] += 1
            last = finding.end
        pieces.append(text[last:])
        self._counts.update(counts)
        return "".join(pieces), counts

    def _placeholder(self, value: str, secret_type: str) -> str:
        identity = _identity(value)
        placeholder = self._placeholders.get(identity)
        if placeholder is None:
            self._numbers[secret_type] += 1
            placeholder = placeholder_for(secret_type, self._numbers[secret_type])
            self._placeholders[identity] = placeholder
        return placeholder


_WORD = re.compile(r"[A-Za-z0-9]+")


class _KnownTokens:
    """Token-like secret values found so far, indexed by their first word, so that finding them
    again costs one dictionary lookup per word of a text however many are known."""

    def __init__(self) -> None:
        self._types: dict[str, str] = {}
        self._by_first_word: dict[str, list[str]] = {}
        self._other: list[str] = []  # values that do not start with a letter or digit

    def add(self, value: str, secret_type: str) -> None:
        if value in self._types or not _is_sweepable(value):
            return
        self._types[value] = secret_type
        first = _WORD.match(value)
        if first:
            self._by_first_word.setdefault(first.group(), []).append(value)
        else:
            self._other.append(value)

    def occurrences(self, text: str) -> Iterator[tuple[int, int, str]]:
        """(start, end, type) of each known value that occurs in `text` as a whole token."""
        if self._by_first_word:
            for word in _WORD.finditer(text):
                for value in self._by_first_word.get(word.group(), ()):
                    end = word.start() + len(value)
                    if text.startswith(value, word.start()) and _ends_token(text, end, value):
                        yield word.start(), end, self._types[value]
        for value in self._other:
            start = text.find(value)
            while start != -1:
                end = start + len(value)
                if _ends_token(text, end, value):
                    yield start, end, self._types[value]
                start = text.find(value, start + 1)


def _ends_token(text: str, end: int, value: str) -> bool:
    return end == len(text) or not (text[end].isalnum() and value[-1].isalnum())
