"""From per-repo samples to one training dataset version: decontaminate, deduplicate, split, format.

The unit of deduplication ("dedup unit") is what a sample teaches:

- an instruction pair is its own unit, its text the instruction, input and output;
- every FIM sample cut from one file text belongs to that text's unit, whose text is the file
  itself (prefix + middle + suffix) and whose id is the text's sha256: the same file at several
  paths, or in several repos, is ONE unit. Two FIM samples of one file are two different cuts,
  not duplicates, while two near-identical files are.

Stages, in order (`build_dataset`):

1. decontamination: a unit whose text, or a FIM sample whose repository context, overlaps a
   HumanEval problem is dropped with the task and the rule that matched;
2. deduplication (`core.dataset.dedup`): exact, then near (MinHash LSH, exact-Jaccard verified); a
   sample is kept when its unit is kept, and of a FIM unit found at several places only the samples
   of one place (the smallest repo and path) are kept: the others are its exact duplicates;
3. splits (`core.dataset.splits`) by content cluster (`content_clusters`): the samples of one source
   file, the files that hold the same text, and the members of one near-duplicate cluster are one
   cluster, whatever their paths, so a cluster never straddles splits and all samples of one file
   (its FIM cuts, its function pairs, its history pairs) land together: a test-split FIM middle is
   never a train-split answer;
4. formatting (`core.dataset.formatting`): mlx-lm `text` records within the token budget.

A repository whose samples cannot be read, or disagree about a file, is left out before any of
this (`repo_samples` says why); the others make the dataset.

The result is a directory with `train.jsonl`, `valid.jsonl`, `test.jsonl` (the dataset version is
their sha256), `provenance.parquet` (one row per line: sample, repo, commit, path),
`dropped.parquet` (every sample left out and why), `dedup_units.parquet` (kept units and their
split, for the checks) and `manifest.json`. Nothing in it depends on input order, timestamps or
local paths, so the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from coder_assets.core.dataset.decontam import Decontaminator
from coder_assets.core.dataset.dedup import (
    DedupConfig,
    Sample,
    deduplicate,
    lsh_params,
    shingle_hash_arrays,
    signatures,
    similarity_join,
)
from coder_assets.core.dataset.formatting import (
    FormatConfig,
    Record,
    dataset_version,
    fit_records,
    render_pair,
    write_jsonl,
)
from coder_assets.core.dataset.splits import SPLITS, SplitConfig, assign_splits
from coder_assets.core.errors import CoderAssetsError
from coder_assets.core.files import atomic_path, write_json_atomic
from coder_assets.core.samples.fim import FILE_SEP, FIM_PREFIX, FimFormatError, fim_documents
from coder_assets.core.samples.records import FimRecord, InstructionPair

FIM_KIND = "fim"
SPLIT_FILES = {split: f"{split}.jsonl" for split in SPLITS}
PROVENANCE_FILE = "provenance.parquet"
DROPPED_FILE = "dropped.parquet"
UNITS_FILE = "dedup_units.parquet"
MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA = 1
# Stages that drop samples, as `dropped.parquet` names them.
DROP_STAGES = ("decontamination", "dedup", "length")


class DatasetError(CoderAssetsError, ValueError):
    """The samples cannot make a usable dataset (an empty split, inconsistent inputs)."""


@dataclass(frozen=True)
class DatasetConfig:
    """Everything that decides the dataset's bytes; recorded in the manifest."""

    dedup: DedupConfig = field(default_factory=DedupConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)
    format: FormatConfig = field(default_factory=FormatConfig)
    decontam_ngram: int = 13
    decontam_min_substring_chars: int = 40
    # Records at least this alike share a split: under the 0.7 of the record-level duplicate
    # check, whose own tokens and shingles may see a pair a little closer than dedup's do.
    split_link_jaccard: float = 0.6


@dataclass(frozen=True)
class SourceSample:
    """One sample as the dataset stage sees it, from either samples asset."""

    sample_id: str
    kind: str  # an instruction pair kind, or "fim"
    language: str
    repo: str
    commit_sha: str
    path: str
    unit_id: str
    unit_text: str
    instruction: str = ""
    input: str = ""
    output: str = ""
    text: str = ""  # a FIM sample's record text


def from_pair(pair: InstructionPair) -> SourceSample:
    return SourceSample(
        sample_id=pair.sample_id,
        kind=pair.kind,
        language=pair.language,
        repo=pair.repo,
        commit_sha=pair.commit_sha,
        path=pair.path,
        unit_id=pair.sample_id,
        unit_text="\n".join(part for part in (pair.instruction, pair.input, pair.output) if part),
        instruction=pair.instruction,
        input=pair.input,
        output=pair.output,
    )


def from_fim(record: FimRecord) -> SourceSample:
    document = fim_document(record.text)
    return SourceSample(
        sample_id=record.sample_id,
        kind=FIM_KIND,
        language=record.language,
        repo=record.repo,
        commit_sha=record.commit_sha,
        path=record.path,
        unit_id=fim_unit_id(document),
        unit_text=document,
        text=record.text,
    )


def fim_unit_id(document: str) -> str:
    """The dedup unit of the FIM samples cut from `document`: its content, wherever it lies."""
    return f"fim:{text_digest(document)[:40]}"


def repo_samples(
    repo: str, pairs: Iterable[Mapping[str, Any]], fims: Iterable[Mapping[str, Any]]
) -> list[SourceSample]:
    """One repository's samples as the dataset stage sees them, from the rows of its
    instruction_pairs and fim_samples. Raises DatasetError, naming the repo and what to do, when
    a row cannot be read or the FIM samples of one file version disagree about its text (the
    same file must give the same text in every sample cut from it)."""
    try:
        samples = [from_pair(InstructionPair(**row)) for row in pairs]
        records = [FimRecord(**row) for row in fims]
    except TypeError as exc:
        raise DatasetError(
            f"{repo}: its samples do not have the expected columns ({exc}); rematerialize "
            "instruction_pairs and fim_samples for it"
        ) from None
    documents: dict[tuple[str, str], str] = {}
    for record in records:
        try:
            sample = from_fim(record)
        except DatasetError as exc:
            raise DatasetError(f"{repo}: FIM sample {record.sample_id}: {exc}") from None
        known = documents.setdefault((record.path, record.blob_sha), sample.unit_text)
        if known != sample.unit_text:
            raise DatasetError(
                f"{repo}: the FIM samples of {record.path} (blob {record.blob_sha[:12]}) disagree "
                f"about the file's text (sample {record.sample_id}); rematerialize fim_samples "
                "for this repo"
            )
        samples.append(sample)
    return samples


def fim_document(text: str) -> str:
    """The target file a FIM record was cut from: prefix + middle + suffix (repository context,
    if any, left out)."""
    try:
        return fim_documents(text)[-1][1]
    except FimFormatError as exc:
        raise DatasetError(str(exc)) from None


def fim_context(text: str) -> str:
    """The repository context in front of a FIM record's target file ("" without context)."""
    if not text.startswith("<|repo_name|>") or FILE_SEP not in text:
        return ""
    return text[: text.rfind(FIM_PREFIX)]


def dedup_units(samples: Iterable[SourceSample]) -> dict[str, str]:
    """unit id -> unit text, one entry per unit."""
    units: dict[str, str] = {}
    for sample in samples:
        known = units.setdefault(sample.unit_id, sample.unit_text)
        if known != sample.unit_text:
            raise DatasetError(
                f"dedup unit {sample.unit_id} has two different texts (sample {sample.sample_id}): "
                "its FIM samples disagree about the file; rematerialize fim_samples for "
                f"{sample.repo}"
            )
    return units


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoredSignature:
    """A MinHash signature with the digest of the text it was computed from."""

    text_sha256: str
    values: np.ndarray


@dataclass(frozen=True)
class SignatureUpdate:
    signatures: dict[str, StoredSignature]
    computed: list[str]
    reused: list[str]


def update_signatures(
    units: Mapping[str, str],
    previous: Mapping[str, StoredSignature],
    config: DedupConfig,
) -> SignatureUpdate:
    """Signatures for `units`, reusing every previous one whose text digest still matches and
    computing the rest. Units no longer present are forgotten."""
    result: dict[str, StoredSignature] = {}
    todo: list[tuple[str, str]] = []
    reused: list[str] = []
    for unit_id, text in sorted(units.items()):
        digest = text_digest(text)
        known = previous.get(unit_id)
        if (
            known is not None
            and known.text_sha256 == digest
            and len(known.values) == config.num_perm
        ):
            result[unit_id] = known
            reused.append(unit_id)
        else:
            todo.append((unit_id, text))
    for unit_id, values in signatures(todo, config).items():
        result[unit_id] = StoredSignature(text_digest(units[unit_id]), values)
    return SignatureUpdate(result, [unit_id for unit_id, _ in todo], reused)


@dataclass(frozen=True)
class DatasetBuild:
    """What `build_dataset` wrote and decided."""

    directory: Path
    version: str
    manifest: dict[str, Any]
    signatures_computed: int  # signatures the stored per-repo ones lacked


def build_dataset(
    samples: Sequence[SourceSample],
    stored_signatures: Mapping[str, StoredSignature],
    tokenizer: Any,
    decontaminator: Decontaminator,
    config: DatasetConfig,
    out_dir: Path,
    *,
    repo_commits: Mapping[str, str],
    base_model_version: str,
    committed_at: Mapping[str, str] | None = None,
    left_out: Mapping[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> DatasetBuild:
    """Build the dataset into a fresh directory `out_dir` (which must not exist yet).

    `stored_signatures` are the per-repo signatures keyed by unit id; units without a matching one
    are computed here. `repo_commits` maps each repo to the commit its samples come from (for the
    manifest). `committed_at` maps commit SHA -> ISO time, needed for a time-based test split.
    """
    say = progress or (lambda _message: None)
    if out_dir.exists():
        raise DatasetError(f"{out_dir} already exists; build_dataset writes a fresh directory")
    ids = [s.sample_id for s in samples]
    if len(set(ids)) != len(ids):
        repeated = sorted(i for i, n in Counter(ids).items() if n > 1)[:5]
        raise DatasetError(f"sample ids repeat across inputs: {', '.join(repeated)}")
    if not samples:
        reasons = "".join(
            f"; {repo} was left out: {why}" for repo, why in sorted((left_out or {}).items())
        )
        raise DatasetError(
            "no samples: materialize instruction_pairs and fim_samples for at least one repo "
            f"first{reasons}"
        )
    samples = sorted(samples, key=lambda s: s.sample_id)
    units = dedup_units(samples)
    dropped: list[dict[str, str]] = []

    # 1. decontamination: per unit, plus each FIM sample's repository context
    say(f"decontaminating {len(units)} units against {decontaminator.benchmark.name}")
    unit_hits = {}
    for unit_id, text in units.items():
        hit = decontaminator.check(unit_id, text)
        if hit is not None:
            unit_hits[unit_id] = hit
    clean: list[SourceSample] = []
    for sample in samples:
        hit = unit_hits.get(sample.unit_id)
        if hit is None and sample.kind == FIM_KIND:
            context = fim_context(sample.text)
            hit = decontaminator.check(sample.sample_id, context) if context else None
        if hit is not None:
            dropped.append(_dropped(sample, "decontamination", hit.reason, hit.task_id, hit.detail))
        else:
            clean.append(sample)

    # 2. deduplication over the clean units
    clean_units = {s.unit_id: s.unit_text for s in clean}
    unit_repo = {s.unit_id: s.repo for s in clean}
    sigs: dict[str, np.ndarray] = {}
    missing: list[tuple[str, str]] = []
    for unit_id, text in clean_units.items():
        known = stored_signatures.get(unit_id)
        if known is not None and known.text_sha256 == text_digest(text):
            sigs[unit_id] = known.values
        else:
            missing.append((unit_id, text))
    sigs.update(signatures(missing, config.dedup))
    say(f"deduplicating {len(clean_units)} units ({len(missing)} signatures computed here)")
    result = deduplicate(
        [Sample(u, unit_repo[u], t) for u, t in sorted(clean_units.items())], sigs, config.dedup
    )
    kept_units = set(result.kept)
    kept_place = _kept_places(s for s in clean if s.kind == FIM_KIND and s.unit_id in kept_units)
    survivors: list[SourceSample] = []
    for sample in clean:
        if sample.unit_id not in kept_units:
            kept, reason = result.dropped[sample.unit_id]
            dropped.append(_dropped(sample, "dedup", reason, kept, ""))
        elif sample.kind == FIM_KIND and _place(sample) != kept_place[sample.unit_id]:
            # The same text at another path or in another repo: one copy of its samples is kept.
            dropped.append(
                _dropped(sample, "dedup", "exact", _place_name(kept_place[sample.unit_id]), "")
            )
        else:
            survivors.append(sample)

    # 3. formatting within the token budget
    say(f"formatting {len(survivors)} samples (max_seq_length {config.format.max_seq_length})")
    formatted: list[tuple[SourceSample, list[Record]]] = []
    windowed: Counter[str] = Counter()
    for sample in survivors:
        records, reason = _records(sample, tokenizer, config.format)
        if reason is not None:
            dropped.append(_dropped(sample, "length", reason, "", ""))
            continue
        if sample.kind == FIM_KIND and records[0].text != sample.text:
            windowed[sample.language] += 1
        formatted.append((sample, records))

    # 4. splits by content cluster, records that read alike joined too
    first = content_clusters(clean, result.clusters)
    links = record_links(formatted, first, config)
    cluster_of = content_clusters(clean, result.clusters, links) if links else first
    groups = {s.sample_id: cluster_of[s.sample_id] for s, _ in formatted}
    times = None
    if config.splits.test_after is not None:
        times = {
            s.sample_id: committed_at[s.commit_sha]
            for s, _ in formatted
            if committed_at and s.commit_sha in committed_at
        }
    split_of = assign_splits(groups, config.splits, times)
    lines: dict[str, list[tuple[Record, SourceSample]]] = {split: [] for split in SPLITS}
    for sample, records in formatted:
        lines[split_of[sample.sample_id]].extend((record, sample) for record in records)
    empty = [split for split in SPLITS if not lines[split]]
    if empty:
        raise DatasetError(
            f"the {' and '.join(empty)} split would be empty ({len(formatted)} samples in "
            f"{len(set(groups.values()))} content clusters after decontamination and dedup): add "
            "repositories, or raise valid_fraction / test_fraction in the dataset_splits config"
        )

    out_dir.mkdir(parents=True)
    files: dict[str, dict[str, Any]] = {}
    provenance: list[dict[str, Any]] = []
    for split in SPLITS:
        name = SPLIT_FILES[split]
        sha, count = write_jsonl(out_dir / name, (record for record, _ in lines[split]))
        files[name] = {"sha256": sha, "bytes": (out_dir / name).stat().st_size, "lines": count}
        for number, (record, sample) in enumerate(lines[split], start=1):
            provenance.append(
                {
                    "split": split,
                    "line": number,
                    "record_id": record.sample_id,
                    "sample_id": sample.sample_id,
                    "unit_id": sample.unit_id,
                    "kind": sample.kind,
                    "language": sample.language,
                    "repo": sample.repo,
                    "commit_sha": sample.commit_sha,
                    "path": sample.path,
                    "tokens": record.tokens,
                }
            )
    version = dataset_version({split: files[SPLIT_FILES[split]]["sha256"] for split in SPLITS})

    _write_table(out_dir / PROVENANCE_FILE, provenance, _PROVENANCE_SCHEMA)
    _write_table(out_dir / DROPPED_FILE, dropped, _DROPPED_SCHEMA)
    for name in (PROVENANCE_FILE, DROPPED_FILE):
        path = out_dir / name
        files[name] = {"sha256": _file_sha256(path), "bytes": path.stat().st_size}
    unit_rows = sorted({(s.unit_id, split_of[s.sample_id]) for s, _ in formatted})
    _write_table(
        out_dir / UNITS_FILE,
        [{"unit_id": u, "split": sp, "text": units[u]} for u, sp in unit_rows],
        _UNITS_SCHEMA,
    )

    manifest = _manifest(
        version=version,
        files=files,
        provenance=provenance,
        samples=samples,
        dropped=dropped,
        windowed=windowed,
        dedup_stats={
            "units": len(units),
            "units_after_decontamination": len(clean_units),
            "units_kept": len(result.kept),
            "exact_dropped_units": sum(1 for _, r in result.dropped.values() if r == "exact"),
            "near_dropped_units": sum(1 for _, r in result.dropped.values() if r == "near"),
            "candidate_pairs": result.candidate_pairs,
            "verified_pairs": result.verified_pairs,
            "merged_pairs": len(result.merged_pairs),
            "record_links": len(links),
        },
        decontaminator=decontaminator,
        config=config,
        repo_commits=repo_commits,
        base_model_version=base_model_version,
        left_out=left_out or {},
    )
    write_json_atomic(out_dir / MANIFEST_FILE, manifest)
    return DatasetBuild(out_dir, version, manifest, signatures_computed=len(missing))


def install_version(build_dir: Path, datasets_root: Path, version: str) -> Path:
    """Move a built dataset into `datasets_root/<version>` (content-addressed). When that version
    is already there, the build is discarded: same version, same bytes."""
    target = datasets_root / version
    datasets_root.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(build_dir, ignore_errors=True)
        return target
    try:
        os.replace(build_dir, target)
    except OSError:
        if not target.exists():
            raise
        shutil.rmtree(build_dir, ignore_errors=True)  # a concurrent run installed it first
    return target


@contextmanager
def staging_dir(datasets_root: Path) -> Iterator[Path]:
    """A fresh path (not created) beside the versions, for `build_dataset` to write into and
    `install_version` to move into place. Whatever is left there when the block ends (a failed
    or discarded build, the empty folder around it) is removed."""
    datasets_root.mkdir(parents=True, exist_ok=True)
    parent = Path(tempfile.mkdtemp(prefix=".build-", dir=datasets_root))
    try:
        yield parent / "dataset"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST_FILE
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise DatasetError(
            f"{path} does not exist: the dataset directory is incomplete; rematerialize "
            "dataset_splits"
        ) from None


def read_table(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


# ---------------------------------------------------------------------------------------------


def _records(
    sample: SourceSample, tokenizer: Any, config: FormatConfig
) -> tuple[list[Record], str | None]:
    if sample.kind == FIM_KIND:
        return fit_records(sample.sample_id, FIM_KIND, sample.text, tokenizer, config)
    return fit_records(
        sample.sample_id,
        sample.kind,
        sample.output,
        tokenizer,
        config,
        render=lambda output: render_pair(
            tokenizer, sample.instruction, sample.input, output, config
        ),
    )


def _dropped(sample: SourceSample, stage: str, reason: str, ref: str, detail: str) -> dict:
    return {
        "sample_id": sample.sample_id,
        "kind": sample.kind,
        "repo": sample.repo,
        "commit_sha": sample.commit_sha,
        "path": sample.path,
        "stage": stage,
        "reason": reason,
        "ref": ref,  # the HumanEval task, or the kept unit of a duplicate's cluster
        "detail": detail,
    }


def _place(sample: SourceSample) -> tuple[str, str]:
    return sample.repo, sample.path


def _place_name(place: tuple[str, str]) -> str:
    return f"{place[0]}:{place[1]}"


def _kept_places(samples: Iterable[SourceSample]) -> dict[str, tuple[str, str]]:
    """For each FIM unit, the one place (repo, path) whose samples are kept: the smallest."""
    places: dict[str, tuple[str, str]] = {}
    for sample in samples:
        known = places.get(sample.unit_id)
        if known is None or _place(sample) < known:
            places[sample.unit_id] = _place(sample)
    return places


def content_clusters(
    samples: Iterable[SourceSample],
    unit_clusters: Mapping[str, str],
    links: Iterable[tuple[str, str]] = (),
) -> dict[str, str]:
    """sample id -> the id of its content cluster, the unit that decides its split.

    Samples are joined when they come from one source file (repo, path), share a dedup unit (the
    same text at several places), their units share a near-duplicate cluster
    (`unit_clusters`: unit id -> cluster id, from deduplication), or `links` pairs their ids
    (records that read alike, `record_links`); joining is transitive. A
    cluster's id is its smallest source file, so edits to a file never move its samples to
    another split, and only new near-copies or copies join clusters.
    """
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        parent.setdefault(node, node)
        root = node
        while parent[root] != root:
            root = parent[root]
        while parent[node] != root:
            parent[node], node = root, parent[node]
        return root

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    file_of = {}
    for sample in samples:
        # File nodes sort before unit nodes ("f" < "u"), so a root is always a source file.
        file_node = file_of[sample.sample_id] = f"file\0{sample.repo}\0{sample.path}"
        union(file_node, f"unit\0{sample.unit_id}")
        cluster = unit_clusters.get(sample.unit_id)
        if cluster is not None:
            union(file_node, f"unit\0{cluster}")
    for a, b in links:
        union(file_of[a], file_of[b])
    return {sample_id: find(node).replace("\0", ":") for sample_id, node in file_of.items()}


def record_links(
    formatted: Sequence[tuple[SourceSample, Sequence[Record]]],
    cluster_of: Mapping[str, str],
    config: DatasetConfig,
) -> list[tuple[str, str]]:
    """Pairs of sample ids from different clusters whose records read alike: exact Jaccard of
    their token shingles `>= config.split_link_jaccard`, over the record texts as they will be
    written (template and all). Dedup compares what samples teach (whole files, pairs); a record
    shows less (a short file's FIM cut, a pair in its chat template) and can come out closer to
    another than its unit did. Joined, such records land in one split."""
    owners = [sample.sample_id for sample, records in formatted for _ in records]
    texts = [record.text for _, records in formatted for record in records]
    sets = [
        frozenset(hashes.tolist())
        for hashes in shingle_hash_arrays(texts, config.dedup.shingle_size)
    ]
    pairs = similarity_join(
        sets, config.split_link_jaccard, [cluster_of[owner] for owner in owners]
    )
    return sorted({(owners[i], owners[j]) for i, j, _ in pairs})


_PROVENANCE_SCHEMA = pa.schema(
    [
        ("split", pa.string()),
        ("line", pa.int64()),
        ("record_id", pa.string()),
        ("sample_id", pa.string()),
        ("unit_id", pa.string()),
        ("kind", pa.string()),
        ("language", pa.string()),
        ("repo", pa.string()),
        ("commit_sha", pa.string()),
        ("path", pa.string()),
        ("tokens", pa.int64()),
    ]
)
_DROPPED_SCHEMA = pa.schema(
    [
        (name, pa.string())
        for name in ("sample_id", "kind", "repo", "commit_sha", "path", "stage", "reason", "ref")
    ]
    + [("detail", pa.string())]
)
_UNITS_SCHEMA = pa.schema([("unit_id", pa.string()), ("split", pa.string()), ("text", pa.string())])


def _write_table(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest(
    *,
    version: str,
    files: dict[str, dict[str, Any]],
    provenance: list[dict[str, Any]],
    samples: Sequence[SourceSample],
    dropped: list[dict[str, str]],
    windowed: Counter[str],
    dedup_stats: dict[str, int],
    decontaminator: Decontaminator,
    config: DatasetConfig,
    repo_commits: Mapping[str, str],
    base_model_version: str,
    left_out: Mapping[str, str],
) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for split in SPLITS:
        rows = [row for row in provenance if row["split"] == split]
        splits[split] = {
            "lines": len(rows),
            "samples": len({row["sample_id"] for row in rows}),
            "tokens": sum(row["tokens"] for row in rows),
            "max_tokens": max((row["tokens"] for row in rows), default=0),
            "by_kind": dict(sorted(Counter(row["kind"] for row in rows).items())),
            "by_language": dict(sorted(Counter(row["language"] for row in rows).items())),
        }
    repos: dict[str, Any] = {}
    inputs = Counter(s.repo for s in samples)
    for repo in sorted(set(repo_commits) | set(inputs)):
        rows = [row for row in provenance if row["repo"] == repo]
        repos[repo] = {
            "commit_sha": repo_commits.get(repo, ""),
            "samples_in": inputs.get(repo, 0),
            "samples_kept": len({row["sample_id"] for row in rows}),
            "lines": dict(sorted(Counter(row["split"] for row in rows).items())),
            "tokens": sum(row["tokens"] for row in rows),
            "dropped": dict(
                sorted(Counter(d["stage"] for d in dropped if d["repo"] == repo).items())
            ),
        }
    by_stage: dict[str, Any] = {}
    for stage in DROP_STAGES:
        reasons = Counter(d["reason"] for d in dropped if d["stage"] == stage)
        by_stage[stage] = {
            "samples": sum(reasons.values()),
            "by_reason": dict(sorted(reasons.items())),
        }
    bands, rows_per_band = lsh_params(config.dedup)
    return {
        "schema": MANIFEST_SCHEMA,
        "version": version,
        "format": "mlx-lm text records (one format per file)",
        "files": files,
        "splits": splits,
        "samples_in": len(samples),
        "samples_in_by_kind": dict(sorted(Counter(s.kind for s in samples).items())),
        "fim_windowed_by_language": dict(sorted(windowed.items())),
        "tokens": sum(s["tokens"] for s in splits.values()),
        "max_seq_length": config.format.max_seq_length,
        "repos": repos,
        "source_commits": {repo: sha for repo, sha in sorted(repo_commits.items())},
        "repos_left_out": dict(sorted(left_out.items())),
        "dropped": by_stage,
        "dedup": {**dedup_stats, "lsh_bands": bands, "lsh_rows": rows_per_band},
        "decontamination": {
            "benchmark": decontaminator.benchmark.name,
            "problems": len(decontaminator.benchmark.problems),
            "ngram": decontaminator.ngram,
            "samples_dropped": by_stage["decontamination"]["samples"],
            "tasks_hit": sorted({d["ref"] for d in dropped if d["stage"] == "decontamination"}),
        },
        "base_model_version": base_model_version,
        "config": {
            "dedup": asdict(config.dedup),
            "splits": asdict(config.splits),
            "format": asdict(config.format),
            "decontam_ngram": config.decontam_ngram,
            "decontam_min_substring_chars": config.decontam_min_substring_chars,
            "split_link_jaccard": config.split_link_jaccard,
        },
    }
