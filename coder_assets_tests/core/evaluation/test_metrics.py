"""CrossCodeEval-style completion metrics on hand-checked inputs
(coder_assets.core.evaluation.metrics)."""

from __future__ import annotations

import pytest

from coder_assets.core.evaluation.metrics import (
    METRIC_NAMES,
    MetricsError,
    aggregate,
    copy_baseline,
    edit_similarity,
    exact_match,
    first_line,
    identifier_match,
    identifiers,
    levenshtein,
    normalise_code,
    score_completion,
    strip_comments,
    trim_to_reference,
)


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("", "", 0),
        ("abc", "", 3),
        ("", "abc", 3),
        ("abc", "abc", 0),
        ("abc", "abd", 1),
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("intention", "execution", 5),
        ("x = 1", "x = 10", 1),
        ("ab", "ba", 2),
    ],
)
def test_levenshtein_counts_single_character_edits(a: str, b: str, distance: int) -> None:
    assert levenshtein(a, b) == distance
    assert levenshtein(b, a) == distance


@pytest.mark.parametrize(
    ("prediction", "reference", "similarity"),
    [
        ("", "", 1.0),
        ("return x", "return x", 1.0),
        ("abc", "abd", 2 / 3),
        ("abc", "", 0.0),
        ("", "abc", 0.0),
        ("kitten", "sitting", 1 - 3 / 7),
    ],
)
def test_edit_similarity_is_one_minus_distance_over_longer_length(
    prediction: str, reference: str, similarity: float
) -> None:
    assert edit_similarity(prediction, reference) == pytest.approx(similarity)


def test_levenshtein_refuses_pairs_over_the_cell_limit_but_not_shared_ends() -> None:
    with pytest.raises(MetricsError, match="trim_to_reference"):
        levenshtein("a" * 300, "b" * 300, max_cells=10_000)
    # The common prefix and suffix cost nothing, so a long near-identical pair is cheap.
    assert levenshtein("x" * 5000 + "a" + "y" * 5000, "x" * 5000 + "b" + "y" * 5000) == 1


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("x = 1  # set x\n", "python", "x = 1  \n"),
        ("s = '# not a comment'  # but this is", "python", "s = '# not a comment'  "),
        ('s = r"\\"#"  # c', "python", 's = r"\\"#"  '),
        ('"""doc # kept"""\n# gone\ny', "python", '"""doc # kept"""\n\ny'),
        ("x := 1 // set x", "go", "x := 1 "),
        ("a := 1 /* one\ntwo */ b := 2", "go", "a := 1 \n b := 2"),
        ('s := "http://x" // url', "go", 's := "http://x" '),
        ("r := `raw // kept\n`", "go", "r := `raw // kept\n`"),
        ("key: value  # note", "yaml", "key: value  "),
        ("x = 1  # kept", None, "x = 1  # kept"),
        ("x = 1  # kept", "markdown", "x = 1  # kept"),
    ],
)
def test_strip_comments_removes_comments_but_not_strings(
    text: str, language: str | None, expected: str
) -> None:
    assert strip_comments(text, language) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", ""), ("\n  \n", ""), ("\n\n    return x  \n  y\n", "return x"), ("a", "a")],
)
def test_first_line_is_the_first_non_blank_line_stripped(text: str, expected: str) -> None:
    assert first_line(text) == expected


def test_normalise_code_strips_lines_and_drops_blank_and_comment_lines() -> None:
    text = "\n    if x:  # check\n\n        # only a comment\n        return y\n"
    assert normalise_code(text, "python") == "if x:\nreturn y"


@pytest.mark.parametrize(
    ("prediction", "reference", "language", "expected"),
    [
        ("return x\n", "return x", "python", True),
        ("    return x  # done\n", "return x\n", "python", True),
        ("return x\nprint(y)\nmore()\n", "return x\n", "python", True),
        ("# explain\nreturn x\n", "return x", "python", True),
        ("return y\n", "return x", "python", False),
        ("if a:\n    b()\n", "if a:\n    b()\n    c()\n", "python", False),
        ("if a:\n    b()\n    c()\n    d()\n", "if a:\n    b()\n    c()\n", "python", True),
        ("err := f() // call\n", "err := f()", "go", True),
        ("/* note */ err := f()\n", "err := f()", "go", True),
        ("", "", "python", True),
        ("x = 1", "", "python", False),
        ("", "  # only a comment\n", "python", True),
        ("", "x = 1", "python", False),
    ],
)
def test_exact_match_compares_code_lines_trimmed_to_the_reference(
    prediction: str, reference: str, language: str, expected: bool
) -> None:
    assert exact_match(prediction, reference, language) is expected


def test_trim_to_reference_keeps_as_many_code_lines_as_the_reference() -> None:
    prediction = "a = 1\n\n# comment\nb = 2\nc = 3\n"
    assert trim_to_reference(prediction, "x\ny\n", "python") == "a = 1\nb = 2"
    assert trim_to_reference(prediction, "", "python") == "a = 1\nb = 2\nc = 3"


def test_copy_baseline_is_the_prefix_last_code_lines_as_many_as_the_reference_has() -> None:
    prefix = "spec:\n  interval: 30m\n\n  # the chart\n  chart:\n    spec:\n"
    assert copy_baseline(prefix, "      chart: nats\n", "yaml") == "spec:"
    assert copy_baseline(prefix, "      chart: nats\n      version: 1.2\n", "yaml") == (
        "chart:\nspec:"
    )
    assert copy_baseline(prefix, "a\nb\nc\nd\ne\nf\n", "yaml") == (
        "spec:\ninterval: 30m\nchart:\nspec:"
    )
    # Nothing to copy, or nothing to complete: the empty prediction.
    assert copy_baseline("", "x = 1\n", "python") == ""
    assert copy_baseline("x = 1\n", "# only a comment\n", "python") == ""


def test_copy_baseline_scores_a_gap_that_repeats_the_line_above_it_fully() -> None:
    prefix = "- name: a\n  value: 1\n- name: b\n  value: 1\n"
    repeated, new = "  value: 1\n", "  replicas: 3\n"
    scored = score_completion(copy_baseline(prefix, repeated, "yaml"), repeated, "yaml")
    assert scored["exact_match"] == 1.0
    scored = score_completion(copy_baseline(prefix, new, "yaml"), new, "yaml")
    assert scored["exact_match"] == 0.0 and 0.0 < scored["edit_similarity"] < 0.5


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("result = compute(values, limit=10)", "python", ["result", "compute", "values", "limit"]),
        ("if x is not None and y:\n    return self.z", "python", ["x", "y", "self", "z"]),
        ("for i in range(n): pass", "python", ["i", "range", "n"]),
        ("True or False or None", "python", []),
        ('print(f"{name}", "literal", name2)  # note', "python", ["print", "name2"]),
        ("x = 0x1F + 1e10 + 3.5 + v2", "python", ["x", "v2"]),
        ("a.b.c(a)", "python", ["a", "b", "c", "a"]),
        (
            "func (s *Server) Run(ctx context.Context) error {",
            "go",
            ["s", "Server", "Run", "ctx", "context", "Context", "error"],
        ),
        ("if err != nil { return err } // handle", "go", ["err", "nil", "err"]),
        (
            'for _, v := range items { fmt.Println("v", `raw`) }',
            "go",
            ["_", "v", "items", "fmt", "Println"],
        ),
        ("var x map[string]chan int", "go", ["x", "string", "int"]),
        ("größe = 1", "python", ["größe"]),
    ],
)
def test_identifiers_exclude_keywords_literals_and_comments(
    text: str, language: str, expected: list[str]
) -> None:
    assert identifiers(text, language) == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "language", "expected"),
    [
        # Identical lists.
        ("x = f(y)", "x = f(y)", "python", (1.0, 1.0, 1.0, 1.0)),
        # pred [a, b, b, c], ref [a, b, d]: overlap {a, b} = 2; P = 2/4, R = 2/3, F1 = 4/7.
        ("a(b, b, c)", "a(b, d)", "python", (0.0, 0.5, 2 / 3, 4 / 7)),
        # Same multiset, other order: no exact match, full precision and recall.
        ("f(x, y)", "f(y, x)", "python", (0.0, 1.0, 1.0, 1.0)),
        # pred [x, x, x], ref [x]: overlap 1; P = 1/3, R = 1, F1 = 1/2.
        ("x + x + x", "x", "python", (0.0, 1 / 3, 1.0, 0.5)),
        # Keywords and literals only, on both sides.
        ("return None", "pass", "python", (1.0, 1.0, 1.0, 1.0)),
        ("return 1", "return x", "python", (0.0, 0.0, 0.0, 0.0)),
        ("x", "", "python", (0.0, 0.0, 0.0, 0.0)),
        # Go: pred [err, f, ctx], ref [err, f, ctx, opts]: P = 1, R = 3/4, F1 = 6/7.
        ("err := f(ctx)", "err := f(ctx, opts)", "go", (0.0, 1.0, 0.75, 6 / 7)),
        ("return err // why", "return err", "go", (1.0, 1.0, 1.0, 1.0)),
    ],
)
def test_identifier_match_scores_list_equality_and_multiset_overlap(
    prediction: str,
    reference: str,
    language: str,
    expected: tuple[float, float, float, float],
) -> None:
    scores = identifier_match(prediction, reference, language)
    assert [
        scores["identifier_exact_match"],
        scores["identifier_precision"],
        scores["identifier_recall"],
        scores["identifier_f1"],
    ] == pytest.approx(list(expected))


def test_score_completion_scores_the_prediction_trimmed_to_the_reference() -> None:
    scores = score_completion(
        "    total += value  # add\n    return total\n", "total += value\n", "python"
    )
    assert set(scores) == set(METRIC_NAMES)
    assert all(scores[name] == 1.0 for name in METRIC_NAMES)
    near = score_completion("total += values\n", "total += value\n", "python")
    assert near["exact_match"] == 0.0
    assert near["edit_similarity"] == pytest.approx(1 - 1 / 15)
    assert near["identifier_precision"] == pytest.approx(0.5)


def test_aggregate_means_every_metric_and_counts_rows() -> None:
    rows = [
        {"exact_match": True, "edit_similarity": 1.0},
        {"exact_match": False, "edit_similarity": 0.5},
        {"exact_match": 0.0, "edit_similarity": 0.0},
    ]
    assert aggregate(rows) == pytest.approx(
        {"exact_match": 1 / 3, "edit_similarity": 0.5, "count": 3}
    )
    assert aggregate([]) == {"count": 0}
    assert aggregate(iter(rows[:1])) == {"exact_match": 1.0, "edit_similarity": 1.0, "count": 1}


def test_aggregate_refuses_rows_with_other_metrics() -> None:
    with pytest.raises(MetricsError, match="row 1"):
        aggregate([{"exact_match": 1.0}, {"edit_similarity": 1.0}])
