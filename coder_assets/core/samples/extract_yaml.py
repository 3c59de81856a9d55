"""Instruction pairs from Kubernetes, Flux and Argo manifests: one per document, the output being
the document exactly as written. Secrets never become pairs, and a SOPS-encrypted file is refused
as a whole."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from coder_assets.core.samples.extract_common import (
    PARSE_ERROR,
    SOPS_ENCRYPTED,
    Extraction,
    SourceLines,
    code_list,
    code_pair,
    pick,
)
from coder_assets.core.samples.records import ExtractedPair

# `---` alone (or with a comment) on a line separates documents.
_SEPARATOR = re.compile(r"^---[ \t]*(#.*)?$")
_SOPS_VALUE = re.compile(r"ENC\[AES256_GCM,")
_SOPS_KEY = re.compile(r"^sops:", re.MULTILINE)
# Kinds whose documents carry credentials: Kubernetes Secrets, their sealed form, kubeconfigs.
_SECRET_KINDS = frozenset({"secret", "sealedsecret"})
_KUSTOMIZE_CONFIG_GROUP = "kustomize.config.k8s.io"

# Raw YAML trees: scalars keep their text as written (`1.20` stays `1.20`, not 1.2).
Raw = dict[str, "Raw"] | list["Raw"] | str | None

_LEADS = (
    "Write a {label} manifest named `{name}`{ns}.",
    "Create the {label} `{name}`{ns}.",
    "Write the Kubernetes YAML for the {label} `{name}`{ns}.",
    "Define a {label} called `{name}`{ns}.",
)


@dataclass(frozen=True)
class _Document:
    start: int  # 0-based index into SourceLines.lines, inclusive
    end: int  # exclusive
    text: str


def is_secret_document(doc: Any) -> bool:
    """Whether a parsed YAML document holds credentials and must never become a sample: a
    `kind: Secret` (any apiVersion), a SealedSecret, a kubeconfig (`kind: Config` with users),
    or a `kind: List` with any of those among its items."""
    if not isinstance(doc, dict):
        return False
    kind = str(doc.get("kind") or "").lower()
    if kind in _SECRET_KINDS:
        return True
    if kind == "config" and "users" in doc:
        return True
    if kind.endswith("list") and isinstance(doc.get("items"), list):
        return any(is_secret_document(item) for item in doc["items"])
    return False


def is_sops_encrypted(text: str) -> bool:
    """Whether `text` is (or contains) a SOPS-encrypted file: an `ENC[AES256_GCM,...]` value
    (SOPS writes one for its own MAC in every format) or a top-level `sops:` mapping."""
    return bool(_SOPS_VALUE.search(text) or _SOPS_KEY.search(text))


def extract(text: str, path: str) -> Extraction:
    """One k8s_manifest pair per named manifest document in `text` (kustomize's own
    kustomization.yaml needs no name). SOPS files give `sops_encrypted`; a file in which no
    document parses gives `parse_error`; other YAML gives nothing."""
    if is_sops_encrypted(text):
        return Extraction([], SOPS_ENCRYPTED)
    lines = SourceLines(text)
    parsed: list[tuple[_Document, Any]] = []
    failed = 0
    for document in _split(lines):
        try:
            parsed.append((document, yaml.safe_load(document.text)))
        except Exception:  # a broken document costs that document only
            failed += 1
    if failed and not parsed:
        return Extraction([], PARSE_ERROR, failed)
    if any(isinstance(doc, dict) and "sops" in doc for _, doc in parsed):
        return Extraction([], SOPS_ENCRYPTED)
    pairs: list[ExtractedPair] = []
    skipped = failed
    for document, doc in parsed:
        if not _is_manifest(doc) or is_secret_document(doc):
            continue
        try:
            pair = _manifest_pair(document, doc, lines, path)
        except Exception:  # an odd manifest costs that manifest only
            pair, skipped = None, skipped + 1
        if pair is not None:
            pairs.append(pair)
    return Extraction(pairs, None, skipped)


def _split(lines: SourceLines) -> list[_Document]:
    """The documents between `---` lines, each trimmed of blank lines at either end."""
    documents: list[_Document] = []
    start = 0
    bounds: list[tuple[int, int]] = []
    for index, line in enumerate(lines.lines):
        if _SEPARATOR.match(line):
            bounds.append((start, index))
            start = index + 1
    bounds.append((start, len(lines.lines)))
    for begin, end in bounds:
        while begin < end and not lines.lines[begin].strip():
            begin += 1
        while end > begin and not lines.lines[end - 1].strip():
            end -= 1
        if begin < end:
            documents.append(_Document(begin, end, "\n".join(lines.lines[begin:end])))
    return documents


def _is_manifest(doc: Any) -> bool:
    if not isinstance(doc, dict):
        return False
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return False
    if api_version.startswith(_KUSTOMIZE_CONFIG_GROUP + "/"):
        return True
    metadata = doc.get("metadata")
    return isinstance(metadata, dict) and isinstance(metadata.get("name"), str)


def _raw(node: yaml.Node, seen: dict[int, Raw] | None = None, depth: int = 0) -> Raw:
    """A YAML node as plain dicts, lists and the scalars' own text. An aliased node is converted
    once and shared, so alias bombs and recursive anchors cost nothing."""
    seen = {} if seen is None else seen
    if id(node) in seen:
        return seen[id(node)]
    if depth > 64:
        return None
    if isinstance(node, yaml.ScalarNode):
        return str(node.value)
    if isinstance(node, yaml.SequenceNode):
        items: list[Raw] = []
        seen[id(node)] = items
        items.extend(_raw(item, seen, depth + 1) for item in node.value)
        return items
    if isinstance(node, yaml.MappingNode):
        mapping: dict[str, Raw] = {}
        seen[id(node)] = mapping
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                mapping[str(key.value)] = _raw(value, seen, depth + 1)
        return mapping
    return None


def _get(raw: Raw, *keys: str) -> Raw:
    for key in keys:
        if not isinstance(raw, dict):
            return None
        raw = raw.get(key)
    return raw


def _text(raw: Raw) -> str:
    return raw if isinstance(raw, str) else ""


def _mapping(raw: Raw) -> dict[str, Raw]:
    return raw if isinstance(raw, dict) else {}


def _sequence(raw: Raw) -> list[Raw]:
    return raw if isinstance(raw, list) else []


def _manifest_pair(
    document: _Document, doc: dict[str, Any], lines: SourceLines, path: str
) -> ExtractedPair | None:
    raw = _mapping(_raw(yaml.compose(document.text, Loader=yaml.SafeLoader)))
    api_version, kind = _text(raw.get("apiVersion")), _text(raw.get("kind"))
    group = api_version.split("/")[0] if "/" in api_version else ""
    name = _text(_get(raw, "metadata", "name"))
    namespace = _text(_get(raw, "metadata", "namespace"))
    describe = _DESCRIBERS.get((group, kind), _describe_generic)
    if group == _KUSTOMIZE_CONFIG_GROUP:
        lead = _kustomize_lead(kind, path)
    else:
        ns = f" in namespace `{namespace}`" if namespace else ""
        template = pick(_LEADS, "k8s_manifest", path, kind, name, namespace)
        lead = template.format(label=_label(group, kind), name=name, ns=ns)
    details = [sentence for sentence in describe(raw) if sentence]
    instruction = " ".join([lead, *details])
    return code_pair(
        lines,
        kind="k8s_manifest",
        instruction=instruction,
        output=document.text,
        start_line=document.start + 1,
        end_line=document.end,
    )


def _label(group: str, kind: str) -> str:
    if group.endswith("toolkit.fluxcd.io"):
        return f"Flux {kind}"
    if group == "argoproj.io":
        return f"Argo {kind}"
    return f"Kubernetes {kind}"


def _kustomize_lead(kind: str, path: str) -> str:
    folder = posixpath.dirname(path)
    where = f" in `{folder}/`" if folder else " at the repository root"
    noun = "kustomization.yaml" if kind == "Kustomization" else f"kustomize {kind}"
    return pick(
        (
            f"Write the {noun}{where}.",
            f"Create a kustomize {kind}{where}.",
            f"Write a kustomize {kind} file{where}.",
        ),
        "kustomize",
        path,
    )


# ----------------------------------------------------------------------------------------------
# What matters per kind. Each describer returns sentences built only from the document's values.
# ----------------------------------------------------------------------------------------------


def _source_ref(ref: Raw) -> str:
    kind, name = _text(_get(ref, "kind")), _text(_get(ref, "name"))
    namespace = _text(_get(ref, "namespace"))
    if not name:
        return ""
    text = f"the {kind} `{name}`" if kind else f"`{name}`"
    return text + (f" (namespace `{namespace}`)" if namespace else "")


def _describe_helm_release(raw: Raw) -> list[str]:
    sentences: list[str] = []
    chart_spec = _get(raw, "spec", "chart", "spec")
    chart = _text(_get(chart_spec, "chart"))
    if chart:
        sentence = f"It installs the chart `{chart}`"
        version = _text(_get(chart_spec, "version"))
        if version:
            sentence += f" at version `{version}`"
        source = _source_ref(_get(chart_spec, "sourceRef"))
        if source:
            sentence += f" from {source}"
        sentences.append(sentence + ".")
    else:
        source = _source_ref(_get(raw, "spec", "chartRef"))
        if source:
            sentences.append(f"It installs the chart from {source}.")
    interval = _text(_get(raw, "spec", "interval"))
    if interval:
        sentences.append(f"It reconciles every `{interval}`.")
    target = _text(_get(raw, "spec", "targetNamespace"))
    if target:
        sentences.append(f"It deploys into the namespace `{target}`.")
    values = list(_mapping(_get(raw, "spec", "values")))
    if values:
        noun = "key" if len(values) == 1 else "keys"
        sentences.append(f"Its values set the top-level {noun} {code_list(values, limit=6)}.")
    return sentences


def _describe_helm_repository(raw: Raw) -> list[str]:
    sentences: list[str] = []
    url = _text(_get(raw, "spec", "url"))
    if url:
        kind = _text(_get(raw, "spec", "type"))
        label = "OCI repository" if kind == "oci" else "repository"
        sentences.append(f"Its {label} URL is `{url}`.")
    interval = _text(_get(raw, "spec", "interval"))
    if interval:
        sentences.append(f"It is refreshed every `{interval}`.")
    return sentences


def _describe_git_repository(raw: Raw) -> list[str]:
    sentences: list[str] = []
    url = _text(_get(raw, "spec", "url"))
    if url:
        sentences.append(f"It tracks `{url}`.")
    ref = _mapping(_get(raw, "spec", "ref"))
    refs = [f"{key} `{_text(value)}`" for key, value in ref.items() if _text(value)]
    if refs:
        sentences.append(f"It follows the {', '.join(refs)}.")
    interval = _text(_get(raw, "spec", "interval"))
    if interval:
        sentences.append(f"It is fetched every `{interval}`.")
    return sentences


def _describe_flux_kustomization(raw: Raw) -> list[str]:
    spec = _get(raw, "spec")
    sentences: list[str] = []
    path = _text(_get(spec, "path"))
    source = _source_ref(_get(spec, "sourceRef"))
    if path or source:
        sentence = "It applies"
        sentence += f" the path `{path}`" if path else " the root"
        if source:
            sentence += f" of {source}"
        sentences.append(sentence + ".")
    settings = []
    interval = _text(_get(spec, "interval"))
    if interval:
        settings.append(f"interval `{interval}`")
    prune = _text(_get(spec, "prune"))
    if prune:
        settings.append(f"prune `{prune}`")
    for key in ("wait", "timeout", "targetNamespace"):
        value = _text(_get(spec, key))
        if value:
            settings.append(f"{key} `{value}`")
    if settings:
        sentences.append(f"Set {_and(settings)}.")
    depends = [_text(_get(item, "name")) for item in _sequence(_get(spec, "dependsOn"))]
    depends = [name for name in depends if name]
    if depends:
        sentences.append(f"It depends on {code_list(depends)}.")
    return sentences


def _describe_kustomize(raw: Raw) -> list[str]:
    sentences: list[str] = []
    namespace = _text(_get(raw, "namespace"))
    if namespace:
        sentences.append(f"It sets the namespace `{namespace}`.")
    resources = [_text(item) for item in _sequence(_get(raw, "resources")) if _text(item)]
    if resources:
        noun = "resource" if len(resources) == 1 else "resources"
        sentences.append(f"It lists the {noun} {code_list(resources, limit=12)}.")
    images = []
    for image in _sequence(_get(raw, "images")):
        name = _text(_get(image, "name"))
        tag = _text(_get(image, "newTag"))
        if name and tag:
            images.append(f"`{name}` to tag `{tag}`")
        elif name:
            images.append(f"`{name}`")
    if images:
        sentences.append(f"It overrides the image {_and(images)}.")
    for key in ("components", "patches", "configMapGenerator"):
        if _sequence(_get(raw, key)):
            sentences.append(f"It has `{key}` entries.")
    return sentences


def _containers(raw: Raw, *pod_spec_path: str) -> list[str]:
    sentences: list[str] = []
    for container in _sequence(_get(raw, *pod_spec_path, "containers")):
        name = _text(_get(container, "name"))
        image = _text(_get(container, "image"))
        if not image:
            continue
        sentence = f"The container `{name}` runs `{image}`" if name else f"It runs `{image}`"
        ports = [
            _text(_get(port, "containerPort"))
            for port in _sequence(_get(container, "ports"))
            if _text(_get(port, "containerPort"))
        ]
        if ports:
            sentence += f" on port{'s' if len(ports) > 1 else ''} {code_list(ports)}"
        env = [_text(_get(item, "name")) for item in _sequence(_get(container, "env"))]
        env = [name for name in env if name]
        if env:
            sentence += f" with the environment {'variable' if len(env) == 1 else 'variables'} "
            sentence += code_list(env)
        sentences.append(sentence + ".")
    return sentences


def _describe_workload(raw: Raw) -> list[str]:
    sentences: list[str] = []
    replicas = _text(_get(raw, "spec", "replicas"))
    if replicas:
        sentences.append(f"It runs `{replicas}` replicas.")
    sentences.extend(_containers(raw, "spec", "template", "spec"))
    account = _text(_get(raw, "spec", "template", "spec", "serviceAccountName"))
    if account:
        sentences.append(f"Pods use the service account `{account}`.")
    return sentences


def _describe_cron_job(raw: Raw) -> list[str]:
    sentences: list[str] = []
    schedule = _text(_get(raw, "spec", "schedule"))
    if schedule:
        sentences.append(f"It runs on the schedule `{schedule}`.")
    sentences.extend(_containers(raw, "spec", "jobTemplate", "spec", "template", "spec"))
    return sentences


def _describe_service(raw: Raw) -> list[str]:
    sentences: list[str] = []
    kind = _text(_get(raw, "spec", "type"))
    if kind:
        sentences.append(f"It is of type `{kind}`.")
    ports = []
    for port in _sequence(_get(raw, "spec", "ports")):
        number = _text(_get(port, "port"))
        if not number:
            continue
        target = _text(_get(port, "targetPort"))
        name = _text(_get(port, "name"))
        text = f"`{number}`" + (f" to target port `{target}`" if target else "")
        ports.append(text + (f" (`{name}`)" if name else ""))
    if ports:
        sentences.append(f"It exposes port{'s' if len(ports) > 1 else ''} {_and(ports)}.")
    selector = _mapping(_get(raw, "spec", "selector"))
    labels = [f"{key}={_text(value)}" for key, value in selector.items()]
    if labels:
        sentences.append(f"It selects pods labelled {code_list(labels)}.")
    return sentences


def _describe_config_map(raw: Raw) -> list[str]:
    keys = [*_mapping(_get(raw, "data")), *_mapping(_get(raw, "binaryData"))]
    if not keys:
        return []
    noun = "key" if len(keys) == 1 else "keys"
    return [f"It holds the {noun} {code_list(keys, limit=10)}."]


def _describe_namespace(raw: Raw) -> list[str]:
    labels = _mapping(_get(raw, "metadata", "labels"))
    pairs = [f"{key}: {_text(value)}" for key, value in labels.items()]
    if not pairs:
        return []
    noun = "label" if len(pairs) == 1 else "labels"
    return [f"It carries the {noun} {code_list(pairs, limit=6)}."]


def _describe_workflow_spec(spec: Raw) -> list[str]:
    sentences: list[str] = []
    entrypoint = _text(_get(spec, "entrypoint"))
    if entrypoint:
        sentences.append(f"Its entrypoint is `{entrypoint}`.")
    templates = [_text(_get(item, "name")) for item in _sequence(_get(spec, "templates"))]
    templates = [name for name in templates if name]
    if templates:
        noun = "template" if len(templates) == 1 else "templates"
        sentences.append(f"It defines the {noun} {code_list(templates)}.")
    parameters = [
        _text(_get(item, "name")) for item in _sequence(_get(spec, "arguments", "parameters"))
    ]
    parameters = [name for name in parameters if name]
    if parameters:
        noun = "parameter" if len(parameters) == 1 else "parameters"
        sentences.append(f"It takes the {noun} {code_list(parameters)}.")
    return sentences


def _describe_workflow(raw: Raw) -> list[str]:
    return _describe_workflow_spec(_get(raw, "spec"))


def _describe_cron_workflow(raw: Raw) -> list[str]:
    sentences: list[str] = []
    schedule = _text(_get(raw, "spec", "schedule"))
    schedules = [_text(item) for item in _sequence(_get(raw, "spec", "schedules"))]
    schedules = [s for s in [schedule, *schedules] if s]
    if schedules:
        sentence = f"It runs on the schedule {code_list(schedules)}"
        timezone = _text(_get(raw, "spec", "timezone"))
        sentence += f" ({timezone})" if timezone else ""
        sentences.append(sentence + ".")
    policy = _text(_get(raw, "spec", "concurrencyPolicy"))
    if policy:
        sentences.append(f"Its concurrency policy is `{policy}`.")
    workflow_spec = _get(raw, "spec", "workflowSpec")
    template_ref = _text(_get(workflow_spec, "workflowTemplateRef", "name"))
    if template_ref:
        sentences.append(f"It starts the WorkflowTemplate `{template_ref}`.")
    sentences.extend(_describe_workflow_spec(workflow_spec))
    return sentences


def _describe_generic(raw: Raw) -> list[str]:
    spec = _mapping(_get(raw, "spec"))
    if spec:
        return [f"Its spec sets {code_list(spec, limit=6)}."]
    keys = [key for key in _mapping(raw) if key not in {"apiVersion", "kind", "metadata"}]
    if keys:
        return [f"It sets {code_list(keys, limit=6)}."]
    return []


def _and(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


_DESCRIBERS: dict[tuple[str, str], Callable[[Raw], list[str]]] = {
    ("helm.toolkit.fluxcd.io", "HelmRelease"): _describe_helm_release,
    ("source.toolkit.fluxcd.io", "HelmRepository"): _describe_helm_repository,
    ("source.toolkit.fluxcd.io", "GitRepository"): _describe_git_repository,
    ("source.toolkit.fluxcd.io", "OCIRepository"): _describe_git_repository,
    ("kustomize.toolkit.fluxcd.io", "Kustomization"): _describe_flux_kustomization,
    (_KUSTOMIZE_CONFIG_GROUP, "Kustomization"): _describe_kustomize,
    (_KUSTOMIZE_CONFIG_GROUP, "Component"): _describe_kustomize,
    # The core group has no name: `apiVersion: v1`.
    ("", "Namespace"): _describe_namespace,
    ("", "Service"): _describe_service,
    ("", "ConfigMap"): _describe_config_map,
    ("apps", "Deployment"): _describe_workload,
    ("apps", "StatefulSet"): _describe_workload,
    ("apps", "DaemonSet"): _describe_workload,
    ("batch", "CronJob"): _describe_cron_job,
    ("argoproj.io", "WorkflowTemplate"): _describe_workflow,
    ("argoproj.io", "ClusterWorkflowTemplate"): _describe_workflow,
    ("argoproj.io", "Workflow"): _describe_workflow,
    ("argoproj.io", "CronWorkflow"): _describe_cron_workflow,
}
