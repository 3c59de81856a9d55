"""Exact and near deduplication: normalisation, tokens, datasketch-compatible signatures, LSH
candidates re-checked with exact Jaccard, union-find clusters and an order-independent keep rule."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from datasketch import MinHash

from coder_assets.core.dataset import dedup
from coder_assets.core.dataset.dedup import (
    DedupConfig,
    DedupError,
    Sample,
    deduplicate,
    jaccard,
    load_signatures,
    lsh_params,
    normalise,
    save_signatures,
    shingles,
    signatures,
    tokens,
)

CONFIG = DedupConfig()


def function_source(prefix: str = "", seed: int = 0) -> str:
    """A 40-line Python function whose identifiers and numbers depend on `prefix`/`seed`."""
    rng = random.Random(seed)
    lines = [f"def {prefix}process_batch(items, limit, registry):", '    """Process a batch."""']
    for i in range(38):
        a, b = rng.choice(["items", "limit", "registry", "total", "cache"]), rng.randint(0, 999)
        lines.append(f"    {prefix}value_{i} = {prefix}helper_{i % 7}({a}, {b}) + {i} * {a}")
    return "\n".join(lines) + "\n"


def run(samples: list[Sample], config: DedupConfig = CONFIG) -> dedup.DedupResult:
    sigs = signatures(((s.sample_id, s.text) for s in samples), config)
    return deduplicate(samples, sigs, config)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  a\tb\r\n\n c  ", "a b c"),
        ("x = 1  # note", "x = 1 # note"),
        ("Foo", "Foo"),
        ("", ""),
        ("cafe\u0301", "caf\u00e9"),
    ],
)
def test_normalise_collapses_whitespace_and_keeps_case(text: str, expected: str) -> None:
    assert normalise(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x += foo(1.5e3, 0xFF)", ["x", "+=", "foo", "(", "1.5e3", ",", "0xFF", ")"]),
        ("def f(a) -> int:", ["def", "f", "(", "a", ")", "->", "int", ":"]),
        ("a!=b and c<=d", ["a", "!=", "b", "and", "c", "<=", "d"]),
        ("if x:\n    y = x[0]", ["if", "x", ":", "y", "=", "x", "[", "0", "]"]),
        ("s := `café`", ["s", ":=", "`", "café", "`"]),
    ],
)
def test_tokens_split_identifiers_numbers_and_operators(text: str, expected: list[str]) -> None:
    assert tokens(text) == expected


def test_shingles_of_short_text_are_the_whole_token_tuple() -> None:
    assert len(shingles("a + b", 5)) == 1
    assert shingles("", 5) == set()
    assert len(shingles("a b c d e f", 5)) == 2
    assert shingles("x  =  1\n", 5) == shingles("x = 1", 5)


def test_lsh_params_put_the_threshold_high_on_the_s_curve() -> None:
    bands, rows = lsh_params(CONFIG)
    assert (bands, rows) == (42, 6)
    assert 1 - (1 - 0.7**rows) ** bands >= 0.99


def test_signatures_match_datasketch_minhash_of_the_same_shingles() -> None:
    text = function_source()
    reference = MinHash(num_perm=CONFIG.num_perm, seed=CONFIG.seed, hashfunc=int)
    reference.update_batch(sorted(shingles(text, CONFIG.shingle_size)))
    ours = signatures([("s", text)], CONFIG)["s"]
    assert ours.dtype == reference.hashvalues.dtype
    assert np.array_equal(ours, reference.hashvalues)


def test_signatures_are_deterministic_and_survive_save_and_load(tmp_path) -> None:
    items = [(f"id{i}", function_source(seed=i)) for i in range(5)] + [("empty", "  ")]
    first = signatures(items, CONFIG)
    again = signatures(reversed(items), CONFIG)
    assert first.keys() == again.keys()
    assert all(np.array_equal(first[k], again[k]) for k in first)
    path = tmp_path / "sigs" / "repo.npz"
    save_signatures(path, first)
    loaded = load_signatures(path)
    assert loaded.keys() == first.keys()
    assert all(np.array_equal(first[k], loaded[k]) for k in first)
    assert [p.name for p in path.parent.iterdir()] == ["repo.npz"]  # no temp file left


def test_load_signatures_names_an_unreadable_file(tmp_path) -> None:
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(DedupError, match="broken.npz"):
        load_signatures(path)


def test_identical_texts_keep_one_as_exact() -> None:
    text = function_source()
    samples = [
        Sample("b", "repo1", text),
        Sample("a", "repo2", text.replace("\n", "\r\n")),
        Sample("c", "repo1", text),
    ]
    result = run(samples)
    assert result.kept == ["a"]
    assert result.dropped == {"b": ("a", "exact"), "c": ("a", "exact")}
    assert set(result.clusters.values()) == {"a"}


@pytest.mark.parametrize(
    "mutation",
    [
        pytest.param(
            lambda t: t.replace("process_batch", "handle").replace("helper_3(", "compute_3("),
            id="renamed-identifier",
        ),
        pytest.param(lambda t: t.replace("    ", "\t").replace(" = ", "="), id="whitespace"),
        pytest.param(lambda t: t.replace('"""Process a batch."""', "# Batch it."), id="comment"),
        pytest.param(
            lambda t: t.replace("value_3 =", "renamed_3 =").replace("value_9 =", "other_9 ="),
            id="two-renames",
        ),
    ],
)
def test_planted_near_duplicate_lands_in_one_cluster(mutation) -> None:
    original = function_source()
    copy = mutation(original)
    assert normalise(copy) != normalise(original)
    result = run([Sample("orig", "r", original), Sample("copy", "r", copy)])
    assert len(result.kept) == 1
    (dropped,) = result.dropped.values()
    assert dropped[1] == "near"
    assert result.clusters["orig"] == result.clusters["copy"]


def test_unrelated_code_stays_apart() -> None:
    samples = [Sample(f"s{i}", "r", function_source(prefix=f"p{i}_", seed=i)) for i in range(6)]
    samples.append(Sample("yaml", "r", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"))
    result = run(samples)
    assert result.kept == [s.sample_id for s in samples]
    assert result.dropped == {}


def test_exact_jaccard_rejects_a_candidate_below_the_threshold() -> None:
    base = function_source()
    lines = base.split("\n")
    other = "\n".join(lines[:20] + [line.replace("value_", "w_") for line in lines[20:]])
    similarity = jaccard(shingles(base, 5), shingles(other, 5))
    assert 0.2 < similarity < CONFIG.threshold
    samples = [Sample("a", "r", base), Sample("b", "r", other)]
    # The same signature for both forces the pair through LSH as a candidate.
    forced = signatures([("a", base)], CONFIG)["a"]
    result = deduplicate(samples, {"a": forced, "b": forced}, CONFIG)
    assert result.candidate_pairs == 1
    assert result.verified_pairs == 1
    assert result.kept == ["a", "b"]
    assert result.merged_pairs == []


def test_keep_rule_and_clusters_do_not_depend_on_input_order() -> None:
    original = function_source()
    samples = [
        Sample("orig", "r1", original),
        Sample("rename", "r2", original.replace("registry", "services")),
        Sample("longer", "r3", original + "    return value_1\n"),
        Sample("same", "r4", original.replace("    ", "  ")),
        Sample("other", "r1", function_source(prefix="z_", seed=9)),
    ]
    expected = run(samples)
    assert expected.clusters["orig"] == "longer"  # the longest normalised text wins
    assert expected.dropped["same"] == ("longer", "near")
    rng = random.Random(3)
    for _ in range(5):
        shuffled = samples[:]
        rng.shuffle(shuffled)
        result = run(shuffled)
        assert set(result.kept) == set(expected.kept)
        assert result.kept == [s.sample_id for s in shuffled if s.sample_id in expected.kept]
        assert result.clusters == expected.clusters
        assert result.dropped == expected.dropped
        assert result.verified_pairs == expected.verified_pairs


def test_sort_key_outranks_length_and_ties_go_to_the_smaller_id() -> None:
    text = function_source()
    result = run([Sample("b", "r", text + "    pass\n", sort_key=(1,)), Sample("a", "r", text)])
    assert result.kept == ["a"]
    tie = run([Sample("z", "r", text), Sample("y", "r", text)])
    assert tie.kept == ["y"]


def test_a_chain_is_one_cluster_but_only_near_copies_of_a_kept_sample_are_dropped() -> None:
    a = function_source()
    a_lines = a.split("\n")
    # b shares most of a; c shares most of b; a and c are below the threshold.
    b = "\n".join(a_lines[:30] + [line.replace("value_", "b_") for line in a_lines[30:]])
    c = "\n".join(
        [line.replace("value_", "c_") for line in a_lines[:10]]
        + [line.replace("value_", "b_") for line in a_lines[30:]]
        + a_lines[10:30]
    )
    sets = {k: shingles(v, 5) for k, v in {"a": a, "b": b, "c": c}.items()}
    assert jaccard(sets["a"], sets["b"]) >= 0.7
    assert jaccard(sets["b"], sets["c"]) >= 0.7
    assert jaccard(sets["a"], sets["c"]) < 0.7
    result = run([Sample("a", "r", a), Sample("b", "r", b), Sample("c", "r", c)])
    assert len(set(result.clusters.values())) == 1  # one cluster: one split
    # Only near copies of a kept sample are dropped: the ends of the chain are no copies.
    for dropped, (kept, _) in result.dropped.items():
        assert kept in result.kept and jaccard(sets[dropped], sets[kept]) >= 0.7
    for x, y in itertools.combinations(result.kept, 2):
        assert jaccard(sets[x], sets[y]) < 0.7
    # a is the longest, so it is kept; b is its near copy; c is not a's and is kept too.
    assert sorted(result.kept) == ["a", "c"] and result.dropped["b"] == ("a", "near")


def test_missing_or_mis_sized_signature_names_the_sample() -> None:
    samples = [Sample("a", "r", "x = 1"), Sample("b", "r", "y = 2")]
    sigs = signatures([("a", "x = 1")], CONFIG)
    with pytest.raises(DedupError, match="'b'"):
        deduplicate(samples, sigs, CONFIG)
    sigs["b"] = np.zeros(3, dtype=np.uint32)
    with pytest.raises(DedupError, match="num_perm=256"):
        deduplicate(samples, sigs, CONFIG)


def test_repeated_sample_id_is_refused() -> None:
    samples = [Sample("a", "r", "x = 1"), Sample("a", "r", "y = 2")]
    with pytest.raises(DedupError, match="'a'"):
        run(samples)
