"""The dataset build: decontamination, dedup units, per-file splits, token budgets, provenance,
manifest and version; and the validators the blocking dataset checks run."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from coder_assets.core.dataset import checks as dataset_checks
from coder_assets.core.dataset.build import (
    DROPPED_FILE,
    MANIFEST_FILE,
    PROVENANCE_FILE,
    SPLIT_FILES,
    UNITS_FILE,
    DatasetConfig,
    DatasetError,
    SourceSample,
    StoredSignature,
    build_dataset,
    content_clusters,
    dedup_units,
    fim_document,
    from_fim,
    from_pair,
    install_version,
    read_table,
    repo_samples,
    text_digest,
    update_signatures,
)
from coder_assets.core.dataset.decontam import Decontaminator, load_humaneval
from coder_assets.core.dataset.dedup import DedupConfig, signatures
from coder_assets.core.dataset.formatting import FormatConfig
from coder_assets.core.dataset.splits import SplitConfig
from coder_assets.core.samples.fim import format_fim
from coder_assets.core.samples.records import FimRecord, InstructionPair
from coder_assets.core.training.dev_model import build_dev_model

WORDS = (
    "order event payment invoice ledger cluster volume secret backup restore metric alert "
    "router gateway queue stream shard replica tenant quota budget window retry handler"
).split()
CONFIG = DatasetConfig(
    splits=SplitConfig(valid_fraction=0.2, test_fraction=0.2),
    format=FormatConfig(max_seq_length=1024, system_prompt="Be brief."),
)


def _function(seed: int) -> str:
    rng = random.Random(seed)
    name = "_".join(rng.sample(WORDS, 3))
    body = [
        f"    {rng.choice(WORDS)}_{i} = {rng.choice(WORDS)}({rng.choice(WORDS)}, {i * seed % 97})"
        for i in range(8)
    ]
    return f"def {name}(items):\n" + "\n".join(body) + f"\n    return {rng.choice(WORDS)}_7\n"


def _pair(n: int, *, repo: str = "homelab/app", output: str | None = None) -> InstructionPair:
    return InstructionPair(
        sample_id=f"pair-{repo}-{n:03d}",
        kind="python_function",
        language="python",
        instruction=f"Write function number {n}.",
        input="",
        output=output if output is not None else _function(n),
        repo=repo,
        commit_sha="a" * 40,
        path=f"src/module_{n:03d}.py",
        start_line=1,
        end_line=10,
    )


def _fim(n: int, cut: int, *, repo: str = "homelab/app") -> FimRecord:
    text = _function(1000 + n) + _function(2000 + n)
    lines = text.splitlines(keepends=True)
    prefix, middle, suffix = "".join(lines[:cut]), lines[cut], "".join(lines[cut + 1 :])
    return FimRecord(
        sample_id=f"fim-{repo}-{n:03d}-{cut}",
        strategy="line_span",
        language="python",
        text=format_fim(prefix, suffix, middle),
        repo=repo,
        commit_sha="b" * 40,
        path=f"lib/file_{n:03d}.py",
        blob_sha=f"{n:040x}",
        start_line=cut + 1,
        end_line=cut + 1,
    )


def _samples(pairs: int = 30, fims: int = 10) -> list[SourceSample]:
    result = [from_pair(_pair(n)) for n in range(pairs)]
    for n in range(fims):
        result += [from_fim(_fim(n, 2)), from_fim(_fim(n, 5))]
    return result


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from mlx_lm.utils import load_tokenizer

    corpus = [_function(n) for n in range(200)] + ["Write function number 7."]
    model_dir = build_dev_model(tmp_path_factory.mktemp("models") / "dev-model", corpus)
    return load_tokenizer(model_dir)


@pytest.fixture(scope="module")
def decontaminator() -> Decontaminator:
    return Decontaminator(load_humaneval())


def _build(samples, tokenizer, decontaminator, out: Path, config: DatasetConfig = CONFIG, **kw):
    return build_dataset(
        samples,
        kw.pop("stored", {}),
        tokenizer,
        decontaminator,
        config,
        out,
        repo_commits=kw.pop("repo_commits", {"homelab/app": "a" * 40}),
        base_model_version="f" * 64,
        **kw,
    )


def _lines(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text("utf-8").splitlines()]


def test_fim_document_puts_the_middle_back_between_prefix_and_suffix() -> None:
    text = format_fim("def f():\n", "    return x\n", "    x = 1\n")
    assert fim_document(text) == "def f():\n    x = 1\n    return x\n"


def test_fim_samples_of_one_file_share_one_dedup_unit_and_pairs_have_their_own() -> None:
    first, second = from_fim(_fim(1, 2)), from_fim(_fim(1, 5))
    assert first.unit_id == second.unit_id and first.unit_text == second.unit_text
    units = dedup_units([first, second, from_pair(_pair(1)), from_pair(_pair(2))])
    assert len(units) == 3


def test_the_same_inputs_give_the_same_version_and_bytes_twice(
    tmp_path: Path, tokenizer, decontaminator
) -> None:
    samples = _samples()
    one = _build(samples, tokenizer, decontaminator, tmp_path / "one")
    shuffled = list(samples)
    random.Random(3).shuffle(shuffled)
    two = _build(shuffled, tokenizer, decontaminator, tmp_path / "two")
    assert one.version == two.version
    for name in (*SPLIT_FILES.values(), MANIFEST_FILE):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_planted_near_duplicates_collapse_to_one_sample_in_one_split(
    tmp_path: Path, tokenizer, decontaminator
) -> None:
    original = _function(7)
    renamed = original.replace("items", "entries").replace("    ", "  ")  # renamed, re-indented
    spaced = original.replace(" = ", "  =  ")  # whitespace only: an exact duplicate
    samples = _samples() + [
        from_pair(replace(_pair(900, output=renamed), path="src/copy_a.py")),
        from_pair(replace(_pair(901, output=spaced), path="src/copy_b.py")),
    ]
    build = _build(samples, tokenizer, decontaminator, tmp_path / "out")
    dropped = {row["sample_id"]: row for row in read_table(tmp_path / "out" / DROPPED_FILE)}
    provenance = read_table(tmp_path / "out" / PROVENANCE_FILE)
    family = {"pair-homelab/app-007", "pair-homelab/app-900", "pair-homelab/app-901"}
    kept = {row["sample_id"] for row in provenance} & family
    assert len(kept) == 1
    (survivor,) = kept
    for sample_id in family - kept:
        assert dropped[sample_id]["stage"] == "dedup"
        assert dropped[sample_id]["ref"] == survivor
    assert {dropped[sample_id]["reason"] for sample_id in family - kept} <= {"near", "exact"}
    assert build.manifest["dropped"]["dedup"]["samples"] >= 2


def test_the_same_file_at_five_paths_and_in_two_repos_is_one_unit_kept_once(
    tmp_path: Path, tokenizer, decontaminator
) -> None:
    """Byte-identical files at several paths (test fixtures copied around) and a file vendored
    into a second repo: their FIM samples are one unit, one place's samples are kept, and the
    pairs cut from every copy land in that one split."""
    copies = [("homelab/app", f"testdata/case_{n}/fixture.py") for n in range(5)]
    copies.append(("homelab/other", "vendor/fixture.py"))
    extra = []
    for n, (repo, path) in enumerate(copies):
        for cut in (2, 5):
            fim = replace(_fim(77, cut, repo=repo), path=path, sample_id=f"copy-{n}-{cut}")
            extra.append(from_fim(replace(fim, blob_sha="c" * 40)))
        pair = _pair(700 + n, repo=repo, output=_function(1077))
        extra.append(from_pair(replace(pair, path=path)))
    assert len({s.unit_id for s in extra if s.kind == "fim"}) == 1
    _build(
        _samples(fims=30) + extra,
        tokenizer,
        decontaminator,
        tmp_path / "out",
        repo_commits={"homelab/app": "a" * 40, "homelab/other": "b" * 40},
    )
    provenance = read_table(tmp_path / "out" / PROVENANCE_FILE)
    kept = [row for row in provenance if row["sample_id"].startswith("copy-")]
    assert {row["path"] for row in kept} == {"testdata/case_0/fixture.py"}
    copy_paths = {path for _, path in copies}
    assert len({row["split"] for row in provenance if row["path"] in copy_paths}) == 1
    dropped = {row["sample_id"]: row for row in read_table(tmp_path / "out" / DROPPED_FILE)}
    assert dropped["copy-5-2"]["reason"] == "exact"
    assert dropped["copy-5-2"]["ref"] == "homelab/app:testdata/case_0/fixture.py"
    assert dataset_checks.cross_split_duplicates(tmp_path / "out") == []


def test_content_clusters_join_files_through_shared_and_near_duplicate_units() -> None:
    def sample(sample_id: str, path: str, unit: str) -> SourceSample:
        return SourceSample(sample_id, "fim", "python", "r/x", "a" * 40, path, unit, "")

    samples = [
        sample("a1", "a.py", "u-a"),
        sample("a2", "a.py", "pair-a"),
        sample("b1", "b.py", "u-a"),  # the same text as a.py
        sample("c1", "c.py", "u-c"),  # near-duplicate of a.py's text (dedup cluster u-a)
        sample("c2", "c.py", "pair-c"),  # a pair of c.py follows c.py
        sample("d1", "d.py", "u-d"),
    ]
    clusters = content_clusters(samples, {"u-a": "u-a", "u-c": "u-a", "u-d": "u-d"})
    assert {clusters[i] for i in ("a1", "a2", "b1", "c1", "c2")} == {"file:r/x:a.py"}
    assert clusters["d1"] == "file:r/x:d.py"


def test_records_that_read_alike_share_a_split(tmp_path: Path, tokenizer, decontaminator) -> None:
    """Short stub files differ as files (under the dedup threshold) yet their FIM records, the
    differing part cut out as the middle, read almost the same: they must not straddle splits."""
    stubs = []
    for n in range(40):
        name = "_".join(random.Random(n).sample(WORDS, 2))
        prefix = "Module reference\n================\n\n.. automodule:: homelab.api\n"
        suffix = "   :members:\n   :show-inheritance:\n"
        middle = f"   :synopsis: {name} {n}\n"
        record = FimRecord(
            sample_id=f"stub-{n:02d}",
            strategy="line_span",
            language="text",
            text=format_fim(prefix, suffix, middle),
            repo="homelab/app",
            commit_sha="c" * 40,
            path=f"docs/api/{name}_{n}.rst",
            blob_sha=f"{n + 5000:040x}",
            start_line=5,
            end_line=5,
        )
        stubs.append(from_fim(record))
    build = _build(_samples(fims=30) + stubs, tokenizer, decontaminator, tmp_path / "out")
    assert build.manifest["dedup"]["record_links"] > 0
    assert dataset_checks.cross_split_duplicates(tmp_path / "out") == []
    provenance = read_table(tmp_path / "out" / PROVENANCE_FILE)
    assert len({r["split"] for r in provenance if r["sample_id"].startswith("stub-")}) == 1


def test_a_repo_whose_fim_samples_disagree_about_a_file_is_named() -> None:
    good = asdict(_fim(3, 2))
    other = asdict(_fim(3, 5))
    other["text"] = other["text"].replace("items", "ITEMS")  # redacted differently in one sample
    samples = repo_samples("homelab/app", [asdict(_pair(1))], [good])
    assert len(samples) == 2
    with pytest.raises(DatasetError, match=r"homelab/app: the FIM samples of lib/file_003\.py"):
        repo_samples("homelab/app", [], [good, other])
    broken = {**good, "text": "no markers"}
    with pytest.raises(DatasetError, match="homelab/app: FIM sample .* lacks <|fim_prefix|>"):
        repo_samples("homelab/app", [], [broken])
    with pytest.raises(DatasetError, match="homelab/app: its samples do not have the expected"):
        repo_samples("homelab/app", [{"sample_id": "x"}], [])


def test_planted_humaneval_solution_is_removed_and_listed(
    tmp_path: Path, tokenizer, decontaminator
) -> None:
    problem = next(p for p in load_humaneval().problems if p.task_id == "HumanEval/2")
    leaked = problem.prompt + problem.canonical_solution
    samples = _samples() + [from_pair(replace(_pair(950, output=leaked), path="src/leak.py"))]
    build = _build(samples, tokenizer, decontaminator, tmp_path / "out")
    dropped = {row["sample_id"]: row for row in read_table(tmp_path / "out" / DROPPED_FILE)}
    row = dropped["pair-homelab/app-950"]
    assert (row["stage"], row["ref"]) == ("decontamination", "HumanEval/2")
    assert build.manifest["decontamination"]["tasks_hit"] == ["HumanEval/2"]
    for name in SPLIT_FILES.values():
        assert all("truncate_number" not in text for text in _lines(tmp_path / "out" / name))


def test_samples_of_one_source_file_never_straddle_splits(
    tmp_path: Path, tokenizer, decontaminator
) -> None:
    _build(_samples(fims=30), tokenizer, decontaminator, tmp_path / "out")
    provenance = read_table(tmp_path / "out" / PROVENANCE_FILE)
    split_of_file: dict[str, set[str]] = {}
    for row in provenance:
        split_of_file.setdefault(row["path"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in split_of_file.values())
    assert {row["split"] for row in provenance} == {"train", "valid", "test"}


def test_adding_a_repo_moves_no_existing_sample_between_splits(
    tmp_path: Path, tokenizer, decontaminator
) -> None:
    before = _samples()
    extra = [from_pair(_pair(n, repo="homelab/other")) for n in range(300, 330)]
    _build(before, tokenizer, decontaminator, tmp_path / "before")
    _build(before + extra, tokenizer, decontaminator, tmp_path / "after")
    old = {r["record_id"]: r["split"] for r in read_table(tmp_path / "before" / PROVENANCE_FILE)}
    new = {r["record_id"]: r["split"] for r in read_table(tmp_path / "after" / PROVENANCE_FILE)}
    assert all(new[record] == split for record, split in old.items())


def test_every_line_has_provenance_and_fits_the_token_budget(
    tmp_path: Path, tokenizer, decontaminator
) -> None:
    long_output = "".join(f"    step_{i} = advance(step_{i - 1}, {i})\n" for i in range(1, 400))
    samples = _samples() + [from_pair(replace(_pair(960, output=long_output), path="src/long.py"))]
    build = _build(samples, tokenizer, decontaminator, tmp_path / "out")
    provenance = read_table(tmp_path / "out" / PROVENANCE_FILE)
    for split, name in SPLIT_FILES.items():
        texts = _lines(tmp_path / "out" / name)
        rows = sorted((r for r in provenance if r["split"] == split), key=lambda r: r["line"])
        assert [r["line"] for r in rows] == list(range(1, len(texts) + 1))
        assert all(r["repo"] and r["commit_sha"] and r["path"] for r in rows)
    # An answer over the budget is dropped, never split into fragments.
    assert not [r for r in provenance if r["sample_id"] == "pair-homelab/app-960"]
    dropped = {row["sample_id"]: row for row in read_table(tmp_path / "out" / DROPPED_FILE)}
    assert dropped["pair-homelab/app-960"]["reason"] == "over_length"
    assert all(r["record_id"] == r["sample_id"] for r in provenance)
    assert build.manifest["dropped"]["length"]["by_reason"] == {"over_length": 1}
    assert dataset_checks.over_length_lines(tmp_path / "out", tokenizer, 1024) == []


def test_manifest_counts_match_the_files(tmp_path: Path, tokenizer, decontaminator) -> None:
    build = _build(_samples(), tokenizer, decontaminator, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / MANIFEST_FILE).read_text())
    assert manifest == build.manifest and manifest["version"] == build.version
    for split, name in SPLIT_FILES.items():
        assert manifest["splits"][split]["lines"] == len(_lines(tmp_path / "out" / name))
        assert manifest["files"][name]["lines"] == manifest["splits"][split]["lines"]
    assert manifest["source_commits"] == {"homelab/app": "a" * 40}
    assert manifest["config"]["dedup"]["num_perm"] == 256
    assert manifest["repos"]["homelab/app"]["samples_in"] == 50
    assert str(tmp_path) not in json.dumps(manifest)  # no local paths


def test_an_empty_split_is_refused_with_what_to_do(
    tmp_path: Path, tokenizer, decontaminator
) -> None:
    with pytest.raises(DatasetError, match="split would be empty.*valid_fraction"):
        _build(_samples(pairs=2, fims=0), tokenizer, decontaminator, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_stored_signatures_are_used_and_stale_ones_recomputed(
    tmp_path: Path, tokenizer, decontaminator
) -> None:
    samples = _samples()
    units = dedup_units(samples)
    fresh = signatures(sorted(units.items()), CONFIG.dedup)
    stored = {u: StoredSignature(text_digest(t), fresh[u]) for u, t in units.items()}
    stale_id = sorted(stored)[0]
    stored[stale_id] = StoredSignature("0" * 64, fresh[stale_id])
    build = _build(samples, tokenizer, decontaminator, tmp_path / "out", stored=stored)
    assert build.signatures_computed == 1


def test_update_signatures_recomputes_only_changed_units() -> None:
    config = DedupConfig()
    units = {"a": _function(1), "b": _function(2), "c": _function(3)}
    first = update_signatures(units, {}, config)
    assert sorted(first.computed) == ["a", "b", "c"]
    changed = {**units, "b": _function(20), "d": _function(4)}
    del changed["c"]
    second = update_signatures(changed, first.signatures, config)
    assert sorted(second.computed) == ["b", "d"] and second.reused == ["a"]
    assert set(second.signatures) == {"a", "b", "d"}
    assert (second.signatures["a"].values == first.signatures["a"].values).all()


def test_install_version_is_content_addressed_and_keeps_the_first_copy(
    tmp_path: Path, tokenizer, decontaminator
) -> None:
    root = tmp_path / "datasets"
    one = _build(_samples(), tokenizer, decontaminator, tmp_path / "b1")
    two = _build(_samples(), tokenizer, decontaminator, tmp_path / "b2")
    first = install_version(one.directory, root, one.version)
    marker = (first / MANIFEST_FILE).stat().st_mtime_ns
    second = install_version(two.directory, root, two.version)
    assert first == second == root / one.version
    assert (first / MANIFEST_FILE).stat().st_mtime_ns == marker
    assert not two.directory.exists()


# --- validators behind the blocking checks --------------------------------------------------


@pytest.fixture
def built(tmp_path: Path, tokenizer, decontaminator) -> Path:
    _build(_samples(), tokenizer, decontaminator, tmp_path / "out")
    return tmp_path / "out"


def test_validators_pass_on_a_built_dataset(built: Path, tokenizer, decontaminator) -> None:
    units = read_table(built / UNITS_FILE)
    assert dataset_checks.format_problems(built) == []
    assert dataset_checks.line_problems(built) == []
    assert dataset_checks.over_length_lines(built, tokenizer, 1024) == []
    assert dataset_checks.cross_split_duplicates(built) == []
    assert dataset_checks.contaminated(built, units, decontaminator) == []
    assert dataset_checks.secret_findings(built) == []


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def test_format_check_catches_a_second_record_format(built: Path) -> None:
    _append(built / "valid.jsonl", json.dumps({"prompt": "p", "completion": "c"}))
    (problem,) = dataset_checks.format_problems(built)
    assert problem.startswith("valid.jsonl:") and "differ from line 1" in problem


def test_line_check_catches_empty_text_and_broken_json(built: Path) -> None:
    _append(built / "train.jsonl", json.dumps({"text": "  "}))
    _append(built / "test.jsonl", "{not json")
    problems = dataset_checks.line_problems(built)
    assert len(problems) == 2 and "empty" in problems[0] and "invalid JSON" in problems[1]


def test_length_check_catches_a_line_over_the_limit(built: Path, tokenizer) -> None:
    _append(built / "train.jsonl", json.dumps({"text": "word " * 3000}))
    (problem,) = dataset_checks.over_length_lines(built, tokenizer, 1024)
    assert "over max_seq_length 1024" in problem


def _write_split(directory: Path, split: str, texts: list[str]) -> None:
    directory.mkdir(exist_ok=True)
    lines = "".join(json.dumps({"text": text}) + "\n" for text in texts)
    (directory / SPLIT_FILES[split]).write_text(lines, encoding="utf-8")


def test_duplicate_check_catches_a_near_copy_in_another_split(tmp_path: Path) -> None:
    text = _function(5)
    _write_split(tmp_path, "train", [text, text + "\n", _function(8)])  # same split: allowed
    _write_split(tmp_path, "valid", [_function(6)])
    _write_split(tmp_path, "test", [text.replace("items", "rows"), _function(7)])
    problems = dataset_checks.cross_split_duplicates(tmp_path)
    assert len(problems) == 2, problems
    assert all("train.jsonl:" in p and "test.jsonl:1" in p for p in problems)
    assert all("valid.jsonl" not in p for p in problems)


def test_duplicate_check_fails_on_a_planted_cross_split_copy(
    tmp_path: Path, tokenizer, decontaminator
) -> None:
    """The leak the unit-level check missed: one file at several paths, its samples split by path.
    The check reads only the JSONL lines, so a planted copy of a test record in train fails it."""
    _build(_samples(fims=30), tokenizer, decontaminator, tmp_path / "out")
    out = tmp_path / "out"
    assert dataset_checks.cross_split_duplicates(out) == []
    test_records = _lines(out / SPLIT_FILES["test"])
    _append(out / SPLIT_FILES["train"], json.dumps({"text": test_records[0]}))
    problems = dataset_checks.cross_split_duplicates(out)
    assert any(
        p.startswith("exact duplicate across splits: ") and "test.jsonl:1" in p for p in problems
    ), problems


def test_duplicate_pairs_are_exact_not_sampled() -> None:
    """Prefix filtering finds exactly the pairs a brute-force comparison finds, also those just
    above the threshold (variants of one text with a few words changed)."""
    rng = random.Random(11)
    bases = [[f"w{rng.randrange(5000)}" for _ in range(60)] for _ in range(8)]
    records = []
    for n in range(120):
        words = list(bases[n % len(bases)])
        for _ in range(rng.randint(0, 4)):
            words[rng.randrange(len(words))] = f"v{rng.randrange(5000)}"
        records.append((rng.choice(("train", "valid", "test")), " ".join(words)))
    found = {(i, j) for i, j, _ in dataset_checks.duplicate_record_pairs(records, 0.7)}
    shingles = [dataset_checks.record_shingles(text) for _, text in records]
    similarity = {
        (i, j): len(shingles[i] & shingles[j]) / len(shingles[i] | shingles[j])
        for i in range(len(records))
        for j in range(i + 1, len(records))
        if records[i][0] != records[j][0]
    }
    expected = {pair for pair, value in similarity.items() if value >= 0.7}
    assert found == expected
    assert sum(1 for value in similarity.values() if 0.7 <= value < 0.75) >= 5


def test_contamination_check_catches_a_planted_solution(built: Path, decontaminator) -> None:
    problem = load_humaneval().problems[0]
    _append(built / "test.jsonl", json.dumps({"text": problem.prompt + problem.canonical_solution}))
    problems = dataset_checks.contaminated(built, [], decontaminator)
    assert problems and "HumanEval/0" in problems[0]


def test_secret_check_names_the_type_never_the_value(built: Path) -> None:
    key = "AKIA" + "Q3EGRZ7XPLM4NW2B"
    _append(built / "train.jsonl", json.dumps({"text": f'aws_access_key_id = "{key}"\n'}))
    problems = dataset_checks.secret_findings(built)
    assert problems and all(key not in p for p in problems)
