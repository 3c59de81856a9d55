"""Redaction precision on a labelled set written for the project (`secret_cases`): every true
secret is caught, and ordinary configuration that only looks like one is left as it is."""

from __future__ import annotations

from collections import Counter

from coder_assets_tests.secret_cases import evaluate, labelled_cases

CASES = labelled_cases()
OUTCOMES = evaluate(CASES)
MAX_LOOKALIKES_REDACTED = 3


def test_the_labelled_set_has_the_size_and_the_variety_it_promises() -> None:
    secrets = [case for case in CASES if case.is_secret]
    lookalikes = [case for case in CASES if not case.is_secret]
    assert sum(case.text.count("\n") for case in CASES) >= 120
    assert sum(len(case.secrets) for case in secrets) >= 60
    assert len({case.kind for case in secrets}) >= 12
    assert len(lookalikes) >= 60
    assert labelled_cases() == CASES  # deterministic: the same values every run


def test_every_true_secret_is_redacted() -> None:
    missed = [
        f"{o.case.kind} in {o.case.path}: {len(o.missed)} value(s)" for o in OUTCOMES if o.missed
    ]
    assert missed == []


def test_lookalikes_are_left_as_they_are() -> None:
    redacted = Counter(o.case.kind for o in OUTCOMES if not o.case.is_secret and o.changed)
    assert sum(redacted.values()) <= MAX_LOOKALIKES_REDACTED, dict(redacted)


def test_the_measure_sees_a_missed_secret_and_a_redacted_lookalike() -> None:
    """The two measures can fail: a value left in the text counts as missed, and a lookalike
    whose text changed counts as redacted."""
    from dataclasses import replace

    secret = next(case for case in CASES if case.kind == "gitea_token")
    planted = replace(secret, text=secret.text.replace("token ", "tok "), secrets=("tok",))
    (outcome,) = evaluate([planted])
    assert outcome.missed == ("tok",)
    lookalike = next(case for case in CASES if case.kind == "github_actions")
    exposed = replace(lookalike, text=lookalike.text + "password: Zq8-rtW2-kLp9\n")
    (outcome,) = evaluate([exposed])
    assert outcome.changed
