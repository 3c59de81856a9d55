"""base_model, sample_signatures and dataset_splits: per-repo samples to one dataset version."""

# No `from __future__ import annotations` here: Dagster reads these annotations at runtime.
from pathlib import Path
from urllib.parse import unquote, urlparse

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from coder_assets.assets import reported_as_failure
from coder_assets.constants import DATASET_GROUP, OWNERS, SOURCES_GROUP
from coder_assets.core.dataset.build import (
    DatasetConfig,
    DatasetError,
    SourceSample,
    StoredSignature,
    build_dataset,
    dedup_units,
    install_version,
    read_manifest,
    repo_samples,
    staging_dir,
    update_signatures,
)
from coder_assets.core.dataset.decontam import Decontaminator, load_humaneval
from coder_assets.core.dataset.dedup import DedupConfig
from coder_assets.core.dataset.formatting import FormatConfig
from coder_assets.core.dataset.splits import SPLITS, SplitConfig
from coder_assets.core.sources.git import run_git
from coder_assets.core.sources.repos import parse_partition_key
from coder_assets.partitions import repo_partitions
from coder_assets.resources.datasets import DatasetStoreResource, S3ParquetIOManager
from coder_assets.resources.mlflow import MlflowTrackingResource
from coder_assets.resources.mlx import BaseModelResource
from coder_assets.resources.storage import ParquetIOManager, RepoMirrorsResource, WorkspaceResource

REPO_TABLE_ROWS = 100


@dg.asset(
    group_name=SOURCES_GROUP,
    kinds={"mlx"},
    owners=OWNERS,
    code_version="1",
)
def base_model(context: dg.AssetExecutionContext, mlx_base_model: BaseModelResource):
    """The base model: Qwen2.5-Coder-32B-Instruct (MLX, 8-bit) in production, observed and never
    written, or the tiny dev model (Qwen2 architecture, random weights, a BPE tokenizer trained
    on the sample repos with Qwen2.5-Coder's special tokens) that the demo and tests build. Its
    data version is a hash of its config, tokenizer and weight index: its tokenizer and chat
    template shape every training record downstream."""
    with reported_as_failure():
        directory = mlx_base_model.prepare()
        version = mlx_base_model.version()
        config = mlx_base_model.config()
        tokenizer = mlx_base_model.load_tokenizer()
    special = {
        token: tokenizer.encode(token, add_special_tokens=False)
        for token in ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|im_start|>")
    }
    weights = sum(p.stat().st_size for p in directory.glob("*.safetensors"))
    context.log.info(f"base model {directory.name} version {version[:12]}")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "path": dg.MetadataValue.path(str(directory)),
            "version": version,
            "dev_model": mlx_base_model.build_dev_model,
            "model_type": config.get("model_type", ""),
            "hidden_size": config.get("hidden_size", 0),
            "num_hidden_layers": config.get("num_hidden_layers", 0),
            "vocab_size": config.get("vocab_size", 0),
            "quantization": str(config.get("quantization", "none")),
            "weights_bytes": weights,
            "eos_token_id": str(tokenizer.eos_token_id),
            "special_token_ids": dg.MetadataValue.json(special),
        },
    )


class MinHashSettings(dg.Config):
    """MinHash parameters; the signatures asset and the dataset must agree on them."""

    num_perm: int = Field(default=256, description="MinHash permutations per signature.")
    shingle_size: int = Field(default=5, description="Token n-gram size of the shingles.")
    minhash_seed: int = Field(default=1, description="Seed of the MinHash permutations.")

    def dedup_config(self, **more) -> DedupConfig:
        return DedupConfig(
            num_perm=self.num_perm, shingle_size=self.shingle_size, seed=self.minhash_seed, **more
        )

    def signature_attrs(self) -> dict[str, int]:
        return {
            "num_perm": self.num_perm,
            "shingle_size": self.shingle_size,
            "minhash_seed": self.minhash_seed,
        }


def _source_samples(repo: str, pairs: pd.DataFrame, fims: pd.DataFrame) -> list[SourceSample]:
    """One repo's samples; DatasetError (naming the repo) when they cannot be read."""
    return repo_samples(repo, pairs.to_dict("records"), fims.to_dict("records"))


@dg.asset(
    partitions_def=repo_partitions,
    group_name=DATASET_GROUP,
    kinds={"python", "pandas"},
    owners=OWNERS,
    code_version="1",
    io_manager_key="parquet_io_manager",
)
def sample_signatures(
    context: dg.AssetExecutionContext,
    config: MinHashSettings,
    instruction_pairs: pd.DataFrame,
    fim_samples: pd.DataFrame,
    parquet_io_manager: dg.ResourceParam[ParquetIOManager | S3ParquetIOManager],
) -> dg.MaterializeResult:
    """MinHash signatures of one repository's dedup units (each instruction pair; each file its FIM
    samples were cut from), keyed by unit id with the sha256 of the text they were computed from.
    Signatures of unchanged units are reused from this partition's previous value, so a push
    recomputes only what it changed, and dataset_splits reuses every repo's signatures."""
    with reported_as_failure():
        units = dedup_units(_source_samples(context.partition_key, instruction_pairs, fim_samples))
        previous: dict[str, StoredSignature] = {}
        stored = parquet_io_manager.stored(context.asset_key, context.partition_key)
        if stored is not None and stored.attrs.get("minhash") == config.signature_attrs():
            previous = {
                row.unit_id: StoredSignature(row.text_sha256, np.asarray(row.signature))
                for row in stored.itertuples()
            }
        update = update_signatures(units, previous, config.dedup_config())
    ids = sorted(update.signatures)
    frame = pd.DataFrame(
        {
            "unit_id": ids,
            "text_sha256": [update.signatures[i].text_sha256 for i in ids],
            "signature": [update.signatures[i].values.astype(np.uint32) for i in ids],
        }
    )
    frame.attrs = {
        "repo": instruction_pairs.attrs.get("repo", ""),
        "commit_sha": instruction_pairs.attrs.get("commit_sha", ""),
        "minhash": config.signature_attrs(),
        "computed": len(update.computed),
        "reused": len(update.reused),
    }
    context.log.info(
        f"{context.partition_key}: {len(update.computed)} signatures computed, "
        f"{len(update.reused)} reused"
    )
    return dg.MaterializeResult(
        value=frame,
        metadata={
            "units": len(ids),
            "computed": len(update.computed),
            "reused": len(update.reused),
            "commit_sha": frame.attrs["commit_sha"],
            "dagster/row_count": len(ids),
        },
    )


class DatasetSplitsConfig(MinHashSettings):
    near_dup_threshold: float = Field(
        default=0.7, description="Exact Jaccard at and above which two units are near duplicates."
    )
    lsh_recall: float = Field(
        default=0.99, description="Chance that a pair at the threshold becomes an LSH candidate."
    )
    valid_fraction: float = Field(default=0.05, description="Share of source files in valid.")
    test_fraction: float = Field(default=0.05, description="Share of source files in test.")
    split_salt: str = Field(
        default="coder-assets-v1", description="Changing it reshuffles every split."
    )
    test_after: str | None = Field(
        default=None,
        description="ISO date: files with commits after it go to test (time-based test split).",
    )
    max_seq_length: int = Field(
        default=2048, description="Tokens per record (base tokenizer, EOS included)."
    )
    system_prompt: str = Field(
        default="You are a coding assistant for this homelab's repositories.",
        description="System message of every rendered instruction pair.",
    )
    decontam_ngram: int = Field(default=13, description="Word n-gram overlap that contaminates.")
    split_link_jaccard: float = Field(
        default=0.6,
        description="Records at least this alike (exact Jaccard of token shingles) share a split; "
        "below the duplicate check's 0.7 so the check's own tokens cannot see a leak.",
    )

    def dataset_config(self) -> DatasetConfig:
        return DatasetConfig(
            dedup=self.dedup_config(threshold=self.near_dup_threshold, lsh_recall=self.lsh_recall),
            splits=SplitConfig(
                valid_fraction=self.valid_fraction,
                test_fraction=self.test_fraction,
                salt=self.split_salt,
                test_after=self.test_after,
            ),
            format=FormatConfig(
                max_seq_length=self.max_seq_length,
                system_prompt=self.system_prompt,
            ),
            decontam_ngram=self.decontam_ngram,
            split_link_jaccard=self.split_link_jaccard,
        )


def _commit_times(repos: dict[str, set[str]], mirrors: RepoMirrorsResource) -> dict[str, str]:
    """ISO committer time of each commit, read from the repos' mirrors."""
    times: dict[str, str] = {}
    for repo, shas in repos.items():
        owner, name = repo.split("/", 1)
        mirror = mirrors.mirror_path(owner, name)
        out = run_git(
            ["log", "--no-walk=unsorted", "--format=%H %cI", *sorted(shas)],
            cwd=mirror,
            what=f"reading commit times of {repo}",
        )
        for line in out.splitlines():
            sha, _, when = line.partition(" ")
            times[sha] = when
    return times


def _md_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


@dg.asset(
    group_name=DATASET_GROUP,
    kinds={"python", "mlx"},
    owners=OWNERS,
    code_version="1",
    deps=[base_model],
    io_manager_key="json_io_manager",
)
def dataset_splits(
    context: dg.AssetExecutionContext,
    config: DatasetSplitsConfig,
    instruction_pairs: dict[str, pd.DataFrame],
    fim_samples: dict[str, pd.DataFrame],
    sample_signatures: dict[str, pd.DataFrame],
    mlx_base_model: BaseModelResource,
    repo_mirrors: RepoMirrorsResource,
    workspace: WorkspaceResource,
) -> dg.MaterializeResult:
    """train/valid/test in mlx-lm's JSONL `text` format, from every repo's samples: decontaminated
    against HumanEval, exact- and near-deduplicated (MinHash LSH, verified by exact Jaccard; one
    copy of a file found at several places), split by content cluster (a source file, its copies,
    its near duplicates and records that read alike share a split), rendered through the base
    model's chat template (FIM raw) and kept within max_seq_length (no answer split; long FIM
    samples windowed). A repo whose samples cannot be read is left out and named. The dataset
    version is the sha256 of the three files; the folder also holds a provenance sidecar (every
    line to its sample, repo, commit and path), what was dropped and why, and manifest.json."""
    with reported_as_failure():
        dataset_config = config.dataset_config()
        repos = sorted(set(instruction_pairs) | set(fim_samples))
        missing = [key for key in repos if key not in instruction_pairs or key not in fim_samples]
        if missing:
            context.log.warning(
                f"left out repos without both sample assets: {', '.join(missing)} "
                "(materialize their partitions to include them)"
            )
        samples: list[SourceSample] = []
        left_out = {
            "/".join(parse_partition_key(key)): "instruction_pairs or fim_samples is not "
            f"materialized; materialize partition {key}"
            for key in missing
        }
        repo_commits: dict[str, str] = {}
        stored: dict[str, StoredSignature] = {}
        stale_signatures: list[str] = []
        for key in repos:
            if key in missing:
                continue
            pairs, fims = instruction_pairs[key], fim_samples[key]
            owner, name = parse_partition_key(key)
            repo = f"{owner}/{name}"
            commit = pairs.attrs.get("commit_sha", "")
            if fims.attrs.get("commit_sha", "") != commit:
                context.log.warning(
                    f"{repo}: instruction_pairs are from {commit[:12]} but fim_samples from "
                    f"{fims.attrs.get('commit_sha', '')[:12]}; rematerialize the repo"
                )
            try:
                samples.extend(_source_samples(repo, pairs, fims))
            except DatasetError as exc:
                # One repo's unreadable samples never fail the others: it is left out, and said.
                left_out[repo] = str(exc)
                context.log.warning(f"left out {key}: {exc}")
                continue
            repo_commits[repo] = commit
            sigs = sample_signatures.get(key)
            if sigs is None or sigs.attrs.get("minhash") != config.signature_attrs():
                stale_signatures.append(key)
                continue
            for row in sigs.itertuples():
                stored[row.unit_id] = StoredSignature(row.text_sha256, np.asarray(row.signature))
        committed_at = None
        if dataset_config.splits.test_after is not None:
            shas: dict[str, set[str]] = {}
            for sample in samples:
                shas.setdefault(sample.repo, set()).add(sample.commit_sha)
            committed_at = _commit_times(shas, repo_mirrors)

        mlx_base_model.prepare()
        tokenizer = mlx_base_model.load_tokenizer()
        decontaminator = Decontaminator(load_humaneval(), ngram=dataset_config.decontam_ngram)
        root = workspace.datasets_dir()
        with staging_dir(root) as out:
            build = build_dataset(
                samples,
                stored,
                tokenizer,
                decontaminator,
                dataset_config,
                out,
                repo_commits=repo_commits,
                base_model_version=mlx_base_model.version(),
                committed_at=committed_at,
                left_out=left_out,
                progress=context.log.info,
            )
            directory = install_version(build.directory, root, build.version)
    return _dataset_result(build.manifest, directory, build.signatures_computed, stale_signatures)


def _dataset_result(
    manifest: dict,
    directory: Path,
    signatures_computed: int,
    stale_signatures: list[str],
) -> dg.MaterializeResult:
    version = manifest["version"]
    splits = manifest["splits"]
    kinds = sorted({kind for split in SPLITS for kind in splits[split]["by_kind"]})
    kind_table = _md_table(
        ["kind", *SPLITS],
        [[kind, *(splits[split]["by_kind"].get(kind, 0) for split in SPLITS)] for kind in kinds],
    )
    repo_rows = [
        [
            repo,
            info["commit_sha"][:12],
            info["samples_in"],
            info["samples_kept"],
            *(info["lines"].get(split, 0) for split in SPLITS),
            info["tokens"],
        ]
        for repo, info in list(manifest["repos"].items())[:REPO_TABLE_ROWS]
    ]
    coverage = _md_table(["repo", "commit", "samples in", "kept", *SPLITS, "tokens"], repo_rows)
    dropped = manifest["dropped"]
    dropped_rows = [
        [stage, reason, count]
        for stage, info in dropped.items()
        for reason, count in info["by_reason"].items()
    ]
    descriptor = {
        "version": version,
        "directory": str(directory),
        "base_model_version": manifest["base_model_version"],
        "max_seq_length": manifest["max_seq_length"],
        "lines": {split: splits[split]["lines"] for split in SPLITS},
        "tokens": manifest["tokens"],
    }
    covered = sum(1 for info in manifest["repos"].values() if info["samples_kept"])
    left_out = manifest["repos_left_out"]
    return dg.MaterializeResult(
        value=descriptor,
        data_version=dg.DataVersion(version),
        metadata={
            "version": version,
            "path": dg.MetadataValue.path(str(directory)),
            **{f"{split}_lines": splits[split]["lines"] for split in SPLITS},
            **{f"{split}_tokens": splits[split]["tokens"] for split in SPLITS},
            "samples_in": manifest["samples_in"],
            "repos_covered": f"{covered}/{len(manifest['repos'])}",
            "dropped_decontamination": dropped["decontamination"]["samples"],
            "dropped_dedup": dropped["dedup"]["samples"],
            "dropped_length": dropped["length"]["samples"],
            "humaneval_tasks_hit": ", ".join(manifest["decontamination"]["tasks_hit"]) or "none",
            "near_duplicate_pairs_merged": manifest["dedup"]["merged_pairs"],
            "signatures_computed_here": signatures_computed,
            "repos_left_out": len(left_out),
            "repos_left_out_why": dg.MetadataValue.md(
                _md_table(
                    ["repo", "why"], [[k, v.replace("|", "\\|")] for k, v in left_out.items()]
                )
                if left_out
                else "none"
            ),
            "repos_with_stale_signatures": ", ".join(stale_signatures) or "none",
            "samples_by_kind": dg.MetadataValue.md(kind_table),
            "repo_coverage": dg.MetadataValue.md(coverage),
            "dropped": dg.MetadataValue.md(
                _md_table(["stage", "reason", "samples"], dropped_rows) if dropped_rows else "none"
            ),
            "fim_windowed": dg.MetadataValue.json(manifest["fim_windowed_by_language"]),
        },
    )


def _flat_params(config: dict, prefix: str = "") -> dict[str, object]:
    params: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            params.update(_flat_params(value, f"{name}."))
        else:
            params[name] = value
    return params


def dataset_metrics(manifest: dict) -> dict[str, float]:
    """The numbers MLflow records for a dataset version."""
    metrics: dict[str, float] = {}
    for split in SPLITS:
        info = manifest["splits"][split]
        metrics[f"num_samples_{split}"] = info["samples"]
        metrics[f"num_lines_{split}"] = info["lines"]
        metrics[f"token_count_{split}"] = info["tokens"]
        for kind, count in info["by_kind"].items():
            metrics[f"num_lines_{split}_{kind}"] = count
    repos = manifest["repos"]
    metrics["token_count"] = manifest["tokens"]
    metrics["repo_coverage"] = (
        sum(1 for info in repos.values() if info["samples_kept"]) / len(repos) if repos else 0.0
    )
    metrics["num_repos"] = len(repos)
    metrics["samples_in"] = manifest["samples_in"]
    for stage, info in manifest["dropped"].items():
        metrics[f"dropped_{stage}"] = info["samples"]
    dedup = manifest["dedup"]
    for key in ("exact_dropped_units", "near_dropped_units", "candidate_pairs", "merged_pairs"):
        metrics[f"dedup_{key}"] = dedup[key]
    metrics["decontamination_dropped"] = manifest["decontamination"]["samples_dropped"]
    return metrics


@dg.asset(
    group_name=DATASET_GROUP,
    kinds={"s3", "mlflow"},
    owners=OWNERS,
    code_version="1",
    io_manager_key="json_io_manager",
)
def training_dataset(
    context: dg.AssetExecutionContext,
    dataset_splits: dict,
    dataset_store: DatasetStoreResource,
    mlflow_tracking: MlflowTrackingResource,
) -> dg.MaterializeResult:
    """The dataset version published for training: every file content-addressed under
    `code-finetune/<version>/` in the bucket (RustFS/MinIO through S3, or a local folder laid out
    the same way), the manifest last, nothing re-sent that is already there; and its MLflow run
    (one per dataset version; training and evaluation log into the same run) with the counts as
    params and metrics and the manifest as an artifact."""
    with reported_as_failure():
        directory = Path(dataset_splits["directory"])
        manifest = read_manifest(directory)
        version = manifest["version"]
        published = dataset_store.publish(directory)
        context.log.info(
            f"published {version[:12]} to {published.uri}: {len(published.sent)} files sent, "
            f"{len(published.skipped)} already there"
        )
        run_id = mlflow_tracking.dataset_run(version)
        # The location is a tag, not a param: params never change, and the same version may move
        # (local bucket -> S3, another bucket) while the MLflow store stays.
        mlflow_tracking.log_params(
            run_id,
            {
                "dataset_version": version,
                "base_model_version": manifest["base_model_version"],
                "max_seq_length": manifest["max_seq_length"],
                **_flat_params(manifest["config"], "dataset."),
            },
        )
        mlflow_tracking.log_metrics(run_id, dataset_metrics(manifest))
        mlflow_tracking.set_tags(
            run_id, {"coder_assets.stage": "dataset", "coder_assets.dataset_uri": published.uri}
        )
        mlflow_tracking.log_dict(run_id, manifest, "dataset/manifest.json")
        run_url = mlflow_tracking.run_url(run_id)
    descriptor = {
        "version": version,
        "uri": published.uri,
        "manifest_uri": published.manifest_uri,
        "mlflow_run_id": run_id,
        "max_seq_length": manifest["max_seq_length"],
        "base_model_version": manifest["base_model_version"],
        "files": {name: info["sha256"] for name, info in manifest["files"].items()},
    }
    metadata: dict[str, object] = {
        "version": version,
        "uri": published.uri,
        "location": dg.MetadataValue.path(unquote(urlparse(published.uri).path))
        if published.uri.startswith("file://")
        else dg.MetadataValue.url(published.uri),
        "files_sent": len(published.sent),
        "files_already_present": len(published.skipped),
        "bytes_sent": published.bytes_sent,
        "mlflow_run_id": run_id,
    }
    if run_url:
        metadata["mlflow_run"] = dg.MetadataValue.url(run_url)
    return dg.MaterializeResult(
        value=descriptor, data_version=dg.DataVersion(version), metadata=metadata
    )
